/*
 * test_wal.c - the write-ahead log: CRC32C, round trips of records from 0
 * bytes to 1 MiB, a torn tail at every byte offset of the last record,
 * flipped bytes anywhere, zeroed tails, zeros written ahead (and appends
 * through their mapping surviving a kill -9), bad headers.
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>

#include "crc32c.h"
#include "err.h"
#include "wal.h"


/* What a replay handed back. */
struct got {
    int n;
    size_t len[1024];
    uint32_t crc[1024];
    uint64_t off[1024];
};

static int collect(void *arg, const void *rec, size_t len, uint64_t off)
{
    struct got *g = arg;
    if (g->n >= 1024)
        return -E2BIG;
    g->len[g->n] = len;
    g->crc[g->n] = crc32c(rec, len);
    g->off[g->n] = off;
    g->n++;
    return 0;
}

struct recs {
    int n;
    size_t len[1024];
    uint32_t crc[1024];
    uint64_t end[1024];     /* file size after record i */
};

static void fill(unsigned char *p, size_t n, uint64_t *s)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(tu_rand(s) >> 56);
}

/* Append LEN bytes of BUF to W, which must take them, and note the record in R. */
static void append_noted(wal_t *w, const unsigned char *buf, size_t len, struct recs *r)
{
    assert_int_equal(wal_append(w, buf, len), 0);
    r->len[r->n] = len;
    r->crc[r->n] = crc32c(buf, len);
    r->end[r->n] = wal_size(w);
    r->n++;
}

/* Write records of the given lengths to log LOGNUM; remember what went in. */
static void write_log(uint64_t lognum, const size_t *lens, int n, struct recs *r, uint64_t *seed)
{
    wal_t *w;
    assert_int_equal(wal_create(dir, lognum, &w), 0);
    unsigned char *buf = malloc(1u << 20);
    for (int i = 0; i < n; i++) {
        fill(buf, lens[i], seed);
        append_noted(w, buf, lens[i], r);
    }
    assert_true(wal_dirty(w) || n == 0);
    assert_int_equal(wal_sync(w), 0);
    assert_false(wal_dirty(w));
    assert_int_equal(wal_number(w), lognum);
    assert_int_equal(wal_close(w), 0);
    free(buf);
}

static void check_prefix(const struct got *g, const struct recs *r, int n)
{
    assert_int_equal(g->n, n);
    for (int i = 0; i < n; i++) {
        assert_int_equal(g->len[i], r->len[i]);
        assert_int_equal(g->crc[i], r->crc[i]);
        if (i)
            assert_true(g->off[i] > g->off[i - 1]);
    }
}

static void logpath(char *p, size_t n, uint64_t num)
{
    wal_path(p, n, dir, num);
}

static void test_crc32c(void **state)
{
    (void)state;
    assert_int_equal(crc32c("123456789", 9), 0xE3069283u);
    unsigned char z[32] = { 0 };
    assert_int_equal(crc32c(z, 32), 0x8A9136AAu);
    assert_int_equal(crc32c_extend(crc32c("1234", 4), "56789", 5), 0xE3069283u);
    uint64_t s = tu_seed("test_wal crc", 1234);
    unsigned char *buf = malloc(70000);
    fill(buf, 70000, &s);
    for (int i = 0; i < 500; i++) {
        size_t off = tu_rand(&s) % 64, len = tu_rand(&s) % (i < 400 ? 100 : 65000);
        assert_int_equal(crc32c_extend(7, buf + off, len), crc32c_sw(7, buf + off, len));
    }
    /* Every length around the three-lane runs of the hardware version. */
    for (size_t len = 700; len < 2400; len++)
        assert_int_equal(crc32c_extend(0xdeadbeef, buf + len % 13, len),
                         crc32c_sw(0xdeadbeef, buf + len % 13, len));
    free(buf);
}

static void test_round_trip(void **state)
{
    (void)state;
    uint64_t s = tu_seed("test_wal round trip", 99);
    size_t lens[300];
    for (int i = 0; i < 300; i++) {
        uint64_t r = tu_rand(&s) % 100;
        lens[i] = r < 70 ? tu_rand(&s) % 200            /* small */
                : r < 95 ? tu_rand(&s) % 70000          /* crossing blocks */
                         : (1u << 20) - tu_rand(&s) % 1000; /* near 1 MiB */
    }
    lens[0] = 0;
    lens[1] = WAL_BLOCK_SIZE - 7 - 7 - 27;  /* exactly fills the first block */
    lens[2] = 0;
    static struct recs r;
    r.n = 0;
    write_log(5, lens, 300, &r, &s);
    char p[600];
    logpath(p, sizeof p, 5);
    static struct got g;
    g.n = 0;
    uint64_t end = 0;
    int rc = wal_replay(p, 5, 0, collect, &g, &end);
    if (rc)
        fprintf(stderr, "replay: %s\n", err_get());
    assert_int_equal(rc, 0);
    check_prefix(&g, &r, 300);
    assert_int_equal(end, r.end[299]);
    /* Replaying with the wrong log number fails: every CRC binds the number. */
    g.n = 0;
    assert_int_equal(wal_replay(p, 6, WAL_NEWEST, collect, &g, NULL), -EIO);
    assert_int_equal(g.n, 0);
    /* A callback's error stops the replay. */
    assert_int_equal(wal_replay(p, 5, 0, NULL, NULL, NULL), 0);
}

/* Syncs between records put SYNCED fragments in the log, at every place in
 * a block (never split across two): replay hands back exactly the records. */
static void test_round_trip_synced(void **state)
{
    (void)state;
    uint64_t s = tu_seed("test_wal synced round trip", 7);
    wal_t *w;
    assert_int_equal(wal_create(dir, 54, &w), 0);
    static struct recs r;
    r.n = 0;
    unsigned char buf[300];
    for (int i = 0; i < 1000; i++) {
        size_t len = tu_rand(&s) % 300;
        fill(buf, len, &s);
        append_noted(w, buf, len, &r);
        if (tu_rand(&s) % 3 == 0)
            assert_int_equal(wal_sync(w), 0);
    }
    assert_int_equal(wal_sync(w), 0);
    assert_int_equal(wal_close(w), 0);
    char p[600];
    logpath(p, sizeof p, 54);
    static struct got g;
    g.n = 0;
    assert_int_equal(wal_replay(p, 54, WAL_NEWEST, collect, &g, NULL), 0);
    check_prefix(&g, &r, r.n);

    /* A sync that leaves 10 bytes of a block: no room for the fragment. */
    assert_int_equal(wal_create(dir, 55, &w), 0);
    r.n = 0;
    static unsigned char big[WAL_BLOCK_SIZE];
    fill(big, sizeof big, &s);
    append_noted(w, big, WAL_BLOCK_SIZE - 27 - 7 - 10, &r);
    assert_int_equal(wal_size(w), WAL_BLOCK_SIZE - 10);
    assert_int_equal(wal_sync(w), 0);
    append_noted(w, big, 100, &r);
    append_noted(w, big, 50, &r);
    assert_int_equal(wal_close(w), 0);
    logpath(p, sizeof p, 55);
    g.n = 0;
    assert_int_equal(wal_replay(p, 55, WAL_NEWEST, collect, &g, NULL), 0);
    check_prefix(&g, &r, r.n);
}

/* Cut the log at every byte offset inside its last record: the replay of the
 * newest log keeps every earlier record and drops the torn one, silently. */
static void torn_every_offset(size_t last_len, uint64_t stride)
{
    uint64_t s = 5;
    /* Place the last record so it starts shortly before a block boundary. */
    size_t lens[4] = { 100, WAL_BLOCK_SIZE - 7 - 27 - 107 - 1000, 50, last_len };
    static struct recs r;
    r.n = 0;
    write_log(9, lens, 4, &r, &s);
    char p[600];
    logpath(p, sizeof p, 9);
    uint64_t start = r.end[2], full = r.end[3];
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    static struct got g;
    for (uint64_t cut = full - 1; cut >= start; cut -= (cut - start < stride ? 1 : stride)) {
        assert_int_equal(ftruncate(fd, (off_t)cut), 0);
        g.n = 0;
        uint64_t end = 0;
        int rc = wal_replay(p, 9, WAL_NEWEST, collect, &g, &end);
        if (rc)
            fprintf(stderr, "cut at %llu: %d %s\n", (unsigned long long)cut, rc, err_get());
        assert_int_equal(rc, 0);
        check_prefix(&g, &r, 3);
        assert_int_equal(end, start);
        /* The same cut in an older log is damage. */
        if (cut % 7 == 0) {
            g.n = 0;
            assert_int_equal(wal_replay(p, 9, 0, collect, &g, NULL), -EIO);
        }
        if (cut == start)
            break;
    }
    close(fd);
}

static void test_torn_tail_every_offset(void **state)
{
    (void)state;
    torn_every_offset(3000, 1);      /* every byte, crossing a block boundary */
}

static void test_torn_tail_long_record(void **state)
{
    (void)state;
    torn_every_offset(80000, 13);    /* FIRST, MIDDLE, LAST fragments */
}

static void test_repair_cuts_the_file(void **state)
{
    (void)state;
    uint64_t s = 8;
    size_t lens[3] = { 10, 20, 30 };
    struct recs r = { 0 };
    write_log(3, lens, 3, &r, &s);
    char p[600];
    logpath(p, sizeof p, 3);
    assert_int_equal(truncate(p, (off_t)r.end[2] - 5), 0);
    struct got g = { 0 };
    assert_int_equal(wal_replay(p, 3, WAL_NEWEST | WAL_REPAIR, collect, &g, NULL), 0);
    assert_int_equal(g.n, 2);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, r.end[1]);
    /* Now whole again: the older-log replay is clean. */
    g.n = 0;
    assert_int_equal(wal_replay(p, 3, 0, collect, &g, NULL), 0);
    assert_int_equal(g.n, 2);
    /* A log torn inside its header is removed. */
    assert_int_equal(truncate(p, 10), 0);
    assert_int_equal(wal_replay(p, 3, WAL_NEWEST | WAL_REPAIR, collect, &g, NULL), 0);
    assert_int_equal(stat(p, &st), -1);
}

static void test_zero_tail(void **state)
{
    (void)state;
    uint64_t s = 8;
    size_t lens[3] = { 10, 40000, 30 };
    struct recs r = { 0 };
    write_log(4, lens, 3, &r, &s);
    char p[600];
    logpath(p, sizeof p, 4);
    assert_int_equal(truncate(p, (off_t)r.end[2] + 70000), 0);   /* zeros */
    struct got g = { 0 };
    assert_int_equal(wal_replay(p, 4, WAL_NEWEST, collect, &g, NULL), 0);
    check_prefix(&g, &r, 3);
    /* Zeros after whole records end an older log too (space written ahead). */
    g.n = 0;
    assert_int_equal(wal_replay(p, 4, 0, collect, &g, NULL), 0);
    check_prefix(&g, &r, 3);
    /* But half a record before the zeros is damage in an older log. */
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "\x11\x22\x33\x44\x10\x00\x01half", 11, (off_t)r.end[2]), 11);
    close(fd);
    g.n = 0;
    assert_int_equal(wal_replay(p, 4, 0, collect, &g, NULL), -EIO);
    g.n = 0;
    assert_int_equal(wal_replay(p, 4, WAL_NEWEST, collect, &g, NULL), 0);
    check_prefix(&g, &r, 3);
}

/* A log that writes zeros ahead: synced appends land inside the zeros (the
 * file does not grow at each sync), and replays see exactly the records,
 * whether the log is the newest or an older one, after each sync. */
static void test_write_ahead(void **state)
{
    (void)state;
    uint64_t s = tu_seed("test_wal write ahead", 31);
    wal_t *w;
    assert_int_equal(wal_create(dir, 21, &w), 0);
    wal_set_prealloc(w, 256 * 1024);
    char p[600];
    logpath(p, sizeof p, 21);
    static struct recs r;
    r.n = 0;
    unsigned char *buf = malloc(70000);
    int grew = 0;
    struct stat st;
    off_t last = 0;
    for (int i = 0; i < 400; i++) {
        size_t len = i % 50 == 49 ? 20000 + tu_rand(&s) % 50000 : tu_rand(&s) % 700;
        fill(buf, len, &s);
        append_noted(w, buf, len, &r);
        assert_int_equal(wal_sync(w), 0);
        assert_int_equal(stat(p, &st), 0);
        assert_true((uint64_t)st.st_size >= wal_size(w) + 256 * 1024 / 4);
        grew += st.st_size != last;
        last = st.st_size;
        if (i % 37 == 0) {
            static struct got g;
            for (int newest = 0; newest < 2; newest++) {
                g.n = 0;
                uint64_t end = 0;
                assert_int_equal(wal_replay(p, 21, newest ? WAL_NEWEST : 0, collect, &g, &end), 0);
                check_prefix(&g, &r, r.n);
                assert_int_equal(end, wal_size(w));
            }
        }
    }
    /* About 1.6 MB of records: the file grew a few times, not at each sync. */
    assert_true(grew < 20);
    assert_int_equal(wal_close(w), 0);
    free(buf);
}

/* The records appended by kill_after_appends: N lengths from seed S, some
 * spanning blocks, one larger than the zeros written ahead. */
static size_t mapped_len(int i, uint64_t *s)
{
    if (i == 500)
        return 300000;
    return i % 60 == 59 ? 20000 + tu_rand(s) % 40000 : tu_rand(s) % 400;
}

/* Child: append 900 records to log 41 with zeros written ahead, syncing once
 * after record 300, then die by SIGKILL with the rest unsynced.  Before
 * dying it tells through FD whether the log was mapped ('M') or not ('P'). */
static void kill_after_appends(int fd)
{
    wal_t *w;
    if (wal_create(dir, 41, &w) != 0)
        _exit(2);
    wal_set_prealloc(w, 256 * 1024);
    uint64_t s = 77;
    unsigned char *buf = malloc(300000);
    char mapped = 'P';
    for (int i = 0; i < 900; i++) {
        size_t len = mapped_len(i, &s);
        fill(buf, len, &s);
        if (wal_append(w, buf, len) != 0)
            _exit(3);
        if (i == 300 && wal_sync(w) != 0)
            _exit(4);
        if (i == 899) {
            FILE *m = fopen("/proc/self/maps", "r");
            char line[1024];
            while (m && fgets(line, sizeof line, m))
                if (strstr(line, "000041.log"))
                    mapped = 'M';
            if (m)
                fclose(m);
        }
    }
    if (write(fd, &mapped, 1) != 1)
        _exit(5);
    raise(SIGKILL);
    _exit(6);
}

/* Records copied into the mapping of the zeros ahead are in the file as soon
 * as wal_append returns: a process killed right after still leaves all of
 * them, in order, and the zeros after them end the log. */
static void test_mapped_appends_survive_kill(void **state)
{
    (void)state;
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        kill_after_appends(pfd[1]);
    }
    close(pfd[1]);
    char mapped = 0;
    assert_int_equal(read(pfd[0], &mapped, 1), 1);
    close(pfd[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

    /* On the filesystems that allow it, the mapping must have been used. */
    struct statfs fs;
    assert_int_equal(statfs(dir, &fs), 0);
    if (fs.f_type == 0xEF53 || fs.f_type == 0x58465342 || fs.f_type == 0x01021994)
        assert_int_equal(mapped, 'M');

    static struct recs r;
    r.n = 0;
    uint64_t s = 77;
    unsigned char *buf = malloc(300000);
    for (int i = 0; i < 900; i++) {
        size_t len = mapped_len(i, &s);
        fill(buf, len, &s);
        r.len[r.n] = len;
        r.crc[r.n] = crc32c(buf, len);
        r.n++;
    }
    free(buf);
    char p[600];
    logpath(p, sizeof p, 41);
    static struct got g;
    g.n = 0;
    uint64_t end = 0;
    assert_int_equal(wal_replay(p, 41, WAL_NEWEST, collect, &g, &end), 0);
    check_prefix(&g, &r, r.n);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_true((uint64_t)sb.st_size > end);   /* the zeros ahead are still there */
}

/* A power cut can leave a page of the newest log unwritten (still the zeros
 * written ahead) before pages that were written: that log ends at the last
 * whole record before the page; in an older log, which was synced whole,
 * the same page is damage. */
static void test_unwritten_page(void **state)
{
    (void)state;
    uint64_t s = tu_seed("test_wal unwritten page", 41);
    wal_t *w;
    assert_int_equal(wal_create(dir, 51, &w), 0);
    wal_set_prealloc(w, 256 * 1024);
    static struct recs r;
    r.n = 0;
    unsigned char buf[9000];
    for (int i = 0; i < 300; i++) {
        size_t len = i % 40 == 39 ? 5000 + tu_rand(&s) % 4000 : 1 + tu_rand(&s) % 400;
        fill(buf, len, &s);
        append_noted(w, buf, len, &r);
    }
    assert_int_equal(wal_sync(w), 0);
    char p[600];
    logpath(p, sizeof p, 51);
    /* The file as a crash leaves it: records, then zeros; the writer is
     * dropped without closing (closing would cut the zeros). */
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_true((uint64_t)st.st_size > wal_size(w));
    unsigned char *copy = malloc((size_t)st.st_size);
    assert_int_equal(pread(fd, copy, (size_t)st.st_size, 0), st.st_size);
    for (uint64_t page = 2; page * 4096 + 4096 < wal_size(w); page += 5) {
        static const unsigned char zero[4096];
        assert_int_equal(pwrite(fd, copy, (size_t)st.st_size, 0), st.st_size);
        assert_int_equal(pwrite(fd, zero, sizeof zero, (off_t)(page * 4096)), 4096);
        int keep = 0;
        while (keep < r.n && r.end[keep] <= page * 4096)
            keep++;
        static struct got g;
        g.n = 0;
        uint64_t end = 0;
        assert_int_equal(wal_replay(p, 51, WAL_NEWEST, collect, &g, &end), 0);
        check_prefix(&g, &r, keep);
        assert_int_equal(end, keep ? r.end[keep - 1] : 0);
        g.n = 0;
        assert_int_equal(wal_replay(p, 51, 0, collect, &g, NULL), -EIO);
    }
    /* Garbage instead of zeros is still damage, even in the newest log. */
    assert_int_equal(pwrite(fd, copy, (size_t)st.st_size, 0), st.st_size);
    unsigned char junk[4096];
    fill(junk, sizeof junk, &s);
    assert_int_equal(pwrite(fd, junk, sizeof junk, 3 * 4096), 4096);
    static struct got g2;
    g2.n = 0;
    assert_int_equal(wal_replay(p, 51, WAL_NEWEST, collect, &g2, NULL), -EIO);
    close(fd);
    free(copy);
    assert_int_equal(wal_close(w), 0);
}

/* A damaged length in a record of the newest log, with the zeros written
 * ahead still after the last record (as a crash leaves them): the length
 * reaches into those zeros, which must not pass for a page a crash kept
 * from the disk when whole records follow the damage: -EIO, not a log cut
 * short without a word. */
static void test_damaged_length_before_zeros(void **state)
{
    (void)state;
    wal_t *w;
    assert_int_equal(wal_create(dir, 52, &w), 0);
    wal_set_prealloc(w, 1 << 20);
    static struct recs r;
    r.n = 0;
    unsigned char buf[100];
    memset(buf, 'x', sizeof buf);
    for (int i = 0; i < 10; i++)
        append_noted(w, buf, sizeof buf, &r);
    assert_int_equal(wal_sync(w), 0);
    char p[600];
    logpath(p, sizeof p, 52);
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    for (int k = 1; k < 9; k++) {
        /* The high byte of record k's length (its fragment header starts
         * where record k - 1 ends). */
        off_t at = (off_t)r.end[k - 1] + 5;
        unsigned char c;
        assert_int_equal(pread(fd, &c, 1, at), 1);
        c ^= 0x80;
        assert_int_equal(pwrite(fd, &c, 1, at), 1);
        static struct got g;
        g.n = 0;
        int rc = wal_replay(p, 52, WAL_NEWEST, collect, &g, NULL);
        if (rc != -EIO)
            fail_msg("length of record %d damaged: rc %d, %d records of 10", k, rc, g.n);
        c ^= 0x80;
        assert_int_equal(pwrite(fd, &c, 1, at), 1);
    }
    close(fd);
    assert_int_equal(wal_close(w), 0);
}

/* A synced record whose own bytes hold a page of zeros, damaged elsewhere:
 * the zeros must not pass for a page a crash kept from the disk, since a
 * later record says the log was synced past it (-EIO).  A page of zeros
 * past what the last SYNCED fragment covers is still a tear. */
static void test_synced_damage_with_zero_page(void **state)
{
    (void)state;
    wal_t *w;
    assert_int_equal(wal_create(dir, 53, &w), 0);
    wal_set_prealloc(w, 1 << 20);
    static struct recs r;
    r.n = 0;
    static unsigned char v[12000];
    memset(v, 'a', sizeof v);
    memset(v + 100, 0, 10000);
    append_noted(w, (const unsigned char *)"first", 5, &r);
    assert_int_equal(wal_sync(w), 0);
    append_noted(w, v, sizeof v, &r);
    assert_int_equal(wal_sync(w), 0);
    for (int i = 0; i < 5; i++)
        append_noted(w, (const unsigned char *)"later, synced", 13, &r);
    assert_int_equal(wal_sync(w), 0);
    /* Unsynced records after the last sync: the first says how far. */
    static unsigned char u[9000];
    memset(u, 'u', sizeof u);
    for (int i = 0; i < 3; i++)
        append_noted(w, u, sizeof u, &r);
    char p[600];
    logpath(p, sizeof p, 53);
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    off_t at = (off_t)r.end[0] + 30;        /* inside record 1, before its zeros */
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, at), 1);
    c ^= 0x04;
    assert_int_equal(pwrite(fd, &c, 1, at), 1);
    static struct got g;
    g.n = 0;
    int rc = wal_replay(p, 53, WAL_NEWEST, collect, &g, NULL);
    if (rc != -EIO)
        fail_msg("damaged synced record: rc %d, %d records of %d", rc, g.n, r.n);
    c ^= 0x04;
    assert_int_equal(pwrite(fd, &c, 1, at), 1);
    /* A page of the unsynced records never written: the log ends before it. */
    uint64_t page = (r.end[7] + 4096) / 4096 * 4096;
    assert_true(page + 4096 <= r.end[9]);
    static const unsigned char zero[4096];
    assert_int_equal(pwrite(fd, zero, sizeof zero, (off_t)page), 4096);
    int keep = 0;
    while (keep < r.n && r.end[keep] <= page)
        keep++;
    g.n = 0;
    assert_int_equal(wal_replay(p, 53, WAL_NEWEST, collect, &g, NULL), 0);
    check_prefix(&g, &r, keep);
    close(fd);
    assert_int_equal(wal_close(w), 0);
}

/* A record that starts where exactly a fragment header fits in the block
 * begins with an empty fragment; replay joins it like any other. */
static void test_empty_first_fragment(void **state)
{
    (void)state;
    uint64_t s = 3;
    static struct recs r;
    r.n = 0;
    /* The log header takes 7 + 20 bytes; the first record's 7 + 32727 leave
     * exactly 7 bytes of the first block. */
    size_t lens[] = { WAL_BLOCK_SIZE - 3 * 7 - 20, 100, 0, 5 };
    write_log(61, lens, 4, &r, &s);
    assert_int_equal(r.end[0], WAL_BLOCK_SIZE - 7);
    char p[600];
    logpath(p, sizeof p, 61);
    static struct got g;
    g.n = 0;
    assert_int_equal(wal_replay(p, 61, WAL_NEWEST, collect, &g, NULL), 0);
    check_prefix(&g, &r, 4);
}

static int teardown_tiny(void **state)
{
    char mnt[600];
    snprintf(mnt, sizeof mnt, "%s/tiny", dir);
    umount2(mnt, MNT_DETACH);   /* even when the test failed */
    return tu_teardown(state);
}

/*
 * Append records of LEN bytes to log NUM (zeros ahead: PRE bytes) on a
 * 512 KiB tmpfs until the disk is full, syncing after each one when SYNC;
 * then every record taken (at least MIN of them) must replay.
 */
static void fill_tiny_disk(uint64_t num, size_t pre, size_t len, int sync, int min)
{
    char mnt[600];
    snprintf(mnt, sizeof mnt, "%s/tiny", dir);
    mkdir(mnt, 0755);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=512k") != 0)
        skip();   /* needs root */
    wal_t *w;
    assert_int_equal(wal_create(mnt, num, &w), 0);
    wal_set_prealloc(w, pre);
    char p[700];
    wal_path(p, sizeof p, mnt, num);
    static struct recs r;
    r.n = 0;
    unsigned char buf[1000];
    assert_true(len <= sizeof buf);
    uint64_t s = num;
    int rc = 0;
    for (int i = 0; i < 1000 && rc == 0; i++) {
        fill(buf, len, &s);
        if ((rc = wal_append(w, buf, len)) == 0) {
            r.len[r.n] = len;
            r.crc[r.n] = crc32c(buf, len);
            r.end[r.n] = wal_size(w);
            r.n++;
            if (sync) {
                assert_int_equal(wal_sync(w), 0);
                struct stat st;
                assert_int_equal(stat(p, &st), 0);
                assert_int_equal((uint64_t)st.st_size, wal_size(w));   /* no zeros left behind */
            }
        }
    }
    assert_int_equal(rc, -ENOSPC);
    assert_true(r.n > min);
    assert_int_equal(wal_close(w), 0);
    static struct got g;
    g.n = 0;
    assert_int_equal(wal_replay(p, num, 0, collect, &g, NULL), 0);
    check_prefix(&g, &r, r.n);
    umount2(mnt, MNT_DETACH);
}

/* Zeros that do not fit on the disk: the sync still succeeds (the zeros are
 * only an optimisation), the file is cut back, and the log goes on until the
 * records themselves no longer fit, losing none that were written. */
static void test_write_ahead_disk_full(void **state)
{
    (void)state;
    fill_tiny_disk(3, 4u << 20, 1000, 1, 100);   /* more zeros than the disk holds */
}

/* Unsynced appends through the mapping while the disk fills: the zeros
 * ahead stop fitting first (the mapping goes, appends fall back to pwrite),
 * then the records themselves; every record taken replays. */
static void test_mapped_disk_full(void **state)
{
    (void)state;
    fill_tiny_disk(4, 64 * 1024, 700, 0, 300);
}

/* Flip one byte at OFF of a log holding 6 records; -EIO, and no record at or
 * after the damaged one is handed back. */
static void flip_at(uint64_t off, int damaged_rec)
{
    uint64_t s = 77;
    size_t lens[6] = { 100, 200, 50000, 300, 40000, 10 };
    struct recs r = { 0 };
    char p[600];
    logpath(p, sizeof p, 12);
    unlink(p);
    write_log(12, lens, 6, &r, &s);
    int fd = open(p, O_RDWR);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, (off_t)off), 1);
    c ^= 0x10;
    assert_int_equal(pwrite(fd, &c, 1, (off_t)off), 1);
    close(fd);
    for (int newest = 0; newest < 2; newest++) {
        struct got g = { 0 };
        int rc = wal_replay(p, 12, newest ? WAL_NEWEST : 0, collect, &g, NULL);
        if (rc != -EIO)
            fprintf(stderr, "flip at %llu: rc %d, %d records\n", (unsigned long long)off, rc, g.n);
        assert_int_equal(rc, -EIO);
        assert_true(g.n <= damaged_rec);
        assert_non_null(strstr(err_get(), "000012.log"));
        assert_non_null(strstr(err_get(), "offset"));
    }
}

static void test_flipped_bytes(void **state)
{
    (void)state;
    uint64_t s = 77;
    size_t lens[6] = { 100, 200, 50000, 300, 40000, 10 };
    struct recs r = { 0 };
    write_log(12, lens, 6, &r, &s);
    uint64_t rec1 = r.end[0];        /* fragment header of record 1 */
    flip_at(rec1 + 0, 1);            /* its CRC */
    flip_at(rec1 + 4, 1);            /* its length */
    flip_at(rec1 + 6, 1);            /* its type */
    flip_at(rec1 + 50, 1);           /* its payload */
    flip_at(r.end[1] + 20000, 2);    /* inside the multi-block record 2 */
    flip_at(r.end[2] + 100, 3);      /* record 3, in the block after 2's end */
    flip_at(3, 0);                   /* the header's CRC */
}

/* Rewrite the header fragment of log NUM with PAYLOAD and a valid CRC. */
static void forge_header(uint64_t num, const unsigned char *payload)
{
    char p[600];
    logpath(p, sizeof p, num);
    unsigned char h[27];
    uint8_t nb[8], type = 5;
    for (int i = 0; i < 8; i++)
        nb[i] = (uint8_t)(num >> (8 * i));
    uint32_t crc = crc32c_extend(crc32c_extend(crc32c(nb, 8), &type, 1), payload, 20);
    for (int i = 0; i < 4; i++)
        h[i] = (unsigned char)(crc >> (8 * i));
    h[4] = 20;
    h[5] = 0;
    h[6] = type;
    memcpy(h + 7, payload, 20);
    int fd = open(p, O_RDWR);
    assert_int_equal(pwrite(fd, h, sizeof h, 0), (ssize_t)sizeof h);
    close(fd);
}

static void test_bad_header(void **state)
{
    (void)state;
    uint64_t s = 1;
    size_t lens[2] = { 10, 10 };
    struct recs r = { 0 };
    write_log(21, lens, 2, &r, &s);
    char p[600];
    logpath(p, sizeof p, 21);
    unsigned char good[20] = "STASHWAL";
    good[8] = 1;
    good[12] = 21;
    unsigned char pl[20];

    memcpy(pl, good, 20);
    pl[0] = 'X';
    forge_header(21, pl);
    assert_int_equal(wal_replay(p, 21, WAL_NEWEST, NULL, NULL, NULL), -EIO);
    assert_non_null(strstr(err_get(), "magic"));

    memcpy(pl, good, 20);
    pl[8] = 9;
    forge_header(21, pl);
    assert_int_equal(wal_replay(p, 21, WAL_NEWEST, NULL, NULL, NULL), -EIO);
    assert_non_null(strstr(err_get(), "version"));

    memcpy(pl, good, 20);
    pl[12] = 22;
    forge_header(21, pl);
    assert_int_equal(wal_replay(p, 21, WAL_NEWEST, NULL, NULL, NULL), -EIO);
    assert_non_null(strstr(err_get(), "names log 22"));

    forge_header(21, good);
    struct got g = { 0 };
    assert_int_equal(wal_replay(p, 21, 0, collect, &g, NULL), 0);
    assert_int_equal(g.n, 2);

    /* An empty file is fine only as the newest log (a crash at creation). */
    int fd = open(p, O_RDWR | O_TRUNC);
    close(fd);
    assert_int_equal(wal_replay(p, 21, WAL_NEWEST, NULL, NULL, NULL), 0);
    assert_int_equal(wal_replay(p, 21, 0, NULL, NULL, NULL), -EIO);
}

static void test_create_exclusive(void **state)
{
    (void)state;
    wal_t *w;
    assert_int_equal(wal_create(dir, 1, &w), 0);
    wal_close(w);
    assert_int_equal(wal_create(dir, 1, &w), -EEXIST);
    char p[600];
    logpath(p, sizeof p, 1);
    assert_non_null(strstr(p, "000001.log"));
    assert_int_equal(wal_replay("/nonexistent/000001.log", 1, 0, NULL, NULL, NULL), -ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test_setup_teardown(test_round_trip, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_every_offset, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_long_record, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_repair_cuts_the_file, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_zero_tail, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_write_ahead, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_write_ahead_disk_full, tu_setup, teardown_tiny),
        cmocka_unit_test_setup_teardown(test_mapped_disk_full, tu_setup, teardown_tiny),
        cmocka_unit_test_setup_teardown(test_mapped_appends_survive_kill, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_unwritten_page, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_damaged_length_before_zeros, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_synced_damage_with_zero_page, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_synced, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_empty_first_fragment, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_flipped_bytes, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_bad_header, tu_setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_create_exclusive, tu_setup, tu_teardown),
    };
    tu_filter();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
