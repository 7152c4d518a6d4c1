/*
 * vlog.c - value files; see vlog.h.
 *
 * State: a table of files sorted by number, under mu.  Each entry has its
 * descriptor (opened on first read of a sealed file; idle ones are closed
 * again past FD_MAX), its size, how many appends are out (reserved and not
 * yet vlog_done), whether it is sealed and whether it has bytes not yet
 * fsynced, the appends still writing (oldest first: the synced size written
 * after an fsync stops below the first of them), and the synced size its
 * header holds.  An append reserves its range under mu and writes outside it; a
 * read or sync counts itself in users while it uses the descriptor outside
 * mu.  The pins are a short array of (epoch, count), oldest first; the
 * retired files wait in their own list for reap.
 */
#include "vlog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zstd.h>

#include "crc32c.h"
#include "wal.h"
#include "coding.h"
#include "err.h"

#define VLOG_MAGIC 0x4C565353u  /* "SSVL" little-endian */
#define WB_CHUNK   (8u << 20)
#define POOL       8            /* zstd contexts kept per store */
#define NPIN       64           /* epochs pinned at once (more share the newest) */
#define FD_MAX     64           /* descriptors of sealed files kept open */
#define SEAL_IDLE  (VLOG_FILE_MAX / 8)  /* an idle active file this big is sealed */
#define PROBE      4096         /* bytes compressed to judge a chunk */

/* An append writing its bytes, in its file's list while it does (mu). */
struct inflight {
    uint64_t at;
    struct inflight *prev, *next;
};

struct vfile {
    uint64_t num;
    int fd;                     /* -1 until opened */
    uint64_t size;              /* bytes reserved (the active file) or on disk */
    int pending;                /* appends not yet vlog_done */
    int sealed;
    atomic_int dirty;           /* appended since the last fsync */
    uint64_t wb_off;            /* writeback started up to here */
    uint64_t wb_want;           /* ... and wanted up to here (wb_main) */
    int users;                  /* reads and syncs using fd right now */
    uint64_t used;              /* when fd was last used (for closing idle ones) */
    struct inflight *wr_head, *wr_tail;     /* appends writing, by offset */
    uint64_t mark;              /* synced size last written to the header (sync_mu) */
    int sync_failed;            /* an fsync failed: the mark stays where it was */
    int mark_read;              /* open_mark is known (vlog_torn, mu) */
    uint64_t open_mark;         /* the header's synced size, as found on disk */
};

struct pin {
    uint64_t epoch;
    uint64_t count;
};

struct dead {
    uint64_t num;
    uint64_t epoch;             /* retired while this epoch was current */
    struct dead *next;
};

struct vlog {
    char *dir;
    int read_only;
    vlog_numfn newnum;
    void *arg;
    pthread_mutex_t mu;
    pthread_mutex_t sync_mu;    /* held by vlog_sync, and by reap */
    struct vfile **f;           /* sorted by number */
    size_t n, cap;
    struct vfile *active;       /* NULL until the first append */
    struct vfile *spare;        /* the next active file, made ahead (wb_main) */
    uint64_t epoch;
    struct pin pins[NPIN];      /* oldest first */
    int npin;
    int nopen;                  /* descriptors open */
    uint64_t tick;
    struct dead *dead;
    uint64_t appended;
    uint64_t appended_seen;     /* at the last vlog_seal_idle */
    uint64_t stored;            /* bytes those took in the files */
    /* write-behind: wb_main starts the disk on what appends wrote */
    pthread_t wb;
    int wb_running, wb_stop;
    int spare_failed;           /* making a spare failed: do not retry in a loop */
    pthread_cond_t wb_cv;
    /* zstd contexts kept for reuse, under mu */
    ZSTD_CCtx *cctx[POOL];
    int ncctx;
    ZSTD_DCtx *dctx[POOL];
    int ndctx;
};

/* The synced-size half of a header H whose number (bytes 8..15) is set:
 * the size, and a CRC-32C of number and size. */
static void mark_encode(uint8_t h[VLOG_HDR], uint64_t mark)
{
    enc_u64(h + 16, mark);
    enc_u32(h + 24, crc32c(h + 8, 16));
    enc_u32(h + 28, 0);
}

/* See vlog.h.  (A version 1 file: its end is all recovery checks.) */
uint64_t vlog_mark_decode(const uint8_t *h, size_t len, uint64_t num)
{
    if (len < VLOG_HDR_V1 || dec_u32(h) != VLOG_MAGIC || dec_u64(h + 8) != num)
        return 0;
    if (dec_u32(h + 4) == 1)
        return UINT64_MAX;
    if (len < VLOG_HDR || dec_u32(h + 4) != VLOG_VERSION || dec_u32(h + 24) != crc32c(h + 8, 16))
        return 0;
    return dec_u64(h + 16);
}

static void vpath(char *buf, size_t len, const char *dir, uint64_t num)
{
    snprintf(buf, len, "%s/%06llu.val", dir, (unsigned long long)num);
}

/* Insert F into the sorted table; mu held (or not yet shared). */
static int add_file(vlog_t *vl, struct vfile *f)
{
    if (vl->n == vl->cap) {
        size_t cap = vl->cap ? vl->cap * 2 : 16;
        struct vfile **p = realloc(vl->f, cap * sizeof *p);
        if (!p)
            return err_set(-ENOMEM, "out of memory");
        vl->f = p;
        vl->cap = cap;
    }
    size_t i = vl->n;
    while (i > 0 && vl->f[i - 1]->num > f->num) {
        vl->f[i] = vl->f[i - 1];
        i--;
    }
    vl->f[i] = f;
    vl->n++;
    return 0;
}

static struct vfile *find(vlog_t *vl, uint64_t num)
{
    size_t lo = 0, hi = vl->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (vl->f[mid]->num < num)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < vl->n && vl->f[lo]->num == num ? vl->f[lo] : NULL;
}

static int open_file(vlog_t *vl, struct vfile *f);
static void trim_fds(vlog_t *vl);
static int make_file(vlog_t *vl, struct vfile **out);
static int install(vlog_t *vl, struct vfile *f);

/*
 * The write-behind thread: starts the disk writing (sync_file_range, not
 * waiting for it) on each WB_CHUNK appended to a file, off the appenders'
 * path, and keeps a spare file ready to become the active one.  The file
 * being written back counts it in users meanwhile, so its descriptor stays.
 */
static void *wb_main(void *arg)
{
    vlog_t *vl = arg;
    pthread_mutex_lock(&vl->mu);
    while (!vl->wb_stop) {
        if (vl->active && !vl->spare && !vl->spare_failed) {
            /* The next active file, made ahead so that no append waits for
             * its directory fsync. */
            pthread_mutex_unlock(&vl->mu);
            struct vfile *s;
            int rc = make_file(vl, &s);
            pthread_mutex_lock(&vl->mu);
            if (rc == 0 && install(vl, s) == 0)
                vl->spare = s;
            else
                vl->spare_failed = 1;   /* new_active makes one itself, and says why */
            continue;
        }
        struct vfile *f = NULL;
        for (size_t i = 0; i < vl->n && !f; i++)
            if (vl->f[i]->fd >= 0 && vl->f[i]->wb_want >= vl->f[i]->wb_off + WB_CHUNK)
                f = vl->f[i];
        if (!f) {
            pthread_cond_wait(&vl->wb_cv, &vl->mu);
            continue;
        }
        uint64_t from = f->wb_off, to = f->wb_want;
        f->wb_off = to;
        f->users++;
        pthread_mutex_unlock(&vl->mu);
        (void)sync_file_range(f->fd, (off_t)from, (off_t)(to - from), SYNC_FILE_RANGE_WRITE);
        pthread_mutex_lock(&vl->mu);
        f->users--;
    }
    pthread_mutex_unlock(&vl->mu);
    return NULL;
}

int vlog_open(const char *dir, int read_only, vlog_numfn newnum, void *arg, vlog_t **out)
{
    vlog_t *vl = calloc(1, sizeof *vl);
    if (!vl || !(vl->dir = strdup(dir))) {
        free(vl);
        return err_set(-ENOMEM, "out of memory");
    }
    vl->read_only = read_only;
    vl->newnum = newnum;
    vl->arg = arg;
    pthread_mutex_init(&vl->mu, NULL);
    pthread_mutex_init(&vl->sync_mu, NULL);
    pthread_cond_init(&vl->wb_cv, NULL);
    DIR *d = opendir(dir);
    if (!d) {
        vlog_close(vl);
        return err_set(-EIO, "store %s: cannot list directory", dir);
    }
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d))) {
        char *end;
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        unsigned long long num = strtoull(de->d_name, &end, 10);
        if (strcmp(end, ".val") != 0)
            continue;
        struct stat st;
        char p[PATH_MAX];
        vpath(p, sizeof p, dir, num);
        struct vfile *f = calloc(1, sizeof *f);
        if (!f) {
            rc = err_set(-ENOMEM, "out of memory");
        } else if (stat(p, &st) < 0) {
            free(f);
            rc = err_set(-EIO, "value file %s: %s", p, strerror(errno));
        } else {
            f->num = num;
            f->fd = -1;
            f->size = (uint64_t)st.st_size;
            f->sealed = 1;
            atomic_init(&f->dirty, 0);
            if ((rc = add_file(vl, f)) < 0)
                free(f);
        }
    }
    closedir(d);
    /* A process killed before it synced leaves bytes in the page cache that
     * the logs' pointers name; they must be on disk before anything built
     * from those logs is, so every file is synced once here. */
    for (size_t i = 0; rc == 0 && !read_only && i < vl->n; i++) {
        struct vfile *f = vl->f[i];
        if ((rc = open_file(vl, f)) == 0 && fdatasync(f->fd) < 0)
            rc = err_set(-EIO, "value file %06llu.val in %s: fsync failed: %s", (unsigned long long)f->num,
                         dir, strerror(errno));
        trim_fds(vl);
    }
    if (rc == 0 && !read_only) {
        if (pthread_create(&vl->wb, NULL, wb_main, vl) != 0)
            rc = err_set(-ENOMEM, "cannot start the value files' write-behind thread");
        else {
            vl->wb_running = 1;
            pthread_setname_np(vl->wb, "stash-wb");
        }
    }
    if (rc) {
        vlog_close(vl);
        return rc;
    }
    *out = vl;
    return 0;
}

/* Open F for reading (and, the active one, writing); mu held. */
static int open_file(vlog_t *vl, struct vfile *f)
{
    if (f->fd >= 0)
        return 0;
    char p[PATH_MAX];
    vpath(p, sizeof p, vl->dir, f->num);
    f->fd = open(p, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0)
        return err_set(-EIO, "value file %s: %s", p, strerror(errno));
    /* Chunks of one file are mostly read in order: a larger read-ahead. */
    (void)posix_fadvise(f->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    vl->nopen++;
    return 0;
}

/* Close the least recently used idle descriptors past FD_MAX; mu held. */
static void trim_fds(vlog_t *vl)
{
    while (vl->nopen > FD_MAX) {
        struct vfile *lru = NULL;
        for (size_t i = 0; i < vl->n; i++) {
            struct vfile *f = vl->f[i];
            if (f->fd >= 0 && f != vl->active && f->sealed && !f->pending && !f->users &&
                !atomic_load(&f->dirty) && (!lru || f->used < lru->used))
                lru = f;
        }
        if (!lru)
            return;
        close(lru->fd);
        lru->fd = -1;
        vl->nopen--;
    }
}

/* Where F's bytes are all written (no append still writing below it); mu
 * held. */
static uint64_t written_to(const struct vfile *f)
{
    return f->wr_head ? f->wr_head->at : f->size;
}

/*
 * fsync F if it has unsynced appends; MARK is written_to(F) from before the
 * fsync began.  Then the header's synced size moves up to MARK, with a
 * plain write: were that write lost in a crash, the older size it leaves
 * only makes recovery read more.  (A file this process opened read-only,
 * one found at open, is never dirty.)  sync_mu held, or the store closing.
 */
static int sync_file(vlog_t *vl, struct vfile *f, uint64_t mark)
{
    if (!atomic_exchange(&f->dirty, 0))
        return 0;
    if (fdatasync(f->fd) < 0) {
        /* Linux reports a failed writeback once: the next fdatasync of the
         * same descriptor succeeds although the pages are lost.  The mark
         * must never cover them. */
        f->sync_failed = 1;
        atomic_store(&f->dirty, 1);
        return err_set(-EIO, "value file %06llu.val in %s: fsync failed: %s", (unsigned long long)f->num,
                       vl->dir, strerror(errno));
    }
    if (mark > f->mark && !f->sync_failed) {
        uint8_t h[VLOG_HDR];
        enc_u64(h + 8, f->num);
        mark_encode(h, mark);
        if (pwrite(f->fd, h + VLOG_HDR_V1, VLOG_HDR - VLOG_HDR_V1, VLOG_HDR_V1) == VLOG_HDR - VLOG_HDR_V1)
            f->mark = mark;
    }
    return 0;
}

int vlog_close(vlog_t *vl)
{
    if (!vl)
        return 0;
    int rc = 0;
    if (vl->wb_running) {
        pthread_mutex_lock(&vl->mu);
        vl->wb_stop = 1;
        pthread_cond_signal(&vl->wb_cv);
        pthread_mutex_unlock(&vl->mu);
        pthread_join(vl->wb, NULL);
    }
    for (size_t i = 0; i < vl->n; i++) {
        struct vfile *f = vl->f[i];
        if (f->fd >= 0) {
            if (sync_file(vl, f, written_to(f)) < 0)
                rc = -EIO;
            close(f->fd);
        }
        free(f);
    }
    while (vl->dead) {
        struct dead *d = vl->dead;
        vl->dead = d->next;
        free(d);
    }
    for (int i = 0; i < vl->ncctx; i++)
        ZSTD_freeCCtx(vl->cctx[i]);
    for (int i = 0; i < vl->ndctx; i++)
        ZSTD_freeDCtx(vl->dctx[i]);
    pthread_mutex_destroy(&vl->mu);
    pthread_mutex_destroy(&vl->sync_mu);
    pthread_cond_destroy(&vl->wb_cv);
    free(vl->f);
    free(vl->dir);
    free(vl);
    return rc;
}

/* A new, empty value file, its header written and its name durable (the
 * name must be durable before any pointer into it is).  No lock needed. */
static int make_file(vlog_t *vl, struct vfile **out)
{
    struct vfile *f = calloc(1, sizeof *f);
    if (!f)
        return err_set(-ENOMEM, "out of memory");
    f->num = vl->newnum(vl->arg);
    atomic_init(&f->dirty, 1);
    char p[PATH_MAX];
    vpath(p, sizeof p, vl->dir, f->num);
    f->fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        int e = errno;
        free(f);
        return err_set(e == ENOSPC ? -ENOSPC : -EIO, "value file %s: %s", p, strerror(e));
    }
    uint8_t h[VLOG_HDR];
    enc_u32(h, VLOG_MAGIC);
    enc_u32(h + 4, VLOG_VERSION);
    enc_u64(h + 8, f->num);
    mark_encode(h, VLOG_HDR);
    f->mark = VLOG_HDR;
    ssize_t w = pwrite(f->fd, h, sizeof h, 0);
    int rc = 0;
    if (w != (ssize_t)sizeof h) {
        int e = w < 0 ? errno : ENOSPC;
        rc = err_set(e == ENOSPC ? -ENOSPC : -EIO, "value file %s: %s", p, strerror(e));
    }
    if (rc == 0)
        rc = wal_sync_dir(vl->dir);
    if (rc) {
        close(f->fd);
        unlink(p);
        free(f);
        return rc;
    }
    f->size = sizeof h;
    *out = f;
    return 0;
}

/* Add F (from make_file) to the table; mu held. */
static int install(vlog_t *vl, struct vfile *f)
{
    int rc = add_file(vl, f);
    if (rc) {
        char p[PATH_MAX];
        vpath(p, sizeof p, vl->dir, f->num);
        close(f->fd);
        unlink(p);
        free(f);
        return rc;
    }
    vl->nopen++;
    return 0;
}

/*
 * Seal the active file and make another the active one: the spare the
 * write-behind thread prepared, or, when there is none, one made here
 * (under mu: appends wait for its directory fsync, which can take long
 * while the disk writes the previous file back).  mu held.
 */
static int new_active(vlog_t *vl)
{
    struct vfile *f = vl->spare;
    int rc = 0;
    if (f)
        vl->spare = NULL;
    else if ((rc = make_file(vl, &f)) == 0)
        rc = install(vl, f);
    if (rc)
        return rc;
    if (vl->active)
        vl->active->sealed = 1;
    vl->active = f;
    vl->spare_failed = 0;
    pthread_cond_signal(&vl->wb_cv);    /* prepare the next spare */
    trim_fds(vl);
    return 0;
}

/* Append LEN stored bytes BUF (already compressed or not, as P says) under
 * KEY; fills in where they went.  The shared tail of vlog_append. */
static int append_stored(vlog_t *vl, const void *key, size_t klen, const void *buf, size_t len,
                         uint64_t rawlen, struct vptr *p);

static ZSTD_CCtx *take_cctx(vlog_t *vl)
{
    pthread_mutex_lock(&vl->mu);
    ZSTD_CCtx *c = vl->ncctx ? vl->cctx[--vl->ncctx] : NULL;
    pthread_mutex_unlock(&vl->mu);
    return c ? c : ZSTD_createCCtx();
}

static void give_cctx(vlog_t *vl, ZSTD_CCtx *c)
{
    pthread_mutex_lock(&vl->mu);
    if (vl->ncctx < POOL) {
        vl->cctx[vl->ncctx++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&vl->mu);
    ZSTD_freeCCtx(c);
}

static ZSTD_DCtx *take_dctx(vlog_t *vl)
{
    pthread_mutex_lock(&vl->mu);
    ZSTD_DCtx *d = vl->ndctx ? vl->dctx[--vl->ndctx] : NULL;
    pthread_mutex_unlock(&vl->mu);
    return d ? d : ZSTD_createDCtx();
}

static void give_dctx(vlog_t *vl, ZSTD_DCtx *d)
{
    pthread_mutex_lock(&vl->mu);
    if (vl->ndctx < POOL) {
        vl->dctx[vl->ndctx++] = d;
        d = NULL;
    }
    pthread_mutex_unlock(&vl->mu);
    ZSTD_freeDCtx(d);
}

/*
 * Compress BUF (LEN bytes) at LEVEL into *OUT (malloc'd) when that pays:
 * a first PROBE bytes compressed must shrink by an eighth (so incompressible
 * data costs only the probe), and so must the whole.  Returns the
 * compressed length, or 0 to store the bytes as they are.
 */
static size_t squeeze(vlog_t *vl, const void *buf, size_t len, int level, uint8_t **out)
{
    *out = NULL;
    if (level == 0 || len < 2 * PROBE)
        return 0;
    ZSTD_CCtx *c = take_cctx(vl);
    uint8_t *o = c ? malloc(ZSTD_compressBound(len)) : NULL;
    size_t n = 0;
    if (o) {
        size_t t = ZSTD_compressCCtx(c, o, ZSTD_compressBound(len), buf, PROBE, level);
        if (!ZSTD_isError(t) && t < PROBE - PROBE / 8) {
            n = ZSTD_compressCCtx(c, o, ZSTD_compressBound(len), buf, len, level);
            if (ZSTD_isError(n) || n >= len - len / 8)
                n = 0;
        }
    }
    if (c)
        give_cctx(vl, c);
    if (n)
        *out = o;
    else
        free(o);
    return n;
}

int vlog_append(vlog_t *vl, const void *key, size_t klen, const void *raw, size_t rawlen, int level,
                struct vptr *p)
{
    if (vl->read_only)
        return err_set(-EROFS, "store %s is open read-only", vl->dir);
    uint8_t *z;
    size_t zlen = squeeze(vl, raw, rawlen, level, &z);
    p->zstd = zlen != 0;
    int rc = append_stored(vl, key, klen, zlen ? z : raw, zlen ? zlen : rawlen, rawlen, p);
    free(z);
    return rc;
}

static int append_stored(vlog_t *vl, const void *key, size_t klen, const void *buf, size_t len,
                         uint64_t rawlen, struct vptr *p)
{
    size_t rec = VLOG_REC_HDR + klen + len;
    pthread_mutex_lock(&vl->mu);
    int rc = 0;
    if (!vl->active || vl->active->size + rec > VLOG_FILE_MAX)
        rc = new_active(vl);
    if (rc) {
        pthread_mutex_unlock(&vl->mu);
        return rc;
    }
    struct vfile *f = vl->active;
    uint64_t at = f->size;
    f->size += rec;
    f->pending++;
    struct inflight me = { .at = at, .prev = f->wr_tail };
    *(f->wr_tail ? &f->wr_tail->next : &f->wr_head) = &me;
    f->wr_tail = &me;
    vl->appended += rawlen;
    vl->stored += len;
    pthread_mutex_unlock(&vl->mu);

    p->file = f->num;
    p->off = at + VLOG_REC_HDR + klen;
    p->len = (uint32_t)len;
    p->crc = crc32c(buf, len);
    uint8_t h[VLOG_REC_HDR];
    enc_u32(h, (uint32_t)len);
    enc_u32(h + 4, p->crc);
    struct iovec iov[3] = { { h, sizeof h }, { (void *)key, klen }, { (void *)buf, len } };
    ssize_t w = pwritev(f->fd, iov, 3, (off_t)at);
    int e = w < 0 ? errno : ENOSPC;
    /* Dirty before the append leaves the list: a sync that finds it gone
     * from there finds the file dirty (see sync_file). */
    if (w == (ssize_t)rec)
        atomic_store(&f->dirty, 1);
    pthread_mutex_lock(&vl->mu);
    *(me.prev ? &me.prev->next : &f->wr_head) = me.next;
    *(me.next ? &me.next->prev : &f->wr_tail) = me.prev;
    /* Every WB_CHUNK written, wb_main starts the disk on it, so that a
     * later fsync finds little left to do.  Not here: starting writeback
     * blocks while the disk's queue is full, and that stalled appends for
     * up to 100 ms. */
    uint64_t end = at + rec;
    if (w == (ssize_t)rec && end > f->wb_want)
        f->wb_want = end;
    if (f->wb_want >= f->wb_off + WB_CHUNK)
        pthread_cond_signal(&vl->wb_cv);
    pthread_mutex_unlock(&vl->mu);
    if (w != (ssize_t)rec) {
        vlog_done(vl, f->num);
        /* The reserved range stays a hole that nothing points to. */
        return err_set(e == ENOSPC ? -ENOSPC : -EIO, "value file %06llu.val in %s: write failed: %s",
                       (unsigned long long)f->num, vl->dir, strerror(e));
    }
    return 0;
}

void vlog_done(vlog_t *vl, uint64_t file)
{
    pthread_mutex_lock(&vl->mu);
    struct vfile *f = find(vl, file);
    if (f)
        f->pending--;
    pthread_mutex_unlock(&vl->mu);
}

static int read_stored(vlog_t *vl, const struct vptr *p, void *buf)
{
    pthread_mutex_lock(&vl->mu);
    struct vfile *f = find(vl, p->file);
    int rc = f ? open_file(vl, f) : err_set(-EIO, "value file %06llu.val in %s is missing",
                                            (unsigned long long)p->file, vl->dir);
    int fd = -1;
    if (rc == 0) {
        fd = f->fd;
        f->users++;
        f->used = ++vl->tick;
    }
    pthread_mutex_unlock(&vl->mu);
    if (rc)
        return rc;
    ssize_t r = pread(fd, buf, p->len, (off_t)p->off);
    pthread_mutex_lock(&vl->mu);
    f->users--;
    trim_fds(vl);
    pthread_mutex_unlock(&vl->mu);
    if (r != (ssize_t)p->len)
        return err_set(-EIO, "value file %06llu.val in %s: %s at offset %llu", (unsigned long long)p->file,
                       vl->dir, r < 0 ? strerror(errno) : "cut short", (unsigned long long)p->off);
    if (crc32c(buf, p->len) != p->crc)
        return err_set(-EIO, "value file %06llu.val in %s: checksum mismatch at offset %llu",
                       (unsigned long long)p->file, vl->dir, (unsigned long long)p->off);
    return 0;
}

/* Whether P's bytes lie inside its file (checked before a buffer of
 * P->len bytes is allocated: a damaged pointer must fail with -EIO, not
 * ask for gigabytes). */
static int fits(vlog_t *vl, const struct vptr *p)
{
    pthread_mutex_lock(&vl->mu);
    struct vfile *f = find(vl, p->file);
    int ok = !f || p->off + p->len <= f->size;      /* a missing file: read_stored says so */
    pthread_mutex_unlock(&vl->mu);
    return ok ? 0 : err_set(-EIO, "value file %06llu.val in %s: a chunk of %u bytes at offset %llu runs past "
                            "the file's end", (unsigned long long)p->file, vl->dir, p->len,
                            (unsigned long long)p->off);
}

int vlog_copy(vlog_t *vl, const void *key, size_t klen, const struct vptr *from, struct vptr *to)
{
    int frc = fits(vl, from);
    if (frc)
        return frc;
    uint8_t *b = malloc(from->len ? from->len : 1);
    if (!b)
        return err_set(-ENOMEM, "out of memory");
    int rc = read_stored(vl, from, b);
    if (rc == 0) {
        to->zstd = from->zstd;
        rc = append_stored(vl, key, klen, b, from->len, from->len, to);
    }
    free(b);
    return rc;
}

int vlog_read(vlog_t *vl, const struct vptr *p, void *buf, size_t cap, size_t *n)
{
    if (!p->zstd) {
        if (p->len > cap)
            return err_set(-EIO, "value file %06llu.val in %s: a chunk of %u bytes at offset %llu is too long",
                           (unsigned long long)p->file, vl->dir, p->len, (unsigned long long)p->off);
        *n = p->len;
        return read_stored(vl, p, buf);
    }
    int rc = fits(vl, p);
    uint8_t *z = rc ? NULL : malloc(p->len ? p->len : 1);
    if (rc || !z)
        return rc ? rc : err_set(-ENOMEM, "out of memory");
    rc = read_stored(vl, p, z);
    ZSTD_DCtx *d = rc == 0 ? take_dctx(vl) : NULL;
    if (rc == 0 && !d)
        rc = err_set(-ENOMEM, "out of memory");
    if (d) {
        size_t r = ZSTD_decompressDCtx(d, buf, cap, z, p->len);
        if (ZSTD_isError(r))
            rc = err_set(-EIO, "value file %06llu.val in %s: chunk at offset %llu does not decompress: %s",
                         (unsigned long long)p->file, vl->dir, (unsigned long long)p->off, ZSTD_getErrorName(r));
        else
            *n = r;
        give_dctx(vl, d);
    }
    free(z);
    return rc;
}

int vlog_sync(vlog_t *vl)
{
    if (!vl)
        return 0;
    /* sync_mu keeps reap from closing a descriptor being synced. */
    pthread_mutex_lock(&vl->sync_mu);
    pthread_mutex_lock(&vl->mu);
    struct vfile **todo = malloc((vl->n ? vl->n : 1) * sizeof *todo);
    uint64_t *marks = malloc((vl->n ? vl->n : 1) * sizeof *marks);
    size_t n = 0;
    int rc = 0;
    for (size_t i = 0; i < vl->n; i++) {
        if (!atomic_load(&vl->f[i]->dirty))
            continue;
        if (todo && marks) {
            marks[n] = written_to(vl->f[i]);
            todo[n++] = vl->f[i];
            vl->f[i]->users++;
        } else if (sync_file(vl, vl->f[i], written_to(vl->f[i])) < 0) {   /* no memory: under mu, then */
            rc = -EIO;
        }
    }
    pthread_mutex_unlock(&vl->mu);
    for (size_t i = 0; i < n; i++)
        if (sync_file(vl, todo[i], marks[i]) < 0)
            rc = -EIO;
    pthread_mutex_lock(&vl->mu);
    for (size_t i = 0; i < n; i++)
        todo[i]->users--;
    pthread_mutex_unlock(&vl->mu);
    free(todo);
    free(marks);
    pthread_mutex_unlock(&vl->sync_mu);
    return rc;
}

int vlog_torn(vlog_t *vl, const struct vptr *p, int check)
{
    pthread_mutex_lock(&vl->mu);
    struct vfile *f = find(vl, p->file);
    int torn = f && p->off + p->len > f->size, rc = 0;
    if (f && check && !f->mark_read && (rc = open_file(vl, f)) == 0) {
        uint8_t h[VLOG_HDR];
        ssize_t r = pread(f->fd, h, sizeof h, 0);
        if (r < 0)
            rc = err_set(-EIO, "value file %06llu.val in %s: cannot read its header: %s",
                         (unsigned long long)f->num, vl->dir, strerror(errno));
        f->open_mark = vlog_mark_decode(h, r > 0 ? (size_t)r : 0, f->num);
        f->mark_read = rc == 0;
    }
    /* Cut short below what was synced: damage, not a crash's doing; the
     * batch replays, and reads of the chunk say -EIO, as for any other
     * damage (the log is not cut before it and everything after). */
    if (rc == 0 && torn && check && f->mark_read && f->open_mark != UINT64_MAX && p->off + p->len <= f->open_mark)
        torn = 0;
    int fd = -1;
    if (rc == 0 && f && !torn && check && p->off + p->len > f->open_mark) {
        fd = f->fd;
        f->users++;
    }
    trim_fds(vl);
    pthread_mutex_unlock(&vl->mu);
    if (rc || fd < 0)
        return rc ? rc : torn;
    /* Only bytes that are not what the pointer says make it torn; a read
     * that fails is an error of its own, not a crash's doing. */
    uint8_t *b = malloc(p->len ? p->len : 1);
    ssize_t r = b ? pread(fd, b, p->len, (off_t)p->off) : 0;
    int e = errno;
    if (!b)
        rc = err_set(-ENOMEM, "out of memory during recovery");
    else if (r < 0)
        rc = err_set(-EIO, "value file %06llu.val in %s: cannot read at offset %llu: %s",
                     (unsigned long long)p->file, vl->dir, (unsigned long long)p->off, strerror(e));
    else
        torn = r != (ssize_t)p->len || crc32c(b, p->len) != p->crc;
    free(b);
    pthread_mutex_lock(&vl->mu);
    f->users--;
    trim_fds(vl);
    pthread_mutex_unlock(&vl->mu);
    return rc ? rc : torn;
}

void vptr_encode(uint8_t out[VPTR_LEN], const struct vptr *p)
{
    out[0] = p->zstd ? 2 : 1;
    enc_u64(out + 1, p->file);
    enc_u64(out + 9, p->off);
    enc_u32(out + 17, p->len);
    enc_u32(out + 21, p->crc);
}

int vptr_decode(const uint8_t *in, size_t n, struct vptr *p)
{
    if (n != VPTR_LEN || (in[0] != 1 && in[0] != 2))
        return -EIO;
    p->zstd = in[0] == 2;
    p->file = dec_u64(in + 1);
    p->off = dec_u64(in + 9);
    p->len = dec_u32(in + 17);
    p->crc = dec_u32(in + 21);
    return 0;
}

uint64_t vlog_pin(vlog_t *vl)
{
    pthread_mutex_lock(&vl->mu);
    uint64_t e = vl->epoch;
    if (vl->npin && vl->pins[vl->npin - 1].epoch == e) {
        vl->pins[vl->npin - 1].count++;
    } else if (vl->npin < NPIN) {
        vl->pins[vl->npin].epoch = e;
        vl->pins[vl->npin].count = 1;
        vl->npin++;
    } else {
        /* Full: count this reader with the newest pinned epoch, an older
         * one (it only keeps files longer). */
        vl->pins[vl->npin - 1].count++;
        e = vl->pins[vl->npin - 1].epoch;
    }
    pthread_mutex_unlock(&vl->mu);
    return e;
}

void vlog_unpin(vlog_t *vl, uint64_t epoch)
{
    pthread_mutex_lock(&vl->mu);
    for (int i = 0; i < vl->npin; i++) {
        if (vl->pins[i].epoch == epoch) {
            if (--vl->pins[i].count == 0) {
                memmove(vl->pins + i, vl->pins + i + 1, (size_t)(vl->npin - i - 1) * sizeof *vl->pins);
                vl->npin--;
            }
            break;
        }
    }
    pthread_mutex_unlock(&vl->mu);
}

void vlog_seal_idle(vlog_t *vl, int force)
{
    pthread_mutex_lock(&vl->mu);
    struct vfile *f = vl->active;
    if (f && f->pending == 0 && (force || (vl->appended == vl->appended_seen && f->size >= SEAL_IDLE))) {
        f->sealed = 1;
        vl->active = NULL;
    }
    vl->appended_seen = vl->appended;
    pthread_mutex_unlock(&vl->mu);
}

int vlog_settled(vlog_t *vl, uint64_t **nums, uint64_t **sizes, size_t *n)
{
    pthread_mutex_lock(&vl->mu);
    uint64_t *a = malloc((vl->n ? vl->n : 1) * sizeof *a), *sz = malloc((vl->n ? vl->n : 1) * sizeof *sz);
    size_t k = 0;
    for (size_t i = 0; a && i < vl->n; i++) {
        struct vfile *f = vl->f[i];
        int gone = 0;
        for (struct dead *d = vl->dead; d && !gone; d = d->next)
            gone = d->num == f->num;
        if (f->sealed && f->pending == 0 && f != vl->active && !gone) {
            sz[k] = f->size;
            a[k++] = f->num;
        }
    }
    pthread_mutex_unlock(&vl->mu);
    if (!a || !sz) {
        free(a);
        free(sz);
        return err_set(-ENOMEM, "out of memory");
    }
    *nums = a;
    *sizes = sz;
    *n = k;
    return 0;
}

void vlog_retire(vlog_t *vl, const uint64_t *nums, size_t n)
{
    pthread_mutex_lock(&vl->mu);
    for (size_t i = 0; i < n; i++) {
        struct dead *d = malloc(sizeof *d);
        if (!d)
            break;              /* found again by the next scan */
        d->num = nums[i];
        d->epoch = vl->epoch;
        d->next = vl->dead;
        vl->dead = d;
    }
    /* Readers that pin from now on cannot reach what was retired. */
    vl->epoch++;
    pthread_mutex_unlock(&vl->mu);
}

int vlog_reap(vlog_t *vl)
{
    int reaped = 0;
    if (!vl || pthread_mutex_trylock(&vl->sync_mu) != 0)
        return 0;               /* a sync is running: next time */
    pthread_mutex_lock(&vl->mu);
    uint64_t oldest = vl->npin ? vl->pins[0].epoch : vl->epoch;
    for (struct dead **dp = &vl->dead; *dp;) {
        struct dead *d = *dp;
        if (d->epoch >= oldest) {
            dp = &d->next;
            continue;
        }
        struct vfile *f = find(vl, d->num);
        if (f && f->users) {
            dp = &d->next;      /* write-behind is using it: next time */
            continue;
        }
        *dp = d->next;
        if (f) {
            char p[PATH_MAX];
            vpath(p, sizeof p, vl->dir, f->num);
            if (unlink(p) == 0 || errno == ENOENT) {
                if (f->fd >= 0) {
                    close(f->fd);
                    vl->nopen--;
                }
                size_t i = 0;
                while (vl->f[i] != f)
                    i++;
                memmove(vl->f + i, vl->f + i + 1, (vl->n - i - 1) * sizeof *vl->f);
                vl->n--;
                free(f);
                reaped++;
            }
        }
        free(d);
    }
    pthread_mutex_unlock(&vl->mu);
    pthread_mutex_unlock(&vl->sync_mu);
    return reaped;
}

void vlog_usage(vlog_t *vl, uint64_t *files, uint64_t *bytes, uint64_t *appended, uint64_t *stored)
{
    pthread_mutex_lock(&vl->mu);
    *stored = vl->stored;
    *files = vl->n;
    *bytes = 0;
    for (size_t i = 0; i < vl->n; i++)
        *bytes += vl->f[i]->size;
    *appended = vl->appended;
    pthread_mutex_unlock(&vl->mu);
}

static int copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = in < 0 ? -1 : open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    int rc = in >= 0 && out >= 0 ? 0 : -errno;
    char buf[1 << 16];
    ssize_t r;
    while (rc == 0 && (r = read(in, buf, sizeof buf)) != 0) {
        errno = 0;
        if (r < 0 || write(out, buf, (size_t)r) != r)
            rc = errno ? -errno : -ENOSPC;
    }
    if (rc == 0 && fsync(out) < 0)
        rc = -errno;
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    return rc;
}

int vlog_backup(vlog_t *vl, const char *dest)
{
    /* Seal the active file first, so every file linked is immutable; later
     * appends start a new one. */
    pthread_mutex_lock(&vl->mu);
    if (vl->active) {
        vl->active->sealed = 1;
        vl->active = NULL;
    }
    size_t n = 0;
    uint64_t *nums = malloc((vl->n ? vl->n : 1) * sizeof *nums);
    /* Not the spare: it holds nothing yet, and the appends that go on in
     * it would reach the backup through the link. */
    for (size_t i = 0; nums && i < vl->n; i++)
        if (vl->f[i] != vl->spare)
            nums[n++] = vl->f[i]->num;
    pthread_mutex_unlock(&vl->mu);
    if (!nums)
        return err_set(-ENOMEM, "out of memory");
    int rc = vlog_sync(vl);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char from[PATH_MAX], to[PATH_MAX];
        vpath(from, sizeof from, vl->dir, nums[i]);
        vpath(to, sizeof to, dest, nums[i]);
        if (link(from, to) == 0)
            continue;
        /* Gone since the list was taken: a file given back, which the view
         * the backup pins does not name (a file it names is not removed
         * while the pin lasts). */
        if (errno == ENOENT)
            continue;
        int e = copy_file(from, to);
        if (e)
            rc = err_set(e, "backup: value file %s: %s", from, strerror(-e));
    }
    free(nums);
    return rc;
}
