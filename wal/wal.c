/*
 * wal.c - write-ahead log files: fragmenting records into 32 KiB blocks on
 * the way in, checking and reassembling them on the way out.  The contract
 * and the torn-tail rule are in wal.h, the byte layout in docs/format.md.
 *
 * The reader maps the file and walks it fragment by fragment.  When a check
 * fails it must tell a crash's torn tail from damage in the middle: it looks
 * for any well-formed fragment after the failure point, byte by byte up to
 * the end of that block and then at the start of every later block (the
 * writer begins every block with a fragment header, so a log with data after
 * the damage always shows one there).
 */
#include "wal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "coding.h"
#include "crc32c.h"
#include "err.h"

#define HDR 7
enum { T_ZERO = 0, T_FULL = 1, T_FIRST = 2, T_MIDDLE = 3, T_LAST = 4, T_HEADER = 5, T_SYNCED = 6 };
#define SYNCED_LEN 8
#define MAGIC "STASHWAL"
#define HEADER_LEN 20

struct wal {
    int fd;
    uint64_t num;
    uint64_t size;        /* end of the last record: where the next one goes */
    uint64_t alloc;       /* end of the file (zeros from size to alloc) */
    size_t prealloc;      /* bytes of zeros to keep ahead, 0 = none */
    int dirty;
    int broken;
    uint32_t seed;        /* crc of the log number, the start of every fragment crc */
    char name[32];
    uint8_t *buf;
    size_t cap;
    int can_map;          /* the filesystem never fails a store into written blocks */
    uint8_t *map;         /* shared mapping of the zeros ahead: [map_off, map_end) */
    uint64_t map_off, map_end;
    unsigned streak;      /* appends since the last sync */
    uint64_t behind;      /* records up to here have been handed to the disk */
    uint64_t synced;      /* known durable up to here (wal_sync, wal_note_synced) */
    uint64_t marked;      /* the last SYNCED fragment written said so up to here */
};

/* Hand the disk what was written, without waiting, every this many bytes,
 * so the fsync at a memtable switch (or a synced write after a run of
 * unsynced ones) finds little left to write. */
#define WRITE_BEHIND (4u << 20)

static uint32_t num_seed(uint64_t num)
{
    uint8_t b[8];
    enc_u64(b, num);
    return crc32c(b, 8);
}

static uint32_t frag_crc(uint32_t seed, uint8_t type, const uint8_t *p, size_t n)
{
    return crc32c_extend(crc32c_extend(seed, &type, 1), p, n);
}

void wal_path(char *buf, size_t len, const char *dir, uint64_t lognum)
{
    snprintf(buf, len, "%s/%06llu.log", dir, (unsigned long long)lognum);
}

static const char *base(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* ---- writing ---- */

/* Encode REC as fragments into w->buf from byte *OUT on, for the file
 * offset w->size + *OUT; *OUT moves to the end of what was encoded. */
static int encode(wal_t *w, uint8_t type_full, const uint8_t *rec, size_t len, size_t *out)
{
    size_t need = *out + len + (len / (WAL_BLOCK_SIZE - HDR) + 2) * (HDR + HDR);
    if (need > w->cap) {
        uint8_t *p = realloc(w->buf, need);
        if (!p)
            return -ENOMEM;
        w->buf = p;
        w->cap = need;
    }
    uint64_t off = w->size + *out;
    size_t o = *out, left = len;
    int first = 1;
    for (;;) {
        size_t avail = WAL_BLOCK_SIZE - off % WAL_BLOCK_SIZE;
        if (avail < HDR) {
            memset(w->buf + o, 0, avail);
            o += avail;
            off += avail;
            continue;
        }
        size_t n = left < avail - HDR ? left : avail - HDR;
        int last = n == left;
        uint8_t type = first && last ? type_full : first ? T_FIRST : last ? T_LAST : T_MIDDLE;
        uint8_t *h = w->buf + o;
        h[4] = (uint8_t)n;
        h[5] = (uint8_t)(n >> 8);
        h[6] = type;
        memcpy(h + HDR, rec, n);
        enc_u32(h, frag_crc(w->seed, type, rec, n));
        o += HDR + n;
        off += HDR + n;
        rec += n;
        left -= n;
        first = 0;
        if (last)
            break;
    }
    *out = o;
    return 0;
}

static void unmap(wal_t *w)
{
    if (w->map)
        munmap(w->map, (size_t)(w->map_end - w->map_off));
    w->map = NULL;
    w->map_off = w->map_end = 0;
}

static int write_all(wal_t *w, const uint8_t *p, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t k = pwrite(w->fd, p + done, n - done, (off_t)(w->size + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            int e = k < 0 ? errno : ENOSPC;
            /* Take back the partial record so the log stays well-formed
             * (and drop the mapping first: no page of it may lie past the
             * end of the file). */
            unmap(w);
            if (ftruncate(w->fd, (off_t)w->size) < 0)
                w->broken = 1;
            w->alloc = w->size;
            if (e == ENOSPC || e == EDQUOT)
                return err_set(-ENOSPC, "wal %s: disk full", w->name);
            w->broken = 1;
            return err_set(-EIO, "wal %s: write failed: %s", w->name, strerror(e));
        }
        done += (size_t)k;
    }
    return 0;
}

static void write_ahead(wal_t *w);
static void map_ahead(wal_t *w);

/*
 * Appends since the last sync before the zeros ahead are mapped.  A log that
 * is synced after nearly every append gains nothing from the mapping and
 * would pay for it: each fdatasync write-protects the mapped pages again, so
 * the next store faults.
 */
#define MAP_AFTER 32

/*
 * Records larger than this keep pwrite even when the log is mapped: one
 * system call costs little next to their size, while a copy into the
 * mapping faults once per page.  They also do not top up the zeros ahead,
 * which a long run of them (a large file streamed in) would otherwise write
 * twice, zeros first.
 */
#define MAP_RECORD_MAX 4096

static int append_typed(wal_t *w, uint8_t type, const void *rec, size_t len)
{
    if (w->broken)
        return err_set(-EIO, "wal %s: an earlier write failed; the log is closed to writes", w->name);
    size_t n = 0;
    /* A sync since the last record: a SYNCED fragment before this one says
     * how far the log was durable (see the comment at the top). */
    uint8_t mark[SYNCED_LEN];
    uint64_t marking = w->synced > w->marked && type != T_HEADER ? w->synced : 0;
    /* It is one fragment, never split: where the block has no room for it,
     * the next record after this one carries it. */
    uint64_t room = WAL_BLOCK_SIZE - w->size % WAL_BLOCK_SIZE;
    if (room >= HDR && room < HDR + SYNCED_LEN)
        marking = 0;
    if (marking) {
        enc_u64(mark, marking);
        if (encode(w, T_SYNCED, mark, sizeof mark, &n) < 0)
            return err_set(-ENOMEM, "wal %s: out of memory for a record of %zu bytes", w->name, len);
    }
    if (encode(w, type, rec, len, &n) < 0)
        return err_set(-ENOMEM, "wal %s: out of memory for a record of %zu bytes", w->name, len);
    if (w->can_map && w->prealloc && n <= MAP_RECORD_MAX) {
        if (w->alloc < w->size + n + w->prealloc / 4)
            write_ahead(w);
        if (!w->map && w->streak >= MAP_AFTER)
            map_ahead(w);
    }
    int rc = 0;
    if (w->map && n <= MAP_RECORD_MAX && w->size >= w->map_off && w->size + n <= w->map_end)
        memcpy(w->map + (w->size - w->map_off), w->buf, n);
    else
        rc = write_all(w, w->buf, n);
    if (rc == 0) {
        w->size += n;
        if (marking)
            w->marked = marking;
        if (w->alloc < w->size)
            w->alloc = w->size;
        w->dirty = 1;
        w->streak++;
        if (w->size - w->behind >= WRITE_BEHIND && !w->map) {
            /* Best effort; the fsync to come is what counts. */
            (void)sync_file_range(w->fd, (off_t)w->behind, (off_t)(w->size - w->behind),
                                  SYNC_FILE_RANGE_WRITE);
            w->behind = w->size;
        }
    }
    if (w->cap > (4u << 20)) {   /* do not keep a huge buffer after a huge record */
        free(w->buf);
        w->buf = NULL;
        w->cap = 0;
    }
    return rc;
}

int wal_append(wal_t *w, const void *rec, size_t len)
{
    return append_typed(w, T_FULL, rec, len);
}

void wal_note_synced(wal_t *w, uint64_t upto)
{
    if (upto > w->synced && upto <= w->size)
        w->synced = upto;
}

void wal_set_prealloc(wal_t *w, size_t bytes)
{
    w->prealloc = bytes;
}

/* Extend the zeros past the last record to PREALLOC bytes.  Best effort: on
 * any failure the file is cut back to where it was and writing ahead stops. */
static void write_ahead(wal_t *w)
{
    static const uint8_t zeros[65536];
    uint64_t from = w->alloc, to = w->size + w->prealloc;
    while (from < to) {
        size_t n = to - from < sizeof zeros ? (size_t)(to - from) : sizeof zeros;
        ssize_t k = pwrite(w->fd, zeros, n, (off_t)from);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            unmap(w);
            if (ftruncate(w->fd, (off_t)w->alloc) < 0)
                w->broken = 1;
            w->prealloc = 0;
            return;
        }
        from += (uint64_t)k;
    }
    w->alloc = to;
    if (w->map)
        map_ahead(w);   /* take in the new zeros */
}

/*
 * Map the zeros ahead, from the page of the next record to the end of the
 * file, so that appends copy their records into the mapping instead of
 * calling pwrite.  The bytes land in the same page cache, so they survive
 * the process being killed exactly as written ones do, and fdatasync
 * flushes them.  Only zeros already written with pwrite are mapped: the
 * filesystem has reserved their blocks, so a store into the mapping never
 * meets a full disk (which would raise SIGBUS instead of returning ENOSPC).
 * On any failure appends just go on with pwrite.
 */
static void map_ahead(wal_t *w)
{
    unmap(w);
    if (w->alloc <= w->size)
        return;
    uint64_t off = w->size & ~(uint64_t)(sysconf(_SC_PAGESIZE) - 1);
    void *m = mmap(NULL, (size_t)(w->alloc - off), PROT_READ | PROT_WRITE, MAP_SHARED, w->fd,
                   (off_t)off);
    if (m == MAP_FAILED) {
        w->can_map = 0;
        return;
    }
    w->map = m;
    w->map_off = off;
    w->map_end = w->alloc;
    /* One call to fault in every page writable, rather than a fault per
     * page at the first store into it: appends of 140 bytes took 15% less
     * CPU.  Best effort (kernels before 5.14 do not know it). */
#ifdef MADV_POPULATE_WRITE
    (void)madvise(m, (size_t)(w->alloc - off), MADV_POPULATE_WRITE);
#endif
}

int wal_sync_start(wal_t *w)
{
    if (w->broken)
        return err_set(-EIO, "wal %s: an earlier write failed; the log is closed to writes", w->name);
    if (w->prealloc && w->alloc < w->size + w->prealloc / 4) {
        write_ahead(w);
        if (w->broken)
            return err_set(-EIO, "wal %s: cannot cut back the zeros written ahead", w->name);
    }
    /* Unmapped, the pages are flushed as plain dirty pages; see MAP_AFTER. */
    unmap(w);
    w->streak = 0;
    return 0;
}

int wal_sync_fd(int fd, uint64_t lognum)
{
    if (fdatasync(fd) < 0)
        return err_set(-EIO, "wal %06llu.log: fsync failed: %s", (unsigned long long)lognum, strerror(errno));
    return 0;
}

int wal_sync(wal_t *w)
{
    int rc = wal_sync_start(w);
    if (rc)
        return rc;
    if (fdatasync(w->fd) < 0) {
        w->broken = 1;
        return err_set(-EIO, "%s: fsync failed: %s", w->name, strerror(errno));
    }
    w->dirty = 0;
    w->behind = w->size;
    w->synced = w->size;
    return 0;
}

void wal_set_name(wal_t *w, const char *name)
{
    snprintf(w->name, sizeof w->name, "%s", name);
}

uint64_t wal_size(const wal_t *w) { return w->size; }
int wal_fd(const wal_t *w) { return w->fd; }
int wal_dirty(const wal_t *w) { return w->dirty; }
uint64_t wal_number(const wal_t *w) { return w->num; }

int wal_close(wal_t *w)
{
    if (!w)
        return 0;
    unmap(w);
    if (w->alloc > w->size && !w->broken && ftruncate(w->fd, (off_t)w->size) < 0) {
        /* The zeros stay: readers take them as the end of the log. */
    }
    int rc = close(w->fd) < 0 ? -EIO : 0;
    free(w->buf);
    free(w);
    return rc;
}

int wal_sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return err_set(errno == ENOENT ? -ENOENT : errno == EACCES ? -EACCES : -EIO,
                       "directory %s: cannot open: %s", dir, strerror(errno));
    int rc = fsync(fd) < 0 ? err_set(-EIO, "directory %s: fsync failed: %s", dir, strerror(errno)) : 0;
    close(fd);
    return rc;
}

/*
 * May appends go through a shared mapping of zeros written ahead?  Only on
 * filesystems that allocate (or reserve) blocks when the zeros are written
 * and then overwrite them in place: ext4, xfs, tmpfs.  A copy-on-write
 * filesystem needs new blocks for every overwrite, so a full disk would
 * surface as SIGBUS; those, and anything unknown, use pwrite.
 */
static int mappable(int fd)
{
    struct statfs s;
    if (fstatfs(fd, &s) < 0)
        return 0;
    switch ((unsigned long)s.f_type) {
    case 0xEF53:        /* ext2/3/4 */
    case 0x58465342:    /* xfs */
    case 0x01021994:    /* tmpfs */
        return 1;
    default:
        return 0;
    }
}

int wal_create(const char *dir, uint64_t lognum, wal_t **out)
{
    char path[4096];
    wal_path(path, sizeof path, dir, lognum);
    wal_t *w = calloc(1, sizeof *w);
    if (!w)
        return err_set(-ENOMEM, "out of memory");
    w->num = lognum;
    w->seed = num_seed(lognum);
    snprintf(w->name, sizeof w->name, "%06llu.log", (unsigned long long)lognum);
    w->fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        int e = errno;
        free(w);
        return err_set(-e, "wal %s: cannot create: %s", base(path), strerror(e));
    }
    w->can_map = mappable(w->fd);
    uint8_t h[HEADER_LEN];
    memcpy(h, MAGIC, 8);
    enc_u32(h + 8, WAL_VERSION);
    enc_u64(h + 12, lognum);
    int rc = append_typed(w, T_HEADER, h, sizeof h);
    if (rc == 0)
        rc = wal_sync(w);
    w->marked = w->synced;      /* a header is always durable (see replay) */
    if (rc == 0 && (rc = wal_sync_dir(dir)) < 0)
        rc = err_set(-EIO, "wal %s: fsync of the directory failed", w->name);
    if (rc) {
        wal_close(w);
        unlink(path);
        return rc;
    }
    *out = w;
    return 0;
}

/* ---- reading ---- */

struct reader {
    const uint8_t *p;
    uint64_t size;
    uint32_t seed;
};

static uint64_t data_after(const struct reader *r, uint64_t x);

/* Is there a well-formed, checksummed data fragment at offset Q? */
static int frag_at(const struct reader *r, uint64_t q)
{
    uint64_t avail = WAL_BLOCK_SIZE - q % WAL_BLOCK_SIZE;
    if (avail < HDR || q + HDR > r->size)
        return 0;
    const uint8_t *h = r->p + q;
    uint8_t type = h[6];
    size_t n = (size_t)h[4] | (size_t)h[5] << 8;
    if (type < T_FULL || (type > T_LAST && type != T_SYNCED) || HDR + n > avail || q + HDR + n > r->size)
        return 0;
    return frag_crc(r->seed, type, h + HDR, n) == dec_u32(h);
}

/*
 * Does a well-formed SYNCED fragment after offset X say the log was durable
 * past X?  Then whatever fails at X was on disk before the crash: damage,
 * not a tear.  Walks the well-formed fragments after X, skipping over any
 * stretch that is not one.
 */
static int synced_past(const struct reader *r, uint64_t x)
{
    uint64_t q = data_after(r, x);
    while (q < r->size) {
        uint64_t avail = WAL_BLOCK_SIZE - q % WAL_BLOCK_SIZE;
        if (avail < HDR) {
            q += avail;
            continue;
        }
        if (!frag_at(r, q)) {
            q = data_after(r, q);
            continue;
        }
        const uint8_t *h = r->p + q;
        size_t n = (size_t)h[4] | (size_t)h[5] << 8;
        if (h[6] == T_SYNCED && n == SYNCED_LEN && dec_u64(h + HDR) > x)
            return 1;
        q += HDR + n;
    }
    return 0;
}

/* Where the first well-formed fragment after offset X is (r->size when
 * there is none).  See the comment at the top. */
static uint64_t data_after(const struct reader *r, uint64_t x)
{
    uint64_t block_end = (x / WAL_BLOCK_SIZE + 1) * WAL_BLOCK_SIZE;
    for (uint64_t q = x + 1; q < block_end && q < r->size; q++)
        if (frag_at(r, q))
            return q;
    for (uint64_t q = block_end; q < r->size; q += WAL_BLOCK_SIZE)
        if (frag_at(r, q))
            return q;
    return r->size;
}

static int all_zero(const uint8_t *p, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/*
 * Does the failing fragment at X meet a page that never reached the disk?
 * The kernel writes a log's dirty pages back in no set order, so after a
 * power cut a page still holding the zeros written ahead can sit before
 * pages that did reach the disk.  Nothing after such a page was synced (a
 * sync writes back every page before it returns), so in the newest log it
 * ends the log as a torn tail does.  Looked for from X to the end of the
 * fragment's claimed length, and never at or past NEXT, the first
 * well-formed fragment after X: a page that is zero from X (or from its
 * start) to its end.  (The claimed length is not checked yet: a damaged
 * one would reach into the zeros written ahead of the last record, and a
 * well-formed fragment before a page shows the damage is not that page.)
 */
#define PAGE 4096
static int unwritten_page(const struct reader *r, uint64_t x, uint64_t next)
{
    uint64_t end = x + HDR;
    if (end <= r->size)
        end += (uint64_t)r->p[x + 4] | (uint64_t)r->p[x + 5] << 8;
    uint64_t block_end = (x / WAL_BLOCK_SIZE + 1) * WAL_BLOCK_SIZE;
    if (end > block_end)
        end = block_end;
    if (end > next)
        end = next;
    if (end > r->size)
        end = r->size;
    for (uint64_t pg = x - x % PAGE; pg < end; pg += PAGE) {
        uint64_t from = pg > x ? pg : x, to = pg + PAGE < r->size ? pg + PAGE : r->size;
        if (from < to && all_zero(r->p + from, to - from))
            return 1;
    }
    return 0;
}

int wal_replay(const char *path, uint64_t lognum, int flags,
               wal_record_fn fn, void *arg, uint64_t *good_end)
{
    const char *name = base(path);
    int fd = open(path, ((flags & WAL_REPAIR) ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0)
        return err_set(-errno, "wal %s: cannot open: %s", name, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return err_set(-e, "wal %s: %s", name, strerror(e));
    }
    struct reader r = { NULL, (uint64_t)st.st_size, num_seed(lognum) };
    void *map = NULL;
    if (r.size) {
        map = mmap(NULL, r.size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            close(fd);
            return err_set(-EIO, "wal %s: cannot map: %s", name, strerror(errno));
        }
        r.p = map;
    }

    uint8_t *rec = NULL;
    size_t rlen = 0, rcap = 0;
    int in_rec = 0, rc = 0;
    uint64_t pos = 0, good = 0, rec_start = 0;
    const char *why = NULL;
    while (!why && rc == 0) {
        if (pos >= r.size) {
            if (in_rec || pos == 0)
                why = pos == 0 ? "missing header" : "truncated record";
            break;
        }
        uint64_t avail = WAL_BLOCK_SIZE - pos % WAL_BLOCK_SIZE;
        if (avail < HDR) {           /* block trailer: zeros */
            uint64_t n = avail < r.size - pos ? avail : r.size - pos;
            if (!all_zero(r.p + pos, n)) {
                why = "bad block trailer";
                break;
            }
            pos += n;
            continue;
        }
        if (r.size - pos < HDR) {
            why = "truncated fragment header";
            break;
        }
        const uint8_t *h = r.p + pos;
        size_t n = (size_t)h[4] | (size_t)h[5] << 8;
        uint8_t type = h[6];
        if (HDR + n > avail) {
            why = "bad fragment length";
            break;
        }
        if (pos + HDR + n > r.size) {
            why = "truncated fragment";
            break;
        }
        if (frag_crc(r.seed, type, h + HDR, n) != dec_u32(h)) {
            why = "bad checksum";
            break;
        }
        if ((pos == 0) != (type == T_HEADER) || type > T_SYNCED || type == T_ZERO) {
            why = pos == 0 ? "missing header" : "bad fragment type";
            break;
        }
        if (type == T_SYNCED) {
            /* Between records only; it says how far the log was durable. */
            if (in_rec || n != SYNCED_LEN) {
                why = "bad fragment type";
                break;
            }
            pos += HDR + n;
            good = pos;
            continue;
        }
        if (type == T_HEADER) {
            if (n != HEADER_LEN || memcmp(h + HDR, MAGIC, 8) != 0) {
                rc = err_set(-EIO, "wal %s: not a log file (bad magic)", name);
            } else if (dec_u32(h + HDR + 8) < 1 || dec_u32(h + HDR + 8) > WAL_VERSION) {
                rc = err_set(-EIO, "wal %s: unsupported format version %u", name, dec_u32(h + HDR + 8));
            } else if (dec_u64(h + HDR + 12) != lognum) {
                rc = err_set(-EIO, "wal %s: header names log %llu", name,
                             (unsigned long long)dec_u64(h + HDR + 12));
            }
            pos += HDR + n;
            good = pos;
            continue;
        }
        if ((type == T_FULL || type == T_FIRST) == in_rec) {
            why = "fragment out of order";
            break;
        }
        if (type == T_FIRST || type == T_FULL) {
            rec_start = pos;
            rlen = 0;
        }
        if (type != T_FULL) {
            if (rlen + n > rcap) {
                size_t cap = rcap ? rcap : 65536;
                while (cap < rlen + n)
                    cap *= 2;
                uint8_t *np = realloc(rec, cap);
                if (!np) {
                    rc = err_set(-ENOMEM, "wal %s: out of memory for a record", name);
                    break;
                }
                rec = np;
                rcap = cap;
            }
            if (n)   /* a record may start with an empty fragment: rec may still be NULL */
                memcpy(rec + rlen, h + HDR, n);
            rlen += n;
        }
        pos += HDR + n;
        in_rec = type == T_FIRST || type == T_MIDDLE;
        if (type == T_FULL || type == T_LAST) {
            good = pos;
            if (fn)
                rc = fn(arg, type == T_FULL ? h + HDR : rec, type == T_FULL ? n : rlen, rec_start);
        }
    }

    if (why && rc == 0) {
        uint64_t at = pos;
        /* wal_create makes the header durable before any record is written,
         * so a bad header in a file longer than one is damage, not a tear. */
        int torn_header = good == 0 && r.size < HDR + HEADER_LEN;
        uint64_t next = data_after(&r, at);
        int tail_only = good > 0 ? next >= r.size : torn_header;
        /* Zeros after the header and whole records are space written ahead
         * (wal_set_prealloc): the end of any log. */
        int zeros = all_zero(r.p + good, r.size - good);
        int hole = (flags & WAL_NEWEST) && good > 0 && unwritten_page(&r, at, next);
        /* A later fragment saying the log was durable past the failure
         * overrules a tail or a page taken for a tear. */
        if (!zeros && (tail_only || hole) && synced_past(&r, at))
            tail_only = hole = 0;
        if ((good > 0 && zeros) || ((flags & WAL_NEWEST) && (zeros || tail_only || hole))) {
            /* A write torn by a crash: drop it. */
            if (flags & WAL_REPAIR) {
                if (good == 0) {
                    if (unlink(path) < 0)
                        rc = err_set(-EIO, "wal %s: cannot remove an empty log: %s", name, strerror(errno));
                } else if (ftruncate(fd, (off_t)good) < 0 || fdatasync(fd) < 0) {
                    rc = err_set(-EIO, "wal %s: cannot cut the torn tail: %s", name, strerror(errno));
                }
            }
        } else {
            rc = err_set(-EIO, "wal %s: %s at offset %llu", name, why, (unsigned long long)at);
        }
    }
    if (good_end)
        *good_end = good;
    free(rec);
    if (map)
        munmap(map, r.size);
    close(fd);
    return rc;
}
