/*
 * coding.h - little-endian fixed-width integers and varints, the building
 * blocks of every on-disk structure (docs/format.md).  Decoders take an end
 * pointer and never read past it.
 */
#ifndef STASH_CODING_H
#define STASH_CODING_H

#include <stddef.h>
#include <stdint.h>

static inline void enc_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void enc_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t dec_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t dec_u64(const uint8_t *p)
{
    return (uint64_t)dec_u32(p) | (uint64_t)dec_u32(p + 4) << 32;
}

/* Write V as a varint at P; returns its length (at most 10). */
static inline size_t enc_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Read a varint at P (not past END); returns its length, 0 if malformed. */
static inline size_t dec_varint(const uint8_t *p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (size_t i = 0; i < 10 && p + i < end; i++) {
        r |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *v = r;
            return i + 1;
        }
    }
    return 0;
}

#endif
