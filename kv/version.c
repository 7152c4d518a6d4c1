/*
 * version.c - versions, the MANIFEST, and reading through the levels; see
 * version.h.
 *
 * MANIFEST record (one per edit, framed like a log record):
 *   format (1 byte, = 1), then tagged fields, each a tag byte and varints:
 *     1 log_number   2 next_file   3 last_seq
 *     4 add table:    level, number, size
 *     5 delete table: level, number
 * A table's key range and entry count come from its own (checksummed)
 * properties block when it is opened.
 */
#include "version.h"
#include "memtable.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coding.h"
#include "err.h"
#include "ikey.h"
#include "wal.h"

#define EDIT_FORMAT 1

const sst_keyfmt_t ikey_fmt = { ikey_packed_cmp, ikey_filter_len, ikey_separator };

void table_path(char *buf, size_t len, const char *dir, uint64_t number)
{
    snprintf(buf, len, "%s/%06llu.sst", dir, (unsigned long long)number);
}

static void manifest_path(char *buf, size_t len, const char *dir, uint64_t number)
{
    snprintf(buf, len, "%s/MANIFEST-%06llu", dir, (unsigned long long)number);
}

/* ---- the table cache ---- */

struct tcache {
    pthread_mutex_t mu;
    int cap, open;
    int map;                          /* mmap_reads */
    fmeta_t lru;                      /* sentinel of the open readers */
    sst_cache_t *blocks;
};

static struct tcache *tcache_new(int cap, sst_cache_t *blocks)
{
    struct tcache *tc = calloc(1, sizeof *tc);
    if (!tc)
        return NULL;
    pthread_mutex_init(&tc->mu, NULL);
    tc->cap = cap > 0 ? cap : 1;
    tc->lru.lnext = tc->lru.lprev = &tc->lru;
    tc->blocks = blocks;
    return tc;
}

static void lru_out(fmeta_t *f)
{
    f->lprev->lnext = f->lnext;
    f->lnext->lprev = f->lprev;
    f->lnext = f->lprev = NULL;
}

static void lru_in(struct tcache *tc, fmeta_t *f)
{
    f->lnext = tc->lru.lnext;
    f->lprev = &tc->lru;
    f->lnext->lprev = f;
    tc->lru.lnext = f;
}

static int open_reader(const char *dir, uint64_t number, sst_cache_t *blocks, int map, sst_reader_t **r)
{
    char path[PATH_MAX];
    table_path(path, sizeof path, dir, number);
    int rc = sst_open(path, number, &ikey_fmt, blocks, r);
    if (rc == -ENOENT)
        return err_set(-EIO, "table %06llu.sst named by the MANIFEST is missing", (unsigned long long)number);
    if (rc == 0 && map)
        (void)sst_map(*r);    /* without a mapping, reads use pread */
    return rc;
}

int fmeta_acquire(fmeta_t *f, sst_reader_t **out)
{
    struct tcache *tc = f->tc;
    pthread_mutex_lock(&tc->mu);
    if (!f->r) {
        /* Opening reads the footer, index and filter: do it unlocked. */
        f->users++;
        pthread_mutex_unlock(&tc->mu);
        sst_reader_t *r;
        int rc = open_reader(f->dir, f->number, tc->blocks, tc->map, &r);
        /* A file put in its place (copied from another store, another
         * table's bytes) must not be read as this table. */
        if (rc == 0 && (sst_file_size(r) != f->size || sst_entries(r) != f->entries)) {
            rc = err_set(-EIO, "table %06llu.sst is not the table the MANIFEST names (%llu bytes and %llu entries, "
                         "not %llu and %llu)", (unsigned long long)f->number,
                         (unsigned long long)sst_file_size(r), (unsigned long long)sst_entries(r),
                         (unsigned long long)f->size, (unsigned long long)f->entries);
            sst_close(r);
        }
        pthread_mutex_lock(&tc->mu);
        f->users--;
        if (rc) {
            pthread_mutex_unlock(&tc->mu);
            return rc;
        }
        if (f->r) {
            sst_close(r);   /* another thread opened it meanwhile */
        } else {
            f->r = r;
            lru_in(tc, f);
            tc->open++;
        }
    } else {
        lru_out(f);
        lru_in(tc, f);
    }
    f->users++;
    *out = f->r;
    pthread_mutex_unlock(&tc->mu);
    return 0;
}

/* Closing happens here: readers beyond the bound that nobody uses are
 * closed, least recently used first, outside the lock. */
void fmeta_release(fmeta_t *f)
{
    struct tcache *tc = f->tc;
    sst_reader_t *victims[8];
    int n = 0;
    pthread_mutex_lock(&tc->mu);
    f->users--;
    for (fmeta_t *g = tc->lru.lprev; g != &tc->lru && tc->open > tc->cap && n < 8;) {
        fmeta_t *p = g->lprev;
        if (g->users == 0) {
            victims[n++] = g->r;
            g->r = NULL;
            lru_out(g);
            tc->open--;
        }
        g = p;
    }
    pthread_mutex_unlock(&tc->mu);
    for (int i = 0; i < n; i++)
        sst_close(victims[i]);
}

int vset_open_tables(vset_t *vs)
{
    pthread_mutex_lock(&vs->tc->mu);
    int n = vs->tc->open;
    pthread_mutex_unlock(&vs->tc->mu);
    return n;
}

/* ---- tables and versions ---- */

/* A table as its MANIFEST edits describe it: with its key range and entry
 * count (tag 6), or only its number (tag 4, stores written before tag 6). */
struct mtable {
    uint64_t number, size, entries;
    uint8_t *smallest, *largest;    /* NULL with tag 4 */
    size_t slen, llen;
};

/* A new fmeta (one reference, no reader) for table NUMBER with these
 * facts; NULL when out of memory. */
static fmeta_t *fmeta_new(vset_t *vs, uint64_t number, uint64_t size, uint64_t entries,
                          const void *smallest, size_t slen, const void *largest, size_t llen)
{
    fmeta_t *f = calloc(1, sizeof *f);
    if (!f || !(f->smallest = malloc(slen)) || !(f->largest = malloc(llen))) {
        if (f)
            free(f->smallest);
        free(f);
        return NULL;
    }
    memcpy(f->smallest, smallest, slen);
    memcpy(f->largest, largest, llen);
    f->slen = slen;
    f->llen = llen;
    f->number = number;
    f->size = size;
    f->entries = entries;
    f->dir = vs->dir;
    f->tc = vs->tc;
    atomic_init(&f->refs, 1);
    atomic_init(&f->obsolete, 0);
    return f;
}

int fmeta_open(vset_t *vs, uint64_t number, fmeta_t **out)
{
    sst_reader_t *r;
    int rc = open_reader(vs->dir, number, vs->cache, vs->opt->mmap_reads, &r);
    if (rc)
        return rc;
    size_t sl, ll;
    const void *s = sst_smallest(r, &sl), *l = sst_largest(r, &ll);
    if (sl < IKEY_TRAILER || ll < IKEY_TRAILER) {
        sst_close(r);
        return err_set(-EIO, "table %06llu.sst: bad key range", (unsigned long long)number);
    }
    fmeta_t *f = fmeta_new(vs, number, sst_file_size(r), sst_entries(r), s, sl, l, ll);
    if (!f) {
        sst_close(r);
        return err_set(-ENOMEM, "out of memory");
    }
    /* Keep the reader just opened in the cache, as the most recent. */
    pthread_mutex_lock(&f->tc->mu);
    f->r = r;
    lru_in(f->tc, f);
    f->tc->open++;
    f->users = 1;
    pthread_mutex_unlock(&f->tc->mu);
    fmeta_release(f);
    *out = f;
    return 0;
}

/*
 * A table whose key range and entry count the MANIFEST gives: it is not
 * opened until a read needs it, so that damage to its index, filter,
 * properties or dictionary fails only the reads that touch it.  That it
 * exists is checked here: a missing table fails the open.
 */
static int fmeta_known(vset_t *vs, const struct mtable *t, fmeta_t **out)
{
    char path[PATH_MAX];
    struct stat st;
    table_path(path, sizeof path, vs->dir, t->number);
    if (stat(path, &st) < 0)
        return errno == ENOENT ? err_set(-EIO, "table %06llu.sst named by the MANIFEST is missing",
                                         (unsigned long long)t->number)
                               : err_set(-EIO, "table %06llu.sst: %s", (unsigned long long)t->number,
                                         strerror(errno));
    *out = fmeta_new(vs, t->number, t->size, t->entries, t->smallest, t->slen, t->largest, t->llen);
    return *out ? 0 : err_set(-ENOMEM, "out of memory");
}

void fmeta_ref(fmeta_t *f)
{
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
}

void fmeta_unref(fmeta_t *f)
{
    if (!f || atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1)
        return;
    sst_reader_t *r = NULL;
    pthread_mutex_lock(&f->tc->mu);
    if (f->r) {
        r = f->r;
        f->r = NULL;
        lru_out(f);
        f->tc->open--;
    }
    pthread_mutex_unlock(&f->tc->mu);
    sst_close(r);
    if (atomic_load(&f->obsolete)) {
        char path[PATH_MAX];
        table_path(path, sizeof path, f->dir, f->number);
        unlink(path);
    }
    free(f->smallest);
    free(f->largest);
    free(f);
}

static version_t *version_new(void)
{
    version_t *v = calloc(1, sizeof *v);
    if (v)
        atomic_init(&v->refs, 1);
    return v;
}

void version_ref(version_t *v)
{
    atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
}

void version_unref(version_t *v)
{
    if (!v || atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (int l = 0; l < NLEVELS; l++) {
        for (int i = 0; i < v->n[l]; i++)
            fmeta_unref(v->f[l][i]);
        free(v->f[l]);
    }
    free(v);
}

uint64_t level_bytes(const version_t *v, int level)
{
    uint64_t b = 0;
    for (int i = 0; i < v->n[level]; i++)
        b += v->f[level][i]->size;
    return b;
}

static int cmp_l0(const void *a, const void *b)
{
    const fmeta_t *x = *(fmeta_t *const *)a, *y = *(fmeta_t *const *)b;
    return x->number < y->number ? 1 : x->number > y->number ? -1 : 0;   /* newest first */
}

static int cmp_range(const void *a, const void *b)
{
    const fmeta_t *x = *(fmeta_t *const *)a, *y = *(fmeta_t *const *)b;
    return ikey_packed_cmp(x->smallest, x->slen, y->smallest, y->slen);
}

static int add_file(version_t *v, int level, fmeta_t *f)
{
    fmeta_t **p = realloc(v->f[level], (size_t)(v->n[level] + 1) * sizeof *p);
    if (!p)
        return -ENOMEM;
    v->f[level] = p;
    p[v->n[level]++] = f;
    return 0;
}

/* The version BASE with edit E applied (E's added fmetas get a reference). */
static version_t *version_apply(const version_t *base, const vedit_t *e)
{
    version_t *v = version_new();
    if (!v)
        return NULL;
    for (int l = 0; base && l < NLEVELS; l++) {
        for (int i = 0; i < base->n[l]; i++) {
            fmeta_t *f = base->f[l][i];
            int gone = 0;
            for (int d = 0; d < e->ndel && !gone; d++)
                gone = e->del[d].level == l && e->del[d].number == f->number;
            if (gone)
                continue;
            if (add_file(v, l, f) < 0)
                goto oom;
            fmeta_ref(f);
        }
    }
    for (int a = 0; a < e->nadd; a++) {
        if (add_file(v, e->add[a].level, e->add[a].f) < 0)
            goto oom;
        fmeta_ref(e->add[a].f);
    }
    if (v->n[0] > 1)
        qsort(v->f[0], (size_t)v->n[0], sizeof(fmeta_t *), cmp_l0);
    for (int l = 1; l < NLEVELS; l++)
        if (v->n[l] > 1)
            qsort(v->f[l], (size_t)v->n[l], sizeof(fmeta_t *), cmp_range);
    return v;
oom:
    version_unref(v);
    return NULL;
}

/* ---- MANIFEST ---- */

static size_t encode_edit(const vedit_t *e, uint8_t *p)
{
    uint8_t *q = p;
    *q++ = EDIT_FORMAT;
    if (e->has_log) { *q++ = 1; q += enc_varint(q, e->log_number); }
    if (e->has_next) { *q++ = 2; q += enc_varint(q, e->next_file); }
    if (e->has_seq) { *q++ = 3; q += enc_varint(q, e->last_seq); }
    for (int i = 0; i < e->ndel; i++) {
        *q++ = 5;
        q += enc_varint(q, (uint64_t)e->del[i].level);
        q += enc_varint(q, e->del[i].number);
    }
    for (int i = 0; i < e->nadd; i++) {
        const fmeta_t *f = e->add[i].f;
        *q++ = 6;
        q += enc_varint(q, (uint64_t)e->add[i].level);
        q += enc_varint(q, f->number);
        q += enc_varint(q, f->size);
        q += enc_varint(q, f->entries);
        q += enc_varint(q, f->slen);
        memcpy(q, f->smallest, f->slen);
        q += f->slen;
        q += enc_varint(q, f->llen);
        memcpy(q, f->largest, f->llen);
        q += f->llen;
    }
    return (size_t)(q - p);
}

static int write_edit(wal_t *m, const vedit_t *e)
{
    size_t cap = 64 + (size_t)(e->nadd + e->ndel) * 64;
    for (int i = 0; i < e->nadd; i++)
        cap += e->add[i].f->slen + e->add[i].f->llen;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return err_set(-ENOMEM, "out of memory");
    size_t n = encode_edit(e, buf);
    int rc = wal_append(m, buf, n);
    if (rc == 0)
        rc = wal_sync(m);
    free(buf);
    return rc;
}

/* What replaying a MANIFEST builds: the tables of each level. */
struct mstate {
    uint64_t log_number, next_file, last_seq;
    int have_next;
    struct mtable *t[NLEVELS];
    int n[NLEVELS], cap[NLEVELS];
    const char *name;
};

static int ms_del(struct mstate *s, int level, uint64_t number)
{
    for (int i = 0; i < s->n[level]; i++) {
        if (s->t[level][i].number == number) {
            free(s->t[level][i].smallest);
            free(s->t[level][i].largest);
            s->t[level][i] = s->t[level][--s->n[level]];
            return 0;
        }
    }
    return -1;
}

/* Add table T (its keys, if any, now owned by S). */
static int ms_add(struct mstate *s, int level, const struct mtable *t)
{
    if (s->n[level] == s->cap[level]) {
        int cap = s->cap[level] ? 2 * s->cap[level] : 16;
        struct mtable *p = realloc(s->t[level], (size_t)cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        s->t[level] = p;
        s->cap[level] = cap;
    }
    s->t[level][s->n[level]++] = *t;
    return 0;
}

static void ms_free(struct mstate *s)
{
    for (int l = 0; l < NLEVELS; l++) {
        for (int i = 0; i < s->n[l]; i++) {
            free(s->t[l][i].smallest);
            free(s->t[l][i].largest);
        }
        free(s->t[l]);
    }
}

/* A varint length and that many bytes at *P (before END), copied. */
static int dec_bytes(const uint8_t **p, const uint8_t *end, uint8_t **out, size_t *len)
{
    uint64_t n;
    size_t k = dec_varint(*p, end, &n);
    if (!k || n > (uint64_t)(end - *p - (ptrdiff_t)k) || n > STASH_MAX_KEY + 64)
        return -1;
    *p += k;
    if (!(*out = malloc(n ? n : 1)))
        return -ENOMEM;
    memcpy(*out, *p, n);
    *p += n;
    *len = n;
    return 0;
}

static int replay_edit(void *arg, const void *rec, size_t len, uint64_t off)
{
    struct mstate *s = arg;
    const uint8_t *p = rec, *end = p + len;
    if (len < 1 || *p++ != EDIT_FORMAT)
        goto bad;
    while (p < end) {
        int tag = *p++;
        uint64_t a, b, c;
        size_t k;
        switch (tag) {
        case 1: case 2: case 3:
            if (!(k = dec_varint(p, end, &a)))
                goto bad;
            p += k;
            if (tag == 3 && a > SEQ_MAX)
                goto bad;       /* no write could have it (memtable.h) */
            if (tag == 1) s->log_number = a;
            else if (tag == 2) { s->next_file = a; s->have_next = 1; }
            else s->last_seq = a;
            break;
        case 4: case 5: case 6:
            if (!(k = dec_varint(p, end, &a)) || a >= NLEVELS)
                goto bad;
            p += k;
            if (!(k = dec_varint(p, end, &b)))
                goto bad;
            p += k;
            if (tag == 5) {
                if (ms_del(s, (int)a, b) < 0)
                    goto bad;
                break;
            }
            if (!(k = dec_varint(p, end, &c)))
                goto bad;
            p += k;
            struct mtable t = { b, c, 0, NULL, NULL, 0, 0 };
            if (tag == 6) {
                uint64_t en;
                if (!(k = dec_varint(p, end, &en)))
                    goto bad;
                p += k;
                t.entries = en;
                int r1 = dec_bytes(&p, end, &t.smallest, &t.slen);
                int r2 = r1 ? r1 : dec_bytes(&p, end, &t.largest, &t.llen);
                if (r1 || r2 || t.slen < IKEY_TRAILER || t.llen < IKEY_TRAILER) {
                    free(t.smallest);
                    free(t.largest);
                    if (r1 == -ENOMEM || r2 == -ENOMEM)
                        return err_set(-ENOMEM, "out of memory");
                    goto bad;
                }
            }
            if (ms_add(s, (int)a, &t) < 0) {
                free(t.smallest);
                free(t.largest);
                return err_set(-ENOMEM, "out of memory");
            }
            break;
        default:
            goto bad;
        }
    }
    return 0;
bad:
    return err_set(-EIO, "%s: malformed edit at offset %llu", s->name, (unsigned long long)off);
}

/* Point CURRENT at MANIFEST-NUM: temporary file, fsync, rename, fsync dir.
 * *RENAMED says whether CURRENT may name it now (the rename was made), also
 * when an error is returned. */
static int set_current(const char *dir, uint64_t num, int *renamed)
{
    *renamed = 0;
    char tmp[PATH_MAX], cur[PATH_MAX], body[64];
    snprintf(tmp, sizeof tmp, "%s/CURRENT.tmp", dir);
    snprintf(cur, sizeof cur, "%s/CURRENT", dir);
    int n = snprintf(body, sizeof body, "MANIFEST-%06llu\n", (unsigned long long)num);
    int fd = open(tmp, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0)
        return err_set(-errno, "store %s: cannot write CURRENT: %s", dir, strerror(errno));
    int ok = write(fd, body, (size_t)n) == n && fsync(fd) == 0;
    int e = errno;
    close(fd);
    if (!ok || rename(tmp, cur) < 0) {
        if (ok)
            e = errno;
        unlink(tmp);
        return err_set(e == ENOSPC ? -ENOSPC : -EIO, "store %s: cannot write CURRENT: %s", dir, strerror(e));
    }
    *renamed = 1;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) < 0) {
        if (dfd >= 0)
            close(dfd);
        return err_set(-EIO, "store %s: fsync of directory failed", dir);
    }
    close(dfd);
    return 0;
}

/*
 * Write MANIFEST-NUM in DIR describing version V whole (several records for
 * a large store), fsync it and point DIR's CURRENT at it.  *OUT (may be NULL)
 * keeps the MANIFEST open for further edits.
 */
static int write_manifest(const char *dir, uint64_t num, const version_t *v, uint64_t log_number,
                          uint64_t next_file, uint64_t last_seq, wal_t **out)
{
    wal_t *m;
    int rc = wal_create(dir, num, &m);
    if (rc)
        return rc;
    /* wal_create names files NNNNNN.log: move it to its MANIFEST name. */
    char from[PATH_MAX], to[PATH_MAX];
    wal_path(from, sizeof from, dir, num);
    manifest_path(to, sizeof to, dir, num);
    if (rename(from, to) < 0) {
        wal_close(m);
        unlink(from);
        return err_set(-EIO, "store %s: cannot name the MANIFEST: %s", dir, strerror(errno));
    }
    char name[32];
    snprintf(name, sizeof name, "MANIFEST-%06llu", (unsigned long long)num);
    wal_set_name(m, name);
    /* The new name is made durable before any record: a crash must not
     * keep records under the log's name, to be replayed as a log. */
    if ((rc = wal_sync_dir(dir)) != 0) {
        wal_close(m);
        unlink(to);
        return rc;
    }
    vedit_t *e = calloc(1, sizeof *e);
    if (!e) {
        wal_close(m);
        unlink(to);
        return err_set(-ENOMEM, "out of memory");
    }
    e->has_log = e->has_next = e->has_seq = 1;
    e->log_number = log_number;
    e->next_file = next_file;
    e->last_seq = last_seq;
    for (int l = 0; v && l < NLEVELS && rc == 0; l++) {
        for (int i = 0; i < v->n[l]; i++) {
            if (e->nadd == (int)(sizeof e->add / sizeof e->add[0])) {
                rc = write_edit(m, e);
                e->nadd = 0;
                e->has_log = e->has_next = e->has_seq = 0;
                if (rc)
                    break;
            }
            e->add[e->nadd].level = l;
            e->add[e->nadd++].f = v->f[l][i];
        }
    }
    if (rc == 0)
        rc = write_edit(m, e);
    free(e);
    int renamed = 0;
    if (rc == 0)
        rc = set_current(dir, num, &renamed);
    if (rc) {
        /* Once CURRENT may name it, it stays, whatever failed after. */
        wal_close(m);
        if (!renamed)
            unlink(to);
        return rc;
    }
    if (out)
        *out = m;
    else
        wal_close(m);
    return 0;
}

/* Start a new MANIFEST holding the whole current state, then switch
 * CURRENT to it. */
static int new_manifest(vset_t *vs)
{
    uint64_t num = vs->next_file++;
    wal_t *m;
    int rc = write_manifest(vs->dir, num, vs->cur, vs->log_number, vs->next_file, vs->last_seq, &m);
    if (rc)
        return rc;
    uint64_t old = vs->manifest_num;
    if (vs->manifest)
        wal_close(vs->manifest);
    vs->manifest = m;
    vs->manifest_num = num;
    if (old) {
        char to[PATH_MAX];
        manifest_path(to, sizeof to, vs->dir, old);
        unlink(to);
    }
    return 0;
}

/* Copy SRC to DST (which must not exist) and fsync it. */
static int copy_file(const char *src, const char *dst)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return err_set(-EIO, "backup: cannot read %s: %s", src, strerror(errno));
    int out = open(dst, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (out < 0) {
        int e = errno;
        close(in);
        return err_set(e == ENOSPC ? -ENOSPC : -EIO, "backup: cannot create %s: %s", dst, strerror(e));
    }
    char *buf = malloc(1u << 20);
    int rc = buf ? 0 : err_set(-ENOMEM, "out of memory");
    ssize_t n;
    while (rc == 0 && (n = read(in, buf, 1u << 20)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = err_set(-EIO, "backup: cannot read %s: %s", src, strerror(errno));
            break;
        }
        for (ssize_t done = 0; done < n;) {
            ssize_t k = write(out, buf + done, (size_t)(n - done));
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                int e = k < 0 ? errno : ENOSPC;
                rc = err_set(e == ENOSPC ? -ENOSPC : -EIO, "backup: cannot write %s: %s", dst, strerror(e));
                break;
            }
            done += k;
        }
    }
    if (rc == 0 && fsync(out) < 0)
        rc = err_set(-EIO, "backup: fsync of %s failed", dst);
    free(buf);
    close(in);
    close(out);
    if (rc)
        unlink(dst);
    return rc;
}

int vset_backup(vset_t *vs, const version_t *v, const char *dest, uint64_t last_seq)
{
    int rc = 0;
    for (int l = 0; l < NLEVELS && rc == 0; l++) {
        for (int i = 0; i < v->n[l] && rc == 0; i++) {
            char src[PATH_MAX], dst[PATH_MAX];
            table_path(src, sizeof src, vs->dir, v->f[l][i]->number);
            table_path(dst, sizeof dst, dest, v->f[l][i]->number);
            /* Tables never change: a hard link is a copy, when it can be. */
            if (link(src, dst) < 0)
                rc = errno == EXDEV || errno == EPERM || errno == EMLINK
                         ? copy_file(src, dst)
                         : err_set(-EIO, "backup: cannot link %s: %s", dst, strerror(errno));
        }
    }
    uint64_t num = vset_new_file(vs);
    if (rc == 0)
        rc = write_manifest(dest, num, v, num + 1, num + 1, last_seq, NULL);
    if (rc == 0) {
        char lock[PATH_MAX];
        snprintf(lock, sizeof lock, "%s/LOCK", dest);
        int fd = open(lock, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0)
            rc = err_set(-EIO, "backup: cannot create %s: %s", lock, strerror(errno));
        else
            close(fd);
    }
    if (rc == 0) {
        int dfd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) < 0)
            rc = err_set(-EIO, "backup: fsync of %s failed", dest);
        if (dfd >= 0)
            close(dfd);
    }
    return rc;
}

/* Count the records of a log (for store_files). */
static int count_record(void *arg, const void *rec, size_t len, uint64_t off)
{
    (void)rec; (void)len; (void)off;
    ++*(int *)arg;
    return 0;
}

/*
 * Whether DIR holds what only a store that was once opened holds: a table,
 * a value file, or a log with a record (a MANIFEST, or a log with no record,
 * is all a crash during the very first open can leave).  The first such
 * file's name goes to NAME.
 */
static int store_files(const char *dir, char name[256])
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int found = 0;
    while (d && !found && (de = readdir(d))) {
        char *end;
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        unsigned long long num = strtoull(de->d_name, &end, 10);
        if (!strcmp(end, ".sst") || !strcmp(end, ".val")) {
            found = 1;
        } else if (!strcmp(end, ".log")) {
            char path[PATH_MAX];
            int n = 0;
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            found = wal_replay(path, num, WAL_NEWEST, count_record, &n, NULL) != 0 || n > 0;
        }
        if (found)
            snprintf(name, 256, "%s", de->d_name);
    }
    if (d)
        closedir(d);
    return found;
}

/* Whether log NUM is in DIR. */
static int log_present(const char *dir, uint64_t num)
{
    char path[PATH_MAX];
    wal_path(path, sizeof path, dir, num);
    return access(path, F_OK) == 0;
}

int vset_recover(vset_t *vs, int read_only)
{
    char cur[PATH_MAX], body[64] = "";
    snprintf(cur, sizeof cur, "%s/CURRENT", vs->dir);
    vs->next_file = 2;
    vs->pending_min = UINT64_MAX;
    if (!vs->tc && (vs->tc = tcache_new(vs->opt->max_open_files, vs->cache)))
        vs->tc->map = vs->opt->mmap_reads;
    if (!vs->tc)
        return err_set(-ENOMEM, "out of memory");
    int fd = open(cur, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        /* No CURRENT: a new store, unless the directory says otherwise (a
         * CURRENT lost or unreadable must not start an empty store over the
         * tables, and delete them as strays). */
        int e = errno;
        char what[256];
        if (e != ENOENT)
            return err_set(-e, "store %s: cannot open CURRENT: %s", vs->dir, strerror(e));
        if (store_files(vs->dir, what))
            return err_set(-EIO, "store %s: CURRENT is missing, but the directory holds the store's "
                           "files (%s): not starting an empty store over them", vs->dir, what);
    }
    struct mstate s;
    memset(&s, 0, sizeof s);
    int rc = 0;
    version_t *v = version_new();
    if (!v) {
        if (fd >= 0)
            close(fd);
        return err_set(-ENOMEM, "out of memory");
    }
    if (fd >= 0) {
        ssize_t n = read(fd, body, sizeof body - 1);
        close(fd);
        unsigned long long num;
        char nl;
        if (n <= 0 || sscanf(body, "MANIFEST-%llu%c", &num, &nl) != 2 || nl != '\n') {
            version_unref(v);
            return err_set(-EIO, "store %s: CURRENT is damaged", vs->dir);
        }
        char mp[PATH_MAX], name[48];
        manifest_path(mp, sizeof mp, vs->dir, num);
        snprintf(name, sizeof name, "MANIFEST-%06llu", num);
        s.name = name;
        uint64_t good = 0;
        struct stat mst;
        rc = wal_replay(mp, num, WAL_NEWEST, replay_edit, &s, &good);
        if (rc == -ENOENT)
            rc = err_set(-EIO, "store %s: %s named by CURRENT is missing", vs->dir, name);
        if (rc == 0 && !s.have_next)
            rc = err_set(-EIO, "store %s: %s has no file counter", vs->dir, name);
        /* A last record cut short or damaged is dropped, as a crash while
         * writing it leaves one; that edit was not acted on, so the log
         * the records before it need is still there.  If that log is gone,
         * the dropped record had been acted on, and the version without it
         * would lose (and delete) tables: damage, not a crash. */
        if (rc == 0 && stat(mp, &mst) == 0 && good < (uint64_t)mst.st_size && s.log_number &&
            !log_present(vs->dir, s.log_number))
            rc = err_set(-EIO, "store %s: %s ends in a damaged record (offset %llu of %llu bytes) that had "
                         "been acted on (log %06llu.log, which the records before it need, is gone); "
                         "not opening, nothing was changed", vs->dir, name, (unsigned long long)good,
                         (unsigned long long)mst.st_size, (unsigned long long)s.log_number);
        vs->manifest_num = num;
        vs->log_number = s.log_number;
        vs->next_file = s.next_file;
        vs->last_seq = s.last_seq;
        for (int l = 0; rc == 0 && l < NLEVELS; l++) {
            for (int i = 0; rc == 0 && i < s.n[l]; i++) {
                struct mtable *t = &s.t[l][i];
                fmeta_t *f;
                rc = t->smallest ? fmeta_known(vs, t, &f) : fmeta_open(vs, t->number, &f);
                if (rc == 0 && (rc = add_file(v, l, f)) < 0)
                    fmeta_unref(f);
                if (rc == 0 && t->number >= vs->next_file)
                    rc = err_set(-EIO, "store %s: table %06llu.sst is newer than the file counter",
                                 vs->dir, (unsigned long long)t->number);
            }
        }
    }
    ms_free(&s);
    if (rc) {
        version_unref(v);
        return rc;
    }
    if (v->n[0] > 1)
        qsort(v->f[0], (size_t)v->n[0], sizeof(fmeta_t *), cmp_l0);
    for (int l = 1; l < NLEVELS; l++)
        if (v->n[l] > 1)
            qsort(v->f[l], (size_t)v->n[l], sizeof(fmeta_t *), cmp_range);
    vs->cur = v;
    return 0;
}

/* Called once the logs are replayed: the next file number must pass every
 * log seen, then (for a writer) a fresh MANIFEST is started. */
/* The highest number of any log, table or MANIFEST in DIR (0 if none):
 * a crash can leave a file numbered past what the MANIFEST recorded. */
static uint64_t max_file_number(const char *dir)
{
    DIR *d = opendir(dir);
    uint64_t max = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        const char *p = de->d_name;
        if (!strncmp(p, "MANIFEST-", 9))
            p += 9;
        if (*p < '0' || *p > '9')
            continue;
        char *end;
        unsigned long long num = strtoull(p, &end, 10);
        if ((!strcmp(end, ".log") || !strcmp(end, ".sst") || !strcmp(end, ".val") ||
             (!*end && p != de->d_name)) && num > max)
            max = num;
    }
    if (d)
        closedir(d);
    return max;
}

int vset_start(vset_t *vs, uint64_t min_next, uint64_t last_seq)
{
    uint64_t seen = max_file_number(vs->dir) + 1;
    if (seen > min_next)
        min_next = seen;
    if (atomic_load(&vs->next_file) < min_next)
        atomic_store(&vs->next_file, min_next);
    if (vs->last_seq < last_seq)
        vs->last_seq = last_seq;
    return new_manifest(vs);
}

int vset_apply(vset_t *vs, vedit_t *e)
{
    if (!e->has_log)
        e->log_number = vs->log_number;
    e->has_log = 1;
    e->has_next = 1;
    e->next_file = vs->next_file;
    if (!e->has_seq)
        e->last_seq = vs->last_seq;
    e->has_seq = 1;
    version_t *v = version_apply(vs->cur, e);
    if (!v)
        return err_set(-ENOMEM, "out of memory");
    int rc = write_edit(vs->manifest, e);
    if (rc) {
        version_unref(v);
        return rc;
    }
    for (int d = 0; d < e->ndel; d++) {
        int l = e->del[d].level, moved = 0;
        for (int a = 0; a < e->nadd; a++)
            moved |= e->add[a].f->number == e->del[d].number;
        for (int i = 0; i < vs->cur->n[l] && !moved; i++)
            if (vs->cur->f[l][i]->number == e->del[d].number)
                atomic_store(&vs->cur->f[l][i]->obsolete, 1);
    }
    vs->log_number = e->log_number;
    vs->last_seq = e->last_seq;
    version_unref(vs->cur);
    vs->cur = v;
    return 0;
}

void vset_remove_obsolete(vset_t *vs, uint64_t min_log, int tables)
{
    DIR *d = opendir(vs->dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        char *end;
        unsigned long long num;
        int drop = 0;
        if (de->d_name[0] >= '0' && de->d_name[0] <= '9') {
            num = strtoull(de->d_name, &end, 10);
            if (!strcmp(end, ".log"))
                drop = num < min_log;
            else if (tables && !strcmp(end, ".sst")) {
                drop = num < vs->next_file && num < vs->pending_min;   /* never one being written */
                for (int l = 0; l < NLEVELS && drop; l++)
                    for (int i = 0; i < vs->cur->n[l] && drop; i++)
                        drop = vs->cur->f[l][i]->number != num;
                /* Only at open: later, a table that left the current
                 * version may still be read through an older one, and is
                 * deleted at its last reference instead. */
            }
        } else if (!strncmp(de->d_name, "MANIFEST-", 9)) {
            num = strtoull(de->d_name + 9, &end, 10);
            drop = !*end && num != vs->manifest_num;
        }
        if (drop) {
            char p[PATH_MAX];
            snprintf(p, sizeof p, "%s/%s", vs->dir, de->d_name);
            unlink(p);
        }
    }
    closedir(d);
}

void vset_close(vset_t *vs)
{
    version_unref(vs->cur);
    vs->cur = NULL;
    if (vs->manifest)
        wal_close(vs->manifest);
    vs->manifest = NULL;
    if (vs->tc) {
        /* Every version is gone, so every reader is closed. */
        pthread_mutex_destroy(&vs->tc->mu);
        free(vs->tc);
        vs->tc = NULL;
    }
}

/* ---- reads ---- */

struct lookup {
    const void *key;
    size_t klen;
    int type;            /* -1 until found */
    void *val;
    size_t vlen;
    int err;
};

static int got(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct lookup *lk = arg;
    if (kl < IKEY_TRAILER || ikey_ulen(kl) != lk->klen || memcmp(k, lk->key, lk->klen) != 0)
        return 1;   /* the first entry at or after the key is another key */
    int type = TAG_TYPE(ikey_tag(k, kl));
    if (type == KT_PUT) {
        lk->val = malloc(vl ? vl : 1);
        if (!lk->val) {
            lk->err = err_set(-ENOMEM, "out of memory for a value of %zu bytes", vl);
            return 0;
        }
        memcpy(lk->val, v, vl);
        lk->vlen = vl;
    }
    lk->type = type;
    return 0;
}

/* Does table F's user-key range contain KEY? */
static int in_range(const fmeta_t *f, const void *key, size_t klen)
{
    return ikey_cmp(key, klen, 0, f->smallest, ikey_ulen(f->slen), 0) >= 0 &&
           ikey_cmp(key, klen, 0, f->largest, ikey_ulen(f->llen), 0) <= 0;
}

static int table_get(fmeta_t *f, const uint8_t *ik, size_t iklen, struct lookup *lk)
{
    sst_reader_t *r;
    int rc = fmeta_acquire(f, &r);
    if (rc)
        return rc;
    rc = sst_get(r, ik, iklen, got, lk);
    fmeta_release(f);
    if (rc < 0)
        return rc;
    return lk->err;
}

int version_get(version_t *v, const void *key, size_t klen, uint64_t seq, void **val, size_t *vlen)
{
    uint8_t stackbuf[256], *ik = klen + IKEY_TRAILER <= sizeof stackbuf ? stackbuf : malloc(klen + IKEY_TRAILER);
    if (!ik)
        return err_set(-ENOMEM, "out of memory");
    size_t iklen = klen + IKEY_TRAILER;
    ikey_make(ik, key, klen, TAG(seq, 0xff));
    struct lookup lk = { key, klen, -1, NULL, 0, 0 };
    int rc = 0;
    for (int i = 0; i < v->n[0] && lk.type < 0 && rc == 0; i++)
        if (in_range(v->f[0][i], key, klen))
            rc = table_get(v->f[0][i], ik, iklen, &lk);
    for (int l = 1; l < NLEVELS && lk.type < 0 && rc == 0; l++) {
        /* The first table whose largest key is >= the lookup key. */
        int lo = 0, hi = v->n[l];
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            fmeta_t *f = v->f[l][mid];
            if (ikey_packed_cmp(f->largest, f->llen, ik, iklen) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < v->n[l] && in_range(v->f[l][lo], key, klen))
            rc = table_get(v->f[l][lo], ik, iklen, &lk);
    }
    if (ik != stackbuf)
        free(ik);
    if (rc < 0) {
        free(lk.val);
        return rc < -1 ? rc : -EIO;
    }
    if (lk.type == KT_PUT) {
        *val = lk.val;
        *vlen = lk.vlen;
    }
    return lk.type;
}

/* ---- iterators over tables ---- */

/* One level's tables (or a single level-0 table) as one sorted stream:
 * tables are visited in order and opened as the stream reaches them. */
struct lviter {
    iiter_t base;
    fmeta_t **f;
    int n, i;
    sst_iter_t *it;             /* on table I, or NULL */
    sst_iter_t *spare;          /* IT's memory while no table is open */
    int status;
    uint8_t *seekbuf;
    size_t seekcap;
};

#define LV(x) ((struct lviter *)(x))
#define CLV(x) ((const struct lviter *)(x))

static void lv_close(struct lviter *lv)
{
    if (lv->it) {
        sst_iter_reset(lv->it, NULL);   /* its cached block goes before the table */
        sst_iter_free(lv->spare);
        lv->spare = lv->it;
        lv->it = NULL;
        fmeta_release(lv->f[lv->i]);
    }
}

static int lv_open(struct lviter *lv, int i)
{
    lv_close(lv);
    lv->i = i;
    if (i >= lv->n)
        return 0;
    sst_reader_t *r;
    int rc = fmeta_acquire(lv->f[i], &r);
    if (rc) {
        lv->status = rc;
        return -1;
    }
    if (lv->spare) {
        sst_iter_reset(lv->spare, r);
        lv->it = lv->spare;
        lv->spare = NULL;
    } else {
        lv->it = sst_iter_new(r);
    }
    if (!lv->it) {
        fmeta_release(lv->f[i]);
        lv->status = -ENOMEM;
        return -1;
    }
    return 0;
}

/* Step over exhausted tables to the next entry.  An entry whose key is too
 * short to be an internal key (a table checksummed right but not written
 * by this engine) stops the iterator with -EIO. */
static void lv_settle(struct lviter *lv)
{
    while (lv->it && !sst_iter_valid(lv->it)) {
        if ((lv->status = sst_iter_status(lv->it)) != 0) {
            lv_close(lv);
            return;
        }
        if (lv_open(lv, lv->i + 1) < 0 || !lv->it)
            return;
        sst_iter_seek_first(lv->it);
    }
    size_t n;
    if (lv->it && (sst_iter_key(lv->it, &n), n < IKEY_TRAILER)) {
        lv->status = err_set(-EIO, "table %06llu: an entry's key is %zu bytes, shorter than an internal key",
                             (unsigned long long)lv->f[lv->i]->number, n);
        lv_close(lv);
    }
}

static void lv_seek(iiter_t *x, const void *k, size_t kl, uint64_t tag)
{
    struct lviter *lv = LV(x);
    lv->status = 0;
    if (kl + IKEY_TRAILER > lv->seekcap) {
        uint8_t *p = realloc(lv->seekbuf, kl + IKEY_TRAILER);
        if (!p) {
            lv->status = -ENOMEM;
            lv_close(lv);
            return;
        }
        lv->seekbuf = p;
        lv->seekcap = kl + IKEY_TRAILER;
    }
    ikey_make(lv->seekbuf, k, kl, tag);
    size_t iklen = kl + IKEY_TRAILER;
    int lo = 0, hi = lv->n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (ikey_packed_cmp(lv->f[mid]->largest, lv->f[mid]->llen, lv->seekbuf, iklen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* A seek into the table already open keeps it open. */
    if ((lo != lv->i || !lv->it) && (lv_open(lv, lo) < 0 || !lv->it))
        return;
    sst_iter_seek(lv->it, lv->seekbuf, iklen);
    lv_settle(lv);
}

static void lv_first(iiter_t *x)
{
    struct lviter *lv = LV(x);
    lv->status = 0;
    if (lv_open(lv, 0) < 0 || !lv->it)
        return;
    sst_iter_seek_first(lv->it);
    lv_settle(lv);
}

static int lv_valid(const iiter_t *x)
{
    return CLV(x)->it && sst_iter_valid(CLV(x)->it);
}

static void lv_next(iiter_t *x)
{
    sst_iter_next(LV(x)->it);
    lv_settle(LV(x));
}

static const void *lv_key(const iiter_t *x, size_t *kl)
{
    size_t n;
    const void *k = sst_iter_key(CLV(x)->it, &n);
    *kl = ikey_ulen(n);
    return k;
}

static uint64_t lv_tag(const iiter_t *x)
{
    size_t n;
    const uint8_t *k = sst_iter_key(CLV(x)->it, &n);
    return ikey_tag(k, n);
}

static const void *lv_value(const iiter_t *x, size_t *vl)
{
    return sst_iter_value(CLV(x)->it, vl);
}

static int lv_status(const iiter_t *x)
{
    return CLV(x)->status;
}

static void lv_destroy(iiter_t *x)
{
    struct lviter *lv = LV(x);
    lv_close(lv);
    sst_iter_free(lv->spare);
    free(lv->seekbuf);
    free(lv);
}

static const struct iiter_ops lv_ops = {
    lv_seek, lv_first, lv_valid, lv_next, lv_key, lv_tag, lv_value, lv_status, lv_destroy,
};

iiter_t *iter_files(fmeta_t **f, int n)
{
    struct lviter *lv = calloc(1, sizeof *lv);
    if (!lv)
        return NULL;
    lv->base.ops = &lv_ops;
    lv->f = f;
    lv->n = n;
    return &lv->base;
}

int version_iters(version_t *v, iiter_t **kids, int *n)
{
    for (int i = 0; i < v->n[0]; i++) {
        if (!(kids[*n] = iter_files(&v->f[0][i], 1)))
            return -ENOMEM;
        (*n)++;
    }
    for (int l = 1; l < NLEVELS; l++) {
        if (!v->n[l])
            continue;
        if (!(kids[*n] = iter_files(v->f[l], v->n[l])))
            return -ENOMEM;
        (*n)++;
    }
    return 0;
}
