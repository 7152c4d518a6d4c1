/*
 * block.c - block builder and block iterator; see block.h.
 *
 * Entry:   shared (varint) | unshared (varint) | value length (varint)
 *          | unshared key bytes | value bytes
 * Trailer: restart offsets (u32 each) | restart count (u32)
 */
#include "block.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "coding.h"

struct buf {
    uint8_t *p;
    size_t len, cap;
};

static int buf_reserve(struct buf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

struct block_builder {
    struct buf data;
    struct buf last;          /* the previous key */
    uint32_t *restarts;
    size_t nrestarts, caprestarts;
    int since_restart;
    int finished;
};

int bytewise_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* Past the bytes A and B share, the first byte of A that can be raised by
 * one -- at the point of difference only if that keeps it below B's byte --
 * ends the separator: everything before it is A's, so S > A, and at the
 * point of difference S is still below B. */
size_t bytewise_separator(const void *a, size_t alen, const void *b, size_t blen, uint8_t *out)
{
    const uint8_t *x = a, *y = b;
    size_t n = alen < blen ? alen : blen, d = 0;
    while (d < n && x[d] == y[d])
        d++;
    if (d < n) {
        for (size_t p = d; p < alen; p++) {
            if (x[p] < 0xff && (p > d || x[p] + 1 < y[p])) {
                memcpy(out, x, p);
                out[p] = (uint8_t)(x[p] + 1);
                return p + 1;
            }
        }
    }
    memcpy(out, a, alen);   /* A a prefix of B, or nothing shorter fits */
    return alen;
}

block_builder_t *bb_new(void)
{
    return calloc(1, sizeof(block_builder_t));
}

void bb_free(block_builder_t *b)
{
    if (b) {
        free(b->data.p);
        free(b->last.p);
        free(b->restarts);
        free(b);
    }
}

void bb_reset(block_builder_t *b)
{
    b->data.len = 0;
    b->last.len = 0;
    b->nrestarts = 0;
    b->since_restart = 0;
    b->finished = 0;
}

int bb_empty(const block_builder_t *b)
{
    return b->data.len == 0;
}

size_t bb_size(const block_builder_t *b)
{
    return b->data.len + 4 * (b->nrestarts + 1) + 4;
}

const uint8_t *bb_last_key(const block_builder_t *b, size_t *len)
{
    *len = b->last.len;
    return b->last.p;
}

int bb_add(block_builder_t *b, const void *key, size_t klen, const void *val, size_t vlen)
{
    size_t shared = 0;
    if (b->since_restart == RESTART_EVERY || b->data.len == 0) {
        if (b->nrestarts == b->caprestarts) {
            size_t cap = b->caprestarts ? 2 * b->caprestarts : 64;
            uint32_t *r = realloc(b->restarts, cap * sizeof *r);
            if (!r)
                return -ENOMEM;
            b->restarts = r;
            b->caprestarts = cap;
        }
        b->restarts[b->nrestarts++] = (uint32_t)b->data.len;
        b->since_restart = 0;
    } else {
        size_t n = klen < b->last.len ? klen : b->last.len;
        while (shared < n && ((const uint8_t *)key)[shared] == b->last.p[shared])
            shared++;
    }
    if (buf_reserve(&b->data, 30 + klen - shared + vlen) < 0)
        return -ENOMEM;
    uint8_t *p = b->data.p + b->data.len;
    p += enc_varint(p, shared);
    p += enc_varint(p, klen - shared);
    p += enc_varint(p, vlen);
    memcpy(p, (const uint8_t *)key + shared, klen - shared);
    p += klen - shared;
    if (vlen)
        memcpy(p, val, vlen);
    p += vlen;
    b->data.len = (size_t)(p - b->data.p);
    b->last.len = 0;
    if (buf_reserve(&b->last, klen) < 0)
        return -ENOMEM;
    if (klen)           /* (an empty first key: no buffer yet) */
        memcpy(b->last.p, key, klen);
    b->last.len = klen;
    b->since_restart++;
    return 0;
}

int bb_finish(block_builder_t *b, const uint8_t **out, size_t *len)
{
    if (!b->finished) {
        if (buf_reserve(&b->data, 4 * b->nrestarts + 4) < 0)
            return -ENOMEM;
        for (size_t i = 0; i < b->nrestarts; i++) {
            enc_u32(b->data.p + b->data.len, b->restarts[i]);
            b->data.len += 4;
        }
        enc_u32(b->data.p + b->data.len, (uint32_t)b->nrestarts);
        b->data.len += 4;
        b->finished = 1;
    }
    *out = b->data.p;
    *len = b->data.len;
    return 0;
}

/* ---- iterator ---- */

struct block_iter {
    const uint8_t *data;
    size_t entries_end;       /* where the restart array starts */
    const uint8_t *restarts;
    uint32_t nrestarts;
    sst_cmp_fn cmp;
    size_t cur;               /* offset of the current entry */
    size_t next;              /* offset of the entry after it */
    struct buf key;
    const uint8_t *val;
    size_t vlen;
    int valid;
    int status;
};

block_iter_t *bi_new(const uint8_t *data, size_t len, sst_cmp_fn cmp)
{
    block_iter_t *it = calloc(1, sizeof *it);
    if (it)
        bi_reset(it, data, len, cmp);
    return it;
}

void bi_reset(block_iter_t *it, const uint8_t *data, size_t len, sst_cmp_fn cmp)
{
    struct buf key = it->key;   /* kept: no allocation per block */
    memset(it, 0, sizeof *it);
    it->key.p = key.p;
    it->key.cap = key.cap;
    it->data = data;
    it->cmp = cmp ? cmp : bytewise_cmp;
    if (len < 4) {
        it->status = -EIO;
        return;
    }
    uint32_t n = dec_u32(data + len - 4);
    if (n == 0 || (uint64_t)n * 4 + 4 > len) {
        it->status = -EIO;
        return;
    }
    it->nrestarts = n;
    it->entries_end = len - 4 - (size_t)n * 4;
    it->restarts = data + it->entries_end;
}

void bi_free(block_iter_t *it)
{
    if (it) {
        free(it->key.p);
        free(it);
    }
}

static void corrupt(block_iter_t *it)
{
    it->valid = 0;
    it->status = -EIO;
}

/* Decode the entry at it->next into the current position. */
static int decode_next(block_iter_t *it)
{
    if (it->next >= it->entries_end) {
        it->valid = 0;
        return 0;
    }
    const uint8_t *p = it->data + it->next, *end = it->data + it->entries_end;
    uint64_t shared, unshared, vlen;
    size_t k;
    if (!(k = dec_varint(p, end, &shared)))
        goto bad;
    p += k;
    if (!(k = dec_varint(p, end, &unshared)))
        goto bad;
    p += k;
    if (!(k = dec_varint(p, end, &vlen)))
        goto bad;
    p += k;
    if (shared > it->key.len || unshared > (uint64_t)(end - p) || vlen > (uint64_t)(end - p) - unshared)
        goto bad;
    it->key.len = (size_t)shared;
    if (buf_reserve(&it->key, (size_t)unshared) < 0) {
        it->valid = 0;
        it->status = -ENOMEM;
        return -1;
    }
    if (unshared)
        memcpy(it->key.p + shared, p, (size_t)unshared);
    it->key.len += (size_t)unshared;
    p += unshared;
    it->val = p;
    it->vlen = (size_t)vlen;
    it->cur = it->next;
    it->next = (size_t)(p + vlen - it->data);
    it->valid = 1;
    return 0;
bad:
    corrupt(it);
    return -1;
}

static int restart_at(block_iter_t *it, uint32_t i)
{
    uint32_t off = dec_u32(it->restarts + 4 * (size_t)i);
    if (off > it->entries_end || (off == it->entries_end && off != 0)) {   /* 0: an empty block */
        corrupt(it);
        return -1;
    }
    it->key.len = 0;
    it->next = off;
    return decode_next(it);
}

void bi_seek_first(block_iter_t *it)
{
    if (it->status)
        return;
    restart_at(it, 0);
}

void bi_next(block_iter_t *it)
{
    if (it->valid)
        decode_next(it);
}

void bi_seek(block_iter_t *it, const void *key, size_t klen)
{
    if (it->status)
        return;
    /* Binary search for the last restart point whose key is < KEY. */
    uint32_t lo = 0, hi = it->nrestarts - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo + 1) / 2;
        if (restart_at(it, mid) < 0)
            return;
        if (!it->valid) {
            corrupt(it);
            return;
        }
        if (it->cmp(it->key.p, it->key.len, key, klen) < 0)
            lo = mid;
        else
            hi = mid - 1;
    }
    if (restart_at(it, lo) < 0)
        return;
    while (it->valid && it->cmp(it->key.p, it->key.len, key, klen) < 0)
        decode_next(it);
}

int bi_valid(const block_iter_t *it)
{
    return it->valid;
}

const uint8_t *bi_key(const block_iter_t *it, size_t *klen)
{
    *klen = it->key.len;
    return it->key.p;
}

const uint8_t *bi_value(const block_iter_t *it, size_t *vlen)
{
    *vlen = it->vlen;
    return it->val;
}

int bi_status(const block_iter_t *it)
{
    return it->status;
}
