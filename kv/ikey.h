/*
 * ikey.h - internal keys as tables store them: the user key followed by an
 * 8-byte trailer, the tag (sequence << 8 | type) as a little-endian u64.
 * Ordered by user key ascending (bytewise), then tag descending, the same
 * order as the memtable's.  Pure functions.
 */
#ifndef STASH_IKEY_H
#define STASH_IKEY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "block.h"
#include "coding.h"
#include "memtable.h"

#define IKEY_TRAILER 8

static inline void ikey_make(uint8_t *out, const void *ukey, size_t klen, uint64_t tag)
{
    memcpy(out, ukey, klen);
    enc_u64(out + klen, tag);
}

static inline uint64_t ikey_tag(const uint8_t *ik, size_t len)
{
    return dec_u64(ik + len - IKEY_TRAILER);
}

static inline size_t ikey_ulen(size_t len)
{
    return len - IKEY_TRAILER;
}

/* The comparator and filter-key function handed to the table module.  Keys
 * shorter than a trailer never reach them: the engine writes none. */
static inline int ikey_packed_cmp(const void *a, size_t al, const void *b, size_t bl)
{
    if (al < IKEY_TRAILER || bl < IKEY_TRAILER)
        return al < bl ? -1 : al > bl;
    return ikey_cmp(a, al - IKEY_TRAILER, ikey_tag(a, al), b, bl - IKEY_TRAILER, ikey_tag(b, bl));
}

/* The table index's key between A (a block's last key) and B (the next
 * block's first): the shortest user key between theirs with the largest tag,
 * which sorts before every real entry of that user key; A itself when the
 * user keys are one or nothing shorter lies between. */
static inline size_t ikey_separator(const void *a, size_t al, const void *b, size_t bl, uint8_t *out)
{
    if (al < IKEY_TRAILER || bl < IKEY_TRAILER) {
        memcpy(out, a, al);
        return al;
    }
    size_t ul = al - IKEY_TRAILER;
    size_t sl = bytewise_separator(a, ul, b, bl - IKEY_TRAILER, out);
    if (sl == ul && memcmp(out, a, ul) == 0) {
        memcpy(out, a, al);
        return al;
    }
    enc_u64(out + sl, UINT64_MAX);
    return sl + IKEY_TRAILER;
}

static inline size_t ikey_filter_len(const void *k, size_t kl)
{
    (void)k;
    return kl >= IKEY_TRAILER ? kl - IKEY_TRAILER : kl;
}

#endif
