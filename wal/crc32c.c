/*
 * crc32c.c - CRC-32C in hardware (x86-64 SSE4.2) or with a slicing-by-8 table.
 * The tables are computed at compile time's equivalent: once, by a
 * constructor, before any thread can call in.
 */
#include "crc32c.h"

#include <string.h>

static uint32_t tab[8][256];

__attribute__((constructor)) static void init_tables(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
        tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            tab[t][i] = (tab[t - 1][i] >> 8) ^ tab[0][tab[t - 1][i] & 0xff];
}

uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    crc = ~crc;
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;   /* little-endian: the low 4 bytes take the running crc */
        crc = tab[7][w & 0xff] ^ tab[6][(w >> 8) & 0xff] ^ tab[5][(w >> 16) & 0xff] ^
              tab[4][(w >> 24) & 0xff] ^ tab[3][(w >> 32) & 0xff] ^ tab[2][(w >> 40) & 0xff] ^
              tab[1][(w >> 48) & 0xff] ^ tab[0][w >> 56];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc >> 8) ^ tab[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

#if defined(__x86_64__)
/*
 * The crc32 instruction has a latency of three cycles but issues one per
 * cycle, so one chain of it runs at a third of the speed the unit allows.
 * Long buffers are therefore cut into runs of 3 * LANE bytes, whose three
 * thirds are summed as three independent chains.  CRC arithmetic is linear:
 * the register after A then B is shift(register after A, |B|) xor (the
 * register after B started from 0), where shift(x, n) is what n zero bytes
 * do to register x.  shift by LANE and by 2 * LANE are tabled per byte of
 * x (built with the instruction itself at start-up).
 */
#define LANE 256

static uint32_t shift1[4][256], shift2[4][256];

__attribute__((target("sse4.2"))) static uint32_t zeros(uint32_t c, size_t n)
{
    uint64_t r = c;
    for (size_t i = 0; i < n; i += 8)
        r = __builtin_ia32_crc32di(r, 0);
    return (uint32_t)r;
}

static void init_shift(void)
{
    for (int b = 0; b < 4; b++)
        for (uint32_t v = 0; v < 256; v++) {
            shift1[b][v] = zeros(v << (8 * b), LANE);
            shift2[b][v] = zeros(v << (8 * b), 2 * LANE);
        }
}

static inline uint32_t shift(const uint32_t t[4][256], uint32_t x)
{
    return t[0][x & 0xff] ^ t[1][(x >> 8) & 0xff] ^ t[2][(x >> 16) & 0xff] ^ t[3][x >> 24];
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint64_t c = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        len--;
    }
    while (len >= 3 * LANE) {
        uint64_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < LANE; i += 8) {
            uint64_t w0, w1, w2;
            memcpy(&w0, p + i, 8);
            memcpy(&w1, p + LANE + i, 8);
            memcpy(&w2, p + 2 * LANE + i, 8);
            c = __builtin_ia32_crc32di(c, w0);
            c1 = __builtin_ia32_crc32di(c1, w1);
            c2 = __builtin_ia32_crc32di(c2, w2);
        }
        c = shift(shift2, (uint32_t)c) ^ shift(shift1, (uint32_t)c1) ^ (uint32_t)c2;
        p += 3 * LANE;
        len -= 3 * LANE;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        len -= 8;
    }
    while (len--)
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    return ~(uint32_t)c;
}

static int have_hw = -1;

__attribute__((constructor)) static void detect(void)
{
    __builtin_cpu_init();
    have_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    if (have_hw)
        init_shift();
}

uint32_t crc32c_extend(uint32_t crc, const void *buf, size_t len)
{
    return have_hw > 0 ? crc32c_hw(crc, buf, len) : crc32c_sw(crc, buf, len);
}
#else
uint32_t crc32c_extend(uint32_t crc, const void *buf, size_t len)
{
    return crc32c_sw(crc, buf, len);
}
#endif
