/*
 * fsbench-files.c - the per-file loops of tools/fsbench, timed call by call:
 * create, stat, read and unlink of many small files spread over
 * directories, and files written with an fsync each.  Works on any
 * directory (any filesystem).
 *
 *   fsbench-files DIR PHASE FILES DIRS SIZE
 *     PHASE: create | stat | read | unlink | fsync
 *   fsbench-files FILE randwrite|randread OPS SEED SIZE
 *
 * Prints one line: "PHASE ops/s p50_us p99_us".  create, read, unlink and
 * fsync touch DIR/dNNN/fNNNNNN; fsync uses its own names (DIR/s/fNNNNNN).
 * randwrite and randread write or read OPS blocks of SIZE bytes at random
 * block-aligned offsets inside an existing FILE (its size stays), with the
 * offsets drawn from SEED; the writes are not synced.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void die(const char *what, const char *path)
{
    fprintf(stderr, "fsbench-files: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static void report(const char *phase, long n, double total, double *lat)
{
    qsort(lat, (size_t)n, sizeof *lat, cmp_d);
    printf("%s %.0f %.1f %.1f\n", phase, n / (total / 1e6), lat[n / 2], lat[n * 99 / 100]);
}

/* OPS random block-sized writes or reads of FILE (xorshift offsets). */
static int random_io(const char *file, const char *phase, long ops, unsigned long seed, char *buf,
                     size_t size, double *lat)
{
    int wr = !strcmp(phase, "randwrite");
    int fd = open(file, wr ? O_WRONLY : O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        die("open", file);
    unsigned long blocks = (unsigned long)st.st_size / size, x = seed * 2654435761UL + 1;
    if (blocks == 0) {
        fprintf(stderr, "fsbench-files: %s is smaller than one block\n", file);
        return 1;
    }
    double t0 = now_us();
    for (long i = 0; i < ops; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        off_t off = (off_t)(x % blocks) * (off_t)size;
        double t = now_us();
        ssize_t n = wr ? pwrite(fd, buf, size, off) : pread(fd, buf, size, off);
        if (n != (ssize_t)size)
            die(phase, file);
        lat[i] = now_us() - t;
    }
    double total = now_us() - t0;
    if (close(fd) < 0)
        die("close", file);
    report(phase, ops, total, lat);
    free(buf);
    free(lat);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: fsbench-files DIR create|stat|read|unlink|fsync FILES DIRS SIZE\n"
                        "       fsbench-files FILE randwrite|randread OPS SEED SIZE\n");
        return 2;
    }
    const char *dir = argv[1], *phase = argv[2];
    long files = atol(argv[3]), dirs = atol(argv[4]);
    size_t size = (size_t)atol(argv[5]);
    if (files <= 0 || dirs <= 0 || size == 0)
        return 2;
    char *buf = malloc(size + 1);
    memset(buf, 'x', size);
    double *lat = malloc(sizeof(double) * (size_t)files);
    if (!strcmp(phase, "randwrite") || !strcmp(phase, "randread"))
        return random_io(dir, phase, files, (unsigned long)dirs, buf, size, lat);
    char path[4096];
    int fsync_phase = !strcmp(phase, "fsync");
    if (!strcmp(phase, "create") || fsync_phase) {
        for (long d = 0; d < (fsync_phase ? 1 : dirs); d++) {
            if (fsync_phase)
                snprintf(path, sizeof path, "%s/s", dir);
            else
                snprintf(path, sizeof path, "%s/d%03ld", dir, d);
            if (mkdir(path, 0755) < 0 && errno != EEXIST)
                die("mkdir", path);
        }
    }
    double t0 = now_us();
    for (long i = 0; i < files; i++) {
        if (fsync_phase)
            snprintf(path, sizeof path, "%s/s/f%06ld", dir, i);
        else
            snprintf(path, sizeof path, "%s/d%03ld/f%06ld", dir, i % dirs, i);
        double t = now_us();
        if (!strcmp(phase, "create") || fsync_phase) {
            int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd < 0)
                die("create", path);
            if (write(fd, buf, size) != (ssize_t)size)
                die("write", path);
            if (fsync_phase && fsync(fd) < 0)
                die("fsync", path);
            if (close(fd) < 0)
                die("close", path);
        } else if (!strcmp(phase, "stat")) {
            struct stat st;
            if (stat(path, &st) < 0)
                die("stat", path);
        } else if (!strcmp(phase, "read")) {
            int fd = open(path, O_RDONLY);
            if (fd < 0)
                die("open", path);
            if (read(fd, buf, size + 1) != (ssize_t)size)
                die("read", path);
            close(fd);
        } else if (!strcmp(phase, "unlink")) {
            if (unlink(path) < 0)
                die("unlink", path);
        } else {
            fprintf(stderr, "fsbench-files: unknown phase %s\n", phase);
            return 2;
        }
        lat[i] = now_us() - t;
    }
    report(phase, files, now_us() - t0, lat);
    free(buf);
    free(lat);
    return 0;
}
