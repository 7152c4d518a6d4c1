/*
 * bloom.c - bloom filters with double hashing: probe i sets bit
 * (h + i * delta) mod bits, delta = h rotated by 17 bits.
 */
#include "bloom.h"

#include <string.h>

static inline uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* A 32-bit hash: 8 bytes at a time through a multiply-rotate mix, then a
 * final avalanche, so every input bit affects every output bit. */
uint32_t bloom_hash(const void *data, size_t n)
{
    const uint8_t *p = data;
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xC2B2AE3D27D4EB4FULL);
    while (n >= 8) {
        h ^= rd64(p) * 0x87C37B91114253D5ULL;
        h = (h << 31 | h >> 33) * 0x4CF5AD432745937FULL;
        p += 8;
        n -= 8;
    }
    uint64_t t = 0;
    for (size_t i = 0; i < n; i++)
        t |= (uint64_t)p[i] << (8 * i);
    h ^= t * 0x87C37B91114253D5ULL;
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ULL;
    h ^= h >> 33;
    return (uint32_t)h;
}

size_t bloom_size(size_t n, int bits_per_key)
{
    size_t bits = n * (size_t)bits_per_key;
    if (bits < 64)
        bits = 64;
    return (bits + 7) / 8 + 1;
}

void bloom_build(uint8_t *out, size_t size, const uint32_t *hashes, size_t n, int bits_per_key)
{
    int k = (int)(bits_per_key * 0.69);
    if (k < 1)
        k = 1;
    if (k > 30)
        k = 30;
    size_t bits = (size - 1) * 8;
    memset(out, 0, size);
    out[size - 1] = (uint8_t)k;
    for (size_t i = 0; i < n; i++) {
        uint32_t h = hashes[i], delta = h >> 17 | h << 15;
        for (int j = 0; j < k; j++) {
            size_t b = h % bits;
            out[b / 8] |= (uint8_t)(1u << (b % 8));
            h += delta;
        }
    }
}

int bloom_may_contain(const uint8_t *f, size_t size, uint32_t h)
{
    if (size < 2)
        return 1;
    int k = f[size - 1];
    if (k < 1 || k > 30)
        return 1;
    size_t bits = (size - 1) * 8;
    uint32_t delta = h >> 17 | h << 15;
    for (int j = 0; j < k; j++) {
        size_t b = h % bits;
        if (!(f[b / 8] & (1u << (b % 8))))
            return 0;
        h += delta;
    }
    return 1;
}
