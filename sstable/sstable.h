/*
 * sstable.h - sorted string tables: immutable files of key/value entries in
 * key order, written once by a writer and read by any number of threads.
 *
 * A table is data blocks (about block_size bytes each, keys prefix-compressed,
 * each zstd-compressed when that saves at least an eighth, with a zstd
 * dictionary trained on the table's first blocks when there are enough of
 * them), a bloom filter over the keys' filter parts, a properties block, an
 * index block (per data block, a key between its last key and the next
 * block's first, and where the block is), and a fixed 64-byte footer
 * with a magic number, a format version (3 written; 1 and 2 still read) and
 * its own checksum.  Every block
 * carries a CRC32C that is checked on every read from disk.  The byte layout
 * is in docs/format.md.
 *
 * The module knows nothing of the engine: keys are opaque bytes ordered by
 * the caller's comparator, and the caller says how much of a key the filter
 * covers (the engine filters on the user key and leaves out its sequence
 * trailer).
 *
 * Errors are negative errnos with a message (err.h).  A file that is not a
 * table, has the wrong version, is truncated, or whose footer, index, filter
 * or properties fail their checksum is refused by sst_open with -EIO.  A data
 * block that fails its checksum or does not parse makes the lookup or
 * iterator that touched it fail with -EIO; nothing wrong is ever returned.
 *
 * Threads: a writer belongs to one thread.  A reader is safe from many
 * threads at once (pread on one descriptor, immutable parsed state; the
 * cache locks itself).  An iterator belongs to one thread and keeps its
 * reader alive only as long as the caller keeps the reader open.
 */
#ifndef STASH_SSTABLE_H
#define STASH_SSTABLE_H

#include <stddef.h>
#include <stdint.h>

#include "block.h"
#include "cache.h"

#define SST_VERSION_RAW 1    /* read only: no dictionary, 16-byte index handles */
#define SST_VERSION_DICT 2   /* read only: a dictionary, 16-byte index handles */
#define SST_VERSION 3        /* written: varint index handles, separator index keys,
                              * a dictionary when the properties name one */
#define SST_MAGIC   UINT64_C(0x5353544153485442)   /* "BTHSATSS" on disk */
#define SST_FOOTER  64

typedef struct sst_keyfmt {
    sst_cmp_fn cmp;                                   /* NULL = bytewise */
    size_t (*filter_len)(const void *key, size_t klen); /* NULL = whole key */
    /* Write to OUT (room for ALEN bytes) a key S with A <= S < B in CMP's
     * order, as short as it can be, and return its length: the index keeps S
     * in place of A, the last key of a data block (B is the next block's
     * first).  NULL = bytewise shortening when CMP is NULL, else A itself. */
    size_t (*separator)(const void *a, size_t alen, const void *b, size_t blen, uint8_t *out);
} sst_keyfmt_t;

typedef struct sst_options {
    size_t block_size;          /* data block target, bytes */
    int compression_level;      /* zstd level (negative: zstd's fast levels), 0 = none */
    int bloom_bits_per_key;     /* 0 = no filter */
    size_t dict_size;           /* largest zstd dictionary to train, bytes; 0 = none */
} sst_options_t;

typedef struct sst_writer sst_writer_t;
typedef struct sst_reader sst_reader_t;
typedef struct sst_iter sst_iter_t;

/* ---- writing ---- */

/* Create PATH (it must not exist) for a new table.  -EEXIST, -ENOSPC, -EIO. */
int sst_writer_open(const char *path, const sst_options_t *o, const sst_keyfmt_t *kf,
                    sst_writer_t **out);
/* Add an entry; keys strictly increasing (-EINVAL otherwise). */
int sst_writer_add(sst_writer_t *w, const void *key, size_t klen, const void *val, size_t vlen);
/* Record a named number in the properties block (names up to 64 bytes). */
int sst_writer_set_prop(sst_writer_t *w, const char *name, uint64_t value);
uint64_t sst_writer_size(const sst_writer_t *w);   /* bytes so far (estimate) */
uint64_t sst_writer_count(const sst_writer_t *w);
/* Write the meta blocks and footer, fsync, close; frees W.  On error the file
 * is removed.  The caller fsyncs the directory. */
int sst_writer_finish(sst_writer_t *w, uint64_t *file_size);
/* Give up: close and remove the file; frees W. */
void sst_writer_abandon(sst_writer_t *w);

/* ---- reading ---- */

/* Open the table at PATH; FILE_NUMBER keys its blocks in CACHE (may be NULL). */
int sst_open(const char *path, uint64_t file_number, const sst_keyfmt_t *kf,
             sst_cache_t *cache, sst_reader_t **out);
void sst_close(sst_reader_t *r);

/*
 * Serve R's block reads from a read-only shared mapping of its file from
 * now on (call before R is shared between threads): a raw block of up to
 * 32 KiB is then read in place -- no system call, no copy, no block cache
 * entry -- and its checksum still checked on every read; compressed blocks
 * are decompressed straight from the mapping into the block cache; larger
 * blocks keep pread (cheap next to their size, and their pages stay out of
 * the process's resident memory).  The price: an I/O error
 * of the disk under a mapped page, or the file truncated by someone else,
 * is a SIGBUS rather than -EIO.  0, or a negative errno (R keeps pread).
 */
int sst_map(sst_reader_t *r);

/* Is KEY possibly in the table?  0 only when the filter rules it out. */
int sst_may_contain(const sst_reader_t *r, const void *key, size_t klen);

/*
 * Point lookup: find the first entry >= KEY and call FN with it (unless the
 * filter rules KEY out).  Returns FN's return value, 1 when no entry was
 * offered (filter miss or KEY after the last key), or -EIO.
 */
typedef int (*sst_get_fn)(void *arg, const void *key, size_t klen, const void *val, size_t vlen);
int sst_get(sst_reader_t *r, const void *key, size_t klen, sst_get_fn fn, void *arg);

uint64_t sst_entries(const sst_reader_t *r);
uint64_t sst_file_size(const sst_reader_t *r);
const void *sst_smallest(const sst_reader_t *r, size_t *len);
const void *sst_largest(const sst_reader_t *r, size_t *len);
/* A property by name: 0 and *v, or -ENOENT. */
int sst_prop(const sst_reader_t *r, const char *name, uint64_t *v);

/* Iterators; NULL only when out of memory.  The key and value an iterator
 * gives stay valid until it moves.  Blocks it reads go into the block cache
 * until it has moved on through four blocks in a row; from then until the
 * next seek it reads past the cache (using what is cached), so a long scan
 * or a compaction leaves the cache to lookups. */
sst_iter_t *sst_iter_new(sst_reader_t *r);
void sst_iter_free(sst_iter_t *it);
/* Point IT at table R instead (unpositioned, status 0), keeping its memory:
 * cheaper than a free and a new when a scan moves from table to table.  R =
 * NULL lets go of the old table (which may then be closed); IT must then be
 * reset to a table or freed before any other use. */
void sst_iter_reset(sst_iter_t *it, sst_reader_t *r);
void sst_iter_seek(sst_iter_t *it, const void *key, size_t klen);
void sst_iter_seek_first(sst_iter_t *it);
int sst_iter_valid(const sst_iter_t *it);
void sst_iter_next(sst_iter_t *it);
const void *sst_iter_key(const sst_iter_t *it, size_t *klen);
const void *sst_iter_value(const sst_iter_t *it, size_t *vlen);
int sst_iter_status(const sst_iter_t *it);

#endif
