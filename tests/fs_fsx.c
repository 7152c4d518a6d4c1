/*
 * fs_fsx.c - a file-operation exerciser in the manner of fsx: random
 * writes, reads, truncations (up and down), fallocate (allocating, punching
 * holes, zeroing ranges; left out where the filesystem answers
 * EOPNOTSUPP), fsyncs, reopens and reads and writes through shared memory
 * mappings on one file, checked against a copy kept in memory after every
 * operation that returns data.
 *
 *   fs_fsx FILE [OPS [SEED [MAXLEN]]]
 *
 * Works on any filesystem.  Prints the seed; on the first difference it
 * prints the operation, the offset and the last operations, and exits 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *path;
static int fd = -1;
static uint8_t *model;          /* the file as it should be */
static size_t size, maxlen;
static uint64_t rng;
static char history[16][96];
static long opno;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void note(const char *fmt, long a, long b)
{
    snprintf(history[opno % 16], sizeof history[0], "%ld: ", opno);
    size_t n = strlen(history[opno % 16]);
    snprintf(history[opno % 16] + n, sizeof history[0] - n, fmt, a, b);
}

static void fail(const char *what, long off)
{
    fprintf(stderr, "fs_fsx: op %ld: %s at offset %ld (file size %zu): %s\n", opno, what, off, size,
            errno ? strerror(errno) : "mismatch");
    fprintf(stderr, "last operations:\n");
    for (long i = opno > 15 ? opno - 15 : 0; i <= opno; i++)
        fprintf(stderr, "  %s\n", history[i % 16]);
    exit(1);
}

static void reopen(void)
{
    if (fd >= 0 && close(fd) < 0)
        fail("close", 0);
    fd = open(path, O_RDWR);
    if (fd < 0)
        fail("open", 0);
}

static void check_range(size_t off, size_t len)
{
    uint8_t *buf = malloc(len ? len : 1);
    ssize_t got = pread(fd, buf, len, (off_t)off);
    size_t want = off >= size ? 0 : (size - off < len ? size - off : len);
    errno = 0;
    if (got < 0)
        fail("read", (long)off);
    if ((size_t)got != want)
        fail("short or long read", (long)off);
    for (size_t i = 0; i < want; i++)
        if (buf[i] != model[off + i])
            fail("read: wrong byte", (long)(off + i));
    free(buf);
}

static void op_write(void)
{
    size_t off = (size_t)(rnd() % maxlen), len = (size_t)(rnd() % (maxlen / 8) + 1);
    if (off + len > maxlen)
        len = maxlen - off;
    uint8_t *buf = malloc(len);
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(rnd() >> 24);
    note("write off %ld len %ld", (long)off, (long)len);
    ssize_t w = pwrite(fd, buf, len, (off_t)off);
    if (w != (ssize_t)len)
        fail("write", (long)off);
    memcpy(model + off, buf, len);
    if (off + len > size)
        size = off + len;
    free(buf);
}

static void op_truncate(void)
{
    size_t ns = (size_t)(rnd() % maxlen);
    note("truncate to %ld (from %ld)", (long)ns, (long)size);
    if (ftruncate(fd, (off_t)ns) < 0)
        fail("truncate", (long)ns);
    if (ns < size)
        memset(model + ns, 0, size - ns);   /* beyond the end, the model holds zeros */
    size = ns;
    struct stat st;
    if (fstat(fd, &st) < 0 || (size_t)st.st_size != size)
        fail("size after truncate", (long)ns);
}

/* fallocate in one of the modes that keep the file's other bytes. */
static int falloc_ok = 1;
static void op_falloc(void)
{
    static const int modes[] = { 0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                 FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE };
    int mode = modes[rnd() % 5];
    size_t off = (size_t)(rnd() % maxlen), len = (size_t)(rnd() % (maxlen / 4) + 1);
    if (off + len > maxlen)
        len = maxlen - off;
    note("fallocate mode %ld off %ld", (long)mode, (long)off);
    if (fallocate(fd, mode, (off_t)off, (off_t)len) < 0) {
        if (errno == EOPNOTSUPP) {
            falloc_ok = 0;
            return;
        }
        fail("fallocate", (long)off);
    }
    if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
        memset(model + off, 0, off >= size ? 0 : size - off < len ? size - off : len);
    if (!(mode & FALLOC_FL_KEEP_SIZE) && off + len > size)
        size = off + len;
    struct stat st;
    if (fstat(fd, &st) < 0 || (size_t)st.st_size != size)
        fail("size after fallocate", (long)off);
}

/* Read or write through a shared mapping of part of the file. */
static void op_map(int write)
{
    if (size == 0)
        return;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t off = (size_t)(rnd() % size), len = (size_t)(rnd() % (maxlen / 8) + 1);
    if (off + len > size)
        len = size - off;
    size_t moff = off / page * page;
    note(write ? "mapwrite off %ld len %ld" : "mapread off %ld len %ld", (long)off, (long)len);
    uint8_t *p = mmap(NULL, off + len - moff, PROT_READ | (write ? PROT_WRITE : 0), MAP_SHARED, fd,
                      (off_t)moff);
    if (p == MAP_FAILED)
        fail("mmap", (long)off);
    if (write) {
        for (size_t i = 0; i < len; i++)
            model[off + i] = p[off - moff + i] = (uint8_t)(rnd() >> 24);
        if (msync(p, off + len - moff, MS_SYNC) < 0)
            fail("msync", (long)off);
    } else {
        errno = 0;
        for (size_t i = 0; i < len; i++)
            if (p[off - moff + i] != model[off + i])
                fail("mapread: wrong byte", (long)(off + i));
    }
    munmap(p, off + len - moff);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: fs_fsx FILE [OPS [SEED [MAXLEN]]]\n");
        return 2;
    }
    path = argv[1];
    long ops = argc > 2 ? atol(argv[2]) : 10000;
    rng = argc > 3 ? strtoull(argv[3], NULL, 10) : (uint64_t)time(NULL);
    maxlen = argc > 4 ? (size_t)atol(argv[4]) : 256 * 1024;
    if (!rng)
        rng = 1;
    printf("fs_fsx: %ld operations, seed %llu, files up to %zu bytes (replay: fs_fsx FILE %ld %llu %zu)\n",
           ops, (unsigned long long)rng, maxlen, ops, (unsigned long long)rng, maxlen);
    model = calloc(1, maxlen);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || !model)
        fail("create", 0);
    for (opno = 0; opno < ops; opno++) {
        unsigned r = (unsigned)(rnd() % 100);
        errno = 0;
        if (r < 35) {
            op_write();
        } else if (r < 60) {
            size_t off = size ? (size_t)(rnd() % (size + 100)) : 0, len = (size_t)(rnd() % (maxlen / 8) + 1);
            note("read off %ld len %ld", (long)off, (long)len);
            check_range(off, len);
        } else if (r < 68) {
            op_truncate();
        } else if (r < 75) {
            op_map(0);
        } else if (r < 81) {
            op_map(1);
        } else if (r < 87) {
            if (falloc_ok)
                op_falloc();
        } else if (r < 90) {
            note("fsync (size %ld)%.0ld", (long)size, 0);
            if (fsync(fd) < 0)
                fail("fsync", 0);
        } else {
            note("reopen (size %ld)%.0ld", (long)size, 0);
            reopen();
        }
    }
    /* The whole file, after a last reopen. */
    reopen();
    errno = 0;
    check_range(0, size + 1);
    close(fd);
    printf("fs_fsx: %ld operations passed, final size %zu\n", ops, size);
    return 0;
}
