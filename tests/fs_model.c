/*
 * fs_model.c - a randomized model test of a mounted filesystem against a
 * native directory: the same random sequence of POSIX calls runs in both
 * (creates, opens, writes at random offsets and past the end, reads,
 * truncations, appends, fsyncs, unlinks of open files, mkdir, rmdir,
 * renames of files and directories, RENAME_NOREPLACE, RENAME_EXCHANGE, hard links, symbolic
 * links, chmod, utimensat with fixed times, user.* extended attributes,
 * FIFOs, fallocate: allocating, punching holes, zeroing ranges), over a
 * small namespace so that collisions and errors are frequent.  Every
 * call's result and errno must agree, and so must the
 * bytes and attributes it returns; every 200 operations, after each
 * remount and at the end the two trees are compared whole: names, types,
 * sizes, contents, permission bits, symbolic link targets, link counts of
 * files, user.* attributes, and modification times where they are exact
 * (set by utimensat and not moved since).
 *
 *   fs_model MOUNT_DIR NATIVE_DIR OPS SEED [REMOUNT_CMD]
 *
 * MOUNT_DIR and NATIVE_DIR are made if missing and must be empty.
 * REMOUNT_CMD (run with system()) is run every 2,000 operations with every
 * descriptor closed; it must unmount and mount the store again, and the
 * trees are compared after it.  Prints the seed; on the first difference
 * it prints the operation, both results and the last operations, and
 * exits 1.
 *
 * What a FUSE mount of stashfs shows differently by design is not
 * compared: directory link counts and sizes, st_blocks, inode numbers,
 * atime and ctime.  Its documented behaviours are allowed for (README):
 * the kernel knows each name of a hard-linked file as an inode of its own,
 * and the daemon drops the caches of the other names from another thread,
 * so what is read or stat'ed through those may lag for moments (such
 * calls are retried for up to a second), an append through one might land
 * at a stale end (none is made), and each name of a FIFO is a pipe of its
 * own (none with two names is opened); a name removed while the file is
 * open counts in the link count of its other names until the last close.
 * RENAME_EXCHANGE swaps files, directories, a file with a directory.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define MAXVAL  (200 * 1024)    /* the longest write: several 64 KiB chunks */
#define MAXOFF  (320 * 1024)    /* writes and truncations start below this */
#define BUFCAP  (MAXOFF + MAXVAL + 4096)
#define NSLOT   6               /* descriptors held open at once */
#define HIST    20
#define TREE_EVERY    200
#define REMOUNT_EVERY 2000
#define FIXED_BEFORE  1300000000L   /* times set by utimensat are older than this */

static const char *root[2];     /* [0] the mount, [1] the native directory */
static const char *remount_cmd;
static uint64_t rng;
static long opno;
static int exact_times = 1;     /* the clock is past FIXED_BEFORE */

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static unsigned pick(unsigned n)
{
    return (unsigned)(rnd() % n);
}

/* The namespace: a few directories up to three levels deep. */
static const char *names[] = {
    "a", "b", "c", "d", "e", "f", "g", "h",
    "a/a", "a/b", "a/c", "a/f", "b/a", "b/b", "b/f", "c/a", "d/a",
    "a/a/a", "a/a/b", "a/b/a", "b/a/a", "b/b/a", "c/a/a",
};
#define NNAMES (sizeof names / sizeof names[0])

static const char *P(int s, const char *rel)
{
    static char buf[8][4096];
    static int i;
    i = (i + 1) % 8;
    snprintf(buf[i], sizeof buf[i], "%s/%s", root[s], rel);
    return buf[i];
}

/* ---- descriptors held open, and what the model knows of their files ---- */

static struct slot {
    int open;
    int fd[2];
    int flags;
    int lost;           /* a name of its file was removed while it was open */
    int holds;          /* the mount may still keep that name (held) */
    ino_t ino;          /* the native file's inode number */
    int special;        /* a directory or a FIFO: not kept by the daemon
                         * once removed (see differ) */
    char path[64];      /* the name it was opened by */
} slots[NSLOT];

/* Native inode numbers of files that have had more than one name: the
 * mount's caches of their other names may lag for moments. */
static ino_t *linked;
static size_t nlinked, caplinked;

static int is_linked(ino_t ino)
{
    for (size_t i = 0; i < nlinked; i++)
        if (linked[i] == ino)
            return 1;
    return 0;
}

static void note_linked(ino_t ino)
{
    if (is_linked(ino))
        return;
    if (nlinked == caplinked) {
        caplinked = caplinked ? 2 * caplinked : 64;
        linked = realloc(linked, caplinked * sizeof *linked);
        if (!linked) {
            perror("fs_model: realloc");
            exit(2);
        }
    }
    linked[nlinked++] = ino;
}

/* A new file has inode number INO: a removed file's that had two names,
 * perhaps.  (So the set depends only on the calls made, not on how the
 * native filesystem hands out numbers, and a seed replays exactly.) */
static void forget_linked(ino_t ino)
{
    for (size_t i = 0; i < nlinked; i++)
        if (linked[i] == ino) {
            linked[i] = linked[--nlinked];
            return;
        }
}

/* Whether the mount may count a removed name of native file INO in its
 * other names' link count: a name was removed while the file was open, and
 * the file has been open ever since (the name goes at its last close, by
 * whichever name it was opened). */
static int held(ino_t ino)
{
    for (int i = 0; i < NSLOT; i++)
        if (slots[i].open && slots[i].holds && slots[i].ino == ino)
            return 1;
    return 0;
}

/* Native REL is about to lose that name (unlink, rmdir, rename over it):
 * the descriptors open on it are marked. */
static void losing(const char *rel)
{
    struct stat st;
    if (lstat(P(1, rel), &st) != 0)
        return;
    for (int i = 0; i < NSLOT; i++) {
        if (slots[i].open && slots[i].ino == st.st_ino && !slots[i].lost) {
            slots[i].lost = slots[i].holds = 1;
            if (!S_ISDIR(st.st_mode) && st.st_nlink > 1)
                note_linked(st.st_ino);
        }
    }
}

/* ---- operations ---- */

enum kind {
    OPEN, WRITE, READ, FTRUNC, FSYNC, CLOSE, FSTAT, FCHMOD, FUTIMENS, PUT, TRUNC, UNLINK, MKDIR,
    RMDIR, RENAME, LINK, SYMLINK, READLINK, CHMOD, UTIMENS, SETXATTR, GETXATTR, REMOVEXATTR,
    LISTXATTR, STAT, MKFIFO, FALLOC, NKINDS
};
static const char *kind_name[NKINDS] = {
    "open", "write", "read", "ftruncate", "fsync", "close", "fstat", "fchmod", "futimens", "put",
    "truncate", "unlink", "mkdir", "rmdir", "rename", "link", "symlink", "readlink", "chmod",
    "utimensat", "setxattr", "getxattr", "removexattr", "listxattr", "stat", "mkfifo", "fallocate",
};
/* How often each is chosen, out of the sum. */
static const unsigned weight[NKINDS] = {
    [OPEN] = 10, [WRITE] = 14, [READ] = 8, [FTRUNC] = 3, [FSYNC] = 2, [CLOSE] = 6, [FSTAT] = 3,
    [FCHMOD] = 1, [FUTIMENS] = 1, [PUT] = 7, [TRUNC] = 3, [UNLINK] = 6, [MKDIR] = 3, [RMDIR] = 4,
    [RENAME] = 8, [LINK] = 4, [SYMLINK] = 3, [READLINK] = 2, [CHMOD] = 3, [UTIMENS] = 4,
    [SETXATTR] = 4, [GETXATTR] = 2, [REMOVEXATTR] = 2, [LISTXATTR] = 2, [STAT] = 3, [MKFIFO] = 1,
    [FALLOC] = 3,
};

struct op {
    enum kind k;
    char p1[64], p2[64];
    int slot;
    long off, len;
    int flags;          /* open, rename, xattr, utimensat flags; fsync: datasync; */
    int alt;            /* a variant: write via lseek+write, lstat, l*xattr */
    mode_t mode;
    struct timespec ts[2];
    char name[32];      /* extended attribute */
    char target[1100];  /* symbolic link */
};

struct res {
    long r;
    int e;
    const char *step;   /* the failing step of a composite call */
    size_t n;           /* bytes of data returned */
    struct stat st;
};

static unsigned char *wbuf, *rbuf[2];
static char history[HIST][1400];
static long errors_agreed, trees, remounts, retries;

static const char *errname(int e)
{
    static char buf[2][64];
    static int i;
    i ^= 1;
    if (!e)
        return "0";
    snprintf(buf[i], sizeof buf[i], "%s (%d)", strerrorname_np(e) ? strerrorname_np(e) : "?", e);
    return buf[i];
}

static const mode_t file_modes[] = {0644, 0600, 0755, 0400, 0444, 0000, 0640, 04755, 02644, 0777};
static const mode_t dir_modes[] = {0755, 0700, 0711, 0777, 01777, 02755, 0750};

static const char *targets[] = {"a", "b", "a/a", "zz", "a/b/a", "c/a/a", "", "e", "b/b"};

static void describe(const struct op *o, char *d, size_t cap)
{
    int n = snprintf(d, cap, "%s", kind_name[o->k]);
    switch (o->k) {
    case OPEN:
    case PUT:
        n += snprintf(d + n, cap - (size_t)n, " %s flags 0%o mode 0%o", o->p1, (unsigned)o->flags,
                      (unsigned)o->mode);
        if (o->k == PUT)
            snprintf(d + n, cap - (size_t)n, " write off %ld len %ld", o->off, o->len);
        else
            snprintf(d + n, cap - (size_t)n, " -> slot %d", o->slot);
        break;
    case WRITE:
        snprintf(d + n, cap - (size_t)n, " slot %d (%s) off %ld len %ld%s", o->slot, slots[o->slot].path,
                 o->off, o->len, o->alt ? " (lseek+write)" : "");
        break;
    case READ:
        snprintf(d + n, cap - (size_t)n, " slot %d (%s) off %ld len %ld%s", o->slot, slots[o->slot].path,
                 o->off, o->len, o->alt ? " (lseek+read)" : "");
        break;
    case FTRUNC:
        snprintf(d + n, cap - (size_t)n, " slot %d (%s) to %ld", o->slot, slots[o->slot].path, o->off);
        break;
    case FALLOC:
        snprintf(d + n, cap - (size_t)n, " slot %d (%s) mode 0x%x off %ld len %ld", o->slot, slots[o->slot].path,
                 (unsigned)o->flags, o->off, o->len);
        break;
    case FSYNC:
        snprintf(d + n, cap - (size_t)n, " slot %d (%s)%s", o->slot, slots[o->slot].path,
                 o->flags ? " (fdatasync)" : "");
        break;
    case CLOSE:
    case FSTAT:
        snprintf(d + n, cap - (size_t)n, " slot %d (%s)", o->slot, slots[o->slot].path);
        break;
    case FCHMOD:
        snprintf(d + n, cap - (size_t)n, " slot %d (%s) 0%o", o->slot, slots[o->slot].path, (unsigned)o->mode);
        break;
    case FUTIMENS:
    case UTIMENS:
        if (o->k == FUTIMENS)
            n += snprintf(d + n, cap - (size_t)n, " slot %d (%s)", o->slot, slots[o->slot].path);
        else
            n += snprintf(d + n, cap - (size_t)n, " %s flags %d", o->p1, o->flags);
        snprintf(d + n, cap - (size_t)n, " atime %ld.%09ld mtime %ld.%09ld", (long)o->ts[0].tv_sec,
                 o->ts[0].tv_nsec, (long)o->ts[1].tv_sec, o->ts[1].tv_nsec);
        break;
    case TRUNC:
        snprintf(d + n, cap - (size_t)n, " %s to %ld", o->p1, o->off);
        break;
    case UNLINK:
    case RMDIR:
        snprintf(d + n, cap - (size_t)n, " %s", o->p1);
        break;
    case LISTXATTR:
        snprintf(d + n, cap - (size_t)n, " %s%s size %ld", o->p1, o->alt ? " (l)" : "", o->len);
        break;
    case STAT:
        snprintf(d + n, cap - (size_t)n, " %s%s", o->p1, o->alt ? " (lstat)" : "");
        break;
    case MKDIR:
    case MKFIFO:
    case CHMOD:
        snprintf(d + n, cap - (size_t)n, " %s 0%o", o->p1, (unsigned)o->mode);
        break;
    case RENAME:
        snprintf(d + n, cap - (size_t)n, " %s %s%s", o->p1, o->p2,
                 o->flags == RENAME_NOREPLACE ? " RENAME_NOREPLACE" : o->flags ? " RENAME_EXCHANGE" : "");
        break;
    case LINK:
        snprintf(d + n, cap - (size_t)n, " %s %s", o->p1, o->p2);
        break;
    case SYMLINK:
        snprintf(d + n, cap - (size_t)n, " \"%.40s%s\" (%zu bytes) %s", o->target,
                 strlen(o->target) > 40 ? "..." : "", strlen(o->target), o->p1);
        break;
    case READLINK:
        snprintf(d + n, cap - (size_t)n, " %s bufsize %ld", o->p1, o->len);
        break;
    case SETXATTR:
        snprintf(d + n, cap - (size_t)n, " %s%s %s len %ld flags %d", o->p1, o->alt ? " (l)" : "", o->name,
                 o->len, o->flags);
        break;
    case GETXATTR:
        snprintf(d + n, cap - (size_t)n, " %s%s %s size %ld", o->p1, o->alt ? " (l)" : "", o->name, o->len);
        break;
    case REMOVEXATTR:
        snprintf(d + n, cap - (size_t)n, " %s%s %s", o->p1, o->alt ? " (l)" : "", o->name);
        break;
    case NKINDS:
        break;
    }
}

/* Sorts the names of a listxattr answer (their order is the filesystem's). */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void sort_names(unsigned char *buf, size_t n)
{
    char *v[512], tmp[8192];
    size_t k = 0, at = 0;
    if (n > sizeof tmp)
        return;
    for (size_t i = 0; i < n && k < 512; i += strlen((char *)buf + i) + 1)
        v[k++] = (char *)buf + i;
    qsort(v, k, sizeof v[0], cmp_str);
    for (size_t i = 0; i < k; i++) {
        size_t l = strlen(v[i]) + 1;
        memcpy(tmp + at, v[i], l);
        at += l;
    }
    memcpy(buf, tmp, at);
}

/* Runs O on side S (0: the mount, 1: native). */
static void run(int s, const struct op *o, struct res *r)
{
    const char *a = P(s, o->p1), *b = P(s, o->p2);
    int fd = o->slot >= 0 ? slots[o->slot].fd[s] : -1;
    unsigned char *buf = rbuf[s];
    long rc = 0;
    r->step = "";
    r->n = 0;
    errno = 0;
    switch (o->k) {
    case OPEN:
        rc = open(a, o->flags, o->mode);
        if (rc >= 0)
            slots[o->slot].fd[s] = (int)rc;
        break;
    case WRITE:
        if (o->alt) {
            r->step = "lseek";
            if ((rc = lseek(fd, o->off, SEEK_SET)) >= 0) {
                r->step = "write";
                rc = write(fd, wbuf, (size_t)o->len);
            }
        } else {
            rc = pwrite(fd, wbuf, (size_t)o->len, o->off);
        }
        break;
    case READ:
        if (o->alt) {
            r->step = "lseek";
            if ((rc = lseek(fd, o->off, SEEK_SET)) >= 0) {
                r->step = "read";
                rc = read(fd, buf, (size_t)o->len);
            }
        } else {
            rc = pread(fd, buf, (size_t)o->len, o->off);
        }
        r->n = rc > 0 ? (size_t)rc : 0;
        break;
    case FTRUNC:
        rc = ftruncate(fd, o->off);
        break;
    case FALLOC:
        rc = fallocate(fd, o->flags, o->off, o->len);
        break;
    case FSYNC:
        rc = o->flags ? fdatasync(fd) : fsync(fd);
        break;
    case CLOSE:
        rc = close(fd);
        break;
    case FSTAT:
        rc = fstat(fd, &r->st);
        break;
    case FCHMOD:
        rc = fchmod(fd, o->mode);
        break;
    case FUTIMENS:
        rc = futimens(fd, o->ts);
        break;
    case PUT: {
        r->step = "open";
        int f = open(a, o->flags, o->mode);
        rc = f;
        if (f >= 0) {
            r->step = "write";
            rc = pwrite(f, wbuf, (size_t)o->len, o->off);
            int e = errno;
            if (close(f) != 0 && rc >= 0) {
                r->step = "close";
                rc = -1;
            } else {
                errno = e;
            }
        }
        break;
    }
    case TRUNC:
        rc = truncate(a, o->off);
        break;
    case UNLINK:
        rc = unlink(a);
        break;
    case MKDIR:
        rc = mkdir(a, o->mode);
        break;
    case RMDIR:
        rc = rmdir(a);
        break;
    case RENAME:
        rc = o->flags ? renameat2(AT_FDCWD, a, AT_FDCWD, b, (unsigned)o->flags) : rename(a, b);
        break;
    case LINK:
        rc = link(a, b);
        break;
    case SYMLINK:
        rc = symlink(o->target, a);
        break;
    case READLINK:
        rc = readlink(a, (char *)buf, (size_t)o->len);
        r->n = rc > 0 ? (size_t)rc : 0;
        break;
    case CHMOD:
        rc = chmod(a, o->mode);
        break;
    case UTIMENS:
        rc = utimensat(AT_FDCWD, a, o->ts, o->flags);
        break;
    case SETXATTR:
        rc = o->alt ? lsetxattr(a, o->name, wbuf, (size_t)o->len, o->flags)
                    : setxattr(a, o->name, wbuf, (size_t)o->len, o->flags);
        break;
    case GETXATTR:
        rc = o->alt ? lgetxattr(a, o->name, o->len ? buf : NULL, (size_t)o->len)
                    : getxattr(a, o->name, o->len ? buf : NULL, (size_t)o->len);
        r->n = rc > 0 && o->len ? (size_t)rc : 0;
        break;
    case REMOVEXATTR:
        rc = o->alt ? lremovexattr(a, o->name) : removexattr(a, o->name);
        break;
    case LISTXATTR:
        rc = o->alt ? llistxattr(a, o->len ? (char *)buf : NULL, (size_t)o->len)
                    : listxattr(a, o->len ? (char *)buf : NULL, (size_t)o->len);
        r->n = rc > 0 && o->len ? (size_t)rc : 0;
        sort_names(buf, r->n);
        break;
    case STAT:
        rc = o->alt ? lstat(a, &r->st) : stat(a, &r->st);
        break;
    case MKFIFO:
        rc = mkfifo(a, o->mode);
        break;
    case NKINDS:
        break;
    }
    r->r = rc;
    r->e = rc < 0 ? errno : 0;
    if (o->k == OPEN && rc >= 0)
        r->r = 0;       /* descriptor numbers differ */
}

/* The attributes compared, as text.  NATIVE_INO (the native side's) says
 * whether the link count can be known. */
static void fmt_stat(const struct stat *st, ino_t native_ino, char *out, size_t cap)
{
    char t = S_ISREG(st->st_mode) ? 'f' : S_ISDIR(st->st_mode) ? 'd' : S_ISLNK(st->st_mode) ? 'l'
             : S_ISFIFO(st->st_mode) ? 'p' : '?';
    int n = snprintf(out, cap, "%c %04o", t, (unsigned)(st->st_mode & 07777));
    if (t != 'd') {
        n += snprintf(out + n, cap - (size_t)n, " size %lld", (long long)st->st_size);
        if (!held(native_ino))
            n += snprintf(out + n, cap - (size_t)n, " nlink %lu", (unsigned long)st->st_nlink);
    }
    if (exact_times && st->st_mtim.tv_sec < FIXED_BEFORE)
        snprintf(out + n, cap - (size_t)n, " mtime %lld.%09ld", (long long)st->st_mtim.tv_sec,
                 st->st_mtim.tv_nsec);
    else
        snprintf(out + n, cap - (size_t)n, " mtime now");
}

static void record(const char *d, const struct res *r)
{
    char *h = history[opno % HIST];
    int n = snprintf(h, sizeof history[0], "%ld: %s", opno, d);
    if (r)
        snprintf(h + n, sizeof history[0] - (size_t)n, " = %ld%s%s", r->r, r->e ? " " : "",
                 r->e ? errname(r->e) : "");
}

static void print_history(void)
{
    fprintf(stderr, "last operations:\n");
    for (long i = opno >= HIST ? opno - HIST + 1 : 0; i <= opno; i++)
        if (history[i % HIST][0])
            fprintf(stderr, "  %s\n", history[i % HIST]);
}

static void mismatch(const char *d, const char *what, const struct res *r, const char *t0, const char *t1)
{
    fprintf(stderr, "fs_model: MISMATCH at op %ld: %s\n  %s\n", opno, d, what);
    if (r) {
        for (int s = 0; s < 2; s++)
            fprintf(stderr, "  %-6s: returned %ld, errno %s%s%s, %zu bytes of data%s%s\n", s ? "native" : "mount",
                    r[s].r, errname(r[s].e), r[s].step[0] ? " at " : "", r[s].step, r[s].n,
                    (s ? t1 : t0) ? ", " : "", (s ? t1 : t0) ? (s ? t1 : t0) : "");
    }
    print_history();
    exit(1);
}

/* Compares R[0] and R[1]: "" when they agree, else what differs. */
static const char *differ(const struct op *o, const struct res *r, char st[2][256])
{
    static char what[256];
    st[0][0] = st[1][0] = '\0';
    /* fstat through a descriptor of a removed directory or FIFO fails with
     * ESTALE (README): libfuse's path interface cannot name it any more,
     * and the daemon keeps no handle of it (a FIFO's opens are the
     * kernel's alone). */
    if (o->k == FSTAT && slots[o->slot].lost && slots[o->slot].special && r[0].r < 0 &&
        r[0].e == ESTALE && r[1].r == 0)
        return "";
    if (r[0].r != r[1].r || r[0].e != r[1].e || strcmp(r[0].step, r[1].step))
        return "results differ";
    if (r[0].r >= 0 && (o->k == STAT || o->k == FSTAT)) {
        fmt_stat(&r[0].st, r[1].st.st_ino, st[0], sizeof st[0]);
        fmt_stat(&r[1].st, r[1].st.st_ino, st[1], sizeof st[1]);
        if (strcmp(st[0], st[1]))
            return "attributes differ";
    }
    if (r[0].n != r[1].n)
        return "data lengths differ";
    for (size_t i = 0; i < r[0].n; i++)
        if (rbuf[0][i] != rbuf[1][i]) {
            snprintf(what, sizeof what, "data differ at byte %zu: mount 0x%02x, native 0x%02x", i, rbuf[0][i],
                     rbuf[1][i]);
            return what;
        }
    return "";
}

/* Whether a difference in O's answer may be a hard-linked file's cache
 * lagging behind: only calls that read, on a file that has had two names. */
static int may_lag(const struct op *o, const struct res *r)
{
    if (o->k == READ || o->k == FSTAT)
        return is_linked(slots[o->slot].ino);
    if (o->k == STAT)
        return r[1].r == 0 && is_linked(r[1].st.st_ino);
    return 0;
}

static void step(const struct op *o)
{
    char d[1200];
    struct res r[2];
    char st[2][256];
    describe(o, d, sizeof d);
    record(d, NULL);
    /* Whether the call may make a new file (its inode number may be one
     * a removed file had: see note_linked). */
    struct stat nst;
    int creates = (o->k == OPEN || o->k == PUT) && (o->flags & O_CREAT) ? stat(P(1, o->p1), &nst) != 0
                  : o->k == MKDIR || o->k == MKFIFO || o->k == SYMLINK;
    for (int s = 0; s < 2; s++)
        run(s, o, &r[s]);
    const char *what = differ(o, r, st);
    /* A lagging cache: the mount's answer is asked again for up to 1 s. */
    for (int t = 0; what[0] && t < 1000 && may_lag(o, r); t++) {
        usleep(1000);
        run(0, o, &r[0]);
        what = differ(o, r, st);
        retries++;
    }
    record(d, &r[1]);
    if (what[0])
        mismatch(d, what, r, st[0][0] ? st[0] : NULL, st[1][0] ? st[1] : NULL);
    if (r[1].r < 0)
        errors_agreed++;
    /* A descriptor opened or closed on both sides. */
    if (o->k == OPEN && r[1].r == 0) {
        struct slot *sl = &slots[o->slot];
        sl->open = 1;
        sl->flags = o->flags;
        sl->lost = sl->holds = 0;
        sl->ino = fstat(sl->fd[1], &nst) == 0 ? nst.st_ino : 0;
        sl->holds = sl->ino && held(sl->ino);
        sl->special = sl->ino && (S_ISDIR(nst.st_mode) || S_ISFIFO(nst.st_mode));
        snprintf(sl->path, sizeof sl->path, "%s", o->p1);
    }
    if (o->k == CLOSE)
        slots[o->slot].open = 0;
    if (o->k == LINK && r[1].r == 0 && lstat(P(1, o->p2), &nst) == 0)
        note_linked(nst.st_ino);
    if (creates && (o->k == OPEN || o->k == PUT ? r[1].r >= 0 && stat(P(1, o->p1), &nst) == 0
                                                : r[1].r == 0 && lstat(P(1, o->p1), &nst) == 0))
        forget_linked(nst.st_ino);
}

/* ---- the whole tree ---- */

static char diffmsg[4096];
static int diff_lag;    /* the difference may be a hard-linked file's cache lagging */

static int cmp_name(const void *a, const void *b)
{
    return strcmp(a, b);
}

static int list_dir(int s, const char *rel, char out[][256], int cap)
{
    DIR *dir = opendir(rel[0] ? P(s, rel) : root[s]);
    int n = 0;
    if (!dir)
        return -errno;
    struct dirent *e;
    while ((e = readdir(dir)) && n < cap)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            snprintf(out[n++], 256, "%s", e->d_name);
    closedir(dir);
    qsort(out, (size_t)n, 256, cmp_name);
    return n;
}

/* A file's bytes: *N of them into a malloc'd *BUF. */
static int read_all(int s, const char *rel, unsigned char **buf, size_t *n)
{
    int fd = open(P(s, rel), O_RDONLY | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    size_t cap = 65536;
    *buf = malloc(cap);
    *n = 0;
    for (;;) {
        if (*n == cap)
            *buf = realloc(*buf, cap *= 2);
        ssize_t got = pread(fd, *buf + *n, cap - *n, (off_t)*n);
        if (got < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        if (got == 0)
            break;
        *n += (size_t)got;
    }
    close(fd);
    return 0;
}

/* The user.* attributes of REL as text (names sorted, values in hex). */
static void xattr_text(int s, const char *rel, char *out, size_t cap)
{
    char list[8192], val[4096];
    ssize_t n = llistxattr(P(s, rel), list, sizeof list);
    size_t at = 0;
    out[0] = '\0';
    if (n < 0) {
        snprintf(out, cap, "listxattr: %s", errname(errno));
        return;
    }
    sort_names((unsigned char *)list, (size_t)n);
    for (ssize_t i = 0; i < n; i += (ssize_t)strlen(list + i) + 1) {
        if (strncmp(list + i, "user.", 5))
            continue;
        ssize_t vl = lgetxattr(P(s, rel), list + i, val, sizeof val);
        at += (size_t)snprintf(out + at, cap - at, "%s=", list + i);
        if (vl < 0)
            at += (size_t)snprintf(out + at, cap - at, "(%s)", errname(errno));
        for (ssize_t j = 0; j < vl && at + 3 < cap; j++)
            at += (size_t)snprintf(out + at, cap - at, "%02x", (unsigned char)val[j]);
        if (at + 2 < cap)
            out[at++] = ' ', out[at] = '\0';
    }
}

static int tree_diff(const char *rel)
{
    static char ent[2][64][256];
    int n[2];
    for (int s = 0; s < 2; s++)
        n[s] = list_dir(s, rel, ent[s], 64);
    if (n[0] != n[1]) {
        snprintf(diffmsg, sizeof diffmsg, "directory /%s: %d entries in the mount, %d native", rel, n[0], n[1]);
        return 1;
    }
    for (int i = 0; i < n[0]; i++)
        if (strcmp(ent[0][i], ent[1][i])) {
            snprintf(diffmsg, sizeof diffmsg, "directory /%s: entry %d is \"%s\" in the mount, \"%s\" native", rel,
                     i, ent[0][i], ent[1][i]);
            return 1;
        }
    int count = n[0];
    char (*names_here)[256] = malloc((size_t)count * 256);
    memcpy(names_here, ent[1], (size_t)count * 256);
    int bad = 0;
    for (int i = 0; i < count && !bad; i++) {
        char child[512];
        snprintf(child, sizeof child, "%s%s%s", rel, rel[0] ? "/" : "", names_here[i]);
        struct stat st[2];
        int rc[2];
        for (int s = 0; s < 2; s++)
            rc[s] = lstat(P(s, child), &st[s]) == 0 ? 0 : errno;
        if (rc[0] || rc[1]) {
            snprintf(diffmsg, sizeof diffmsg, "/%s: lstat: mount %s, native %s", child, errname(rc[0]),
                     errname(rc[1]));
            bad = 1;
            break;
        }
        int dir = S_ISDIR(st[1].st_mode);
        if (!dir && st[1].st_nlink > 1)
            note_linked(st[1].st_ino);
        diff_lag = !dir && is_linked(st[1].st_ino);
        char t[2][256];
        for (int s = 0; s < 2; s++)
            fmt_stat(&st[s], st[1].st_ino, t[s], sizeof t[s]);
        if (strcmp(t[0], t[1])) {
            snprintf(diffmsg, sizeof diffmsg, "/%s: attributes: mount [%s], native [%s]", child, t[0], t[1]);
            bad = 1;
            break;
        }
        if (S_ISREG(st[1].st_mode)) {
            unsigned char *b[2] = {NULL, NULL};
            size_t len[2] = {0, 0};
            for (int s = 0; s < 2; s++)
                rc[s] = read_all(s, child, &b[s], &len[s]);
            if (rc[0] || rc[1] || len[0] != len[1] || memcmp(b[0], b[1], len[0])) {
                size_t at = 0;
                while (at < len[0] && at < len[1] && b[0][at] == b[1][at])
                    at++;
                snprintf(diffmsg, sizeof diffmsg,
                         "/%s: contents: mount %zu bytes (%s), native %zu bytes (%s), first difference at byte %zu",
                         child, len[0], errname(-rc[0]), len[1], errname(-rc[1]), at);
                bad = 1;
            }
            free(b[0]);
            free(b[1]);
        } else if (S_ISLNK(st[1].st_mode)) {
            char l[2][4200];
            ssize_t ln[2];
            for (int s = 0; s < 2; s++) {
                ln[s] = readlink(P(s, child), l[s], sizeof l[s] - 1);
                l[s][ln[s] < 0 ? 0 : ln[s]] = '\0';
            }
            if (ln[0] != ln[1] || strcmp(l[0], l[1])) {
                snprintf(diffmsg, sizeof diffmsg, "/%s: symbolic link: mount \"%.100s\", native \"%.100s\"", child,
                         l[0], l[1]);
                bad = 1;
            }
        }
        if (!bad && (S_ISREG(st[1].st_mode) || dir)) {
            static char x[2][16384];
            for (int s = 0; s < 2; s++)
                xattr_text(s, child, x[s], sizeof x[s]);
            if (strcmp(x[0], x[1])) {
                snprintf(diffmsg, sizeof diffmsg, "/%s: user xattrs: mount [%.400s], native [%.400s]", child, x[0],
                         x[1]);
                bad = 1;
            }
        }
        if (!bad && dir)
            bad = tree_diff(child);
    }
    free(names_here);
    return bad;
}

static void compare_trees(const char *why)
{
    char d[128];
    snprintf(d, sizeof d, "compare the trees (%s)", why);
    record(d, NULL);
    trees++;
    for (int t = 0;; t++) {
        diff_lag = 0;
        if (!tree_diff(""))
            return;
        if (!diff_lag || t >= 1000)
            break;
        usleep(1000);
        retries++;
    }
    mismatch(d, diffmsg, NULL, NULL, NULL);
}

/* ---- choosing operations ---- */

static const char *rand_name(void)
{
    return names[pick(NNAMES)];
}

/* Now and then a name that is a regular file (or a directory) in the
 * model, so that calls on files do not fail most of the time. */
static const char *name_of_type(mode_t type)
{
    unsigned k = pick(NNAMES);
    struct stat st;
    for (unsigned i = 0; i < NNAMES; i++) {
        const char *n = names[(k + i) % NNAMES];
        if (lstat(P(1, n), &st) == 0 && (st.st_mode & S_IFMT) == type)
            return n;
    }
    return rand_name();
}

/* An open slot; WRITABLE: one open for writing, when there is one. */
static int open_slot_for(int writable)
{
    int k = (int)pick(NSLOT);
    for (int i = 0; i < NSLOT && writable; i++) {
        struct slot *sl = &slots[(k + i) % NSLOT];
        if (sl->open && (sl->flags & O_ACCMODE) != O_RDONLY)
            return (k + i) % NSLOT;
    }
    for (int i = 0; i < NSLOT; i++)
        if (slots[(k + i) % NSLOT].open)
            return (k + i) % NSLOT;
    return -1;
}

static int free_slot(void)
{
    for (int i = 0; i < NSLOT; i++)
        if (!slots[i].open)
            return i;
    return -1;
}

static long native_size(const char *rel, int slot)
{
    struct stat st;
    int rc = slot >= 0 ? fstat(slots[slot].fd[1], &st) : stat(P(1, rel), &st);
    return rc == 0 && S_ISREG(st.st_mode) ? (long)st.st_size : 0;
}

/* Where a write, read or truncation goes: the start, the end, inside,
 * around a 64 KiB chunk boundary, past the end (a gap), anywhere. */
static long pick_off(long size)
{
    long off;
    switch (pick(6)) {
    case 0: off = 0; break;
    case 1: off = size; break;
    case 2: off = size ? (long)(rnd() % (uint64_t)size) : 0; break;
    case 3: off = (long)pick(6) * 65536 + (long)pick(201) - 100; break;
    case 4: off = size + (long)pick(70000); break;
    default: off = (long)pick(MAXOFF); break;
    }
    return off < 0 ? 0 : off > MAXOFF ? MAXOFF : off;
}

static long pick_len(void)
{
    unsigned r = pick(100);
    if (r < 55)
        return 1 + (long)pick(4096);
    if (r < 85)
        return 1 + (long)pick(65536);
    if (r < 93)
        return 65536L * (1 + pick(3));
    return 1 + (long)pick(MAXVAL);
}

/* The bytes of a write: random, text-like (compressible), zeros, or one
 * byte repeated. */
static void fill(long len)
{
    unsigned kind = pick(4);
    unsigned char c = (unsigned char)rnd();
    for (long i = 0; i < len; i++) {
        switch (kind) {
        case 0: wbuf[i] = (unsigned char)(rnd() >> 32); break;
        case 1: wbuf[i] = (unsigned char)("the quick brown fox jumps over the lazy dog "[(i + c) % 44]); break;
        case 2: wbuf[i] = 0; break;
        default: wbuf[i] = c; break;
        }
    }
}

static void pick_times(struct timespec ts[2])
{
    for (int i = 0; i < 2; i++) {
        unsigned r = pick(10);
        ts[i].tv_sec = 1000000000L + (long)pick(200000000);
        ts[i].tv_nsec = (long)pick(1000000000);
        if (r == 0)
            ts[i].tv_nsec = UTIME_NOW;
        else if (r == 1)
            ts[i].tv_nsec = UTIME_OMIT;
        if (ts[i].tv_nsec == UTIME_NOW || ts[i].tv_nsec == UTIME_OMIT)
            ts[i].tv_sec = 0;
    }
}

static const char *xattr_names[] = {"user.a", "user.b", "user.colour", "user.a_rather_long_attribute_name"};

static void gen(struct op *o)
{
    unsigned total = 0, r;
    for (int i = 0; i < NKINDS; i++)
        total += weight[i];
    r = pick(total);
    int k = 0;
    while (r >= weight[k])
        r -= weight[k++];
    memset(o, 0, sizeof *o);
    o->k = (enum kind)k;
    o->slot = -1;
    snprintf(o->p1, sizeof o->p1, "%s", rand_name());
    snprintf(o->p2, sizeof o->p2, "%s", rand_name());
    /* Calls on a descriptor need one open; an open needs a free slot. */
    int needs_fd = o->k == WRITE || o->k == READ || o->k == FTRUNC || o->k == FSYNC || o->k == CLOSE ||
                   o->k == FSTAT || o->k == FCHMOD || o->k == FUTIMENS || o->k == FALLOC;
    if (needs_fd && (o->slot = open_slot_for((o->k == WRITE || o->k == FTRUNC || o->k == FALLOC) && pick(5))) < 0)
        o->k = OPEN;
    if (pick(2) && o->k != MKDIR && o->k != SYMLINK && o->k != MKFIFO)
        snprintf(o->p1, sizeof o->p1, "%s", name_of_type(o->k == RMDIR ? S_IFDIR : S_IFREG));
    if (o->k == OPEN && (o->slot = free_slot()) < 0) {
        o->k = CLOSE;
        o->slot = open_slot_for(0);
    }
    /* An append lands where the kernel's cached size says the file ends;
     * for a file with two names that may lag behind a change through the
     * other for moments (README), so no append is made to one. */
    if (o->k == WRITE && (slots[o->slot].flags & O_APPEND) && is_linked(slots[o->slot].ino))
        o->k = FSTAT;
    /* fchmod and futimens through a descriptor of a removed directory or
     * FIFO fail with ESTALE on the mount (see differ), and would change the
     * native one alone. */
    if ((o->k == FCHMOD || o->k == FUTIMENS) && slots[o->slot].lost && slots[o->slot].special)
        o->k = FSTAT;
    /* An unlink is now and then of a name a descriptor is open on. */
    if (o->k == UNLINK && pick(3) == 0 && open_slot_for(0) >= 0)
        snprintf(o->p1, sizeof o->p1, "%s", slots[open_slot_for(0)].path);
    struct stat nst;
    switch (o->k) {
    case OPEN: {
        static const int acc[] = {O_RDONLY, O_WRONLY, O_RDWR, O_RDWR};
        o->flags = acc[pick(4)];
        if (pick(2))
            o->flags |= O_CREAT | (pick(6) == 0 ? O_EXCL : 0);
        if (o->flags & O_ACCMODE && pick(6) == 0)
            o->flags |= O_TRUNC;
        if (pick(5) == 0)
            o->flags |= O_APPEND;
        if (pick(20) == 0)
            o->flags |= O_DIRECTORY;
        if (pick(20) == 0)
            o->flags |= O_NOFOLLOW;
        /* A FIFO opens without waiting for the other end.  Not one with
         * two names: the kernel knows each name in the mount as an inode
         * of its own (README), each with a pipe of its own, so a writer
         * opening one name finds no reader of the other (ENXIO). */
        if (stat(P(1, o->p1), &nst) == 0 && S_ISFIFO(nst.st_mode))
            o->flags |= O_NONBLOCK;
        if (stat(P(1, o->p1), &nst) == 0 && S_ISFIFO(nst.st_mode) && nst.st_nlink > 1)
            o->k = STAT;
        o->mode = file_modes[pick(sizeof file_modes / sizeof file_modes[0])];
        break;
    }
    case PUT:
        o->flags = (pick(2) ? O_WRONLY : O_RDWR) | (pick(10) ? O_CREAT : 0) | (pick(3) == 0 ? O_TRUNC : 0) |
                   (pick(5) == 0 ? O_APPEND : 0) | (pick(10) == 0 ? O_EXCL : 0);
        if (stat(P(1, o->p1), &nst) == 0 && S_ISFIFO(nst.st_mode))
            o->flags |= O_NONBLOCK;
        if (stat(P(1, o->p1), &nst) == 0 && S_ISFIFO(nst.st_mode) && nst.st_nlink > 1)
            o->flags = O_RDONLY | O_NONBLOCK;   /* (see OPEN) */
        if (stat(P(1, o->p1), &nst) == 0 && is_linked(nst.st_ino))
            o->flags &= ~O_APPEND;              /* (see above) */
        o->mode = file_modes[pick(sizeof file_modes / sizeof file_modes[0])];
        o->len = pick_len();
        o->off = pick_off(o->flags & O_TRUNC ? 0 : native_size(o->p1, -1));
        if (o->len % 65536 == 0 && pick(2))
            o->off = o->off / 65536 * 65536;   /* whole chunks */
        fill(o->len);
        break;
    case WRITE:
        o->alt = pick(4) == 0;
        o->len = pick_len();
        o->off = pick_off(native_size(NULL, o->slot));
        if (o->len % 65536 == 0 && pick(2))
            o->off = o->off / 65536 * 65536;
        fill(o->len);
        break;
    case READ: {
        long size = native_size(NULL, o->slot);
        o->alt = pick(4) == 0;
        o->off = pick(4) == 0 ? (long)pick((unsigned)size + 1) : pick_off(size);
        o->len = pick(3) ? 1 + (long)pick(8192) : 1 + (long)pick(BUFCAP - 4096);
        break;
    }
    case FTRUNC:
    case TRUNC:
        o->off = pick_off(native_size(o->p1, o->k == FTRUNC ? o->slot : -1));
        break;
    case FALLOC: {
        /* The modes that keep the file's other bytes (collapsing and
         * inserting are not offered by stashfs). */
        static const int modes[] = {0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                    FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE};
        o->flags = modes[pick(5)];
        o->off = pick_off(native_size(o->p1, o->slot));
        o->len = pick_len();
        break;
    }
    case FSYNC:
        o->flags = (int)pick(2);
        break;
    case FCHMOD:
    case CHMOD:
    case MKFIFO:
        o->mode = file_modes[pick(sizeof file_modes / sizeof file_modes[0])];
        if (o->k != MKFIFO && stat(P(1, o->p1), &nst) == 0 && S_ISDIR(nst.st_mode))
            o->mode = dir_modes[pick(sizeof dir_modes / sizeof dir_modes[0])];
        if (o->k == FCHMOD && fstat(slots[o->slot].fd[1], &nst) == 0 && S_ISDIR(nst.st_mode))
            o->mode = dir_modes[pick(sizeof dir_modes / sizeof dir_modes[0])];
        break;
    case MKDIR:
        o->mode = dir_modes[pick(sizeof dir_modes / sizeof dir_modes[0])];
        break;
    case FUTIMENS:
    case UTIMENS:
        pick_times(o->ts);
        o->flags = pick(3) == 0 ? AT_SYMLINK_NOFOLLOW : 0;
        break;
    case RENAME:
        /* Now and then onto a descendant of the source (EINVAL), or onto
         * a name in the same directory. */
        if (pick(8) == 0)
            snprintf(o->p2, sizeof o->p2, "%.56s/%s", o->p1, pick(2) ? "a" : "b/a");
        o->flags = pick(4) == 0 ? RENAME_NOREPLACE : pick(4) == 0 ? RENAME_EXCHANGE : 0;
        break;
    case SYMLINK: {
        unsigned t = pick(12);
        if (t < sizeof targets / sizeof targets[0]) {
            snprintf(o->target, sizeof o->target, "%s", targets[t]);
        } else {
            /* A long target, nowhere. */
            size_t len = 100 + pick(900);
            for (size_t i = 0; i < len; i++)
                o->target[i] = i % 8 == 7 ? '/' : (char)('k' + pick(8));
            o->target[len] = '\0';
        }
        break;
    }
    case READLINK:
        o->len = pick(4) == 0 ? 1 + (long)pick(8) : 4096;
        break;
    case SETXATTR:
    case GETXATTR:
    case REMOVEXATTR:
    case LISTXATTR:
        snprintf(o->name, sizeof o->name, "%s", xattr_names[pick(sizeof xattr_names / sizeof xattr_names[0])]);
        o->alt = pick(4) == 0;
        if (o->k == SETXATTR) {
            o->len = pick(4) == 0 ? 0 : 1 + (long)pick(200);
            o->flags = pick(4) == 0 ? XATTR_CREATE : pick(4) == 0 ? XATTR_REPLACE : 0;
            fill(o->len);
        } else if (o->k == GETXATTR) {
            unsigned v = pick(4);
            o->len = v == 0 ? 0 : v == 1 ? 1 + (long)pick(8) : 4096;
        } else if (o->k == LISTXATTR) {
            unsigned v = pick(4);
            o->len = v == 0 ? 0 : v == 1 ? 1 + (long)pick(16) : 4096;
        }
        break;
    case STAT:
        o->alt = (int)pick(2);
        break;
    default:
        break;
    }
}

/* ---- before and after an operation: what the model must know ---- */

static void before(const struct op *o)
{
    if (o->k == UNLINK || o->k == RMDIR)
        losing(o->p1);
    /* The target of a rename loses its name, unless it is another name of
     * the source; but even then, when it is open, the mount moves it aside
     * (libfuse hides it before it asks for the rename), and counts that
     * name in the link count until the last close. */
    if (o->k == RENAME && !o->flags)
        losing(o->p2);
}

static void close_all(void)
{
    for (int i = 0; i < NSLOT; i++)
        if (slots[i].open) {
            struct op o = {.k = CLOSE, .slot = i};
            step(&o);
        }
}

int main(int argc, char **argv)
{
    if (argc < 5 || argc > 6) {
        fprintf(stderr, "usage: fs_model MOUNT_DIR NATIVE_DIR OPS SEED [REMOUNT_CMD]\n");
        return 2;
    }
    root[0] = argv[1];
    root[1] = argv[2];
    long ops = atol(argv[3]);
    rng = strtoull(argv[4], NULL, 10);
    uint64_t seed = rng;
    remount_cmd = argc > 5 ? argv[5] : NULL;
    if (!rng)
        rng = 1;
    printf("fs_model: seed %llu\n", (unsigned long long)seed);
    printf("fs_model: %ld operations in %s against %s (replay: fs_model MOUNT_DIR NATIVE_DIR %ld %llu%s)\n", ops,
           root[0], root[1], ops, (unsigned long long)seed, remount_cmd ? " REMOUNT_CMD" : "");
    fflush(stdout);
    for (int s = 0; s < 2; s++) {
        char tmp[2][256];
        if (mkdir(root[s], 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "fs_model: mkdir %s: %s\n", root[s], strerror(errno));
            return 2;
        }
        if (list_dir(s, "", tmp, 2) != 0) {
            fprintf(stderr, "fs_model: %s is not an empty directory\n", root[s]);
            return 2;
        }
    }
    umask(022);
    exact_times = time(NULL) > FIXED_BEFORE + 100000000L;
    wbuf = malloc(BUFCAP);
    rbuf[0] = malloc(BUFCAP);
    rbuf[1] = malloc(BUFCAP);
    if (!wbuf || !rbuf[0] || !rbuf[1]) {
        fprintf(stderr, "fs_model: out of memory\n");
        return 2;
    }
    struct timeval t0, t1;
    gettimeofday(&t0, NULL);
    for (opno = 0; opno < ops; opno++) {
        struct op o;
        gen(&o);
        before(&o);
        step(&o);
        if ((opno + 1) % REMOUNT_EVERY == 0 && remount_cmd) {
            close_all();
            record("remount", NULL);
            fflush(stdout);
            int rc = system(remount_cmd);
            if (rc != 0) {
                fprintf(stderr, "fs_model: op %ld: the remount command failed (status %d): %s\n", opno, rc,
                        remount_cmd);
                print_history();
                return 1;
            }
            remounts++;
            compare_trees("after a remount");
        } else if ((opno + 1) % TREE_EVERY == 0) {
            compare_trees("periodic");
        }
    }
    close_all();
    compare_trees("at the end");
    gettimeofday(&t1, NULL);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_usec - t0.tv_usec) / 1e6;
    printf("fs_model: %ld operations passed (seed %llu): %ld failed alike, %ld tree comparisons, %ld remounts, "
           "%ld retries of a lagging cache, %.1f s\n",
           ops, (unsigned long long)seed, errors_agreed, trees, remounts, retries, secs);
    return 0;
}
