/*
 * test_file.c - values as files: ranged reads and writes, truncation,
 * attributes, renames, large (chunked) values through every API, keys that
 * start with 0xFF, and a randomized model test of pwrite/truncate/pread
 * against an in-memory buffer with reopens and compactions.
 */
#include "testutil.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <errno.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "batch.h"
#include "dbint.h"
#include "smartstash.h"
#include "value.h"


static void small_opts(stash_options_t *o)
{
    stash_options_init(o);
    o->memtable_size = 256 << 10;      /* flushes and compactions happen */
    o->target_file_size = 256 << 10;
    o->level1_max_bytes = 1 << 20;
}

static stash_t *open_small(void)
{
    stash_options_t o;
    small_opts(&o);
    stash_t *db = NULL;
    int rc = stash_open(dir, &o, &db);
    if (rc)
        fprintf(stderr, "stash_open: %s\n", stash_last_error(NULL));
    assert_int_equal(rc, 0);
    return db;
}

/* Bytes of the store's files on disk. */
/* A log's size without the zeros kept ahead of its records. */
static uint64_t log_bytes(const char *path, uint64_t size)
{
    FILE *f = fopen(path, "rb");
    uint64_t end = 0, at = 0;
    int c;
    while (f && (c = getc(f)) != EOF) {
        at++;
        if (c)
            end = at;
    }
    if (f)
        fclose(f);
    return f ? end : size;
}

/* Bytes the store takes on disk: its files, a log without its zeros. */
static uint64_t disk_bytes(void)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    uint64_t n = 0;
    char p[1024];
    while ((de = readdir(d))) {
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        size_t l = strlen(de->d_name);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode))
            n += l > 4 && !strcmp(de->d_name + l - 4, ".log") ? log_bytes(p, (uint64_t)st.st_size)
                                                             : (uint64_t)st.st_size;
    }
    closedir(d);
    return n;
}

static void fill(uint8_t *p, size_t n, uint64_t *seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(tu_rand(seed) >> 32);
}

/* Assert KEY reads back exactly WANT (N bytes) through get, pread and stat. */
static void check_value(stash_t *db, const char *key, const uint8_t *want, size_t n)
{
    void *v;
    size_t vl;
    assert_int_equal(stash_get(db, key, strlen(key), &v, &vl), 0);
    assert_int_equal(vl, n);
    assert_memory_equal(v, want, n);
    stash_free(v);
    uint64_t sz;
    assert_int_equal(stash_value_size(db, key, strlen(key), &sz), 0);
    assert_int_equal(sz, n);
    uint8_t *buf = malloc(n + 10);
    size_t got;
    assert_int_equal(stash_pread(db, key, strlen(key), buf, n + 10, 0, &got), 0);
    assert_int_equal(got, n);
    assert_memory_equal(buf, want, n);
    free(buf);
}

static void test_large_values(void **state)
{
    (void)state;
    stash_t *db = open_small();
    uint64_t seed = 7;
    size_t n = 3 * 1024 * 1024 + 123;
    uint8_t *big = malloc(n);
    fill(big, n, &seed);
    assert_int_equal(stash_put(db, "big", 3, big, n), 0);
    assert_int_equal(stash_put(db, "small", 5, "x", 1), 0);
    check_value(db, "big", big, n);

    /* A ranged read in the middle, across chunk boundaries. */
    uint8_t buf[200000];
    size_t got;
    assert_int_equal(stash_pread(db, "big", 3, buf, sizeof buf, 1000000, &got), 0);
    assert_int_equal(got, sizeof buf);
    assert_memory_equal(buf, big + 1000000, sizeof buf);
    assert_int_equal(stash_pread(db, "big", 3, buf, sizeof buf, n - 5, &got), 0);
    assert_int_equal(got, 5);
    assert_int_equal(stash_pread(db, "big", 3, buf, sizeof buf, n + 5, &got), 0);
    assert_int_equal(got, 0);

    /* Iterators give the whole value and never show chunks. */
    stash_iter_t *it = stash_iter_new(db, NULL);
    int seen = 0;
    for (stash_iter_seek_first(it); stash_iter_valid(it); stash_iter_next(it)) {
        size_t kl, vl;
        const char *k = stash_iter_key(it, &kl);
        const void *v = stash_iter_value(it, &vl);
        if (kl == 3 && !memcmp(k, "big", 3)) {
            assert_int_equal(vl, n);
            assert_memory_equal(v, big, n);
        } else {
            assert_int_equal(kl, 5);
            assert_memory_equal(k, "small", 5);
        }
        seen++;
    }
    assert_int_equal(stash_iter_status(it), 0);
    assert_int_equal(seen, 2);
    stash_iter_free(it);

    /* Survives a reopen and a compaction. */
    assert_int_equal(stash_close(db), 0);
    db = open_small();
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    check_value(db, "big", big, n);

    /* Overwriting and deleting large values frees their chunks. */
    for (int i = 0; i < 5; i++) {
        big[0] = (uint8_t)i;
        assert_int_equal(stash_put(db, "big", 3, big, n), 0);
    }
    check_value(db, "big", big, n);
    assert_int_equal(stash_delete(db, "big", 3), 0);
    void *v;
    size_t vl;
    assert_int_equal(stash_get(db, "big", 3, &v, &vl), -ENOENT);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    assert_int_equal(stash_close(db), 0);
    db = open_small();
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    printf("store after deleting every large value: %llu bytes\n", (unsigned long long)disk_bytes());
    assert_true(disk_bytes() < n / 2);
    assert_int_equal(stash_close(db), 0);
    free(big);
}

static void test_ff_keys(void **state)
{
    (void)state;
    stash_t *db = open_small();
    const char *keys[] = {"\xff", "\xff\x01", "\xff\xff", "\xfe", "a"};
    for (int i = 0; i < 5; i++)
        assert_int_equal(stash_put(db, keys[i], strlen(keys[i]), keys[i], strlen(keys[i])), 0);
    /* Sorted order: a, \xfe, \xff, \xff\x01, \xff\xff. */
    const char *order[] = {"a", "\xfe", "\xff", "\xff\x01", "\xff\xff"};
    stash_iter_t *it = stash_iter_new(db, NULL);
    int i = 0;
    for (stash_iter_seek_first(it); stash_iter_valid(it); stash_iter_next(it), i++) {
        size_t kl, vl;
        const char *k = stash_iter_key(it, &kl);
        const char *v = stash_iter_value(it, &vl);
        assert_true(i < 5);
        assert_int_equal(kl, strlen(order[i]));
        assert_memory_equal(k, order[i], kl);
        assert_int_equal(vl, kl);
        assert_memory_equal(v, order[i], kl);
    }
    assert_int_equal(i, 5);
    stash_iter_seek(it, "\xff\x00", 2);
    assert_true(stash_iter_valid(it));
    size_t kl;
    const char *k = stash_iter_key(it, &kl);
    assert_int_equal(kl, 2);
    assert_memory_equal(k, "\xff\x01", 2);
    stash_iter_free(it);
    /* A large value under a 0xFF key, and the chunks stay hidden. */
    uint8_t big[200000];
    memset(big, 0xab, sizeof big);
    assert_int_equal(stash_put(db, "\xff\xff\xff", 3, big, sizeof big), 0);
    check_value(db, "\xff\xff\xff", big, sizeof big);
    it = stash_iter_new(db, NULL);
    i = 0;
    for (stash_iter_seek_first(it); stash_iter_valid(it); stash_iter_next(it))
        i++;
    assert_int_equal(i, 6);
    stash_iter_free(it);
    assert_int_equal(stash_close(db), 0);
}

static void test_stat_and_create(void **state)
{
    (void)state;
    stash_t *db = open_small();
    stash_stat_t st;
    assert_int_equal(stash_stat(db, NULL, "k", 1, &st), -ENOENT);
    assert_int_equal(stash_put(db, "k", 1, "hello", 5), 0);
    assert_int_equal(stash_stat(db, NULL, "k", 1, &st), 0);
    assert_int_equal(st.size, 5);
    assert_int_equal(st.mode, 0);
    assert_true(st.mtime_ns > 0);

    stash_stat_t set = {.mode = 0100600, .uid = 12, .gid = 34, .atime_ns = 111, .mtime_ns = 222000000333};
    assert_int_equal(stash_setstat(db, "k", 1, &set, STASH_SET_MODE | STASH_SET_UID | STASH_SET_GID |
                                                        STASH_SET_ATIME | STASH_SET_MTIME), 0);
    assert_int_equal(stash_stat(db, NULL, "k", 1, &st), 0);
    assert_int_equal(st.mode, 0100600);
    assert_int_equal(st.uid, 12);
    assert_int_equal(st.gid, 34);
    assert_int_equal(st.atime_ns, 111);
    assert_int_equal(st.mtime_ns, 222000000333);
    check_value(db, "k", (const uint8_t *)"hello", 5);   /* attributes never show in the value */
    assert_int_equal(stash_setstat(db, "nope", 4, &set, STASH_SET_MODE), -ENOENT);

    /* A put value has no inode number until one is set; a rename keeps it. */
    assert_int_equal(stash_put(db, "p", 1, "plain", 5), 0);
    assert_int_equal(stash_stat(db, NULL, "p", 1, &st), 0);
    assert_int_equal(st.ino, 0);
    assert_int_equal(stash_setstat(db, "p", 1, &(stash_stat_t){.ino = 0}, STASH_SET_INO), -EINVAL);
    assert_int_equal(stash_setstat(db, "p", 1, &(stash_stat_t){.ino = 0x1234567890abcdefull}, STASH_SET_INO), 0);
    assert_int_equal(stash_rename(db, "p", 1, "q", 1, 0), 0);
    assert_int_equal(stash_stat(db, NULL, "q", 1, &st), 0);
    assert_int_equal(st.ino, 0x1234567890abcdefull);
    assert_int_equal(st.mode, 0);
    check_value(db, "q", (const uint8_t *)"plain", 5);
    assert_int_equal(stash_delete(db, "q", 1), 0);

    assert_int_equal(stash_create(db, "k", 1, &set, STASH_EXCL), -EEXIST);
    assert_int_equal(stash_create(db, "k", 1, &set, 0), 0);
    check_value(db, "k", (const uint8_t *)"", 0);
    assert_int_equal(stash_stat(db, NULL, "k", 1, &st), 0);
    assert_int_equal(st.mode, 0100600);
    /* pwrite keeps attributes and moves mtime. */
    assert_int_equal(stash_pwrite(db, "k", 1, "abc", 3, 10), 0);
    assert_int_equal(stash_stat(db, NULL, "k", 1, &st), 0);
    assert_int_equal(st.size, 13);
    assert_int_equal(st.mode, 0100600);
    assert_true(st.mtime_ns > 222000000333);
    check_value(db, "k", (const uint8_t *)"\0\0\0\0\0\0\0\0\0\0abc", 13);
    /* Survives a reopen. */
    assert_int_equal(stash_close(db), 0);
    db = open_small();
    assert_int_equal(stash_stat(db, NULL, "k", 1, &st), 0);
    assert_int_equal(st.mode, 0100600);
    assert_int_equal(st.uid, 12);
    assert_int_equal(stash_pwrite(db, "k", 1, "x", 1, STASH_MAX_FILE), -EFBIG);
    assert_int_equal(stash_truncate(db, "nope", 4, 0), -ENOENT);

    /* An iterator gives each entry's attributes as stash_stat does: a plain
     * value, one with attributes, a chunked one. */
    assert_int_equal(stash_put(db, "j", 1, "plain", 5), 0);
    static uint8_t big[300000];
    memset(big, 7, sizeof big);
    assert_int_equal(stash_pwrite(db, "l", 1, big, sizeof big, 5), 0);
    stash_iter_t *it = stash_iter_new(db, NULL);
    assert_int_equal(stash_iter_stat(it, &st), -EINVAL);   /* not on an entry */
    int n = 0;
    for (stash_iter_seek_first(it); stash_iter_valid(it); stash_iter_next(it), n++) {
        size_t kl;
        const char *k = stash_iter_key(it, &kl);
        stash_stat_t want;
        assert_int_equal(stash_stat(db, NULL, k, kl, &want), 0);
        assert_int_equal(stash_iter_stat(it, &st), 0);
        assert_int_equal(st.size, want.size);
        assert_int_equal(st.mode, want.mode);
        assert_int_equal(st.uid, want.uid);
        assert_int_equal(st.gid, want.gid);
        assert_int_equal(st.atime_ns, want.atime_ns);
        assert_int_equal(st.mtime_ns, want.mtime_ns);
        assert_int_equal(st.ctime_ns, want.ctime_ns);
    }
    assert_int_equal(n, 3);
    stash_iter_free(it);
    assert_int_equal(stash_stat(db, NULL, "l", 1, &st), 0);
    assert_int_equal(st.size, sizeof big + 5);
    assert_int_equal(stash_close(db), 0);
}

static void test_rename(void **state)
{
    (void)state;
    stash_t *db = open_small();
    uint8_t big[300000];
    uint64_t seed = 3;
    fill(big, sizeof big, &seed);
    assert_int_equal(stash_put(db, "a", 1, big, sizeof big), 0);
    assert_int_equal(stash_put(db, "b", 1, "bee", 3), 0);
    assert_int_equal(stash_rename(db, "a", 1, "b", 1, STASH_NOREPLACE), -EEXIST);
    assert_int_equal(stash_rename(db, "zz", 2, "b", 1, 0), -ENOENT);
    assert_int_equal(stash_rename(db, "a", 1, "c", 1, 0), 0);
    void *v;
    size_t vl;
    assert_int_equal(stash_get(db, "a", 1, &v, &vl), -ENOENT);
    check_value(db, "c", big, sizeof big);
    assert_int_equal(stash_rename(db, "b", 1, "c", 1, 0), 0);
    check_value(db, "c", (const uint8_t *)"bee", 3);

    /* Prefix moves: a directory tree, with a large value inside. */
    assert_int_equal(stash_put(db, "d/1", 3, "one", 3), 0);
    assert_int_equal(stash_put(db, "d/2/x", 5, big, sizeof big), 0);
    assert_int_equal(stash_put(db, "d0", 2, "not moved", 9), 0);
    assert_int_equal(stash_put(db, "e/1", 3, "old", 3), 0);
    uint64_t moved;
    assert_int_equal(stash_rename_prefix(db, "d/", 2, "e/", 2, &moved), 0);
    assert_int_equal(moved, 2);
    check_value(db, "e/1", (const uint8_t *)"one", 3);
    check_value(db, "e/2/x", big, sizeof big);
    check_value(db, "d0", (const uint8_t *)"not moved", 9);
    assert_int_equal(stash_get(db, "d/1", 3, &v, &vl), -ENOENT);
    assert_int_equal(stash_rename_prefix(db, "e/", 2, "e/f/", 4, NULL), -EINVAL);
    /* A move stops at the end of its prefix (past it lie only deleted keys
     * and then "e0"), and moves only the prefix. */
    for (int i = 0; i < 500; i++) {
        char k[32];
        snprintf(k, sizeof k, "e/3/%04d", i);
        assert_int_equal(stash_put(db, k, strlen(k), "x", 1), 0);
        assert_int_equal(stash_delete(db, k, strlen(k)), 0);
    }
    assert_int_equal(stash_put(db, "e0", 2, "after", 5), 0);
    assert_int_equal(stash_rename_prefix(db, "e/", 2, "g/", 2, &moved), 0);
    assert_int_equal(moved, 2);
    check_value(db, "e0", (const uint8_t *)"after", 5);
    check_value(db, "g/1", (const uint8_t *)"one", 3);
    assert_int_equal(stash_rename_prefix(db, "g/", 2, "e/", 2, &moved), 0);
    assert_int_equal(stash_close(db), 0);
    db = open_small();
    check_value(db, "e/2/x", big, sizeof big);
    assert_int_equal(stash_close(db), 0);
}

/* Two moves at once (stash_rename2): keys swapped, key ranges swapped, a
 * key swapped with a range; what is refused; all of it across a reopen. */
static void test_rename2(void **state)
{
    (void)state;
    stash_t *db = open_small();
    uint8_t big[300000];
    uint64_t seed = 5;
    fill(big, sizeof big, &seed);
    assert_int_equal(stash_put(db, "a", 1, big, sizeof big), 0);
    assert_int_equal(stash_put(db, "b", 1, "bee", 3), 0);
    assert_int_equal(stash_setxattr(db, "b", 1, "user.x", "1", 1, 0), 0);
    assert_int_equal(stash_rename2(db, "a", 1, "b", 1, "b", 1, "a", 1, 0), 0);
    check_value(db, "a", (const uint8_t *)"bee", 3);
    check_value(db, "b", big, sizeof big);
    char x[8];
    size_t xl;
    assert_int_equal(stash_getxattr(db, NULL, "a", 1, "user.x", x, sizeof x, &xl), 0);
    assert_int_equal(stash_getxattr(db, NULL, "b", 1, "user.x", x, sizeof x, &xl), -ENODATA);
    /* The large value's chunks follow their new name: a write through it. */
    assert_int_equal(stash_pwrite(db, "b", 1, "zz", 2, 1000), 0);
    memcpy(big + 1000, "zz", 2);
    check_value(db, "b", big, sizeof big);

    /* Two key ranges (directories), one holding a large value. */
    assert_int_equal(stash_put(db, "d/", 2, "", 0), 0);
    assert_int_equal(stash_put(db, "d/1", 3, "one", 3), 0);
    assert_int_equal(stash_put(db, "d/2/x", 5, big, sizeof big), 0);
    assert_int_equal(stash_put(db, "e/", 2, "E", 1), 0);
    assert_int_equal(stash_put(db, "e/1", 3, "eins", 4), 0);
    assert_int_equal(stash_put(db, "e/9", 3, "neun", 4), 0);
    assert_int_equal(stash_put(db, "d0", 2, "stays", 5), 0);
    assert_int_equal(stash_rename2(db, "d/", 2, "e/", 2, "e/", 2, "d/", 2, STASH_PREFIX1 | STASH_PREFIX2), 0);
    check_value(db, "d/", (const uint8_t *)"E", 1);
    check_value(db, "d/1", (const uint8_t *)"eins", 4);
    check_value(db, "d/9", (const uint8_t *)"neun", 4);
    check_value(db, "e/1", (const uint8_t *)"one", 3);
    check_value(db, "e/2/x", big, sizeof big);
    check_value(db, "d0", (const uint8_t *)"stays", 5);
    void *v;
    size_t vl;
    assert_int_equal(stash_get(db, "d/2/x", 5, &v, &vl), -ENOENT);
    assert_int_equal(stash_get(db, "e/9", 3, &v, &vl), -ENOENT);

    /* A key with a range: the file "f" becomes "e", the tree under "e/"
     * moves under "f/". */
    assert_int_equal(stash_put(db, "f", 1, "file", 4), 0);
    assert_int_equal(stash_link(db, "f", 1, "g", 1), 0);
    assert_int_equal(stash_rename2(db, "f", 1, "e", 1, "e/", 2, "f/", 2, STASH_PREFIX2), 0);
    check_value(db, "e", (const uint8_t *)"file", 4);
    check_value(db, "f/1", (const uint8_t *)"one", 3);
    check_value(db, "f/2/x", big, sizeof big);
    assert_int_equal(stash_get(db, "f", 1, &v, &vl), -ENOENT);
    /* ... and the moved name is still a name of the linked value. */
    assert_int_equal(stash_put(db, "g", 1, "new", 3), 0);
    check_value(db, "e", (const uint8_t *)"file", 4);
    assert_int_equal(stash_link(db, "e", 1, "h", 1), 0);
    assert_int_equal(stash_pwrite(db, "h", 1, "F", 1, 0), 0);
    check_value(db, "e", (const uint8_t *)"File", 4);
    stash_stat_t st;
    assert_int_equal(stash_stat(db, NULL, "e", 1, &st), 0);
    assert_int_equal(st.nlink, 2);

    /* Refused, changing nothing: a one-key move of a missing key; a target
     * that exists and is not moved itself ("d" is not moved; "f/1" is not,
     * under the range "d/" moves to); moves that overlap or move a range
     * into itself. */
    assert_int_equal(stash_rename2(db, "zz", 2, "e", 1, "e", 1, "zz", 2, 0), -ENOENT);
    assert_int_equal(stash_put(db, "d", 1, "dee", 3), 0);
    assert_int_equal(stash_rename2(db, "e", 1, "d", 1, "f/", 2, "e/", 2, STASH_PREFIX2), -EEXIST);
    assert_int_equal(stash_rename2(db, "d/", 2, "f/", 2, "e", 1, "q", 1, STASH_PREFIX1), -EEXIST);
    assert_int_equal(stash_rename2(db, "f/", 2, "d/", 2, "f/1", 3, "q", 1, STASH_PREFIX1), -EINVAL);
    assert_int_equal(stash_rename2(db, "f/", 2, "f/a/", 4, "d/", 2, "q/", 2, STASH_PREFIX1 | STASH_PREFIX2),
                     -EINVAL);
    assert_int_equal(stash_rename2(db, "e", 1, "e", 1, "e", 1, "e", 1, 0), -EINVAL);
    /* Both moves onto one key, or one onto a key under the other's range. */
    assert_int_equal(stash_rename2(db, "e", 1, "c", 1, "d", 1, "c", 1, 0), -EINVAL);
    assert_int_equal(stash_rename2(db, "d/", 2, "q/", 2, "e", 1, "q/x", 3, STASH_PREFIX1), -EINVAL);
    check_value(db, "e", (const uint8_t *)"File", 4);
    check_value(db, "d", (const uint8_t *)"dee", 3);
    check_value(db, "f/1", (const uint8_t *)"one", 3);
    check_value(db, "d/1", (const uint8_t *)"eins", 4);
    assert_int_equal(stash_close(db), 0);
    db = open_small();
    check_value(db, "e", (const uint8_t *)"File", 4);
    check_value(db, "h", (const uint8_t *)"File", 4);
    check_value(db, "f/2/x", big, sizeof big);
    check_value(db, "b", big, sizeof big);
    check_value(db, "d/9", (const uint8_t *)"neun", 4);
    /* Deleting the large value's names gives its space back without error. */
    assert_int_equal(stash_delete(db, "f/2/x", 5), 0);
    assert_int_equal(stash_delete(db, "b", 1), 0);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    assert_int_equal(stash_close(db), 0);
}

static void test_xattrs(void **state)
{
    (void)state;
    stash_t *db = open_small();
    char buf[100];
    size_t n;
    assert_int_equal(stash_setxattr(db, "k", 1, "user.a", "1", 1, 0), -ENOENT);
    assert_int_equal(stash_put(db, "k", 1, "value", 5), 0);
    assert_int_equal(stash_getxattr(db, NULL, "k", 1, "user.a", buf, sizeof buf, &n), -ENODATA);
    assert_int_equal(stash_setxattr(db, "k", 1, "user.a", "one", 3, STASH_XATTR_REPLACE), -ENODATA);
    assert_int_equal(stash_setxattr(db, "k", 1, "user.a", "one", 3, STASH_XATTR_CREATE), 0);
    assert_int_equal(stash_setxattr(db, "k", 1, "user.a", "uno", 3, STASH_XATTR_CREATE), -EEXIST);
    assert_int_equal(stash_setxattr(db, "k", 1, "user.b", "", 0, 0), 0);
    stash_snapshot_t *snap = stash_snapshot_new(db);
    assert_int_equal(stash_setxattr(db, "k", 1, "user.a", "eins", 4, STASH_XATTR_REPLACE), 0);
    assert_int_equal(stash_getxattr(db, NULL, "k", 1, "user.a", buf, sizeof buf, &n), 0);
    assert_int_equal(n, 4);
    assert_memory_equal(buf, "eins", 4);
    assert_int_equal(stash_getxattr(db, snap, "k", 1, "user.a", buf, sizeof buf, &n), 0);
    assert_memory_equal(buf, "one", 3);
    stash_snapshot_free(db, snap);
    assert_int_equal(stash_getxattr(db, NULL, "k", 1, "user.a", NULL, 0, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(stash_getxattr(db, NULL, "k", 1, "user.a", buf, 2, &n), -ERANGE);
    assert_int_equal(stash_listxattr(db, NULL, "k", 1, buf, sizeof buf, &n), 0);
    assert_int_equal(n, 14);
    assert_memory_equal(buf, "user.b\0user.a\0", 14);
    assert_int_equal(stash_listxattr(db, NULL, "k", 1, buf, 5, &n), -ERANGE);
    /* 64 KiB in all at most; a refused change loses nothing. */
    static char big[40000];
    assert_int_equal(stash_setxattr(db, "k", 1, "user.big1", big, sizeof big, 0), 0);
    assert_int_equal(stash_setxattr(db, "k", 1, "user.big2", big, sizeof big, 0), -ENOSPC);
    assert_int_equal(stash_setxattr(db, "k", 1, "", "x", 1, 0), -ERANGE);
    check_value(db, "k", (const uint8_t *)"value", 5);
    /* They move with a rename and survive a reopen; removal. */
    assert_int_equal(stash_rename(db, "k", 1, "m", 1, 0), 0);
    assert_int_equal(stash_close(db), 0);
    db = open_small();
    assert_int_equal(stash_getxattr(db, NULL, "m", 1, "user.big1", NULL, 0, &n), 0);
    assert_int_equal(n, sizeof big);
    assert_int_equal(stash_removexattr(db, "m", 1, "user.a"), 0);
    assert_int_equal(stash_removexattr(db, "m", 1, "user.a"), -ENODATA);
    assert_int_equal(stash_getxattr(db, NULL, "m", 1, "user.a", buf, sizeof buf, &n), -ENODATA);
    check_value(db, "m", (const uint8_t *)"value", 5);
    assert_int_equal(stash_close(db), 0);
}

static int count_snap(void *arg, const char *name, uint64_t seq, int64_t ct)
{
    (void)name;
    (void)seq;
    assert_true(ct > 0);
    (*(int *)arg)++;
    return 0;
}

static void test_named_snapshots(void **state)
{
    (void)state;
    stash_t *db = open_small();
    uint8_t big[200000];
    memset(big, 1, sizeof big);
    assert_int_equal(stash_put(db, "k", 1, "v1", 2), 0);
    assert_int_equal(stash_put(db, "big", 3, big, sizeof big), 0);
    uint64_t seq;
    assert_int_equal(stash_snapshot_create(db, "s1", &seq), 0);
    assert_true(seq > 0);
    assert_int_equal(stash_snapshot_create(db, "s1", NULL), -EEXIST);
    assert_int_equal(stash_snapshot_create(db, "a/b", NULL), -EINVAL);
    assert_int_equal(stash_put(db, "k", 1, "v2", 2), 0);
    memset(big, 2, sizeof big);
    assert_int_equal(stash_pwrite(db, "big", 3, big, 100000, 0), 0);
    assert_int_equal(stash_delete(db, "k", 1), 0);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    for (int round = 0; round < 2; round++) {
        int64_t ct = 0;
        stash_snapshot_t *s = stash_snapshot_open(db, "s1", &ct);
        assert_non_null(s);
        assert_true(ct > 0);
        assert_int_equal(stash_snapshot_seq(s), seq);
        void *v;
        size_t vl;
        assert_int_equal(stash_get_at(db, s, "k", 1, &v, &vl), 0);
        assert_int_equal(vl, 2);
        assert_memory_equal(v, "v1", 2);
        stash_free(v);
        uint8_t buf[1000];
        size_t got;
        assert_int_equal(stash_pread_at(db, s, "big", 3, buf, sizeof buf, 5000, &got), 0);
        assert_int_equal(got, sizeof buf);
        for (size_t i = 0; i < got; i++)
            assert_int_equal(buf[i], 1);
        assert_int_equal(stash_get(db, "k", 1, &v, &vl), -ENOENT);
        stash_snapshot_free(db, s);
        int n = 0;
        assert_int_equal(stash_snapshot_list(db, count_snap, &n), 0);
        assert_int_equal(n, 1);
        /* A backup of the snapshot is a store holding exactly its contents. */
        char bak[600];
        snprintf(bak, sizeof bak, "%s/bak%d", dir, round);
        assert_int_equal(stash_backup_snapshot(db, "s1", bak), 0);
        assert_int_equal(stash_backup_snapshot(db, "s1", bak), -EEXIST);
        stash_t *b;
        assert_int_equal(stash_open(bak, NULL, &b), 0);
        assert_int_equal(stash_get(b, "k", 1, &v, &vl), 0);
        assert_int_equal(vl, 2);
        assert_memory_equal(v, "v1", 2);
        stash_free(v);
        assert_int_equal(stash_get(b, "big", 3, &v, &vl), 0);
        assert_int_equal(vl, 200000);
        for (size_t i = 0; i < vl; i++)
            assert_int_equal(((uint8_t *)v)[i], 1);
        stash_free(v);
        n = 0;
        assert_int_equal(stash_snapshot_list(b, count_snap, &n), 0);
        assert_int_equal(n, 0);
        assert_int_equal(stash_close(b), 0);
        /* Survives a restart and another compaction. */
        assert_int_equal(stash_close(db), 0);
        db = open_small();
        assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    }
    assert_int_equal(stash_snapshot_delete(db, "s1"), 0);
    assert_int_equal(stash_snapshot_delete(db, "s1"), -ENOENT);
    char bak[600];
    snprintf(bak, sizeof bak, "%s/bak-none", dir);
    assert_int_equal(stash_backup_snapshot(db, "s1", bak), -ENOENT);
    assert_non_null(strstr(stash_last_error(db), "no snapshot s1"));
    assert_int_equal(stash_backup_snapshot(db, "a/b", bak), -EINVAL);
    assert_null(stash_snapshot_open(db, "s1", NULL));
    assert_int_equal(stash_close(db), 0);
    db = open_small();
    assert_null(stash_snapshot_open(db, "s1", NULL));
    assert_int_equal(stash_close(db), 0);
}

/* KEY's chunk count, when its value keeps one (value.h), is the number of
 * its chunk records, and stash_stat's stored follows from it. */
static void check_count(stash_t *db, const char *key, int step)
{
    uint64_t seq;
    struct view *v = db_view(db, NULL, &seq);
    void *raw = NULL, *shared = NULL;
    size_t rl, sl;
    struct envelope e;
    if (db_view_get(v, seq, (const uint8_t *)key, strlen(key), &raw, &rl) == 0) {
        assert_int_equal(env_decode(raw, rl, &e), 0);
        if (e.kind == VK_LINK)
            assert_int_equal(db_resolve(v, seq, &e, &shared, &sl), 0);
        if (e.kind == VK_CHUNKED && e.chunks_known) {
            uint64_t n = 0, span = (e.st.size + CHUNK_SIZE - 1) / CHUNK_SIZE;
            for (uint64_t i = 0; i < span + 4; i++) {
                uint8_t ck[CHUNK_KEY_LEN];
                void *c = NULL;
                size_t cl;
                ckey(ck, &e, i);
                int rc = db_view_get(v, seq, ck, sizeof ck, &c, &cl);
                assert_true(rc == 0 || rc == -ENOENT);
                n += rc == 0;
                free(c);
            }
            if (n != e.chunks)
                fail_msg("step %d: %s keeps a count of %llu chunks, has %llu", step, key,
                         (unsigned long long)e.chunks, (unsigned long long)n);
            stash_stat_t st;
            assert_int_equal(stash_stat(db, NULL, key, strlen(key), &st), 0);
            assert_int_equal(st.stored, n * CHUNK_SIZE < st.size ? n * CHUNK_SIZE : st.size);
        }
    }
    free(raw);
    free(shared);
    db_view_put(v);
}

/* Random pwrites, truncates and reads of a few keys against buffers. */
static void test_model(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_file model", 20261125);
    enum { NK = 4, MAXSZ = 600000 };
    uint8_t *model[NK];
    size_t size[NK];
    int exists[NK] = {0};
    for (int i = 0; i < NK; i++) {
        model[i] = calloc(1, MAXSZ);
        size[i] = 0;
    }
    uint8_t *buf = malloc(MAXSZ);
    stash_t *db = open_small();
    for (int step = 0; step < 3000; step++) {
        for (int i = 0; i < NK; i++) {
            char kn[16];
            snprintf(kn, sizeof kn, "f%d", i);
            check_count(db, kn, step);
        }
        int k = (int)(tu_rand(&seed) % NK);
        char key[16];
        snprintf(key, sizeof key, "f%d", k);
        int op = (int)(tu_rand(&seed) % 100);
        if (op < 45) {
            /* small or large writes, near the end or anywhere */
            size_t len = tu_rand(&seed) % 4 ? tu_rand(&seed) % 5000 : tu_rand(&seed) % 150000;
            size_t off = tu_rand(&seed) % 2 ? size[k] : tu_rand(&seed) % (MAXSZ / 2);
            if (tu_rand(&seed) % 3 == 0) {
                /* On chunk boundaries, as sequential writers send them
                 * (whole chunks go to value files). */
                off -= off % 65536;
                len = len < 65536 ? len : len - len % 65536;
            }
            if (off + len > MAXSZ)
                len = MAXSZ - off;
            fill(buf, len, &seed);
            assert_int_equal(stash_pwrite(db, key, strlen(key), buf, len, off), 0);
            memcpy(model[k] + off, buf, len);
            if (len && off + len > size[k])     /* (writing nothing extends nothing) */
                size[k] = off + len;
            exists[k] = 1;
        } else if (op < 60 && exists[k]) {
            size_t ns = tu_rand(&seed) % 3 ? tu_rand(&seed) % (size[k] + 1) : tu_rand(&seed) % MAXSZ;
            assert_int_equal(stash_truncate(db, key, strlen(key), ns), 0);
            if (ns < size[k])
                memset(model[k] + ns, 0, size[k] - ns);
            size[k] = ns;
        } else if (op < 63) {
            assert_int_equal(stash_delete(db, key, strlen(key)), 0);
            memset(model[k], 0, size[k]);
            size[k] = 0;
            exists[k] = 0;
        } else if (op < 68) {
            size_t off = tu_rand(&seed) % (size[k] + 100), len = tu_rand(&seed) % 200000;
            int rc = stash_zero_range(db, key, strlen(key), off, len);
            assert_int_equal(rc, exists[k] ? 0 : -ENOENT);
            if (off < size[k])
                memset(model[k] + off, 0, size[k] - off < len ? size[k] - off : len);
        } else if (op < 90) {
            size_t off = tu_rand(&seed) % (size[k] + 100), len = tu_rand(&seed) % 200000, got;
            int rc = stash_pread(db, key, strlen(key), buf, len, off, &got);
            if (!exists[k]) {
                assert_int_equal(rc, -ENOENT);
                continue;
            }
            assert_int_equal(rc, 0);
            size_t want = off >= size[k] ? 0 : (size[k] - off < len ? size[k] - off : len);
            if (got != want)
                fprintf(stderr, "step %d: pread %zu@%zu of %zu bytes gave %zu\n", step, len, off, size[k], got);
            assert_int_equal(got, want);
            if (want)
                assert_memory_equal(buf, model[k] + off, want);
        } else if (op < 96) {
            if (exists[k])
                check_value(db, key, model[k], size[k]);
        } else if (op < 98) {
            assert_int_equal(stash_close(db), 0);
            db = open_small();
        } else {
            assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
        }
    }
    for (int k = 0; k < NK; k++) {
        char key[16];
        snprintf(key, sizeof key, "f%d", k);
        if (exists[k])
            check_value(db, key, model[k], size[k]);
        free(model[k]);
    }
    free(buf);
    assert_int_equal(stash_close(db), 0);
}

/* A source for stash_put_stream: LEFT bytes of a seeded pattern in uneven
 * pieces; FAIL_AT > 0 makes it fail (or, with CRASH, exit the process)
 * once that many bytes were handed over. */
struct src {
    uint64_t left, pos, fail_at;
    int crash;
};

/* Byte I of the streamed values: incompressible, so leftovers show on disk. */
static uint8_t pattern(uint64_t i)
{
    i = (i ^ (i >> 30)) * 0xbf58476d1ce4e5b9ull;
    i = (i ^ (i >> 27)) * 0x94d049bb133111ebull;
    return (uint8_t)(i ^ (i >> 31));
}

static int src_read(void *arg, void *buf, size_t len, size_t *got)
{
    struct src *s = arg;
    if (s->fail_at && s->pos >= s->fail_at) {
        if (s->crash)
            _exit(0);           /* no close: as if killed */
        return -EPIPE;
    }
    size_t n = len > 7777 ? 7777 : len;   /* short reads on purpose */
    if (n > s->left)
        n = (size_t)s->left;
    for (size_t i = 0; i < n; i++)
        ((uint8_t *)buf)[i] = pattern(s->pos + i);
    s->pos += n;
    s->left -= n;
    *got = n;
    return 0;
}

static void check_pattern(stash_t *db, const char *key, uint64_t size)
{
    uint64_t got;
    assert_int_equal(stash_value_size(db, key, strlen(key), &got), 0);
    assert_int_equal(got, size);
    uint8_t *buf = malloc(1 << 20);
    for (uint64_t off = 0; off < size;) {
        size_t n;
        assert_int_equal(stash_pread(db, key, strlen(key), buf, 1 << 20, off, &n), 0);
        assert_true(n > 0);
        for (size_t i = 0; i < n; i++)
            if (buf[i] != pattern(off + i))
                fail_msg("%s: byte %llu differs", key, (unsigned long long)(off + i));
        off += n;
    }
    free(buf);
}

/* Streamed puts: every size class, replacing small and large values, a
 * failing source leaves the old value and gives its space back, and a crash
 * in the middle leaves the old value and nothing else once reopened. */
static void test_put_stream(void **state)
{
    stash_t *db = open_small();
    const uint64_t sizes[] = {0, 1, 65535, 65536, 65537, 131072, 3 * 65536 + 5, 5u << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        struct src s = {.left = sizes[i]};
        assert_int_equal(stash_put_stream(db, "s", 1, src_read, &s, i % 2 ? STASH_SYNC : 0), 0);
        check_pattern(db, "s", sizes[i]);
    }
    /* A failing source: the old value stays, the error is the source's. */
    struct src bad = {.left = 4u << 20, .fail_at = 2u << 20};
    assert_int_equal(stash_put_stream(db, "s", 1, src_read, &bad, 0), -EPIPE);
    check_pattern(db, "s", 5u << 20);
    assert_int_equal(stash_delete(db, "s", 1), 0);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    assert_true(disk_bytes() < (1u << 20));    /* no chunk of the failed put kept */
    /* Bad arguments. */
    struct src ok = {.left = 10};
    assert_int_equal(stash_put_stream(db, "", 0, src_read, &ok, 0), -EINVAL);
    assert_int_equal(stash_put_stream(db, "k", 1, NULL, &ok, 0), -EINVAL);
    assert_int_equal(stash_put_stream(db, "k", 1, src_read, &ok, 8), -EINVAL);
    assert_int_equal(stash_put(db, "keep", 4, "old", 3), 0);
    assert_int_equal(stash_close(db), 0);

    /* A crash in the middle of a 6 MiB put: a child process exits without
     * closing the store after handing over 3 MiB. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        stash_t *c = open_small();
        struct src s = {.left = 6u << 20, .fail_at = 3u << 20, .crash = 1};
        stash_put_stream(c, "keep", 4, src_read, &s, 0);
        _exit(1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    db = open_small();
    void *v;
    size_t vl;
    assert_int_equal(stash_get(db, "keep", 4, &v, &vl), 0);
    assert_int_equal(vl, 3);
    assert_memory_equal(v, "old", 3);
    stash_free(v);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    assert_true(disk_bytes() < (1u << 20));    /* the 3 MiB written were dropped */
    assert_int_equal(stash_close(db), 0);
}

/* The snapshot directory's name cannot be written as a key, by any call. */
static void test_reserved_key(void **state)
{
    stash_t *db = open_small();
    const char *bad[] = {".snapshots", ".snapshots/a", ".snapshots/a/b"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(bad[i]);
        assert_int_equal(stash_put(db, bad[i], n, "x", 1), -EINVAL);
        assert_non_null(strstr(stash_last_error(db), "reserved"));
        assert_int_equal(stash_pwrite(db, bad[i], n, "x", 1, 0), -EINVAL);
        assert_int_equal(stash_create(db, bad[i], n, &(stash_stat_t){.mode = 0100644}, 0), -EINVAL);
        struct src s = {.left = 100};
        assert_int_equal(stash_put_stream(db, bad[i], n, src_read, &s, 0), -EINVAL);
        assert_int_equal(stash_put(db, "x", 1, "1", 1), 0);
        assert_int_equal(stash_rename(db, "x", 1, bad[i], n, 0), -EINVAL);
        stash_batch_t *b = stash_batch_new();
        assert_int_equal(stash_batch_put(b, "fine", 4, "1", 1), 0);
        assert_int_equal(stash_batch_put(b, bad[i], n, "1", 1), 0);
        assert_int_equal(stash_write(db, b, 0), -EINVAL);   /* the whole batch */
        stash_batch_free(b);
        assert_int_equal(stash_get(db, "fine", 4, &(void *){0}, &(size_t){0}), -ENOENT);
    }
    assert_int_equal(stash_put(db, "dir/.snapshots", 14, "x", 1), 0);  /* only at the top */
    assert_int_equal(stash_put(db, ".snapshotsx", 11, "x", 1), 0);
    assert_int_equal(stash_put(db, "y/a", 3, "1", 1), 0);
    assert_int_equal(stash_rename_prefix(db, "y/", 2, ".snapshots/", 11, NULL), -EINVAL);
    assert_int_equal(stash_delete(db, ".snapshots/a", 12), 0);          /* deletes are fine */
    assert_int_equal(stash_close(db), 0);

    /* Configurable, and "" reserves nothing. */
    stash_options_t o;
    stash_options_init(&o);
    strcpy(o.snapshot_dir, "snaps");
    assert_int_equal(stash_open(dir, &o, &db), 0);
    assert_int_equal(stash_put(db, ".snapshots/a", 12, "x", 1), 0);
    assert_int_equal(stash_put(db, "snaps/a", 7, "x", 1), -EINVAL);
    assert_int_equal(stash_close(db), 0);
    o.snapshot_dir[0] = '\0';
    assert_int_equal(stash_open(dir, &o, &db), 0);
    assert_int_equal(stash_put(db, "snaps/a", 7, "x", 1), 0);
    assert_int_equal(stash_close(db), 0);
    strcpy(o.snapshot_dir, "a/b");
    assert_int_equal(stash_open(dir, &o, &db), -EINVAL);
}


struct names {
    char s[256];
};

static int add_name(void *arg, const void *key, size_t klen)
{
    struct names *n = arg;
    size_t l = strlen(n->s);
    assert_true(l + klen + 2 < sizeof n->s);
    memcpy(n->s + l, key, klen);
    strcpy(n->s + l + klen, ",");
    return 0;
}

static void expect_links(stash_t *db, const char *key, uint32_t nlink, uint64_t *id)
{
    stash_stat_t st;
    assert_int_equal(stash_stat(db, NULL, key, strlen(key), &st), 0);
    if (st.nlink != nlink)
        fail_msg("%s: %u names, expected %u", key, st.nlink, nlink);
    if (id && *id)
        assert_true(st.link_id == *id);
    else if (id)
        *id = st.link_id;
}

/* Hard links: both names give one value, a change through one is seen
 * through the other, names go one at a time, and all of it survives a
 * reopen and compactions. */
static void test_links(void **state)
{
    (void)state;
    stash_t *db = open_small();
    void *v;
    size_t vl;
    assert_int_equal(stash_put(db, "a", 1, "hello", 5), 0);
    expect_links(db, "a", 1, NULL);
    assert_int_equal(stash_link(db, "a", 1, "b", 1), 0);
    assert_int_equal(stash_link(db, "a", 1, "b", 1), -EEXIST);
    assert_int_equal(stash_link(db, "nope", 4, "c", 1), -ENOENT);
    assert_int_equal(stash_link(db, "a", 1, "a", 1), -EEXIST);
    uint64_t id = 0;
    expect_links(db, "a", 2, &id);
    assert_true(id != 0);
    expect_links(db, "b", 2, &id);
    check_value(db, "b", (const uint8_t *)"hello", 5);

    /* Changes through either name. */
    assert_int_equal(stash_pwrite(db, "b", 1, "J", 1, 0), 0);
    check_value(db, "a", (const uint8_t *)"Jello", 5);
    assert_int_equal(stash_setstat(db, "a", 1, &(stash_stat_t){.mode = 0100600}, STASH_SET_MODE), 0);
    stash_stat_t st;
    assert_int_equal(stash_stat(db, NULL, "b", 1, &st), 0);
    assert_int_equal(st.mode, 0100600);
    assert_int_equal(stash_setxattr(db, "b", 1, "user.k", "v", 1, 0), 0);
    char x[8];
    size_t xn;
    assert_int_equal(stash_getxattr(db, NULL, "a", 1, "user.k", x, sizeof x, &xn), 0);
    assert_int_equal(xn, 1);

    /* A snapshot keeps what the shared value was. */
    stash_snapshot_t *snap = stash_snapshot_new(db);
    assert_int_equal(stash_truncate(db, "a", 1, 2), 0);
    check_value(db, "b", (const uint8_t *)"Je", 2);
    assert_int_equal(stash_get_at(db, snap, "b", 1, &v, &vl), 0);
    assert_int_equal(vl, 5);
    assert_memory_equal(v, "Jello", 5);
    stash_free(v);
    stash_snapshot_free(db, snap);

    /* A third name; then names go one by one. */
    assert_int_equal(stash_link(db, "b", 1, "c", 1), 0);
    expect_links(db, "a", 3, &id);
    expect_links(db, "c", 3, &id);
    assert_int_equal(stash_delete(db, "a", 1), 0);
    assert_int_equal(stash_get(db, "a", 1, &v, &vl), -ENOENT);
    expect_links(db, "b", 2, &id);
    assert_int_equal(stash_put(db, "c", 1, "own", 3), 0);      /* c leaves */
    expect_links(db, "b", 1, &id);
    expect_links(db, "c", 1, NULL);
    check_value(db, "b", (const uint8_t *)"Je", 2);
    check_value(db, "c", (const uint8_t *)"own", 3);

    /* Renames move a name; onto another name of the same value, nothing. */
    assert_int_equal(stash_link(db, "b", 1, "d", 1), 0);
    assert_int_equal(stash_rename(db, "b", 1, "d", 1, 0), 0);
    expect_links(db, "b", 2, &id);
    expect_links(db, "d", 2, &id);
    assert_int_equal(stash_rename(db, "b", 1, "e", 1, 0), 0);
    expect_links(db, "e", 2, &id);
    assert_int_equal(stash_rename(db, "c", 1, "e", 1, 0), 0);   /* e replaced */
    expect_links(db, "d", 1, &id);
    check_value(db, "e", (const uint8_t *)"own", 3);
    assert_int_equal(stash_link(db, "d", 1, "dir/x", 5), 0);
    assert_int_equal(stash_rename_prefix(db, "dir/", 4, "new/", 4, NULL), 0);
    expect_links(db, "new/x", 2, &id);
    check_value(db, "new/x", (const uint8_t *)"Je", 2);
    assert_int_equal(stash_link(db, "e", 1, "dir/x", 5), 0);   /* a target the next move replaces */
    assert_int_equal(stash_rename_prefix(db, "new/", 4, "dir/", 4, NULL), 0);
    expect_links(db, "e", 1, NULL);
    expect_links(db, "dir/x", 2, &id);

    /* Iterators give a link's value and attributes. */
    stash_iter_t *it = stash_iter_new(db, NULL);
    int seen = 0;
    for (stash_iter_seek_first(it); stash_iter_valid(it); stash_iter_next(it)) {
        size_t kl;
        const char *k = stash_iter_key(it, &kl);
        if (kl == 5 && !memcmp(k, "dir/x", 5)) {
            const void *iv = stash_iter_value(it, &vl);
            assert_int_equal(vl, 2);
            assert_memory_equal(iv, "Je", 2);
            assert_int_equal(stash_iter_stat(it, &st), 0);
            assert_int_equal(st.nlink, 2);
            assert_true(st.link_id == id);
            seen++;
        }
    }
    assert_int_equal(stash_iter_status(it), 0);
    stash_iter_free(it);
    assert_int_equal(seen, 1);

    /* The names of a value. */
    assert_int_equal(stash_link(db, "dir/x", 5, "\xff", 1), 0);
    struct names nm = {0};
    assert_int_equal(stash_link_names(db, id, add_name, &nm), 0);
    assert_string_equal(nm.s, "d,dir/x,\xff,");
    assert_int_equal(stash_delete(db, "\xff", 1), 0);
    assert_int_equal(stash_link_names(db, 0, add_name, &nm), -EINVAL);

    /* Inode numbers: stash_create picks one, renames, changes and links
     * keep it, and it is not an extended attribute. */
    stash_stat_t c0 = {.mode = 0100644}, c1, c2;
    assert_int_equal(stash_create(db, "f", 1, &c0, 0), 0);
    assert_int_equal(stash_stat(db, NULL, "f", 1, &c1), 0);
    assert_true(c1.ino != 0);
    assert_int_equal(stash_setxattr(db, "f", 1, "user.a", "1", 1, 0), 0);
    assert_int_equal(stash_pwrite(db, "f", 1, "data", 4, 0), 0);
    assert_int_equal(stash_rename(db, "f", 1, "g", 1, 0), 0);
    assert_int_equal(stash_link(db, "g", 1, "h", 1), 0);
    assert_int_equal(stash_stat(db, NULL, "h", 1, &c2), 0);
    assert_true(c2.ino == c1.ino);
    char names[64];
    size_t need;
    assert_int_equal(stash_listxattr(db, NULL, "h", 1, names, sizeof names, &need), 0);
    assert_int_equal(need, 7);
    assert_memory_equal(names, "user.a", 7);
    assert_int_equal(stash_create(db, "f2", 2, &c0, 0), 0);
    assert_int_equal(stash_stat(db, NULL, "f2", 2, &c2), 0);
    assert_true(c2.ino != c1.ino && c2.ino != 0);
    assert_int_equal(stash_stat(db, NULL, "d", 1, &c2), 0);
    assert_true(c2.ino == c2.link_id);     /* linked from a value without one */

    /* All of it after a reopen; and a put there still counts names down. */
    assert_int_equal(stash_close(db), 0);
    db = open_small();
    expect_links(db, "d", 2, &id);
    check_value(db, "dir/x", (const uint8_t *)"Je", 2);
    assert_int_equal(stash_stat(db, NULL, "g", 1, &c2), 0);
    assert_true(c2.ino == c1.ino);
    assert_int_equal(stash_put(db, "d", 1, "mine", 4), 0);
    expect_links(db, "dir/x", 1, &id);
    assert_int_equal(stash_close(db), 0);
}

/* A large linked value: written through one name, read through the other,
 * and its space given back once both names are gone. */
static void test_link_large(void **state)
{
    (void)state;
    stash_t *db = open_small();
    enum { N = 400000 };
    uint8_t *big = malloc(N), *part = malloc(100000);
    uint64_t seed = 9;
    fill(big, N, &seed);
    fill(part, 100000, &seed);
    assert_int_equal(stash_put(db, "pad", 3, "x", 1), 0);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    uint64_t empty = disk_bytes();
    assert_int_equal(stash_put(db, "L", 1, big, N), 0);
    assert_int_equal(stash_link(db, "L", 1, "M", 1), 0);
    assert_int_equal(stash_pwrite(db, "M", 1, part, 100000, 150000), 0);
    memcpy(big + 150000, part, 100000);
    check_value(db, "L", big, N);
    assert_int_equal(stash_truncate(db, "L", 1, 300000), 0);
    check_value(db, "M", big, 300000);
    /* A small value that grows past the inline limit while linked. */
    assert_int_equal(stash_put(db, "s", 1, "tiny", 4), 0);
    assert_int_equal(stash_link(db, "s", 1, "t", 1), 0);
    assert_int_equal(stash_pwrite(db, "t", 1, big, N, 4), 0);
    uint8_t *grown = malloc(N + 4);
    memcpy(grown, "tiny", 4);
    memcpy(grown + 4, big, N);
    check_value(db, "s", grown, N + 4);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    assert_true(disk_bytes() > empty + 600000);
    assert_int_equal(stash_close(db), 0);
    db = open_small();
    check_value(db, "M", big, 300000);
    check_value(db, "t", grown, N + 4);
    /* Both names of each in one batch, and one by one. */
    stash_batch_t *b = stash_batch_new();
    assert_int_equal(stash_batch_delete(b, "L", 1), 0);
    assert_int_equal(stash_batch_delete(b, "M", 1), 0);
    assert_int_equal(stash_write(db, b, 0), 0);
    stash_batch_free(b);
    assert_int_equal(stash_delete(db, "s", 1), 0);
    check_value(db, "t", grown, N + 4);
    assert_int_equal(stash_delete(db, "t", 1), 0);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    assert_int_equal(stash_close(db), 0);
    db = open_small();
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    uint64_t after = disk_bytes();
    if (after > empty + 100000)
        fail_msg("%llu bytes on disk after both names went, %llu before", (unsigned long long)after,
                 (unsigned long long)empty);
    assert_int_equal(stash_close(db), 0);
    free(big);
    free(part);
    free(grown);
}

/* Random puts, deletes, writes, truncations, links and renames over a few
 * names, against a model of which names share a value. */
static void test_link_model(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_file link model", 20261130);
    enum { NK = 6, MAXSZ = 200000 };
    int grp[NK];                         /* the value a name has, -1: none */
    uint8_t *val[NK];                    /* values, by slot */
    size_t size[NK];
    for (int i = 0; i < NK; i++) {
        grp[i] = -1;
        val[i] = calloc(1, MAXSZ);
        size[i] = 0;
    }
    uint8_t *buf = malloc(MAXSZ);
    stash_t *db = open_small();
    for (int step = 0; step < 2000; step++) {
        for (int i = 0; i < NK; i++) {
            char kn[16];
            snprintf(kn, sizeof kn, "n%d", i);
            check_count(db, kn, step);
        }
        int k = (int)(tu_rand(&seed) % NK), j = (int)(tu_rand(&seed) % NK);
        char key[16], key2[16];
        snprintf(key, sizeof key, "n%d", k);
        snprintf(key2, sizeof key2, "n%d", j);
        int op = (int)(tu_rand(&seed) % 100);
        /* A name that gets a value of its own takes a free slot. */
        int freeslot = -1;
        for (int s2 = 0; s2 < NK && freeslot < 0; s2++) {
            int used = 0;
            for (int n = 0; n < NK; n++)
                used |= grp[n] == s2;
            if (!used)
                freeslot = s2;
        }
        if (op < 25) {
            size_t len = tu_rand(&seed) % 3 ? tu_rand(&seed) % 3000 : tu_rand(&seed) % 100000;
            size_t off = tu_rand(&seed) % (MAXSZ / 2);
            if (off + len > MAXSZ)
                len = MAXSZ - off;
            fill(buf, len, &seed);
            assert_int_equal(stash_pwrite(db, key, 2, buf, len, off), 0);
            if (grp[k] < 0) {
                grp[k] = freeslot;
                memset(val[freeslot], 0, MAXSZ);
                size[freeslot] = 0;
            }
            memcpy(val[grp[k]] + off, buf, len);
            if (len && off + len > size[grp[k]])     /* (writing nothing extends nothing) */
                size[grp[k]] = off + len;
        } else if (op < 35) {
            size_t len = tu_rand(&seed) % 200;
            fill(buf, len, &seed);
            assert_int_equal(stash_put(db, key, 2, buf, len), 0);
            grp[k] = -1;
            for (int s2 = 0; s2 < NK; s2++) {
                int used = 0;
                for (int n = 0; n < NK; n++)
                    used |= grp[n] == s2;
                if (!used) {
                    grp[k] = s2;
                    break;
                }
            }
            memset(val[grp[k]], 0, MAXSZ);
            memcpy(val[grp[k]], buf, len);
            size[grp[k]] = len;
        } else if (op < 45) {
            assert_int_equal(stash_delete(db, key, 2), 0);
            grp[k] = -1;
        } else if (op < 52 && grp[k] >= 0) {
            size_t ns = tu_rand(&seed) % (MAXSZ / 2);
            assert_int_equal(stash_truncate(db, key, 2, ns), 0);
            if (ns < size[grp[k]])
                memset(val[grp[k]] + ns, 0, size[grp[k]] - ns);
            size[grp[k]] = ns;
        } else if (op < 72) {
            int rc = stash_link(db, key, 2, key2, 2);
            int want = grp[k] < 0 ? -ENOENT : grp[j] >= 0 ? -EEXIST : 0;
            if (rc != want)
                fail_msg("step %d: link %s %s gave %d, expected %d", step, key, key2, rc, want);
            if (rc == 0)
                grp[j] = grp[k];
        } else if (op < 82) {
            int rc = stash_rename(db, key, 2, key2, 2, 0);
            assert_int_equal(rc, grp[k] < 0 ? -ENOENT : 0);
            if (rc == 0 && j != k && grp[j] != grp[k]) {
                grp[j] = grp[k];
                grp[k] = -1;
            }
        } else if (op < 87) {
            /* Swap two names (as RENAME_EXCHANGE does). */
            int rc = stash_rename2(db, key, 2, key2, 2, key2, 2, key, 2, 0);
            int want = j == k ? -EINVAL : grp[k] < 0 || grp[j] < 0 ? -ENOENT : 0;
            if (rc != want)
                fail_msg("step %d: swap %s %s gave %d, expected %d", step, key, key2, rc, want);
            if (rc == 0) {
                int t = grp[k];
                grp[k] = grp[j];
                grp[j] = t;
            }
        } else if (op < 97) {
            for (int n = 0; n < NK; n++) {
                char kn[16];
                snprintf(kn, sizeof kn, "n%d", n);
                stash_stat_t st;
                int rc = stash_stat(db, NULL, kn, 2, &st);
                if (grp[n] < 0) {
                    assert_int_equal(rc, -ENOENT);
                    continue;
                }
                assert_int_equal(rc, 0);
                uint32_t names = 0;
                for (int m = 0; m < NK; m++)
                    names += grp[m] == grp[n];
                if (st.nlink != names)
                    fail_msg("step %d: %s has %u names, expected %u", step, kn, st.nlink, names);
                check_value(db, kn, val[grp[n]], size[grp[n]]);
            }
        } else if (op < 99) {
            assert_int_equal(stash_close(db), 0);
            db = open_small();
        } else {
            assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
        }
    }
    for (int i = 0; i < NK; i++)
        free(val[i]);
    free(buf);
    assert_int_equal(stash_close(db), 0);
}

/* A value takes at most 65,000 names; the next link is refused with
 * -EMLINK and a message, and changes nothing. */
static void test_link_limit(void **state)
{
    (void)state;
    stash_t *db = open_small();
    assert_int_equal(stash_put(db, "v", 1, "x", 1), 0);
    char k[16];
    for (int i = 1; i < 65000; i++) {
        snprintf(k, sizeof k, "n%05d", i);
        assert_int_equal(stash_link(db, "v", 1, k, strlen(k)), 0);
    }
    expect_links(db, "n00001", 65000, NULL);
    assert_int_equal(stash_link(db, "v", 1, "over", 4), -EMLINK);
    assert_non_null(strstr(stash_last_error(db), "65000 names"));
    void *v;
    size_t vl;
    assert_int_equal(stash_get(db, "over", 4, &v, &vl), -ENOENT);
    assert_int_equal(stash_delete(db, "n00001", 6), 0);
    assert_int_equal(stash_link(db, "n00002", 6, "over", 4), 0);
    expect_links(db, "v", 65000, NULL);
    assert_int_equal(stash_close(db), 0);
}

/* A name whose shared entry is damaged or missing (as a lost or corrupt
 * table would leave it) reads as -EIO naming the value, through every call;
 * other keys are untouched, and the name can still be removed or replaced. */
static void expect_broken(stash_t *db, const char *k, const char *why)
{
    void *v;
    size_t vl, n;
    char buf[8];
    uint64_t size;
    stash_stat_t st;
    assert_int_equal(stash_get(db, k, strlen(k), &v, &vl), -EIO);
    assert_non_null(strstr(stash_last_error(db), why));
    assert_int_equal(stash_pread(db, k, strlen(k), buf, sizeof buf, 0, &n), -EIO);
    assert_int_equal(stash_stat(db, NULL, k, strlen(k), &st), -EIO);
    assert_int_equal(stash_value_size(db, k, strlen(k), &size), -EIO);
    assert_int_equal(stash_pwrite(db, k, strlen(k), "x", 1, 0), -EIO);
    stash_iter_t *it = stash_iter_new(db, NULL);
    assert_non_null(it);
    /* The key is still listed (a directory listing is not broken by one
     * bad value); its value is NULL and the status says why. */
    stash_iter_seek(it, k, strlen(k));
    assert_true(stash_iter_valid(it));
    size_t kl;
    const void *ik = stash_iter_key(it, &kl);
    assert_int_equal(kl, strlen(k));
    assert_memory_equal(ik, k, kl);
    assert_null(stash_iter_value(it, &vl));
    assert_int_equal(stash_iter_status(it), -EIO);
    stash_iter_free(it);
}

static void test_link_damaged(void **state)
{
    (void)state;
    for (int round = 0; round < 2; round++) {
        stash_t *db = open_small();
        assert_int_equal(stash_put(db, "a", 1, "hello", 5), 0);
        assert_int_equal(stash_link(db, "a", 1, "b", 1), 0);
        assert_int_equal(stash_put(db, "c", 1, "other", 5), 0);
        stash_stat_t st;
        assert_int_equal(stash_stat(db, NULL, "a", 1, &st), 0);
        uint8_t lk[LINK_KEY_LEN];
        link_key(lk, st.link_id);
        stash_batch_t *b = stash_batch_new();
        assert_non_null(b);
        if (round == 0)
            assert_int_equal(batch_put_raw(b, lk, sizeof lk, NULL, 0, "\x07garbage", 8), 0);
        else
            assert_int_equal(batch_del_raw(b, lk, sizeof lk), 0);
        assert_int_equal(db_commit(db, b, 0), 0);
        stash_batch_free(b);
        const char *why = round == 0 ? "damaged shared entry" : "missing";
        expect_broken(db, "a", why);
        expect_broken(db, "b", why);
        void *v;
        size_t vl;
        assert_int_equal(stash_get(db, "c", 1, &v, &vl), 0);
        assert_memory_equal(v, "other", 5);
        stash_free(v);
        /* Again from the tables, after a reopen. */
        assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
        assert_int_equal(stash_close(db), 0);
        db = open_small();
        expect_broken(db, "b", why);
        /* Replacing one name and removing the other both work. */
        assert_int_equal(stash_put(db, "a", 1, "new", 3), 0);
        assert_int_equal(stash_get(db, "a", 1, &v, &vl), 0);
        assert_int_equal(vl, 3);
        stash_free(v);
        assert_int_equal(stash_delete(db, "b", 1), 0);
        assert_int_equal(stash_get(db, "b", 1, &v, &vl), -ENOENT);
        assert_int_equal(stash_get(db, "c", 1, &v, &vl), 0);
        stash_free(v);
        assert_int_equal(stash_close(db), 0);
        tu_rmrf(dir);
    }
}

/* Generation numbers (chunks, links, inode numbers) never repeat in a
 * forked child: it draws a fresh seed instead of its parent's stream. */
uint64_t new_gen(void);

static void test_gen_after_fork(void **state)
{
    (void)state;
    (void)new_gen();
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    if (pid == 0) {
        uint64_t g = new_gen();
        _exit(write(p[1], &g, sizeof g) == sizeof g ? 0 : 1);
    }
    uint64_t mine = new_gen(), theirs = 0;
    assert_int_equal(read(p[0], &theirs, sizeof theirs), sizeof theirs);
    int st;
    waitpid(pid, &st, 0);
    close(p[0]);
    close(p[1]);
    assert_true(mine != theirs && mine != 0 && theirs != 0);
}

/* Value files in store directory IN that hold chunks (the engine keeps an
 * empty spare ready beside the active file): how many, and their bytes. */
static uint64_t val_bytes_in(const char *in, int *files)
{
    DIR *d = opendir(in);
    struct dirent *de;
    uint64_t n = 0;
    char p[1024];
    *files = 0;
    while ((de = readdir(d))) {
        struct stat st;
        size_t l = strlen(de->d_name);
        if (l < 4 || strcmp(de->d_name + l - 4, ".val"))
            continue;
        snprintf(p, sizeof p, "%s/%s", in, de->d_name);
        if (stat(p, &st) == 0 && st.st_size > 32) {
            n += (uint64_t)st.st_size;
            (*files)++;
        }
    }
    closedir(d);
    return n;
}

/* The same for the test's store. */
static uint64_t val_bytes(int *files)
{
    return val_bytes_in(dir, files);
}

/*
 * Whole chunks written with stash_pwrite go to value files: they read back
 * through every call and across a reopen; a snapshot and an open iterator
 * keep an overwritten file's bytes readable until they are released, and
 * the file is given back after that; partial writes, truncation and a
 * backup work on such values; a damaged or missing value file gives -EIO
 * on the value it holds and nothing else.
 */
static void test_value_files(void **state)
{
    (void)state;
    const size_t n = 1u << 20;
    uint8_t *a = malloc(n), *b = malloc(n), *buf = malloc(n);
    uint64_t seed = 99;
    fill(a, n, &seed);
    fill(b, n, &seed);
    stash_t *db = open_small();
    assert_int_equal(stash_put(db, "small", 5, "x", 1), 0);
    assert_int_equal(stash_pwrite(db, "f", 1, a, n, 0), 0);
    int files;
    uint64_t vb = val_bytes(&files);
    assert_int_equal(files, 1);
    assert_true(vb >= n && vb < n + n / 8);     /* the bytes went there, once */
    check_value(db, "f", a, n);

    /* A snapshot and an iterator see the old bytes after an overwrite. */
    stash_snapshot_t *s = stash_snapshot_new(db);
    stash_iter_t *it = stash_iter_new(db, NULL);
    assert_non_null(s);
    assert_non_null(it);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);  /* seals the file */
    assert_int_equal(stash_pwrite(db, "f", 1, b, n, 0), 0);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    check_value(db, "f", b, n);
    size_t got;
    assert_int_equal(stash_pread_at(db, s, "f", 1, buf, n, 0, &got), 0);
    assert_int_equal(got, n);
    assert_memory_equal(buf, a, n);
    stash_snapshot_free(db, s);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    stash_iter_seek(it, "f", 1);
    assert_true(stash_iter_valid(it));
    size_t vl;
    const void *v = stash_iter_value(it, &vl);
    assert_non_null(v);
    assert_int_equal(vl, n);
    assert_memory_equal(v, a, n);
    assert_true(val_bytes(&files) >= 2 * n);    /* the iterator holds the old file */
    stash_iter_free(it);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    vb = val_bytes(&files);
    assert_int_equal(files, 1);
    assert_true(vb >= n && vb < n + n / 8);
    check_value(db, "f", b, n);

    /* Partial writes into chunks held in a value file, and truncation. */
    memcpy(b + 70000, "partial", 7);
    assert_int_equal(stash_pwrite(db, "f", 1, "partial", 7, 70000), 0);
    memset(b + 300000, 0, n - 300000);
    assert_int_equal(stash_truncate(db, "f", 1, 300000), 0);
    assert_int_equal(stash_truncate(db, "f", 1, n), 0);
    check_value(db, "f", b, n);

    /* Across a reopen, and in a backup. */
    assert_int_equal(stash_close(db), 0);
    db = open_small();
    check_value(db, "f", b, n);
    char bdir[600];
    snprintf(bdir, sizeof bdir, "%s.backup", dir);
    assert_int_equal(stash_backup(db, bdir), 0);
    stash_t *bk;
    assert_int_equal(stash_open(bdir, NULL, &bk), 0);
    check_value(bk, "f", b, n);
    assert_int_equal(stash_close(bk), 0);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", bdir);
    assert_int_equal(system(cmd), 0);

    /* A damaged byte in the value file: -EIO, never wrong bytes. */
    assert_int_equal(stash_pwrite(db, "f", 1, a, n, 0), 0);
    assert_int_equal(stash_close(db), 0);
    char vp[1024];
    val_bytes(&files);
    assert_int_equal(stash_compact_range(db = open_small(), NULL, 0, NULL, 0), 0);
    assert_int_equal(stash_close(db), 0);
    val_bytes(&files);
    assert_int_equal(files, 1);
    tu_value_file(vp, sizeof vp);
    /* Chunk 3's bytes, wherever the file holds them (collections may have
     * moved other chunks in before them). */
    FILE *fp = fopen(vp, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    long fsz = ftell(fp);
    uint8_t *whole = malloc((size_t)fsz);
    assert_int_equal(fseek(fp, 0, SEEK_SET), 0);
    assert_int_equal(fread(whole, 1, (size_t)fsz, fp), (size_t)fsz);
    const uint8_t *at = memmem(whole, (size_t)fsz, a + 196608, 4096);
    assert_non_null(at);
    long pos = (long)(at - whole) + 3000;
    free(whole);
    assert_int_equal(fseek(fp, pos, SEEK_SET), 0);
    int c = fgetc(fp);
    assert_int_equal(fseek(fp, pos, SEEK_SET), 0);
    fputc(c ^ 0x40, fp);
    fclose(fp);
    db = open_small();
    assert_int_equal(stash_pread(db, "f", 1, buf, 4096, 196608, &got), -EIO);
    assert_non_null(strstr(stash_last_error(db), ".val"));
    assert_int_equal(stash_pread(db, "f", 1, buf, 4096, 0, &got), 0);
    assert_memory_equal(buf, a, 4096);
    void *sv;
    assert_int_equal(stash_get(db, "small", 5, &sv, &vl), 0);
    stash_free(sv);
    /* A scan: the damaged value comes back NULL, a large value read fine
     * after it does not hide the error from stash_iter_status. */
    assert_int_equal(stash_put(db, "z", 1, b, 200000), 0);
    stash_iter_t *dit = stash_iter_new(db, NULL);
    int nulls = 0, fine = 0;
    for (stash_iter_seek_first(dit); stash_iter_valid(dit); stash_iter_next(dit)) {
        size_t dl;
        if (stash_iter_value(dit, &dl))
            fine++;
        else
            nulls++;
    }
    assert_int_equal(nulls, 1);
    assert_true(fine >= 2);
    assert_int_equal(stash_iter_status(dit), -EIO);
    stash_iter_free(dit);
    assert_int_equal(stash_delete(db, "z", 1), 0);
    /* It can still be replaced or removed. */
    assert_int_equal(stash_delete(db, "f", 1), 0);
    assert_int_equal(stash_close(db), 0);

    /* A missing value file: -EIO naming it. */
    db = open_small();
    assert_int_equal(stash_pwrite(db, "g", 1, a, n, 0), 0);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    assert_int_equal(stash_close(db), 0);
    tu_value_file(vp, sizeof vp);
    assert_int_equal(unlink(vp), 0);
    db = open_small();
    assert_int_equal(stash_pread(db, "g", 1, buf, 4096, 0, &got), -EIO);
    assert_non_null(strstr(stash_last_error(db), "missing"));
    assert_int_equal(stash_close(db), 0);
    free(a);
    free(b);
    free(buf);
}

/* The number after LABEL in the store's statistics (0 if absent). */
static uint64_t stat_after(stash_t *db, const char *label)
{
    char buf[8192];
    assert_int_equal(stash_stats(db, buf, sizeof buf), 0);
    const char *p = strstr(buf, label);
    return p ? strtoull(p + strlen(label), NULL, 10) : 0;
}

/* A collection fsyncs the log before it gives a file back: the delete that
 * left the file unnamed must not be lost to a power cut while its file is
 * gone (the old pointer would come back to a missing file).  With no
 * periodic fsync in the way, the background collection's own fsync shows
 * in the count. */
/* KEY's envelope (only its kind, gen and flags: what it points to is gone):
 * 0, or -1 when KEY has no value. */
static int envelope_of(stash_t *db, const char *key, struct envelope *e)
{
    uint64_t seq;
    struct view *v = db_view(db, NULL, &seq);
    void *raw = NULL;
    size_t rl;
    int rc = db_view_get(v, seq, (const uint8_t *)key, strlen(key), &raw, &rl) == 0 && env_decode(raw, rl, e) == 0
                 ? 0 : -1;
    free(raw);
    db_view_put(v);
    return rc;
}

/* The patch record of chunk IDX of KEY's value (value.h), if any: its
 * length, or -1. */
static long patch_len(stash_t *db, const char *key, uint64_t idx)
{
    struct envelope e;
    if (envelope_of(db, key, &e) < 0 || e.kind != VK_CHUNKED || !e.tagged)
        return -1;
    uint64_t seq;
    struct view *v = db_view(db, NULL, &seq);
    void *p;
    size_t pl;
    assert_int_equal(db_patch_get(v, seq, &e, idx, &p, &pl), 0);
    db_view_put(v);
    free(p);
    return p ? (long)pl : -1;
}


/* Is chunk IDX of chunked value E stored (not a hole)? */
static int chunk_stored(stash_t *db, const struct envelope *e, uint64_t idx)
{
    uint8_t ck[CHUNK_KEY_LEN];
    ckey(ck, e, idx);
    uint64_t seq;
    struct view *v = db_view(db, NULL, &seq);
    void *raw = NULL;
    size_t rl;
    int rc = db_view_get(v, seq, ck, sizeof ck, &raw, &rl);
    db_view_put(v);
    free(raw);
    assert_true(rc == 0 || rc == -ENOENT);
    return rc == 0;
}

/* stash_zero_range: zeros inside the value only, whole chunks dropped as
 * holes, the edges written (also into patched chunks of value files and
 * through a second name), size kept, mtime moved; after a reopen too. */
static void test_zero_range(void **state)
{
    (void)state;
    stash_t *db = open_small();
    assert_int_equal(stash_zero_range(db, "none", 4, 0, 10), -ENOENT);

    /* Inline. */
    assert_int_equal(stash_put(db, "s", 1, "hello world", 11), 0);
    assert_int_equal(stash_zero_range(db, "s", 1, 2, 3), 0);
    assert_int_equal(stash_zero_range(db, "s", 1, 9, 1000), 0);
    assert_int_equal(stash_zero_range(db, "s", 1, 11, 5), 0);
    check_value(db, "s", (const uint8_t *)"he\0\0\0 wor\0\0", 11);

    /* Chunked: six chunks written whole (value files), a small write into
     * chunk 4 (its patch record), a second name. */
    enum { N = 6 * 65536 - 1000 };
    uint8_t *m = malloc(N);
    uint64_t seed = 7;
    fill(m, N, &seed);
    for (size_t off = 0; off < N; off += 65536)
        assert_int_equal(stash_pwrite(db, "big", 3, m + off, N - off < 65536 ? N - off : 65536, off), 0);
    assert_int_equal(stash_pwrite(db, "big", 3, "patch", 5, 4 * 65536 + 100), 0);
    memcpy(m + 4 * 65536 + 100, "patch", 5);
    assert_true(patch_len(db, "big", 4) > 0);
    struct envelope e;      /* (a second name moves the envelope, not the chunks) */
    assert_int_equal(envelope_of(db, "big", &e), 0);
    assert_int_equal(e.kind, VK_CHUNKED);
    assert_int_equal(stash_link(db, "big", 3, "big2", 4), 0);
    stash_stat_t before, after;
    assert_int_equal(stash_stat(db, NULL, "big", 3, &before), 0);
    usleep(2000);
    /* From inside chunk 0 to inside chunk 4, through the second name. */
    assert_int_equal(stash_zero_range(db, "big2", 4, 1000, 4 * 65536 + 50 - 1000), 0);
    memset(m + 1000, 0, 4 * 65536 + 50 - 1000);
    assert_int_equal(stash_stat(db, NULL, "big", 3, &after), 0);
    assert_int_equal(after.size, N);
    assert_true(after.mtime_ns > before.mtime_ns);
    check_value(db, "big", m, N);
    assert_true(chunk_stored(db, &e, 0));
    for (int i = 1; i <= 3; i++)
        assert_false(chunk_stored(db, &e, (uint64_t)i));
    assert_true(chunk_stored(db, &e, 4));
    /* The last chunk, short, zeroed from its start to past the end: a hole. */
    assert_int_equal(stash_zero_range(db, "big", 3, 5 * 65536, 1 << 20), 0);
    memset(m + 5 * 65536, 0, N - 5 * 65536);
    assert_false(chunk_stored(db, &e, 5));
    assert_int_equal(stash_value_size(db, "big", 3, &after.size), 0);
    assert_int_equal(after.size, N);
    check_value(db, "big", m, N);
    /* Writing into a hole again. */
    assert_int_equal(stash_pwrite(db, "big", 3, "x", 1, 2 * 65536 + 7), 0);
    m[2 * 65536 + 7] = 'x';
    check_value(db, "big2", m, N);
    assert_int_equal(stash_close(db), 0);
    db = open_small();
    check_value(db, "big", m, N);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    check_value(db, "big2", m, N);
    free(m);
    assert_int_equal(stash_close(db), 0);
}

/* What stash_seek of KEY from OFF gives: the offset, or the negative errno. */
static long long seek_of(stash_t *db, const stash_snapshot_t *s, const char *key, uint64_t off, int whence)
{
    uint64_t r = 0;
    int rc = stash_seek(db, s, key, strlen(key), off, whence, &r);
    return rc ? rc : (long long)r;
}

/* stash_seek finds data and holes: whole missing chunks of a chunked value
 * are holes, everything else is data, at a snapshot as it was then, through
 * every name, after flushes, compactions and a reopen. */
static void test_seek(void **state)
{
    (void)state;
    stash_t *db = open_small();
    const long long C = 65536;
    assert_int_equal(seek_of(db, NULL, "none", 0, STASH_SEEK_DATA), -ENOENT);
    assert_int_equal(stash_put(db, "s", 1, "hello world", 11), 0);
    assert_int_equal(seek_of(db, NULL, "s", 0, 7), -EINVAL);
    assert_int_equal(seek_of(db, NULL, "s", 0, STASH_SEEK_DATA), 0);
    assert_int_equal(seek_of(db, NULL, "s", 5, STASH_SEEK_DATA), 5);
    assert_int_equal(seek_of(db, NULL, "s", 3, STASH_SEEK_HOLE), 11);
    assert_int_equal(seek_of(db, NULL, "s", 11, STASH_SEEK_DATA), -ENXIO);
    assert_int_equal(seek_of(db, NULL, "s", 11, STASH_SEEK_HOLE), -ENXIO);

    /* Chunks 2, 5 (whole) and 6 written; 11 chunks long, the last short. */
    uint8_t *whole = malloc(C);
    memset(whole, 'w', C);
    assert_int_equal(stash_pwrite(db, "sp", 2, "a", 1, 2 * C + 5), 0);
    assert_int_equal(stash_pwrite(db, "sp", 2, whole, C, 5 * C), 0);
    assert_int_equal(stash_pwrite(db, "sp", 2, "b", 1, 6 * C + 10), 0);
    assert_int_equal(stash_truncate(db, "sp", 2, 10 * C + 100), 0);
    assert_int_equal(stash_link(db, "sp", 2, "sp2", 3), 0);
    stash_snapshot_t *snap = stash_snapshot_new(db);
    assert_non_null(snap);
    for (int round = 0; round < 3; round++) {
        const char *k = round == 1 ? "sp2" : "sp";
        assert_int_equal(seek_of(db, NULL, k, 0, STASH_SEEK_DATA), 2 * C);
        assert_int_equal(seek_of(db, NULL, k, 2 * C + 7, STASH_SEEK_DATA), 2 * C + 7);
        assert_int_equal(seek_of(db, NULL, k, 3 * C, STASH_SEEK_DATA), 5 * C);
        assert_int_equal(seek_of(db, NULL, k, 6 * C + 1, STASH_SEEK_DATA), 6 * C + 1);
        assert_int_equal(seek_of(db, NULL, k, 7 * C, STASH_SEEK_DATA), -ENXIO);
        assert_int_equal(seek_of(db, NULL, k, 0, STASH_SEEK_HOLE), 0);
        assert_int_equal(seek_of(db, NULL, k, 2 * C, STASH_SEEK_HOLE), 3 * C);
        assert_int_equal(seek_of(db, NULL, k, 5 * C + 3, STASH_SEEK_HOLE), 7 * C);
        assert_int_equal(seek_of(db, NULL, k, 10 * C + 5, STASH_SEEK_HOLE), 10 * C + 5);
        assert_int_equal(seek_of(db, NULL, k, 10 * C + 100, STASH_SEEK_HOLE), -ENXIO);
        if (round == 0)     /* the same from the tables */
            assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    }
    /* Chunk 5 zeroed away, chunk 9 written: the snapshot still sees 5. */
    assert_int_equal(stash_zero_range(db, "sp2", 3, 5 * C, C), 0);
    assert_int_equal(stash_pwrite(db, "sp", 2, whole, 100, 9 * C), 0);
    assert_int_equal(seek_of(db, NULL, "sp", 3 * C, STASH_SEEK_DATA), 6 * C);
    assert_int_equal(seek_of(db, NULL, "sp", 7 * C, STASH_SEEK_DATA), 9 * C);
    assert_int_equal(seek_of(db, NULL, "sp", 2 * C, STASH_SEEK_HOLE), 3 * C);
    assert_int_equal(seek_of(db, NULL, "sp", 6 * C, STASH_SEEK_HOLE), 7 * C);
    assert_int_equal(seek_of(db, NULL, "sp", 9 * C, STASH_SEEK_HOLE), 10 * C);
    assert_int_equal(seek_of(db, snap, "sp", 3 * C, STASH_SEEK_DATA), 5 * C);
    assert_int_equal(seek_of(db, snap, "sp", 7 * C, STASH_SEEK_DATA), -ENXIO);
    stash_snapshot_free(db, snap);

    /* A value with no hole: its end. */
    assert_int_equal(stash_pwrite(db, "d", 1, whole, C, 0), 0);
    assert_int_equal(stash_pwrite(db, "d", 1, whole, C, C), 0);
    assert_int_equal(stash_pwrite(db, "d", 1, whole, 10, 2 * C), 0);
    assert_int_equal(seek_of(db, NULL, "d", 100, STASH_SEEK_HOLE), 2 * C + 10);
    assert_int_equal(seek_of(db, NULL, "d", 2 * C + 3, STASH_SEEK_DATA), 2 * C + 3);
    assert_int_equal(stash_close(db), 0);
    db = open_small();
    assert_int_equal(seek_of(db, NULL, "sp2", 3 * C, STASH_SEEK_DATA), 6 * C);
    assert_int_equal(seek_of(db, NULL, "sp2", 9 * C + 1, STASH_SEEK_HOLE), 10 * C);
    free(whole);
    assert_int_equal(stash_close(db), 0);
}

/* A chunk count past the chunks a value's size spans (damage, or a bug) is
 * not believed: the envelope still decodes, as having no holes, and a
 * malformed count is damage. */
static void test_count_decode(void **state)
{
    (void)state;
    struct envelope e, d;
    memset(&e, 0, sizeof e);
    e.kind = VK_CHUNKED;
    e.tagged = 1;
    e.gen = 42;
    e.st.size = 3 * 65536 + 1;
    e.chunks_known = 1;
    uint8_t hdr[128];
    for (uint64_t n = 0; n <= 5; n++) {
        e.chunks = n;
        size_t len = env_encode_header(&e, hdr);
        assert_int_equal(env_decode(hdr, len, &d), 0);
        assert_int_equal(d.gen, 42);
        assert_int_equal(d.chunks_known, n <= 4);
        assert_int_equal(d.st.stored, n <= 3 ? n * 65536 : e.st.size);
        hdr[len - 1] |= 0x80;           /* the count's varint cut short */
        assert_int_equal(env_decode(hdr, len, &d), -EIO);
    }
    e.chunks_known = 0;                 /* a value from before the count */
    assert_int_equal(env_decode(hdr, env_encode_header(&e, hdr), &d), 0);
    assert_int_equal(d.chunks_known, 0);
    assert_int_equal(d.st.stored, e.st.size);
}

/* Bytes in the store's table files. */
static uint64_t table_bytes(void)
{
    uint64_t sum = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (n > 4 && !strcmp(de->d_name + n - 4, ".sst") && stat(path, &st) == 0)
            sum += (uint64_t)st.st_size;
    }
    closedir(d);
    return sum;
}

/* A batch that changes one key twice: the value it had is dropped once (a
 * hard-linked one loses one name, not two), and what the first change put
 * goes too (a large put's chunks are not left behind). */
static void test_batch_same_key_twice(void **state)
{
    (void)state;
    stash_t *db = open_small();
    assert_int_equal(stash_put(db, "a", 1, "x", 1), 0);
    assert_int_equal(stash_link(db, "a", 1, "b", 1), 0);
    assert_int_equal(stash_link(db, "a", 1, "c", 1), 0);
    stash_batch_t *b = stash_batch_new();
    assert_int_equal(stash_batch_put(b, "a", 1, "1", 1), 0);
    assert_int_equal(stash_batch_put(b, "a", 1, "2", 1), 0);
    assert_int_equal(stash_write(db, b, 0), 0);
    stash_batch_free(b);
    stash_stat_t st;
    assert_int_equal(stash_stat(db, NULL, "b", 1, &st), 0);
    assert_int_equal(st.nlink, 2);
    assert_int_equal(stash_delete(db, "c", 1), 0);
    check_value(db, "b", (const uint8_t *)"x", 1);
    check_value(db, "a", (const uint8_t *)"2", 1);

    /* 40 batches each putting 256 KiB of random bytes under "big" and
     * then a small value: nothing of the large ones may stay. */
    enum { L = 4 * 65536 };
    uint8_t *m = malloc(L);
    uint64_t seed = 11;
    for (int i = 0; i < 40; i++) {
        fill(m, L, &seed);
        b = stash_batch_new();
        assert_int_equal(stash_batch_put(b, "big", 3, m, L), 0);
        assert_int_equal(stash_batch_put(b, "big", 3, "small", 5), 0);
        assert_int_equal(stash_write(db, b, 0), 0);
        stash_batch_free(b);
    }
    check_value(db, "big", (const uint8_t *)"small", 5);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    uint64_t t = table_bytes();
    if (t > (1u << 20))
        fail_msg("%llu bytes of tables after the large puts were replaced (10 MiB were written)",
                 (unsigned long long)t);
    free(m);
    assert_int_equal(stash_close(db), 0);
}

/* A stash_put_stream source reading from memory. */
struct membuf { uint8_t *p; size_t len, at; };

static int read_mem(void *arg, void *buf, size_t len, size_t *got)
{
    struct membuf *m = arg;
    *got = m->len - m->at < len ? m->len - m->at : len;
    memcpy(buf, m->p + m->at, *got);
    m->at += *got;
    return 0;
}

/* Zeroing part of a hole leaves it a hole: no chunk of zeros is written
 * (stored, and so st_blocks, stays; SEEK_DATA does not stop there). */
static void test_zero_in_hole(void **state)
{
    (void)state;
    stash_t *db = open_small();
    assert_int_equal(stash_pwrite(db, "f", 1, "x", 1, 10u << 20), 0);
    stash_stat_t st;
    assert_int_equal(stash_stat(db, NULL, "f", 1, &st), 0);
    assert_int_equal(st.stored, 65536);
    assert_int_equal(stash_zero_range(db, "f", 1, 1000, 1000), 0);
    assert_int_equal(stash_zero_range(db, "f", 1, (10u << 20) - 10, 5), 0);
    assert_int_equal(stash_stat(db, NULL, "f", 1, &st), 0);
    assert_int_equal(st.stored, 65536);
    uint64_t at = 0;
    assert_int_equal(stash_seek(db, NULL, "f", 1, 0, STASH_SEEK_DATA, &at), 0);
    assert_int_equal(at, 10u << 20);
    check_count(db, "f", 0);

    /* A streamed put leaves its chunks of zeros out too. */
    struct membuf mb = {calloc(1, 3 * 65536), 3 * 65536, 0};
    memset(mb.p, 'a', 65536);
    memset(mb.p + 2 * 65536, 'c', 100);
    mb.len = 2 * 65536 + 100;
    assert_int_equal(stash_put_stream(db, "s", 1, read_mem, &mb, 0), 0);
    assert_int_equal(stash_stat(db, NULL, "s", 1, &st), 0);
    assert_int_equal(st.stored, 2 * 65536);     /* 64 KiB per chunk there */
    assert_int_equal(stash_seek(db, NULL, "s", 1, 0, STASH_SEEK_HOLE, &at), 0);
    assert_int_equal(at, 65536);
    check_value(db, "s", mb.p, mb.len);
    check_count(db, "s", 0);
    free(mb.p);
    assert_int_equal(stash_close(db), 0);
}

/* stash_extend grows a value with zeros and never cuts one: a value longer
 * than asked (say, grown meanwhile) keeps its bytes, size and times. */
static void test_extend(void **state)
{
    (void)state;
    stash_t *db = open_small();
    int grew = -1;
    assert_int_equal(stash_extend(db, "none", 4, 10, &grew), -ENOENT);
    assert_int_equal(stash_put(db, "s", 1, "hello", 5), 0);
    assert_int_equal(stash_extend(db, "s", 1, 8, &grew), 0);
    assert_int_equal(grew, 1);
    check_value(db, "s", (const uint8_t *)"hello\0\0\0", 8);
    enum { N = 3 * 65536 + 100 };
    uint8_t *m = calloc(1, N + 65536);
    uint64_t seed = 9;
    fill(m, N, &seed);
    assert_int_equal(stash_pwrite(db, "big", 3, m, N, 0), 0);
    stash_stat_t before, after;
    assert_int_equal(stash_stat(db, NULL, "big", 3, &before), 0);
    usleep(2000);
    assert_int_equal(stash_extend(db, "big", 3, 1000, &grew), 0);
    assert_int_equal(grew, 0);
    assert_int_equal(stash_extend(db, "big", 3, N, NULL), 0);
    assert_int_equal(stash_stat(db, NULL, "big", 3, &after), 0);
    assert_int_equal(after.size, N);
    assert_true(after.mtime_ns == before.mtime_ns);
    check_value(db, "big", m, N);
    assert_int_equal(stash_extend(db, "big", 3, N + 65536, &grew), 0);
    assert_int_equal(grew, 1);
    check_value(db, "big", m, N + 65536);
    assert_int_equal(stash_extend(db, "big", 3, STASH_MAX_FILE + 1, &grew), -EFBIG);
    free(m);
    assert_int_equal(stash_close(db), 0);
}

/* Small writes into chunks held in value files go to patch records instead
 * of rewriting 64 KiB each (value.h): they read back exactly, through
 * snapshots, reopens and compactions; a full record sends the chunk back to
 * a value file whole; writing a chunk whole, truncating and deleting drop
 * its record; a damaged one reads as -EIO. */
static void test_patches(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_file patches", 20261201);
    const size_t n = 8 * CHUNK_SIZE;
    uint8_t *model = malloc(n), *buf = malloc(n), *w = malloc(n);
    fill(model, n, &seed);
    stash_t *db = open_small();
    assert_int_equal(stash_pwrite(db, "p", 1, model, n, 0), 0);    /* whole chunks: value files */
    assert_int_equal(patch_len(db, "p", 0), -1);

    /* One small write: a patch record, the chunk's pointer kept. */
    fill(w, 100, &seed);
    assert_int_equal(stash_pwrite(db, "p", 1, w, 100, 1000), 0);
    memcpy(model + 1000, w, 100);
    assert_int_equal(patch_len(db, "p", 0), PATCH_HDR + 100);
    check_value(db, "p", model, n);
    stash_snapshot_t *s = stash_snapshot_new(db);
    uint8_t *at_snap = malloc(n);
    memcpy(at_snap, model, n);

    /* Many random small writes, some across a chunk boundary. */
    for (int i = 0; i < 400; i++) {
        size_t len = 1 + tu_rand(&seed) % 5000, off = tu_rand(&seed) % (n - len);
        fill(w, len, &seed);
        assert_int_equal(stash_pwrite(db, "p", 1, w, len, off), 0);
        memcpy(model + off, w, len);
        if (i % 50 == 0) {
            size_t got, o = tu_rand(&seed) % n, l = tu_rand(&seed) % (n - o);
            assert_int_equal(stash_pread(db, "p", 1, buf, l, o, &got), 0);
            assert_int_equal(got, l);
            assert_memory_equal(buf, model + o, l);
        }
        if (i == 200) {
            /* The snapshot still reads the bytes of its time. */
            size_t got;
            assert_int_equal(stash_pread_at(db, s, "p", 1, buf, n, 0, &got), 0);
            assert_int_equal(got, n);
            assert_memory_equal(buf, at_snap, n);
            stash_snapshot_free(db, s);
            assert_int_equal(stash_close(db), 0);
            db = open_small();
        }
        if (i == 300)
            assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    }
    check_value(db, "p", model, n);
    for (uint64_t c = 0; c < 8; c++)
        assert_true(patch_len(db, "p", c) <= (long)PATCH_MAX);

    /* A partial write too large for a record sends the chunk to a value
     * file whole: the next small write is a patch again. */
    fill(w, 20000, &seed);
    assert_int_equal(stash_pwrite(db, "p", 1, w, 20000, 5 * CHUNK_SIZE + 100), 0);
    memcpy(model + 5 * CHUNK_SIZE + 100, w, 20000);
    assert_int_equal(patch_len(db, "p", 5), -1);
    assert_int_equal(stash_pwrite(db, "p", 1, w, 50, 5 * CHUNK_SIZE + 7), 0);
    memcpy(model + 5 * CHUNK_SIZE + 7, w, 50);
    assert_int_equal(patch_len(db, "p", 5), PATCH_HDR + 50);
    check_value(db, "p", model, n);

    /* A whole chunk written drops its record; so does a truncation. */
    fill(w, CHUNK_SIZE, &seed);
    assert_int_equal(stash_pwrite(db, "p", 1, w, CHUNK_SIZE, 2 * CHUNK_SIZE), 0);
    memcpy(model + 2 * CHUNK_SIZE, w, CHUNK_SIZE);
    assert_int_equal(patch_len(db, "p", 2), -1);
    assert_int_equal(stash_pwrite(db, "p", 1, w, 10, 7 * CHUNK_SIZE + 5), 0);
    assert_true(patch_len(db, "p", 7) > 0);
    assert_int_equal(stash_truncate(db, "p", 1, 7 * CHUNK_SIZE + 3), 0);
    assert_int_equal(patch_len(db, "p", 7), -1);
    memset(model + 7 * CHUNK_SIZE + 3, 0, CHUNK_SIZE - 3);
    assert_int_equal(stash_truncate(db, "p", 1, n), 0);
    check_value(db, "p", model, n);
    assert_int_equal(stash_truncate(db, "p", 1, 6 * CHUNK_SIZE), 0);
    assert_int_equal(patch_len(db, "p", 7), -1);
    check_value(db, "p", model, 6 * CHUNK_SIZE);

    /* A damaged record: -EIO, never other bytes. */
    assert_int_equal(stash_pwrite(db, "p", 1, w, 10, 5), 0);
    memcpy(model + 5, w, 10);
    {
        struct envelope e;
        assert_int_equal(envelope_of(db, "p", &e), 0);
        uint8_t pk[CHUNK_KEY_LEN], bad[PATCH_HDR] = {0, 0, 0xff, 0, 10};
        pkey(pk, &e, 0);
        stash_batch_t *b = stash_batch_new();
        assert_int_equal(batch_put_raw(b, pk, sizeof pk, NULL, 0, bad, sizeof bad), 0);
        assert_int_equal(db_commit(db, b, 0), 0);
        stash_batch_free(b);
        size_t got;
        assert_int_equal(stash_pread(db, "p", 1, buf, 100, 0, &got), -EIO);
        assert_int_equal(stash_pread(db, "p", 1, buf, 100, CHUNK_SIZE, &got), 0);  /* others fine */
        assert_memory_equal(buf, model + CHUNK_SIZE, 100);
        /* A write that must read the chunk fails the same way and
         * changes nothing. */
        assert_int_equal(stash_pwrite(db, "p", 1, w, 20000, 100), -EIO);
        assert_non_null(strstr(stash_last_error(db), "damaged patch record"));
        assert_int_equal(stash_pread(db, "p", 1, buf, 100, CHUNK_SIZE, &got), 0);
        assert_memory_equal(buf, model + CHUNK_SIZE, 100);
        /* A whole write of the chunk mends it. */
        assert_int_equal(stash_pwrite(db, "p", 1, model, CHUNK_SIZE, 0), 0);
        check_value(db, "p", model, 6 * CHUNK_SIZE);
    }

    /* Deleting the value drops every record. */
    assert_int_equal(stash_pwrite(db, "p", 1, w, 10, 3 * CHUNK_SIZE + 1), 0);
    assert_true(patch_len(db, "p", 3) > 0);
    assert_int_equal(stash_delete(db, "p", 1), 0);
    assert_int_equal(stash_close(db), 0);
    free(model);
    free(buf);
    free(w);
    free(at_snap);
}

static uint64_t gen_of(stash_t *db, const char *key)
{
    struct envelope e;
    assert_int_equal(envelope_of(db, key, &e), 0);
    return e.gen;
}

static void *compact_all(void *arg)
{
    assert_int_equal(stash_compact_range(arg, NULL, 0, NULL, 0), 0);   /* then a collection */
    return NULL;
}

/* A value file's collection that found a chunk live, and moves it after a
 * truncation deleted it, must leave it deleted (it brought back the old
 * bytes, without their patches, where the file grew again).  The
 * collection is held between its scan and its move by another key's lock. */
/* A chunk kept in the tree (not written whole) takes small writes into its
 * patch record too, while the record stays under a quarter of the chunk:
 * they used to rewrite the whole chunk each (appends to a log file). */
static void test_tree_patches(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_file tree patches", 20261202);
    uint8_t *model = calloc(1, 2 * CHUNK_SIZE), *w = malloc(4096);
    fill(model, CHUNK_SIZE, &seed);
    stash_t *db = open_small();
    assert_int_equal(stash_pwrite(db, "t", 1, model, CHUNK_SIZE, 0), 0);   /* chunk 0, whole */
    /* Appends make chunk 1 in the tree: patches while they fit, then the
     * chunk rewritten with them, over and over. */
    size_t size = CHUNK_SIZE;
    int patched = 0, rewritten = 0;
    for (int i = 0; i < 300; i++) {
        fill(w, 100, &seed);
        uint64_t at;
        assert_int_equal(stash_append(db, "t", 1, w, 100, &at), 0);
        assert_int_equal(at, size);
        memcpy(model + size, w, 100);
        size += 100;
        long pl = patch_len(db, "t", 1);
        rewritten += patched && pl == -1;
        patched |= pl > 0;
        assert_true(pl <= (long)(size - CHUNK_SIZE) / 4);    /* never more than a quarter */
    }
    assert_true(patched && rewritten > 3);
    check_value(db, "t", model, size);
    /* A write too large for the record rewrites the chunk. */
    while (patch_len(db, "t", 1) == -1) {
        fill(w, 10, &seed);
        assert_int_equal(stash_pwrite(db, "t", 1, w, 10, CHUNK_SIZE + 50), 0);
        memcpy(model + CHUNK_SIZE + 50, w, 10);
    }
    fill(w, 4000, &seed);
    assert_int_equal(stash_pwrite(db, "t", 1, w, 4000, CHUNK_SIZE + 10), 0);
    memcpy(model + CHUNK_SIZE + 10, w, 4000);
    assert_int_equal(patch_len(db, "t", 1), -1);
    check_value(db, "t", model, size);
    assert_int_equal(stash_close(db), 0);
    db = open_small();
    check_value(db, "t", model, size);
    assert_int_equal(stash_close(db), 0);
    free(model);
    free(w);
}

/* An inline value over 16 KiB that a write changes only part of (an
 * append) becomes chunked, so the next small writes are patches; one
 * written whole, or a smaller one, stays inline (one key to read). */
static void test_partial_write_chunks(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_file partial writes", 20261202);
    uint8_t *model = calloc(1, 40000), *w = malloc(100);
    fill(model, 30000, &seed);
    stash_t *db = open_small();
    struct envelope e;
    assert_int_equal(stash_pwrite(db, "big", 3, model, 30000, 0), 0);
    assert_int_equal(stash_pwrite(db, "small", 5, model, 10000, 0), 0);
    assert_true(envelope_of(db, "big", &e) >= 0 && e.kind != VK_CHUNKED);     /* written whole */
    fill(w, 100, &seed);
    assert_int_equal(stash_append(db, "small", 5, w, 100, NULL), 0);
    assert_true(envelope_of(db, "small", &e) >= 0 && e.kind != VK_CHUNKED);   /* 10,100 bytes */
    size_t size = 30000;
    for (int i = 0; i < 50; i++) {
        fill(w, 100, &seed);
        assert_int_equal(stash_append(db, "big", 3, w, 100, NULL), 0);
        memcpy(model + size, w, 100);
        size += 100;
        assert_true(envelope_of(db, "big", &e) >= 0 && e.kind == VK_CHUNKED);
    }
    assert_true(patch_len(db, "big", 0) > 0);
    check_value(db, "big", model, size);
    assert_int_equal(stash_close(db), 0);
    db = open_small();
    check_value(db, "big", model, size);
    assert_int_equal(stash_close(db), 0);
    free(model);
    free(w);
}

/* A backup's value files stay as the backup took them while the store goes
 * on (the spare value file, made ahead, was linked into the backup too,
 * and the appends after it went into both). */
static void test_backup_value_files_fixed(void **state)
{
    (void)state;
    stash_options_t o;
    stash_options_init(&o);
    o.compression_level = 0;
    stash_t *db = NULL;
    assert_int_equal(stash_open(dir, &o, &db), 0);
    static uint8_t big[1 << 20];
    memset(big, 'A', sizeof big);
    assert_int_equal(stash_put(db, "a", 1, big, sizeof big), 0);
    usleep(200000);                 /* the spare is made meanwhile */
    char bak[700];
    snprintf(bak, sizeof bak, "%s/bak", dir);
    assert_int_equal(stash_backup(db, bak), 0);
    int files;
    uint64_t before = val_bytes_in(bak, &files);
    memset(big, 'B', sizeof big);
    for (int i = 0; i < 8; i++) {
        char k[16];
        snprintf(k, sizeof k, "b%d", i);
        assert_int_equal(stash_put(db, k, 2, big, sizeof big), 0);
    }
    assert_int_equal(stash_sync(db), 0);
    assert_int_equal(val_bytes_in(bak, &files), before);
    assert_int_equal(stash_close(db), 0);
    assert_int_equal(stash_open(bak, &o, &db), 0);
    void *v;
    size_t vl;
    assert_int_equal(stash_get(db, "a", 1, &v, &vl), 0);
    assert_int_equal(vl, sizeof big);
    stash_free(v);
    assert_int_equal(stash_get(db, "b0", 2, &v, &vl), -ENOENT);
    assert_int_equal(stash_close(db), 0);
}

static stash_t *race_db;
static atomic_int race_go, race_stop;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *race_putter(void *arg)
{
    (void)arg;
    while (!atomic_load(&race_go))
        ;
    while (!atomic_load(&race_stop))
        assert_int_equal(stash_put(race_db, "k", 1, "small", 5), 0);
    return NULL;
}

/*
 * A store's first large value, written while other threads put small values
 * over the same key: a put that saw no large value in the store yet, still
 * on its way, must not replace the new one without dropping its chunks
 * (they stayed for good, their value file never given back).  A race: each
 * round is a fresh store; it went wrong about once in 300 rounds.
 */
static void test_first_blob_race(void **state)
{
    (void)state;
    static uint8_t big[131072];
    memset(big, 'B', sizeof big);
    stash_options_t o;
    stash_options_init(&o);
    o.compression_level = 0;
    double t0 = now_s();
    int rounds = 0;
    for (; rounds < 600 && now_s() - t0 < 4.0; rounds++) {
        char d[700];
        snprintf(d, sizeof d, "%s/r%d", dir, rounds);
        assert_int_equal(stash_open(d, &o, &race_db), 0);
        atomic_store(&race_go, 0);
        atomic_store(&race_stop, 0);
        pthread_t th[2];
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_create(&th[i], NULL, race_putter, NULL), 0);
        atomic_store(&race_go, 1);
        usleep(200);
        assert_int_equal(stash_pwrite(race_db, "k", 1, big, sizeof big, 0), 0);
        usleep(200);
        atomic_store(&race_stop, 1);
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
        assert_int_equal(stash_delete(race_db, "k", 1), 0);
        assert_int_equal(stash_compact_range(race_db, NULL, 0, NULL, 0), 0);
        assert_int_equal(stash_close(race_db), 0);
        int files;
        uint64_t left = val_bytes_in(d, &files);
        if (left)
            fail_msg("round %d: %llu bytes of value files left after the key was deleted", rounds,
                     (unsigned long long)left);
    }
    fprintf(stderr, "first large value raced by puts: %d rounds\n", rounds);
}

static void test_collect_after_truncate(void **state)
{
    (void)state;
    enum { NCH = 16 };
    stash_options_t o;
    stash_options_init(&o);
    o.compression_level = 0;
    stash_t *db = NULL;
    assert_int_equal(stash_open(dir, &o, &db), 0);
    size_t sz = NCH * CHUNK_SIZE;
    uint8_t *old = malloc(sz), *buf = malloc(sz);
    for (size_t i = 0; i < sz; i++)
        old[i] = (uint8_t)(i % 251 + 1);
    assert_int_equal(stash_pwrite(db, "a", 1, old, sz, 0), 0);
    /* A key "bN" under another lock whose chunks come first in the scan. */
    char bk[16];
    for (int i = 0;; i++) {
        snprintf(bk, sizeof bk, "b%d", i);
        assert_int_equal(stash_pwrite(db, bk, strlen(bk), old, 2 * CHUNK_SIZE, 0), 0);
        if (gen_of(db, bk) < gen_of(db, "a") &&
            db_keylock(db, (const uint8_t *)bk, strlen(bk)) != db_keylock(db, (const uint8_t *)"a", 1))
            break;
        assert_int_equal(stash_delete(db, bk, strlen(bk)), 0);
    }
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);    /* seals the value file */
    pthread_mutex_t *lb = db_keylock(db, (const uint8_t *)bk, strlen(bk));
    pthread_mutex_lock(lb);
    /* Most of a's chunks rewritten: the first file goes sparse, with a's
     * chunks 0, 4, 8 and 12 live in it; chunk 4 gets a patch. */
    for (int c = 0; c < NCH; c++)
        if (c % 4)
            assert_int_equal(stash_pwrite(db, "a", 1, old + c * CHUNK_SIZE, CHUNK_SIZE, (uint64_t)c * CHUNK_SIZE), 0);
    uint8_t p[100];
    memset(p, 0xEE, sizeof p);
    assert_int_equal(stash_pwrite(db, "a", 1, p, sizeof p, 4 * CHUNK_SIZE + 10), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, compact_all, db), 0);
    sleep(1);                                   /* it waits for bN's lock */
    assert_int_equal(stash_truncate(db, "a", 1, CHUNK_SIZE), 0);
    pthread_mutex_unlock(lb);
    pthread_join(th, NULL);
    /* Grown again: past the first chunk, zeros. */
    assert_int_equal(stash_truncate(db, "a", 1, sz), 0);
    memset(old + CHUNK_SIZE, 0, sz - CHUNK_SIZE);
    check_value(db, "a", old, sz);
    assert_int_equal(stash_close(db), 0);
    free(old);
    free(buf);
}

static void test_value_file_collect_durable(void **state)
{
    (void)state;
    stash_options_t o;
    stash_options_init(&o);
    o.wal_flush_interval = 3600;
    stash_t *db = NULL;
    assert_int_equal(stash_open(dir, &o, &db), 0);
    enum { N = 4 * 65536 };
    uint8_t *v = malloc(N);
    uint64_t seed = 5;
    fill(v, N, &seed);
    assert_int_equal(stash_pwrite(db, "A", 1, v, N, 0), 0);
    assert_int_equal(stash_close(db), 0);
    assert_int_equal(stash_open(dir, &o, &db), 0);
    uint64_t freed = stat_after(db, "stored), "), fsyncs = stat_after(db, "commit groups, ");
    assert_int_equal(stash_delete(db, "A", 1), 0);
    int waited = 0;
    while (stat_after(db, "stored), ") == freed && waited < 200) {
        usleep(50000);
        waited++;
    }
    assert_true(stat_after(db, "stored), ") > freed);
    assert_true(stat_after(db, "commit groups, ") > fsyncs);
    assert_int_equal(stash_close(db), 0);
    assert_int_equal(stash_open(dir, &o, &db), 0);
    void *got;
    size_t gl;
    assert_int_equal(stash_get(db, "A", 1, &got, &gl), -ENOENT);
    assert_int_equal(stash_close(db), 0);
    free(v);
}

/*
 * A machine crash can keep a batch that points into a value file and lose
 * the bytes (they had not been fsynced): at the next open the log ends
 * before that batch, as at a torn record, instead of giving -EIO for the
 * value later.  Here the bytes are cut off the file by hand.
 */
static void test_value_file_torn(void **state)
{
    (void)state;
    const size_t n = 256u << 10;
    uint8_t *a = malloc(n);
    uint64_t seed = 5;
    fill(a, n, &seed);
    /* Written, not synced, and the machine stops (a child that never
     * closes the store): the crash loses the value file's bytes. */
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        stash_options_t o;
        small_opts(&o);
        stash_t *d = NULL;
        _exit(stash_open(dir, &o, &d) || stash_put(d, "a", 1, "1", 1) || stash_pwrite(d, "big", 3, a, n, 0) ||
              stash_put(d, "c", 1, "3", 1));
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char vp[1024];
    tu_value_file(vp, sizeof vp);
    assert_int_equal(truncate(vp, 32), 0);      /* the header only */
    stash_t *db = open_small();
    void *v;
    size_t vl;
    assert_int_equal(stash_get(db, "a", 1, &v, &vl), 0);
    stash_free(v);
    assert_int_equal(stash_get(db, "big", 3, &v, &vl), -ENOENT);
    assert_int_equal(stash_get(db, "c", 1, &v, &vl), -ENOENT);
    /* The store goes on, and the same happens at the next open. */
    assert_int_equal(stash_pwrite(db, "big", 3, a, n, 0), 0);
    assert_int_equal(stash_close(db), 0);
    db = open_small();
    check_value(db, "big", a, n);
    assert_int_equal(stash_get(db, "c", 1, &v, &vl), -ENOENT);
    assert_int_equal(stash_close(db), 0);
    free(a);
}

/* More value files than descriptors the process may open: reads close
 * idle ones as they go. */
static void test_value_file_fds(void **state)
{
    (void)state;
    const size_t n = 128u << 10;
    uint8_t *a = malloc(n);
    stash_t *db = open_small();
    for (int i = 0; i < 120; i++) {
        char k[16];
        memset(a, i + 1, n);
        snprintf(k, sizeof k, "k%d", i);
        assert_int_equal(stash_pwrite(db, k, strlen(k), a, n, 0), 0);
        /* Each compaction seals the file: one file per key. */
        assert_int_equal(stash_compact_range(db, k, strlen(k), k, strlen(k)), 0);
    }
    assert_int_equal(stash_close(db), 0);
    int files;
    val_bytes(&files);
    assert_true(files >= 120);
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit rl = {100, 100};
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            _exit(2);
        stash_options_t o;
        stash_options_init(&o);
        if (stash_open(dir, &o, &db) != 0)
            _exit(3);
        for (int round = 0; round < 2; round++)
            for (int i = 0; i < 120; i++) {
                char k[16];
                size_t got;
                snprintf(k, sizeof k, "k%d", i);
                if (stash_pread(db, k, strlen(k), a, n, 0, &got) != 0 || got != n || a[0] != i + 1 ||
                    a[n - 1] != i + 1) {
                    fprintf(stderr, "k%d: %s\n", i, stash_last_error(db));
                    _exit(4);
                }
            }
        _exit(stash_close(db) == 0 ? 0 : 5);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    free(a);
}

/*
 * A value file most of whose chunks are dead is emptied: its live chunks
 * (of plain and hard-linked values) move to the active file and it goes,
 * once no snapshot still sees the dead ones; everything reads back the same,
 * also after a reopen.
 */
static void test_value_file_sparse(void **state)
{
    (void)state;
    const size_t n = 256u << 10;
    uint8_t *a = malloc(n), *b = malloc(n);
    stash_t *db = open_small();
    for (int i = 0; i < 20; i++) {
        char k[16];
        uint64_t sd = (uint64_t)i + 1;
        fill(a, n, &sd);
        snprintf(k, sizeof k, "k%02d", i);
        assert_int_equal(stash_pwrite(db, k, strlen(k), a, n, 0), 0);
    }
    assert_int_equal(stash_link(db, "k03", 3, "l03", 3), 0);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    int files;
    uint64_t before = val_bytes(&files);
    assert_int_equal(files, 1);
    assert_true(before >= 20 * n);
    stash_snapshot_t *s = stash_snapshot_new(db);
    for (int i = 0; i < 20; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%02d", i);
        if (i % 4)
            assert_int_equal(stash_delete(db, k, strlen(k)), 0);
    }
    /* The snapshot sees them all: nothing moves out of a file it needs
     * whole, or rather, the file stays while it is held. */
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    assert_true(val_bytes(&files) >= before);
    size_t got;
    assert_int_equal(stash_pread_at(db, s, "k01", 3, b, n, 0, &got), 0);
    uint64_t sd1 = 2;
    fill(a, n, &sd1);
    assert_memory_equal(a, b, n);
    stash_snapshot_free(db, s);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    uint64_t after = val_bytes(&files);
    assert_true(after < 6 * n + n / 2);         /* 5 live values, not 20 */
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 20; i += 4) {
            char k[16];
            uint64_t sd = (uint64_t)i + 1;
        fill(a, n, &sd);
            snprintf(k, sizeof k, "k%02d", i);
            check_value(db, k, a, n);
        }
        uint64_t sd3 = 4;
        fill(a, n, &sd3);
        check_value(db, "l03", a, n);
        if (round == 0) {
            assert_int_equal(stash_close(db), 0);
            db = open_small();
        }
    }
    assert_int_equal(stash_close(db), 0);
    free(a);
    free(b);
}

/* Whole-chunk writes racing with collections that move chunks out of
 * sparse files: a move never undoes a write (it rewrites a record only if
 * it still holds the pointer it read, under the value's lock). */
struct racer {
    stash_t *db;
    atomic_int stop;
    int rc;
};

static void *compactor(void *arg)
{
    struct racer *r = arg;
    while (!atomic_load(&r->stop) && r->rc == 0)
        r->rc = stash_compact_range(r->db, NULL, 0, NULL, 0);
    return NULL;
}

static void test_value_file_race(void **state)
{
    (void)state;
    enum { KEYS = 6, SLOTS = 8 };
    const size_t c = 65536;
    uint8_t *model = calloc(KEYS, SLOTS * c), *buf = malloc(SLOTS * c);
    stash_t *db = open_small();
    struct racer r = {db, 0, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, compactor, &r), 0);
    uint64_t seed = 31;
    for (int step = 0; step < 600; step++) {
        int k = (int)(tu_rand(&seed) % KEYS), sl = (int)(tu_rand(&seed) % SLOTS);
        char key[16];
        snprintf(key, sizeof key, "r%d", k);
        uint8_t *dst = model + ((size_t)k * SLOTS + (size_t)sl) * c;
        fill(dst, c, &seed);
        assert_int_equal(stash_pwrite(db, key, strlen(key), dst, c, (uint64_t)sl * c), 0);
        if (step % 97 == 0) {
            /* Whole values die too, leaving files sparse. */
            int d = (int)(tu_rand(&seed) % KEYS);
            snprintf(key, sizeof key, "r%d", d);
            int rc = stash_delete(db, key, strlen(key));
            assert_true(rc == 0 || rc == -ENOENT);
            memset(model + (size_t)d * SLOTS * c, 0, SLOTS * c);
        }
    }
    atomic_store(&r.stop, 1);
    pthread_join(t, NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    for (int round = 0; round < 2; round++) {
        for (int k = 0; k < KEYS; k++) {
            char key[16];
            size_t got;
            snprintf(key, sizeof key, "r%d", k);
            int rc = stash_pread(db, key, strlen(key), buf, SLOTS * c, 0, &got);
            if (rc == -ENOENT)
                continue;
            assert_int_equal(rc, 0);
            memset(buf + got, 0, SLOTS * c - got);
            assert_memory_equal(buf, model + (size_t)k * SLOTS * c, SLOTS * c);
        }
        assert_int_equal(stash_close(db), 0);
        db = open_small();
    }
    assert_int_equal(stash_close(db), 0);
    free(model);
    free(buf);
}

/*
 * Deleting (or truncating to 0) a sparse file: the cost should follow the
 * chunks it has, not its size.  A 64 GiB file made by stash_extend with one
 * chunk written: its deletion builds one batch with two tombstones per
 * 64 KiB of size (2 million records, ~40 MB through log and memtable); at
 * 16 TiB that is 2^29 records, ~10 GB in one batch.
 */
static void test_sparse_delete_cost(void **state)
{
    (void)state;
    stash_t *db = open_small();
    uint8_t a[65536];
    memset(a, 7, sizeof a);
    assert_int_equal(stash_pwrite(db, "s", 1, a, sizeof a, 0), 0);
    int grew;
    assert_int_equal(stash_extend(db, "s", 1, 64ull << 30, &grew), 0);
    assert_int_equal(grew, 1);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t before = disk_bytes();
    assert_int_equal(stash_delete(db, "s", 1), 0);
    uint64_t after = disk_bytes();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    fprintf(stderr, "delete of a 64 GiB sparse file: %.2f s, store grew %llu bytes\n", secs,
            (unsigned long long)(after > before ? after - before : 0));
    assert_true(after < before + (1u << 20));

    /* Truncation and punching a hole cost the chunks they drop too; the
     * chunks on either side stay as they were. */
    const uint64_t big = 64ull << 30, far = big - 3 * 65536;
    assert_int_equal(stash_pwrite(db, "t", 1, a, sizeof a, 0), 0);
    assert_int_equal(stash_pwrite(db, "t", 1, a, sizeof a, far), 0);
    assert_int_equal(stash_extend(db, "t", 1, big, &grew), 0);
    before = disk_bytes();
    assert_int_equal(stash_zero_range(db, "t", 1, 100, far - 100 + 10), 0);
    assert_int_equal(stash_truncate(db, "t", 1, far + 20), 0);
    after = disk_bytes();
    assert_true(after < before + (1u << 20));
    uint64_t sz;
    assert_int_equal(stash_value_size(db, "t", 1, &sz), 0);
    assert_true(sz == far + 20);
    uint8_t got[256], want[256];
    size_t n;
    memset(want, 7, sizeof want);
    memset(want + 100, 0, sizeof want - 100);
    assert_int_equal(stash_pread(db, "t", 1, got, sizeof got, 0, &n), 0);
    assert_memory_equal(got, want, sizeof got);            /* 100 bytes kept, then zeros */
    assert_int_equal(stash_pread(db, "t", 1, got, sizeof got, far - 100, &n), 0);
    assert_int_equal(n, 120);
    memset(want, 0, sizeof want);
    memset(want + 110, 7, 10);
    assert_memory_equal(got, want, n);                    /* zeros to far + 10, then the write */
    stash_stat_t st;
    assert_int_equal(stash_stat(db, NULL, "t", 1, &st), 0);
    assert_true(st.stored <= 2 * 65536);                  /* two chunks left */
    assert_int_equal(stash_close(db), 0);
}

/* Appends from 4 threads through two names of one value (and a value
 * growing from inline to chunked): none overwrites another. */
struct appender {
    stash_t *db;
    int id;
};

#define APPENDS 400
#define REC 24

static void *append_main(void *arg)
{
    struct appender *a = arg;
    const char *name = a->id % 2 ? "name2" : "name1";
    for (int i = 0; i < APPENDS; i++) {
        char rec[64];
        snprintf(rec, sizeof rec, "t%d-%05d..............\n", a->id % 10, i % 100000);
        uint64_t at;
        if (stash_append(a->db, name, 5, rec, REC, &at) != 0 || at % REC)
            return (void *)1;
    }
    return NULL;
}

static void test_append(void **state)
{
    (void)state;
    stash_t *db = open_small();
    assert_int_equal(stash_put(db, "name1", 5, "", 0), 0);
    assert_int_equal(stash_link(db, "name1", 5, "name2", 5), 0);
    pthread_t t[4];
    struct appender a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (struct appender){db, i};
        assert_int_equal(pthread_create(&t[i], NULL, append_main, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        assert_null(r);
    }
    size_t total = 4 * APPENDS * REC, n;
    char *all = malloc(total + 1);
    assert_int_equal(stash_pread(db, "name2", 5, all, total + 1, 0, &n), 0);
    assert_int_equal(n, total);
    int next[4] = {0};
    for (size_t off = 0; off < total; off += REC) {
        int id, i;
        assert_int_equal(sscanf(all + off, "t%d-%05d", &id, &i), 2);
        assert_true(id >= 0 && id < 4);
        assert_int_equal(i, next[id]);      /* each thread's records in its order */
        next[id]++;
    }
    free(all);
    uint64_t at;
    assert_int_equal(stash_append(db, "fresh", 5, "ab", 2, &at), 0);     /* made */
    assert_true(at == 0);
    assert_int_equal(stash_append(db, "fresh", 5, "cd", 2, &at), 0);
    assert_true(at == 2);
    assert_int_equal(stash_close(db), 0);
}

/* Times before 1970 are kept (as negative nanoseconds), across a reopen. */
static void test_times_before_1970(void **state)
{
    (void)state;
    stash_t *db = open_small();
    assert_int_equal(stash_put(db, "t", 1, "x", 1), 0);
    stash_stat_t st = {.atime_ns = -1, .mtime_ns = -14182939500000000LL, .ctime_ns = INT64_MIN};
    assert_int_equal(stash_setstat(db, "t", 1, &st, STASH_SET_ATIME | STASH_SET_MTIME | STASH_SET_CTIME), 0);
    assert_int_equal(stash_close(db), 0);
    db = open_small();
    stash_stat_t got;
    assert_int_equal(stash_stat(db, NULL, "t", 1, &got), 0);
    assert_true(got.atime_ns == -1 && got.mtime_ns == -14182939500000000LL && got.ctime_ns == INT64_MIN);
    assert_int_equal(stash_close(db), 0);
}

/* A write of no bytes changes no size, past the end of a small or a
 * chunked value alike (write(2) of 0 bytes leaves a file as it is). */
static void test_empty_write(void **state)
{
    (void)state;
    stash_t *db = open_small();
    uint64_t sz;
    assert_int_equal(stash_put(db, "s", 1, "0123456789", 10), 0);
    assert_int_equal(stash_pwrite(db, "s", 1, "", 0, 1000), 0);
    assert_int_equal(stash_value_size(db, "s", 1, &sz), 0);
    assert_true(sz == 10);
    static uint8_t big[200000];
    assert_int_equal(stash_pwrite(db, "b", 1, big, sizeof big, 0), 0);
    assert_int_equal(stash_pwrite(db, "b", 1, "", 0, 1u << 30), 0);
    assert_int_equal(stash_value_size(db, "b", 1, &sz), 0);
    assert_true(sz == sizeof big);
    assert_int_equal(stash_close(db), 0);
}

/* test_value_file_race with patches, partial writes and truncations too. */
static void test_value_file_race_patches(void **state)
{
    (void)state;
    enum { KEYS = 6, SLOTS = 8 };
    const size_t c = 65536;
    uint8_t *model = calloc(KEYS, SLOTS * c), *buf = malloc(SLOTS * c);
    uint64_t size[KEYS] = {0};
    stash_t *db = open_small();
    struct racer r = {db, 0, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, compactor, &r), 0);
    uint64_t seed = 77;
    for (int step = 0; step < 1500; step++) {
        int k = (int)(tu_rand(&seed) % KEYS), sl = (int)(tu_rand(&seed) % SLOTS);
        char key[16];
        snprintf(key, sizeof key, "r%d", k);
        uint8_t *m = model + (size_t)k * SLOTS * c;
        int op = (int)(tu_rand(&seed) % 10);
        if (op < 4) {
            fill(m + (size_t)sl * c, c, &seed);
            assert_int_equal(stash_pwrite(db, key, strlen(key), m + (size_t)sl * c, c, (uint64_t)sl * c), 0);
            if ((uint64_t)(sl + 1) * c > size[k])
                size[k] = (uint64_t)(sl + 1) * c;
        } else if (op < 9) {
            size_t len = 1 + tu_rand(&seed) % 6000, off = (size_t)(tu_rand(&seed) % (SLOTS * c - len));
            fill(m + off, len, &seed);
            assert_int_equal(stash_pwrite(db, key, strlen(key), m + off, len, off), 0);
            if (off + len > size[k])
                size[k] = off + len;
        } else {
            uint64_t ns = tu_rand(&seed) % (SLOTS * c);
            int rc = stash_truncate(db, key, strlen(key), ns);
            assert_true(rc == 0 || rc == -ENOENT);
            if (rc == 0) {
                if (ns < size[k])
                    memset(m + ns, 0, SLOTS * c - ns);
                size[k] = ns;
            }
        }
        if (step % 197 == 0) {
            int d = (int)(tu_rand(&seed) % KEYS);
            snprintf(key, sizeof key, "r%d", d);
            int rc = stash_delete(db, key, strlen(key));
            assert_true(rc == 0 || rc == -ENOENT);
            memset(model + (size_t)d * SLOTS * c, 0, SLOTS * c);
            size[d] = 0;
        }
    }
    atomic_store(&r.stop, 1);
    pthread_join(t, NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    for (int round = 0; round < 2; round++) {
        for (int k = 0; k < KEYS; k++) {
            char key[16];
            size_t got;
            snprintf(key, sizeof key, "r%d", k);
            memset(buf, 0xEE, SLOTS * c);
            int rc = stash_pread(db, key, strlen(key), buf, SLOTS * c, 0, &got);
            if (rc == -ENOENT)
                continue;
            assert_int_equal(rc, 0);
            assert_int_equal(got, size[k]);
            memset(buf + got, 0, SLOTS * c - got);
            assert_memory_equal(buf, model + (size_t)k * SLOTS * c, SLOTS * c);
        }
        assert_int_equal(stash_close(db), 0);
        db = open_small();
    }
    assert_int_equal(stash_close(db), 0);
    free(model);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_large_values, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_ff_keys, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_stat_and_create, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_rename, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_rename2, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_xattrs, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_named_snapshots, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_model, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_put_stream, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_reserved_key, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_links, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_link_large, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_link_model, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_link_limit, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_link_damaged, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_value_files, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_zero_range, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_extend, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_patches, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_tree_patches, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_first_blob_race, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_backup_value_files_fixed, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_partial_write_chunks, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_collect_after_truncate, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_value_file_collect_durable, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_seek, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_batch_same_key_twice, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_zero_in_hole, tu_setup, tu_teardown),
        cmocka_unit_test(test_count_decode),
        cmocka_unit_test_setup_teardown(test_value_file_torn, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_value_file_fds, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_value_file_sparse, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_value_file_race, tu_setup, tu_teardown),
        cmocka_unit_test(test_gen_after_fork),
        cmocka_unit_test_setup_teardown(test_value_file_race_patches, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_sparse_delete_cost, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_empty_write, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_append, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_times_before_1970, tu_setup, tu_teardown),
    };
    tu_filter();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
