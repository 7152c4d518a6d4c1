/*
 * block.h - a sorted run of key/value entries in one buffer: the unit that
 * tables read, checksum, compress and cache.
 *
 * Keys are prefix-compressed against the previous key; every RESTART_EVERY
 * entries a key is stored whole and its offset recorded at the end of the
 * block, so a seek binary-searches the restart points and then scans at most
 * RESTART_EVERY entries.  Byte layout in docs/format.md.
 *
 * A block iterator trusts nothing in the buffer: every length and offset is
 * checked against the block's bounds, and a malformed block stops the
 * iterator with status -EIO.  Builders and iterators belong to one thread;
 * the bytes an iterator reads are the caller's and must outlive it.
 */
#ifndef STASH_BLOCK_H
#define STASH_BLOCK_H

#include <stddef.h>
#include <stdint.h>

#define RESTART_EVERY 16

/* Key order: negative, zero or positive like memcmp. */
typedef int (*sst_cmp_fn)(const void *a, size_t alen, const void *b, size_t blen);

typedef struct block_builder block_builder_t;

block_builder_t *bb_new(void);
void bb_free(block_builder_t *b);
/* Add an entry; keys must arrive in increasing order (not checked here). */
int bb_add(block_builder_t *b, const void *key, size_t klen, const void *val, size_t vlen);
/* Bytes the block would have if finished now. */
size_t bb_size(const block_builder_t *b);
int bb_empty(const block_builder_t *b);
/* Finish the block: *out points at its bytes, valid until bb_reset. */
int bb_finish(block_builder_t *b, const uint8_t **out, size_t *len);
void bb_reset(block_builder_t *b);
/* The last key added (valid until the next bb_add/bb_reset). */
const uint8_t *bb_last_key(const block_builder_t *b, size_t *len);

typedef struct block_iter block_iter_t;

/* An iterator over the block DATA/LEN ordered by CMP (NULL = memcmp order).
 * NULL when out of memory. */
block_iter_t *bi_new(const uint8_t *data, size_t len, sst_cmp_fn cmp);
/* Point IT at another block, as bi_new would, reusing its memory. */
void bi_reset(block_iter_t *it, const uint8_t *data, size_t len, sst_cmp_fn cmp);
void bi_free(block_iter_t *it);
void bi_seek(block_iter_t *it, const void *key, size_t klen);  /* first >= key */
void bi_seek_first(block_iter_t *it);
int bi_valid(const block_iter_t *it);
void bi_next(block_iter_t *it);
const uint8_t *bi_key(const block_iter_t *it, size_t *klen);
const uint8_t *bi_value(const block_iter_t *it, size_t *vlen);
int bi_status(const block_iter_t *it);   /* 0 or -EIO */

/* memcmp order with shorter-first on a shared prefix. */
int bytewise_cmp(const void *a, size_t alen, const void *b, size_t blen);
/* The shortest S with A <= S < B in bytewise_cmp order, for A < B, written
 * to OUT (room for ALEN bytes): A up to the first byte that can grow without
 * reaching B, that byte plus one.  Returns S's length (at most ALEN). */
size_t bytewise_separator(const void *a, size_t alen, const void *b, size_t blen, uint8_t *out);

#endif
