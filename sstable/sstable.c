/*
 * sstable.c - table writer, reader, point lookups and iterators; the
 * contract is in sstable.h and the byte layout in docs/format.md.
 *
 * Every block on disk is followed by a 5-byte trailer: the compression type
 * (0 raw, 1 zstd) and the CRC32C of the stored bytes and that type byte.  A
 * block handle is (offset, stored size without the trailer).  The footer, at
 * the very end, is 64 bytes: handles of the filter, properties and index
 * blocks (u64 offset + u64 size each), the format version (u32), the CRC32C
 * of the 52 bytes before it (u32), and the magic number (u64).
 */
#include "sstable.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define ZDICT_STATIC_LINKING_ONLY     /* ZDICT_trainFromBuffer_fastCover */
#include <zdict.h>
#include <zstd.h>

#include "bloom.h"
#include "coding.h"
#include "crc32c.h"
#include "err.h"

#define TRAILER 5
#define OUTBUF (256u << 10)
#define MAX_BLOCK ((uint64_t)2 << 30)   /* a block never decompresses to more */
#define MAX_PROPS 32

enum { RAW = 0, ZSTD = 1, ZSTD_DICT = 2 };

/*
 * The table's zstd dictionary.  A block of a few KiB is too small for zstd to earn
 * back its own entropy tables, and building those tables is much of the
 * cost of decompressing it.  So a compressing writer holds back its first
 * DICT_SAMPLE bytes of data blocks, trains a dictionary of up to dict_size
 * bytes on them, writes it first in the file and compresses every data block
 * with it; a reader loads it once at open.  Too few blocks to learn from
 * (a small table) and the blocks are compressed without one.
 */
#define DICT_SAMPLE (256u << 10)
#define DICT_MIN_BLOCKS 16

struct pend {
    uint8_t *data, *key;
    size_t len, klen;
};

struct handle {
    uint64_t off, size;
};

struct prop {
    char name[65];
    uint64_t value;
};

static const char *base(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* ================================================================== */
/* writer                                                               */

struct sst_writer {
    int fd;
    char *path;
    sst_options_t o;
    sst_keyfmt_t kf;
    block_builder_t *data, *index;
    uint8_t *out;                 /* bytes not yet written to the file */
    size_t outlen;
    uint64_t off;                 /* file offset of out[0] + outlen */
    uint8_t *last;                /* last key added */
    size_t lastlen, lastcap;
    uint8_t *first;               /* first key added */
    size_t firstlen;
    uint32_t *hashes;
    size_t nh, caph;
    uint64_t count, raw_bytes, stored_bytes, nblocks;
    struct prop props[MAX_PROPS];
    int nprops;
    ZSTD_CCtx *cctx;
    uint8_t *cbuf;
    size_t ccap;
    int error;
    int dict_state;               /* 0: holding blocks back, 1: compressing with cdict, -1: none */
    ZSTD_CDict *cdict;
    struct handle dict;           /* where the dictionary is ({0,0}: no dictionary) */
    struct pend *pend;            /* data blocks held back until the dictionary is made */
    size_t npend, cappend, pend_bytes;
    /* The last finished data block waits for the next key, which its index
     * key must stay below: 1, written (its handle WH, its last key WKEY);
     * 2, held back as pend[npend - 1]; 0, none waiting. */
    int waiting;
    struct handle wh;
    uint8_t *wkey;
    size_t wkeylen, wkeycap;
};

static int wflush(sst_writer_t *w)
{
    size_t done = 0;
    uint64_t at = w->off - w->outlen;
    while (done < w->outlen) {
        ssize_t k = pwrite(w->fd, w->out + done, w->outlen - done, (off_t)(at + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            int e = k < 0 ? errno : ENOSPC;
            return w->error = err_set(e == ENOSPC || e == EDQUOT ? -ENOSPC : -EIO,
                                      "sst %s: write failed: %s", base(w->path), strerror(e));
        }
        done += (size_t)k;
    }
    w->outlen = 0;
    return 0;
}

static int wappend(sst_writer_t *w, const void *p, size_t n)
{
    if (w->outlen + n > OUTBUF && w->outlen && wflush(w) < 0)
        return w->error;
    if (n > OUTBUF) {
        /* A block larger than the buffer goes straight to the file. */
        uint64_t at = w->off;
        size_t done = 0;
        while (done < n) {
            ssize_t k = pwrite(w->fd, (const uint8_t *)p + done, n - done, (off_t)(at + done));
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                int e = k < 0 ? errno : ENOSPC;
                return w->error = err_set(e == ENOSPC ? -ENOSPC : -EIO, "sst %s: write failed: %s",
                                          base(w->path), strerror(e));
            }
            done += (size_t)k;
        }
        w->off += n;
        return 0;
    }
    memcpy(w->out + w->outlen, p, n);
    w->outlen += n;
    w->off += n;
    return 0;
}

/* Compress (when worth it), checksum and append one block. */
static int write_block(sst_writer_t *w, const uint8_t *data, size_t len, struct handle *h)
{
    const uint8_t *stored = data;
    size_t slen = len;
    uint8_t type = RAW;
    if (w->o.compression_level != 0 && len > 64) {
        size_t bound = ZSTD_compressBound(len);
        if (bound > w->ccap) {
            uint8_t *p = realloc(w->cbuf, bound);
            if (!p)
                return w->error = err_set(-ENOMEM, "out of memory");
            w->cbuf = p;
            w->ccap = bound;
        }
        size_t c = w->cdict ? ZSTD_compress_usingCDict(w->cctx, w->cbuf, w->ccap, data, len, w->cdict)
                            : ZSTD_compressCCtx(w->cctx, w->cbuf, w->ccap, data, len,
                                                w->o.compression_level);
        if (!ZSTD_isError(c) && c < len - len / 8) {
            stored = w->cbuf;
            slen = c;
            type = w->cdict ? ZSTD_DICT : ZSTD;
        }
    }
    uint8_t tr[TRAILER];
    tr[0] = type;
    enc_u32(tr + 1, crc32c_extend(crc32c(stored, slen), &type, 1));
    h->off = w->off;
    h->size = slen;
    int rc = wappend(w, stored, slen);
    if (rc == 0)
        rc = wappend(w, tr, TRAILER);
    w->raw_bytes += len;
    w->stored_bytes += slen + TRAILER;
    return rc;
}

/* Index the data block at H under key K: the value is the handle as two
 * varints (offset, size). */
static int index_add(sst_writer_t *w, const uint8_t *k, size_t kl, struct handle h)
{
    uint8_t hv[20];
    size_t n = enc_varint(hv, h.off);
    n += enc_varint(hv + n, h.size);
    if (bb_add(w->index, k, kl, hv, n) < 0)
        return w->error = err_set(-ENOMEM, "out of memory");
    w->nblocks++;
    return 0;
}

/* Write the finished data block P[0..N) and index it under K. */
static int emit_data(sst_writer_t *w, const uint8_t *p, size_t n, const uint8_t *k, size_t kl)
{
    struct handle h;
    int rc = write_block(w, p, n, &h);
    if (rc)
        return w->error = rc < 0 ? rc : -EIO;
    return index_add(w, k, kl, h);
}

static void pend_free(sst_writer_t *w)
{
    for (size_t i = 0; i < w->npend; i++) {
        free(w->pend[i].data);
        free(w->pend[i].key);
    }
    free(w->pend);
    w->pend = NULL;
    w->npend = w->cappend = w->pend_bytes = 0;
}

/*
 * Train the dictionary on the held-back blocks (when there are enough of
 * them and training succeeds), write it, then write the held-back blocks.
 * A failed training is not an error: the table is compressed without one.
 */
static int make_dict(sst_writer_t *w)
{
    w->dict_state = -1;
    if (w->npend >= DICT_MIN_BLOCKS) {
        size_t cap = w->o.dict_size, total = 0;
        if (cap > w->pend_bytes / 16)
            cap = w->pend_bytes / 16;
        uint8_t *samples = malloc(w->pend_bytes), *dict = malloc(cap);
        size_t *sizes = malloc(w->npend * sizeof *sizes);
        if (!samples || !dict || !sizes) {
            free(samples);
            free(dict);
            free(sizes);
            return w->error = err_set(-ENOMEM, "out of memory");
        }
        for (size_t i = 0; i < w->npend; i++) {
            memcpy(samples + total, w->pend[i].data, w->pend[i].len);
            total += w->pend[i].len;
            sizes[i] = w->pend[i].len;
        }
        /* Fixed parameters: a few milliseconds, where zstd's own search of
         * them takes tens, for a dictionary a few percent less good. */
        ZDICT_fastCover_params_t fp;
        memset(&fp, 0, sizeof fp);
        fp.k = 200;
        fp.d = 8;
        fp.f = 18;
        fp.accel = 1;
        fp.splitPoint = 1.0;
        fp.zParams.compressionLevel = w->o.compression_level;
        size_t dl = ZDICT_trainFromBuffer_fastCover(dict, cap, samples, sizes, (unsigned)w->npend, fp);
        if (!ZDICT_isError(dl)) {
            int lvl = w->o.compression_level;
            w->cdict = ZSTD_createCDict(dict, dl, lvl);
            w->o.compression_level = 0;       /* the dictionary itself is stored raw */
            int rc = w->cdict ? write_block(w, dict, dl, &w->dict) : 0;
            w->o.compression_level = lvl;
            if (rc) {
                free(samples);
                free(dict);
                free(sizes);
                return w->error = rc;
            }
            if (w->cdict)
                w->dict_state = 1;
        }
        free(samples);
        free(dict);
        free(sizes);
    }
    for (size_t i = 0; i < w->npend && !w->error; i++)
        emit_data(w, w->pend[i].data, w->pend[i].len, w->pend[i].key, w->pend[i].klen);
    pend_free(w);
    return w->error;
}

/* Hold back block P[0..N) (last key K) until the dictionary is made. */
static int hold_back(sst_writer_t *w, const uint8_t *p, size_t n, const uint8_t *k, size_t kl)
{
    if (w->npend == w->cappend) {
        size_t cap = w->cappend ? 2 * w->cappend : 64;
        struct pend *q = realloc(w->pend, cap * sizeof *q);
        if (!q)
            return w->error = err_set(-ENOMEM, "out of memory");
        w->pend = q;
        w->cappend = cap;
    }
    struct pend *e = &w->pend[w->npend];
    e->data = malloc(n ? n : 1);
    e->key = malloc(kl ? kl : 1);
    if (!e->data || !e->key) {
        free(e->data);
        free(e->key);
        return w->error = err_set(-ENOMEM, "out of memory");
    }
    memcpy(e->data, p, n);
    memcpy(e->key, k, kl);
    e->len = n;
    e->klen = kl;
    w->npend++;
    w->pend_bytes += n;
    return w->pend_bytes >= DICT_SAMPLE ? make_dict(w) : 0;
}

static int keep_key(uint8_t **buf, size_t *len, size_t *cap, const void *key, size_t klen)
{
    if (klen > *cap) {
        uint8_t *p = realloc(*buf, klen);
        if (!p)
            return -ENOMEM;
        *buf = p;
        *cap = klen;
    }
    if (klen)           /* (an empty first key: no buffer yet) */
        memcpy(*buf, key, klen);
    *len = klen;
    return 0;
}

static int flush_data(sst_writer_t *w)
{
    if (bb_empty(w->data))
        return 0;
    const uint8_t *p;
    size_t n;
    if (bb_finish(w->data, &p, &n) < 0)
        return w->error = err_set(-ENOMEM, "out of memory");
    size_t kl;
    const uint8_t *k = bb_last_key(w->data, &kl);
    int rc;
    if (w->dict_state == 0) {
        /* Held back: it waits unless the dictionary was made (and every
         * held block written, indexed under its last key) just now. */
        rc = hold_back(w, p, n, k, kl);
        w->waiting = rc == 0 && w->npend ? 2 : 0;
    } else {
        rc = write_block(w, p, n, &w->wh);
        if (rc)
            rc = w->error = rc < 0 ? rc : -EIO;
        else if (keep_key(&w->wkey, &w->wkeylen, &w->wkeycap, k, kl) < 0)
            rc = w->error = err_set(-ENOMEM, "out of memory");
        else
            w->waiting = 1;
    }
    bb_reset(w->data);
    return rc;
}

/* The waiting block's index key, now that the next key K is known: the
 * shortest key between its last key and K. */
static int resolve_waiting(sst_writer_t *w, const uint8_t *k, size_t kl)
{
    int how = w->waiting;
    w->waiting = 0;
    uint8_t *a = how == 1 ? w->wkey : w->pend[w->npend - 1].key;
    size_t al = how == 1 ? w->wkeylen : w->pend[w->npend - 1].klen;
    uint8_t stack[256];
    uint8_t *s = al <= sizeof stack ? stack : malloc(al);
    if (!s)
        return w->error = err_set(-ENOMEM, "out of memory");
    size_t sl;
    if (w->kf.separator)
        sl = w->kf.separator(a, al, k, kl, s);
    else if (w->kf.cmp == bytewise_cmp)
        sl = bytewise_separator(a, al, k, kl, s);
    else
        memcpy(s, a, sl = al);
    assert(sl <= al);
    int rc = 0;
    if (how == 1) {
        rc = index_add(w, s, sl, w->wh);
    } else {
        memcpy(a, s, sl);       /* fits: never longer than the key it replaces */
        w->pend[w->npend - 1].klen = sl;
    }
    if (s != stack)
        free(s);
    return rc;
}

int sst_writer_open(const char *path, const sst_options_t *o, const sst_keyfmt_t *kf,
                    sst_writer_t **out)
{
    sst_writer_t *w = calloc(1, sizeof *w);
    if (!w)
        return err_set(-ENOMEM, "out of memory");
    w->o = *o;
    w->dict_state = o->compression_level != 0 && o->dict_size >= 256 ? 0 : -1;
    if (w->o.block_size < 256)
        w->o.block_size = 256;
    if (kf)
        w->kf = *kf;
    if (!w->kf.cmp)
        w->kf.cmp = bytewise_cmp;
    w->path = strdup(path);
    w->data = bb_new();
    w->index = bb_new();
    w->out = malloc(OUTBUF);
    w->cctx = ZSTD_createCCtx();
    if (!w->path || !w->data || !w->index || !w->out || !w->cctx) {
        w->fd = -1;
        sst_writer_abandon(w);
        return err_set(-ENOMEM, "out of memory");
    }
    w->fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        int e = errno;
        sst_writer_abandon(w);
        return err_set(-e, "sst %s: cannot create: %s", base(path), strerror(e));
    }
    *out = w;
    return 0;
}


int sst_writer_add(sst_writer_t *w, const void *key, size_t klen, const void *val, size_t vlen)
{
    if (w->error)
        return w->error;
    if (w->count && w->kf.cmp(w->last, w->lastlen, key, klen) >= 0)
        return err_set(-EINVAL, "sst %s: keys added out of order", base(w->path));
    if (w->waiting && resolve_waiting(w, key, klen))
        return w->error;
    if (w->o.bloom_bits_per_key > 0) {
        size_t fl = w->kf.filter_len ? w->kf.filter_len(key, klen) : klen;
        size_t pl = w->count ? (w->kf.filter_len ? w->kf.filter_len(w->last, w->lastlen) : w->lastlen) : 0;
        if (!w->count || fl != pl || memcmp(key, w->last, fl) != 0) {
            if (w->nh == w->caph) {
                size_t cap = w->caph ? 2 * w->caph : 1024;
                uint32_t *p = realloc(w->hashes, cap * sizeof *p);
                if (!p)
                    return w->error = err_set(-ENOMEM, "out of memory");
                w->hashes = p;
                w->caph = cap;
            }
            w->hashes[w->nh++] = bloom_hash(key, fl);
        }
    }
    if (!w->count) {
        w->first = malloc(klen ? klen : 1);
        if (!w->first)
            return w->error = err_set(-ENOMEM, "out of memory");
        memcpy(w->first, key, klen);
        w->firstlen = klen;
    }
    if (keep_key(&w->last, &w->lastlen, &w->lastcap, key, klen) < 0 ||
        bb_add(w->data, key, klen, val, vlen) < 0)
        return w->error = err_set(-ENOMEM, "out of memory");
    w->count++;
    if (bb_size(w->data) >= w->o.block_size)
        return flush_data(w);
    return 0;
}

int sst_writer_set_prop(sst_writer_t *w, const char *name, uint64_t value)
{
    if (strlen(name) > 64 || !*name)
        return err_set(-EINVAL, "property name '%s' is empty or longer than 64 bytes", name);
    for (int i = 0; i < w->nprops; i++) {
        if (strcmp(w->props[i].name, name) == 0) {
            w->props[i].value = value;
            return 0;
        }
    }
    if (w->nprops == MAX_PROPS)
        return err_set(-EINVAL, "too many properties");
    snprintf(w->props[w->nprops].name, sizeof w->props[0].name, "%s", name);
    w->props[w->nprops++].value = value;
    return 0;
}

uint64_t sst_writer_size(const sst_writer_t *w)
{
    return w->off + w->pend_bytes * 3 / 4 + bb_size(w->data);
}

uint64_t sst_writer_count(const sst_writer_t *w)
{
    return w->count;
}

static void writer_free(sst_writer_t *w)
{
    bb_free(w->data);
    bb_free(w->index);
    free(w->out);
    free(w->last);
    free(w->first);
    free(w->wkey);
    free(w->hashes);
    free(w->cbuf);
    pend_free(w);
    ZSTD_freeCDict(w->cdict);
    ZSTD_freeCCtx(w->cctx);
    free(w->path);
    free(w);
}

void sst_writer_abandon(sst_writer_t *w)
{
    if (!w)
        return;
    if (w->fd >= 0) {
        close(w->fd);
        unlink(w->path);
    }
    writer_free(w);
}

/* Properties: varint count, then per property: varint name length, name,
 * varint value length, value (u64 for numbers, raw bytes for the key range). */
static int props_block(sst_writer_t *w, uint8_t **out, size_t *len)
{
    size_t cap = 64 + (size_t)(w->nprops + 8) * 90 + w->firstlen + w->lastlen;
    uint8_t *p = malloc(cap), *q = p;
    if (!p)
        return -ENOMEM;
    struct prop std[8] = {
        { "entries", w->count }, { "data_blocks", w->nblocks }, { "raw_bytes", w->raw_bytes },
        { "stored_bytes", w->stored_bytes }, { "filter_keys", w->nh },
        { "bloom_bits_per_key", (uint64_t)w->o.bloom_bits_per_key },
        { "dict_offset", w->dict.off }, { "dict_size", w->dict.size },
    };
    int nstd = w->dict.size ? 8 : 6;
    q += enc_varint(q, (uint64_t)(nstd + w->nprops + 2));
    for (int i = 0; i < nstd + w->nprops; i++) {
        const struct prop *pr = i < nstd ? &std[i] : &w->props[i - nstd];
        size_t nl = strlen(pr->name);
        q += enc_varint(q, nl);
        memcpy(q, pr->name, nl);
        q += nl;
        q += enc_varint(q, 8);
        enc_u64(q, pr->value);
        q += 8;
    }
    const char *kn[2] = { "smallest", "largest" };
    const uint8_t *kv[2] = { w->first, w->last };
    size_t kl[2] = { w->firstlen, w->lastlen };
    for (int i = 0; i < 2; i++) {
        q += enc_varint(q, strlen(kn[i]));
        memcpy(q, kn[i], strlen(kn[i]));
        q += strlen(kn[i]);
        q += enc_varint(q, kl[i]);
        if (kl[i])
            memcpy(q, kv[i], kl[i]);
        q += kl[i];
    }
    *out = p;
    *len = (size_t)(q - p);
    return 0;
}

int sst_writer_finish(sst_writer_t *w, uint64_t *file_size)
{
    int rc = w->error ? w->error : flush_data(w);
    if (rc == 0 && w->dict_state == 0)
        rc = make_dict(w);          /* the last held block keeps its last key */
    if (rc == 0 && w->waiting == 1)
        rc = index_add(w, w->wkey, w->wkeylen, w->wh);
    w->waiting = 0;
    /* The meta blocks go without the dictionary: a reader needs the
     * properties to find it. */
    ZSTD_freeCDict(w->cdict);
    w->cdict = NULL;
    struct handle fh = { 0, 0 }, ph = { 0, 0 }, ih = { 0, 0 };
    if (rc == 0 && w->o.bloom_bits_per_key > 0) {
        size_t n = bloom_size(w->nh, w->o.bloom_bits_per_key);
        uint8_t *f = malloc(n);
        if (!f)
            rc = err_set(-ENOMEM, "out of memory");
        else {
            bloom_build(f, n, w->hashes, w->nh, w->o.bloom_bits_per_key);
            int lvl = w->o.compression_level;
            w->o.compression_level = 0;     /* bits do not compress */
            rc = write_block(w, f, n, &fh);
            w->o.compression_level = lvl;
            free(f);
        }
    }
    if (rc == 0) {
        uint8_t *p;
        size_t n;
        if (props_block(w, &p, &n) < 0) {
            rc = err_set(-ENOMEM, "out of memory");
        } else {
            rc = write_block(w, p, n, &ph);
            free(p);
        }
    }
    if (rc == 0) {
        const uint8_t *p;
        size_t n;
        if (bb_empty(w->index)) {
            /* An empty table still has a well-formed (empty) index. */
            static const uint8_t empty[8] = { 0, 0, 0, 0, 1, 0, 0, 0 };
            p = empty;
            n = sizeof empty;
        } else if (bb_finish(w->index, &p, &n) < 0) {
            rc = err_set(-ENOMEM, "out of memory");
        }
        if (rc == 0)
            rc = write_block(w, p, n, &ih);
    }
    if (rc == 0) {
        uint8_t f[SST_FOOTER];
        enc_u64(f, fh.off);
        enc_u64(f + 8, fh.size);
        enc_u64(f + 16, ph.off);
        enc_u64(f + 24, ph.size);
        enc_u64(f + 32, ih.off);
        enc_u64(f + 40, ih.size);
        enc_u32(f + 48, SST_VERSION);
        enc_u32(f + 52, crc32c(f, 52));
        enc_u64(f + 56, SST_MAGIC);
        rc = wappend(w, f, sizeof f);
    }
    if (rc == 0)
        rc = wflush(w);
    if (rc == 0 && fsync(w->fd) < 0)
        rc = err_set(-EIO, "sst %s: fsync failed: %s", base(w->path), strerror(errno));
    if (rc) {
        sst_writer_abandon(w);
        return rc;
    }
    if (file_size)
        *file_size = w->off;
    close(w->fd);
    w->fd = -1;
    writer_free(w);
    return 0;
}

/* ================================================================== */
/* reader                                                               */

#define MAP_BLOCK_MAX (32u << 10)     /* larger blocks are read with pread */

struct sst_reader {
    int fd;
    uint64_t number, size;
    const uint8_t *map;         /* the whole file, when sst_map() succeeded */
    sst_keyfmt_t kf;
    sst_cache_t *cache;
    char name[64];
    uint8_t *index;
    size_t index_len;
    uint8_t *filter;
    size_t filter_len;
    struct prop props[MAX_PROPS + 8];
    int nprops;
    uint8_t *smallest, *largest;
    size_t smallest_len, largest_len;
    ZSTD_DDict *ddict;          /* the table's dictionary, or NULL */
    uint32_t version;           /* the footer's: how index handles are written */
};

/*
 * What each reading thread keeps, freed when the thread ends: its zstd
 * decompression context, and the two block iterators of a point lookup
 * (index, then data block), so that a lookup allocates nothing.  A lookup
 * made while the pair is in use (a callback that looks up again) gets its
 * own iterators.
 */
struct tstate {
    ZSTD_DCtx *dctx;
    block_iter_t *it[2];
    int busy;
};

static pthread_key_t tkey;
static pthread_once_t tonce = PTHREAD_ONCE_INIT;

static void thread_state_free(void *p)
{
    struct tstate *t = p;
    ZSTD_freeDCtx(t->dctx);
    bi_free(t->it[0]);
    bi_free(t->it[1]);
    free(t);
}

static void tkey_make(void)
{
    pthread_key_create(&tkey, thread_state_free);
}

/* This thread's state, made on first use; NULL when out of memory. */
static struct tstate *thread_state(void)
{
    pthread_once(&tonce, tkey_make);
    struct tstate *t = pthread_getspecific(tkey);
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t)
            return NULL;
        t->dctx = ZSTD_createDCtx();
        t->it[0] = bi_new(NULL, 0, NULL);
        t->it[1] = bi_new(NULL, 0, NULL);
        if (!t->dctx || !t->it[0] || !t->it[1] || pthread_setspecific(tkey, t) != 0) {
            thread_state_free(t);
            return NULL;
        }
    }
    return t;
}

static ZSTD_DCtx *thread_dctx(void)
{
    struct tstate *t = thread_state();
    return t ? t->dctx : NULL;
}

/* The thread's iterator pair, marked busy, or NULL (in use, or out of memory). */
static struct tstate *iters_take(void)
{
    struct tstate *t = thread_state();
    if (!t || t->busy)
        return NULL;
    t->busy = 1;
    return t;
}

static block_iter_t *lookup_iter(struct tstate *t, int i, const uint8_t *data, size_t len,
                                 sst_cmp_fn cmp)
{
    if (!t)
        return bi_new(data, len, cmp);
    bi_reset(t->it[i], data, len, cmp);
    return t->it[i];
}

static void lookup_iter_done(struct tstate *t, block_iter_t *it)
{
    if (!t)
        bi_free(it);
}

/*
 * Block H checked against its checksum and made plain: *out and *len get
 * the contents.  *owned is set when *out is a new malloc'd buffer (a block
 * read with pread, or decompressed); otherwise *out points into the file's
 * mapping (a raw block of a mapped table), valid while R is open.
 */
static int read_block(const sst_reader_t *r, struct handle h, uint8_t **out, size_t *len, int *owned)
{
    if (h.size > MAX_BLOCK || h.off > r->size || h.size + TRAILER > r->size - h.off)
        return err_set(-EIO, "sst %s: block handle at %llu out of bounds", r->name,
                       (unsigned long long)h.off);
    size_t n = (size_t)h.size + TRAILER;
    uint8_t *buf = NULL;
    const uint8_t *src;
    /* Large blocks (chunks of big values, read in long runs) keep pread:
     * one call is cheap next to their size, and their pages then stay out
     * of the process's resident memory. */
    if (r->map && n <= MAP_BLOCK_MAX) {
        src = r->map + h.off;
    } else {
        if (!(buf = malloc(n)))
            return err_set(-ENOMEM, "out of memory");
        size_t done = 0;
        while (done < n) {
            ssize_t k = pread(r->fd, buf + done, n - done, (off_t)(h.off + done));
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                free(buf);
                return err_set(-EIO, "sst %s: read at %llu failed: %s", r->name,
                               (unsigned long long)h.off, k < 0 ? strerror(errno) : "short file");
            }
            done += (size_t)k;
        }
        src = buf;
    }
    uint8_t type = src[h.size];
    if (crc32c_extend(crc32c(src, (size_t)h.size), &type, 1) != dec_u32(src + h.size + 1)) {
        free(buf);
        return err_set(-EIO, "sst %s: bad block checksum at offset %llu", r->name,
                       (unsigned long long)h.off);
    }
    if (type == RAW) {
        *out = buf ? buf : (uint8_t *)src;
        *len = (size_t)h.size;
        *owned = buf != NULL;
        return 0;
    }
    if (type != ZSTD && !(type == ZSTD_DICT && r->ddict)) {
        free(buf);
        return err_set(-EIO, "sst %s: unknown compression %u at offset %llu", r->name, type,
                       (unsigned long long)h.off);
    }
    unsigned long long raw = ZSTD_getFrameContentSize(src, (size_t)h.size);
    ZSTD_DCtx *d = thread_dctx();
    uint8_t *dst = raw <= MAX_BLOCK ? malloc(raw ? raw : 1) : NULL;
    if (!d || !dst) {
        free(buf);
        free(dst);
        return raw > MAX_BLOCK ? err_set(-EIO, "sst %s: bad compressed block at offset %llu", r->name,
                                         (unsigned long long)h.off)
                               : err_set(-ENOMEM, "out of memory");
    }
    size_t got = type == ZSTD_DICT ? ZSTD_decompress_usingDDict(d, dst, raw, src, (size_t)h.size, r->ddict)
                                   : ZSTD_decompressDCtx(d, dst, raw, src, (size_t)h.size);
    free(buf);
    if (ZSTD_isError(got) || got != raw) {
        free(dst);
        return err_set(-EIO, "sst %s: bad compressed block at offset %llu", r->name,
                       (unsigned long long)h.off);
    }
    *out = dst;
    *len = (size_t)raw;
    *owned = 1;
    return 0;
}

static int parse_props(sst_reader_t *r, const uint8_t *p, size_t len)
{
    const uint8_t *end = p + len;
    uint64_t n, nl, vl;
    size_t k;
    /* At most the writer's own (eight, with a dictionary), MAX_PROPS set by
     * its caller, and the key range (two). */
    if (!(k = dec_varint(p, end, &n)) || n > MAX_PROPS + 10)
        goto bad;
    p += k;
    for (uint64_t i = 0; i < n; i++) {
        if (!(k = dec_varint(p, end, &nl)) || nl > 64 || nl > (uint64_t)(end - p - k))
            goto bad;
        p += k;
        char name[65];
        memcpy(name, p, (size_t)nl);
        name[nl] = '\0';
        p += nl;
        if (!(k = dec_varint(p, end, &vl)) || vl > (uint64_t)(end - p - k))
            goto bad;
        p += k;
        uint8_t **dst = !strcmp(name, "smallest") ? &r->smallest : !strcmp(name, "largest") ? &r->largest : NULL;
        if (dst && *dst)
            goto bad;           /* named twice */
        if (dst) {
            *dst = malloc(vl ? vl : 1);
            if (!*dst)
                return err_set(-ENOMEM, "out of memory");
            memcpy(*dst, p, (size_t)vl);
            *(dst == &r->smallest ? &r->smallest_len : &r->largest_len) = (size_t)vl;
        } else {
            if (vl != 8 || r->nprops == MAX_PROPS + 8)
                goto bad;
            snprintf(r->props[r->nprops].name, sizeof r->props[0].name, "%s", name);
            r->props[r->nprops++].value = dec_u64(p);
        }
        p += vl;
    }
    return 0;
bad:
    return err_set(-EIO, "sst %s: malformed properties block", r->name);
}

int sst_open(const char *path, uint64_t file_number, const sst_keyfmt_t *kf,
             sst_cache_t *cache, sst_reader_t **out)
{
    sst_reader_t *r = calloc(1, sizeof *r);
    if (!r)
        return err_set(-ENOMEM, "out of memory");
    snprintf(r->name, sizeof r->name, "%.60s", base(path));
    r->number = file_number;
    r->cache = cache;
    if (kf)
        r->kf = *kf;
    if (!r->kf.cmp)
        r->kf.cmp = bytewise_cmp;
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    int rc = 0;
    struct stat st;
    uint8_t f[SST_FOOTER];
    uint32_t version = 0;
    if (r->fd < 0) {
        rc = err_set(errno == ENOENT ? -ENOENT : -EIO, "sst %s: cannot open: %s", r->name, strerror(errno));
    } else if (fstat(r->fd, &st) < 0) {
        rc = err_set(-EIO, "sst %s: %s", r->name, strerror(errno));
    } else if ((r->size = (uint64_t)st.st_size) < SST_FOOTER) {
        rc = err_set(-EIO, "sst %s: too short to be a table (%llu bytes)", r->name,
                     (unsigned long long)r->size);
    } else if (pread(r->fd, f, sizeof f, (off_t)(r->size - SST_FOOTER)) != SST_FOOTER) {
        rc = err_set(-EIO, "sst %s: cannot read the footer", r->name);
    } else if (dec_u64(f + 56) != SST_MAGIC) {
        rc = err_set(-EIO, "sst %s: not a table (bad magic number)", r->name);
    } else if (dec_u32(f + 52) != crc32c(f, 52)) {
        rc = err_set(-EIO, "sst %s: bad footer checksum", r->name);
    } else if ((version = dec_u32(f + 48)) < SST_VERSION_RAW || version > SST_VERSION) {
        rc = err_set(-EIO, "sst %s: unsupported format version %u", r->name, version);
    }
    r->version = version;
    if (rc == 0) {
        struct handle fh = { dec_u64(f), dec_u64(f + 8) }, ph = { dec_u64(f + 16), dec_u64(f + 24) },
                      ih = { dec_u64(f + 32), dec_u64(f + 40) };
        uint8_t *pb = NULL;
        size_t pl;
        int owned;      /* always: nothing is mapped yet */
        rc = read_block(r, ih, &r->index, &r->index_len, &owned);
        if (rc == 0 && fh.size)
            rc = read_block(r, fh, &r->filter, &r->filter_len, &owned);
        if (rc == 0)
            rc = read_block(r, ph, &pb, &pl, &owned);
        if (rc == 0)
            rc = parse_props(r, pb, pl);
        free(pb);
        uint64_t doff = 0, dsize = 0;
        sst_prop(r, "dict_offset", &doff);
        sst_prop(r, "dict_size", &dsize);
        if (rc == 0 && version < SST_VERSION && (dsize != 0) != (version == SST_VERSION_DICT))
            rc = err_set(-EIO, dsize ? "sst %s: a dictionary in a table of format version 1"
                                     : "sst %s: a table of format version 2 without its dictionary",
                         r->name);
        if (rc == 0 && dsize) {
            uint8_t *db;
            size_t dl;
            rc = read_block(r, (struct handle){ doff, dsize }, &db, &dl, &owned);
            if (rc == 0) {
                r->ddict = ZSTD_createDDict(db, dl);
                free(db);
                if (!r->ddict)
                    rc = err_set(-EIO, "sst %s: bad compression dictionary", r->name);
            }
        }
        if (rc == -ENOENT)
            rc = -EIO;
    }
    if (rc) {
        sst_close(r);
        return rc;
    }
    *out = r;
    return 0;
}

int sst_map(sst_reader_t *r)
{
    if (r->map || r->size == 0)
        return 0;
    void *p = mmap(NULL, (size_t)r->size, PROT_READ, MAP_SHARED, r->fd, 0);
    if (p == MAP_FAILED)
        return err_set(-errno, "sst %s: cannot map: %s", r->name, strerror(errno));
    r->map = p;
    return 0;
}

void sst_close(sst_reader_t *r)
{
    if (!r)
        return;
    if (r->map)
        munmap((void *)r->map, (size_t)r->size);
    if (r->fd >= 0)
        close(r->fd);
    free(r->index);
    free(r->filter);
    free(r->smallest);
    free(r->largest);
    ZSTD_freeDDict(r->ddict);
    free(r);
}

int sst_prop(const sst_reader_t *r, const char *name, uint64_t *v)
{
    for (int i = 0; i < r->nprops; i++) {
        if (!strcmp(r->props[i].name, name)) {
            *v = r->props[i].value;
            return 0;
        }
    }
    return -ENOENT;
}

uint64_t sst_entries(const sst_reader_t *r)
{
    uint64_t v = 0;
    sst_prop(r, "entries", &v);
    return v;
}

uint64_t sst_file_size(const sst_reader_t *r) { return r->size; }

const void *sst_smallest(const sst_reader_t *r, size_t *len)
{
    *len = r->smallest_len;
    return r->smallest;
}

const void *sst_largest(const sst_reader_t *r, size_t *len)
{
    *len = r->largest_len;
    return r->largest;
}

int sst_may_contain(const sst_reader_t *r, const void *key, size_t klen)
{
    if (!r->filter)
        return 1;
    size_t fl = r->kf.filter_len ? r->kf.filter_len(key, klen) : klen;
    return bloom_may_contain(r->filter, r->filter_len, bloom_hash(key, fl));
}

/* A data block in use: from the cache, or owned when there is no cache. */
struct bref {
    const uint8_t *data;
    size_t len;
    cache_entry_t *ce;
    uint8_t *owned;
};

static void bref_release(sst_reader_t *r, struct bref *b)
{
    if (b->ce)
        sst_cache_release(r->cache, b->ce);
    free(b->owned);
    memset(b, 0, sizeof *b);
}

/* An index entry's value: two varints from format 3 on, two u64 before. */
static int decode_handle(const sst_reader_t *r, const uint8_t *v, size_t vl, struct handle *h)
{
    if (r->version >= SST_VERSION) {
        size_t a = dec_varint(v, v + vl, &h->off), b = a ? dec_varint(v + a, v + vl, &h->size) : 0;
        return b && a + b == vl ? 0 : -1;
    }
    if (vl != 16)
        return -1;
    h->off = dec_u64(v);
    h->size = dec_u64(v + 8);
    return 0;
}

/* Block H of R into B: from the block cache, or read (and checked); a block
 * read is put in the cache only when FILL. */
static int get_block(sst_reader_t *r, struct handle h, struct bref *b, int fill)
{
    if (r->cache && (b->ce = sst_cache_lookup(r->cache, r->number, h.off))) {
        b->data = sst_cache_data(b->ce, &b->len);
        return 0;
    }
    uint8_t *data;
    size_t len;
    int owned;
    int rc = read_block(r, h, &data, &len, &owned);
    if (rc)
        return rc;
    if (!owned) {
        /* A raw block of a mapped table: read in place, checked each time,
         * never cached (the page cache holds it already). */
        b->data = data;
        b->len = len;
        return 0;
    }
    if (r->cache && fill && (b->ce = sst_cache_insert(r->cache, r->number, h.off, data, len))) {
        b->data = sst_cache_data(b->ce, &b->len);
        return 0;
    }
    if (r->cache && fill)
        return err_set(-ENOMEM, "out of memory");
    b->owned = data;
    b->data = data;
    b->len = len;
    return 0;
}

int sst_get(sst_reader_t *r, const void *key, size_t klen, sst_get_fn fn, void *arg)
{
    if (!sst_may_contain(r, key, klen))
        return 1;
    struct tstate *t = iters_take();
    block_iter_t *ix = lookup_iter(t, 0, r->index, r->index_len, r->kf.cmp);
    if (!ix) {
        if (t)
            t->busy = 0;
        return err_set(-ENOMEM, "out of memory");
    }
    bi_seek(ix, key, klen);
    /* The block the index names holds every entry up to its index key, but
     * that key is a separator: a KEY between the block's last entry and it
     * is answered by the next block's first entry. */
    int rc = 1, more = 1;
    while (more) {
        more = 0;
        if (bi_status(ix)) {
            rc = err_set(-EIO, "sst %s: malformed index block", r->name);
            break;
        }
        if (!bi_valid(ix))
            break;
        struct handle h;
        size_t vl;
        const uint8_t *v = bi_value(ix, &vl);
        struct bref b = { 0 };
        if (decode_handle(r, v, vl, &h) < 0)
            rc = err_set(-EIO, "sst %s: malformed index entry", r->name);
        else
            rc = get_block(r, h, &b, 1);
        if (rc == 0) {
            block_iter_t *di = lookup_iter(t, 1, b.data, b.len, r->kf.cmp);
            if (!di) {
                rc = err_set(-ENOMEM, "out of memory");
            } else {
                bi_seek(di, key, klen);
                if (bi_status(di)) {
                    rc = err_set(-EIO, "sst %s: malformed data block at offset %llu", r->name,
                                 (unsigned long long)h.off);
                } else if (bi_valid(di)) {
                    size_t k2, v2;
                    const uint8_t *kk = bi_key(di, &k2), *vv = bi_value(di, &v2);
                    rc = fn(arg, kk, k2, vv, v2);
                } else {
                    rc = 1;
                    bi_next(ix);
                    more = 1;
                }
                lookup_iter_done(t, di);
            }
        }
        bref_release(r, &b);
    }
    lookup_iter_done(t, ix);
    if (t)
        t->busy = 0;
    return rc;
}

/* ---- iterator ---- */

struct sst_iter {
    sst_reader_t *r;
    block_iter_t *ix, *di;      /* DI: the loaded block's iterator, or NULL */
    block_iter_t *spare;        /* DI's memory, kept from block to block */
    struct bref b;
    struct handle h;
    int status;
    unsigned run;               /* blocks entered in a row by moving on */
};

/*
 * A scan that has moved on through this many blocks in a row reads the
 * next ones past the block cache (a cached block is still used): a long
 * scan, a compaction's above all, would otherwise evict the blocks point
 * lookups and short scans keep coming back to, and pay for each block's
 * insertion and a victim's eviction.  A seek starts the count again.
 */
#define SCAN_RUN 4

sst_iter_t *sst_iter_new(sst_reader_t *r)
{
    sst_iter_t *it = calloc(1, sizeof *it);
    if (!it)
        return NULL;
    it->r = r;
    it->ix = bi_new(r->index, r->index_len, r->kf.cmp);
    if (!it->ix) {
        free(it);
        return NULL;
    }
    return it;
}

static void drop_block(sst_iter_t *it)
{
    it->di = NULL;
    bref_release(it->r, &it->b);
}

void sst_iter_reset(sst_iter_t *it, sst_reader_t *r)
{
    drop_block(it);
    it->r = r;
    it->status = 0;
    if (r)
        bi_reset(it->ix, r->index, r->index_len, r->kf.cmp);
    else
        bi_reset(it->ix, NULL, 0, NULL);   /* unusable (-EIO) until reset again */
}

void sst_iter_free(sst_iter_t *it)
{
    if (!it)
        return;
    drop_block(it);
    bi_free(it->spare);
    bi_free(it->ix);
    free(it);
}

static void fail(sst_iter_t *it, int rc)
{
    drop_block(it);
    it->status = rc;
}

/* Load the data block the index iterator is on. */
static int load_block(sst_iter_t *it)
{
    drop_block(it);
    size_t vl;
    const uint8_t *v = bi_value(it->ix, &vl);
    if (decode_handle(it->r, v, vl, &it->h) < 0) {
        fail(it, err_set(-EIO, "sst %s: malformed index entry", it->r->name));
        return -1;
    }
    int rc = get_block(it->r, it->h, &it->b, it->run < SCAN_RUN);
    if (rc == 0 && it->spare)
        bi_reset(it->spare, it->b.data, it->b.len, it->r->kf.cmp);
    else if (rc == 0 && !(it->spare = bi_new(it->b.data, it->b.len, it->r->kf.cmp)))
        rc = err_set(-ENOMEM, "out of memory");
    if (rc == 0)
        it->di = it->spare;
    if (rc) {
        fail(it, rc);
        return -1;
    }
    return 0;
}

static int check_block(sst_iter_t *it)
{
    if (it->di && bi_status(it->di)) {
        fail(it, err_set(-EIO, "sst %s: malformed data block at offset %llu", it->r->name,
                         (unsigned long long)it->h.off));
        return -1;
    }
    return 0;
}

/* Move past exhausted data blocks to the next entry, if any. */
static void skip_forward(sst_iter_t *it)
{
    while (!it->status && (!it->di || !bi_valid(it->di))) {
        if (check_block(it) < 0)
            return;
        if (bi_status(it->ix)) {
            fail(it, err_set(-EIO, "sst %s: malformed index block", it->r->name));
            return;
        }
        if (!it->di) {
            /* Not positioned on any block: nothing more. */
            return;
        }
        bi_next(it->ix);
        if (!bi_valid(it->ix)) {
            drop_block(it);
            return;
        }
        it->run++;
        if (load_block(it) < 0)
            return;
        bi_seek_first(it->di);
    }
    check_block(it);
}

void sst_iter_seek(sst_iter_t *it, const void *key, size_t klen)
{
    it->status = 0;
    it->run = 0;
    drop_block(it);
    bi_seek(it->ix, key, klen);
    if (bi_status(it->ix)) {
        fail(it, err_set(-EIO, "sst %s: malformed index block", it->r->name));
        return;
    }
    if (!bi_valid(it->ix) || load_block(it) < 0)
        return;
    bi_seek(it->di, key, klen);
    skip_forward(it);
}

void sst_iter_seek_first(sst_iter_t *it)
{
    it->status = 0;
    it->run = 0;
    drop_block(it);
    bi_seek_first(it->ix);
    if (bi_status(it->ix)) {
        fail(it, err_set(-EIO, "sst %s: malformed index block", it->r->name));
        return;
    }
    if (!bi_valid(it->ix) || load_block(it) < 0)
        return;
    bi_seek_first(it->di);
    skip_forward(it);
}

int sst_iter_valid(const sst_iter_t *it)
{
    return !it->status && it->di && bi_valid(it->di);
}

void sst_iter_next(sst_iter_t *it)
{
    if (!sst_iter_valid(it))
        return;
    bi_next(it->di);
    skip_forward(it);
}

const void *sst_iter_key(const sst_iter_t *it, size_t *klen)
{
    return bi_key(it->di, klen);
}

const void *sst_iter_value(const sst_iter_t *it, size_t *vlen)
{
    return bi_value(it->di, vlen);
}

int sst_iter_status(const sst_iter_t *it)
{
    return it->status;
}
