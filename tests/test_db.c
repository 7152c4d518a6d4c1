/*
 * test_db.c - the engine through its public API: reads and writes, errors,
 * batches, snapshots, iterators, recovery (reopen, many logs, torn tail,
 * corruption), locking, read-only stores, a full disk, concurrent threads,
 * and a randomized model test against an in-memory reference.
 */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "coding.h"
#include "smartstash.h"
#include "sstable.h"
#include "wal.h"

static int teardown(void **state)
{
    char mnt[600];
    snprintf(mnt, sizeof mnt, "%s/small", dir);
    umount2(mnt, MNT_DETACH);   /* test_disk_full's, even when it failed */
    return tu_teardown(state);
}

static stash_t *open_db(const stash_options_t *o)
{
    stash_t *db = NULL;
    int rc = stash_open(dir, o, &db);
    if (rc)
        fprintf(stderr, "stash_open: %d %s\n", rc, stash_last_error(NULL));
    assert_int_equal(rc, 0);
    return db;
}

static void put_s(stash_t *db, const char *k, const char *v)
{
    assert_int_equal(stash_put(db, k, strlen(k), v, strlen(v)), 0);
}

/* Assert KEY holds string WANT (NULL: absent). */
static void expect(stash_t *db, const stash_snapshot_t *s, const char *k, const char *want)
{
    void *v = NULL;
    size_t vl = 0;
    int rc = stash_get_at(db, s, k, strlen(k), &v, &vl);
    if (!want) {
        assert_int_equal(rc, -ENOENT);
        return;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(vl, strlen(want));
    assert_memory_equal(v, want, vl);
    stash_free(v);
}

/* The newest .log file of the store. */
static void newest_log(char *path, size_t len, int which_from_end)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "ls %s/*.log | sort | tail -n %d | head -n 1", dir, which_from_end);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(path, (int)len, p));
    path[strcspn(path, "\n")] = '\0';
    pclose(p);
}

static void test_put_get_delete(void **state)
{
    (void)state;
    stash_t *db = open_db(NULL);
    put_s(db, "alpha", "1");
    put_s(db, "beta", "2");
    expect(db, NULL, "alpha", "1");
    put_s(db, "alpha", "one");
    expect(db, NULL, "alpha", "one");
    assert_int_equal(stash_delete(db, "alpha", 5), 0);
    expect(db, NULL, "alpha", NULL);
    assert_int_equal(stash_delete(db, "never", 5), 0);
    expect(db, NULL, "beta", "2");
    /* An empty value is a value, distinct from absence. */
    assert_int_equal(stash_put(db, "empty", 5, "", 0), 0);
    void *v = NULL;
    size_t vl = 99;
    assert_int_equal(stash_get(db, "empty", 5, &v, &vl), 0);
    assert_int_equal(vl, 0);
    assert_non_null(v);
    stash_free(v);
    /* Binary keys with NULs, ordered bytewise. */
    assert_int_equal(stash_put(db, "\0\xff", 2, "bin", 3), 0);
    assert_int_equal(stash_get(db, "\0\xff", 2, &v, &vl), 0);
    assert_int_equal(vl, 3);
    stash_free(v);
    assert_int_equal(stash_close(db), 0);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    stash_t *db = open_db(NULL);
    void *v;
    size_t vl;
    char *big = calloc(1, STASH_MAX_KEY + 1);
    assert_int_equal(stash_put(NULL, "k", 1, "v", 1), -EINVAL);
    assert_int_equal(stash_put(db, "", 0, "v", 1), -EINVAL);
    assert_int_equal(stash_put(db, NULL, 1, "v", 1), -EINVAL);
    assert_int_equal(stash_put(db, big, STASH_MAX_KEY + 1, "v", 1), -EINVAL);
    assert_non_null(strstr(stash_last_error(db), "key length"));
    assert_int_equal(stash_put(db, big, STASH_MAX_KEY, "v", 1), 0);   /* the limit itself is fine */
    assert_int_equal(stash_get(db, big, STASH_MAX_KEY, &v, &vl), 0);
    stash_free(v);
    assert_int_equal(stash_get(db, "", 0, &v, &vl), -EINVAL);
    assert_int_equal(stash_get(NULL, "k", 1, &v, &vl), -EINVAL);
    assert_int_equal(stash_delete(db, "", 0), -EINVAL);
    assert_int_equal(stash_write(db, NULL, 0), -EINVAL);
    stash_batch_t *b = stash_batch_new();
    assert_int_equal(stash_batch_put(b, "", 0, "v", 1), -EINVAL);
    assert_int_equal(stash_batch_delete(b, big, STASH_MAX_KEY + 1), -EINVAL);
    assert_int_equal(stash_batch_count(b), 0);
    assert_int_equal(stash_write(db, b, 0x40), -EINVAL);
    stash_batch_free(b);
    assert_int_equal(stash_close(NULL), -EINVAL);
    assert_int_equal(stash_open(NULL, NULL, NULL), -EINVAL);
    stash_options_t o;
    stash_options_init(&o);
    o.memtable_size = 10;
    stash_t *db2;
    assert_int_equal(stash_open(dir, &o, &db2), -EINVAL);
    assert_non_null(strstr(stash_last_error(NULL), "memtable_size"));
    stash_options_init(&o);
    o.compression_level = -101;
    assert_int_equal(stash_open(dir, &o, &db2), -EINVAL);
    assert_non_null(strstr(stash_last_error(NULL), "compression_level -101"));
    assert_string_equal(stash_strerror(-ENOENT), "not found");
    free(big);
    assert_int_equal(stash_close(db), 0);
}

static void test_reopen_keeps_everything(void **state)
{
    (void)state;
    stash_t *db = open_db(NULL);
    for (int i = 0; i < 1000; i++) {
        char k[32], val[32];
        snprintf(k, sizeof k, "key%05d", i);
        snprintf(val, sizeof val, "value%d", i * 3);
        put_s(db, k, val);
    }
    for (int i = 0; i < 1000; i += 3) {
        char k[32];
        snprintf(k, sizeof k, "key%05d", i);
        assert_int_equal(stash_delete(db, k, strlen(k)), 0);
    }
    assert_int_equal(stash_close(db), 0);
    for (int round = 0; round < 3; round++) {
        db = open_db(NULL);
        for (int i = 0; i < 1000; i++) {
            char k[32], val[32];
            snprintf(k, sizeof k, "key%05d", i);
            snprintf(val, sizeof val, "value%d", i * 3);
            expect(db, NULL, k, i % 3 == 0 ? NULL : val);
        }
        put_s(db, "round", round ? "x" : "y");
        assert_int_equal(stash_close(db), 0);
    }
}

static void test_large_values(void **state)
{
    (void)state;
    size_t n = 16u << 20;
    unsigned char *big = malloc(n);
    uint64_t s = 99;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t r = tu_rand(&s);
        memcpy(big + i, &r, 8);
    }
    stash_t *db = open_db(NULL);
    assert_int_equal(stash_put(db, "big", 3, big, n), 0);
    assert_int_equal(stash_put(db, "after", 5, "x", 1), 0);
    assert_int_equal(stash_close(db), 0);
    db = open_db(NULL);
    void *v;
    size_t vl;
    assert_int_equal(stash_get(db, "big", 3, &v, &vl), 0);
    assert_int_equal(vl, n);
    assert_memory_equal(v, big, n);
    stash_free(v);
    expect(db, NULL, "after", "x");
    assert_int_equal(stash_close(db), 0);
    free(big);
}

static void test_batch(void **state)
{
    (void)state;
    stash_t *db = open_db(NULL);
    put_s(db, "gone", "soon");
    stash_batch_t *b = stash_batch_new();
    assert_int_equal(stash_batch_put(b, "x", 1, "1", 1), 0);
    assert_int_equal(stash_batch_put(b, "y", 1, "2", 1), 0);
    assert_int_equal(stash_batch_put(b, "x", 1, "3", 1), 0);   /* later wins */
    assert_int_equal(stash_batch_delete(b, "gone", 4), 0);
    assert_int_equal(stash_batch_count(b), 4);
    assert_int_equal(stash_write(db, b, STASH_SYNC), 0);
    expect(db, NULL, "x", "3");
    expect(db, NULL, "y", "2");
    expect(db, NULL, "gone", NULL);
    /* Writing the same batch again is allowed: it is not consumed. */
    assert_int_equal(stash_write(db, b, 0), 0);
    stash_batch_clear(b);
    assert_int_equal(stash_batch_count(b), 0);
    assert_int_equal(stash_write(db, b, 0), 0);            /* empty: no-op */
    assert_int_equal(stash_write(db, b, STASH_SYNC), 0);   /* empty + sync: a sync */
    stash_batch_free(b);
    assert_int_equal(stash_close(db), 0);
    db = open_db(NULL);
    expect(db, NULL, "x", "3");
    expect(db, NULL, "gone", NULL);
    assert_int_equal(stash_close(db), 0);
}

static void test_snapshots(void **state)
{
    (void)state;
    stash_t *db = open_db(NULL);
    put_s(db, "a", "1");
    put_s(db, "b", "1");
    stash_snapshot_t *s1 = stash_snapshot_new(db);
    put_s(db, "a", "2");
    assert_int_equal(stash_delete(db, "b", 1), 0);
    put_s(db, "c", "2");
    stash_snapshot_t *s2 = stash_snapshot_new(db);
    assert_true(stash_snapshot_seq(s2) > stash_snapshot_seq(s1));
    put_s(db, "a", "3");
    expect(db, s1, "a", "1");
    expect(db, s1, "b", "1");
    expect(db, s1, "c", NULL);
    expect(db, s2, "a", "2");
    expect(db, s2, "b", NULL);
    expect(db, s2, "c", "2");
    expect(db, NULL, "a", "3");

    /* An iterator at s1 sees exactly a=1, b=1. */
    stash_iter_t *it = stash_iter_new(db, s1);
    stash_iter_seek_first(it);
    const char *want[][2] = { { "a", "1" }, { "b", "1" } };
    for (int i = 0; i < 2; i++) {
        assert_true(stash_iter_valid(it));
        size_t kl, vl;
        const char *k = stash_iter_key(it, &kl);
        const char *v = stash_iter_value(it, &vl);
        assert_int_equal(kl, 1);
        assert_memory_equal(k, want[i][0], 1);
        assert_memory_equal(v, want[i][1], 1);
        stash_iter_next(it);
    }
    assert_false(stash_iter_valid(it));
    assert_int_equal(stash_iter_status(it), 0);
    stash_iter_free(it);
    stash_snapshot_free(db, s1);
    stash_snapshot_free(db, s2);
    assert_int_equal(stash_close(db), 0);
}

/* A flush leaves out the versions that a newer version hides from every
 * snapshot, and keeps those a snapshot can still read. */
static void test_flush_drops_hidden(void **state)
{
    (void)state;
    stash_options_t o;
    stash_options_init(&o);
    o.memtable_size = 64 << 10;
    o.l0_compaction_trigger = 60;
    o.l0_slowdown_trigger = 62;
    o.l0_stop_trigger = 64;
    stash_t *db = open_db(&o);
    put_s(db, "k", "v1");
    put_s(db, "k", "v2");
    assert_int_equal(stash_delete(db, "d", 1), 0);
    put_s(db, "d", "d2");
    stash_snapshot_t *s = stash_snapshot_new(db);
    put_s(db, "k", "v3");
    put_s(db, "k", "v4");
    assert_int_equal(stash_delete(db, "d", 1), 0);
    char v[100];
    memset(v, 'x', sizeof v);
    for (int i = 0; i < 1500; i++) {
        char k[16];
        snprintf(k, sizeof k, "f%05d", i);
        assert_int_equal(stash_put(db, k, strlen(k), v, sizeof v), 0);
    }
    stash_counters_t c;
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(stash_counters(db, &c), 0);
        if (c.level_tables[0] >= 1)
            break;
        usleep(10000);
    }
    assert_true(c.level_tables[0] >= 1);
    assert_true(c.level_entries[0] > 0);
    char st[4096];
    assert_int_equal(stash_stats(db, st, sizeof st), 0);
    /* v1 (hidden by v2, which the snapshot reads) and the deletion of d
     * before d2 go; nothing else does. */
    assert_non_null(strstr(st, "; 2 overwritten versions left out"));
    expect(db, s, "k", "v2");
    expect(db, s, "d", "d2");
    expect(db, NULL, "k", "v4");
    expect(db, NULL, "d", NULL);
    stash_snapshot_free(db, s);
    assert_int_equal(stash_close(db), 0);
    db = open_db(&o);
    expect(db, NULL, "k", "v4");
    expect(db, NULL, "d", NULL);
    expect(db, NULL, "f01499", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    assert_int_equal(stash_close(db), 0);
}

static void test_iterator(void **state)
{
    (void)state;
    stash_options_t o;
    stash_options_init(&o);
    o.memtable_size = 64 << 10;   /* several frozen memtables */
    stash_t *db = open_db(&o);
    for (int i = 0; i < 3000; i++) {
        char k[16], v[200];
        snprintf(k, sizeof k, "k%06d", (i * 7919) % 3000);
        memset(v, 'a' + i % 26, sizeof v);
        assert_int_equal(stash_put(db, k, strlen(k), v, sizeof v), 0);
    }
    for (int i = 0; i < 3000; i += 2) {
        char k[16];
        snprintf(k, sizeof k, "k%06d", i);
        assert_int_equal(stash_delete(db, k, strlen(k)), 0);
    }
    stash_iter_t *it = stash_iter_new(db, NULL);
    /* Writes after the iterator was made are not seen by it. */
    put_s(db, "k000000", "late");
    put_s(db, "zzz", "late");
    int n = 0;
    for (stash_iter_seek_first(it); stash_iter_valid(it); stash_iter_next(it)) {
        size_t kl;
        const char *k = stash_iter_key(it, &kl);
        char want[16];
        snprintf(want, sizeof want, "k%06d", 2 * n + 1);
        assert_int_equal(kl, strlen(want));
        assert_memory_equal(k, want, kl);
        n++;
    }
    assert_int_equal(n, 1500);
    stash_iter_seek(it, "k001000", 7);   /* deleted: lands on the next live key */
    size_t kl;
    assert_true(stash_iter_valid(it));
    assert_memory_equal(stash_iter_key(it, &kl), "k001001", 7);
    stash_iter_seek(it, "k0029995", 8);
    assert_false(stash_iter_valid(it));
    stash_iter_seek(it, "a", 1);
    assert_memory_equal(stash_iter_key(it, &kl), "k000001", 7);
    stash_iter_free(it);
    assert_int_equal(stash_close(db), 0);
}

static void test_many_logs_recover(void **state)
{
    (void)state;
    stash_options_t o;
    stash_options_init(&o);
    o.memtable_size = 64 << 10;
    stash_t *db = open_db(&o);
    char v[1000];
    for (int i = 0; i < 2000; i++) {
        char k[16];
        snprintf(k, sizeof k, "%08d", i);
        memset(v, (char)i, sizeof v);
        assert_int_equal(stash_put(db, k, 8, v, sizeof v), 0);
    }
    char st[2048];
    assert_int_equal(stash_stats(db, st, sizeof st), 0);
    assert_non_null(strstr(st, "frozen memtables"));
    assert_int_equal(stash_close(db), 0);
    char path[1024];
    newest_log(path, sizeof path, 20);   /* there are at least 20 logs */
    assert_true(strlen(path) > 0);
    db = open_db(&o);
    for (int i = 0; i < 2000; i++) {
        char k[16];
        snprintf(k, sizeof k, "%08d", i);
        void *got;
        size_t gl;
        assert_int_equal(stash_get(db, k, 8, &got, &gl), 0);
        memset(v, (char)i, sizeof v);
        assert_int_equal(gl, sizeof v);
        assert_memory_equal(got, v, gl);
        stash_free(got);
    }
    assert_int_equal(stash_close(db), 0);
}

/*
 * A log written with a large memtable and replayed with a small one goes
 * into one table, not one per memtable_size: open freezes its memtable only
 * between logs.  Were the log split, each flush at open would record that
 * the same log is still needed, and a crash between two of them would
 * replay the first part again into a second table of identical entries.
 */
static void test_log_replayed_whole(void **state)
{
    (void)state;
    stash_options_t o;
    stash_options_init(&o);
    o.compaction_interval = 3600;
    stash_t *db = open_db(&o);
    char v[1000];
    for (int i = 0; i < 600; i++) {
        char k[16];
        snprintf(k, sizeof k, "%08d", i);
        memset(v, 'a' + i % 26, sizeof v);
        assert_int_equal(stash_put(db, k, 8, v, sizeof v), 0);
    }
    assert_int_equal(stash_close(db), 0);   /* leaves its log: nothing was flushed */
    o.memtable_size = 64 << 10;              /* a tenth of what the log holds */
    db = open_db(&o);
    char st[4096];
    assert_int_equal(stash_stats(db, st, sizeof st), 0);
    const char *l0 = strstr(st, "level 0:");
    assert_non_null(l0);
    int tables = -1;
    unsigned long long entries = 0;
    assert_int_equal(sscanf(l0, "level 0: %d tables, %*u bytes, %llu entries", &tables, &entries), 2);
    if (tables != 1)
        printf("%s", st);
    assert_int_equal(tables, 1);
    assert_int_equal(entries, 600);
    assert_non_null(strstr(st, "frozen memtables: 0"));
    for (int i = 0; i < 600; i += 7) {
        char k[16];
        snprintf(k, sizeof k, "%08d", i);
        memset(v, 'a' + i % 26, sizeof v);
        void *got;
        size_t gl;
        assert_int_equal(stash_get(db, k, 8, &got, &gl), 0);
        assert_int_equal(gl, sizeof v);
        assert_memory_equal(got, v, gl);
        stash_free(got);
    }
    assert_int_equal(stash_close(db), 0);
}

static void test_torn_tail_and_corruption(void **state)
{
    (void)state;
    stash_t *db = open_db(NULL);
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof k, "t%03d", i);
        put_s(db, k, "0123456789abcdef0123456789abcdef");
    }
    assert_int_equal(stash_close(db), 0);
    char path[1024];
    newest_log(path, sizeof path, 1);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    /* Tear the last record in half: it disappears, the rest stays. */
    assert_int_equal(truncate(path, st.st_size - 20), 0);
    db = open_db(NULL);
    expect(db, NULL, "t098", "0123456789abcdef0123456789abcdef");
    expect(db, NULL, "t099", NULL);
    put_s(db, "t099", "again");
    assert_int_equal(stash_close(db), 0);
    db = open_db(NULL);
    expect(db, NULL, "t099", "again");
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof k, "u%03d", i);
        put_s(db, k, "0123456789abcdef0123456789abcdef");
    }
    assert_int_equal(stash_close(db), 0);

    /* Flip a byte in the middle of the log, with whole records after it:
     * that is damage, not a torn tail.  Open fails with -EIO naming the
     * file, and nothing is opened. */
    newest_log(path, sizeof path, 1);
    assert_int_equal(stat(path, &st), 0);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char c;
    off_t off = st.st_size / 2;
    assert_int_equal(pread(fd, &c, 1, off), 1);
    c ^= 0x40;
    assert_int_equal(pwrite(fd, &c, 1, off), 1);
    close(fd);
    stash_t *bad = NULL;
    assert_int_equal(stash_open(dir, NULL, &bad), -EIO);
    assert_null(bad);
    const char *msg = stash_last_error(NULL);
    assert_non_null(strstr(msg, ".log"));
    assert_non_null(strstr(msg, "offset"));
}

/* Opening and closing without writes leaves no logs behind. */
static void test_no_empty_logs(void **state)
{
    (void)state;
    stash_t *db = open_db(NULL);
    put_s(db, "k", "v");
    assert_int_equal(stash_close(db), 0);
    for (int i = 0; i < 5; i++) {
        db = open_db(NULL);
        assert_int_equal(stash_close(db), 0);
    }
    char cmd[700], out[32];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c '\\.log$'", dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(fgets(out, sizeof out, p));
    pclose(p);
    if (atoi(out) > 2) {
        snprintf(cmd, sizeof cmd, "ls -l %s", dir);
        (void)system(cmd);
    }
    assert_true(atoi(out) <= 2);    /* the current one, and one at most still flushing */
    db = open_db(NULL);
    expect(db, NULL, "k", "v");
    assert_int_equal(stash_close(db), 0);
}

static void test_lock(void **state)
{
    (void)state;
    stash_t *db = open_db(NULL);
    stash_t *db2 = NULL;
    assert_int_equal(stash_open(dir, NULL, &db2), -EBUSY);
    assert_null(db2);
    assert_non_null(strstr(stash_last_error(NULL), "in use"));
    /* Another process is refused at once too. */
    pid_t pid = fork();
    if (pid == 0) {
        stash_t *d = NULL;
        _exit(stash_open(dir, NULL, &d) == -EBUSY ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(stash_close(db), 0);
    db = open_db(NULL);
    assert_int_equal(stash_close(db), 0);
}

static void test_read_only_and_missing(void **state)
{
    (void)state;
    stash_options_t o;
    stash_options_init(&o);
    o.create_if_missing = 0;
    char missing[600];
    snprintf(missing, sizeof missing, "%s/nope", dir);
    stash_t *db = NULL;
    assert_int_equal(stash_open(missing, &o, &db), -ENOENT);
    assert_int_equal(stash_open(dir, &o, &db), -ENOENT);   /* a directory, but no store */

    db = open_db(NULL);
    put_s(db, "k", "v");
    assert_int_equal(stash_close(db), 0);
    o.read_only = 1;
    db = open_db(&o);
    expect(db, NULL, "k", "v");
    assert_int_equal(stash_put(db, "k", 1, "w", 1), -EROFS);
    assert_int_equal(stash_delete(db, "k", 1), -EROFS);
    /* Two readers may share the store; a writer may not join them. */
    stash_t *db2 = NULL, *w = NULL;
    assert_int_equal(stash_open(dir, &o, &db2), 0);
    assert_int_equal(stash_open(dir, NULL, &w), -EBUSY);
    assert_int_equal(stash_close(db2), 0);
    assert_int_equal(stash_close(db), 0);
}

/* A disk that fills up: the failing write says -ENOSPC, nothing acknowledged
 * is lost, the store stays writable, and it works again once there is room. */
static void test_disk_full(void **state)
{
    (void)state;
    char mnt[600], store[700];
    snprintf(mnt, sizeof mnt, "%s/small", dir);
    snprintf(store, sizeof store, "%s/store", mnt);
    mkdir(mnt, 0755);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=1m") != 0)
        skip();   /* needs root */
    stash_t *db = NULL;
    assert_int_equal(stash_open(store, NULL, &db), 0);
    char v[8000];
    memset(v, 'v', sizeof v);
    int acked = 0, rc = 0;
    for (int i = 0; i < 1000 && rc == 0; i++) {
        char k[16];
        snprintf(k, sizeof k, "f%04d", i);
        rc = stash_put(db, k, 5, v, sizeof v);
        if (rc == 0)
            acked++;
    }
    assert_int_equal(rc, -ENOSPC);
    assert_true(acked > 10);
    /* The failed write was taken back; the store is still writable. */
    assert_int_equal(stash_put(db, "g", 1, v, sizeof v), -ENOSPC);
    assert_int_equal(stash_close(db), 0);

    /* Full disk: a read-only open still shows every acknowledged write. */
    stash_options_t o;
    stash_options_init(&o);
    o.read_only = 1;
    assert_int_equal(stash_open(store, &o, &db), 0);
    for (int i = 0; i < acked; i++) {
        char k[16];
        snprintf(k, sizeof k, "f%04d", i);
        void *got;
        size_t gl;
        assert_int_equal(stash_get(db, k, 5, &got, &gl), 0);
        assert_int_equal(gl, sizeof v);
        stash_free(got);
    }
    assert_int_equal(stash_close(db), 0);

    /* Room again: writable, nothing lost. */
    assert_int_equal(mount("tmpfs", mnt, "tmpfs", MS_REMOUNT, "size=4m"), 0);
    assert_int_equal(stash_open(store, NULL, &db), 0);
    assert_int_equal(stash_put(db, "g", 1, v, sizeof v), 0);
    char k[16];
    snprintf(k, sizeof k, "f%04d", acked - 1);
    void *got;
    size_t gl;
    assert_int_equal(stash_get(db, k, 5, &got, &gl), 0);
    stash_free(got);
    snprintf(k, sizeof k, "f%04d", acked);
    assert_int_equal(stash_get(db, k, 5, &got, &gl), -ENOENT);
    assert_int_equal(stash_close(db), 0);
}

/* Put keys FMT(i) for i < N, each VLEN bytes of 'a' + i % 26. */
static void put_marked(stash_t *db, const char *fmt, int n, size_t vlen)
{
    char v[1024];
    assert_true(vlen <= sizeof v);
    for (int i = 0; i < n; i++) {
        char k[32];
        snprintf(k, sizeof k, fmt, i);
        memset(v, 'a' + i % 26, vlen);
        assert_int_equal(stash_put(db, k, strlen(k), v, vlen), 0);
    }
}

/* Keys FMT(i) for i < N each hold VLEN bytes starting with 'a' + i % MOD. */
static void check_marked(stash_t *db, const char *fmt, int n, size_t vlen, int mod)
{
    for (int i = 0; i < n; i++) {
        char k[32];
        snprintf(k, sizeof k, fmt, i);
        void *got;
        size_t gl;
        assert_int_equal(stash_get(db, k, strlen(k), &got, &gl), 0);
        assert_int_equal(gl, vlen);
        assert_int_equal(((char *)got)[0], 'a' + i % mod);
        stash_free(got);
    }
}

/* Read keys FMT(i) for i < N (values as put_marked wrote them) from a store
 * with damage: each read is -EIO or exactly right, never wrong bytes or
 * "not found".  Returns the number of right ones; *BAD gets the others. */
static int read_damaged(stash_t *db, const char *fmt, int n, size_t vlen, int *bad)
{
    char v[1024];
    int good = 0;
    *bad = 0;
    for (int i = 0; i < n; i++) {
        char k[32];
        snprintf(k, sizeof k, fmt, i);
        void *got;
        size_t gl;
        int rc = stash_get(db, k, strlen(k), &got, &gl);
        if (rc == -EIO) {
            (*bad)++;
            continue;
        }
        assert_int_equal(rc, 0);
        memset(v, 'a' + i % 26, vlen);
        assert_int_equal(gl, vlen);
        assert_memory_equal(got, v, gl);
        stash_free(got);
        good++;
    }
    return good;
}

/* The disk fills up while memtables are being flushed to tables: writes fail
 * with -ENOSPC (they never hang), nothing acknowledged is lost, the store
 * still opens while the disk is full, and works again once there is room. */
static void small_tables(stash_options_t *o);

/* A full disk under value files: the write that does not fit gets -ENOSPC
 * and leaves nothing behind; every acknowledged value reads back whole,
 * and once there is room the store takes writes again. */
static void test_disk_full_values(void **state)
{
    (void)state;
    char mnt[600], store[700];
    snprintf(mnt, sizeof mnt, "%s/small", dir);
    snprintf(store, sizeof store, "%s/store", mnt);
    mkdir(mnt, 0755);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=6m") != 0)
        skip();   /* needs root */
    enum { N = 196608, MAX = 64 };
    uint8_t *v = malloc(N), *got = malloc(N);
    stash_t *db = NULL;
    assert_int_equal(stash_open(store, NULL, &db), 0);
    int acked = 0, rc = 0;
    for (int i = 0; i < MAX && rc == 0; i++) {
        uint64_t seed = (uint64_t)i + 1;
        for (size_t j = 0; j < N; j++)
            v[j] = (uint8_t)(tu_rand(&seed) >> 32);     /* incompressible */
        char k[16];
        snprintf(k, sizeof k, "big%02d", i);
        rc = stash_pwrite(db, k, strlen(k), v, N, 0);
        if (rc == 0)
            acked++;
    }
    assert_int_equal(rc, -ENOSPC);
    assert_true(acked > 5);
    assert_non_null(strstr(stash_last_error(db), "value file"));   /* names the file that did not fit */
    assert_int_equal(stash_close(db), 0);

    assert_int_equal(mount("tmpfs", mnt, "tmpfs", MS_REMOUNT, "size=32m"), 0);
    assert_int_equal(stash_open(store, NULL, &db), 0);
    for (int i = 0; i <= acked; i++) {
        uint64_t seed = (uint64_t)i + 1;
        for (size_t j = 0; j < N; j++)
            v[j] = (uint8_t)(tu_rand(&seed) >> 32);
        char k[16];
        size_t n;
        snprintf(k, sizeof k, "big%02d", i);
        if (i == acked) {
            /* The one refused is not there, and now fits. */
            assert_int_equal(stash_pread(db, k, strlen(k), got, N, 0, &n), -ENOENT);
            assert_int_equal(stash_pwrite(db, k, strlen(k), v, N, 0), 0);
        }
        assert_int_equal(stash_pread(db, k, strlen(k), got, N, 0, &n), 0);
        assert_int_equal(n, N);
        assert_memory_equal(got, v, N);
    }
    assert_int_equal(stash_close(db), 0);
    free(v);
    free(got);
}

static void test_disk_full_tables(void **state)
{
    (void)state;
    char mnt[600], store[700];
    snprintf(mnt, sizeof mnt, "%s/small", dir);
    snprintf(store, sizeof store, "%s/store", mnt);
    mkdir(mnt, 0755);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=2m") != 0)
        skip();
    stash_options_t o;
    small_tables(&o);
    stash_t *db = NULL;
    assert_int_equal(stash_open(store, &o, &db), 0);
    char v[4000];
    int acked = 0, rc = 0;
    uint64_t rs = 5;
    for (int i = 0; i < 5000 && rc == 0; i++) {
        char k[16];
        snprintf(k, sizeof k, "t%05d", i);
        for (size_t j = 0; j < sizeof v; j++)   /* incompressible */
            v[j] = (char)(tu_rand(&rs) >> 56);
        v[0] = (char)('a' + i % 26);
        rc = stash_put(db, k, strlen(k), v, sizeof v);
        if (rc == 0)
            acked++;
    }
    printf("disk full after %d writes: %s\n", acked, stash_last_error(db));
    assert_int_equal(rc, -ENOSPC);
    assert_true(acked > 50);
    assert_int_equal(stash_close(db), 0);

    /* Still full, but for 56 KiB: room for the new MANIFEST, CURRENT and
     * log the open writes (with some to spare: a run once found 40 KiB too
     * little), not for a table of a 64 KiB memtable.  The store
     * opens all the same (what its logs hold stays in memory when no table
     * can be written) and every acknowledged write reads back. */
    char ballast[800];
    snprintf(ballast, sizeof ballast, "%s/ballast", mnt);
    int fd = open(ballast, O_CREAT | O_WRONLY, 0644);
    assert_true(fd >= 0);
    off_t filled = 0;
    ssize_t wr;
    while ((wr = write(fd, v, sizeof v)) > 0)
        filled += wr;
    /* The open rewrites the MANIFEST whole: room for that too, which
     * grows with the tables the fill left (56 KiB alone once fell short
     * after a fill that ended on the log with many tables). */
    off_t room = 57344;
    DIR *sd = opendir(store);
    assert_non_null(sd);
    for (struct dirent *de; (de = readdir(sd)) != NULL;) {
        char mp[1000];
        struct stat ms;
        snprintf(mp, sizeof mp, "%s/%s", store, de->d_name);
        if (!strncmp(de->d_name, "MANIFEST-", 9) && stat(mp, &ms) == 0)
            room += (ms.st_size + 4095) / 4096 * 4096;
    }
    closedir(sd);
    assert_int_equal(ftruncate(fd, filled > room ? filled - room : 0), 0);
    close(fd);
    for (int round = 0; round < 2; round++) {
        if (round == 1) {
            unlink(ballast);
            assert_int_equal(mount("tmpfs", mnt, "tmpfs", MS_REMOUNT, "size=32m"), 0);
        }
        rc = stash_open(store, &o, &db);
        if (rc)
            print_error("round %d: %s\n", round, stash_last_error(NULL));
        assert_int_equal(rc, 0);
        check_marked(db, "t%05d", acked, sizeof v, 26);
        if (round == 0)
            assert_int_equal(stash_close(db), 0);
    }
    assert_int_equal(stash_put(db, "after", 5, v, sizeof v), 0);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    assert_int_equal(stash_close(db), 0);
}

/* ---- a store at rest ---- */

/* The number after PREFIX in the stats, at its first line starting so. */
static long long stat_num(stash_t *db, const char *prefix)
{
    static char buf[8192];
    assert_int_equal(stash_stats(db, buf, sizeof buf), 0);
    const char *p = strstr(buf, prefix);
    assert_non_null(p);
    long long v = -1;
    assert_int_equal(sscanf(p + strlen(prefix), " %lld", &v), 1);
    return v;
}

static long long stat_after(stash_t *db, const char *prefix, const char *word)
{
    static char buf[8192];
    assert_int_equal(stash_stats(db, buf, sizeof buf), 0);
    const char *p = strstr(buf, prefix);
    assert_non_null(p);
    const char *q = strstr(p, word);
    assert_non_null(q);
    while (q > p && q[-1] == ' ')
        q--;
    while (q > p && q[-1] >= '0' && q[-1] <= '9')
        q--;
    return atoll(q);
}

static long long dir_bytes(const char *d)
{
    DIR *dd = opendir(d);
    assert_non_null(dd);
    long long total = 0;
    struct dirent *e;
    while ((e = readdir(dd))) {
        char path[1200];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", d, e->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            total += st.st_size;
    }
    closedir(dd);
    return total;
}

/* A store that stops taking writes: within two compaction intervals its
 * memtable goes to a table and level 0 into level 1 (compressed), so it
 * shrinks, and everything still reads back, before and after a reopen. */
static void test_idle_compaction(void **state)
{
    (void)state;
    stash_options_t o;
    stash_options_init(&o);
    o.memtable_size = 256 << 10;
    o.compaction_interval = 1;
    o.l0_compaction_trigger = 8;   /* level 0 stays as the writes leave it */
    o.l0_slowdown_trigger = 16;
    o.l0_stop_trigger = 24;
    stash_t *db = NULL;
    assert_int_equal(stash_open(dir, &o, &db), 0);
    char k[32], v[400];
    for (int i = 0; i < 3000; i++) {
        snprintf(k, sizeof k, "rest%05d", i);
        for (size_t j = 0; j < sizeof v; j++)   /* compresses well */
            v[j] = (char)('a' + (i + j / 40) % 7);
        assert_int_equal(stash_put(db, k, strlen(k), v, sizeof v), 0);
    }
    long long l0 = stat_num(db, "level 0:");
    long long mem = stat_after(db, "memtable:", "entries");
    long long before = dir_bytes(dir);
    printf("after the writes: %lld level-0 tables, %lld entries in the memtable, %lld bytes\n",
           l0, mem, before);
    assert_true(l0 >= 2);
    assert_true(mem > 0);
    assert_int_equal(stat_num(db, "at rest:"), 0);
    int waited = 0;
    while (waited < 100 && (stat_num(db, "at rest:") < 1 || stat_num(db, "level 0:") > 0)) {
        usleep(100000);
        waited++;
    }
    long long after = dir_bytes(dir);
    printf("at rest after %.1f s: %lld bytes\n", waited / 10.0, after);
    assert_int_equal(stat_num(db, "level 0:"), 0);
    assert_int_equal(stat_after(db, "memtable:", "entries"), 0);
    assert_true(stat_num(db, "level 1:") >= 1);
    assert_true(after < before / 2);
    /* A few writes now and then are not worth rewriting level 1 for: they
     * stay in the memtable. */
    assert_int_equal(stash_put(db, "rest-late", 9, v, sizeof v), 0);
    usleep(2500000);
    assert_int_equal(stat_num(db, "at rest:"), 1);
    assert_int_equal(stat_after(db, "memtable:", "entries"), 1);
    assert_int_equal(stash_delete(db, "rest-late", 9), 0);
    for (int round = 0; round < 2; round++) {
        check_marked(db, "rest%05d", 3000, sizeof v, 7);
        assert_int_equal(stash_close(db), 0);
        if (round == 0)
            assert_int_equal(stash_open(dir, &o, &db), 0);
    }
}

/* ---- many threads ---- */

struct conc {
    stash_t *db;
    int id;
    atomic_int *stop;
    long reads;
};

/* Each writer owns keys w<id>-<n> and writes them in order with increasing
 * values; a reader checks that a key it can see holds the value its name says. */
static void *conc_writer(void *arg)
{
    struct conc *c = arg;
    for (int n = 0; n < 3000; n++) {
        char k[32], v[32];
        snprintf(k, sizeof k, "w%d-%05d", c->id, n);
        snprintf(v, sizeof v, "v%d-%05d", c->id, n);
        int rc;
        if (n % 50 == 0) {
            stash_batch_t *b = stash_batch_new();
            stash_batch_put(b, k, strlen(k), v, strlen(v));
            rc = stash_write(c->db, b, STASH_SYNC);
            stash_batch_free(b);
        } else {
            rc = stash_put(c->db, k, strlen(k), v, strlen(v));
        }
        if (rc)
            return (void *)1;
    }
    return NULL;
}

static void *conc_reader(void *arg)
{
    struct conc *c = arg;
    uint64_t s = (uint64_t)c->id * 7777 + 1;
    while (!atomic_load(c->stop)) {
        int w = (int)(tu_rand(&s) % 4), n = (int)(tu_rand(&s) % 3000);
        char k[32], v[32];
        snprintf(k, sizeof k, "w%d-%05d", w, n);
        snprintf(v, sizeof v, "v%d-%05d", w, n);
        void *got;
        size_t gl;
        int rc = stash_get(c->db, k, strlen(k), &got, &gl);
        if (rc == 0) {
            int bad = gl != strlen(v) || memcmp(got, v, gl) != 0;
            stash_free(got);
            if (bad)
                return (void *)1;
        } else if (rc != -ENOENT) {
            return (void *)1;
        }
        /* A scan sees each writer's keys as a prefix: no gaps. */
        if (n % 64 == 0) {
            stash_iter_t *it = stash_iter_new(c->db, NULL);
            char pfx[8];
            snprintf(pfx, sizeof pfx, "w%d-", w);
            int expectn = 0;
            for (stash_iter_seek(it, pfx, strlen(pfx)); stash_iter_valid(it); stash_iter_next(it)) {
                size_t kl;
                const char *key = stash_iter_key(it, &kl);
                if (kl < 3 || memcmp(key, pfx, strlen(pfx)) != 0)
                    break;
                char want[32];
                snprintf(want, sizeof want, "w%d-%05d", w, expectn);
                if (kl != strlen(want) || memcmp(key, want, kl) != 0) {
                    stash_iter_free(it);
                    return (void *)1;
                }
                expectn++;
            }
            stash_iter_free(it);
        }
        c->reads++;
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    stash_options_t o;
    small_tables(&o);   /* flushes and compactions while the threads run */
    stash_t *db = open_db(&o);
    atomic_int stop = 0;
    pthread_t wt[4], rt[4];
    struct conc wc[4], rc[4];
    for (int i = 0; i < 4; i++) {
        wc[i] = (struct conc){ db, i, &stop, 0 };
        rc[i] = (struct conc){ db, i + 10, &stop, 0 };
        pthread_create(&wt[i], NULL, conc_writer, &wc[i]);
        pthread_create(&rt[i], NULL, conc_reader, &rc[i]);
    }
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(wt[i], &r);
        assert_null(r);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(rt[i], &r);
        assert_null(r);
    }
    char st[2048];
    stash_stats(db, st, sizeof st);
    printf("%s", st);
    assert_int_equal(stash_close(db), 0);
    /* Final check, after a reopen: every write of every writer. */
    db = open_db(&o);
    stash_iter_t *it = stash_iter_new(db, NULL);
    int n = 0;
    for (stash_iter_seek_first(it); stash_iter_valid(it); stash_iter_next(it))
        n++;
    assert_int_equal(n, 4 * 3000);
    stash_iter_free(it);
    assert_int_equal(stash_close(db), 0);
}

/* Writers through two names of one hard-linked value, each on its own
 * blocks, and a third thread linking and unlinking more names: no write is
 * lost and the name count ends right. */
struct lw {
    stash_t *db;
    int id;
};

static void *link_writer(void *arg)
{
    struct lw *w = arg;
    const char *name = w->id ? "w" : "v";
    uint8_t blk[4096];
    for (int i = 0; i < 40; i++) {
        memset(blk, 'a' + w->id * 13 + i % 13, sizeof blk);
        if (stash_pwrite(w->db, name, 1, blk, sizeof blk, (uint64_t)(2 * i + w->id) * sizeof blk))
            return (void *)1;
    }
    return NULL;
}

static void *link_churner(void *arg)
{
    struct lw *w = arg;
    for (int i = 0; i < 40; i++) {
        char k[16];
        snprintf(k, sizeof k, "x%d", i % 3);
        if (i % 2 == 0 && stash_link(w->db, "v", 1, k, strlen(k)))
            return (void *)1;
        if (i % 2 == 1) {
            snprintf(k, sizeof k, "x%d", (i - 1) % 3);
            if (stash_delete(w->db, k, strlen(k)))
                return (void *)1;
        }
    }
    return NULL;
}

static void test_link_writers(void **state)
{
    (void)state;
    stash_t *db = open_db(NULL);
    assert_int_equal(stash_put(db, "v", 1, "", 0), 0);
    assert_int_equal(stash_link(db, "v", 1, "w", 1), 0);
    pthread_t t[3];
    struct lw w[3] = {{db, 0}, {db, 1}, {db, 2}};
    pthread_create(&t[0], NULL, link_writer, &w[0]);
    pthread_create(&t[1], NULL, link_writer, &w[1]);
    pthread_create(&t[2], NULL, link_churner, &w[2]);
    for (int i = 0; i < 3; i++) {
        void *r;
        pthread_join(t[i], &r);
        assert_null(r);
    }
    uint8_t *buf = malloc(80 * 4096);
    size_t got;
    assert_int_equal(stash_pread(db, "v", 1, buf, 80 * 4096, 0, &got), 0);
    assert_int_equal(got, 80 * 4096);
    for (int b = 0; b < 80; b++) {
        int id = b % 2, i = b / 2;
        for (int j = 0; j < 4096; j++)
            if (buf[b * 4096 + j] != 'a' + id * 13 + i % 13)
                fail_msg("block %d byte %d: %c", b, j, buf[b * 4096 + j]);
    }
    free(buf);
    stash_stat_t st;
    assert_int_equal(stash_stat(db, NULL, "w", 1, &st), 0);
    assert_int_equal(st.nlink, 2);
    assert_int_equal(stash_close(db), 0);
}

/* An upper bound ends a scan at the bound, also when the keys after it are
 * all deleted, and can be moved or lifted. */
static void test_iterator_bound(void **state)
{
    (void)state;
    stash_t *db = open_db(NULL);
    const char *keys[] = {"a", "b/1", "b/2", "b0", "c", "\xff", "\xff\x01"};
    for (int i = 0; i < 7; i++)
        assert_int_equal(stash_put(db, keys[i], strlen(keys[i]), "v", 1), 0);
    for (int i = 0; i < 3000; i++) {
        char k[32];
        snprintf(k, sizeof k, "b1/%05d", i);
        assert_int_equal(stash_put(db, k, strlen(k), "x", 1), 0);
        assert_int_equal(stash_delete(db, k, strlen(k)), 0);
    }
    stash_iter_t *it = stash_iter_new(db, NULL);
    assert_int_equal(stash_iter_set_upper(it, "b0", 2), 0);
    size_t kl;
    stash_iter_seek(it, "b/", 2);
    assert_true(stash_iter_valid(it));
    assert_memory_equal(stash_iter_key(it, &kl), "b/1", 3);
    stash_iter_next(it);
    assert_memory_equal(stash_iter_key(it, &kl), "b/2", 3);
    stash_iter_next(it);
    assert_false(stash_iter_valid(it));           /* "b0" is not below "b0" */
    assert_int_equal(stash_iter_status(it), 0);
    assert_int_equal(stash_iter_set_upper(it, "b2", 2), 0);
    stash_iter_seek(it, "b0", 2);
    assert_memory_equal(stash_iter_key(it, &kl), "b0", 2);
    stash_iter_next(it);                          /* past 3,000 deleted b1/ keys */
    assert_false(stash_iter_valid(it));
    assert_int_equal(stash_iter_set_upper(it, "\xff\x01", 2), 0);
    stash_iter_seek(it, "c", 1);
    assert_memory_equal(stash_iter_key(it, &kl), "c", 1);
    stash_iter_next(it);
    assert_true(stash_iter_valid(it));
    assert_memory_equal(stash_iter_key(it, &kl), "\xff", 1);
    stash_iter_next(it);
    assert_false(stash_iter_valid(it));
    assert_int_equal(stash_iter_set_upper(it, NULL, 0), 0);
    stash_iter_seek(it, "\xff\x01", 2);
    assert_true(stash_iter_valid(it));
    assert_int_equal(stash_iter_set_upper(it, "", 0), -EINVAL);
    stash_iter_free(it);
    assert_int_equal(stash_close(db), 0);
}

/* Synced writes from many threads share fsyncs. */
static void *sync_writer(void *arg)
{
    struct conc *c = arg;
    for (int n = 0; n < 100; n++) {
        char k[32];
        snprintf(k, sizeof k, "s%d-%03d", c->id, n);
        stash_batch_t *b = stash_batch_new();
        stash_batch_put(b, k, strlen(k), "v", 1);
        int r = stash_write(c->db, b, STASH_SYNC);
        stash_batch_free(b);
        if (r)
            return (void *)1;
    }
    return NULL;
}

static void test_group_commit(void **state)
{
    (void)state;
    stash_t *db = open_db(NULL);
    pthread_t t[8];
    struct conc c[8];
    for (int i = 0; i < 8; i++) {
        c[i] = (struct conc){ db, i, NULL, 0 };
        pthread_create(&t[i], NULL, sync_writer, &c[i]);
    }
    for (int i = 0; i < 8; i++) {
        void *r;
        pthread_join(t[i], &r);
        assert_null(r);
    }
    char st[2048];
    stash_stats(db, st, sizeof st);
    unsigned long long writers = 0, groups = 0, syncs = 0;
    const char *p = strstr(st, "writes:");
    assert_non_null(p);
    assert_int_equal(sscanf(p, "writes: %llu writers in %llu commit groups, %llu fsyncs",
                            &writers, &groups, &syncs), 3);
    printf("800 synced writes from 8 threads: %llu commit groups, %llu fsyncs\n", groups, syncs);
    assert_true(writers >= 800);
    assert_true(syncs <= 800);
    assert_int_equal(stash_close(db), 0);
}

/* Options that make flushes and compactions happen with little data. */
static void small_tables(stash_options_t *o)
{
    stash_options_init(o);
    o->memtable_size = 64 << 10;
    o->target_file_size = 64 << 10;
    o->level1_max_bytes = 128 << 10;
    o->l0_compaction_trigger = 2;
    o->block_size = 1024;
    o->max_open_files = 3;   /* readers are closed and reopened all the time */
}

/* A level-0 table takes part in a range compaction when it overlaps the
 * tables the range chose, not only the range: left behind, the older table
 * {m: old, z} would shadow what the newer {a, m: deleted} moved to level 1
 * (found by the model test, seed 7). */
static void test_range_compaction_l0_overlap(void **state)
{
    (void)state;
    stash_options_t o;
    stash_options_init(&o);
    o.compaction_interval = 3600;
    stash_t *db = open_db(&o);
    put_s(db, "m", "old");
    put_s(db, "z", "1");
    assert_int_equal(stash_close(db), 0);      /* the memtable becomes a level-0 table */
    db = open_db(&o);
    put_s(db, "a", "1");
    assert_int_equal(stash_delete(db, "m", 1), 0);
    assert_int_equal(stash_close(db), 0);
    db = open_db(&o);
    char st[4096];
    assert_int_equal(stash_stats(db, st, sizeof st), 0);
    assert_non_null(strstr(st, "level 0:          2 tables"));
    assert_int_equal(stash_compact_range(db, "a", 1, "b", 1), 0);
    expect(db, NULL, "m", NULL);
    expect(db, NULL, "a", "1");
    expect(db, NULL, "z", "1");
    assert_int_equal(stash_close(db), 0);
    db = open_db(&o);
    expect(db, NULL, "m", NULL);
    assert_int_equal(stash_close(db), 0);
}

/* ---- randomized model test ---- */

enum { MKEYS = 300, MSNAPS = 4 };

struct model {
    char *val[MKEYS];      /* NULL = absent */
    size_t len[MKEYS];
};

static void model_set(struct model *m, int k, const char *v, size_t n)
{
    free(m->val[k]);
    m->val[k] = NULL;
    if (v) {
        m->val[k] = malloc(n ? n : 1);
        memcpy(m->val[k], v, n);
    }
    m->len[k] = n;
}

static void model_copy(struct model *dst, const struct model *src)
{
    for (int k = 0; k < MKEYS; k++)
        model_set(dst, k, src->val[k], src->len[k]);
}

static void model_free(struct model *m)
{
    for (int k = 0; k < MKEYS; k++)
        free(m->val[k]);
    memset(m, 0, sizeof *m);
}

static int mkey(char *buf, int k)
{
    return snprintf(buf, 16, "m%04d", k);
}

/* Compare the whole store (at S) with model M by a full scan and by gets. */
static void check_model(stash_t *db, const stash_snapshot_t *s, const struct model *m)
{
    stash_iter_t *it = stash_iter_new(db, s);
    stash_iter_seek_first(it);
    for (int k = 0; k < MKEYS; k++) {
        if (!m->val[k])
            continue;
        char key[16];
        int kl = mkey(key, k);
        assert_true(stash_iter_valid(it));
        size_t gkl, gvl;
        const void *gk = stash_iter_key(it, &gkl);
        const void *gv = stash_iter_value(it, &gvl);
        assert_int_equal(gkl, (size_t)kl);
        assert_memory_equal(gk, key, gkl);
        assert_int_equal(gvl, m->len[k]);
        if (gvl)
            assert_memory_equal(gv, m->val[k], gvl);
        stash_iter_next(it);
    }
    assert_false(stash_iter_valid(it));
    assert_int_equal(stash_iter_status(it), 0);
    stash_iter_free(it);
    for (int k = 0; k < MKEYS; k += 7) {
        char key[16];
        int kl = mkey(key, k);
        void *v;
        size_t vl;
        int rc = stash_get_at(db, s, key, (size_t)kl, &v, &vl);
        if (!m->val[k]) {
            assert_int_equal(rc, -ENOENT);
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(vl, m->len[k]);
            if (vl)
                assert_memory_equal(v, m->val[k], vl);
            stash_free(v);
        }
    }
}

static void test_model(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_db model", 20261124);
    stash_options_t o;
    small_tables(&o);
    stash_t *db = open_db(&o);
    static struct model cur, snapm[MSNAPS];
    stash_snapshot_t *snap[MSNAPS] = { 0 };
    char val[3000];
    int steps = 20000;
    for (int step = 0; step < steps; step++) {
        uint64_t r = tu_rand(&seed) % 1000;
        int k = (int)(tu_rand(&seed) % MKEYS);
        char key[16];
        int kl = mkey(key, k);
        if (r < 500) {                       /* put */
            size_t n = tu_rand(&seed) % (r < 10 ? sizeof val : 64);
            for (size_t i = 0; i < n; i++)
                val[i] = (char)('a' + (step + i) % 26);
            assert_int_equal(stash_put(db, key, (size_t)kl, val, n), 0);
            model_set(&cur, k, val, n);
        } else if (r < 700) {                /* delete */
            assert_int_equal(stash_delete(db, key, (size_t)kl), 0);
            model_set(&cur, k, NULL, 0);
        } else if (r < 850) {                /* batch */
            stash_batch_t *b = stash_batch_new();
            int n = 1 + (int)(tu_rand(&seed) % 20);
            for (int i = 0; i < n; i++) {
                int bk = (int)(tu_rand(&seed) % MKEYS);
                char bkey[16];
                int bkl = mkey(bkey, bk);
                if (tu_rand(&seed) % 3 == 0) {
                    stash_batch_delete(b, bkey, (size_t)bkl);
                    model_set(&cur, bk, NULL, 0);
                } else {
                    int vl = snprintf(val, sizeof val, "batch%d.%d", step, i);
                    stash_batch_put(b, bkey, (size_t)bkl, val, (size_t)vl);
                    model_set(&cur, bk, val, (size_t)vl);
                }
            }
            assert_int_equal(stash_write(db, b, tu_rand(&seed) % 4 == 0 ? STASH_SYNC : 0), 0);
            stash_batch_free(b);
        } else if (r < 900) {                /* take or drop a snapshot */
            int i = (int)(tu_rand(&seed) % MSNAPS);
            if (snap[i]) {
                check_model(db, snap[i], &snapm[i]);
                stash_snapshot_free(db, snap[i]);
                snap[i] = NULL;
            } else {
                snap[i] = stash_snapshot_new(db);
                model_copy(&snapm[i], &cur);
            }
        } else if (r < 915) {                /* a full comparison */
            check_model(db, NULL, &cur);
        } else if (r < 990) {                /* one key */
            void *v;
            size_t vl;
            int rc = stash_get(db, key, (size_t)kl, &v, &vl);
            if (!cur.val[k]) {
                assert_int_equal(rc, -ENOENT);
            } else {
                assert_int_equal(rc, 0);
                assert_int_equal(vl, cur.len[k]);
                if (vl)
                    assert_memory_equal(v, cur.val[k], vl);
                stash_free(v);
            }
        } else if (r < 995) {                /* compact a random range, or everything */
            int a = (int)(tu_rand(&seed) % MKEYS), b = a + (int)(tu_rand(&seed) % 100);
            char ka[16], kb[16];
            int la = mkey(ka, a), lb = mkey(kb, b);
            if (tu_rand(&seed) % 4 == 0)
                assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
            else
                assert_int_equal(stash_compact_range(db, ka, (size_t)la, kb, (size_t)lb), 0);
        } else {                             /* reopen (snapshots end with it) */
            for (int i = 0; i < MSNAPS; i++) {
                if (snap[i]) {
                    check_model(db, snap[i], &snapm[i]);
                    stash_snapshot_free(db, snap[i]);
                    snap[i] = NULL;
                }
            }
            assert_int_equal(stash_close(db), 0);
            db = open_db(&o);
            check_model(db, NULL, &cur);
        }
    }
    check_model(db, NULL, &cur);
    for (int i = 0; i < MSNAPS; i++) {
        if (snap[i])
            stash_snapshot_free(db, snap[i]);
        model_free(&snapm[i]);
    }
    model_free(&cur);
    assert_int_equal(stash_close(db), 0);
}

/* ---- tables ---- */

static long level_tables(stash_t *db, int level)
{
    char st[4096], want[32];
    stash_stats(db, st, sizeof st);
    snprintf(want, sizeof want, "level %d:", level);
    const char *p = strstr(st, want);
    assert_non_null(p);
    return strtol(p + strlen(want), NULL, 10);
}

static void test_compaction_drops_garbage(void **state)
{
    (void)state;
    stash_options_t o;
    small_tables(&o);
    stash_t *db = open_db(&o);
    char v[500];
    memset(v, 'v', sizeof v);
    for (int round = 0; round < 10; round++) {
        for (int i = 0; i < 500; i++) {
            char k[16];
            snprintf(k, sizeof k, "g%05d", i);
            assert_int_equal(stash_put(db, k, strlen(k), v, sizeof v), 0);
        }
    }
    for (int i = 0; i < 500; i += 2) {
        char k[16];
        snprintf(k, sizeof k, "g%05d", i);
        assert_int_equal(stash_delete(db, k, strlen(k)), 0);
    }
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    char st[4096];
    stash_stats(db, st, sizeof st);
    /* Ten versions of 500 keys and 250 deletions become 250 entries. */
    long entries = 0;
    for (const char *p = st; (p = strstr(p, "level ")); p++) {
        const char *e = strstr(p, "bytes, ");
        if (e && e - p < 80)
            entries += strtol(e + 7, NULL, 10);
    }
    assert_int_equal(entries, 250);
    assert_int_equal(level_tables(db, 0), 0);
    for (int i = 0; i < 500; i++) {
        char k[16];
        snprintf(k, sizeof k, "g%05d", i);
        void *got;
        size_t gl;
        assert_int_equal(stash_get(db, k, strlen(k), &got, &gl), i % 2 ? 0 : -ENOENT);
        if (i % 2)
            stash_free(got);
    }
    assert_int_equal(stash_close(db), 0);
}

/* Entries in all levels, from stash_counters. */
static uint64_t all_entries(stash_t *db)
{
    stash_counters_t c;
    stash_counters(db, &c);
    uint64_t n = 0;
    for (int l = 0; l < STASH_LEVELS; l++)
        n += c.level_entries[l];
    return n;
}

/* What only the deepest level holds goes too: versions a snapshot kept,
 * once it is released, and deletions with nothing beneath them (the
 * deepest level was never rewritten, so they stayed for good). */
static void test_compact_range_deepest(void **state)
{
    (void)state;
    stash_options_t o;
    small_tables(&o);
    stash_t *db = open_db(&o);
    char k[16], v[200];
    memset(v, 'v', sizeof v);
    for (int i = 0; i < 2000; i++) {
        snprintf(k, sizeof k, "d%05d", i);
        assert_int_equal(stash_put(db, k, strlen(k), v, sizeof v), 0);
    }
    assert_int_equal(stash_snapshot_create(db, "keep", NULL), 0);
    v[0] = 'w';
    for (int i = 0; i < 2000; i++) {
        snprintf(k, sizeof k, "d%05d", i);
        assert_int_equal(i % 4 ? stash_put(db, k, strlen(k), v, sizeof v) : stash_delete(db, k, strlen(k)), 0);
    }
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    assert_true(all_entries(db) >= 4000);      /* the snapshot sees every old one */
    assert_int_equal(stash_snapshot_delete(db, "keep"), 0);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    /* 1,500 live keys, and the engine's own few. */
    uint64_t n = all_entries(db);
    if (n < 1500 || n > 1510)
        fail_msg("%llu entries after the snapshot went", (unsigned long long)n);
    for (int i = 0; i < 2000; i++) {
        snprintf(k, sizeof k, "d%05d", i);
        void *got;
        size_t gl;
        assert_int_equal(stash_get(db, k, strlen(k), &got, &gl), i % 4 ? 0 : -ENOENT);
        if (i % 4) {
            assert_int_equal(((char *)got)[0], 'w');
            stash_free(got);
        }
    }
    assert_int_equal(stash_close(db), 0);
    db = open_db(&o);
    assert_int_equal(all_entries(db), n);
    assert_int_equal(stash_close(db), 0);
}

/* Make DIR/MANIFEST-NUM of the one edit record REC (N bytes), checksums
 * right, and CURRENT name it. */
static void write_manifest(uint64_t num, const uint8_t *rec, size_t n)
{
    wal_t *w;
    assert_int_equal(wal_create(dir, num, &w), 0);
    assert_int_equal(wal_append(w, rec, n), 0);
    assert_int_equal(wal_close(w), 0);
    char from[1024], to[1024], name[32];
    wal_path(from, sizeof from, dir, num);
    snprintf(name, sizeof name, "MANIFEST-%06llu", (unsigned long long)num);
    snprintf(to, sizeof to, "%s/%s", dir, name);
    assert_int_equal(rename(from, to), 0);
    snprintf(to, sizeof to, "%s/CURRENT", dir);
    FILE *f = fopen(to, "w");
    assert_non_null(f);
    fprintf(f, "%s\n", name);
    assert_int_equal(fclose(f), 0);
}

/* A store whose MANIFEST says LAST was the last sequence number used, and
 * names no table. */
static void manifest_with_seq(uint64_t last)
{
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    assert_int_equal(system(cmd), 0);
    uint8_t rec[64], *q = rec;
    *q++ = 1;                                   /* the edit format */
    *q++ = 1; q += enc_varint(q, 1);            /* log number */
    *q++ = 2; q += enc_varint(q, 10);           /* next file */
    *q++ = 3; q += enc_varint(q, last);         /* last sequence */
    write_manifest(5, rec, (size_t)(q - rec));
}

/* A last sequence number no write can have is damage (the store aborted
 * at its first write, or wrapped to 0 and lost it); at the last one a
 * store has, writes fail with a message and lose nothing. */
static void test_sequence_range(void **state)
{
    (void)state;
    stash_t *db = NULL;
    manifest_with_seq(UINT64_MAX);
    assert_int_equal(stash_open(dir, NULL, &db), -EIO);
    assert_non_null(strstr(stash_last_error(NULL), "MANIFEST"));
    manifest_with_seq((UINT64_C(1) << 56));
    assert_int_equal(stash_open(dir, NULL, &db), -EIO);
    manifest_with_seq((UINT64_C(1) << 56) - 2);
    db = open_db(NULL);
    put_s(db, "a", "1");                        /* the last number there is */
    assert_int_equal(stash_put(db, "b", 1, "2", 1), -EOVERFLOW);
    assert_non_null(strstr(stash_last_error(db), "sequence numbers"));
    assert_int_equal(stash_close(db), 0);
    db = open_db(NULL);
    void *v;
    size_t vl;
    assert_int_equal(stash_get(db, "a", 1, &v, &vl), 0);
    stash_free(v);
    assert_int_equal(stash_get(db, "b", 1, &v, &vl), -ENOENT);
    assert_int_equal(stash_close(db), 0);
}

/* A scan started before a compaction returns exactly its snapshot. */
static void test_iterator_stability(void **state)
{
    (void)state;
    stash_options_t o;
    small_tables(&o);
    stash_t *db = open_db(&o);
    char v[300];
    for (int i = 0; i < 2000; i++) {
        char k[16];
        snprintf(k, sizeof k, "s%05d", i);
        memset(v, 'a' + i % 26, sizeof v);
        assert_int_equal(stash_put(db, k, strlen(k), v, sizeof v), 0);
    }
    stash_iter_t *it = stash_iter_new(db, NULL);
    stash_iter_seek_first(it);
    int n = 0;
    for (; n < 500 && stash_iter_valid(it); n++)
        stash_iter_next(it);
    /* Rewrite and delete everything, and compact it all away. */
    for (int i = 0; i < 2000; i++) {
        char k[16];
        snprintf(k, sizeof k, "s%05d", i);
        if (i % 3)
            assert_int_equal(stash_put(db, k, strlen(k), "new", 3), 0);
        else
            assert_int_equal(stash_delete(db, k, strlen(k)), 0);
    }
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    for (; stash_iter_valid(it); stash_iter_next(it), n++) {
        size_t kl, vl;
        const char *k = stash_iter_key(it, &kl);
        const char *val = stash_iter_value(it, &vl);
        char want[16];
        snprintf(want, sizeof want, "s%05d", n);
        assert_int_equal(kl, strlen(want));
        assert_memory_equal(k, want, kl);
        assert_int_equal(vl, sizeof v);
        assert_int_equal(val[0], 'a' + n % 26);
    }
    assert_int_equal(n, 2000);
    assert_int_equal(stash_iter_status(it), 0);
    stash_iter_free(it);
    assert_int_equal(stash_close(db), 0);
}

/* Find a table file of the store (the largest one). */
static void some_table(char *path, size_t len)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "ls -S %s/*.sst | head -n 1", dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(path, (int)len, p));
    path[strcspn(path, "\n")] = '\0';
    pclose(p);
}

/* Footer field FIELD (u64 number FIELD of its 64 bytes) of table PATH. */
static uint64_t footer_field(const char *path, int field)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat st;
    fstat(fd, &st);
    unsigned char f[8];
    assert_int_equal(pread(fd, f, 8, st.st_size - 64 + field * 8), 8);
    close(fd);
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | f[i];
    return v;
}

/* Compaction writes compressed tables with their own dictionary (format
 * version 3, the dictionary named by the properties); they read back whole after a reopen, and a damaged
 * dictionary fails the reads of its table with -EIO, never wrong data. */
static void test_dictionary_tables(void **state)
{
    (void)state;
    stash_options_t o;
    stash_options_init(&o);
    o.block_cache_size = 0;
    stash_t *db = open_db(&o);
    char v[120];
    for (int i = 0; i < 20000; i++) {
        char k[16];
        snprintf(k, sizeof k, "d%06d", i);
        snprintf(v, sizeof v, "value %d of the dictionary test, %d %d %d", i, i % 7, i % 13, i * 31);
        assert_int_equal(stash_put(db, k, strlen(k), v, strlen(v)), 0);
    }
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    assert_int_equal(stash_close(db), 0);
    char path[1024];
    some_table(path, sizeof path);
    assert_int_equal(footer_field(path, 6) & 0xffffffff, 3);   /* format version */
    sst_reader_t *r;
    uint64_t dsize = 0;
    assert_int_equal(sst_open(path, 1, NULL, NULL, &r), 0);
    assert_int_equal(sst_prop(r, "dict_size", &dsize), 0);
    assert_true(dsize > 0);
    sst_close(r);

    db = open_db(&o);
    stash_iter_t *it = stash_iter_new(db, NULL);
    int n = 0;
    for (stash_iter_seek_first(it); stash_iter_valid(it); stash_iter_next(it), n++) {
        char k[16];
        size_t kl, vl;
        snprintf(k, sizeof k, "d%06d", n);
        snprintf(v, sizeof v, "value %d of the dictionary test, %d %d %d", n, n % 7, n % 13, n * 31);
        const void *kk = stash_iter_key(it, &kl);
        const void *vv = stash_iter_value(it, &vl);
        assert_int_equal(kl, strlen(k));
        assert_memory_equal(kk, k, kl);
        assert_int_equal(vl, strlen(v));
        assert_memory_equal(vv, v, vl);
    }
    assert_int_equal(stash_iter_status(it), 0);
    assert_int_equal(n, 20000);
    stash_iter_free(it);
    assert_int_equal(stash_close(db), 0);

    int fd = open(path, O_RDWR);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, 3), 1);   /* the dictionary comes first */
    c ^= 0x40;
    assert_int_equal(pwrite(fd, &c, 1, 3), 1);
    close(fd);
    db = open_db(&o);
    void *got;
    size_t gl;
    assert_int_equal(stash_get(db, "d000123", 7, &got, &gl), -EIO);
    assert_non_null(strstr(stash_last_error(db), "checksum"));
    assert_non_null(strstr(stash_last_error(db), strrchr(path, '/') + 1));
    assert_int_equal(stash_put(db, "e", 1, "x", 1), 0);
    assert_int_equal(stash_get(db, "e", 1, &got, &gl), 0);
    stash_free(got);
    assert_int_equal(stash_close(db), 0);
}

/* A store written by the previous table format (version 2: a dictionary,
 * index entries of the last key and a 16-byte handle) opens and reads back
 * whole; a compaction rewrites it as version 3, which reads the same.  The
 * store in tests/data/format2 holds "k00000".."k03999", each value
 * "value NNNNN " repeated to 200 bytes, with every seventh key deleted. */
static void check_format2(stash_t *db)
{
    for (int i = 0; i < 4000; i++) {
        char k[16], want[256];
        snprintf(k, sizeof k, "k%05d", i);
        int n = 0;
        while (n < 200)
            n += snprintf(want + n, sizeof want - (size_t)n, "value %05d ", i);
        void *got = NULL;
        size_t gl = 0;
        int rc = stash_get(db, k, strlen(k), &got, &gl);
        if (i % 7 == 0) {
            assert_int_equal(rc, -ENOENT);
            continue;
        }
        assert_int_equal(rc, 0);
        assert_int_equal(gl, 200);
        assert_memory_equal(got, want, 200);
        stash_free(got);
    }
}

static void test_format2_tables(void **state)
{
    (void)state;
    char cmd[1200], path[1024];
    snprintf(cmd, sizeof cmd, "cp tests/data/format2/* '%s'/", dir);
    if (system(cmd) != 0)
        fail_msg("cannot copy tests/data/format2 (run from the source tree)");
    snprintf(path, sizeof path, "%s/000006.sst", dir);
    assert_int_equal(footer_field(path, 6) & 0xffffffff, 2);
    stash_options_t o;
    stash_options_init(&o);
    stash_t *db = open_db(&o);
    check_format2(db);
    /* A key rewritten: the compaction merges, rather than moves, the table. */
    char v[256];
    int n = 0;
    while (n < 200)
        n += snprintf(v + n, sizeof v - (size_t)n, "value %05d ", 1);
    assert_int_equal(stash_put(db, "k00001", 6, v, 200), 0);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    check_format2(db);
    assert_int_equal(stash_close(db), 0);
    some_table(path, sizeof path);
    assert_int_equal(footer_field(path, 6) & 0xffffffff, 3);
    db = open_db(&o);
    check_format2(db);
    assert_int_equal(stash_close(db), 0);
}

static void flip_at(const char *path, off_t at)
{
    int fd = open(path, O_RDWR);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, at), 1);
    c ^= 0x10;
    assert_int_equal(pwrite(fd, &c, 1, at), 1);
    close(fd);
}

/* A byte flipped in a table's filter, properties or index block or in its
 * footer: the store still opens (the MANIFEST gives every table's key
 * range), reads that need that table fail with -EIO, every other key
 * reads right, and writes go on. */
static void test_damaged_table_meta(void **state)
{
    (void)state;
    stash_options_t o;
    small_tables(&o);
    o.block_cache_size = 0;
    stash_t *db = open_db(&o);
    put_marked(db, "m%05d", 3000, 200);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    assert_true(level_tables(db, 1) > 3);
    assert_int_equal(stash_close(db), 0);
    char path[1024];
    some_table(path, sizeof path);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    off_t spots[4] = {
        (off_t)footer_field(path, 0) + 3,    /* filter */
        (off_t)footer_field(path, 2) + 3,    /* properties */
        (off_t)footer_field(path, 4) + 3,    /* index */
        st.st_size - 1,                      /* footer (magic) */
    };
    for (int s = 0; s < 4; s++) {
        flip_at(path, spots[s]);
        db = open_db(&o);
        int bad, good = read_damaged(db, "m%05d", 3000, 200, &bad);
        if (s > 0 || bad)   /* a damaged filter may still answer "maybe" for every key */
            assert_true(bad > 0);
        assert_true(good > 2000);
        assert_int_equal(stash_put(db, "zz", 2, "x", 1), 0);
        assert_int_equal(stash_close(db), 0);
        flip_at(path, spots[s]);
    }
}

/* A MANIFEST that adds tables by number only (tag 4, as stores wrote
 * before the key range went into the edit, tag 6): the open reads each
 * table's range from the table itself, and the MANIFEST it writes then
 * carries the ranges. */
static void test_manifest_without_ranges(void **state)
{
    (void)state;
    stash_options_t o;
    small_tables(&o);
    stash_t *db = open_db(&o);
    put_marked(db, "r%05d", 3000, 200);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    int level = 1;
    while (level < 7 && level_tables(db, level) == 0)
        level++;
    long ntables = level_tables(db, level);
    assert_true(ntables > 1);
    for (int l = 0; l < 7; l++)
        assert_true(l == level || level_tables(db, l) == 0);
    assert_int_equal(stash_close(db), 0);

    uint8_t rec[4096];
    size_t n = 0;
    rec[n++] = 1;                                   /* edit format */
    rec[n++] = 1; n += enc_varint(rec + n, 9000);   /* log number */
    rec[n++] = 2; n += enc_varint(rec + n, 9001);   /* next file */
    rec[n++] = 3; n += enc_varint(rec + n, 100000); /* last sequence */
    DIR *d = opendir(dir);
    assert_non_null(d);
    long found = 0;
    for (struct dirent *de; (de = readdir(d));) {
        unsigned long long num;
        char tail[8];
        if (sscanf(de->d_name, "%llu.%7s", &num, tail) != 2 || strcmp(tail, "sst"))
            continue;
        char path[1024];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        assert_int_equal(stat(path, &st), 0);
        rec[n++] = 4;
        n += enc_varint(rec + n, (uint64_t)level);
        n += enc_varint(rec + n, num);
        n += enc_varint(rec + n, (uint64_t)st.st_size);
        found++;
    }
    closedir(d);
    assert_int_equal(found, ntables);
    write_manifest(9000, rec, n);

    for (int round = 0; round < 2; round++) {
        db = open_db(&o);
        assert_int_equal(level_tables(db, level), ntables);
        check_marked(db, "r%05d", 3000, 200, 26);
        assert_int_equal(stash_close(db), 0);
    }

    /* A tag-6 edit whose key runs past the record (checksum right, contents
     * wrong) fails the open with a message naming the MANIFEST. */
    n = 0;
    rec[n++] = 1;
    rec[n++] = 2; n += enc_varint(rec + n, 9201);
    rec[n++] = 6;
    n += enc_varint(rec + n, 1);       /* level */
    n += enc_varint(rec + n, 9150);    /* number */
    n += enc_varint(rec + n, 4096);    /* size */
    n += enc_varint(rec + n, 10);      /* entries */
    n += enc_varint(rec + n, 200);     /* smallest: 200 bytes, of which 3 follow */
    memcpy(rec + n, "abc", 3);
    n += 3;
    write_manifest(9200, rec, n);
    db = NULL;
    assert_int_equal(stash_open(dir, &o, &db), -EIO);
    assert_null(db);
    assert_non_null(strstr(stash_last_error(NULL), "MANIFEST-009200"));
    assert_non_null(strstr(stash_last_error(NULL), "malformed"));
}

static void test_table_corruption(void **state)
{
    (void)state;
    stash_options_t o;
    small_tables(&o);
    o.compression_level = 0;
    o.block_cache_size = 0;
    stash_t *db = open_db(&o);
    put_marked(db, "c%05d", 3000, 200);
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    assert_int_equal(stash_close(db), 0);

    char path[1024];
    some_table(path, sizeof path);
    int fd = open(path, O_RDWR);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, 500), 1);   /* inside the first data block */
    c ^= 0x20;
    assert_int_equal(pwrite(fd, &c, 1, 500), 1);
    close(fd);

    db = open_db(&o);
    int bad, good = read_damaged(db, "c%05d", 3000, 200, &bad);
    assert_true(bad > 0 && bad < 100);
    assert_true(good > 2800);
    assert_non_null(strstr(stash_last_error(db), "checksum"));
    stash_iter_t *it = stash_iter_new(db, NULL);
    for (stash_iter_seek_first(it); stash_iter_valid(it); stash_iter_next(it))
        ;
    assert_int_equal(stash_iter_status(it), -EIO);
    stash_iter_free(it);
    assert_int_equal(stash_close(db), 0);

    /* A table the MANIFEST names is missing: the store does not open. */
    assert_int_equal(unlink(path), 0);
    stash_t *none = NULL;
    assert_int_equal(stash_open(dir, &o, &none), -EIO);
    assert_null(none);
    assert_non_null(strstr(stash_last_error(NULL), "missing"));
    assert_non_null(strstr(stash_last_error(NULL), ".sst"));
}

static void test_manifest_damage(void **state)
{
    (void)state;
    stash_t *db = open_db(NULL);
    put_s(db, "k", "v");
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    assert_int_equal(stash_close(db), 0);
    char cur[700];
    snprintf(cur, sizeof cur, "%s/CURRENT", dir);
    FILE *f = fopen(cur, "w");
    fputs("garbage\n", f);
    fclose(f);
    stash_t *none = NULL;
    assert_int_equal(stash_open(dir, NULL, &none), -EIO);
    assert_non_null(strstr(stash_last_error(NULL), "CURRENT"));
}

/* The names of the store's files, sorted, one per line, into OUT. */
static void list_dir(char *out, size_t cap)
{
    char cmd[800];
    snprintf(cmd, sizeof cmd, "ls %s | sort", dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    pclose(p);
}

/* A lost CURRENT does not make a new, empty store over the tables (which
 * open would then delete as strays): open fails and changes nothing. */
static void test_current_missing(void **state)
{
    (void)state;
    stash_t *db = open_db(NULL);
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%03d", i);
        put_s(db, k, "value");
    }
    assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    assert_int_equal(stash_close(db), 0);
    char cur[700], before[4096], after[4096];
    snprintf(cur, sizeof cur, "%s/CURRENT", dir);
    assert_int_equal(unlink(cur), 0);
    list_dir(before, sizeof before);
    stash_t *none = NULL;
    assert_int_equal(stash_open(dir, NULL, &none), -EIO);
    assert_null(none);
    assert_non_null(strstr(stash_last_error(NULL), "CURRENT is missing"));
    list_dir(after, sizeof after);
    assert_string_equal(before, after);
}

/* Whether all keys m0000..m(N-1) hold 1000 bytes of 'm'. */
static int all_m(stash_t *db, int n)
{
    for (int i = 0; i < n; i++) {
        char k[16];
        snprintf(k, sizeof k, "m%04d", i);
        void *got;
        size_t gl;
        if (stash_get(db, k, strlen(k), &got, &gl) != 0)
            return 0;
        stash_free(got);
        if (gl != 1000)
            return 0;
    }
    return 1;
}

static void put_m(stash_t *db, int from, int to)
{
    char v[1000];
    memset(v, 'm', sizeof v);
    for (int i = from; i < to; i++) {
        char k[16];
        snprintf(k, sizeof k, "m%04d", i);
        assert_int_equal(stash_put(db, k, strlen(k), v, sizeof v), 0);
    }
}

/* The path of the MANIFEST that CURRENT names, into MP. */
static void current_manifest(char *mp, size_t cap)
{
    char cur[700], body[64] = "";
    snprintf(cur, sizeof cur, "%s/CURRENT", dir);
    FILE *f = fopen(cur, "r");
    assert_non_null(f);
    assert_non_null(fgets(body, sizeof body, f));
    fclose(f);
    body[strcspn(body, "\n")] = '\0';
    snprintf(mp, cap, "%s/%s", dir, body);
}

/*
 * The MANIFEST's last record.  Cut short, as a crash while writing it
 * leaves it: it is dropped and the store opens whole (the logs that record
 * would have let go are still there).  Damaged after it was acted on (a
 * flush's record, whose log is gone since): either open fails and changes
 * nothing, or it opens with everything (dropping the record, and deleting
 * the table it added, lost 62 of 400 keys before).
 */
static void test_manifest_tail(void **state)
{
    (void)state;
    stash_options_t o;
    stash_options_init(&o);
    o.memtable_size = 64 << 10;
    o.compaction_interval = 3600;
    stash_t *db = open_db(&o);
    put_m(db, 0, 300);
    assert_int_equal(stash_close(db), 0);
    char mp[700];
    current_manifest(mp, sizeof mp);

    /* A torn append: part of a record's header at the end. */
    int fd = open(mp, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "\x12\x34\x56", 3), 3);
    close(fd);
    db = open_db(&o);
    assert_true(all_m(db, 300));
    /* A flush in the background is the MANIFEST's last record. */
    put_m(db, 300, 400);
    struct timespec t = { 0, 300 * 1000 * 1000 };
    nanosleep(&t, NULL);
    assert_int_equal(stash_close(db), 0);

    current_manifest(mp, sizeof mp);
    struct stat st;
    assert_int_equal(stat(mp, &st), 0);
    fd = open(mp, O_RDWR);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, st.st_size - 3), 1);
    c ^= 0x10;
    assert_int_equal(pwrite(fd, &c, 1, st.st_size - 3), 1);
    close(fd);
    char before[4096], after[4096];
    list_dir(before, sizeof before);
    stash_t *db2 = NULL;
    int rc = stash_open(dir, &o, &db2);
    if (rc == 0) {
        assert_true(all_m(db2, 400));
        assert_int_equal(stash_close(db2), 0);
    } else {
        assert_int_equal(rc, -EIO);
        assert_non_null(strstr(stash_last_error(NULL), "damaged record"));
        list_dir(after, sizeof after);
        assert_string_equal(before, after);
    }
}

/*
 * A range compaction of a level with many tables goes in pieces (at most 64
 * tables at a time, with what they overlap below: one compaction of a whole
 * large level failed for good once it passed 1,024 tables), all of them,
 * and the store reads the same after it: overwrites and deletions win,
 * nothing else changes.
 */
static void test_range_compaction_pieces(void **state)
{
    (void)state;
    stash_options_t o;
    stash_options_init(&o);
    o.memtable_size = 256 << 10;
    o.target_file_size = 64 << 10;
    o.level1_max_bytes = 64 << 10;       /* levels 1, 2, 3 all used */
    o.compression_level = 0;
    o.compaction_interval = 3600;
    stash_t *db = open_db(&o);
    char v[1000];
    uint64_t rs = 99;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 9000; i++) {
            if (round == 1 && i % 3)
                continue;
            char k[16];
            snprintf(k, sizeof k, "r%05d", i);
            for (size_t j = 0; j < sizeof v; j++)
                v[j] = (char)(tu_rand(&rs) >> 56);
            v[0] = (char)('a' + round);
            if (round == 1 && i % 2)
                assert_int_equal(stash_delete(db, k, strlen(k)), 0);
            else
                assert_int_equal(stash_put(db, k, strlen(k), v, sizeof v), 0);
        }
        assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
    }
    /* Before the second range, level 3 held over 100 tables and level 4
     * some: it went down in pieces, all of them (none is left behind). */
    char st[8192];
    assert_int_equal(stash_stats(db, st, sizeof st), 0);
    int above = 0;
    for (int l = 0; l < 4; l++) {
        char name[32];
        int n = -1;
        snprintf(name, sizeof name, "level %d:", l);
        const char *c = strstr(st, name);
        assert_non_null(c);
        assert_int_equal(sscanf(c + strlen(name), " %d tables", &n), 1);
        above += n;
    }
    if (above)
        printf("%s", st);
    assert_int_equal(above, 0);
    for (int i = 0; i < 9000; i++) {
        char k[16];
        snprintf(k, sizeof k, "r%05d", i);
        void *got = NULL;
        size_t gl;
        int rc = stash_get(db, k, strlen(k), &got, &gl);
        if (i % 3 == 0 && i % 2) {
            assert_int_equal(rc, -ENOENT);
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(gl, sizeof v);
            assert_int_equal(((char *)got)[0], i % 3 == 0 ? 'b' : 'a');
            stash_free(got);
        }
    }
    assert_int_equal(stash_close(db), 0);
}

/* ---- backup ---- */

struct bwriter {
    stash_t *db;
    atomic_int stop;
    atomic_long acked;
};

/* Writes pairs p<i>a / p<i>b in one batch each, counting acknowledgements. */
static void *backup_writer(void *arg)
{
    struct bwriter *w = arg;
    char v[200];
    memset(v, 'w', sizeof v);
    for (long i = 0; !atomic_load(&w->stop); i++) {
        char a[32], b[32];
        snprintf(a, sizeof a, "p%08lda", i);
        snprintf(b, sizeof b, "p%08ldb", i);
        stash_batch_t *bt = stash_batch_new();
        stash_batch_put(bt, a, strlen(a), v, sizeof v);
        stash_batch_put(bt, b, strlen(b), v, sizeof v);
        int rc = stash_write(w->db, bt, 0);
        stash_batch_free(bt);
        if (rc)
            return (void *)1;
        atomic_store(&w->acked, i + 1);
    }
    return NULL;
}

/* Open the backup at PATH: every pair below ACKED is there, and every pair
 * present is whole and a prefix of the sequence. */
static void check_backup(const char *path, long acked)
{
    stash_t *b = NULL;
    stash_options_t o;
    small_tables(&o);
    int rc = stash_open(path, &o, &b);
    if (rc)
        fprintf(stderr, "backup open: %s\n", stash_last_error(NULL));
    assert_int_equal(rc, 0);
    stash_iter_t *it = stash_iter_new(b, NULL);
    long pairs = 0;
    for (stash_iter_seek(it, "p", 1); stash_iter_valid(it); stash_iter_next(it)) {
        size_t kl;
        const char *k = stash_iter_key(it, &kl);
        char want[32];
        snprintf(want, sizeof want, "p%08lda", pairs);
        assert_int_equal(kl, strlen(want));
        assert_memory_equal(k, want, kl);
        stash_iter_next(it);
        assert_true(stash_iter_valid(it));   /* never half a batch */
        k = stash_iter_key(it, &kl);
        want[strlen(want) - 1] = 'b';
        assert_memory_equal(k, want, kl);
        pairs++;
    }
    assert_int_equal(stash_iter_status(it), 0);
    stash_iter_free(it);
    printf("backup holds %ld pairs (%ld acknowledged before it began)\n", pairs, acked);
    assert_true(pairs >= acked);
    assert_int_equal(stash_close(b), 0);
}

static void test_backup(void **state)
{
    (void)state;
    stash_options_t o;
    small_tables(&o);
    stash_t *db = open_db(&o);
    struct bwriter w = { .db = db };
    pthread_t t;
    pthread_create(&t, NULL, backup_writer, &w);
    while (atomic_load(&w.acked) < 3000)
        usleep(1000);
    long before = atomic_load(&w.acked);
    char dest[700];
    snprintf(dest, sizeof dest, "%s/backup", dir);
    assert_int_equal(stash_backup(db, dest), 0);
    /* A second backup into the same place is refused. */
    assert_int_equal(stash_backup(db, dest), -EEXIST);
    /* Across filesystems the tables are copied. */
    char mnt[600], dest2[700];
    snprintf(mnt, sizeof mnt, "%s/small", dir);
    snprintf(dest2, sizeof dest2, "%s/backup", mnt);
    mkdir(mnt, 0755);
    int have_tmpfs = mount("tmpfs", mnt, "tmpfs", 0, "size=64m") == 0;
    long before2 = atomic_load(&w.acked);
    if (have_tmpfs)
        assert_int_equal(stash_backup(db, dest2), 0);
    atomic_store(&w.stop, 1);
    void *r;
    pthread_join(t, &r);
    assert_null(r);
    assert_int_equal(stash_close(db), 0);
    check_backup(dest, before);
    if (have_tmpfs)
        check_backup(dest2, before2);
}

/* The one table of store SUB (a directory under the test's), by name. */
static void one_table(const char *sub, char *out, size_t cap)
{
    char d[PATH_MAX];
    snprintf(d, sizeof d, "%s/%s", dir, sub);
    DIR *dp = opendir(d);
    struct dirent *de;
    *out = 0;
    while (dp && (de = readdir(dp)))
        if (strlen(de->d_name) > 4 && !strcmp(de->d_name + strlen(de->d_name) - 4, ".sst"))
            snprintf(out, cap, "%s/%s", d, de->d_name);
    if (dp)
        closedir(dp);
    assert_true(*out);
}

/*
 * A table file replaced by another's (copied over from a store of the same
 * shape, the same number): reads of it fail with -EIO naming it, and never
 * return the other store's values.
 */
static void test_swapped_table(void **state)
{
    (void)state;
    const char *subs[2] = { "x", "y" };
    char tables[2][PATH_MAX + 300];
    for (int s = 0; s < 2; s++) {
        char d[PATH_MAX];
        snprintf(d, sizeof d, "%s/%s", dir, subs[s]);
        stash_t *db = NULL;
        assert_int_equal(stash_open(d, NULL, &db), 0);
        for (int i = 0; i < 30; i++) {
            char k[16], v[32];
            snprintf(k, sizeof k, "k%02d", i);
            snprintf(v, sizeof v, s ? "other-%d-longer" : "value-%d", i);
            assert_int_equal(stash_put(db, k, strlen(k), v, strlen(v)), 0);
        }
        assert_int_equal(stash_compact_range(db, NULL, 0, NULL, 0), 0);
        assert_int_equal(stash_close(db), 0);
        one_table(subs[s], tables[s], sizeof tables[s]);
    }
    char d[PATH_MAX];
    snprintf(d, sizeof d, "%s/x", dir);
    unlink(tables[0]);
    assert_int_equal(link(tables[1], tables[0]), 0);
    stash_t *db = NULL;
    assert_int_equal(stash_open(d, NULL, &db), 0);
    void *v;
    size_t vl;
    assert_int_equal(stash_get(db, "k05", 3, &v, &vl), -EIO);
    assert_non_null(strstr(stash_last_error(db), ".sst"));
    assert_int_equal(stash_close(db), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_get_delete, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_keeps_everything, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_values, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_flush_drops_hidden, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshots, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_iterator, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_logs_recover, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_replayed_whole, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_and_corruption, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_empty_logs, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only_and_missing, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_full, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_full_tables, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_full_values, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_compaction, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_link_writers, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_iterator_bound, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_model, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_drops_garbage, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_compact_range_deepest, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_sequence_range, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_iterator_stability, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_dictionary_tables, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_format2_tables, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_range_compaction_l0_overlap, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_table_meta, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_manifest_without_ranges, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_table_corruption, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_manifest_damage, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_current_missing, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_manifest_tail, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_range_compaction_pieces, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_backup, tu_setup, teardown),
        cmocka_unit_test_setup_teardown(test_swapped_table, tu_setup, teardown),
    };
    tu_filter();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
