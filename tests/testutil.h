/*
 * testutil.h - small helpers shared by the cmocka test programs: scratch
 * directories that are removed afterwards, and a seeded random generator
 * whose seed is printed so a failing run can be replayed (TEST_SEED=N).
 */
#ifndef STASH_TESTUTIL_H
#define STASH_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <ftw.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A fresh empty directory under $TMPDIR (or /tmp); PATH gets its name. */
static inline void tu_mkdtemp(char *path, size_t len)
{
    const char *base = getenv("TMPDIR");
    snprintf(path, len, "%s/stashtest.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(path)) {
        perror("mkdtemp");
        abort();
    }
}

static inline int tu_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb; (void)flag; (void)f;
    return remove(p);
}

/* Remove a directory tree (best effort). */
static inline void tu_rmrf(const char *path)
{
    nftw(path, tu_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* The running test's scratch directory: made by tu_setup, removed with
 * everything in it by tu_teardown (cmocka setup/teardown functions). */
static char dir[512] __attribute__((unused));

static inline int tu_setup(void **state)
{
    (void)state;
    tu_mkdtemp(dir, sizeof dir);
    return 0;
}

static inline int tu_teardown(void **state)
{
    (void)state;
    tu_rmrf(dir);
    return 0;
}

/* The path of the value file in the scratch directory that holds chunks
 * (more than its 16-byte header), in P; "" if there is none. */
static inline void tu_value_file(char *p, size_t len)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char q[sizeof dir + 300];
    struct stat st;
    *p = 0;
    while (d && (de = readdir(d))) {
        size_t l = strlen(de->d_name);
        snprintf(q, sizeof q, "%s/%s", dir, de->d_name);
        if (l > 4 && !strcmp(de->d_name + l - 4, ".val") && stat(q, &st) == 0 && st.st_size > 32)
            snprintf(p, len, "%s", q);
    }
    if (d)
        closedir(d);
}

/* xorshift64*: deterministic per seed. */
static inline uint64_t tu_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* The seed for this run: $TEST_SEED, or DEFAULT; printed either way. */
static inline uint64_t tu_seed(const char *prog, uint64_t def)
{
    const char *e = getenv("TEST_SEED");
    uint64_t s = e && *e ? strtoull(e, NULL, 0) : def;
    if (s == 0)
        s = 1;
    printf("%s: seed %llu (replay with TEST_SEED=%llu)\n", prog,
           (unsigned long long)s, (unsigned long long)s);
    fflush(stdout);
    return s;
}

/* Run only the tests whose names match $TEST_FILTER (cmocka's * and ?). */
static inline void tu_filter(void)
{
    const char *f = getenv("TEST_FILTER");
    if (f && *f)
        cmocka_set_test_filter(f);
}

#endif
