/*
 * bloom.h - the bloom filter of a table: one bit array over the hashes of
 * its keys' filter parts, so a lookup of a key the table does not hold
 * usually costs no data-block read.  The filter's last byte is the number of
 * probes; a filter with an unknown probe count answers "maybe" for every key,
 * so damage can only cost speed, never a wrong "no".
 * Pure functions; thread-safe.
 */
#ifndef STASH_BLOOM_H
#define STASH_BLOOM_H

#include <stddef.h>
#include <stdint.h>

uint32_t bloom_hash(const void *p, size_t n);

/* Bytes of a filter for N keys at BITS_PER_KEY (bits + 1 probe-count byte). */
size_t bloom_size(size_t n, int bits_per_key);

/* Build into OUT (bloom_size bytes) from N hashes. */
void bloom_build(uint8_t *out, size_t size, const uint32_t *hashes, size_t n, int bits_per_key);

/* 0 when the key with hash H is certainly absent, 1 when it may be present. */
int bloom_may_contain(const uint8_t *f, size_t size, uint32_t h);

#endif
