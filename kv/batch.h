/*
 * batch.h - the encoded form of a write batch, which is also the payload of
 * one write-ahead-log record.
 *
 * User keys and values are added in their stored form (value.h): the key
 * escaped, the value wrapped in its envelope, a large one split into chunks.
 *
 * Layout (docs/format.md): an 12-byte header, sequence number of the first
 * entry (u64 LE) and entry count (u32 LE), then the entries in order, each
 *   type (1 byte: 1 put, 0 delete) | key length (varint) | key
 *   | for a put: value length (varint) | value
 * Entry i gets sequence number (header sequence + i).  A batch owns its buffer;
 * the engine fills in the sequence just before logging it.
 *
 * Thread-safety: a batch is used by one thread at a time.
 */
#ifndef STASH_BATCH_H
#define STASH_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "smartstash.h"

#define BATCH_HEADER 12

/* The encoded bytes of B (header included) and its entry count. */
const uint8_t *batch_data(const stash_batch_t *b, size_t *len);
void batch_set_seq(stash_batch_t *b, uint64_t seq);

/*
 * Entries as stored (value.h): KEY a stored key, the value HDR followed by
 * VAL.  -EINVAL, -ENOMEM.
 */
int batch_put_raw(stash_batch_t *b, const void *key, size_t klen, const void *hdr, size_t hlen,
                  const void *val, size_t vlen);
int batch_del_raw(stash_batch_t *b, const void *key, size_t klen);

/*
 * The chunks of VAL, a new chunked value GEN (TAGGED: see batch_put_chunk)
 * owned by stored key IKEY
 * (all-zero chunks are left out: a missing chunk reads as zeros), and its
 * owner record.
 */
int batch_put_chunks(stash_batch_t *b, const uint8_t *ikey, size_t iklen, int tagged, uint64_t gen,
                     const uint8_t *val, size_t vlen);

/* Chunk IDX (N <= CHUNK_SIZE bytes) of chunked value GEN; nothing when the
 * bytes are all zero (a missing chunk reads as zeros).  TAGGED: the value is
 * of the tagged kind (value.h), and the record holds tag 0 and the bytes. */
int batch_put_chunk(stash_batch_t *b, int tagged, uint64_t gen, uint64_t idx, const uint8_t *val, size_t n);

/* Whether B creates a chunked value or writes chunks (or makes a hard
 * link: batch_set_blobs), after which plain writes look up what they
 * replace (db.c). */
int batch_has_blobs(const stash_batch_t *b);
void batch_set_blobs(stash_batch_t *b);

/* Append every entry of SRC to DST (for group commit).  -ENOMEM. */
int batch_append(stash_batch_t *dst, const stash_batch_t *src);

/*
 * Walk the entries of an encoded batch, calling FN for each with its own
 * sequence number.  Checks the encoding strictly: a short header, a bad type,
 * a length running past the end or a count that does not match gives -EIO
 * (nothing is guaranteed about entries already handed to FN, so callers
 * validate with a NULL FN first when that matters).  FN's non-zero return
 * stops the walk and is returned.
 */
typedef int (*batch_fn)(void *arg, uint64_t seq, int type,
                        const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen);
int batch_decode(const uint8_t *data, size_t len, batch_fn fn, void *arg,
                 uint64_t *first_seq, uint32_t *count);

#endif
