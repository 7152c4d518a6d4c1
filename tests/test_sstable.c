/*
 * test_sstable.c - blocks, tables, bloom filters and the block cache:
 * round trips at several sizes and block sizes, with and without
 * compression, an engine-style comparator, the filter's false-positive rate,
 * corruption of every part of a table, and the cache's bounds and
 * reference counting under threads.
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>

#include "block.h"
#include "bloom.h"
#include "cache.h"
#include "err.h"
#include "crc32c.h"
#include "sstable.h"


static void key_of(char *k, long i)
{
    snprintf(k, 24, "key%012ld", i);
}

/* Value i: length and bytes follow from i. */
static size_t val_of(char *v, long i)
{
    size_t n = (size_t)(i * 7 % 300);
    for (size_t j = 0; j < n; j++)
        v[j] = (char)((i + (long)j) % 23 < 12 ? 'a' + (i + (long)j) % 26 : 'x');
    return n;
}

static size_t dict_size;   /* the dictionary build() asks for */

static void build(const char *path, long n, size_t bs, int level, int bloom, long step)
{
    sst_options_t o = { bs, level, bloom, dict_size };
    sst_writer_t *w;
    assert_int_equal(sst_writer_open(path, &o, NULL, &w), 0);
    char k[24], v[400];
    for (long i = 0; i < n; i++) {
        key_of(k, i * step);
        size_t vl = val_of(v, i * step);
        assert_int_equal(sst_writer_add(w, k, strlen(k), v, vl), 0);
    }
    assert_int_equal(sst_writer_set_prop(w, "max_seq", 4242), 0);
    uint64_t size;
    assert_int_equal(sst_writer_finish(w, &size), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal((uint64_t)st.st_size, size);
}

struct found {
    char key[64];
    size_t klen;
    char val[400];
    size_t vlen;
};

static int take(void *arg, const void *k, size_t kl, const void *v, size_t vl)
{
    struct found *f = arg;
    assert_true(kl < sizeof f->key && vl <= sizeof f->val);
    memcpy(f->key, k, kl);
    f->klen = kl;
    memcpy(f->val, v, vl);
    f->vlen = vl;
    return 0;
}

static void test_block_round_trip(void **state)
{
    (void)state;
    uint64_t s = tu_seed("test_sstable block", 3);
    block_builder_t *b = bb_new();
    enum { N = 500 };
    static char keys[N][40];
    for (int i = 0; i < N; i++)
        snprintf(keys[i], 40, "prefix/shared/%06d/%llu", i * 2, (unsigned long long)(tu_rand(&s) % 1000));
    for (int i = 0; i < N; i++)
        assert_int_equal(bb_add(b, keys[i], strlen(keys[i]), keys[i], i % 3 ? strlen(keys[i]) : 0), 0);
    const uint8_t *data;
    size_t len;
    assert_int_equal(bb_finish(b, &data, &len), 0);
    block_iter_t *it = bi_new(data, len, NULL);
    int n = 0;
    for (bi_seek_first(it); bi_valid(it); bi_next(it), n++) {
        size_t kl, vl;
        const uint8_t *k = bi_key(it, &kl);
        bi_value(it, &vl);
        assert_int_equal(kl, strlen(keys[n]));
        assert_memory_equal(k, keys[n], kl);
        assert_int_equal(vl, n % 3 ? kl : 0);
    }
    assert_int_equal(n, N);
    for (int i = 0; i < N; i++) {
        bi_seek(it, keys[i], strlen(keys[i]));
        size_t kl;
        assert_true(bi_valid(it));
        assert_memory_equal(bi_key(it, &kl), keys[i], strlen(keys[i]));
        /* Between keys: lands on the next one. */
        char probe[48];
        snprintf(probe, sizeof probe, "prefix/shared/%06d", i * 2 + 1);
        bi_seek(it, probe, strlen(probe));
        if (i == N - 1) {
            assert_false(bi_valid(it));
        } else {
            assert_true(bi_valid(it));
            assert_memory_equal(bi_key(it, &kl), keys[i + 1], strlen(keys[i + 1]));
        }
    }
    bi_seek(it, "a", 1);
    assert_true(bi_valid(it));
    bi_seek(it, "z", 1);
    assert_false(bi_valid(it));
    assert_int_equal(bi_status(it), 0);
    bi_free(it);

    /* Garbage never reads out of bounds: it stops with -EIO or ends. */
    uint8_t *junk = malloc(len);
    for (int round = 0; round < 200; round++) {
        memcpy(junk, data, len);
        for (int f = 0; f < 1 + round % 4; f++)
            junk[tu_rand(&s) % len] ^= (uint8_t)(1 + tu_rand(&s) % 255);
        block_iter_t *j = bi_new(junk, len, NULL);
        int steps = 0;
        for (bi_seek_first(j); bi_valid(j) && steps < 10000; bi_next(j))
            steps++;
        bi_seek(j, keys[N / 2], strlen(keys[N / 2]));
        bi_free(j);
    }
    free(junk);
    bb_free(b);
}

static void check_table(const char *path, uint64_t number, long n, long step, sst_cache_t *cache)
{
    sst_reader_t *r;
    int rc = sst_open(path, number, NULL, cache, &r);
    if (rc)
        fprintf(stderr, "open: %s\n", err_get());
    assert_int_equal(rc, 0);
    if (number / 2 % 2)
        assert_int_equal(sst_map(r), 0);    /* half the tables read in place */
    assert_int_equal(sst_entries(r), (uint64_t)n);
    uint64_t v;
    assert_int_equal(sst_prop(r, "max_seq", &v), 0);
    assert_int_equal(v, 4242);
    assert_int_equal(sst_prop(r, "nope", &v), -ENOENT);
    char k[24], want[400];
    size_t sl;
    if (n) {
        key_of(k, 0);
        assert_memory_equal(sst_smallest(r, &sl), k, strlen(k));
        key_of(k, (n - 1) * step);
        assert_memory_equal(sst_largest(r, &sl), k, strlen(k));
    }
    /* Every key by lookup. */
    for (long i = 0; i < n; i += (n > 1000 ? 7 : 1)) {
        key_of(k, i * step);
        struct found f;
        int grc = sst_get(r, k, strlen(k), take, &f);
        if (grc)
            fprintf(stderr, "%s: get %s of %ld: %d %s\n", path, k, n, grc, err_get());
        assert_int_equal(grc, 0);
        assert_int_equal(f.klen, strlen(k));
        assert_memory_equal(f.key, k, f.klen);
        size_t wl = val_of(want, i * step);
        assert_int_equal(f.vlen, wl);
        assert_memory_equal(f.val, want, wl);
    }
    /* A full scan, in order. */
    sst_iter_t *it = sst_iter_new(r);
    long i = 0;
    for (sst_iter_seek_first(it); sst_iter_valid(it); sst_iter_next(it), i++) {
        size_t kl, vl;
        const void *kk = sst_iter_key(it, &kl);
        const void *vv = sst_iter_value(it, &vl);
        key_of(k, i * step);
        assert_int_equal(kl, strlen(k));
        assert_memory_equal(kk, k, kl);
        size_t wl = val_of(want, i * step);
        assert_int_equal(vl, wl);
        assert_memory_equal(vv, want, wl);
    }
    assert_int_equal(i, n);
    if (sst_iter_status(it))
        fprintf(stderr, "scan of %s: %s\n", path, err_get());
    assert_int_equal(sst_iter_status(it), 0);
    /* Seeks: to keys, between keys, past the end. */
    for (long j = 0; j < n; j += (n > 1000 ? 997 : 3)) {
        key_of(k, j * step);
        sst_iter_seek(it, k, strlen(k));
        assert_true(sst_iter_valid(it));
        size_t kl;
        assert_memory_equal(sst_iter_key(it, &kl), k, strlen(k));
        if (step > 1 && j + 1 < n) {
            key_of(k, j * step + 1);
            sst_iter_seek(it, k, strlen(k));
            key_of(k, (j + 1) * step);
            assert_true(sst_iter_valid(it));
            assert_memory_equal(sst_iter_key(it, &kl), k, strlen(k));
        }
    }
    sst_iter_seek(it, "zzz", 3);
    assert_false(sst_iter_valid(it));
    sst_iter_free(it);
    sst_close(r);
}

static void test_tables(void **state)
{
    (void)state;
    static const long sizes[] = { 0, 1, 100, 100000 };
    static const size_t bss[] = { 256, 4096, 65536 };
    sst_cache_t *cache = sst_cache_new(1 << 20);
    int file = 0;
    for (int si = 0; si < 4; si++) {
        for (int bi = 0; bi < 3; bi++) {
            for (int level = 0; level <= 3; level += 3) {
                if (sizes[si] == 100000 && bi == 0 && level == 3)
                    continue;   /* enough coverage, keep the test short */
                char path[600];
                snprintf(path, sizeof path, "%s/%06d.sst", dir, ++file);
                build(path, sizes[si], bss[bi], level, 10, 2);
                check_table(path, (uint64_t)file, sizes[si], 2, (file % 2) ? cache : NULL);
            }
        }
    }
    sst_cache_free(cache);
}

static void test_compression_shrinks(void **state)
{
    (void)state;
    char a[600], b[600];
    snprintf(a, sizeof a, "%s/raw.sst", dir);
    snprintf(b, sizeof b, "%s/zstd.sst", dir);
    build(a, 20000, 4096, 0, 10, 1);
    build(b, 20000, 4096, 3, 10, 1);
    struct stat sa, sb, sf;
    stat(a, &sa);
    stat(b, &sb);
    printf("20000 entries: %lld bytes raw, %lld with zstd\n", (long long)sa.st_size, (long long)sb.st_size);
    assert_true(sb.st_size < sa.st_size * 3 / 4);
    /* zstd's fast levels (negative) compress too, and read back whole. */
    char f[600];
    snprintf(f, sizeof f, "%s/fast.sst", dir);
    build(f, 20000, 4096, -1, 10, 1);
    stat(f, &sf);
    printf("20000 entries: %lld bytes with zstd level -1\n", (long long)sf.st_size);
    assert_true(sf.st_size < sa.st_size * 3 / 4);
    check_table(f, 1, 20000, 1, NULL);
}

static void test_bloom(void **state)
{
    (void)state;
    char path[600];
    snprintf(path, sizeof path, "%s/b.sst", dir);
    build(path, 50000, 4096, 0, 10, 2);   /* even keys */
    sst_reader_t *r;
    assert_int_equal(sst_open(path, 1, NULL, NULL, &r), 0);
    int fp = 0;
    for (long i = 0; i < 50000; i++) {
        char k[24];
        key_of(k, i * 2);
        assert_true(sst_may_contain(r, k, strlen(k)));   /* never a false "no" */
        key_of(k, i * 2 + 1);
        fp += sst_may_contain(r, k, strlen(k));
    }
    printf("bloom 10 bits/key: %.2f%% false positives\n", fp * 100.0 / 50000);
    assert_true(fp < 50000 * 2 / 100);
    sst_close(r);
}

/* Engine-style keys: user key + 8-byte big-endian trailer sorted descending. */
static int ikcmp(const void *a, size_t al, const void *b, size_t bl)
{
    int c = bytewise_cmp(a, al - 8, b, bl - 8);
    if (c)
        return c;
    return -memcmp((const char *)a + al - 8, (const char *)b + bl - 8, 8);
}

static size_t ikfilter(const void *k, size_t kl)
{
    (void)k;
    return kl - 8;
}

static void ikey(char *out, size_t *len, const char *user, uint64_t seq)
{
    size_t n = strlen(user);
    memcpy(out, user, n);
    for (int i = 0; i < 8; i++)
        out[n + i] = (char)(seq >> (56 - 8 * i));
    *len = n + 8;
}

static void test_custom_order(void **state)
{
    (void)state;
    char path[600];
    snprintf(path, sizeof path, "%s/ik.sst", dir);
    sst_keyfmt_t kf = { ikcmp, ikfilter, NULL };   /* the index keeps whole keys */
    sst_options_t o = { 4096, 0, 10, 0 };
    sst_writer_t *w;
    assert_int_equal(sst_writer_open(path, &o, &kf, &w), 0);
    char k[64];
    size_t kl;
    ikey(k, &kl, "a", 9); assert_int_equal(sst_writer_add(w, k, kl, "a9", 2), 0);
    ikey(k, &kl, "a", 3); assert_int_equal(sst_writer_add(w, k, kl, "a3", 2), 0);
    ikey(k, &kl, "ab", 5); assert_int_equal(sst_writer_add(w, k, kl, "ab5", 3), 0);
    ikey(k, &kl, "a", 1); assert_int_equal(sst_writer_add(w, k, kl, "x", 1), -EINVAL);
    assert_int_equal(sst_writer_finish(w, NULL), 0);
    sst_reader_t *r;
    assert_int_equal(sst_open(path, 7, &kf, NULL, &r), 0);
    struct found f;
    ikey(k, &kl, "a", 5);   /* newest version at or below 5: a@3 */
    assert_int_equal(sst_get(r, k, kl, take, &f), 0);
    assert_memory_equal(f.val, "a3", 2);
    ikey(k, &kl, "a", 100);
    assert_int_equal(sst_get(r, k, kl, take, &f), 0);
    assert_memory_equal(f.val, "a9", 2);
    /* The filter looks at the user key only: any sequence of "ab" may be there. */
    ikey(k, &kl, "ab", 12345);
    assert_true(sst_may_contain(r, k, kl));
    sst_close(r);
}

/* Flip a byte at OFF (negative: from the end) and see what breaks. */
static void flip(const char *path, long off)
{
    int fd = open(path, O_RDWR);
    struct stat st;
    fstat(fd, &st);
    off_t at = off < 0 ? st.st_size + off : off;
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, at), 1);
    c ^= 0x01;
    assert_int_equal(pwrite(fd, &c, 1, at), 1);
    close(fd);
}

static uint64_t footer_u64(const char *path, int field)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    fstat(fd, &st);
    unsigned char f[64];
    assert_int_equal(pread(fd, f, 64, st.st_size - 64), 64);
    close(fd);
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | f[field * 8 + i];
    return v;
}

static void expect_open_fails(const char *path)
{
    sst_reader_t *r = NULL;
    assert_int_equal(sst_open(path, 1, NULL, NULL, &r), -EIO);
    assert_null(r);
    assert_non_null(strstr(err_get(), "sst "));
}

static void test_corruption(void **state)
{
    (void)state;
    char path[600];
    snprintf(path, sizeof path, "%s/c.sst", dir);
    /* Footer: magic, version, checksum, a handle. */
    long footer_offs[] = { -1, -10, -14, -30, -64 };
    for (size_t i = 0; i < sizeof footer_offs / sizeof footer_offs[0]; i++) {
        unlink(path);
        build(path, 2000, 1024, 3, 10, 1);
        flip(path, footer_offs[i]);
        expect_open_fails(path);
    }
    /* Filter, properties and index blocks. */
    for (int field = 0; field < 3; field++) {
        unlink(path);
        build(path, 2000, 1024, 3, 10, 1);
        flip(path, (long)footer_u64(path, field * 2) + 3);
        expect_open_fails(path);
    }
    /* Truncated files. */
    for (long cut = 0; cut < 5; cut++) {
        unlink(path);
        build(path, 2000, 1024, 3, 10, 1);
        struct stat st;
        stat(path, &st);
        assert_int_equal(truncate(path, cut == 0 ? 10 : st.st_size - cut * 37), 0);
        expect_open_fails(path);
    }
    /* A data block: lookups and scans that touch it fail, others work --
     * with blocks compressed or raw, read with pread or in place from a
     * mapping (sst_map). */
    for (int mode = 0; mode < 4; mode++) {
        unlink(path);
        build(path, 2000, 1024, mode & 2 ? 0 : 3, 10, 1);
        flip(path, 100);   /* inside the first data block */
        sst_reader_t *r;
        assert_int_equal(sst_open(path, 1, NULL, NULL, &r), 0);
        if (mode & 1)
            assert_int_equal(sst_map(r), 0);
        char k[24];
        struct found f;
        key_of(k, 0);
        assert_int_equal(sst_get(r, k, strlen(k), take, &f), -EIO);
        assert_non_null(strstr(err_get(), "checksum"));
        key_of(k, 1999);
        assert_int_equal(sst_get(r, k, strlen(k), take, &f), 0);
        sst_iter_t *it = sst_iter_new(r);
        sst_iter_seek_first(it);
        assert_false(sst_iter_valid(it));
        assert_int_equal(sst_iter_status(it), -EIO);
        sst_iter_seek(it, k, strlen(k));
        assert_true(sst_iter_valid(it));
        sst_iter_free(it);
        sst_close(r);
    }
    /* Not a table at all. */
    int fd = open(path, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, "hello, this is not a table, not at all, no no no no no no no no no no no", 72), 72);
    close(fd);
    expect_open_fails(path);
    /* Abandon removes the file; an existing path is refused. */
    sst_options_t o = { 4096, 0, 10, 0 };
    sst_writer_t *w;
    assert_int_equal(sst_writer_open(path, &o, NULL, &w), -EEXIST);
    unlink(path);
    assert_int_equal(sst_writer_open(path, &o, NULL, &w), 0);
    sst_writer_add(w, "k", 1, "v", 1);
    sst_writer_abandon(w);
    struct stat st;
    assert_int_equal(stat(path, &st), -1);
}

static uint32_t footer_version(const char *path)
{
    return (uint32_t)footer_u64(path, 6);
}

/* The footer's version set to V, its checksum made right again. */
static void set_version(const char *path, uint32_t v)
{
    int fd = open(path, O_RDWR);
    struct stat st;
    fstat(fd, &st);
    uint8_t f[64];
    assert_int_equal(pread(fd, f, 64, st.st_size - 64), 64);
    for (int i = 0; i < 4; i++)
        f[48 + i] = (uint8_t)(v >> (8 * i));
    uint32_t c = crc32c(f, 52);
    for (int i = 0; i < 4; i++)
        f[52 + i] = (uint8_t)(c >> (8 * i));
    assert_int_equal(pwrite(fd, f, 64, st.st_size - 64), 64);
    close(fd);
}

/* Tables compressed with their own dictionary (named by the properties): trained
 * while writing (a large table) or at the end (a small one), none at all
 * when too small, and a damaged dictionary or a version that does not match
 * the table refuses it or its reads. */
static void test_dictionary(void **state)
{
    (void)state;
    char path[600], plain[600];
    snprintf(plain, sizeof plain, "%s/plain.sst", dir);
    build(plain, 20000, 4096, -1, 10, 1);
    struct { long n; size_t bs; int level; int has_dict; } cases[] = {
        { 20000, 4096, -1, 1 }, { 20000, 4096, 3, 1 }, { 400, 1024, -1, 1 }, { 50, 1024, -1, 0 },
    };
    dict_size = 16384;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        snprintf(path, sizeof path, "%s/d%zu.sst", dir, c);
        build(path, cases[c].n, cases[c].bs, cases[c].level, 10, 1);
        sst_reader_t *r;
        assert_int_equal(sst_open(path, 1, NULL, NULL, &r), 0);
        uint64_t off = 99, size = 0;
        int have = sst_prop(r, "dict_size", &size) == 0;
        assert_int_equal(have, cases[c].has_dict);
        assert_int_equal(footer_version(path), 3);
        if (have) {
            assert_int_equal(sst_prop(r, "dict_offset", &off), 0);
            assert_int_equal(off, 0);
            assert_true(size > 0 && size <= 16384);
        }
        sst_close(r);
        sst_cache_t *cache = c % 2 ? NULL : sst_cache_new(1 << 20);
        check_table(path, (uint64_t)c + 10, cases[c].n, 1, cache);
        sst_cache_free(cache);
        if (c == 0) {
            struct stat sp, sd;
            stat(plain, &sp);
            stat(path, &sd);
            printf("20000 entries at level -1: %lld bytes, %lld with a %llu-byte dictionary\n",
                   (long long)sp.st_size, (long long)sd.st_size, (unsigned long long)size);
        }
    }
    snprintf(path, sizeof path, "%s/d0.sst", dir);
    /* A byte of the dictionary: the table does not open. */
    flip(path, 3);
    expect_open_fails(path);
    assert_non_null(strstr(err_get(), "checksum"));
    flip(path, 3);
    /* A data block of it: lookups that touch it fail, the others work. */
    sst_reader_t *r;
    assert_int_equal(sst_open(path, 1, NULL, NULL, &r), 0);
    uint64_t dsize;
    assert_int_equal(sst_prop(r, "dict_size", &dsize), 0);
    sst_close(r);
    flip(path, (long)dsize + 5 + 100);
    assert_int_equal(sst_open(path, 1, NULL, NULL, &r), 0);
    char k[24];
    struct found f;
    key_of(k, 0);
    assert_int_equal(sst_get(r, k, strlen(k), take, &f), -EIO);
    key_of(k, 19999);
    assert_int_equal(sst_get(r, k, strlen(k), take, &f), 0);
    sst_close(r);
    /* The version must say whether there is a dictionary. */
    set_version(path, 1);
    expect_open_fails(path);
    assert_non_null(strstr(err_get(), "dictionary"));
    snprintf(path, sizeof path, "%s/d3.sst", dir);
    set_version(path, 2);
    expect_open_fails(path);
    assert_non_null(strstr(err_get(), "dictionary"));
    set_version(path, 4);
    expect_open_fails(path);
    assert_non_null(strstr(err_get(), "version 4"));
    /* Version 1 opens, but its index handles are 16 bytes: lookups fail. */
    set_version(path, 1);
    assert_int_equal(sst_open(path, 1, NULL, NULL, &r), 0);
    key_of(k, 10);
    assert_int_equal(sst_get(r, k, strlen(k), take, &f), -EIO);
    assert_non_null(strstr(err_get(), "index entry"));
    sst_close(r);
    dict_size = 0;
}

/* Index keys are separators: for random pairs A < B (bytes drawn from a
 * few values, 0x00 and 0xff among them), bytewise_separator gives S with
 * A <= S < B, never longer than A; a table of keys that share long prefixes,
 * in blocks of 256 bytes, finds for every key the first entry at or after it. */
static void test_separators(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_separators", 20261201);
    static const uint8_t alpha[] = { 0x00, 0x01, 0x30, 0x31, 0x7f, 0xfe, 0xff };
    for (int t = 0; t < 200000; t++) {
        uint8_t a[12], b[12], s[12];
        size_t al = tu_rand(&seed) % 12, bl = tu_rand(&seed) % 12;
        for (size_t i = 0; i < al; i++)
            a[i] = alpha[tu_rand(&seed) % sizeof alpha];
        memcpy(b, a, al < bl ? al : bl);   /* often a shared prefix */
        for (size_t i = tu_rand(&seed) % (bl + 1); i < bl; i++)
            b[i] = alpha[tu_rand(&seed) % sizeof alpha];
        int c = bytewise_cmp(a, al, b, bl);
        if (c == 0)
            continue;
        const uint8_t *lo = c < 0 ? a : b, *hi = c < 0 ? b : a;
        size_t ll = c < 0 ? al : bl, hl = c < 0 ? bl : al;
        size_t sl = bytewise_separator(lo, ll, hi, hl, s);
        assert_true(sl <= ll);
        assert_true(bytewise_cmp(lo, ll, s, sl) <= 0);
        assert_true(bytewise_cmp(s, sl, hi, hl) < 0);
    }
    uint8_t s[32];
    size_t sl = bytewise_separator("0000000000123456", 16, "0000000000123480", 16, s);
    assert_int_equal(sl, 15);
    assert_memory_equal(s, "000000000012346", 15);
    sl = bytewise_separator("abc1xyz", 7, "abd", 3, s);     /* c + 1 would reach d */
    assert_int_equal(sl, 4);
    assert_memory_equal(s, "abc2", 4);
    assert_int_equal(bytewise_separator("ab", 2, "abc", 3, s), 2);   /* a prefix of b */

    char path[600];
    snprintf(path, sizeof path, "%s/sep.sst", dir);
    sst_options_t o = { 256, 0, 0, 0 };     /* no filter: lookups reach the index */
    sst_writer_t *w;
    assert_int_equal(sst_writer_open(path, &o, NULL, &w), 0);
    char k[64];
    for (int i = 0; i < 3000; i++) {
        snprintf(k, sizeof k, "shared/prefix/of/some/length/%06d", i * 2);
        assert_int_equal(sst_writer_add(w, k, strlen(k), "v", 1), 0);
    }
    assert_int_equal(sst_writer_finish(w, NULL), 0);
    sst_reader_t *r;
    assert_int_equal(sst_open(path, 3, NULL, NULL, &r), 0);
    /* sst_get gives the first entry at or after the key. */
    for (int i = 0; i < 6000; i++) {
        struct found f;
        char want[64];
        snprintf(want, sizeof want, "shared/prefix/of/some/length/%06d", (i + 1) / 2 * 2);
        snprintf(k, sizeof k, "shared/prefix/of/some/length/%06d", i);
        int rc = sst_get(r, k, strlen(k), take, &f);
        if (i == 5999) {
            assert_int_equal(rc, 1);
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(f.klen, strlen(want));
            assert_memory_equal(f.key, want, f.klen);
        }
        snprintf(k, sizeof k, "shared/prefix/of/some/length/%06d~", i);
        snprintf(want, sizeof want, "shared/prefix/of/some/length/%06d", (i + 2) / 2 * 2);
        rc = sst_get(r, k, strlen(k), take, &f);
        if (i >= 5998) {
            assert_int_equal(rc, 1);
        } else {
            assert_int_equal(rc, 0);
            assert_memory_equal(f.key, want, strlen(want));
        }
    }
    sst_close(r);
}

static void test_cache_bounds(void **state)
{
    (void)state;
    sst_cache_t *c = sst_cache_new(16 * 1000);   /* 1000 bytes per shard */
    /* Insert many 100-byte blocks: usage stays within capacity. */
    for (int i = 0; i < 5000; i++) {
        cache_entry_t *e = sst_cache_insert(c, 1, (uint64_t)i * 4096, calloc(1, 100), 100);
        assert_non_null(e);
        sst_cache_release(c, e);
        size_t used;
        sst_cache_stats(c, &used, NULL, NULL);
        assert_true(used <= 16 * 1000);
    }
    /* A held block survives eviction and is freed at release (ASan checks). */
    char *d = malloc(100);
    memset(d, 'h', 100);
    cache_entry_t *held = sst_cache_insert(c, 2, 0, d, 100);
    for (int i = 0; i < 5000; i++)
        sst_cache_release(c, sst_cache_insert(c, 3, (uint64_t)i, calloc(1, 100), 100));
    size_t len;
    const char *p = sst_cache_data(held, &len);
    assert_int_equal(len, 100);
    assert_int_equal(p[99], 'h');
    sst_cache_release(c, held);
    /* Recently used blocks stay; a lookup hit is counted. */
    cache_entry_t *e = sst_cache_insert(c, 9, 9, calloc(1, 10), 10);
    sst_cache_release(c, e);
    e = sst_cache_lookup(c, 9, 9);
    assert_non_null(e);
    sst_cache_release(c, e);
    assert_null(sst_cache_lookup(c, 9, 10));
    uint64_t hits, misses;
    sst_cache_stats(c, NULL, &hits, &misses);
    assert_true(hits >= 1 && misses >= 1);
    sst_cache_free(c);
    /* Capacity 0 caches nothing but still hands the block out. */
    c = sst_cache_new(0);
    e = sst_cache_insert(c, 1, 1, calloc(1, 10), 10);
    assert_non_null(e);
    sst_cache_release(c, e);
    assert_null(sst_cache_lookup(c, 1, 1));
    sst_cache_free(c);
}

struct rd {
    sst_reader_t *r;
    int id;
    int bad;
};

static void *reader_thread(void *arg)
{
    struct rd *a = arg;
    uint64_t s = (uint64_t)a->id + 1;
    char k[24], want[400];
    for (int i = 0; i < 20000; i++) {
        long n = (long)(tu_rand(&s) % 20000);
        key_of(k, n);
        struct found f;
        if (sst_get(a->r, k, strlen(k), take, &f) != 0 || f.vlen != val_of(want, n) ||
            memcmp(f.val, want, f.vlen) != 0)
            a->bad++;
    }
    return NULL;
}

static void test_concurrent_reads(void **state)
{
    (void)state;
    char path[600];
    snprintf(path, sizeof path, "%s/t.sst", dir);
    build(path, 20000, 1024, 3, 10, 1);
    sst_cache_t *c = sst_cache_new(64 << 10);   /* small: constant eviction */
    sst_reader_t *r;
    assert_int_equal(sst_open(path, 5, NULL, c, &r), 0);
    pthread_t t[4];
    struct rd a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (struct rd){ r, i, 0 };
        pthread_create(&t[i], NULL, reader_thread, &a[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].bad, 0);
    }
    sst_close(r);
    sst_cache_free(c);
}


/* The writer takes an empty first key (keep_key says so); reading it back
 * must not pass a NULL buffer to memcpy: the block iterator's key buffer is
 * still unallocated when an entry has no key bytes (block.c decode_next). */
static void test_empty_key(void **state)
{
    (void)state;
    char path[600];
    snprintf(path, sizeof path, "%s/e.sst", dir);
    sst_options_t o = { 4096, 0, 10, 0 };
    sst_writer_t *w;
    assert_int_equal(sst_writer_open(path, &o, NULL, &w), 0);
    assert_int_equal(sst_writer_add(w, "", 0, "v0", 2), 0);
    assert_int_equal(sst_writer_add(w, "a", 1, "v1", 2), 0);
    assert_int_equal(sst_writer_finish(w, NULL), 0);
    sst_reader_t *r;
    assert_int_equal(sst_open(path, 1, NULL, NULL, &r), 0);
    struct found f;
    assert_int_equal(sst_get(r, "", 0, take, &f), 0);
    assert_int_equal(f.klen, 0);
    assert_int_equal(f.vlen, 2);
    sst_iter_t *it = sst_iter_new(r);
    sst_iter_seek_first(it);
    assert_true(sst_iter_valid(it));
    sst_iter_free(it);
    sst_close(r);
}

/* A properties block naming "smallest" twice (checksums right) is malformed
 * and refused with -EIO (parse_props leaked the first copy before). */
static void test_props_twice(void **state)
{
    (void)state;
    char path[600];
    snprintf(path, sizeof path, "%s/p.sst", dir);
    build(path, 10, 4096, 0, 10, 1);
    int fd = open(path, O_RDWR);
    struct stat st;
    fstat(fd, &st);
    uint8_t *img = malloc((size_t)st.st_size + 4096);
    assert_int_equal(pread(fd, img, (size_t)st.st_size, 0), st.st_size);
    uint8_t *foot = img + st.st_size - 64;
    uint64_t poff = 0, psize = 0;
    for (int i = 0; i < 8; i++) {
        poff |= (uint64_t)foot[16 + i] << (8 * i);
        psize |= (uint64_t)foot[24 + i] << (8 * i);
    }
    assert_true(img[poff] < 0x80 && img[poff] + 1 < 0x80);
    /* New properties block at the old footer's place: count + 1, then one
     * more "smallest" entry in front. */
    uint8_t nb[4096];
    size_t n = 0;
    nb[n++] = (uint8_t)(img[poff] + 1);
    nb[n++] = 8;
    memcpy(nb + n, "smallest", 8);
    n += 8;
    nb[n++] = 3;
    memcpy(nb + n, "abc", 3);
    n += 3;
    memcpy(nb + n, img + poff + 1, (size_t)psize - 1);
    n += (size_t)psize - 1;
    uint64_t at = (uint64_t)st.st_size - 64;
    uint8_t tr[5] = { 0 };
    uint32_t c = crc32c_extend(crc32c(nb, n), tr, 1);
    for (int i = 0; i < 4; i++)
        tr[1 + i] = (uint8_t)(c >> (8 * i));
    uint8_t f[64];
    memcpy(f, foot, 64);
    for (int i = 0; i < 8; i++) {
        f[16 + i] = (uint8_t)(at >> (8 * i));
        f[24 + i] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    c = crc32c(f, 52);
    for (int i = 0; i < 4; i++)
        f[52 + i] = (uint8_t)(c >> (8 * i));
    assert_int_equal(pwrite(fd, nb, n, (off_t)at), (ssize_t)n);
    assert_int_equal(pwrite(fd, tr, 5, (off_t)(at + n)), 5);
    assert_int_equal(pwrite(fd, f, 64, (off_t)(at + n + 5)), 64);
    close(fd);
    free(img);
    sst_reader_t *r = NULL;
    assert_int_equal(sst_open(path, 1, NULL, NULL, &r), -EIO);     /* malformed: refused */
    assert_null(r);
}

/* As many properties as the writer takes (32 of the caller's, besides its
 * own and a dictionary's), and the reader takes them all back (it refused
 * such a table as malformed). */
static void test_many_props(void **state)
{
    (void)state;
    char path[600];
    snprintf(path, sizeof path, "%s/many.sst", dir);
    sst_options_t o = { 512, 3, 10, 16384 };    /* compressed, with a dictionary */
    sst_writer_t *w;
    assert_int_equal(sst_writer_open(path, &o, NULL, &w), 0);
    char k[24], v[400];
    for (long i = 0; i < 20000; i++) {
        key_of(k, i);
        size_t vl = val_of(v, i);
        assert_int_equal(sst_writer_add(w, k, strlen(k), v, vl), 0);
    }
    int set = 0;
    for (int i = 0; i < 40; i++) {
        char n[16];
        snprintf(n, sizeof n, "p%d", i);
        set += sst_writer_set_prop(w, n, (uint64_t)i * 3) == 0;
    }
    assert_int_equal(set, 32);
    uint64_t size, pv;
    assert_int_equal(sst_writer_finish(w, &size), 0);
    sst_reader_t *r = NULL;
    assert_int_equal(sst_open(path, 1, NULL, NULL, &r), 0);
    assert_int_equal(sst_prop(r, "p31", &pv), 0);
    assert_int_equal(pv, 93);
    sst_close(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_block_round_trip),
        cmocka_unit_test_setup_teardown(test_tables, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_many_props, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_compression_shrinks, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_bloom, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_custom_order, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_corruption, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_dictionary, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_separators, tu_setup, tu_teardown),
        cmocka_unit_test(test_cache_bounds),
        cmocka_unit_test_setup_teardown(test_concurrent_reads, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_empty_key, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_props_twice, tu_setup, tu_teardown),
    };
    tu_filter();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
