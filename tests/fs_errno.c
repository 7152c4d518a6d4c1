/*
 * fs_errno.c - the errors a POSIX program sees on a stashfs mount, one call
 * at a time, and the file semantics around them (O_TRUNC, O_APPEND, gaps,
 * truncation, an unlinked file still open, RENAME_NOREPLACE), and directory
 * streams (readdir in batches, telldir/seekdir, removals while reading), and
 * the times of directories whose entries change.
 * Usage: fs_errno MOUNTPOINT (an empty, freshly mounted store).  Prints each
 * failure and exits 1 if there was any.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

static int fails;
static char m[4096];

static const char *P(const char *rel)
{
    static char buf[4][8192];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", m, rel);
    return buf[i];
}

/* Expect call result R to be -1 with errno WANT (or success when WANT 0). */
#define EXPECT(what, r, want)                                                              \
    do {                                                                                   \
        errno = 0;                                                                         \
        long r_ = (long)(r);                                                               \
        int e_ = errno;                                                                    \
        if ((want) == 0 ? r_ < 0 : (r_ != -1 || e_ != (want))) {                           \
            printf("FAIL: %s: returned %ld, errno %s (wanted %s)\n", what, r_, strerror(e_), \
                   (want) ? strerror(want) : "success");                                   \
            fails++;                                                                       \
        }                                                                                  \
    } while (0)

static void put(const char *rel, const char *text)
{
    int fd = open(P(rel), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) || close(fd) < 0) {
        printf("FAIL: writing %s: %s\n", rel, strerror(errno));
        fails++;
    }
}

static void expect_content(const char *what, const char *rel, const char *want, size_t n)
{
    char buf[256];
    int fd = open(P(rel), O_RDONLY);
    ssize_t got = fd < 0 ? -1 : read(fd, buf, sizeof buf);
    if (fd >= 0)
        close(fd);
    if (got != (ssize_t)n || memcmp(buf, want, n) != 0) {
        printf("FAIL: %s: read %zd bytes\n", what, got);
        fails++;
    }
}

/*
 * Directory streams over a directory of 3,000 entries (files of sizes
 * i % 97, directories with and without entries, a symlink), read in many
 * batches: every name exactly once with the right type and size; telldir
 * and seekdir to any earlier place give the same entries again; entries
 * removed while the directory is being read never make another entry appear
 * twice or go missing.
 */
#define DN 3000
static int dir_seen[DN + 10];

static int entry_index(const char *name)
{
    if (name[0] == 'e' && name[1] >= '0' && name[1] <= '9')
        return atoi(name + 1);
    if (!strcmp(name, "sub")) return DN;
    if (!strcmp(name, "subfull")) return DN + 1;
    if (!strcmp(name, "lnk")) return DN + 2;
    if (!strcmp(name, ".")) return DN + 3;
    if (!strcmp(name, "..")) return DN + 4;
    return -1;
}

static void dir_streams(void)
{
    char rel[300];
    EXPECT("mkdir big", mkdir(P("big"), 0755), 0);
    for (int i = 0; i < DN; i++) {
        snprintf(rel, sizeof rel, "big/e%05d", i);
        char text[100];
        memset(text, 'a' + i % 26, sizeof text);
        int fd = open(P(rel), O_WRONLY | O_CREAT | O_EXCL, 0600 | (i % 2 ? 044 : 0));
        if (fd < 0 || write(fd, text, (size_t)(i % 97)) != i % 97 || close(fd) < 0) {
            printf("FAIL: creating %s: %s\n", rel, strerror(errno));
            fails++;
            return;
        }
    }
    EXPECT("mkdir big/sub", mkdir(P("big/sub"), 0700), 0);
    EXPECT("mkdir big/subfull", mkdir(P("big/subfull"), 0755), 0);
    put("big/subfull/x", "x");
    EXPECT("symlink in big", symlink("e00001", P("big/lnk")), 0);

    /* One whole listing, and the attributes readdir brought along. */
    DIR *d = opendir(P("big"));
    if (!d) {
        printf("FAIL: opendir big: %s\n", strerror(errno));
        fails++;
        return;
    }
    memset(dir_seen, 0, sizeof dir_seen);
    static long pos[DN + 10];
    static int order[DN + 10];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        int i = entry_index(de->d_name);
        if (i < 0 || dir_seen[i]++) {
            printf("FAIL: readdir gave %s %s\n", de->d_name, i < 0 ? "(unknown)" : "twice");
            fails++;
            continue;
        }
        pos[n] = telldir(d);
        order[n++] = i;
        struct stat st;
        snprintf(rel, sizeof rel, "big/%s", de->d_name);
        if (i < DN && (lstat(P(rel), &st) != 0 || st.st_size != i % 97 || !S_ISREG(st.st_mode) ||
                       (st.st_mode & 0777) != (mode_t)(0600 | (i % 2 ? 044 : 0)) || de->d_type != DT_REG)) {
            printf("FAIL: %s: size %lld mode %o type %d\n", rel, (long long)st.st_size, st.st_mode, de->d_type);
            fails++;
        }
        if ((i == DN || i == DN + 1) && de->d_type != DT_DIR) {
            printf("FAIL: %s: type %d, not a directory\n", rel, de->d_type);
            fails++;
        }
        if (i == DN + 2 && de->d_type != DT_LNK) {
            printf("FAIL: lnk: type %d, not a symlink\n", de->d_type);
            fails++;
        }
    }
    if (n != DN + 5) {
        printf("FAIL: listed %d entries of %d\n", n, DN + 5);
        fails++;
    }
    /* seekdir back to places telldir gave: the same entries follow. */
    for (int t = 0; t < 20 && n == DN + 5; t++) {
        int at = (t * 997) % (n - 1);
        seekdir(d, pos[at]);
        for (int k = at + 1; k < at + 40 && k < n; k++) {
            de = readdir(d);
            if (!de || entry_index(de->d_name) != order[k]) {
                printf("FAIL: after seekdir to entry %d, entry %d is %s\n", at, k, de ? de->d_name : "missing");
                fails++;
                break;
            }
        }
    }
    rewinddir(d);
    int again = 0;
    while (readdir(d))
        again++;
    if (again != n) {
        printf("FAIL: after rewinddir %d entries, not %d\n", again, n);
        fails++;
    }
    closedir(d);

    /* Remove every third file while reading: each entry still there at
     * the end was seen exactly once. */
    d = opendir(P("big"));
    memset(dir_seen, 0, sizeof dir_seen);
    int removed = 0;
    while (d && (de = readdir(d))) {
        int i = entry_index(de->d_name);
        if (i >= 0)
            dir_seen[i]++;
        if (i >= 0 && i < DN && i % 100 == 0) {
            for (int j = i + 3; j < i + 100 && j < DN; j += 3) {
                snprintf(rel, sizeof rel, "big/e%05d", j);
                removed += unlink(P(rel)) == 0;
            }
        }
    }
    if (d)
        closedir(d);
    for (int i = 0; i < DN + 5; i++) {
        int gone = i < DN && i % 100 >= 3 && (i % 100) % 3 == 0;
        if (dir_seen[i] > 1 || (!gone && dir_seen[i] != 1)) {
            printf("FAIL: while removing, entry %d seen %d times\n", i, dir_seen[i]);
            fails++;
            break;
        }
    }
    if (removed < DN / 4) {
        printf("FAIL: removed only %d files\n", removed);
        fails++;
    }

    /* Rename the directory while reading it, to a name sorting before its
     * own and then to one after: the stream goes on from where it was,
     * every entry once (it went on from the old name's keys, listing
     * entries twice or ending early). */
    int total = 0;
    if ((d = opendir(P("big")))) {
        while (readdir(d))
            total++;
        closedir(d);
    }
    const char *names[3] = {"big", "a-big", "zz-big"};
    for (int r = 1; r < 3; r++) {
        d = opendir(P(names[r - 1]));
        memset(dir_seen, 0, sizeof dir_seen);
        int got = 0, twice = 0;
        while (d && (de = readdir(d))) {
            int i = entry_index(de->d_name);
            if (i >= 0 && dir_seen[i]++)
                twice++;
            if (++got == 100 && rename(P(names[r - 1]), P(names[r])) != 0) {
                printf("FAIL: rename %s: %s\n", names[r - 1], strerror(errno));
                fails++;
            }
        }
        if (d)
            closedir(d);
        if (got != total || twice) {
            printf("FAIL: renamed to %s while read: %d entries (%d twice), not %d\n", names[r], got, twice, total);
            fails++;
        }
    }
}

/*
 * Directory positions stay put while entries are removed: a seekdir back to
 * a position telldir gave, after names read before it were removed, goes
 * on with the entry that followed it; and a listing through a getdents64
 * buffer too small for the kernel's batches, removing each name as it is
 * read, sees every name (positions counted entries before: both skipped
 * about as many entries as had been removed).
 */
static void dir_positions(void)
{
    char rel[600];
    EXPECT("mkdir pos", mkdir(P("pos"), 0755), 0);
    for (int i = 0; i < 300; i++) {
        snprintf(rel, sizeof rel, "pos/f%04d", i);
        put(rel, "x");
    }
    DIR *d = opendir(P("pos"));
    static char names[300][256];
    int n = 0;
    long at = -1;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(names[n], sizeof names[n], "%s", de->d_name);
        if (++n == 150)
            at = telldir(d);
    }
    if (d && n == 300 && at >= 0) {
        for (int i = 0; i < 100; i++) {
            snprintf(rel, sizeof rel, "pos/%.255s", names[i]);
            EXPECT("unlink a name read before the position", unlink(P(rel)), 0);
        }
        seekdir(d, at);
        de = readdir(d);
        if (!de || strcmp(de->d_name, names[150]) != 0) {
            printf("FAIL: seekdir after removals gave %s, not %s\n", de ? de->d_name : "nothing", names[150]);
            fails++;
        }
    } else {
        printf("FAIL: listed %d of 300 entries\n", n);
        fails++;
    }
    if (d)
        closedir(d);

    EXPECT("mkdir pos2", mkdir(P("pos2"), 0755), 0);
    for (int i = 0; i < 300; i++) {
        snprintf(rel, sizeof rel, "pos2/f%04d", i);
        put(rel, "x");
    }
    int fd = open(P("pos2"), O_RDONLY | O_DIRECTORY);
    char buf[200];
    int seen = 0;
    for (;;) {
        long r = syscall(SYS_getdents64, fd, buf, sizeof buf);
        if (r <= 0)
            break;
        for (long o = 0; o < r;) {
            unsigned short reclen;
            memcpy(&reclen, buf + o + offsetof(struct dirent64, d_reclen), sizeof reclen);
            const char *nm = buf + o + offsetof(struct dirent64, d_name);
            o += reclen;
            if (nm[0] == '.')
                continue;
            seen++;
            unlinkat(fd, nm, 0);
        }
    }
    close(fd);
    if (seen != 300) {
        printf("FAIL: a 200-byte getdents64 buffer, removing as it read, saw %d of 300 names\n", seen);
        fails++;
    }
}

/*
 * POSIX times of directories: making, removing or renaming an entry moves
 * the mtime and ctime of the directories involved, and a rename moves the
 * renamed entry's ctime.  Each directory is first dated in 2001, then the
 * operation must leave its mtime at least at the operation's start and its
 * ctime past what it was.
 */
static struct timespec ts_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return t;
}

static int ts_before(struct timespec a, struct timespec b)
{
    return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec < b.tv_nsec);
}

static void age(const char *rel, struct stat *was)
{
    struct timespec old[2] = {{978307200, 0}, {978307200, 0}};
    if (utimensat(AT_FDCWD, P(rel), old, AT_SYMLINK_NOFOLLOW) != 0 || lstat(P(rel), was) != 0) {
        printf("FAIL: dating %s: %s\n", rel, strerror(errno));
        fails++;
    }
}

static void expect_moved(const char *what, const char *rel, const struct stat *was, struct timespec start,
                         int mtime_too)
{
    struct stat st;
    if (lstat(P(rel), &st) != 0) {
        printf("FAIL: %s: stat %s: %s\n", what, rel, strerror(errno));
        fails++;
        return;
    }
    if ((mtime_too && ts_before(st.st_mtim, start)) || !ts_before(was->st_ctim, st.st_ctim)) {
        printf("FAIL: %s: %s mtime %lld ctime %lld.%09ld (was %lld.%09ld)\n", what, rel,
               (long long)st.st_mtim.tv_sec, (long long)st.st_ctim.tv_sec, st.st_ctim.tv_nsec,
               (long long)was->st_ctim.tv_sec, was->st_ctim.tv_nsec);
        fails++;
    }
}

static void dir_times(void)
{
    struct stat a, b, f;
    struct timespec t;
    EXPECT("mkdir times", mkdir(P("times"), 0755), 0);
    EXPECT("mkdir times/a", mkdir(P("times/a"), 0755), 0);
    EXPECT("mkdir times/b", mkdir(P("times/b"), 0755), 0);
    struct { const char *what; int op; } ops[] = {
        {"create", 0}, {"mkdir", 1}, {"symlink", 2}, {"mkfifo", 3}, {"unlink", 4}, {"rmdir", 5},
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        age("times/a", &a);
        t = ts_now();
        int fd;
        switch (ops[i].op) {
        case 0: fd = open(P("times/a/f"), O_WRONLY | O_CREAT | O_EXCL, 0644); EXPECT("create in times/a", fd, 0); close(fd); break;
        case 1: EXPECT("mkdir in times/a", mkdir(P("times/a/d"), 0755), 0); break;
        case 2: EXPECT("symlink in times/a", symlink("f", P("times/a/l")), 0); break;
        case 3: EXPECT("mkfifo in times/a", mkfifo(P("times/a/p"), 0644), 0); break;
        case 4: EXPECT("unlink in times/a", unlink(P("times/a/l")), 0); break;
        case 5: EXPECT("rmdir in times/a", rmdir(P("times/a/d")), 0); break;
        }
        expect_moved(ops[i].what, "times/a", &a, t, 1);
    }
    /* rename across directories: both directories and the file. */
    age("times/a", &a);
    age("times/b", &b);
    age("times/a/f", &f);
    t = ts_now();
    EXPECT("rename across directories", rename(P("times/a/f"), P("times/b/g")), 0);
    expect_moved("rename (source directory)", "times/a", &a, t, 1);
    expect_moved("rename (target directory)", "times/b", &b, t, 1);
    expect_moved("rename (the file's ctime)", "times/b/g", &f, t, 0);
    /* A dated directory moved to the name of one just changed and removed
     * (within the 2 ms in which the daemon moves a directory's times once):
     * the first change in it still moves its times. */
    EXPECT("mkdir times/x", mkdir(P("times/x"), 0755), 0);
    age("times/x", &a);
    EXPECT("mkdir times/e", mkdir(P("times/e"), 0755), 0);
    put("times/e/f", "");
    EXPECT("unlink in times/e", unlink(P("times/e/f")), 0);
    EXPECT("rmdir times/e", rmdir(P("times/e")), 0);
    EXPECT("rename a dated directory", rename(P("times/x"), P("times/e")), 0);
    t = ts_now();
    put("times/e/g", "");
    expect_moved("create in a dated directory moved to a just-changed name", "times/e", &a, t, 1);
    /* at the root too */
    struct stat r;
    age(".", &r);
    t = ts_now();
    put("times-root-file", "x");
    expect_moved("create at the root", ".", &r, t, 1);
}

/*
 * A file with two names, open through the first (made by CREATE, or opened
 * by OPEN), whose first name and that name's directory are then removed:
 * libfuse has no path for its kernel inode any more.  A change through the
 * second name must still reach what reads and fstat through the open
 * descriptor see (the daemon drops the kernel's caches asynchronously, so
 * this waits up to 2 s for them to be dropped).
 */
static void orphan_of_removed_dir(const char *dir, int by_create)
{
    char x[64], y[64], buf[64];
    snprintf(x, sizeof x, "%s/x", dir);
    snprintf(y, sizeof y, "%s-y", dir);
    EXPECT("mkdir for the orphan", mkdir(P(dir), 0755), 0);
    if (!by_create)
        put(x, "aaaa");
    int fd = open(P(x), O_RDWR | O_CREAT, 0644);
    EXPECT("open the orphan-to-be", fd, 0);
    if (fd < 0)
        return;
    if (by_create)
        EXPECT("write the orphan-to-be", write(fd, "aaaa", 4), 0);
    EXPECT("second name", link(P(x), P(y)), 0);
    EXPECT("read before", pread(fd, buf, sizeof buf, 0), 0);   /* pages now cached */
    struct stat st;
    EXPECT("fstat before", fstat(fd, &st), 0);
    EXPECT("unlink the open name", unlink(P(x)), 0);
    EXPECT("rmdir its directory", rmdir(P(dir)), 0);
    int fd2 = open(P(y), O_WRONLY);
    EXPECT("write through the second name", pwrite(fd2, "bbbbbbbb", 8, 0), 0);
    close(fd2);
    ssize_t n = -1;
    for (int t = 0; t < 200; t++) {
        n = pread(fd, buf, sizeof buf, 0);
        if (fstat(fd, &st) == 0 && n == 8 && st.st_size == 8 && !memcmp(buf, "bbbbbbbb", 8))
            break;
        usleep(10000);
    }
    if (n != 8 || memcmp(buf, "bbbbbbbb", 8) || st.st_size != 8 || st.st_nlink != 1) {
        printf("FAIL: orphan of a removed directory (%s): read %zd bytes \"%.*s\", fstat size %lld, "
               "%lu links (wanted 8 bytes \"bbbbbbbb\", 1 link)\n",
               by_create ? "created" : "opened", n, n > 0 ? (int)n : 0, buf, (long long)st.st_size,
               (unsigned long)st.st_nlink);
        fails++;
    }
    close(fd);
    EXPECT("remove the second name", unlink(P(y)), 0);
}

/*
 * A file made, removed while open, and its directory removed (a temporary
 * file's usual life): libfuse has no path for it, and the kernel sends
 * fstat, fchmod, futimens and fchown without the descriptor.  All work.
 */
static void temp_in_removed_dir(void)
{
    EXPECT("mkdir for the temporary file", mkdir(P("tmpd"), 0755), 0);
    int fd = open(P("tmpd/f"), O_RDWR | O_CREAT | O_EXCL, 0600);
    EXPECT("make the temporary file", fd, 0);
    if (fd < 0)
        return;
    EXPECT("unlink it", unlink(P("tmpd/f")), 0);
    EXPECT("rmdir its directory", rmdir(P("tmpd")), 0);
    EXPECT("write it", write(fd, "hello", 5), 0);
    struct stat st;
    memset(&st, 0, sizeof st);
    EXPECT("fstat after a write", fstat(fd, &st), 0);
    if (st.st_size != 5 || st.st_nlink != 0) {
        printf("FAIL: temporary file: size %lld, %lu links (wanted 5, 0)\n", (long long)st.st_size,
               (unsigned long)st.st_nlink);
        fails++;
    }
    EXPECT("fchmod", fchmod(fd, 0640), 0);
    struct timespec ts[2] = {{1000000000, 5}, {1100000000, 7}};
    EXPECT("futimens", futimens(fd, ts), 0);
    EXPECT("fchown to the same owner", fchown(fd, st.st_uid, st.st_gid), 0);
    memset(&st, 0, sizeof st);
    EXPECT("fstat after fchmod", fstat(fd, &st), 0);
    if ((st.st_mode & 07777) != 0640 || st.st_mtim.tv_sec != 1100000000 || st.st_mtim.tv_nsec != 7) {
        printf("FAIL: temporary file: mode %o, mtime %lld.%09ld (wanted 640, 1100000000.000000007)\n",
               (unsigned)(st.st_mode & 07777), (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
        fails++;
    }
    char buf[8] = {0};
    EXPECT("read it back", pread(fd, buf, sizeof buf, 0), 0);
    if (memcmp(buf, "hello", 6)) {
        printf("FAIL: temporary file reads \"%s\"\n", buf);
        fails++;
    }
    EXPECT("close it", close(fd), 0);
}

/* SEEK_DATA and SEEK_HOLE: a file's holes are its 64 KiB chunks never
 * written (README), found without reading them. */
static void seek_holes(void)
{
    int fd = open(P("sparse"), O_RDWR | O_CREAT | O_TRUNC, 0644);
    EXPECT("make a sparse file", fd, 0);
    if (fd < 0)
        return;
    EXPECT("extend it", ftruncate(fd, 1 << 20), 0);
    EXPECT("write into chunk 4", pwrite(fd, "x", 1, 300000), 0);
    struct { off_t from; int whence; off_t want; int err; } c[] = {
        {0, SEEK_DATA, 4 * 65536, 0},       {0, SEEK_HOLE, 0, 0},
        {4 * 65536, SEEK_HOLE, 5 * 65536, 0}, {300000, SEEK_DATA, 300000, 0},
        {5 * 65536, SEEK_DATA, -1, ENXIO},  {(1 << 20) - 1, SEEK_HOLE, (1 << 20) - 1, 0},
        {1 << 20, SEEK_DATA, -1, ENXIO},    {1 << 20, SEEK_HOLE, -1, ENXIO},
    };
    struct stat st;
    EXPECT("fstat the sparse file", fstat(fd, &st), 0);
    if (st.st_blocks != 65536 / 512)
        printf("FAIL: a 1 MiB file with one 64 KiB chunk written takes %lld blocks (wanted 128)\n",
               (long long)st.st_blocks), fails++;
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        errno = 0;
        off_t got = lseek(fd, c[i].from, c[i].whence);
        if (got != c[i].want || (got < 0 && errno != c[i].err)) {
            printf("FAIL: lseek(%lld, %s): %lld (%s), wanted %lld\n", (long long)c[i].from,
                   c[i].whence == SEEK_DATA ? "SEEK_DATA" : "SEEK_HOLE", (long long)got,
                   got < 0 ? strerror(errno) : "-", (long long)c[i].want);
            fails++;
        }
    }
    close(fd);
    EXPECT("remove the sparse file", unlink(P("sparse")), 0);
}

/* rename(2) of a file onto another name of itself that is open changes
 * nothing, though libfuse moves the open name aside first: no directory's
 * times move. */
static void rename_onto_open_self(void)
{
    EXPECT("mkdir self", mkdir(P("self"), 0755), 0);
    EXPECT("mkdir self/c", mkdir(P("self/c"), 0755), 0);
    EXPECT("mkdir self/b", mkdir(P("self/b"), 0755), 0);
    put("self/c/a", "same");
    EXPECT("second name", link(P("self/c/a"), P("self/b/b")), 0);
    struct timespec ts[2] = {{1000000000, 0}, {1000000000, 0}};
    EXPECT("date self/c", utimensat(AT_FDCWD, P("self/c"), ts, 0), 0);
    EXPECT("date self/b", utimensat(AT_FDCWD, P("self/b"), ts, 0), 0);
    int fd = open(P("self/c/a"), O_RDONLY);
    EXPECT("open self/c/a", fd, 0);
    EXPECT("rename onto an open name of itself", rename(P("self/b/b"), P("self/c/a")), 0);
    struct stat c, b;
    EXPECT("stat self/c", stat(P("self/c"), &c), 0);
    EXPECT("stat self/b", stat(P("self/b"), &b), 0);
    if (c.st_mtim.tv_sec != 1000000000 || b.st_mtim.tv_sec != 1000000000) {
        printf("FAIL: rename onto an open name of itself moved mtimes: self/c %lld, self/b %lld\n",
               (long long)c.st_mtim.tv_sec, (long long)b.st_mtim.tv_sec);
        fails++;
    }
    close(fd);
    expect_content("both names kept", "self/b/b", "same", 4);
    expect_content("both names kept", "self/c/a", "same", 4);
}

/*
 * libfuse moves an open rename target aside before it renames onto it; a
 * rename that fails after that move (a source in a read-only snapshot, a
 * flag refused) leaves the target where it was, before and after its last
 * close.  M is the mount's sub-directory: the snapshot is taken one up.
 */
static void rename_onto_open(void)
{
    char snap[8300], src[8400];
    const char *sub = strrchr(m, '/');
    put("roo_t", "target");
    put("roo_s", "source");
    snprintf(snap, sizeof snap, "%s/../.snapshots/roo%ld", m, (long)getpid());
    snprintf(src, sizeof src, "%s%s/roo_s", snap, sub ? sub : "/");
    EXPECT("take a snapshot", mkdir(snap, 0755), 0);
    int fd = open(P("roo_t"), O_RDONLY);
    EXPECT("open the target", fd, 0);
    EXPECT("rename from a snapshot onto an open file", rename(src, P("roo_t")), EROFS);
    expect_content("the open target after EROFS", "roo_t", "target", 6);
    EXPECT("renameat2 RENAME_WHITEOUT onto an open file",
           syscall(SYS_renameat2, AT_FDCWD, P("roo_s"), AT_FDCWD, P("roo_t"), 4 /* RENAME_WHITEOUT */), EINVAL);
    expect_content("the open target after EINVAL", "roo_t", "target", 6);
    char c;
    EXPECT("read through the open descriptor", pread(fd, &c, 1, 0), 0);
    if (fd >= 0)
        close(fd);
    expect_content("the target after its last close", "roo_t", "target", 6);
    EXPECT("rename onto it now", rename(P("roo_s"), P("roo_t")), 0);
    expect_content("the renamed file", "roo_t", "source", 6);
    EXPECT("drop the snapshot", rmdir(snap), 0);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fs_errno MOUNTPOINT\n");
        return 2;
    }
    snprintf(m, sizeof m, "%s", argv[1]);
    char name[300];
    memset(name, 'n', 256);
    name[256] = 0;

    put("file", "hello");
    EXPECT("mkdir dir", mkdir(P("dir"), 0755), 0);
    put("dir/inner", "x");

    EXPECT("open missing", open(P("missing"), O_RDONLY), ENOENT);
    EXPECT("stat missing", access(P("nodir/x"), F_OK), ENOENT);
    EXPECT("O_CREAT|O_EXCL on existing", open(P("file"), O_WRONLY | O_CREAT | O_EXCL, 0644), EEXIST);
    EXPECT("mkdir existing dir", mkdir(P("dir"), 0755), EEXIST);
    EXPECT("mkdir over a file", mkdir(P("file"), 0755), EEXIST);
    EXPECT("open under a file", open(P("file/x"), O_RDONLY), ENOTDIR);
    EXPECT("create under a file", open(P("file/x"), O_WRONLY | O_CREAT, 0644), ENOTDIR);
    EXPECT("rmdir a file", rmdir(P("file")), ENOTDIR);
    EXPECT("open a dir for writing", open(P("dir"), O_WRONLY), EISDIR);
    EXPECT("unlink a dir", unlink(P("dir")), EISDIR);
    EXPECT("rename a file over a dir", rename(P("file"), P("dir")), EISDIR);
    EXPECT("rename a dir over a file", rename(P("dir"), P("file")), ENOTDIR);
    EXPECT("rmdir non-empty", rmdir(P("dir")), ENOTEMPTY);
    EXPECT("mkdir dir2", mkdir(P("dir2"), 0755), 0);
    put("dir2/y", "y");
    EXPECT("rename a dir over a non-empty dir", rename(P("dir"), P("dir2")), ENOTEMPTY);
    EXPECT("rename a dir into itself", rename(P("dir"), P("dir/sub")), EINVAL);
    EXPECT("name too long", open(P(name), O_WRONLY | O_CREAT, 0644), ENAMETOOLONG);
    EXPECT("unlink missing", unlink(P("missing")), ENOENT);
    EXPECT("rmdir missing", rmdir(P("missing")), ENOENT);
    EXPECT("rename missing", rename(P("missing"), P("other")), ENOENT);
    /* Extended attributes: a missing one of a kept namespace is ENODATA;
     * a namespace not kept is ENOTSUP whatever the call. */
    char xv[64];
    EXPECT("setxattr user.", setxattr(P("file"), "user.a", "1", 1, 0), 0);
    EXPECT("getxattr user.", getxattr(P("file"), "user.a", xv, sizeof xv), 0);
    EXPECT("getxattr missing user.", getxattr(P("file"), "user.b", xv, sizeof xv), ENODATA);
    EXPECT("removexattr missing user.", removexattr(P("file"), "user.b"), ENODATA);
    EXPECT("XATTR_CREATE on existing", setxattr(P("file"), "user.a", "2", 1, XATTR_CREATE), EEXIST);
    EXPECT("XATTR_REPLACE on missing", setxattr(P("file"), "user.b", "2", 1, XATTR_REPLACE), ENODATA);
    EXPECT("getxattr security.", getxattr(P("file"), "security.selinux", xv, sizeof xv), ENOTSUP);
    EXPECT("getxattr ACL", getxattr(P("dir"), "system.posix_acl_default", xv, sizeof xv), ENOTSUP);
    EXPECT("setxattr security.", setxattr(P("file"), "security.x", "1", 1, 0), ENOTSUP);
    EXPECT("removexattr security.", removexattr(P("file"), "security.x"), ENOTSUP);
    EXPECT("getxattr on missing", getxattr(P("missing"), "user.a", xv, sizeof xv), ENOENT);
    EXPECT("hard link", link(P("file"), P("hard")), 0);
    EXPECT("hard link onto an existing name", link(P("file"), P("hard")), EEXIST);
    EXPECT("hard link of a missing file", link(P("missing"), P("hard2")), ENOENT);
    EXPECT("hard link of a directory", link(P("dir"), P("hard3")), EPERM);
    EXPECT("hard link into a missing directory", link(P("file"), P("missing/x")), ENOENT);
    EXPECT("unlink one name", unlink(P("hard")), 0);
    EXPECT("readlink of a file", readlink(P("file"), name, sizeof name), EINVAL);
    orphan_of_removed_dir("orphan-c", 1);
    orphan_of_removed_dir("orphan-o", 0);
    temp_in_removed_dir();
    rename_onto_open();
    seek_holes();
    rename_onto_open_self();

    /* RENAME_NOREPLACE */
    put("a", "a");
    put("b", "b");
    EXPECT("renameat2 NOREPLACE onto existing",
           syscall(SYS_renameat2, AT_FDCWD, P("a"), AT_FDCWD, P("b"), 1 /* RENAME_NOREPLACE */), EEXIST);
    EXPECT("renameat2 NOREPLACE onto new",
           syscall(SYS_renameat2, AT_FDCWD, P("a"), AT_FDCWD, P("c"), 1), 0);
    expect_content("NOREPLACE moved", "c", "a", 1);

    /* RENAME_EXCHANGE: two files (one open), a file and a directory. */
    int xfd = open(P("b"), O_RDONLY);
    EXPECT("renameat2 EXCHANGE of two files",
           syscall(SYS_renameat2, AT_FDCWD, P("b"), AT_FDCWD, P("c"), 2 /* RENAME_EXCHANGE */), 0);
    expect_content("EXCHANGE swapped b", "b", "a", 1);
    expect_content("EXCHANGE swapped c", "c", "b", 1);
    char xb[4] = "";
    if (pread(xfd, xb, sizeof xb, 0) != 1 || xb[0] != 'b') {
        printf("FAIL: a descriptor opened before an exchange reads '%c', not its file's 'b'\n", xb[0]);
        fails++;
    }
    close(xfd);
    EXPECT("renameat2 EXCHANGE with a missing name",
           syscall(SYS_renameat2, AT_FDCWD, P("b"), AT_FDCWD, P("missing"), 2), ENOENT);
    EXPECT("renameat2 EXCHANGE and NOREPLACE",
           syscall(SYS_renameat2, AT_FDCWD, P("b"), AT_FDCWD, P("c"), 3), EINVAL);
    EXPECT("mkdir xd", mkdir(P("xd"), 0755), 0);
    EXPECT("mkdir xd/sub", mkdir(P("xd/sub"), 0755), 0);
    put("xd/sub/f", "f");
    EXPECT("renameat2 EXCHANGE of a directory with its sub-directory",
           syscall(SYS_renameat2, AT_FDCWD, P("xd"), AT_FDCWD, P("xd/sub"), 2), EINVAL);
    EXPECT("renameat2 EXCHANGE of a file with a directory",
           syscall(SYS_renameat2, AT_FDCWD, P("b"), AT_FDCWD, P("xd"), 2), 0);
    expect_content("EXCHANGE put the file at the directory's name", "xd", "a", 1);
    expect_content("EXCHANGE put the directory at the file's name", "b/sub/f", "f", 1);

    /* EFBIG: past the largest value the engine keeps. */
    int fd = open(P("huge"), O_WRONLY | O_CREAT, 0644);
    EXPECT("write past the largest file", pwrite(fd, "x", 1, (off_t)1 << 45), EFBIG);
    EXPECT("ftruncate past the largest file", ftruncate(fd, (off_t)1 << 45), EFBIG);
    close(fd);

    /* O_TRUNC, O_APPEND, a gap, ftruncate down and up. */
    put("t", "0123456789");
    fd = open(P("t"), O_WRONLY | O_TRUNC);
    EXPECT("open O_TRUNC", fd, 0);
    close(fd);
    expect_content("O_TRUNC empties", "t", "", 0);
    put("t", "abc");
    fd = open(P("t"), O_WRONLY | O_APPEND);
    EXPECT("append", write(fd, "def", 3), 0);
    close(fd);
    expect_content("O_APPEND appends", "t", "abcdef", 6);
    fd = open(P("t"), O_RDWR);
    EXPECT("write past the end", pwrite(fd, "Z", 1, 9), 0);
    EXPECT("ftruncate down", ftruncate(fd, 8), 0);
    EXPECT("ftruncate up", ftruncate(fd, 10), 0);
    close(fd);
    expect_content("gap and truncation read as zeros", "t", "abcdef\0\0\0\0", 10);

    /* fallocate: allocating extends the file (with FALLOC_FL_KEEP_SIZE it
     * keeps its size) once the disk has room; punched holes and zeroed
     * ranges read as zeros, across 64 KiB chunks too; collapsing ranges is
     * not supported. */
    put("fa", "0123456789");
    fd = open(P("fa"), O_RDWR);
    struct stat fst;
    EXPECT("fallocate keeping the size", fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 100), 0);
    EXPECT("fallocate extending", fallocate(fd, 0, 5, 15), 0);
    EXPECT("fstat after fallocate", fstat(fd, &fst), 0);
    if (fst.st_size != 20) {
        printf("FAIL: fallocate to 20 bytes left %lld\n", (long long)fst.st_size);
        fails++;
    }
    EXPECT("posix_fallocate", posix_fallocate(fd, 0, 30) ? -1 : 0, 0);
    EXPECT("punching a hole", fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 2, 3), 0);
    EXPECT("zeroing a range past the end", fallocate(fd, FALLOC_FL_ZERO_RANGE, 28, 4), 0);
    EXPECT("fallocate of more than the disk holds", fallocate(fd, 0, 0, (off_t)1 << 43), ENOSPC);
    EXPECT("fallocate past the largest file", fallocate(fd, 0, (off_t)1 << 45, 1), EFBIG);
    EXPECT("collapsing a range", fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, 4096), EOPNOTSUPP);
    close(fd);
    expect_content("fallocate, hole and zeroed range", "fa",
                   "01\0\0\0" "56789\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 32);
    {
        enum { BIG = 300000 };
        static char want[BIG], got[BIG];
        for (int i = 0; i < BIG; i++)
            want[i] = (char)('a' + i % 23);
        fd = open(P("fa-big"), O_RDWR | O_CREAT, 0644);
        EXPECT("writing fa-big", pwrite(fd, want, BIG, 0), 0);
        EXPECT("punching across chunks", fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1000, 200000), 0);
        memset(want + 1000, 0, 200000);
        EXPECT("zeroing to past the end", fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 250000, 60000), 0);
        memset(want + 250000, 0, BIG - 250000);
        EXPECT("fstat fa-big", fstat(fd, &fst), 0);
        ssize_t n = pread(fd, got, BIG, 0);
        if (fst.st_size != BIG || n != BIG || memcmp(got, want, BIG) != 0) {
            printf("FAIL: fa-big after punching: size %lld, read %zd, %s\n", (long long)fst.st_size, n,
                   n == BIG && memcmp(got, want, BIG) ? "bytes differ" : "bytes match");
            fails++;
        }
        close(fd);
    }

    /* An unlinked file still open keeps working until closed. */
    put("open-unlinked", "still here");
    fd = open(P("open-unlinked"), O_RDWR);
    EXPECT("unlink an open file", unlink(P("open-unlinked")), 0);
    EXPECT("gone from the directory", access(P("open-unlinked"), F_OK), ENOENT);
    char buf[32] = {0};
    EXPECT("read after unlink", pread(fd, buf, sizeof buf, 0), 0);
    if (strcmp(buf, "still here") != 0) {
        printf("FAIL: read after unlink gave \"%s\"\n", buf);
        fails++;
    }
    EXPECT("write after unlink", pwrite(fd, "STILL", 5, 0), 0);
    memset(buf, 0, sizeof buf);
    EXPECT("read back after unlink", pread(fd, buf, sizeof buf, 0), 0);
    if (strcmp(buf, "STILL here") != 0) {
        printf("FAIL: write after unlink: \"%s\"\n", buf);
        fails++;
    }
    struct stat ust;
    EXPECT("fstat after unlink", fstat(fd, &ust), 0);
    if (ust.st_nlink != 0) {
        printf("FAIL: an unlinked open file shows %lu links\n", (unsigned long)ust.st_nlink);
        fails++;
    }
    /* (the attributes a SETATTR answers with are what fstat shows next) */
    EXPECT("fchmod after unlink", fchmod(fd, 0600), 0);
    EXPECT("fstat after fchmod", fstat(fd, &ust), 0);
    if (ust.st_nlink != 0) {
        printf("FAIL: an unlinked open file shows %lu links after fchmod\n", (unsigned long)ust.st_nlink);
        fails++;
    }
    EXPECT("close the unlinked file", close(fd), 0);

    /* One of two names removed while open: fstat through it counts the
     * name left, also after a SETATTR (libfuse takes the hidden name off
     * the count of its GETATTR, but not of a SETATTR's answer). */
    put("two-names", "x");
    EXPECT("link a second name", link(P("two-names"), P("two-names2")), 0);
    fd = open(P("two-names"), O_RDONLY);
    EXPECT("unlink the opened name", unlink(P("two-names")), 0);
    EXPECT("fstat after unlinking one of two names", fstat(fd, &ust), 0);
    if (ust.st_nlink != 1) {
        printf("FAIL: an open file with one name left shows %lu links\n", (unsigned long)ust.st_nlink);
        fails++;
    }
    EXPECT("futimens of it", futimens(fd, NULL), 0);
    EXPECT("fstat after futimens", fstat(fd, &ust), 0);
    if (ust.st_nlink != 1) {
        printf("FAIL: an open file with one name left shows %lu links after futimens\n",
               (unsigned long)ust.st_nlink);
        fails++;
    }
    EXPECT("close it", close(fd), 0);
    EXPECT("unlink the other name", unlink(P("two-names2")), 0);

    /* A directory whose file was removed while open is empty: rm -r works
     * while another process still holds the file. */
    EXPECT("mkdir busy", mkdir(P("busy"), 0755), 0);
    put("busy/held", "held open");
    fd = open(P("busy/held"), O_RDONLY);
    EXPECT("unlink the held file", unlink(P("busy/held")), 0);
    EXPECT("rmdir around a held file", rmdir(P("busy")), 0);
    EXPECT("close the held file", close(fd), 0);

    /* The names libfuse gives files removed while open are reserved. */
    EXPECT("create a reserved name", open(P(".fuse_hidden0123456789abcdef"), O_CREAT | O_WRONLY, 0644),
           EPERM);
    EXPECT("mkdir a reserved name", mkdir(P(".fuse_hidden0123456789abcdef"), 0755), EPERM);
    put("closed", "not held");
    EXPECT("rename a closed file to a reserved name", rename(P("closed"), P(".fuse_hidden0123456789abcdef")),
           EPERM);
    expect_content("it stays", "closed", "not held", 8);

    /* A set-group-ID directory: what is made in it takes its group, and
     * a new directory the bit too (as root, who may give it the group). */
    if (getuid() == 0) {
        struct stat gst;
        EXPECT("mkdir sgid", mkdir(P("sgid"), 0755), 0);
        EXPECT("chown sgid", chown(P("sgid"), (uid_t)-1, 100), 0);
        EXPECT("chmod sgid", chmod(P("sgid"), 02775), 0);
        put("sgid/f", "x");
        EXPECT("mkdir in sgid", mkdir(P("sgid/sub"), 0755), 0);
        EXPECT("symlink in sgid", symlink("f", P("sgid/l")), 0);
        const char *made[] = {"sgid/f", "sgid/sub", "sgid/l"};
        for (int i = 0; i < 3; i++) {
            if (lstat(P(made[i]), &gst) != 0 || gst.st_gid != 100) {
                printf("FAIL: %s in a set-group-ID directory has group %u, not the directory's\n", made[i],
                       (unsigned)gst.st_gid);
                fails++;
            }
        }
        if (stat(P("sgid/sub"), &gst) != 0 || (gst.st_mode & 07777) != 02755) {
            printf("FAIL: a directory made in a set-group-ID directory has mode %04o\n",
                   (unsigned)(gst.st_mode & 07777));
            fails++;
        }
    }

    /* fsync and fdatasync of a file and of a directory. */
    fd = open(P("file"), O_RDWR);
    EXPECT("fsync", fsync(fd), 0);
    EXPECT("fdatasync", fdatasync(fd), 0);
    close(fd);
    fd = open(P("dir"), O_RDONLY | O_DIRECTORY);
    EXPECT("fsync a directory", fsync(fd), 0);
    close(fd);

    dir_streams();
    dir_positions();
    dir_times();

    if (fails)
        printf("%d failures\n", fails);
    else
        printf("fs_errno: all checks passed\n");
    return fails ? 1 : 0;
}
