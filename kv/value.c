/*
 * value.c - key namespaces and value envelopes.  See value.h for the layout.
 */
#include "value.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "coding.h"

size_t key_escape(const void *k, size_t klen, uint8_t *out)
{
    const uint8_t *p = k;
    if (klen && p[0] == NS_BYTE) {
        out[0] = NS_BYTE;
        out[1] = NS_ESC;
        memcpy(out + 2, p + 1, klen - 1);
        return klen + 1;
    }
    memcpy(out, p, klen);
    return klen;
}

int skey_make(struct skey *s, const void *key, size_t klen)
{
    s->heap = NULL;
    s->p = key;
    s->len = klen;
    if (klen && s->p[0] == NS_BYTE) {
        if (!(s->heap = malloc(klen + 1)))
            return -ENOMEM;
        s->len = key_escape(key, klen, s->heap);
        s->p = s->heap;
    }
    return 0;
}

void skey_done(struct skey *s)
{
    free(s->heap);
    s->heap = NULL;
}

int key_unescape(const uint8_t *k, size_t klen, uint8_t *out, size_t *ulen)
{
    if (klen && k[0] == NS_BYTE) {
        if (klen < 2 || k[1] != NS_ESC)
            return -1;
        out[0] = NS_BYTE;
        memcpy(out + 1, k + 2, klen - 2);
        *ulen = klen - 1;
        return 0;
    }
    memcpy(out, k, klen);
    *ulen = klen;
    return 0;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

void chunk_key(uint8_t out[CHUNK_KEY_LEN], uint64_t gen, uint64_t index)
{
    out[0] = NS_BYTE;
    out[1] = NS_CHUNK;
    put_be64(out + 2, gen);
    put_be64(out + 10, index);
}

void ckey(uint8_t out[CHUNK_KEY_LEN], const struct envelope *e, uint64_t index)
{
    out[0] = NS_BYTE;
    out[1] = e->tagged ? NS_TCHUNK : NS_CHUNK;
    put_be64(out + 2, e->gen);
    put_be64(out + 10, index);
}

void pkey(uint8_t out[CHUNK_KEY_LEN], const struct envelope *e, uint64_t index)
{
    out[0] = NS_BYTE;
    out[1] = NS_PATCH;
    put_be64(out + 2, e->gen);
    put_be64(out + 10, index);
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

int patch_apply(const uint8_t *p, size_t plen, uint8_t *c, size_t *n)
{
    const uint8_t *end = p + plen;
    while (p < end) {
        if ((size_t)(end - p) < PATCH_HDR)
            return -EIO;
        uint32_t off = get_le32(p), len = get_le32(p + 4);
        p += PATCH_HDR;
        if (len > (size_t)(end - p) || off > CHUNK_SIZE || len > CHUNK_SIZE - off)
            return -EIO;
        memcpy(c + off, p, len);
        if (off + len > *n)
            *n = off + len;
        p += len;
    }
    return 0;
}

size_t patch_entry(uint8_t *out, size_t off, const uint8_t *src, size_t len)
{
    put_le32(out, (uint32_t)off);
    put_le32(out + 4, (uint32_t)len);
    memcpy(out + PATCH_HDR, src, len);
    return PATCH_HDR + len;
}

void tchunk_key(uint8_t out[CHUNK_KEY_LEN], uint64_t gen, uint64_t index)
{
    out[0] = NS_BYTE;
    out[1] = NS_TCHUNK;
    put_be64(out + 2, gen);
    put_be64(out + 10, index);
}

void blob_key(uint8_t out[BLOB_KEY_LEN], uint64_t gen)
{
    out[0] = NS_BYTE;
    out[1] = NS_BLOB;
    put_be64(out + 2, gen);
}

void stream_key(uint8_t out[BLOB_KEY_LEN], uint64_t gen)
{
    out[0] = NS_BYTE;
    out[1] = NS_STREAM;
    put_be64(out + 2, gen);
}

void link_key(uint8_t out[LINK_KEY_LEN], uint64_t id)
{
    out[0] = NS_BYTE;
    out[1] = NS_LINK;
    put_be64(out + 2, id);
}

size_t lref_key(uint8_t *out, uint64_t id, const uint8_t *ik, size_t iklen)
{
    out[0] = NS_BYTE;
    out[1] = NS_LREF;
    put_be64(out + 2, id);
    if (iklen)
        memcpy(out + LINK_KEY_LEN, ik, iklen);
    return LINK_KEY_LEN + iklen;
}

static uint64_t t2u(int64_t t)
{
    return t < 0 ? 0 : (uint64_t)t;
}

int env_decode(const uint8_t *v, size_t n, struct envelope *e)
{
    const uint8_t *p = v, *end = v + n;
    uint64_t x;
    size_t k;
    memset(e, 0, sizeof *e);
    e->st.nlink = 1;
    if (n < 1)
        return -EIO;
    e->kind = *p++;
    if (e->kind == VK_TCHUNKED) {
        e->kind = VK_CHUNKED;
        e->tagged = 1;
    }
    if (e->kind == VK_LINK) {
        if (n != 9 || (e->link = dec_u64(p)) == 0)
            return -EIO;
        return 0;
    }
    if (e->kind == VK_PLAIN) {
        if (!(k = dec_varint(p, end, &x)))
            return -EIO;
        p += k;
        e->st.mtime_ns = e->st.atime_ns = e->st.ctime_ns = (int64_t)(x > INT64_MAX / 1000000000 ? 0 : x * 1000000000u);
        e->data = p;
        e->st.size = e->st.stored = (uint64_t)(end - p);
        return 0;
    }
    if (e->kind != VK_ATTR && e->kind != VK_CHUNKED)
        return -EIO;
    uint64_t alen;
    if (!(k = dec_varint(p, end, &alen)) || alen > (uint64_t)(end - p - k))
        return -EIO;
    p += k;
    const uint8_t *aend = p + alen;
    uint64_t f[6];
    for (int i = 0; i < 6; i++) {
        if (!(k = dec_varint(p, aend, &f[i])))
            return -EIO;
        p += k;
    }
    if (f[0] > UINT32_MAX || f[1] > UINT32_MAX || f[2] > UINT32_MAX)
        return -EIO;
    e->st.mode = (uint32_t)f[0];
    e->st.uid = (uint32_t)f[1];
    e->st.gid = (uint32_t)f[2];
    e->st.atime_ns = (int64_t)f[3];
    e->st.mtime_ns = (int64_t)f[4];
    e->st.ctime_ns = (int64_t)f[5];
    /* An inode number leads the extended attributes as one with an empty
     * name (no real one has that). */
    if (aend - p >= 10 && p[0] == 0 && p[1] == 8) {
        e->st.ino = dec_u64(p + 2);
        p += 10;
    }
    e->xattr = p;
    e->xlen = (size_t)(aend - p);
    p = aend;
    if (e->kind == VK_ATTR) {
        e->data = p;
        e->st.size = e->st.stored = (uint64_t)(end - p);
        return 0;
    }
    if (!(k = dec_varint(p, end, &e->st.size)) || (size_t)(end - p - k) < 8)
        return -EIO;
    e->gen = dec_u64(p + k);
    p += k + 8;
    e->st.stored = e->st.size;
    if (p < end) {
        if (!(k = dec_varint(p, end, &e->chunks)) || p + k != end)
            return -EIO;
        /* The chunk count only says what the holes spare: one past the
         * chunks the size spans is not believed (nor kept on the next
         * change), and the value still reads. */
        e->chunks_known = e->chunks <= (e->st.size + CHUNK_SIZE - 1) / CHUNK_SIZE;
        if (e->chunks_known && e->chunks * CHUNK_SIZE < e->st.size)
            e->st.stored = e->chunks * CHUNK_SIZE;
    }
    return 0;
}

int link_decode(const uint8_t *v, size_t n, uint64_t id, struct envelope *e)
{
    uint64_t nlink;
    size_t k = dec_varint(v, v + n, &nlink);
    if (!k || nlink == 0 || nlink > LINK_MAX || env_decode(v + k, n - k, e) < 0 ||
        (e->kind != VK_ATTR && e->kind != VK_CHUNKED))
        return -EIO;
    e->link = e->st.link_id = id;
    e->nlink = e->st.nlink = (uint32_t)nlink;
    return 0;
}

size_t env_header_max(size_t xlen)
{
    return 10 + 1 + 10 + 6 * 10 + 10 + xlen + 10 + 8 + 10;
}

size_t env_encode_header(const struct envelope *e, uint8_t *out)
{
    uint8_t *p = out;
    if (e->kind == VK_LINK) {
        *p++ = VK_LINK;
        enc_u64(p, e->link);
        return 9;
    }
    if (e->nlink)
        p += enc_varint(p, e->nlink);
    *p++ = (uint8_t)(e->kind == VK_CHUNKED && e->tagged ? VK_TCHUNKED : e->kind);
    if (e->kind == VK_PLAIN) {
        p += enc_varint(p, t2u(e->st.mtime_ns) / 1000000000u);
        return (size_t)(p - out);
    }
    uint8_t rec[6 * 10 + 10];
    size_t r = 0;
    r += enc_varint(rec + r, e->st.mode);
    r += enc_varint(rec + r, e->st.uid);
    r += enc_varint(rec + r, e->st.gid);
    /* Times before 1970 as their 64-bit two's complement (ten bytes). */
    r += enc_varint(rec + r, (uint64_t)e->st.atime_ns);
    r += enc_varint(rec + r, (uint64_t)e->st.mtime_ns);
    r += enc_varint(rec + r, (uint64_t)e->st.ctime_ns);
    if (e->st.ino) {
        rec[r++] = 0;
        rec[r++] = 8;
        enc_u64(rec + r, e->st.ino);
        r += 8;
    }
    p += enc_varint(p, r + e->xlen);
    memcpy(p, rec, r);
    p += r;
    if (e->xlen)
        memcpy(p, e->xattr, e->xlen);
    p += e->xlen;
    if (e->kind == VK_CHUNKED) {
        p += enc_varint(p, e->st.size);
        enc_u64(p, e->gen);
        p += 8;
        if (e->chunks_known)
            p += enc_varint(p, e->chunks);
    }
    return (size_t)(p - out);
}

int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/*
 * Random numbers from a per-thread splitmix64 stream seeded from the kernel:
 * a file create needs one, and a system call each time costs more than the
 * rest of the create.  A forked child reseeds (fork_epoch), or it would
 * repeat its parent's numbers, and chunk generations must never repeat.
 */
static _Atomic unsigned fork_epoch = 1;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void after_fork(void)
{
    atomic_fetch_add(&fork_epoch, 1);
}

static void watch_forks(void)
{
    pthread_atfork(NULL, NULL, after_fork);
}

uint64_t new_gen(void)
{
    static __thread uint64_t state;
    static __thread unsigned epoch;
    pthread_once(&fork_once, watch_forks);
    unsigned e = atomic_load(&fork_epoch);
    if (epoch != e) {
        if (getrandom(&state, sizeof state, 0) != (ssize_t)sizeof state) {
            /* No entropy source: time and address bits still differ per thread. */
            state = (uint64_t)now_ns() ^ ((uint64_t)(uintptr_t)&state << 17) ^ ((uint64_t)getpid() << 40);
        }
        epoch = e;
    }
    uint64_t z;
    do {
        z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
    } while (z == 0);
    return z;
}
