/*
 * cache.h - the block cache: uncompressed, checksum-verified table blocks
 * kept in memory, keyed by (file number, block offset), bounded in bytes.
 *
 * Sixteen shards, each an LRU list and a hash table under its own mutex, so
 * readers on different blocks rarely contend.  Entries are reference-counted:
 * a block handed out stays valid until released, even if it is evicted or
 * replaced meanwhile (it is freed at its last release).  File numbers are
 * never reused by the engine, so a deleted table's blocks are never found
 * again and simply age out.  Capacity 0 caches nothing (inserts hand back a
 * handle that is freed at release).  Thread-safe.
 */
#ifndef STASH_CACHE_H
#define STASH_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct sst_cache sst_cache_t;
typedef struct cache_entry cache_entry_t;

sst_cache_t *sst_cache_new(size_t capacity);
void sst_cache_free(sst_cache_t *c);   /* every handle must be released first */

/* The block at (FILE, OFF) with a reference taken, or NULL. */
cache_entry_t *sst_cache_lookup(sst_cache_t *c, uint64_t file, uint64_t off);

/* Insert DATA (malloc'd, LEN bytes; the cache takes it) and return it with a
 * reference taken.  NULL only when out of memory (DATA is then freed). */
cache_entry_t *sst_cache_insert(sst_cache_t *c, uint64_t file, uint64_t off, void *data, size_t len);

const void *sst_cache_data(const cache_entry_t *e, size_t *len);
void sst_cache_release(sst_cache_t *c, cache_entry_t *e);

/* Bytes charged now, and lookups that hit / missed since creation. */
void sst_cache_stats(sst_cache_t *c, size_t *used, uint64_t *hits, uint64_t *misses);

#endif
