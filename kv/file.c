/*
 * file.c - values as files: ranged reads and writes, truncation, attributes
 * and renames, on top of the stored envelopes of value.h.
 *
 * Every change here is a read-modify-write of one key's envelope (and of
 * the chunks it touches), done under that key's stripe lock and committed
 * as one batch, so it is atomic for readers and across a crash, and two of
 * them on one key never lose each other's work.  A value stays inline up to
 * INLINE_MAX bytes and is chunked once it grows past that; it is never
 * turned back into an inline one (except by stash_put/stash_create).
 * Reads take one view and one sequence number and read everything there.
 *
 * A hard-linked key's value lives in a shared entry (value.h): loading the
 * key follows its link, and a change writes the shared entry, under the
 * link lock besides the key's stripe (dbint.h), so changes through two
 * names of one value never lose each other's work.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "coding.h"
#include "dbint.h"
#include "err.h"
#include "value.h"
#include "vlog.h"

/* One key being changed: its stored key, lock and current envelope. */
struct fkey {
    struct skey k;
    const uint8_t *ik;      /* k's stored key */
    size_t iklen;
    pthread_mutex_t *lock;
    void *raw;              /* the stored value, malloc'd, or NULL */
    size_t rawlen;
    void *shared;           /* a link's shared entry, malloc'd, or NULL */
    size_t sharedlen;
    struct envelope e;      /* the value's (a link's: its shared entry's) */
    int exists;
    int held;               /* the link lock */
};

static void fkey_done(struct fkey *f)
{
    free(f->raw);
    free(f->shared);
    skey_done(&f->k);
}

/* Decode F's stored value; a link is followed to its shared entry at V/SEQ. */
static int fkey_decode(struct view *v, uint64_t seq, struct fkey *f, size_t klen)
{
    if (env_decode(f->raw, f->rawlen, &f->e) < 0)
        return err_set(-EIO, "damaged value envelope for a key of %zu bytes", klen);
    f->exists = 1;
    free(f->shared);
    f->shared = NULL;
    return f->e.kind == VK_LINK ? db_resolve(v, seq, &f->e, &f->shared, &f->sharedlen) : 0;
}

/* Escape KEY and look its current value up (at V/SEQ).  0 whether or not it
 * exists (f->exists says), or a negative errno. */
static int fkey_load(stash_t *db, struct view *v, uint64_t seq, const void *key, size_t klen, struct fkey *f)
{
    memset(f, 0, sizeof *f);
    int rc = db_key(key, klen, &f->k);
    if (rc)
        return rc;
    f->ik = f->k.p;
    f->iklen = f->k.len;
    f->lock = db ? db_keylock(db, f->ik, f->iklen) : NULL;
    if (!v)
        return 0;
    rc = db_view_get(v, seq, f->ik, f->iklen, &f->raw, &f->rawlen);
    if (rc == -ENOENT)
        return 0;
    return rc ? rc : fkey_decode(v, seq, f, klen);
}

/* Re-read the key under its lock (the caller took it after fkey_load with
 * no view, so nothing can change it from here on).  A link also takes the
 * link lock, then reads its shared entry. */
static int fkey_reload(stash_t *db, struct fkey *f, size_t klen)
{
    uint64_t seq;
    struct view *v = db_view(db, NULL, &seq);
    int rc = db_view_get(v, seq, f->ik, f->iklen, &f->raw, &f->rawlen);
    if (rc == 0 && f->rawlen == 9 && *(uint8_t *)f->raw == VK_LINK) {
        db_link_hold(db, &f->held);
        db_view_put(v);
        v = db_view(db, NULL, &seq);
    }
    if (rc == 0)
        rc = fkey_decode(v, seq, f, klen);
    else if (rc == -ENOENT)
        rc = 0;
    /* Keep the view only as long as the read: chunk reads below take their
     * own, after this key's lock was taken, so they see its latest state. */
    db_view_put(v);
    return rc;
}

static void fkey_unlock(stash_t *db, struct fkey *f)
{
    db_link_release(db, &f->held);
    pthread_mutex_unlock(f->lock);
}

/* Lock and load KEY for a change.  On failure nothing is held or allocated. */
static int fkey_lock(stash_t *db, const void *key, size_t klen, struct fkey *f)
{
    int rc = db_writable(db);
    if (rc)
        return rc;
    db_blobs_begin(db);
    if ((rc = fkey_load(db, NULL, 0, key, klen, f)))
        return rc;
    if ((rc = db_reserved(db, f->ik, f->iklen))) {
        fkey_done(f);
        return rc;
    }
    pthread_mutex_lock(f->lock);
    rc = fkey_reload(db, f, klen);
    if (rc) {
        fkey_unlock(db, f);
        fkey_done(f);
    }
    return rc;
}

/* Attribute-carrying form of an envelope (a plain one gains a record). */
static void to_attr(struct envelope *e)
{
    if (e->kind == VK_PLAIN)
        e->kind = VK_ATTR;
}

/* Where envelope E is stored for F: the shared entry of a linked value, or
 * F's own key.  LK is room for the former. */
static const uint8_t *primary(const struct fkey *f, const struct envelope *e, uint8_t lk[LINK_KEY_LEN],
                              size_t *len)
{
    if (!e->link) {
        *len = f->iklen;
        return f->ik;
    }
    link_key(lk, e->link);
    *len = LINK_KEY_LEN;
    return lk;
}

/* Put KEY's primary entry: envelope E and, when inline, DATA. */
static int put_primary(stash_batch_t *b, struct fkey *f, const struct envelope *e, const void *data, size_t dlen)
{
    size_t hmax = env_header_max(e->xlen);
    uint8_t small[256], *hdr = hmax <= sizeof small ? small : malloc(hmax);
    if (!hdr)
        return -ENOMEM;
    size_t hlen = env_encode_header(e, hdr), plen;
    uint8_t lk[LINK_KEY_LEN];
    const uint8_t *pk = primary(f, e, lk, &plen);
    int rc = batch_put_raw(b, pk, plen, hdr, hlen, data, e->kind == VK_CHUNKED ? 0 : dlen);
    if (hdr != small)
        free(hdr);
    return rc;
}

/* ------------------------------------------------------------------ */

/* Look KEY up for a read at snapshot S (NULL = now): *V (a view to put
 * with db_view_put) and *SEQ are where to read the rest.  -ENOENT when it
 * does not exist. */
static int fkey_read(stash_t *db, const stash_snapshot_t *s, const void *key, size_t klen, struct fkey *f,
                     struct view **v, uint64_t *seq)
{
    *v = db_view(db, s, seq);
    int rc = fkey_load(NULL, *v, *seq, key, klen, f);
    return rc == 0 && !f->exists ? -ENOENT : rc;
}

int stash_stat(stash_t *db, const stash_snapshot_t *s, const void *key, size_t klen, stash_stat_t *st)
{
    if (!db || !st)
        return err_set(-EINVAL, "stash_stat: bad arguments");
    uint64_t seq;
    struct view *v;
    struct fkey f;
    int rc = fkey_read(db, s, key, klen, &f, &v, &seq);
    db_view_put(v);
    if (rc == 0)
        *st = f.e.st;
    fkey_done(&f);
    return rc;
}

int stash_value_size(stash_t *db, const void *key, size_t klen, uint64_t *size)
{
    stash_stat_t st;
    if (!size)
        return err_set(-EINVAL, "stash_value_size: bad arguments");
    int rc = stash_stat(db, NULL, key, klen, &st);
    if (rc == 0)
        *size = st.size;
    return rc;
}

int stash_pread_at(stash_t *db, const stash_snapshot_t *s, const void *key, size_t klen, void *buf,
                   size_t len, uint64_t off, size_t *nread)
{
    if (!db || (len && !buf) || !nread)
        return err_set(-EINVAL, "stash_pread: bad arguments");
    *nread = 0;
    uint64_t seq;
    struct view *v;
    struct fkey f;
    int rc = fkey_read(db, s, key, klen, &f, &v, &seq);
    if (rc == 0 && off < f.e.st.size) {
        size_t n = f.e.st.size - off < len ? (size_t)(f.e.st.size - off) : len;
        if (f.e.kind == VK_CHUNKED)
            rc = db_read_chunks(v, seq, &f.e, buf, off, n);
        else
            memcpy(buf, f.e.data + off, n);
        if (rc == 0)
            *nread = n;
    }
    db_view_put(v);
    fkey_done(&f);
    return rc;
}

int stash_pread(stash_t *db, const void *key, size_t klen, void *buf, size_t len, uint64_t off, size_t *nread)
{
    return stash_pread_at(db, NULL, key, klen, buf, len, off, nread);
}

int stash_seek(stash_t *db, const stash_snapshot_t *s, const void *key, size_t klen, uint64_t off,
               int whence, uint64_t *result)
{
    if (!db || !result || (whence != STASH_SEEK_DATA && whence != STASH_SEEK_HOLE))
        return err_set(-EINVAL, "stash_seek: bad arguments");
    uint64_t seq;
    struct view *v;
    struct fkey f;
    int rc = fkey_read(db, s, key, klen, &f, &v, &seq);
    uint64_t size = f.e.st.size;
    if (rc == 0 && off >= size)
        rc = err_set(-ENXIO, "stash_seek: offset %llu is at or past the end (%llu bytes)",
                     (unsigned long long)off, (unsigned long long)size);
    if (rc == 0 && f.e.kind != VK_CHUNKED) {
        *result = whence == STASH_SEEK_DATA ? off : size;   /* all data */
    } else if (rc == 0) {
        uint64_t from = off / CHUNK_SIZE, last = (size - 1) / CHUNK_SIZE, idx;
        rc = db_chunk_scan(v, seq, &f.e, from, last, whence == STASH_SEEK_DATA, &idx);
        if (rc == 0 && idx > last)
            rc = whence == STASH_SEEK_DATA ? err_set(-ENXIO, "stash_seek: no data after offset %llu",
                                                     (unsigned long long)off) : 0;
        if (rc == 0)
            *result = idx > last ? size : idx == from ? off : idx * CHUNK_SIZE;
    }
    db_view_put(v);
    fkey_done(&f);
    return rc;
}

int stash_setstat(stash_t *db, const void *key, size_t klen, const stash_stat_t *st, unsigned mask)
{
    if (!db || !st || (mask & ~0x7fu) || ((mask & STASH_SET_INO) && !st->ino))
        return err_set(-EINVAL, "stash_setstat: bad arguments");
    struct fkey f;
    int rc = fkey_lock(db, key, klen, &f);
    if (rc)
        return rc;
    if (!f.exists) {
        rc = -ENOENT;
    } else {
        struct envelope e = f.e;
        to_attr(&e);
        if (mask & STASH_SET_MODE) e.st.mode = st->mode;
        if (mask & STASH_SET_UID) e.st.uid = st->uid;
        if (mask & STASH_SET_GID) e.st.gid = st->gid;
        if (mask & STASH_SET_ATIME) e.st.atime_ns = st->atime_ns;
        if (mask & STASH_SET_MTIME) e.st.mtime_ns = st->mtime_ns;
        if (mask & STASH_SET_CTIME) e.st.ctime_ns = st->ctime_ns;
        if (mask & STASH_SET_INO) e.st.ino = st->ino;
        stash_batch_t *b = stash_batch_new();
        rc = b ? put_primary(b, &f, &e, e.data, (size_t)e.st.size) : -ENOMEM;
        if (rc == 0)
            rc = db_commit(db, b, 0);
        stash_batch_free(b);
    }
    fkey_unlock(db, &f);
    fkey_done(&f);
    return rc == -ENOMEM ? err_set(rc, "out of memory") : rc;
}

int stash_create(stash_t *db, const void *key, size_t klen, const stash_stat_t *st, unsigned flags)
{
    if (!db || !st || (flags & ~STASH_EXCL))
        return err_set(-EINVAL, "stash_create: bad arguments");
    struct fkey f;
    int rc = fkey_lock(db, key, klen, &f);
    if (rc)
        return rc;
    if (f.exists && (flags & STASH_EXCL)) {
        rc = -EEXIST;
    } else {
        struct envelope e = {.kind = VK_ATTR, .st = *st};
        e.st.size = 0;
        e.st.ino = new_gen();
        stash_batch_t *b = stash_batch_new();
        rc = b ? 0 : -ENOMEM;
        if (rc == 0 && f.exists)
            rc = db_drop_old(db, b, f.ik, f.iklen, &f.e);
        if (rc == 0)
            rc = put_primary(b, &f, &e, NULL, 0);
        if (rc == 0)
            rc = db_commit(db, b, 0);
        stash_batch_free(b);
    }
    fkey_unlock(db, &f);
    fkey_done(&f);
    return rc == -ENOMEM ? err_set(rc, "out of memory") : rc;
}

/*
 * The bytes of chunk IDX of F's value as they are before a change, into C
 * (CHUNK_SIZE bytes, zero-filled past what exists); *have gets how many
 * are stored.  An inline value being converted is chunk 0.
 */
static int chunk_base(stash_t *db, struct fkey *f, uint64_t idx, uint8_t *c, size_t *have)
{
    *have = 0;
    memset(c, 0, CHUNK_SIZE);
    if (!f->exists)
        return 0;
    if (f->e.kind != VK_CHUNKED) {
        if (idx == 0) {
            memcpy(c, f->e.data, (size_t)f->e.st.size);
            *have = (size_t)f->e.st.size;
        }
        return 0;
    }
    if (idx * (uint64_t)CHUNK_SIZE >= f->e.st.size)
        return 0;
    uint64_t seq;
    struct view *v = db_view(db, NULL, &seq);
    uint8_t ck[CHUNK_KEY_LEN];
    void *raw;
    size_t rlen;
    ckey(ck, &f->e, idx);
    int rc = db_view_get(v, seq, ck, sizeof ck, &raw, &rlen);
    if (rc == 0) {
        /* A pointer's bytes are read (and checked) straight into C.  A
         * decompression may leave scraps past its end (zstd uses the spare
         * room of its output as scratch): the rest is zeroed again. */
        const uint8_t *bytes;
        size_t n;
        rc = db_chunk_bytes(v, &f->e, raw, rlen, c, &bytes, &n);
        if (rc == 0 && bytes != c)
            memcpy(c, bytes, n);
        if (rc == 0) {
            memset(c + n, 0, CHUNK_SIZE - n);
            rc = db_chunk_patch(v, seq, &f->e, idx, c, &n);
            rc = rc > 0 ? 0 : rc;
            *have = n;
        }
        free(raw);
    }
    db_view_put(v);
    return rc == -ENOENT ? 0 : rc;
}

/*
 * A write of N bytes of SRC at IN inside chunk IDX of tagged value F:
 * added to the chunk's patch record (value.h) instead of rewriting the
 * chunk around it, while that record stays small.  The record is rewritten
 * whole by each write, so how small depends on what the chunk costs to
 * rewrite: for bytes in a value file, up to PATCH_MAX; for bytes in the
 * tree, up to a quarter of the chunk, so that a run of small writes into
 * one chunk (appends to a log) writes a few KiB each, not the chunk's up
 * to 64 KiB each.  Returns 1 when added to B, 0 when the chunk has to be
 * rewritten (*FULL set for a chunk in a value file: it goes back to one
 * whole, to be patched again; one in the tree stays there), or a negative
 * errno.
 */
static int add_patch(stash_t *db, stash_batch_t *b, const struct envelope *e, uint64_t idx, size_t in,
                     const uint8_t *src, size_t n, int *full)
{
    *full = 0;
    if (!e->tagged)
        return 0;
    uint64_t seq;
    struct view *v = db_view(db, NULL, &seq);
    uint8_t ck[CHUNK_KEY_LEN], pk[CHUNK_KEY_LEN];
    void *raw = NULL, *old = NULL;
    size_t rlen = 0, olen = 0;
    ckey(ck, e, idx);
    pkey(pk, e, idx);
    int rc = db_view_get(v, seq, ck, sizeof ck, &raw, &rlen);
    int in_file = rc == 0 && rlen >= 1 && (((uint8_t *)raw)[0] == CTAG_VPTR || ((uint8_t *)raw)[0] == CTAG_VPTRZ);
    size_t max = in_file ? PATCH_MAX : rlen / 4 < PATCH_MAX ? rlen / 4 : PATCH_MAX;
    if (rc == 0 && PATCH_HDR + n <= max)
        rc = db_patch_get(v, seq, e, idx, &old, &olen);
    db_view_put(v);
    free(raw);
    if (rc == 0 && (PATCH_HDR + n > max || olen + PATCH_HDR + n > max)) {
        *full = in_file;
        rc = 1;
    }
    uint8_t *rec = rc == 0 ? malloc(olen + PATCH_HDR + n) : NULL;
    if (rc == 0 && !rec)
        rc = -ENOMEM;
    if (rc == 0) {
        if (olen)
            memcpy(rec, old, olen);
        size_t len = olen + patch_entry(rec + olen, in, src, n);
        batch_set_blobs(b);
        rc = batch_put_raw(b, pk, sizeof pk, NULL, 0, rec, len);
    }
    free(rec);
    free(old);
    return rc == 0 ? 1 : rc == 1 || rc == -ENOENT ? 0 : rc;
}

/*
 * Value files a change appended to (vlog.h), one entry per append: each is
 * settled with vlog_done once the batch naming them is committed.
 */
struct appends {
    uint64_t *file;
    size_t n, cap;
};

static int appends_add(struct appends *a, uint64_t file)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 16;
        uint64_t *p = realloc(a->file, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        a->file = p;
        a->cap = cap;
    }
    a->file[a->n++] = file;
    return 0;
}

static void appends_done(stash_t *db, struct appends *a)
{
    for (size_t i = 0; i < a->n; i++)
        vlog_done(db_vlog(db), a->file[i]);
    a->n = 0;
}

/* Whether chunk IDX of F's chunked value has a record (*THERE).  0 or a
 * negative errno. */
static int chunk_there(stash_t *db, struct fkey *f, uint64_t idx, int *there)
{
    uint64_t seq;
    struct view *v = db_view(db, NULL, &seq);
    uint8_t ck[CHUNK_KEY_LEN];
    void *raw;
    size_t rlen;
    ckey(ck, &f->e, idx);
    int rc = db_view_get(v, seq, ck, sizeof ck, &raw, &rlen);
    db_view_put(v);
    *there = rc == 0;
    if (rc == 0)
        free(raw);
    return rc == -ENOENT ? 0 : rc;
}

/* The chunks of F's chunked value with index in [LO, HI] are being
 * dropped: take those there from E's count (when E keeps one). */
static int uncount(stash_t *db, struct fkey *f, uint64_t lo, uint64_t hi, struct envelope *e)
{
    if (!e->chunks_known || lo > hi)
        return 0;
    uint64_t seq, n;
    struct view *v = db_view(db, NULL, &seq);
    int rc = db_chunk_count(v, seq, &f->e, lo, hi, &n);
    db_view_put(v);
    if (rc == 0)
        e->chunks = n < e->chunks ? e->chunks - n : 0;
    return rc;
}

/*
 * Add to B chunk CK's record: N bytes of chunk data.  For a value whose
 * chunks are tagged, a WHOLE chunk (written whole, not read, changed and
 * written back) of at least VLOG_MIN bytes goes to a value file and the
 * record is a pointer to it; anything else stays in the tree, so that small
 * scattered writes leave no garbage in value files.
 */
#define VLOG_MIN (CHUNK_SIZE / 4)

static int put_chunk_data(stash_t *db, stash_batch_t *b, const struct envelope *e, const uint8_t ck[CHUNK_KEY_LEN],
                          const uint8_t *data, size_t n, int whole, struct appends *a)
{
    batch_set_blobs(b);
    if (!e->tagged)
        return batch_put_raw(b, ck, CHUNK_KEY_LEN, NULL, 0, data, n);
    uint8_t pk[CHUNK_KEY_LEN];
    memcpy(pk, ck, sizeof pk);
    pk[1] = NS_PATCH;                               /* same gen and index */
    int rc = batch_del_raw(b, pk, sizeof pk);     /* the new bytes hold its writes */
    if (rc)
        return rc;
    if (!whole || n < VLOG_MIN) {
        uint8_t tag = CTAG_BYTES;
        return batch_put_raw(b, ck, CHUNK_KEY_LEN, &tag, 1, data, n);
    }
    struct vptr p;
    if ((rc = vlog_append(db_vlog(db), ck, CHUNK_KEY_LEN, data, n, db_vlog_level(db), &p)) != 0)
        return rc;
    if (appends_add(a, p.file) < 0) {
        vlog_done(db_vlog(db), p.file);
        return -ENOMEM;
    }
    uint8_t rec[VPTR_LEN];
    vptr_encode(rec, &p);
    return batch_put_raw(b, ck, CHUNK_KEY_LEN, NULL, 0, rec, sizeof rec);
}

/* Whether the N bytes at P are all zeros. */
static int zeros(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* Whether chunk IDX of F's inline value is written when it becomes chunked
 * (convert: pieces of zeros are left out, batch_put_chunk). */
static int inline_chunk(const struct fkey *f, uint64_t idx)
{
    if (!f->exists || idx * CHUNK_SIZE >= f->e.st.size)
        return 0;
    size_t n = (size_t)(f->e.st.size - idx * CHUNK_SIZE);
    return !zeros(f->e.data + idx * CHUNK_SIZE, n < CHUNK_SIZE ? n : CHUNK_SIZE);
}

/* How many chunks convert writes of F's inline value. */
static uint64_t inline_chunks(const struct fkey *f)
{
    uint64_t n = 0;
    for (uint64_t i = 0; f->exists && i * CHUNK_SIZE < f->e.st.size; i++)
        n += (uint64_t)inline_chunk(f, i);
    return n;
}

#define PARTIAL_INLINE_MAX (16u << 10)

/*
 * The envelope F's value gets for a new size NEWSIZE: inline while it fits,
 * else chunked (a fresh generation when it was inline); with CHUNK, chunked
 * whatever the size.  Sets *converting when an inline value becomes
 * chunked.
 */
static struct envelope grow_env(struct fkey *f, uint64_t newsize, int chunk, int *converting)
{
    struct envelope e = f->e;
    *converting = 0;
    if (!f->exists) {
        memset(&e, 0, sizeof e);
        e.kind = VK_ATTR;
    }
    if (e.kind != VK_CHUNKED && (newsize > INLINE_MAX || chunk)) {
        to_attr(&e);
        e.kind = VK_CHUNKED;
        e.tagged = 1;
        e.gen = new_gen();
        e.chunks_known = 1;
        e.chunks = inline_chunks(f);    /* what convert writes */
        *converting = 1;
    }
    e.st.size = newsize;
    e.st.mtime_ns = e.st.ctime_ns = now_ns();
    if (!f->exists)
        e.st.atime_ns = e.st.mtime_ns;
    return e;
}

/* F's inline value becomes chunked value E: its bytes are chunk 0, and E
 * gets its owner record. */
static int convert(stash_batch_t *b, struct fkey *f, const struct envelope *e)
{
    uint8_t lk[LINK_KEY_LEN];
    size_t plen;
    const uint8_t *pk = primary(f, e, lk, &plen);
    return batch_put_chunks(b, pk, plen, e->tagged, e->gen, f->e.data, f->exists ? (size_t)f->e.st.size : 0);
}

/* fkey_lock, failing with -ENOENT (F left unlocked) when KEY is missing. */
static int fkey_lock_existing(stash_t *db, const void *key, size_t klen, struct fkey *f)
{
    int rc = fkey_lock(db, key, klen, f);
    if (rc == 0 && !f->exists) {
        fkey_unlock(db, f);
        fkey_done(f);
        rc = -ENOENT;
    }
    return rc;
}

/* The end of a change to F built in B: commit it if RC is 0, settle the
 * value files it appended to (A), free B, unlock and free F.  Returns RC
 * or the commit's error. */
static int finish_change(stash_t *db, stash_batch_t *b, struct fkey *f, struct appends *a, int rc)
{
    if (rc == 0)
        rc = db_commit(db, b, 0);
    appends_done(db, a);
    free(a->file);
    stash_batch_free(b);
    fkey_unlock(db, f);
    fkey_done(f);
    return rc == -ENOMEM ? err_set(rc, "out of memory") : rc;
}

/*
 * Add to B a write of N bytes of SRC at IN inside chunk IDX of F's chunked
 * value E, keeping what the chunk holds around them: into the chunk's patch
 * record when the write fits it (add_patch), else as the chunk read,
 * changed and written back (in *CP, a CHUNK_SIZE
 * buffer, allocated here if NULL; the caller frees it).
 * CONVERTING: E's chunks are being made from an inline value in B itself.
 */
static int write_in_chunk(stash_t *db, stash_batch_t *b, struct fkey *f, struct envelope *e, uint64_t idx,
                          size_t in, const uint8_t *src, size_t n, int converting, uint8_t **cp,
                          struct appends *a)
{
    int full = 0;
    int rc = converting ? 0 : add_patch(db, b, e, idx, in, src, n, &full);
    if (rc != 0)
        return rc < 0 ? rc : 0;
    /* The chunk buffer is taken only now: most small writes into a chunk
     * end as a patch above and never need it. */
    if (!*cp && !(*cp = malloc(CHUNK_SIZE)))
        return -ENOMEM;
    uint8_t *c = *cp;
    size_t have;
    if ((rc = chunk_base(db, f, idx, c, &have)) != 0)
        return rc;
    /* A chunk where there was none (records are never empty; an inline
     * value being converted has those of its pieces that are not zeros). */
    if (converting ? !inline_chunk(f, idx) : have == 0)
        e->chunks++;
    memcpy(c + in, src, n);
    uint8_t ck[CHUNK_KEY_LEN];
    ckey(ck, e, idx);
    /* A chunk in a value file whose patch record this write does not fit
     * goes back to one whole, where later small writes patch it again. */
    return put_chunk_data(db, b, e, ck, c, in + n > have ? in + n : have, full, a);
}

/* stash_pwrite, or with AT (stash_append) at the value's end, which *AT
 * gets. */
static int pwrite_at(stash_t *db, const void *key, size_t klen, const void *buf, size_t len, uint64_t off,
                     uint64_t *at)
{
    if (!db || (len && !buf))
        return err_set(-EINVAL, "%s: bad arguments", at ? "stash_append" : "stash_pwrite");
    struct fkey f;
    int rc = fkey_lock(db, key, klen, &f);
    if (rc)
        return rc;
    uint64_t oldsize = f.exists ? f.e.st.size : 0;
    if (at)
        *at = off = oldsize;
    if (off > STASH_MAX_FILE || len > STASH_MAX_FILE - off) {
        fkey_unlock(db, &f);
        fkey_done(&f);
        return err_set(-EFBIG, "a write ending at byte %llu is past the largest value (%llu bytes)",
                       (unsigned long long)(off + len), (unsigned long long)STASH_MAX_FILE);
    }
    uint64_t end = len && off + len > oldsize ? off + len : oldsize;
    /* An inline value that a write changes only part of (an append, a
     * write inside it) is chunked once over PARTIAL_INLINE_MAX, so that
     * the small writes that tend to follow go to a patch record instead of
     * rewriting it whole each (appends to a log file of 30 KiB wrote 30 KiB
     * each).  Values written whole stay inline: one key to read. */
    int partial = len && oldsize && (off > 0 || off + len < oldsize);
    int converting;
    struct envelope e = grow_env(&f, end, partial && end > PARTIAL_INLINE_MAX, &converting);
    stash_batch_t *b = stash_batch_new();
    uint8_t *c = NULL;
    struct appends a = {0};
    rc = b ? 0 : -ENOMEM;
    if (rc == 0 && e.kind != VK_CHUNKED) {
        /* Inline: the whole (at most INLINE_MAX) value is rewritten. */
        c = calloc(1, end ? (size_t)end : 1);
        if (!c)
            rc = -ENOMEM;
        if (rc == 0) {
            if (oldsize)
                memcpy(c, f.e.data, (size_t)oldsize);
            if (len)
                memcpy(c + off, buf, len);
            rc = put_primary(b, &f, &e, c, (size_t)end);
        }
    } else if (rc == 0) {
        if (converting)
            rc = convert(b, &f, &e);
        const uint8_t *src = buf;
        uint64_t pos = off;
        while (rc == 0 && pos < off + len) {
            uint64_t idx = pos / CHUNK_SIZE;
            size_t in = (size_t)(pos % CHUNK_SIZE);
            size_t n = CHUNK_SIZE - in < off + len - pos ? CHUNK_SIZE - in : (size_t)(off + len - pos);
            uint8_t ck[CHUNK_KEY_LEN];
            ckey(ck, &e, idx);
            if (in == 0 && (n == CHUNK_SIZE || pos + n >= oldsize)) {
                /* A whole chunk (or all of the last one there is) goes
                 * straight from BUF. */
                int there = 0;
                if (e.chunks_known && idx < (oldsize + CHUNK_SIZE - 1) / CHUNK_SIZE)
                    rc = converting ? (there = inline_chunk(&f, idx), 0) : chunk_there(db, &f, idx, &there);
                e.chunks += !there;
                if (rc == 0)
                    rc = put_chunk_data(db, b, &e, ck, src, n, 1, &a);
            } else {
                rc = write_in_chunk(db, b, &f, &e, idx, in, src, n, converting, &c, &a);
            }
            src += n;
            pos += n;
        }
        if (rc == 0)
            rc = put_primary(b, &f, &e, NULL, 0);
    }
    free(c);
    return finish_change(db, b, &f, &a, rc);
}

int stash_pwrite(stash_t *db, const void *key, size_t klen, const void *buf, size_t len, uint64_t off)
{
    return pwrite_at(db, key, klen, buf, len, off, NULL);
}

int stash_append(stash_t *db, const void *key, size_t klen, const void *buf, size_t len, uint64_t *off)
{
    uint64_t at;
    int rc = pwrite_at(db, key, klen, buf, len, 0, &at);
    if (rc == 0 && off)
        *off = at;
    return rc;
}

int stash_zero_range(stash_t *db, const void *key, size_t klen, uint64_t off, uint64_t len)
{
    if (!db)
        return err_set(-EINVAL, "stash_zero_range: bad arguments");
    struct fkey f;
    int rc = fkey_lock_existing(db, key, klen, &f);
    if (rc)
        return rc;
    uint64_t size = f.e.st.size;
    uint64_t end = off < size && len > size - off ? size : off + len;
    if (off >= size || len == 0) {
        fkey_unlock(db, &f);
        fkey_done(&f);
        return 0;
    }
    int converting;
    struct envelope e = grow_env(&f, size, 0, &converting);
    stash_batch_t *b = stash_batch_new();
    uint8_t *c = NULL, *zeros = NULL;
    struct appends a = {0};
    rc = b ? 0 : -ENOMEM;
    if (rc == 0 && e.kind != VK_CHUNKED) {
        if (!(c = malloc(size ? (size_t)size : 1)))
            rc = -ENOMEM;
        else {
            memcpy(c, f.e.data, (size_t)size);
            memset(c + off, 0, (size_t)(end - off));
            rc = put_primary(b, &f, &e, c, (size_t)size);
        }
    } else if (rc == 0) {
        if (!(c = malloc(CHUNK_SIZE)) || !(zeros = calloc(1, CHUNK_SIZE)))
            rc = -ENOMEM;
        uint64_t dlo = UINT64_MAX, dhi = 0;     /* the chunks dropped: one run */
        for (uint64_t pos = off; rc == 0 && pos < end;) {
            uint64_t idx = pos / CHUNK_SIZE;
            size_t in = (size_t)(pos % CHUNK_SIZE);
            size_t n = CHUNK_SIZE - in < end - pos ? CHUNK_SIZE - in : (size_t)(end - pos);
            if (in == 0 && (n == CHUNK_SIZE || pos + n >= size)) {
                /* Chunks zeroed whole are dropped: a missing chunk reads
                 * as zeros and takes no space.  All of them up to the
                 * last whole one at once (those there are, for a long
                 * run: a hole punched in a sparse file costs its chunks). */
                uint64_t last = end >= size ? (size - 1) / CHUNK_SIZE : end / CHUNK_SIZE - 1;
                rc = db_drop_chunks(db, b, &e, idx, last);
                dlo = idx < dlo ? idx : dlo;
                dhi = last;
                pos = end >= size ? end : (last + 1) * CHUNK_SIZE;
                continue;
            } else {
                /* Part of a hole is zeros already: it stays a hole. */
                int there;
                rc = chunk_there(db, &f, idx, &there);
                if (rc == 0 && there)
                    rc = write_in_chunk(db, b, &f, &e, idx, in, zeros, n, 0, &c, &a);
            }
            pos += n;
        }
        if (rc == 0 && dlo != UINT64_MAX)
            rc = uncount(db, &f, dlo, dhi, &e);
        if (rc == 0)
            rc = put_primary(b, &f, &e, NULL, 0);
    }
    free(c);
    free(zeros);
    return finish_change(db, b, &f, &a, rc);
}

/* stash_truncate, or with GROW_ONLY stash_extend (*GREW says whether the
 * value grew; a longer one is left as it is). */
static int resize(stash_t *db, const void *key, size_t klen, uint64_t size, int grow_only, int *grew)
{
    if (!db)
        return err_set(-EINVAL, "%s: bad arguments", grow_only ? "stash_extend" : "stash_truncate");
    if (size > STASH_MAX_FILE)
        return err_set(-EFBIG, "%llu bytes is past the largest value (%llu bytes)",
                       (unsigned long long)size, (unsigned long long)STASH_MAX_FILE);
    struct fkey f;
    int rc = fkey_lock_existing(db, key, klen, &f);
    if (rc)
        return rc;
    uint64_t oldsize = f.e.st.size;
    if (grew)
        *grew = size > oldsize;
    if (grow_only && size <= oldsize) {
        fkey_unlock(db, &f);
        fkey_done(&f);
        return 0;
    }
    int converting;
    struct envelope e = grow_env(&f, size, 0, &converting);
    stash_batch_t *b = stash_batch_new();
    uint8_t *c = NULL;
    rc = b ? 0 : -ENOMEM;
    if (rc == 0 && e.kind != VK_CHUNKED) {
        c = calloc(1, size ? (size_t)size : 1);
        if (!c)
            rc = -ENOMEM;
        else {
            memcpy(c, f.e.data, (size_t)(oldsize < size ? oldsize : size));
            rc = put_primary(b, &f, &e, c, (size_t)size);
        }
    } else if (rc == 0 && converting) {
        /* Inline and growing past INLINE_MAX. */
        rc = convert(b, &f, &e);
        if (rc == 0)
            rc = put_primary(b, &f, &e, NULL, 0);
    } else if (rc == 0) {
        /* Chunked.  Cutting drops whole chunks past the end and trims the
         * last one, so growing again later reads zeros there. */
        uint8_t ck[CHUNK_KEY_LEN];
        uint64_t keep = (size + CHUNK_SIZE - 1) / CHUNK_SIZE, had = (oldsize + CHUNK_SIZE - 1) / CHUNK_SIZE;
        if (keep < had)
            rc = uncount(db, &f, keep, had - 1, &e);
        if (rc == 0 && size == 0) {
            e.chunks_known = 1;     /* none left: the count is known again */
            e.chunks = 0;
        }
        if (rc == 0 && keep < had)
            rc = db_drop_chunks(db, b, &e, keep, had - 1);
        if (rc == 0 && size < oldsize && size % CHUNK_SIZE) {
            size_t have;
            if (!(c = malloc(CHUNK_SIZE)))
                rc = -ENOMEM;
            else if ((rc = chunk_base(db, &f, size / CHUNK_SIZE, c, &have)) == 0 && have) {
                size_t cut = (size_t)(size % CHUNK_SIZE);
                uint8_t tag = CTAG_BYTES;
                ckey(ck, &e, size / CHUNK_SIZE);
                rc = batch_put_raw(b, ck, sizeof ck, &tag, e.tagged ? 1 : 0, c, have < cut ? have : cut);
                if (rc == 0 && e.tagged) {
                    pkey(ck, &e, size / CHUNK_SIZE);    /* applied in C */
                    rc = batch_del_raw(b, ck, sizeof ck);
                }
            }
        }
        if (rc == 0)
            rc = put_primary(b, &f, &e, NULL, 0);
    }
    free(c);
    struct appends none = {0};
    return finish_change(db, b, &f, &none, rc);
}

int stash_truncate(stash_t *db, const void *key, size_t klen, uint64_t size)
{
    return resize(db, key, klen, size, 0, NULL);
}

int stash_extend(stash_t *db, const void *key, size_t klen, uint64_t size, int *grew)
{
    return resize(db, key, klen, size, 1, grew);
}

/* Add to B the move of F's stored value to T (what T held dropped, unless
 * it is F's own chunked value). */
static int add_move(stash_t *db, stash_batch_t *b, struct fkey *f, struct fkey *t)
{
    int rc = 0;
    if (t->exists && !(f->e.kind == VK_CHUNKED && t->e.kind == VK_CHUNKED && !f->e.link && !t->e.link &&
                       f->e.gen == t->e.gen))
        rc = db_drop_old(db, b, t->ik, t->iklen, &t->e);
    if (rc == 0)
        rc = batch_put_raw(b, t->ik, t->iklen, NULL, 0, f->raw, f->rawlen);
    if (rc == 0 && f->e.link) {
        rc = move_lref(b, f->e.link, f->ik, f->iklen, t->ik, t->iklen);
    } else if (rc == 0 && f->e.kind == VK_CHUNKED) {
        uint8_t bk[BLOB_KEY_LEN];
        blob_key(bk, f->e.gen);
        rc = batch_put_raw(b, bk, sizeof bk, NULL, 0, t->ik, t->iklen);
    }
    if (rc == 0)
        rc = batch_del_raw(b, f->ik, f->iklen);
    return rc;
}

static void fkey_unlock2(stash_t *db, struct fkey *f, struct fkey *t)
{
    db_link_release(db, &t->held);
    db_link_release(db, &f->held);
    pthread_mutex_t *l1 = f->lock < t->lock ? f->lock : t->lock, *l2 = f->lock < t->lock ? t->lock : f->lock;
    if (l2 != l1)
        pthread_mutex_unlock(l2);
    pthread_mutex_unlock(l1);
}

/*
 * Lock and load FROM and TO for a change to both (a rename, a link): their
 * stripes in address order (once when they are the same), then each key as
 * fkey_lock does.  TO may not be a reserved key.  Undo with fkey_unlock2;
 * on an error nothing is held or allocated.
 */
static int fkey_lock2(stash_t *db, const void *from, size_t flen, const void *to, size_t tlen,
                      struct fkey *f, struct fkey *t)
{
    int rc = db_writable(db);
    if (rc)
        return rc;
    db_blobs_begin(db);
    if ((rc = fkey_load(db, NULL, 0, from, flen, f)))
        return rc;
    if ((rc = fkey_load(db, NULL, 0, to, tlen, t)) || (rc = db_reserved(db, t->ik, t->iklen))) {
        fkey_done(t);
        fkey_done(f);
        return rc;
    }
    pthread_mutex_t *l1 = f->lock < t->lock ? f->lock : t->lock, *l2 = f->lock < t->lock ? t->lock : f->lock;
    pthread_mutex_lock(l1);
    if (l2 != l1)
        pthread_mutex_lock(l2);
    rc = fkey_reload(db, f, flen);
    if (rc == 0)
        rc = fkey_reload(db, t, tlen);
    if (rc) {
        fkey_unlock2(db, f, t);
        fkey_done(t);
        fkey_done(f);
    }
    return rc;
}

int stash_rename(stash_t *db, const void *from, size_t flen, const void *to, size_t tlen, unsigned flags)
{
    if (!db || (flags & ~STASH_NOREPLACE))
        return err_set(-EINVAL, "stash_rename: bad arguments");
    struct fkey f, t;
    int rc = fkey_lock2(db, from, flen, to, tlen, &f, &t);
    if (rc)
        return rc;
    if (!f.exists)
        rc = -ENOENT;
    if (rc == 0 && t.exists && (flags & STASH_NOREPLACE))
        rc = -EEXIST;
    /* Two names of one value: nothing to do, as rename(2) says. */
    if (rc == 0 && !(f.iklen == t.iklen && memcmp(f.ik, t.ik, f.iklen) == 0) &&
        !(f.e.link && t.exists && t.e.link == f.e.link)) {
        stash_batch_t *b = stash_batch_new();
        rc = b ? add_move(db, b, &f, &t) : -ENOMEM;
        if (rc == 0)
            rc = db_commit(db, b, 0);
        stash_batch_free(b);
    }
    fkey_unlock2(db, &f, &t);
    fkey_done(&f);
    fkey_done(&t);
    return rc == -ENOMEM ? err_set(rc, "out of memory") : rc;
}

int stash_link(stash_t *db, const void *key, size_t klen, const void *newkey, size_t nklen)
{
    if (!db)
        return err_set(-EINVAL, "stash_link: bad arguments");
    struct fkey f, t;
    int rc = fkey_lock2(db, key, klen, newkey, nklen, &f, &t);
    if (rc)
        return rc;
    if (!f.exists)
        rc = -ENOENT;
    else if (t.exists)
        rc = -EEXIST;
    else if (f.e.link && f.e.nlink >= LINK_MAX)
        rc = err_set(-EMLINK, "a value has at most %u names", LINK_MAX);
    if (rc == 0) {
        /* The first link moves the value into a shared entry, and both
         * names become links to it; a later one only adds a name. */
        struct envelope e = f.e, le;
        int fresh = !e.link;
        to_attr(&e);
        if (fresh) {
            e.link = new_gen();
            e.nlink = 1;
            if (!e.st.ino)
                e.st.ino = e.link;      /* one inode number for all names */
        }
        e.nlink++;
        e.st.ctime_ns = now_ns();
        memset(&le, 0, sizeof le);
        le.kind = VK_LINK;
        le.link = e.link;
        uint8_t rec[9], lk[LINK_KEY_LEN], *rk = malloc(LINK_KEY_LEN + (f.iklen > t.iklen ? f.iklen : t.iklen));
        link_key(lk, e.link);
        env_encode_header(&le, rec);
        stash_batch_t *b = stash_batch_new();
        rc = b && rk ? put_primary(b, &f, &e, e.data, (size_t)e.st.size) : -ENOMEM;
        if (rc == 0 && fresh && e.kind == VK_CHUNKED) {
            uint8_t bk[BLOB_KEY_LEN];
            blob_key(bk, e.gen);
            rc = batch_put_raw(b, bk, sizeof bk, NULL, 0, lk, sizeof lk);
        }
        if (rc == 0 && fresh)
            rc = batch_put_raw(b, f.ik, f.iklen, NULL, 0, rec, sizeof rec);
        if (rc == 0 && fresh)
            rc = batch_put_raw(b, rk, lref_key(rk, e.link, f.ik, f.iklen), NULL, 0, NULL, 0);
        if (rc == 0)
            rc = batch_put_raw(b, t.ik, t.iklen, NULL, 0, rec, sizeof rec);
        if (rc == 0)
            rc = batch_put_raw(b, rk, lref_key(rk, e.link, t.ik, t.iklen), NULL, 0, NULL, 0);
        if (rc == 0) {
            batch_set_blobs(b);
            rc = db_commit(db, b, 0);
        }
        stash_batch_free(b);
        free(rk);
    }
    fkey_unlock2(db, &f, &t);
    fkey_done(&f);
    fkey_done(&t);
    return rc == -ENOMEM ? err_set(rc, "out of memory") : rc;
}

/* ------------------------------------------------------------------ */
/* extended attributes                                                  */

/* Walk an encoded attribute list: the next name and value after *p, or 0
 * at the end, -EIO when damaged. */
static int xnext(const uint8_t **p, const uint8_t *end, const uint8_t **name, size_t *nl,
                 const uint8_t **val, size_t *vl)
{
    uint64_t a, b;
    size_t k;
    if (*p >= end)
        return 0;
    if (!(k = dec_varint(*p, end, &a)) || a > (uint64_t)(end - *p - k))
        return -EIO;
    *name = *p + k;
    *nl = (size_t)a;
    *p = *name + a;
    if (!(k = dec_varint(*p, end, &b)) || b > (uint64_t)(end - *p - k))
        return -EIO;
    *val = *p + k;
    *vl = (size_t)b;
    *p = *val + b;
    return 1;
}

static int xname_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    return n >= 1 && n <= 255;
}

/* Load KEY for reading at S. */
static int xload(stash_t *db, const stash_snapshot_t *s, const void *key, size_t klen, struct fkey *f)
{
    uint64_t seq;
    struct view *v;
    int rc = fkey_read(db, s, key, klen, f, &v, &seq);
    db_view_put(v);
    return rc;
}

int stash_getxattr(stash_t *db, const stash_snapshot_t *s, const void *key, size_t klen, const char *name,
                   void *buf, size_t len, size_t *vlen)
{
    if (!db || !xname_ok(name) || !vlen || (len && !buf))
        return err_set(-EINVAL, "stash_getxattr: bad arguments");
    struct fkey f;
    int rc = xload(db, s, key, klen, &f);
    const uint8_t *p = f.e.xattr, *end = p + f.e.xlen, *n, *v;
    size_t nl, vl;
    size_t want = strlen(name);
    int found = 0;
    while (rc >= 0 && (rc = xnext(&p, end, &n, &nl, &v, &vl)) > 0) {
        if (nl == want && !memcmp(n, name, nl)) {
            found = 1;
            break;
        }
    }
    if (rc >= 0) {
        rc = 0;
        if (!found)
            rc = -ENODATA;
        else if (len && len < vl)
            rc = -ERANGE;
        else {
            if (len)
                memcpy(buf, v, vl);
            *vlen = vl;
        }
    } else if (rc == -EIO) {
        rc = err_set(-EIO, "damaged extended attributes");
    }
    fkey_done(&f);
    return rc;
}

int stash_listxattr(stash_t *db, const stash_snapshot_t *s, const void *key, size_t klen, char *buf,
                    size_t len, size_t *need)
{
    if (!db || !need || (len && !buf))
        return err_set(-EINVAL, "stash_listxattr: bad arguments");
    struct fkey f;
    int rc = xload(db, s, key, klen, &f);
    const uint8_t *p = f.e.xattr, *end = p + f.e.xlen, *n, *v;
    size_t nl, vl, total = 0;
    while (rc >= 0 && (rc = xnext(&p, end, &n, &nl, &v, &vl)) > 0) {
        if (len && total + nl + 1 <= len) {
            memcpy(buf + total, n, nl);
            buf[total + nl] = 0;
        }
        total += nl + 1;
    }
    if (rc >= 0) {
        rc = len && total > len ? -ERANGE : 0;
        *need = total;
    } else if (rc == -EIO) {
        rc = err_set(-EIO, "damaged extended attributes");
    }
    fkey_done(&f);
    return rc;
}

/* Rewrite KEY's attribute list without NAME, plus NAME=VAL when VAL is
 * given.  FLAGS as stash_setxattr; remove: -ENODATA when NAME is missing. */
static int xchange(stash_t *db, const void *key, size_t klen, const char *name, const void *val,
                   size_t vlen, int flags, int remove)
{
    struct fkey f;
    int rc = fkey_lock(db, key, klen, &f);
    if (rc)
        return rc;
    size_t want = strlen(name);
    uint8_t *nx = NULL;
    size_t nxl = 0;
    int found = 0;
    if (!f.exists)
        rc = -ENOENT;
    else if (!(nx = malloc(f.e.xlen + want + vlen + 20)))
        rc = -ENOMEM;
    const uint8_t *p = f.e.xattr, *end = p + f.e.xlen, *n, *v;
    size_t nl, vl;
    while (rc >= 0 && (rc = xnext(&p, end, &n, &nl, &v, &vl)) > 0) {
        if (nl == want && !memcmp(n, name, nl)) {
            found = 1;
            continue;
        }
        nxl += enc_varint(nx + nxl, nl);
        memcpy(nx + nxl, n, nl);
        nxl += nl;
        nxl += enc_varint(nx + nxl, vl);
        memcpy(nx + nxl, v, vl);
        nxl += vl;
    }
    if (rc == -EIO)
        rc = err_set(-EIO, "damaged extended attributes");
    if (rc >= 0) {
        rc = 0;
        if (remove && !found)
            rc = -ENODATA;
        else if (!remove && found && (flags & STASH_XATTR_CREATE))
            rc = -EEXIST;
        else if (!remove && !found && (flags & STASH_XATTR_REPLACE))
            rc = -ENODATA;
    }
    if (rc == 0 && !remove) {
        nxl += enc_varint(nx + nxl, want);
        memcpy(nx + nxl, name, want);
        nxl += want;
        nxl += enc_varint(nx + nxl, vlen);
        if (vlen)
            memcpy(nx + nxl, val, vlen);
        nxl += vlen;
        if (nxl > MAX_XATTR_BYTES)
            rc = err_set(-ENOSPC, "extended attributes of one key are limited to %u bytes", MAX_XATTR_BYTES);
    }
    if (rc == 0) {
        struct envelope e = f.e;
        to_attr(&e);
        e.xattr = nx;
        e.xlen = nxl;
        e.st.ctime_ns = now_ns();
        stash_batch_t *b = stash_batch_new();
        rc = b ? put_primary(b, &f, &e, e.data, (size_t)e.st.size) : -ENOMEM;
        if (rc == 0)
            rc = db_commit(db, b, 0);
        stash_batch_free(b);
    }
    free(nx);
    fkey_unlock(db, &f);
    fkey_done(&f);
    return rc == -ENOMEM ? err_set(rc, "out of memory") : rc;
}

int stash_setxattr(stash_t *db, const void *key, size_t klen, const char *name, const void *val,
                   size_t vlen, int flags)
{
    if (!db || !name || (vlen && !val) || (flags & ~(STASH_XATTR_CREATE | STASH_XATTR_REPLACE)))
        return err_set(-EINVAL, "stash_setxattr: bad arguments");
    if (!xname_ok(name))
        return err_set(-ERANGE, "extended attribute names are 1 to 255 bytes");
    if (vlen > MAX_XATTR_BYTES)
        return err_set(-ENOSPC, "extended attributes of one key are limited to %u bytes", MAX_XATTR_BYTES);
    return xchange(db, key, klen, name, val, vlen, flags, 0);
}

int stash_removexattr(stash_t *db, const void *key, size_t klen, const char *name)
{
    if (!db || !xname_ok(name))
        return err_set(-EINVAL, "stash_removexattr: bad arguments");
    return xchange(db, key, klen, name, NULL, 0, 0, 1);
}

/* ---- streamed puts ---- */

typedef int (*read_fn)(void *arg, void *buf, size_t len, size_t *got);

/* Fill BUF (CAP bytes) from RD: *n bytes, fewer only at the end (*eof). */
static int fill(read_fn rd, void *arg, uint8_t *buf, size_t cap, size_t *n, int *eof)
{
    *n = 0;
    while (*n < cap) {
        size_t got = 0;
        int rc = rd(arg, buf + *n, cap - *n, &got);
        if (rc)
            return rc < 0 ? rc : err_set(-EINVAL, "stash_put_stream: the read function returned %d", rc);
        if (got > cap - *n)
            return err_set(-EINVAL, "stash_put_stream: the read function gave more bytes than asked for");
        if (got == 0) {
            *eof = 1;
            break;
        }
        *n += got;
    }
    return 0;
}

#define STREAM_BATCH 16     /* chunks per commit while streaming (1 MiB) */

/*
 * The chunks go out in batches under a fresh generation, with a stream
 * record (value: the stored key) first, so that an open after a crash finds
 * and drops them; the last batch writes the primary record and the owner
 * record and deletes the stream record, replacing the old value at once.
 */
static int put_chunked(stash_t *db, struct fkey *f, read_fn rd, void *arg, int sync,
                       uint8_t *a, size_t na, uint8_t *c, size_t nc, int eof)
{
    uint64_t gen = new_gen(), idx = 0, total = 0, committed = 0, written = 0;
    uint8_t sk[BLOB_KEY_LEN], bk[BLOB_KEY_LEN], ck[CHUNK_KEY_LEN];
    struct envelope te = {.kind = VK_CHUNKED, .tagged = 1, .gen = gen};
    struct appends ap = {0};
    stream_key(sk, gen);
    stash_batch_t *b = stash_batch_new();
    int rc = b ? batch_put_raw(b, sk, sizeof sk, NULL, 0, f->ik, f->iklen) : -ENOMEM;
    uint8_t *cur = a;
    size_t n = na;
    while (rc == 0 && n) {
        if (total + n > STASH_MAX_FILE) {
            rc = err_set(-EFBIG, "a streamed value is past the largest value (%llu bytes)",
                         (unsigned long long)STASH_MAX_FILE);
            break;
        }
        ckey(ck, &te, idx++);
        if (!zeros(cur, n)) {       /* a chunk of zeros is left out: a hole */
            rc = put_chunk_data(db, b, &te, ck, cur, n, 1, &ap);
            written++;
        }
        total += n;
        if (rc == 0 && idx % STREAM_BATCH == 0) {
            rc = db_commit(db, b, 0);
            appends_done(db, &ap);
            committed = idx;
            stash_batch_clear(b);
        }
        if (rc || (cur == c && eof))
            break;
        if (cur == a) {
            cur = c;            /* the second chunk was read ahead */
            n = nc;
        } else {
            rc = fill(rd, arg, c, CHUNK_SIZE, &n, &eof);
        }
    }
    if (rc == 0) {
        pthread_mutex_lock(f->lock);
        rc = fkey_reload(db, f, f->k.len);
        if (rc == 0) {
            struct envelope e;
            memset(&e, 0, sizeof e);
            e.kind = VK_CHUNKED;
            e.tagged = 1;
            e.st.atime_ns = e.st.mtime_ns = e.st.ctime_ns = now_ns();
            e.st.size = total;
            e.gen = gen;
            e.chunks_known = 1;
            e.chunks = written;
            blob_key(bk, gen);
            rc = put_primary(b, f, &e, NULL, 0);
            if (rc == 0)
                rc = batch_put_raw(b, bk, sizeof bk, NULL, 0, f->ik, f->iklen);
            if (rc == 0)
                rc = batch_del_raw(b, sk, sizeof sk);
            if (rc == 0 && f->exists)
                rc = db_drop_old(db, b, f->ik, f->iklen, &f->e);
            if (rc == 0)
                rc = db_commit(db, b, sync);
        }
        fkey_unlock(db, f);
    }
    appends_done(db, &ap);
    free(ap.file);
    if (rc && committed && b) {
        /* Give back what the committed batches wrote (an open after a
         * crash here does the same from the stream record). */
        stash_batch_clear(b);
        int r = 0;
        for (uint64_t i = 0; r == 0 && i < committed; i++) {
            ckey(ck, &te, i);
            r = batch_del_raw(b, ck, sizeof ck);
        }
        if (r == 0 && batch_del_raw(b, sk, sizeof sk) == 0)
            (void)db_commit(db, b, 0);
    }
    stash_batch_free(b);
    return rc == -ENOMEM ? err_set(rc, "out of memory") : rc;
}

/*
 * stash_put of a value over INLINE_MAX: its whole chunks go to value files
 * and one batch commits their pointers with the primary and owner records,
 * replacing the old value atomically (a crash before the commit leaves
 * only unreferenced bytes in a value file, which are collected).  Chunks of
 * zeros are left out (they read as zeros).  A linked name gets a value of
 * its own; the others keep the shared one.
 */
int db_put_large(stash_t *db, const void *key, size_t klen, const void *val, size_t vlen, int sync)
{
    struct fkey f;
    int rc = fkey_lock(db, key, klen, &f);
    if (rc)
        return rc;
    struct envelope e;
    memset(&e, 0, sizeof e);
    e.kind = VK_CHUNKED;
    e.tagged = 1;
    e.gen = new_gen();
    e.st.size = vlen;
    e.st.atime_ns = e.st.mtime_ns = e.st.ctime_ns = now_ns();
    e.chunks_known = 1;     /* counted below: chunks of zeros are left out */
    stash_batch_t *b = stash_batch_new();
    struct appends a = {0};
    const uint8_t *p = val;
    uint8_t ck[CHUNK_KEY_LEN], bk[BLOB_KEY_LEN], hdr[128];   /* env_header_max(0) */
    rc = b ? 0 : -ENOMEM;
    for (size_t off = 0; rc == 0 && off < vlen; off += CHUNK_SIZE) {
        size_t n = vlen - off < CHUNK_SIZE ? vlen - off : CHUNK_SIZE;
        size_t z = 0;
        while (z < n && !p[off + z])
            z++;
        if (z == n)
            continue;
        ckey(ck, &e, off / CHUNK_SIZE);
        rc = put_chunk_data(db, b, &e, ck, p + off, n, 1, &a);
        e.chunks++;
    }
    blob_key(bk, e.gen);
    if (rc == 0)
        rc = batch_put_raw(b, bk, sizeof bk, NULL, 0, f.ik, f.iklen);
    if (rc == 0)
        rc = batch_put_raw(b, f.ik, f.iklen, hdr, env_encode_header(&e, hdr), NULL, 0);
    if (rc == 0 && f.exists)
        rc = db_drop_old(db, b, f.ik, f.iklen, &f.e);
    if (rc == 0)
        rc = db_commit(db, b, sync);
    appends_done(db, &a);
    free(a.file);
    stash_batch_free(b);
    fkey_unlock(db, &f);
    fkey_done(&f);
    return rc == -ENOMEM ? err_set(rc, "out of memory") : rc;
}

int stash_put_stream(stash_t *db, const void *key, size_t klen, read_fn rd, void *arg, int flags)
{
    if (!db || !rd || (flags & ~STASH_SYNC))
        return err_set(-EINVAL, "stash_put_stream: bad arguments");
    int rc = db_writable(db);
    if (rc)
        return rc;
    db_blobs_begin(db);
    struct fkey f;
    if ((rc = fkey_load(db, NULL, 0, key, klen, &f)))
        return rc;
    if ((rc = db_reserved(db, f.ik, f.iklen))) {
        fkey_done(&f);
        return rc;
    }
    /* Two chunks' worth decides: a value that fits INLINE_MAX is an
     * ordinary put. */
    uint8_t *a = malloc(CHUNK_SIZE), *c = malloc(CHUNK_SIZE);
    size_t na = 0, nc = 0;
    int eof = 0;
    rc = a && c ? fill(rd, arg, a, CHUNK_SIZE, &na, &eof) : err_set(-ENOMEM, "out of memory");
    if (rc == 0 && !eof)
        rc = fill(rd, arg, c, CHUNK_SIZE, &nc, &eof);
    if (rc == 0 && nc == 0) {
        stash_batch_t *b = stash_batch_new();
        rc = b ? stash_batch_put(b, key, klen, a, na) : -ENOMEM;
        if (rc == 0)
            rc = stash_write(db, b, flags);
        stash_batch_free(b);
    } else if (rc == 0) {
        rc = put_chunked(db, &f, rd, arg, flags & STASH_SYNC, a, na, c, nc, eof);
    }
    free(a);
    free(c);
    fkey_done(&f);
    return rc == -ENOMEM ? err_set(rc, "out of memory") : rc;
}
