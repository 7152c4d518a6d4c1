/*
 * batch.c - write batches: building them and walking their encoding.
 * See batch.h for the byte layout.
 */
#include "batch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "coding.h"
#include "err.h"
#include "memtable.h"
#include "value.h"

struct stash_batch {
    uint8_t *buf;
    size_t len, cap;
    uint32_t count;
    int blobs;          /* holds a new chunked value */
};

static int reserve(stash_batch_t *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more)
        cap *= 2;
    uint8_t *p = realloc(b->buf, cap);
    if (!p)
        return -ENOMEM;
    b->buf = p;
    b->cap = cap;
    return 0;
}

stash_batch_t *stash_batch_new(void)
{
    stash_batch_t *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    if (reserve(b, BATCH_HEADER) < 0) {
        free(b);
        return NULL;
    }
    memset(b->buf, 0, BATCH_HEADER);
    b->len = BATCH_HEADER;
    return b;
}

void stash_batch_free(stash_batch_t *b)
{
    if (b) {
        free(b->buf);
        free(b);
    }
}

void stash_batch_clear(stash_batch_t *b)
{
    if (b) {
        b->len = BATCH_HEADER;
        b->count = 0;
        b->blobs = 0;
        enc_u32(b->buf + 8, 0);
    }
}

size_t stash_batch_count(const stash_batch_t *b)
{
    return b ? b->count : 0;
}

/* Append one entry as it is stored: KEY is a stored key, VAL a stored value. */
static int add_raw(stash_batch_t *b, int type, const void *key, size_t klen,
                   const void *hdr, size_t hlen, const void *val, size_t vlen)
{
    if (!b || !key || klen == 0 || klen > IKEY_MAX || b->count == UINT32_MAX)
        return -EINVAL;
    if (reserve(b, 1 + 10 + klen + 10 + hlen + vlen) < 0)
        return -ENOMEM;
    uint8_t *p = b->buf + b->len;
    *p++ = (uint8_t)type;
    p += enc_varint(p, klen);
    memcpy(p, key, klen);
    p += klen;
    if (type == KT_PUT) {
        p += enc_varint(p, hlen + vlen);
        if (hlen)
            memcpy(p, hdr, hlen);
        p += hlen;
        if (vlen)
            memcpy(p, val, vlen);
        p += vlen;
    }
    b->len = (size_t)(p - b->buf);
    b->count++;
    enc_u32(b->buf + 8, b->count);
    return 0;
}

int batch_put_raw(stash_batch_t *b, const void *key, size_t klen, const void *hdr, size_t hlen,
                  const void *val, size_t vlen)
{
    return add_raw(b, KT_PUT, key, klen, hdr, hlen, val, vlen);
}

int batch_del_raw(stash_batch_t *b, const void *key, size_t klen)
{
    return add_raw(b, KT_DEL, key, klen, NULL, 0, NULL, 0);
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

int batch_put_chunk(stash_batch_t *b, int tagged, uint64_t gen, uint64_t idx, const uint8_t *val, size_t n)
{
    b->blobs = 1;
    if (all_zero(val, n))
        return 0;   /* a missing chunk reads as zeros */
    uint8_t ck[CHUNK_KEY_LEN], tag = CTAG_BYTES;
    if (tagged)
        tchunk_key(ck, gen, idx);
    else
        chunk_key(ck, gen, idx);
    return add_raw(b, KT_PUT, ck, sizeof ck, &tag, tagged ? 1 : 0, val, n);
}

int batch_put_chunks(stash_batch_t *b, const uint8_t *ikey, size_t iklen, int tagged, uint64_t gen,
                     const uint8_t *val, size_t vlen)
{
    uint8_t bk[BLOB_KEY_LEN];
    int rc = 0;
    for (size_t off = 0; rc == 0 && off < vlen; off += CHUNK_SIZE)
        rc = batch_put_chunk(b, tagged, gen, off / CHUNK_SIZE, val + off,
                             vlen - off < CHUNK_SIZE ? vlen - off : CHUNK_SIZE);
    if (rc == 0) {
        blob_key(bk, gen);
        rc = add_raw(b, KT_PUT, bk, sizeof bk, NULL, 0, ikey, iklen);
        b->blobs = 1;
    }
    return rc;
}

int batch_has_blobs(const stash_batch_t *b)
{
    return b->blobs;
}

void batch_set_blobs(stash_batch_t *b)
{
    b->blobs = 1;
}

static int add(stash_batch_t *b, int type, const void *key, size_t klen,
               const void *val, size_t vlen)
{
    if (!b || !key || (vlen && !val))
        return err_set(-EINVAL, "batch: NULL argument");
    if (klen == 0 || klen > STASH_MAX_KEY)
        return err_set(-EINVAL, "batch: key length %zu outside 1..%u", klen, (unsigned)STASH_MAX_KEY);
    if (vlen > STASH_MAX_VALUE)
        return err_set(-EINVAL, "batch: value length %zu over the limit of %u", vlen, (unsigned)STASH_MAX_VALUE);
    if (b->count == UINT32_MAX)
        return err_set(-EINVAL, "batch: over %u entries", UINT32_MAX);
    struct skey k;
    if (skey_make(&k, key, klen) < 0)
        return err_set(-ENOMEM, "out of memory");
    int rc;
    if (type == KT_DEL) {
        rc = add_raw(b, KT_DEL, k.p, k.len, NULL, 0, NULL, 0);
    } else {
        struct envelope e = {.kind = VK_PLAIN};
        uint8_t hdr[128];
        e.st.mtime_ns = e.st.atime_ns = e.st.ctime_ns = now_ns();
        if (vlen > INLINE_MAX) {
            e.kind = VK_CHUNKED;
            e.tagged = 1;
            e.st.size = vlen;
            e.gen = new_gen();
            e.chunks_known = 1;     /* batch_put_chunks leaves out those of zeros */
            for (size_t off = 0; off < vlen; off += CHUNK_SIZE)
                e.chunks += !all_zero(val + off, vlen - off < CHUNK_SIZE ? vlen - off : CHUNK_SIZE);
            rc = batch_put_chunks(b, k.p, k.len, 1, e.gen, val, vlen);
            if (rc == 0)
                rc = add_raw(b, KT_PUT, k.p, k.len, hdr, env_encode_header(&e, hdr), NULL, 0);
        } else {
            rc = add_raw(b, KT_PUT, k.p, k.len, hdr, env_encode_header(&e, hdr), val, vlen);
        }
    }
    skey_done(&k);
    return rc;
}

int stash_batch_put(stash_batch_t *b, const void *key, size_t klen, const void *val, size_t vlen)
{
    return add(b, KT_PUT, key, klen, val, vlen);
}

int stash_batch_delete(stash_batch_t *b, const void *key, size_t klen)
{
    return add(b, KT_DEL, key, klen, NULL, 0);
}

const uint8_t *batch_data(const stash_batch_t *b, size_t *len)
{
    *len = b->len;
    return b->buf;
}

void batch_set_seq(stash_batch_t *b, uint64_t seq)
{
    enc_u64(b->buf, seq);
}

int batch_append(stash_batch_t *dst, const stash_batch_t *src)
{
    size_t n = src->len - BATCH_HEADER;
    if ((uint64_t)dst->count + src->count > UINT32_MAX)
        return -EINVAL;
    if (reserve(dst, n) < 0)
        return -ENOMEM;
    memcpy(dst->buf + dst->len, src->buf + BATCH_HEADER, n);
    dst->len += n;
    dst->count += src->count;
    dst->blobs |= src->blobs;
    enc_u32(dst->buf + 8, dst->count);
    return 0;
}

int batch_decode(const uint8_t *data, size_t len, batch_fn fn, void *arg,
                 uint64_t *first_seq, uint32_t *count)
{
    if (len < BATCH_HEADER)
        return -EIO;
    uint64_t seq = dec_u64(data);
    uint32_t n = dec_u32(data + 8);
    const uint8_t *p = data + BATCH_HEADER, *end = data + len;
    uint32_t i;
    for (i = 0; p < end; i++) {
        int type = *p++;
        uint64_t klen, vlen = 0;
        size_t k;
        if (type != KT_PUT && type != KT_DEL)
            return -EIO;
        if (!(k = dec_varint(p, end, &klen)) || klen == 0 || klen > IKEY_MAX ||
            klen > (uint64_t)(end - p - k))
            return -EIO;
        p += k;
        const uint8_t *key = p;
        p += klen;
        const uint8_t *val = NULL;
        if (type == KT_PUT) {
            if (!(k = dec_varint(p, end, &vlen)) || vlen > (uint64_t)(end - p - k))
                return -EIO;
            p += k;
            val = p;
            p += vlen;
        }
        if (fn) {
            int rc = fn(arg, seq + i, type, key, klen, val, vlen);
            if (rc)
                return rc;
        }
    }
    if (i != n)
        return -EIO;
    if (first_seq)
        *first_seq = seq;
    if (count)
        *count = n;
    return 0;
}
