/*
 * stash-bench.c - a db_bench-style benchmark of SmartStashDB, and of LevelDB
 * on the same workload (--engine=leveldb), so the two can be compared in one
 * run on one machine.
 *
 * Keys are 16 bytes (the key number, zero-padded decimal); values are
 * --value_size bytes sliced from a pool that compresses to about
 * --compression_ratio of its size.  Each benchmark prints operations per
 * second, MB/s and latency percentiles from a log-bucketed histogram of every
 * operation's time.  The fill benchmarks start from an empty store; the
 * others use what the earlier ones wrote, as in db_bench.
 */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <leveldb/c.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "smartstash.h"

/* ---- flags ---- */

static const char *benchmarks = "fillseq,fillrandom,readrandom,fillsync";
static long num = 1000000;
static long reads = -1;
static int value_size = 100;
static const char *dbdir = "/tmp/stash-bench";
static const char *engine_name = "stash";
static int threads = 1;
static int sync_threads = 8;
static double compression_ratio = 0.5;
static size_t cache_size = 8u << 20;
static int bloom_bits = 10;
static size_t block_size = 0;      /* 0 = the engine's default */
static int use_existing = 0;
static size_t memtable_size = 0;   /* 0 = the engine's default */
static int show_stats = 0;
static int compression_level = 1000;   /* 1000 = the engine's default */
static int mmap_reads = -1;          /* -1 = the engine's default */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: stash-bench [--flag=value ...]\n"
        "  --benchmarks=LIST      comma-separated, run in order (default %s):\n"
        "                         fillseq fillrandom overwrite fillsync readrandom readmissing\n"
        "                         readseq seekrandom deleterandom readwhilewriting fillbig readbig\n"
        "                         compact (the whole store, then its disk usage) reopen\n"
        "  --num=N                keys (default 1000000)\n"
        "  --reads=N              reads per read benchmark (default: num)\n"
        "  --value_size=N         bytes per value (default 100)\n"
        "  --db=DIR               store directory, emptied by the fill benchmarks\n"
        "  --engine=stash|leveldb engine to measure (default stash)\n"
        "  --threads=N            threads for the read benchmarks (default 1)\n"
        "  --sync_threads=N       threads of the multi-threaded fillsync line (default 8, 0 = none)\n"
        "  --compression_ratio=F  how far values compress (default 0.5)\n"
        "  --cache_size=BYTES     block cache (default 8 MiB)\n"
        "  --bloom_bits=N         bloom filter bits per key (default 10)\n"
        "  --block_size=BYTES     table data block size (default: the engine's)\n"
        "  --write_buffer_size=B  memtable size (default: the engine's)\n"
        "  --use_existing_db=0|1  do not empty the store before fills (default 0)\n"
        "  --stats=0|1            print the engine's statistics after each benchmark (stash only)\n"
        "  --compression_level=N  zstd level of table blocks, negative = fast, 0 = off (stash only; default: the engine's)\n"
        "  --mmap_reads=0|1       read tables through a memory mapping (stash only; default: the engine's)\n",
        benchmarks);
}

/* ---- the two engines ---- */

struct engine {
    int (*open)(const char *dir);
    void (*close)(void);
    int (*put)(const char *k, size_t kl, const char *v, size_t vl, int sync);
    int (*get)(const char *k, size_t kl, size_t *vl);  /* 1 found, 0 not, -1 error */
    int (*del)(const char *k, size_t kl);
    void *(*iter_new)(void);
    void (*iter_seek)(void *it, const char *k, size_t kl);
    void (*iter_first)(void *it);
    int (*iter_valid)(void *it);
    void (*iter_next)(void *it);
    size_t (*iter_kv)(void *it);   /* key + value bytes of the current entry */
    void (*iter_free)(void *it);
    int (*compact)(void);   /* the whole key range, waiting until done */
};

static stash_t *sdb;

static int s_open(const char *dir)
{
    stash_options_t o;
    stash_options_init(&o);
    o.block_cache_size = cache_size;
    o.bloom_bits_per_key = bloom_bits;
    if (block_size)
        o.block_size = block_size;
    if (memtable_size)
        o.memtable_size = memtable_size;
    if (compression_level != 1000)
        o.compression_level = compression_level;
    if (mmap_reads >= 0)
        o.mmap_reads = mmap_reads;
    int rc = stash_open(dir, &o, &sdb);
    if (rc)
        fprintf(stderr, "stash_open: %s\n", stash_last_error(NULL));
    return rc;
}
static void s_close(void) { stash_close(sdb); sdb = NULL; }
static int s_put(const char *k, size_t kl, const char *v, size_t vl, int sync)
{
    if (!sync)
        return stash_put(sdb, k, kl, v, vl);
    stash_batch_t *b = stash_batch_new();
    int rc = stash_batch_put(b, k, kl, v, vl);
    if (rc == 0)
        rc = stash_write(sdb, b, STASH_SYNC);
    stash_batch_free(b);
    return rc;
}
static int s_get(const char *k, size_t kl, size_t *vl)
{
    void *v;
    int rc = stash_get(sdb, k, kl, &v, vl);
    if (rc == 0) {
        stash_free(v);
        return 1;
    }
    return rc == -ENOENT ? 0 : -1;
}
static int s_del(const char *k, size_t kl) { return stash_delete(sdb, k, kl); }
static void *s_iter_new(void) { return stash_iter_new(sdb, NULL); }
static void s_iter_seek(void *it, const char *k, size_t kl) { stash_iter_seek(it, k, kl); }
static void s_iter_first(void *it) { stash_iter_seek_first(it); }
static int s_iter_valid(void *it) { return stash_iter_valid(it); }
static void s_iter_next(void *it) { stash_iter_next(it); }
static size_t s_iter_kv(void *it)
{
    size_t kl, vl;
    stash_iter_key(it, &kl);
    stash_iter_value(it, &vl);
    return kl + vl;
}
static void s_iter_free(void *it) { stash_iter_free(it); }
static int s_compact(void)
{
    int rc = stash_compact_range(sdb, NULL, 0, NULL, 0);
    if (rc)
        fprintf(stderr, "stash_compact_range: %s\n", stash_last_error(NULL));
    return rc;
}

static const struct engine stash_engine = {
    s_open, s_close, s_put, s_get, s_del, s_iter_new, s_iter_seek, s_iter_first,
    s_iter_valid, s_iter_next, s_iter_kv, s_iter_free, s_compact,
};

static leveldb_t *ldb;
static leveldb_options_t *lopt;
static leveldb_cache_t *lcache;
static leveldb_filterpolicy_t *lfilter;
static leveldb_readoptions_t *lro;
static leveldb_writeoptions_t *lwo, *lwo_sync;

static int l_open(const char *dir)
{
    char *err = NULL;
    lopt = leveldb_options_create();
    leveldb_options_set_create_if_missing(lopt, 1);
    lcache = leveldb_cache_create_lru(cache_size);
    leveldb_options_set_cache(lopt, lcache);
    if (bloom_bits > 0) {
        lfilter = leveldb_filterpolicy_create_bloom(bloom_bits);
        leveldb_options_set_filter_policy(lopt, lfilter);
    }
    if (memtable_size)
        leveldb_options_set_write_buffer_size(lopt, memtable_size);
    if (block_size)
        leveldb_options_set_block_size(lopt, block_size);
    leveldb_options_set_compression(lopt, leveldb_snappy_compression);
    lro = leveldb_readoptions_create();
    lwo = leveldb_writeoptions_create();
    lwo_sync = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(lwo_sync, 1);
    ldb = leveldb_open(lopt, dir, &err);
    if (err) {
        fprintf(stderr, "leveldb_open: %s\n", err);
        leveldb_free(err);
        return -1;
    }
    return 0;
}
static void l_close(void)
{
    leveldb_close(ldb);
    leveldb_options_destroy(lopt);
    leveldb_cache_destroy(lcache);
    if (lfilter)
        leveldb_filterpolicy_destroy(lfilter);
    lfilter = NULL;
    leveldb_readoptions_destroy(lro);
    leveldb_writeoptions_destroy(lwo);
    leveldb_writeoptions_destroy(lwo_sync);
}
static int l_put(const char *k, size_t kl, const char *v, size_t vl, int sync)
{
    char *err = NULL;
    leveldb_put(ldb, sync ? lwo_sync : lwo, k, kl, v, vl, &err);
    if (err) {
        fprintf(stderr, "leveldb_put: %s\n", err);
        leveldb_free(err);
        return -1;
    }
    return 0;
}
static int l_get(const char *k, size_t kl, size_t *vl)
{
    char *err = NULL;
    char *v = leveldb_get(ldb, lro, k, kl, vl, &err);
    if (err) {
        leveldb_free(err);
        return -1;
    }
    if (!v)
        return 0;
    leveldb_free(v);
    return 1;
}
static int l_del(const char *k, size_t kl)
{
    char *err = NULL;
    leveldb_delete(ldb, lwo, k, kl, &err);
    if (err) {
        leveldb_free(err);
        return -1;
    }
    return 0;
}
static void *l_iter_new(void) { return leveldb_create_iterator(ldb, lro); }
static void l_iter_seek(void *it, const char *k, size_t kl) { leveldb_iter_seek(it, k, kl); }
static void l_iter_first(void *it) { leveldb_iter_seek_to_first(it); }
static int l_iter_valid(void *it) { return leveldb_iter_valid(it); }
static void l_iter_next(void *it) { leveldb_iter_next(it); }
static size_t l_iter_kv(void *it)
{
    size_t kl, vl;
    leveldb_iter_key(it, &kl);
    leveldb_iter_value(it, &vl);
    return kl + vl;
}
static void l_iter_free(void *it) { leveldb_iter_destroy(it); }
static int l_compact(void)
{
    leveldb_compact_range(ldb, NULL, 0, NULL, 0);
    return 0;
}

static const struct engine leveldb_engine = {
    l_open, l_close, l_put, l_get, l_del, l_iter_new, l_iter_seek, l_iter_first,
    l_iter_valid, l_iter_next, l_iter_kv, l_iter_free, l_compact,
};

static const struct engine *E;

/* ---- values, keys, randomness ---- */

static char *pool;
static size_t pool_len = 1u << 20;

static uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Each 100-byte piece of the pool is a random prefix repeated, so that it
 * compresses to about compression_ratio of its size. */
static void make_pool(void)
{
    uint64_t s = 301;
    pool = malloc(pool_len + (2u << 20));
    size_t piece = 100;
    size_t raw = (size_t)(piece * compression_ratio);
    if (raw < 1)
        raw = 1;
    for (size_t i = 0; i < pool_len + (2u << 20); i += piece) {
        for (size_t j = 0; j < piece && i + j < pool_len + (2u << 20); j++)
            pool[i + j] = j < raw ? (char)(' ' + rnd(&s) % 95) : pool[i + j % raw];
    }
}

static const char *value_at(uint64_t *pos, size_t len)
{
    if (*pos + len > pool_len + (2u << 20))
        *pos = 0;
    const char *v = pool + *pos;
    *pos = (*pos + len) % pool_len;
    return v;
}

/* K gets 16 digits and a NUL; N is below 10^16. */
static void make_key(char *k, long n)
{
    unsigned long long v = (unsigned long long)n % 10000000000000000ull;
    for (int i = 15; i >= 0; i--, v /= 10)
        k[i] = (char)('0' + v % 10);
    k[16] = '\0';
}

/* ---- latency histogram ---- */

#define HB 16   /* sub-buckets per power of two */
struct hist {
    uint64_t b[64 * HB];
    uint64_t n;
};

static int bucket(uint64_t ns)
{
    if (ns < HB)
        return (int)ns;
    int msb = 63 - __builtin_clzll(ns);
    int sub = (int)((ns >> (msb - 4)) & (HB - 1));
    return (msb - 3) * HB + sub;
}

static double bucket_mid(int i)
{
    if (i < HB)
        return i;
    int msb = i / HB + 3, sub = i % HB;
    double lo = (double)(1ull << msb) + (double)sub * (double)(1ull << (msb - 4));
    return lo + (double)(1ull << (msb - 4)) / 2;
}

static void hist_add(struct hist *h, uint64_t ns)
{
    h->b[bucket(ns)]++;
    h->n++;
}

static double hist_pct(const struct hist *h, double p)
{
    uint64_t want = (uint64_t)(p / 100.0 * (double)h->n), seen = 0;
    for (int i = 0; i < 64 * HB; i++) {
        seen += h->b[i];
        if (seen > want)
            return bucket_mid(i) / 1000.0;
    }
    return 0;
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* ---- benchmarks ---- */

struct job {
    const char *name;
    int id;
    long ops;
    struct hist h;
    uint64_t bytes;
    long found;
    int failed;
    atomic_int *stop;
};

static void fail(struct job *j, const char *what)
{
    if (!j->failed)
        fprintf(stderr, "%s: %s failed: %s\n", j->name, what,
                E == &stash_engine ? stash_last_error(sdb) : "leveldb error");
    j->failed = 1;
}

static void do_fill(struct job *j, int seq, int sync)
{
    uint64_t s = 1000 + (uint64_t)j->id, pos = (uint64_t)j->id * 7919;
    char k[17];
    for (long i = 0; i < j->ops && !j->failed; i++) {
        make_key(k, seq ? i : (long)(rnd(&s) % (uint64_t)num));
        const char *v = value_at(&pos, (size_t)value_size);
        uint64_t t = now_ns();
        if (E->put(k, 16, v, (size_t)value_size, sync))
            fail(j, "put");
        hist_add(&j->h, now_ns() - t);
        j->bytes += 16 + (uint64_t)value_size;
    }
}

static void do_read(struct job *j, int missing)
{
    uint64_t s = 2000 + (uint64_t)j->id;
    char k[18];
    for (long i = 0; i < j->ops && !j->failed; i++) {
        make_key(k, (long)(rnd(&s) % (uint64_t)num));
        size_t kl = 16, vl = 0;
        if (missing) {
            k[16] = '.';
            kl = 17;
        }
        uint64_t t = now_ns();
        int r = E->get(k, kl, &vl);
        hist_add(&j->h, now_ns() - t);
        if (r < 0)
            fail(j, "get");
        j->found += r > 0;
        j->bytes += kl + vl;
    }
}

static void do_readseq(struct job *j)
{
    void *it = E->iter_new();
    uint64_t t = now_ns();
    long n = 0;
    for (E->iter_first(it); E->iter_valid(it); E->iter_next(it)) {
        j->bytes += E->iter_kv(it);
        uint64_t t2 = now_ns();
        hist_add(&j->h, t2 - t);
        t = t2;
        n++;
    }
    E->iter_free(it);
    j->ops = n;
}

static void do_seek(struct job *j)
{
    uint64_t s = 3000 + (uint64_t)j->id;
    char k[17];
    void *it = E->iter_new();
    for (long i = 0; i < j->ops; i++) {
        make_key(k, (long)(rnd(&s) % (uint64_t)num));
        uint64_t t = now_ns();
        E->iter_seek(it, k, 16);
        for (int n = 0; n < 10 && E->iter_valid(it); n++) {
            j->bytes += E->iter_kv(it);
            E->iter_next(it);
        }
        hist_add(&j->h, now_ns() - t);
        j->found++;
    }
    E->iter_free(it);
}

static void do_delete(struct job *j)
{
    uint64_t s = 4000;
    char k[17];
    for (long i = 0; i < j->ops && !j->failed; i++) {
        make_key(k, (long)(rnd(&s) % (uint64_t)num));
        uint64_t t = now_ns();
        if (E->del(k, 16))
            fail(j, "delete");
        hist_add(&j->h, now_ns() - t);
    }
}

static void do_big(struct job *j, int write)
{
    size_t n = 1u << 20;
    char *buf = malloc(n);
    uint64_t pos = 0;
    for (long i = 0; i < j->ops && !j->failed; i++) {
        char k[17];
        make_key(k, i);
        uint64_t t = now_ns();
        if (write) {
            memcpy(buf, value_at(&pos, n), n);
            if (E->put(k, 16, buf, n, 0))
                fail(j, "put");
            j->bytes += n;
        } else {
            size_t vl = 0;
            if (E->get(k, 16, &vl) != 1)
                fail(j, "get");
            j->bytes += vl;
        }
        hist_add(&j->h, now_ns() - t);
    }
    free(buf);
}

static void writer_loop(struct job *j)
{
    uint64_t s = 5000, pos = 0;
    char k[17];
    while (!atomic_load(j->stop) && !j->failed) {
        make_key(k, (long)(rnd(&s) % (uint64_t)num));
        if (E->put(k, 16, value_at(&pos, (size_t)value_size), (size_t)value_size, 0))
            fail(j, "put");
        j->ops++;
    }
}

static const char *cur_bench;

static void *run_job(void *arg)
{
    struct job *j = arg;
    const char *b = cur_bench;
    if (!strcmp(b, "fillseq")) do_fill(j, 1, 0);
    else if (!strcmp(b, "fillrandom") || !strcmp(b, "overwrite")) do_fill(j, 0, 0);
    else if (!strncmp(b, "fillsync", 8)) do_fill(j, 0, 1);
    else if (!strcmp(b, "readrandom")) do_read(j, 0);
    else if (!strcmp(b, "readmissing")) do_read(j, 1);
    else if (!strcmp(b, "readseq")) do_readseq(j);
    else if (!strcmp(b, "seekrandom")) do_seek(j);
    else if (!strcmp(b, "deleterandom")) do_delete(j);
    else if (!strcmp(b, "readwhilewriting")) {
        if (j->id == 0)
            writer_loop(j);
        else {
            do_read(j, 0);
            atomic_store(j->stop, 1);
        }
    } else if (!strcmp(b, "fillbig")) do_big(j, 1);
    else if (!strcmp(b, "readbig")) do_big(j, 0);
    return NULL;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb; (void)flag;
    return f->level > 0 ? remove(p) : 0;
}

static double disk_usage_mb(void)
{
    DIR *d = opendir(dbdir);
    double total = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char p[4096];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dbdir, e->d_name);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode))
            total += (double)st.st_size;
    }
    if (d)
        closedir(d);
    return total / 1048576.0;
}

static int reopen_fresh(void)
{
    E->close();
    nftw(dbdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return E->open(dbdir);
}

/* Run one benchmark with NT threads of OPS operations each; print its line. */
static int run(const char *name, int nt, long ops)
{
    cur_bench = name;
    struct job *jobs = calloc((size_t)nt, sizeof *jobs);
    pthread_t *t = calloc((size_t)nt, sizeof *t);
    atomic_int stop = 0;
    for (int i = 0; i < nt; i++)
        jobs[i] = (struct job){ .name = name, .id = i, .ops = ops, .stop = &stop };
    uint64_t start = now_ns();
    for (int i = 0; i < nt; i++)
        pthread_create(&t[i], NULL, run_job, &jobs[i]);
    for (int i = 0; i < nt; i++)
        pthread_join(t[i], NULL);
    double secs = (double)(now_ns() - start) / 1e9;
    struct hist h = { { 0 }, 0 };
    uint64_t bytes = 0;
    long done = 0, found = 0;
    int failed = 0;
    /* readwhilewriting reports the readers; job 0 is the writer. */
    int first = !strcmp(name, "readwhilewriting") ? 1 : 0;
    for (int i = first; i < nt; i++) {
        for (int b = 0; b < 64 * HB; b++)
            h.b[b] += jobs[i].h.b[b];
        h.n += jobs[i].h.n;
        bytes += jobs[i].bytes;
        done += (long)jobs[i].h.n;
        found += jobs[i].found;
    }
    for (int i = 0; i < nt; i++)
        failed |= jobs[i].failed;
    char extra[64] = "";
    if (!strcmp(name, "readrandom") || !strcmp(name, "readwhilewriting") || !strcmp(name, "readmissing"))
        snprintf(extra, sizeof extra, " (%ld of %ld found)", found, done);
    if (first)
        snprintf(extra + strlen(extra), sizeof extra - strlen(extra), " (writer: %ld puts)", jobs[0].ops);
    printf("%-16s : %9.3f micros/op; %10.0f ops/s; %8.1f MB/s; p50 %.1f p99 %.1f p99.9 %.1f us%s\n",
           name, done ? secs * 1e6 * (nt - first) / (double)done : 0,
           (double)done / secs, (double)bytes / 1048576.0 / secs,
           hist_pct(&h, 50), hist_pct(&h, 99), hist_pct(&h, 99.9), extra);
    fflush(stdout);
    free(jobs);
    free(t);
    return failed ? -1 : 0;
}

static int parse_flag(const char *a)
{
    const char *eq = strchr(a, '=');
    if (strncmp(a, "--", 2) != 0 || !eq)
        return -1;
    size_t n = (size_t)(eq - a - 2);
    const char *v = eq + 1, *f = a + 2;
#define IS(s) (n == strlen(s) && !strncmp(f, s, n))
    if (IS("benchmarks")) benchmarks = v;
    else if (IS("num")) num = atol(v);
    else if (IS("reads")) reads = atol(v);
    else if (IS("value_size")) value_size = atoi(v);
    else if (IS("db")) dbdir = v;
    else if (IS("engine")) engine_name = v;
    else if (IS("threads")) threads = atoi(v);
    else if (IS("sync_threads")) sync_threads = atoi(v);
    else if (IS("compression_ratio")) compression_ratio = atof(v);
    else if (IS("cache_size")) cache_size = (size_t)atoll(v);
    else if (IS("bloom_bits")) bloom_bits = atoi(v);
    else if (IS("block_size")) block_size = (size_t)atoll(v);
    else if (IS("write_buffer_size")) memtable_size = (size_t)atoll(v);
    else if (IS("use_existing_db")) use_existing = atoi(v);
    else if (IS("stats")) show_stats = atoi(v);
    else if (IS("compression_level")) compression_level = atoi(v);
    else if (IS("mmap_reads")) mmap_reads = atoi(v);
    else return -1;
#undef IS
    return 0;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (parse_flag(argv[i]) < 0) {
            fprintf(stderr, "stash-bench: unknown flag %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (num < 1 || value_size < 0 || threads < 1 || sync_threads < 0 ||
        (strcmp(engine_name, "stash") && strcmp(engine_name, "leveldb"))) {
        usage(stderr);
        return 2;
    }
    if (reads < 0)
        reads = num;
    E = strcmp(engine_name, "leveldb") ? &stash_engine : &leveldb_engine;
    make_pool();
    mkdir(dbdir, 0755);
    if (!use_existing)
        nftw(dbdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    if (E->open(dbdir))
        return 1;

    char cpu[256] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        if (!strncmp(line, "model name", 10)) {
            char *c = strchr(line, ':');
            snprintf(cpu, sizeof cpu, "%.200s", c ? c + 2 : line);
            cpu[strcspn(cpu, "\n")] = '\0';
            break;
        }
    }
    if (f)
        fclose(f);
    time_t now = time(NULL);
    printf("engine:     %s\nkeys:       16 bytes each\nvalues:     %d bytes each (%.0f%% compressible)\n"
           "entries:    %ld\ncpu:        %s (%ld cores)\ndate:       %s----------------------------------------\n",
           engine_name, value_size, (1 - compression_ratio) * 100, num, cpu,
           sysconf(_SC_NPROCESSORS_ONLN), ctime(&now));

    int rc = 0;
    char *list = strdup(benchmarks), *save = NULL;
    for (char *b = strtok_r(list, ",", &save); b && rc == 0; b = strtok_r(NULL, ",", &save)) {
        int fill = !strncmp(b, "fill", 4);
        if (fill && !use_existing && reopen_fresh())
            return 1;
        if (!strcmp(b, "fillseq") || !strcmp(b, "fillrandom") || !strcmp(b, "overwrite"))
            rc = run(b, 1, num);
        else if (!strcmp(b, "fillsync")) {
            long n = num / 1000 < 1000 ? 1000 : num / 1000;
            rc = run("fillsync", 1, n);
            if (rc == 0 && sync_threads > 1) {
                char nm[32];
                snprintf(nm, sizeof nm, "fillsync_%dthr", sync_threads);
                rc = run(nm, sync_threads, n);
            }
        } else if (!strcmp(b, "readrandom") || !strcmp(b, "readmissing") || !strcmp(b, "seekrandom"))
            rc = run(b, threads, reads / threads);
        else if (!strcmp(b, "readseq"))
            rc = run(b, 1, 0);
        else if (!strcmp(b, "deleterandom"))
            rc = run(b, 1, num);
        else if (!strcmp(b, "readwhilewriting"))
            rc = run(b, 3, reads / 2);
        else if (!strcmp(b, "fillbig") || !strcmp(b, "readbig"))
            rc = run(b, 1, 1000);
        else if (!strcmp(b, "compact") || !strcmp(b, "reopen")) {
            uint64_t t0 = now_ns();
            if (b[0] == 'c') {
                rc = E->compact();
            } else {
                E->close();
                rc = E->open(dbdir);
            }
            printf("%-16s : %9.3f s%s\n", b, (double)(now_ns() - t0) / 1e9,
                   rc ? " (failed)" : "");
            if (rc == 0 && b[0] == 'c')
                printf("%-16s   disk usage: %.1f MB\n", "", disk_usage_mb());
            rc = rc ? -1 : 0;
        }
        else {
            fprintf(stderr, "stash-bench: unknown benchmark %s\n", b);
            rc = 2;
        }
        if (fill && rc == 0)
            printf("%-16s   disk usage: %.1f MB\n", "", disk_usage_mb());
        if (show_stats && E == &stash_engine) {
            char st[4096];
            stash_stats(sdb, st, sizeof st);
            printf("%s", st);
        }
    }
    free(list);
    E->close();
    free(pool);
    return rc < 0 ? 1 : rc;
}
