/*
 * fs_errno.c - the errors a POSIX program sees on a stashfs mount, one call
 * at a time, and the file semantics around them (O_TRUNC, O_APPEND, gaps,
 * truncation, an unlinked file still open, RENAME_NOREPLACE).
 * Usage: fs_errno MOUNTPOINT (an empty, freshly mounted store).  Prints each
 * failure and exits 1 if there was any.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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
    EXPECT("hard link", link(P("file"), P("hard")), EPERM);
    EXPECT("readlink of a file", readlink(P("file"), name, sizeof name), EINVAL);

    /* RENAME_NOREPLACE */
    put("a", "a");
    put("b", "b");
    EXPECT("renameat2 NOREPLACE onto existing",
           syscall(SYS_renameat2, AT_FDCWD, P("a"), AT_FDCWD, P("b"), 1 /* RENAME_NOREPLACE */), EEXIST);
    EXPECT("renameat2 NOREPLACE onto new",
           syscall(SYS_renameat2, AT_FDCWD, P("a"), AT_FDCWD, P("c"), 1), 0);
    expect_content("NOREPLACE moved", "c", "a", 1);

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
    EXPECT("close the unlinked file", close(fd), 0);

    /* fsync and fdatasync of a file and of a directory. */
    fd = open(P("file"), O_RDWR);
    EXPECT("fsync", fsync(fd), 0);
    EXPECT("fdatasync", fdatasync(fd), 0);
    close(fd);
    fd = open(P("dir"), O_RDONLY | O_DIRECTORY);
    EXPECT("fsync a directory", fsync(fd), 0);
    close(fd);

    if (fails)
        printf("%d failures\n", fails);
    else
        printf("fs_errno: all checks passed\n");
    return fails ? 1 : 0;
}
