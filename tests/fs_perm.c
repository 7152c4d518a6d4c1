/*
 * fs_perm.c - permission checks as other users see them: the owner's, the
 * group's (also through a supplementary group) and everyone else's bits, a
 * directory's search and write permission, the sticky bit, who may chmod,
 * chown, set times, truncate, rename a directory elsewhere, set attributes
 * and run a file, and root's exceptions.  The expectations are Linux's on a
 * local disk; the test runs on one too, as a check of itself.
 *
 * Usage: fs_perm DIR (run as root; DIR on the filesystem under test, which
 * users 1001 and 1002 may reach).  Each case runs in a child process with
 * that user's IDs.  Prints each failure and exits 1 if there was any.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

static int fails;
static char base[4096];

#define A 1001          /* group 1001 */
#define B 1002          /* group 1002, and 1500 besides */
#define G 1500

static const char *P(const char *rel)
{
    static char buf[4][8192];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", base, rel);
    return buf[i];
}

/* renameat2(A, B, RENAME_EXCHANGE) */
static int xchg(const char *a, const char *b)
{
    return (int)syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, 2);
}

/* Expect call result R to be -1 with errno WANT (or success when WANT 0). */
#define EXPECT(what, r, want)                                                               \
    do {                                                                                    \
        errno = 0;                                                                          \
        long r_ = (long)(r);                                                                \
        int e_ = errno;                                                                     \
        if ((want) == 0 ? r_ < 0 : (r_ != -1 || e_ != (want))) {                            \
            printf("FAIL: %s: returned %ld, errno %s (wanted %s)\n", what, r_, strerror(e_), \
                   (want) ? strerror(want) : "success");                                    \
            fflush(stdout);                                                                 \
            fails++;                                                                        \
        }                                                                                   \
    } while (0)

static void must(int ok, const char *what)
{
    if (!ok) {
        printf("FAIL: setting up: %s: %s\n", what, strerror(errno));
        fails++;
    }
}

/* Make file REL (as root) with TEXT, owner UID:GID and mode MODE. */
static void mkfile(const char *rel, const char *text, uid_t uid, gid_t gid, mode_t mode)
{
    int fd = open(P(rel), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    must(fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text) && close(fd) == 0, rel);
    must(chown(P(rel), uid, gid) == 0 && chmod(P(rel), mode) == 0, rel);
}

static void mkdirat_(const char *rel, uid_t uid, gid_t gid, mode_t mode)
{
    must(mkdir(P(rel), 0700) == 0 && chown(P(rel), uid, gid) == 0 && chmod(P(rel), mode) == 0, rel);
}

/* Run CASE in a child with user UID (its group the same number; user B
 * also in group G, after NOISE other groups).  The child's failures count
 * here. */
static void as_groups(uid_t uid, int noise, void (*fn)(void))
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        gid_t extra[200];
        int n = 0;
        for (int i = 0; i < noise && n < 199; i++)
            extra[n++] = 100 + i;     /* below G: the kernel sorts them */
        extra[n++] = G;
        if (setgroups(uid == B ? n : 0, extra) || setresgid(uid, uid, uid) || setresuid(uid, uid, uid)) {
            printf("FAIL: cannot become user %u: %s\n", (unsigned)uid, strerror(errno));
            exit(1);
        }
        fails = 0;
        fn();
        fflush(stdout);
        _exit(fails > 100 ? 100 : fails);
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st)) {
        printf("FAIL: the child for user %u did not finish\n", (unsigned)uid);
        fails++;
        return;
    }
    fails += WEXITSTATUS(st);
}

static void as(uid_t uid, void (*fn)(void))
{
    as_groups(uid, 0, fn);
}

/* Forget the kernel's cached names, so that lookups reach the filesystem
 * (a FUSE daemon that checks permissions sees only those). */
static void drop_names(void)
{
    sync();
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
    if (fd >= 0) {
        if (write(fd, "2", 1) != 1)
            printf("note: cannot drop cached names\n");
        close(fd);
    }
}

/* REL becomes a copy of true(1), keeping its owner and mode. */
static void copy_true(const char *rel)
{
    char buf[65536];
    int in = open("/bin/true", O_RDONLY), out = open(P(rel), O_WRONLY | O_TRUNC);
    ssize_t n;
    while (in >= 0 && out >= 0 && (n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, (size_t)n) != n)
            break;
    must(in >= 0 && out >= 0 && close(out) == 0, rel);
    if (in >= 0)
        close(in);
}

static int readable(const char *rel)
{
    char c;
    int fd = open(P(rel), O_RDONLY);
    if (fd < 0)
        return -1;
    int r = read(fd, &c, 1) == 1 ? 0 : -1;
    close(fd);
    return r;
}

/* Read directory REL to its end: 0 or -1. */
static int list(const char *rel)
{
    DIR *d = opendir(P(rel));
    if (!d)
        return -1;
    while (readdir(d))
        ;
    closedir(d);
    return 0;
}

static int stat_(const char *rel)
{
    struct stat st;
    return stat(P(rel), &st);
}

/* Run REL (no arguments): its exit status, or -1 with errno EACCES when
 * it may not be run. */
static int run_status(const char *rel)
{
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[] = {(char *)P(rel), NULL};
        execv(argv[0], argv);
        _exit(errno == EACCES ? 126 : 127);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
        return -1;
    if (WEXITSTATUS(st) == 126) {
        errno = EACCES;
        return -1;
    }
    return WEXITSTATUS(st);
}

/* Run REL, a script that exits with 7: 0, or -1 with errno EACCES when it
 * may not be run (EIO when it ran wrongly). */
static int run(const char *rel)
{
    int st = run_status(rel);
    return st < 0 ? -1 : st == 7 ? 0 : (errno = EIO, -1);
}

/* ---------------------------------------------------------------- */

static void user_a(void)
{
    EXPECT("owner reads its 0440 file", readable("a440"), 0);
    EXPECT("owner writes its 0440 file", open(P("a440"), O_WRONLY), EACCES);
    EXPECT("owner kept out by 0077", readable("a077"), EACCES);
    EXPECT("other reads a group-only file", readable("g040"), EACCES);
    EXPECT("access R_OK of own 0440", access(P("a440"), R_OK), 0);
    EXPECT("access W_OK of own 0440", access(P("a440"), W_OK), EACCES);
    EXPECT("O_RDONLY|O_TRUNC without write permission", open(P("a440"), O_RDONLY | O_TRUNC), EACCES);
    EXPECT("owner creates in its 0755 directory", close(open(P("adir755/mine"), O_CREAT | O_WRONLY, 0644)), 0);
    EXPECT("owner removes its file in a sticky directory", unlink(P("sticky/a666")), 0);

    /* chmod and chown by the owner */
    EXPECT("chmod g+s of own file, not in its group", chmod(P("a_g1500"), 02644), 0);
    struct stat st;
    EXPECT("stat", stat(P("a_g1500"), &st), 0);
    if ((st.st_mode & 07777) != 0644) {
        printf("FAIL: chmod 2644 by a non-member left mode %o (wanted 644)\n", st.st_mode & 07777);
        fails++;
    }
    EXPECT("chown own file to another user", chown(P("a644"), B, -1), EPERM);
    EXPECT("chown own file to itself", chown(P("a644"), A, -1), 0);
    EXPECT("chgrp own file to a group not its own", chown(P("a644"), -1, G), EPERM);
    EXPECT("chgrp own file to its group", chown(P("a644"), -1, A), 0);
    EXPECT("explicit times on own read-only file", utimensat(AT_FDCWD, P("a440"),
           (struct timespec[2]){{1, 0}, {2, 0}}, 0), 0);

    /* execute: the owner's bits decide for the owner */
    EXPECT("owner runs a 0075 script", run("a075.sh"), EACCES);
    EXPECT("owner runs a 0755 script", run("a755.sh"), 0);
}

static void user_b(void)
{
    EXPECT("other reads 0440", readable("a440"), EACCES);
    EXPECT("other reads when the owner is kept out", readable("a077"), 0);
    EXPECT("supplementary group reads 0040", readable("g040"), 0);
    EXPECT("supplementary group writes 0040", open(P("g040"), O_WRONLY), EACCES);
    EXPECT("other opens 0644 for writing", open(P("a644"), O_WRONLY), EACCES);

    /* search and read permission of a 0700 directory, names not cached */
    EXPECT("stat under another's 0700 directory", stat_("adir700/f"), EACCES);
    EXPECT("open under another's 0700 directory", open(P("adir700/f"), O_RDONLY), EACCES);
    EXPECT("access F_OK under a 0700 directory", access(P("adir700/f"), F_OK), EACCES);
    EXPECT("list another's 0700 directory", open(P("adir700"), O_RDONLY | O_DIRECTORY), EACCES);
    EXPECT("chdir into another's 0700 directory", chdir(P("adir700")), EACCES);
    EXPECT("create under another's 0700 directory", open(P("adir700/x"), O_CREAT | O_WRONLY, 0644), EACCES);
    EXPECT("list a 0711 directory", open(P("adir711"), O_RDONLY | O_DIRECTORY), EACCES);
    EXPECT("list a 0744 directory", list("adir744"), 0);
    EXPECT("stat in a listed 0744 directory", stat_("adir744/f"), EACCES);
    EXPECT("read a file in a 0711 directory", readable("adir711/f"), 0);

    /* write permission of a 0755 directory */
    EXPECT("create in another's 0755 directory", open(P("adir755/x"), O_CREAT | O_WRONLY, 0644), EACCES);
    EXPECT("mkdir in another's 0755 directory", mkdir(P("adir755/x"), 0755), EACCES);
    EXPECT("symlink in another's 0755 directory", symlink("t", P("adir755/x")), EACCES);
    EXPECT("mkfifo in another's 0755 directory", mkfifo(P("adir755/x"), 0644), EACCES);
    EXPECT("unlink in another's 0755 directory", unlink(P("adir755/f")), EACCES);
    EXPECT("rmdir in another's 0755 directory", rmdir(P("adir755/sub")), EACCES);
    EXPECT("rename out of another's 0755 directory", rename(P("adir755/f"), P("open/f")), EACCES);
    EXPECT("rename into another's 0755 directory", rename(P("open/b1"), P("adir755/b1")), EACCES);
    EXPECT("link into another's 0755 directory", link(P("open/b1"), P("adir755/b1")), EACCES);
    EXPECT("link out of another's 0700 directory, the name cached", link(P("adir700/g"), P("open/bg")), EACCES);
    EXPECT("create in an open directory", close(open(P("open/b2"), O_CREAT | O_WRONLY, 0644)), 0);
    EXPECT("exchange two files in an open directory", xchg(P("open/b1"), P("open/b2")), 0);

    /* the sticky bit */
    EXPECT("unlink another's file in a sticky directory", unlink(P("sticky/a666b")), EPERM);
    EXPECT("rename another's file in a sticky directory", rename(P("sticky/a666b"), P("sticky/y")), EPERM);
    EXPECT("rename onto another's file in a sticky directory", rename(P("sticky/b644"), P("sticky/a666b")), EPERM);
    EXPECT("rename own file in a sticky directory", rename(P("sticky/b644"), P("sticky/b644.2")), 0);
    EXPECT("exchange own file with another's in a sticky directory", xchg(P("sticky/b644.2"), P("sticky/a666b")),
           EPERM);
    EXPECT("exchange out of another's 0755 directory", xchg(P("adir755/f"), P("open/b1")), EACCES);
    EXPECT("exchange into another's 0755 directory", xchg(P("open/b1"), P("adir755/f")), EACCES);

    /* a directory moved to another directory needs write permission on itself */
    EXPECT("move own 0555 directory elsewhere", rename(P("open/bdir555"), P("open2/bdir555")), EACCES);
    EXPECT("rename own 0555 directory in place", rename(P("open/bdir555"), P("open/bdir555.2")), 0);
    EXPECT("create a file to exchange", close(open(P("open2/bx"), O_CREAT | O_WRONLY, 0644)), 0);
    EXPECT("exchange a file with own 0555 directory elsewhere", xchg(P("open2/bx"), P("open/bdir555.2")), EACCES);

    /* chmod, chown, times, truncate of another's file */
    EXPECT("chmod another's file", chmod(P("a666"), 0600), EPERM);
    EXPECT("chown another's file to oneself", chown(P("a666"), B, -1), EPERM);
    EXPECT("chgrp another's file to its own group", chown(P("a666"), -1, A), EPERM);
    EXPECT("chgrp own file to a supplementary group", chown(P("open/b1"), -1, G), 0);
    EXPECT("touch another's writable file", utimensat(AT_FDCWD, P("a666"), NULL, 0), 0);
    EXPECT("touch another's read-only file", utimensat(AT_FDCWD, P("a644"), NULL, 0), EACCES);
    EXPECT("set times of another's writable file", utimensat(AT_FDCWD, P("a666"),
           (struct timespec[2]){{1, 0}, {2, 0}}, 0), EPERM);
    EXPECT("set one time to now, the other left", utimensat(AT_FDCWD, P("a666"),
           (struct timespec[2]){{0, UTIME_NOW}, {0, UTIME_OMIT}}, 0), EPERM);
    EXPECT("truncate another's read-only file", truncate(P("a644"), 0), EACCES);
    EXPECT("truncate another's writable file", truncate(P("a666"), 1), 0);

    /* attributes of the user namespace: read and written as the contents */
    EXPECT("setxattr on another's read-only file", setxattr(P("a644"), "user.k", "v", 1, 0), EACCES);
    EXPECT("removexattr on another's read-only file", removexattr(P("a644"), "user.k"), EACCES);
    EXPECT("getxattr on another's 0600 file", getxattr(P("a600"), "user.k", NULL, 0), EACCES);
    EXPECT("getxattr on another's 0644 file", getxattr(P("a644"), "user.none", NULL, 0), ENODATA);
    EXPECT("setxattr on another's writable file", setxattr(P("a666"), "user.k", "v", 1, 0), 0);

    /* a directory's search permission taken away and given back, with
     * its names cached (an open asks the filesystem every time) */
    EXPECT("open in own directory", close(open(P("open/bdir/f"), O_RDONLY)), 0);
    EXPECT("chmod own directory 0600", chmod(P("open/bdir"), 0600), 0);
    EXPECT("open in own directory without search permission", open(P("open/bdir/f"), O_RDONLY), EACCES);
    EXPECT("chmod own directory 0700", chmod(P("open/bdir"), 0700), 0);
    EXPECT("open in own directory again", close(open(P("open/bdir/f"), O_RDONLY)), 0);
    EXPECT("rename own directory", rename(P("open/bdir"), P("open/bdir.2")), 0);
    EXPECT("mkdir 0600 where it was", mkdir(P("open/bdir"), 0600), 0);
    EXPECT("create in own 0600 directory", open(P("open/bdir/g"), O_CREAT | O_WRONLY, 0644), EACCES);

    /* calls through a descriptor once the directory lost search
     * permission: fstat (also after a write, which drops the cached
     * attributes), writes and reads */
    int wfd = open(P("open/bfd/f"), O_RDWR);
    EXPECT("open in own directory", wfd, 0);
    EXPECT("chmod own directory 0", chmod(P("open/bfd"), 0), 0);
    EXPECT("write through the descriptor", write(wfd, "zz", 2), 0);
    struct stat fst;
    EXPECT("fstat after the write", fstat(wfd, &fst), 0);
    if (fst.st_size != 2) {
        printf("FAIL: fstat after a write gave size %lld (wanted 2)\n", (long long)fst.st_size);
        fails++;
    }
    char two[2];
    EXPECT("read through the descriptor", pread(wfd, two, 2, 0), 0);
    if (wfd >= 0)
        close(wfd);
    EXPECT("chmod own directory back", chmod(P("open/bfd"), 0755), 0);

    /* execute: everyone else's bits; a program needs no read permission */
    EXPECT("other runs a 0075 script", run("a075.sh"), 0);
    EXPECT("other runs a 0750 script", run("a750.sh"), EACCES);
    EXPECT("other runs a 0711 program", run_status("a711.true"), 0);

    /* open with access mode 3 asks for read and write permission */
    EXPECT("open(O_ACCMODE) of another's 0644 file", open(P("a644"), O_ACCMODE), EACCES);

    /* a write by someone else takes the set-user-ID bit off */
    int fd = open(P("a4777"), O_WRONLY | O_APPEND);
    EXPECT("other opens a 4777 file for writing", fd, 0);
    EXPECT("other writes a 4777 file", write(fd, "y", 1), 0);
    EXPECT("close", close(fd), 0);
    struct stat st;
    EXPECT("stat", stat(P("a4777"), &st), 0);
    if ((st.st_mode & 07777) != 0777) {
        printf("FAIL: a write by another user left mode %o (wanted 777)\n", st.st_mode & 07777);
        fails++;
    }
    EXPECT("other truncates a 6777 file", truncate(P("a6777"), 1), 0);
    EXPECT("stat", stat(P("a6777"), &st), 0);
    if ((st.st_mode & 07777) != 0777) {
        printf("FAIL: a truncate by another user left mode %o (wanted 777)\n", st.st_mode & 07777);
        fails++;
    }
    fd = open(P("a6777t"), O_WRONLY | O_TRUNC);
    EXPECT("other opens a 6777 file with O_TRUNC", fd, 0);
    EXPECT("close", close(fd), 0);
    EXPECT("stat", stat(P("a6777t"), &st), 0);
    if ((st.st_mode & 07777) != 0777) {
        printf("FAIL: open(O_TRUNC) by another user left mode %o (wanted 777)\n", st.st_mode & 07777);
        fails++;
    }
    /* set-group-ID without group execution: dropped for a caller outside
     * the file's group, kept for one in it */
    fd = open(P("a2666"), O_WRONLY | O_TRUNC);
    EXPECT("other opens a 2666 file of another group with O_TRUNC", fd, 0);
    EXPECT("close", close(fd), 0);
    fd = open(P("g2666"), O_WRONLY | O_TRUNC);
    EXPECT("a group member opens a 2666 file with O_TRUNC", fd, 0);
    EXPECT("close", close(fd), 0);
    struct stat st2;
    EXPECT("stat", stat(P("a2666"), &st), 0);
    EXPECT("stat", stat(P("g2666"), &st2), 0);
    if ((st.st_mode & 07777) != 0666 || (st2.st_mode & 07777) != 02666) {
        printf("FAIL: open(O_TRUNC) left modes %o and %o (wanted 666 and 2666)\n", st.st_mode & 07777,
               st2.st_mode & 07777);
        fails++;
    }

    /* only a write drops set-ID bits for someone else: not a chmod, nor on
     * a directory */
    EXPECT("chmod taking set-group-ID off another's directory", chmod(P("sgdir"), 0777), EPERM);
    /* (Under the daemon's checks a writer's chmod that only takes the bits
     * off is the same request as the kernel's after a write, and passes.) */
    errno = 0;
    if (chmod(P("a4777b"), 0777) != 0 && errno != EPERM) {
        printf("FAIL: chmod taking set-user-ID off another's file: %s\n", strerror(errno));
        fails++;
    }
    EXPECT("chmod of another's 4777 file to 4755", chmod(P("a4777b"), 04755), EPERM);

    /* user attributes of a sticky directory: its owner's alone */
    EXPECT("setxattr on a sticky directory not one's own", setxattr(P("sticky"), "user.k", "v", 1, 0), EPERM);

    /* two names of one file: rename does nothing, whatever the permissions
     * (the kernel's own checks see two inodes in the mount and refuse) */
    errno = 0;
    if (rename(P("adir755/f"), P("adir755/f.link")) != 0 && errno != EACCES) {
        printf("FAIL: rename between two names of one file: %s\n", strerror(errno));
        fails++;
    }
    EXPECT("both names stay", readable("adir755/f") + readable("adir755/f.link"), 0);
    int held = open(P("rdir/hl_t"), O_RDONLY);
    errno = 0;
    if (rename(P("rdir/hl_s"), P("rdir/hl_t")) != 0 && errno != EACCES) {
        printf("FAIL: rename between two names of one file, one open: %s\n", strerror(errno));
        fails++;
    }
    EXPECT("the open name stays", readable("rdir/hl_t"), 0);
    if (held >= 0)
        close(held);

    /* A rename refused onto a file that is open leaves it (libfuse moves an
     * open target aside before renaming onto it). */
    EXPECT("rename another's file onto an open one in a sticky directory",
           rename(P("sticky/a666c"), P("sticky/bopen")), EPERM);
    EXPECT("the open target is still there", readable("sticky/bopen"), 0);
    errno = 0;
    int r = rename(P("open/b3"), P("open2/bopen2"));
    if (!(r == 0 || (r == -1 && errno == EBUSY))) {
        printf("FAIL: rename onto an open file in another directory: %s\n", strerror(errno));
        fails++;
    }
    EXPECT(r == 0 ? "the rename's source landed" : "the open target stays after EBUSY", readable("open2/bopen2"), 0);

    /* a path longer than PATH_MAX, made and used one directory at a time */
    char name[101];
    memset(name, 'd', 100);
    name[100] = '\0';
    int ok = chdir(P("open")) == 0;
    for (int i = 0; ok && i < 50; i++)
        ok = mkdir(name, 0755) == 0 && chdir(name) == 0;
    EXPECT("50 directories of 100-byte names", ok ? 0 : -1, 0);
    EXPECT("a file at the bottom", ok ? close(open("f", O_CREAT | O_WRONLY, 0644)) : -1, 0);
    EXPECT("access at the bottom", ok ? access("f", W_OK) : -1, 0);
}

static void user_b_many_groups(void)
{
    EXPECT("the 101st supplementary group reads 0040", readable("g040"), 0);
}

static void root_cases(void)
{
    EXPECT("root reads a 0000 file", readable("a000"), 0);
    EXPECT("root writes a 0000 file", close(open(P("a000"), O_WRONLY)), 0);
    EXPECT("root lists a 0700 directory", close(open(P("adir700"), O_RDONLY | O_DIRECTORY)), 0);
    EXPECT("access X_OK by root, no execute bit", access(P("a644"), X_OK), EACCES);
    EXPECT("access X_OK by root, one execute bit", access(P("a075.sh"), X_OK), 0);
    EXPECT("root runs a file no one may run", run("a644"), EACCES);
    EXPECT("root unlinks in another's sticky directory", unlink(P("sticky/b644.2")), 0);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fs_perm DIR (as root)\n");
        return 2;
    }
    if (geteuid() != 0) {
        fprintf(stderr, "fs_perm: run it as root\n");
        return 2;
    }
    snprintf(base, sizeof base, "%s/perm.%ld", argv[1], (long)getpid());
    umask(0);
    must(mkdir(base, 0755) == 0, base);
    const char *sh = "#!/bin/sh\nexit 7\n";
    mkfile("a440", "x", A, A, 0440);
    mkfile("a077", "x", A, A, 0077);
    mkfile("a644", "x", A, A, 0644);
    mkfile("a600", "x", A, A, 0600);
    mkfile("a666", "xyz", A, A, 0666);
    mkfile("a000", "x", A, A, 0000);
    mkfile("g040", "x", 0, G, 0040);
    mkfile("a_g1500", "x", A, G, 0644);
    mkfile("a075.sh", sh, A, A, 0075);
    mkfile("a755.sh", sh, A, A, 0755);
    mkfile("a750.sh", sh, A, A, 0750);
    mkdirat_("adir700", A, A, 0700);
    mkfile("adir700/f", "x", A, A, 0644);
    mkfile("adir700/g", "x", A, A, 0644);
    mkdirat_("adir711", A, A, 0711);
    mkfile("adir711/f", "x", A, A, 0644);
    mkdirat_("adir744", A, A, 0744);
    mkfile("adir744/f", "x", A, A, 0644);
    mkdirat_("adir755", A, A, 0755);
    mkfile("adir755/f", "x", A, A, 0644);
    mkdirat_("adir755/sub", A, A, 0755);
    mkdirat_("sticky", 0, 0, 01777);
    mkfile("sticky/a666", "x", A, A, 0666);
    mkfile("sticky/a666b", "x", A, A, 0666);
    mkfile("sticky/b644", "x", B, B, 0644);
    mkfile("a711.true", "", A, A, 0711);
    mkfile("a4777", "x", A, A, 04777);
    mkfile("a4777b", "x", A, A, 04777);
    mkdirat_("sgdir", 0, 0, 02777);
    mkfile("a6777", "xy", A, A, 06777);
    mkfile("a6777t", "xy", A, A, 06777);
    mkfile("a2666", "xy", A, A, 02666);
    mkfile("g2666", "xy", A, G, 02666);
    mkfile("sticky/a666c", "x", A, A, 0666);
    mkfile("sticky/bopen", "keep", B, B, 0644);
    mkdirat_("open", 0, 0, 0777);
    mkdirat_("open2", 0, 0, 0777);
    mkfile("open/b1", "x", B, B, 0644);
    mkfile("open/b3", "new", B, B, 0644);
    mkfile("open2/bopen2", "keep", B, B, 0644);
    mkdirat_("open/bdir555", B, B, 0555);
    mkdirat_("open/bdir", B, B, 0755);
    mkdirat_("open/bfd", B, B, 0755);
    mkfile("open/bfd/f", "", B, B, 0644);
    mkfile("open/bdir/f", "x", B, B, 0644);
    setxattr(P("a644"), "user.k", "v", 1, 0);
    setxattr(P("a600"), "user.k", "v", 1, 0);
    drop_names();
    as(A, user_a);
    must(link(P("adir755/f"), P("adir755/f.link")) == 0, "adir755/f.link");
    mkdirat_("rdir", 0, 0, 0755);
    mkfile("rdir/hl_t", "x", 0, 0, 0644);
    must(link(P("rdir/hl_t"), P("rdir/hl_s")) == 0, "rdir/hl_s");
    copy_true("a711.true");
    drop_names();
    struct stat cached;
    must(stat(P("adir700/g"), &cached) == 0, "adir700/g");   /* (root's lookup caches the name) */
    int held1 = open(P("sticky/bopen"), O_RDONLY), held2 = open(P("open2/bopen2"), O_RDONLY);
    must(held1 >= 0 && held2 >= 0, "holding targets open");
    as(B, user_b);
    as_groups(B, 100, user_b_many_groups);
    close(held1);
    close(held2);
    drop_names();
    EXPECT("the open target is still there once closed", readable("sticky/bopen"), 0);
    EXPECT("the open name stays once closed", readable("rdir/hl_t"), 0);
    root_cases();
    printf("fs_perm: %d failure(s)\n", fails);
    return fails ? 1 : 0;
}
