/*
 * crashtest.c - kill -9 in the middle of writes, then check recovery.
 *
 * Each round forks a child that opens the store and writes random batches,
 * one in 64 with STASH_SYNC and the rest without (a killed process loses
 * nothing the kernel has, so an unsynced batch acknowledged before the kill
 * must survive it too; runs of small unsynced batches go through the log's
 * memory mapping), reporting each acknowledged batch number on a pipe.  The
 * parent kills it (SIGKILL) after a random delay, reopens the store and
 * checks that
 *   - every acknowledged batch is present, whole, with the right bytes;
 *   - every batch present at all is present whole (no torn batch);
 *   - nothing else is in the store.
 * Tiny memtables, tables and levels make log switches, flushes and
 * compactions happen during the kills.
 *
 * A second series does the same to hard links, in a store of its own: the
 * child gives value "v" a new name l<i>, drops l<i-2> and writes byte i
 * through l<i> at slot i mod 50, and reports i.  After each kill every name
 * must lead to one value whose name count is right, l<i> must exist for the
 * last reported i, and that i's byte must be in its slot.
 *
 * A third series writes whole chunks of a large value, which go to value
 * files, while their garbage is collected (see vlog_child).
 *
 * A fourth makes small writes into a large value whose chunks are in value
 * files, which go to the chunks' patch records, among whole-chunk writes,
 * truncations and collections (see patch_child); after each kill the value
 * must be, byte for byte, its state after some prefix of the steps, no
 * shorter than the last one reported.
 *
 * Usage: crashtest [--rounds N] [--seed S] [--dir DIR]
 * Prints the seed; a failing round can be replayed with the same seed.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "smartstash.h"

#define MAXENT 24

static uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Batches come in runs of 64: in every other run they are small (so the
 * log takes them through its memory mapping), otherwise they have up to
 * MAXENT entries of up to 2,000 bytes, now and then 100,000 or more. */
static int small_batch(uint32_t b)
{
    return (b / 64) % 2 == 1;
}

/* Batch B's entry count, and entry j's value length and bytes, follow from
 * (B, j), so the checker needs no record of them. */
static int batch_entries(uint32_t b)
{
    if (small_batch(b))
        return (int)((b * 2654435761u) % 3) + 1;
    return (int)((b * 2654435761u) % MAXENT) + 1;
}

static size_t entry_len(uint32_t b, int j)
{
    uint32_t h = (b * 31u + (uint32_t)j) * 2246822519u;
    if (small_batch(b))
        return h % 200;
    if (h % 97 == 0)
        return 100000 + h % 100000;   /* sometimes large: spans log blocks */
    return h % 2000;
}

/* One batch in 64 is synced, so runs of unsynced appends are long. */
static int batch_synced(uint32_t b)
{
    return b % 64 == 0;
}

static void entry_key(char *k, uint32_t b, int j)
{
    snprintf(k, 32, "b%08u-%02d", b, j);
}

static void entry_val(unsigned char *v, size_t n, uint32_t b, int j)
{
    uint64_t s = ((uint64_t)b << 8 | (uint64_t)j) + 1;
    for (size_t i = 0; i < n; i++) {
        if (i % 8 == 0)
            s = rnd(&s) | 1;
        v[i] = (unsigned char)(s >> (8 * (i % 8)));
    }
}

static stash_options_t opts(void)
{
    stash_options_t o;
    stash_options_init(&o);
    /* Tiny memtables, tables and levels: flushes and compactions run all the
     * time, so the kills land in the middle of them. */
    o.memtable_size = 64 << 10;
    o.target_file_size = 64 << 10;
    o.level1_max_bytes = 256 << 10;
    o.l0_compaction_trigger = 2;
    o.l0_slowdown_trigger = 4;
    o.l0_stop_trigger = 8;
    o.block_size = 1024;
    return o;
}

static void child(const char *dir, uint32_t first, int fd)
{
    stash_options_t o = opts();
    stash_t *db;
    if (stash_open(dir, &o, &db) != 0) {
        fprintf(stderr, "child: open: %s\n", stash_last_error(NULL));
        _exit(3);
    }
    unsigned char *v = malloc(200000);
    for (uint32_t b = first;; b++) {
        stash_batch_t *bt = stash_batch_new();
        for (int j = 0; j < batch_entries(b); j++) {
            char k[32];
            entry_key(k, b, j);
            size_t n = entry_len(b, j);
            entry_val(v, n, b, j);
            stash_batch_put(bt, k, strlen(k), v, n);
        }
        int rc = stash_write(db, bt, batch_synced(b) ? STASH_SYNC : 0);
        stash_batch_free(bt);
        if (rc) {
            fprintf(stderr, "child: write: %s\n", stash_last_error(NULL));
            _exit(4);
        }
        if (write(fd, &b, sizeof b) != sizeof b)
            _exit(5);
    }
}

/* Reopen and check; returns the highest batch number present, or -1 on failure. */
static long verify(const char *dir, uint32_t acked_upto, uint32_t first_round)
{
    stash_options_t o = opts();
    stash_t *db;
    if (stash_open(dir, &o, &db) != 0) {
        fprintf(stderr, "reopen failed: %s\n", stash_last_error(NULL));
        return -1;
    }
    long maxb = 0;
    unsigned char *want = malloc(200000);
    stash_iter_t *it = stash_iter_new(db, NULL);
    stash_iter_seek_first(it);
    uint32_t expect_b = 1;
    int ok = 1;
    while (ok && stash_iter_valid(it)) {
        size_t kl;
        const char *k = stash_iter_key(it, &kl);
        unsigned b;
        int j;
        if (kl != 12 || sscanf(k, "b%8u-%2d", &b, &j) != 2 || j != 0) {
            fprintf(stderr, "unexpected key %.*s\n", (int)kl, k);
            ok = 0;
            break;
        }
        /* batches are present as a prefix 1..max: a gap means a lost ack'ed
         * batch (or one lost before a later one survived). */
        if (b != expect_b) {
            fprintf(stderr, "batch %u missing (next present is %u)\n", expect_b, b);
            ok = 0;
            break;
        }
        for (int e = 0; e < batch_entries(b); e++) {
            char want_k[32];
            entry_key(want_k, b, e);
            size_t n = entry_len(b, e), vl, gkl = 0;
            const char *gk = stash_iter_valid(it) ? stash_iter_key(it, &gkl) : NULL;
            const void *v = stash_iter_value(it, &vl);
            if (!gk || gkl != strlen(want_k) || memcmp(gk, want_k, gkl) != 0) {
                fprintf(stderr, "batch %u is torn: entry %d missing\n", b, e);
                ok = 0;
                break;
            }
            entry_val(want, n, b, e);
            if (vl != n || memcmp(v, want, n) != 0) {
                fprintf(stderr, "batch %u entry %d has wrong bytes\n", b, e);
                ok = 0;
                break;
            }
            stash_iter_next(it);
        }
        maxb = b;
        expect_b++;
    }
    if (ok && stash_iter_status(it) != 0) {
        fprintf(stderr, "scan failed: %d\n", stash_iter_status(it));
        ok = 0;
    }
    if (ok && (uint32_t)maxb < acked_upto) {
        fprintf(stderr, "acknowledged batch %u lost (store ends at %ld, round began at %u)\n",
                acked_upto, maxb, first_round);
        ok = 0;
    }
    stash_iter_free(it);
    free(want);
    if (stash_close(db) != 0)
        ok = 0;
    return ok ? maxb : -1;
}

/* ---- hard links ---- */

static void link_child(const char *dir, uint32_t first, int out)
{
    stash_options_t o;
    stash_options_init(&o);
    o.memtable_size = 64 << 10;
    o.target_file_size = 64 << 10;
    o.level1_max_bytes = 256 << 10;
    stash_t *db;
    if (stash_open(dir, &o, &db) != 0)
        _exit(3);
    if (first == 1 && (stash_put(db, "v", 1, "", 0) != 0 || stash_pwrite(db, "v", 1, "", 1, 4999) != 0))
        _exit(4);
    for (uint32_t i = first;; i++) {
        char k[16];
        uint8_t byte = (uint8_t)i;
        snprintf(k, sizeof k, "l%u", i);
        if (stash_link(db, "v", 1, k, strlen(k)) != 0)
            _exit(5);
        if (i > 2) {
            snprintf(k, sizeof k, "l%u", i - 2);
            if (stash_delete(db, k, strlen(k)) != 0)
                _exit(6);
            snprintf(k, sizeof k, "l%u", i);
        }
        if (stash_pwrite(db, k, strlen(k), &byte, 1, (uint64_t)(i % 50) * 100) != 0)
            _exit(7);
        if (i % 32 == 0 && stash_sync(db) != 0)
            _exit(8);
        if (write(out, &i, sizeof i) != sizeof i)
            _exit(9);
    }
}

struct lnames {
    stash_t *db;
    uint64_t id;
    uint32_t count, top, bad;
};

static int link_name(void *arg, const void *key, size_t klen)
{
    struct lnames *n = arg;
    stash_stat_t st;
    char k[32];
    if (klen >= sizeof k)
        return n->bad = 1, 0;
    memcpy(k, key, klen);
    k[klen] = 0;
    if (stash_stat(n->db, NULL, k, klen, &st) != 0 || st.link_id != n->id) {
        fprintf(stderr, "name %s does not lead to value %016llx\n", k, (unsigned long long)n->id);
        n->bad = 1;
    }
    n->count++;
    if (k[0] == 'l' && (uint32_t)atol(k + 1) > n->top)
        n->top = (uint32_t)atol(k + 1);
    return 0;
}

/* The highest i whose name exists, or -1 when the store is inconsistent. */
static long link_verify(const char *dir, uint32_t acked)
{
    stash_t *db;
    if (stash_open(dir, NULL, &db) != 0) {
        fprintf(stderr, "links: reopen failed: %s\n", stash_last_error(NULL));
        return -1;
    }
    stash_stat_t st;
    struct lnames n = {db, 0, 0, 0, 0};
    int rc = stash_stat(db, NULL, "v", 1, &st);
    if (acked == 0 && (rc == -ENOENT || (rc == 0 && st.link_id == 0))) {
        stash_close(db);        /* killed before the first step */
        return 0;
    }
    int ok = rc == 0;
    if (!ok)
        fprintf(stderr, "links: v: %s\n", stash_last_error(db));
    n.id = ok ? st.link_id : 0;
    if (ok && (!n.id || stash_link_names(db, n.id, link_name, &n) != 0 || n.bad)) {
        fprintf(stderr, "links: v is not linked, or its names are wrong\n");
        ok = 0;
    }
    if (ok && n.count != st.nlink) {
        fprintf(stderr, "links: %u names, but the value counts %u\n", n.count, st.nlink);
        ok = 0;
    }
    uint8_t byte = 0;
    size_t got = 0;
    if (ok && acked && (stash_pread(db, "v", 1, &byte, 1, (uint64_t)(acked % 50) * 100, &got) != 0 ||
                        got != 1 || n.top < acked)) {
        fprintf(stderr, "links: acknowledged step %u lost (names up to l%u)\n", acked, n.top);
        ok = 0;
    }
    if (ok && acked && byte != (uint8_t)acked && n.top == acked) {
        fprintf(stderr, "links: step %u's byte is %u\n", acked, byte);
        ok = 0;
    }
    if (stash_close(db) != 0)
        ok = 0;
    return ok ? (long)n.top : -1;
}

static int link_rounds(const char *dir, int rounds, uint64_t *seed)
{
    /* NEXT follows the names that exist (a killed step may have made its
     * name and no more); ACKED only what a child reported. */
    uint32_t next = 1, acked = 0;
    for (int r = 0; r < rounds; r++) {
        int p[2];
        if (pipe(p) < 0)
            return perror("pipe"), 1;
        pid_t pid = fork();
        if (pid == 0) {
            close(p[0]);
            link_child(dir, next, p[1]);
        }
        close(p[1]);
        usleep((useconds_t)(2000 + rnd(seed) % 100000));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        uint32_t i;
        while (read(p[0], &i, sizeof i) == sizeof i)
            acked = i;
        close(p[0]);
        if (WIFEXITED(status)) {
            fprintf(stderr, "links round %d: child exited with %d before the kill\n", r, WEXITSTATUS(status));
            return 1;
        }
        long top = link_verify(dir, acked);
        if (top < 0) {
            fprintf(stderr, "links round %d FAILED\n", r);
            return 1;
        }
        next = (uint32_t)top + 1;
    }
    printf("crashtest: %d rounds of hard links, %u steps: ok\n", rounds, next - 1);
    return 0;
}

/* ---- value files ---- */

/*
 * The child writes step i as VSLOT bytes at slot i mod VSLOTS of value "big"
 * with stash_pwrite (whole chunks: they go to value files), byte j of it
 * (i * 7 + j) mod 251, with a sync every 8th step; every 16th step it also
 * rewrites value "t" whole, deletes it, or compacts (which seals the value
 * file and collects garbage), so that kills land in the middle of
 * collections.  After a kill every slot must hold the bytes of one step
 * whole, a step of that slot, no older than the last one reported for it.
 */
#define VSLOT  (256u << 10)
#define VSLOTS 8

static void vfill(uint8_t *b, uint32_t i)
{
    for (uint32_t j = 0; j < VSLOT; j++)
        b[j] = (uint8_t)((i * 7u + j) % 251u);
}

static void vlog_child(const char *dir, uint32_t first, int out)
{
    stash_options_t o;
    stash_options_init(&o);
    o.memtable_size = 256 << 10;
    o.target_file_size = 128 << 10;
    o.level1_max_bytes = 512 << 10;
    stash_t *db;
    uint8_t *b = malloc(VSLOT);
    if (!b || stash_open(dir, &o, &db) != 0)
        _exit(3);
    for (uint32_t i = first;; i++) {
        vfill(b, i);
        if (stash_pwrite(db, "big", 3, b, VSLOT, (uint64_t)(i % VSLOTS) * VSLOT) != 0)
            _exit(4);
        if (i % 16 == 5 && stash_pwrite(db, "t", 1, b, VSLOT, 0) != 0)
            _exit(5);
        int rc = i % 16 == 9 ? stash_delete(db, "t", 1) : 0;
        if (rc != 0 && rc != -ENOENT)
            _exit(6);
        if (i % 16 == 13 && stash_compact_range(db, NULL, 0, NULL, 0) != 0)
            _exit(7);
        if (i % 8 == 0 && stash_sync(db) != 0)
            _exit(8);
        if (write(out, &i, sizeof i) != sizeof i)
            _exit(9);
    }
}

/* The newest step found in the store, or -1 when it is wrong.  ACKED[s] is
 * the last step reported for slot s (0: none). */
static long vlog_verify(const char *dir, const uint32_t *acked)
{
    stash_t *db;
    if (stash_open(dir, NULL, &db) != 0) {
        fprintf(stderr, "value files: reopen failed: %s\n", stash_last_error(NULL));
        return -1;
    }
    uint8_t *b = malloc(VSLOT), *w = malloc(VSLOT);
    long top = 0;
    int ok = b && w;
    for (uint32_t s = 0; ok && s < VSLOTS; s++) {
        size_t got = 0;
        int rc = stash_pread(db, "big", 3, b, VSLOT, (uint64_t)s * VSLOT, &got);
        if (rc == -ENOENT)
            got = 0, rc = 0;
        int zero = 1;
        for (size_t j = 0; j < got && zero; j++)
            zero = b[j] == 0;
        if (rc == 0 && zero && !acked[s])
            continue;           /* never written, or a hole before a later slot */
        if (rc != 0 || got != VSLOT) {
            fprintf(stderr, "value files: slot %u: %s (%zu bytes, step %u acknowledged)\n", s,
                    rc ? stash_last_error(db) : "short", got, acked[s]);
            ok = 0;
            continue;
        }
        /* Steps of slot s are s, s + VSLOTS, ...; look a little past the
         * acknowledged one for one written but not yet reported. */
        uint32_t from = acked[s] ? acked[s] : (s ? s : VSLOTS);
        int found = 0;
        for (uint32_t c = from; c < from + 64 * VSLOTS && !found; c += VSLOTS) {
            if ((uint8_t)((c * 7u) % 251u) != b[0])
                continue;
            vfill(w, c);
            if (memcmp(w, b, VSLOT) == 0) {
                found = 1;
                if ((long)c > top)
                    top = c;
            }
        }
        if (!found) {
            fprintf(stderr, "value files: slot %u holds no whole step at or after %u\n", s, from);
            ok = 0;
        }
    }
    free(b);
    free(w);
    if (stash_close(db) != 0)
        ok = 0;
    return ok ? top : -1;
}

static int vlog_rounds(const char *dir, int rounds, uint64_t *seed)
{
    uint32_t next = 1, slot[VSLOTS] = {0};
    for (int r = 0; r < rounds; r++) {
        int p[2];
        if (pipe(p) < 0)
            return perror("pipe"), 1;
        pid_t pid = fork();
        if (pid == 0) {
            close(p[0]);
            vlog_child(dir, next, p[1]);
        }
        close(p[1]);
        usleep((useconds_t)(5000 + rnd(seed) % 150000));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        uint32_t i;
        while (read(p[0], &i, sizeof i) == sizeof i)
            slot[i % VSLOTS] = i;
        close(p[0]);
        if (WIFEXITED(status)) {
            fprintf(stderr, "value files round %d: child exited with %d before the kill\n", r,
                    WEXITSTATUS(status));
            return 1;
        }
        long top = vlog_verify(dir, slot);
        if (top < 0) {
            fprintf(stderr, "value files round %d FAILED\n", r);
            return 1;
        }
        /* The next child's steps are new in every slot; a slot whose
         * newest step was written but not reported counts as acknowledged
         * from here on. */
        uint32_t hi = (uint32_t)top;
        for (int s = 0; s < VSLOTS; s++)
            if (slot[s] > hi)
                hi = slot[s];
        next = hi + 1;
    }
    printf("crashtest: %d rounds of value-file writes, %u steps: ok\n", rounds, next - 1);
    return 0;
}

/* ---- patch records ---- */

/*
 * One value "p", PSIZE bytes when written whole at step 1 (whole chunks, so
 * they go to value files), then steps that are mostly small stash_pwrites
 * into it, which go to the patch records of the chunks they touch (see
 * docs/format.md, FF 09).  Step i is a function of i and the value's size
 * before it (pstep): a write of 1 byte to 12 KiB anywhere (now and then
 * across a chunk boundary or past the end), or one chunk written whole
 * (which drops its patches), or a truncation shorter or longer, or a
 * compaction (which seals the value file and collects garbage, so kills land
 * in collections that move patched chunks).  Each step is one batch, so
 * after a kill the value must equal the state after steps 1..k for one k,
 * which the parent finds by replaying the steps in memory.
 */
#define PCHUNK (64u << 10)
#define PSIZE  (16u * PCHUNK)
#define PCAP   (PSIZE + 4 * PCHUNK)     /* no step makes the value longer */

enum { P_WRITE, P_CHUNK, P_TRUNC, P_COMPACT };

struct pstep {
    int kind;
    uint64_t off, size;     /* where a write goes; the value's size after */
    size_t len;
    int packed;             /* bytes that zstd can squeeze: a compressed chunk */
};

static uint64_t pmix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

static void pstep(uint32_t i, uint64_t size, struct pstep *s)
{
    uint64_t h = pmix(i), h2 = pmix(h), h3 = pmix(h2), h4 = pmix(h3);
    uint64_t nch = (size + PCHUNK - 1) / PCHUNK;
    memset(s, 0, sizeof *s);
    s->size = size;
    if (i == 1) {
        s->kind = P_CHUNK;
        s->len = PSIZE;
        s->size = PSIZE;
        return;
    }
    if (i % 32 == 16) {
        s->kind = P_COMPACT;
    } else if (h % 16 == 2) {
        /* A run of chunks written whole, as a sequential writer does: value
         * files fill up (a file is collected once it holds at least 1 MiB,
         * less than half of it live, so the patched chunks in it move). */
        uint64_t c = h2 % (nch - 3), n = 4 + h3 % 5;
        s->kind = P_CHUNK;
        s->off = c * PCHUNK;
        s->len = (size_t)((c + n > PSIZE / PCHUNK + 2 ? PSIZE / PCHUNK + 2 - c : n) * PCHUNK);
        s->packed = h4 % 3 == 0;
    } else if (h % 16 == 0) {
        /* A chunk written whole, now and then the one past the end; the
         * value never passes PSIZE + 2 chunks this way. */
        uint64_t c = h2 % (nch + 1);
        if (c > PSIZE / PCHUNK + 1)
            c = h2 % nch;
        s->kind = P_CHUNK;
        s->off = c * PCHUNK;
        s->len = PCHUNK;
        s->packed = h3 % 3 == 0;
    } else if (h % 32 == 1) {
        /* 13 to 18 chunks, a quarter of the time a whole number of them
         * (a cut inside a chunk leaves its head in the tree). */
        s->kind = P_TRUNC;
        s->size = PSIZE - 3 * PCHUNK + h2 % (5 * PCHUNK);
        if (h3 % 4 == 0)
            s->size -= s->size % PCHUNK;
        return;
    } else {
        uint64_t r = h2 % 16;
        s->kind = P_WRITE;
        s->len = (size_t)(r < 4 ? 1 + h3 % 64 : r < 15 ? 1 + h3 % 4096 : 4096 + h3 % 8192);
        s->packed = h4 % 8 == 0;
        uint64_t back = 1 + (h4 >> 20) % (s->len > 1 ? s->len - 1 : 1);
        if (r % 8 == 1) {
            /* Across the start of chunk 1..nch-1. */
            s->off = (1 + h4 % (nch - 1)) * PCHUNK - back;
        } else if (r == 6 && size < PSIZE + PCHUNK) {
            /* From inside the value to a little past its end. */
            s->off = size - back;
        } else {
            s->off = h4 % (size - s->len + 1);
        }
    }
    if (s->off + s->len > s->size)
        s->size = s->off + s->len;
}

/* The bytes of step I: random, or (PACKED) runs that compress. */
static void pfill(uint8_t *b, size_t n, uint32_t i, int packed)
{
    uint64_t x = pmix(~(uint64_t)i) | 1;
    for (size_t j = 0; j < n; j++) {
        if (packed) {
            b[j] = (uint8_t)(i + j / 256);
            continue;
        }
        if (j % 8 == 0)
            x = rnd(&x) | 1;
        b[j] = (uint8_t)(x >> (8 * (j % 8)));
    }
}

/* Step I on the value M (PCAP bytes, zeros past *SIZE), as the child does
 * it to the store. */
static void papply(uint8_t *m, uint64_t *size, uint32_t i)
{
    struct pstep s;
    pstep(i, *size, &s);
    if (s.kind == P_WRITE || s.kind == P_CHUNK)
        pfill(m + s.off, s.len, i, s.packed);
    else if (s.kind == P_TRUNC && s.size < *size)
        memset(m + s.size, 0, (size_t)(*size - s.size));
    *size = s.size;
}

static void patch_child(const char *dir, uint32_t first, int out)
{
    stash_options_t o;
    stash_options_init(&o);
    o.memtable_size = 256 << 10;
    o.target_file_size = 128 << 10;
    o.level1_max_bytes = 512 << 10;
    stash_t *db;
    uint8_t *b = malloc(PSIZE);
    uint64_t size = 0;
    if (!b || stash_open(dir, &o, &db) != 0)
        _exit(3);
    /* Steps depend on the size the store holds: that of step FIRST - 1. */
    if (first > 1 && stash_value_size(db, "p", 1, &size) != 0)
        _exit(4);
    for (uint32_t i = first;; i++) {
        struct pstep s;
        pstep(i, size, &s);
        if (s.size > PCAP)
            _exit(5);
        int rc = 0;
        if (s.kind == P_WRITE || s.kind == P_CHUNK) {
            pfill(b, s.len, i, s.packed);
            rc = stash_pwrite(db, "p", 1, b, s.len, s.off);
        } else if (s.kind == P_TRUNC) {
            rc = stash_truncate(db, "p", 1, s.size);
        } else {
            rc = stash_compact_range(db, NULL, 0, NULL, 0);
        }
        if (rc != 0) {
            fprintf(stderr, "patch child: step %u: %s\n", i, stash_last_error(db));
            _exit(6);
        }
        size = s.size;
        if (i % 8 == 0 && stash_sync(db) != 0)
            _exit(7);
        if (write(out, &i, sizeof i) != sizeof i)
            _exit(8);
    }
}

/*
 * Reopen and find the step the store holds: M holds the state after step
 * *K (the one found last round, which the round's child started from) and
 * *SIZE its size; the store must hold that after some step from LO (the
 * last reported, or *K) to HI (one more: written, not yet reported).  M,
 * *SIZE and *K move on to the step found.  Returns 0, or -1 when the value
 * is no such state.  SYNCED only says, on failure, whether a synced step was
 * lost.
 */
static int patch_verify(const char *dir, uint8_t *m, uint64_t *size, uint32_t *k, uint32_t lo, uint32_t hi,
                        uint32_t synced)
{
    stash_t *db;
    if (stash_open(dir, NULL, &db) != 0) {
        fprintf(stderr, "patches: reopen failed: %s\n", stash_last_error(NULL));
        return -1;
    }
    uint8_t *b = malloc(PCAP), *p = malloc(PCAP), *found = malloc(PCAP);
    uint64_t have = 0;
    size_t got = 0;
    int ok = b && p && found;
    int rc = ok ? stash_value_size(db, "p", 1, &have) : -ENOMEM;
    if (rc == -ENOENT)
        rc = 0, have = 0;       /* killed before step 1 */
    if (ok && (rc != 0 || have > PCAP)) {
        fprintf(stderr, "patches: size: %s (%llu)\n", rc ? stash_last_error(db) : "too large",
                (unsigned long long)have);
        ok = 0;
    }
    if (ok && have && (stash_pread(db, "p", 1, b, (size_t)have, 0, &got) != 0 || got != have)) {
        fprintf(stderr, "patches: read: %s (%zu of %llu bytes)\n", stash_last_error(db), got,
                (unsigned long long)have);
        ok = 0;
    }
    /* Again in pieces that start inside chunks: that read takes a chunk's
     * stored bytes, and applies its patches, another way. */
    for (uint64_t o = 0; ok && o < have; o += got) {
        size_t n = have - o < 40000 ? (size_t)(have - o) : 40000;
        if (stash_pread(db, "p", 1, p + o, n, o, &got) != 0 || got != n) {
            fprintf(stderr, "patches: read at %llu: %s\n", (unsigned long long)o, stash_last_error(db));
            ok = 0;
        } else if (memcmp(p + o, b + o, n) != 0) {
            fprintf(stderr, "patches: bytes %llu.. differ read whole and in pieces\n", (unsigned long long)o);
            ok = 0;
        }
    }
    if (stash_close(db) != 0)
        ok = 0;
    /* The newest matching state: a step may leave the value as it was. */
    uint32_t at = *k, match = 0;
    uint64_t fsize = 0;
    for (uint32_t c = *k; ok && c <= hi; c++) {
        if (c > at)
            papply(m, size, at = c);
        if (c >= lo && *size == have && memcmp(m, b, (size_t)have) == 0) {
            match = c + 1;
            memcpy(found, m, (size_t)have);
            fsize = have;
        }
    }
    if (ok && !match) {
        /* For the report: where the value parts from step HI's state, and
         * which state it is, if any (replayed from the start). */
        uint64_t d = 0;
        while (d < have && d < *size && b[d] == m[d])
            d++;
        fprintf(stderr, "patches: the value (%llu bytes) is no state of steps %u..%u (last synced %u); "
                "step %u's has %llu bytes, the first difference at byte %llu\n", (unsigned long long)have,
                lo, hi, synced, hi, (unsigned long long)*size, (unsigned long long)d);
        memset(m, 0, PCAP);
        *size = 0;
        for (uint32_t c = 0; c <= hi + 64; c++) {
            if (c)
                papply(m, size, c);
            if (*size == have && memcmp(m, b, (size_t)have) == 0)
                fprintf(stderr, "patches: it is the state after step %u\n", c);
        }
        ok = 0;
    }
    if (ok) {
        memcpy(m, found, (size_t)fsize);
        memset(m + fsize, 0, PCAP - (size_t)fsize);
        *size = fsize;
        *k = match - 1;
    }
    free(b);
    free(p);
    free(found);
    return ok ? 0 : -1;
}

/* SEED0 is the seed the run began with, to name in a failure. */
static int patch_rounds(const char *dir, int rounds, uint64_t *seed, uint64_t seed0)
{
    uint8_t *m = calloc(1, PCAP);
    uint64_t size = 0;
    uint32_t k = 0;
    if (!m)
        return perror("calloc"), 1;
    for (int r = 0; r < rounds; r++) {
        int p[2];
        if (pipe(p) < 0)
            return free(m), perror("pipe"), 1;
        pid_t pid = fork();
        if (pid == 0) {
            close(p[0]);
            patch_child(dir, k + 1, p[1]);
        }
        close(p[1]);
        usleep((useconds_t)(5000 + rnd(seed) % 150000));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        uint32_t i, acked = k, synced = k;
        while (read(p[0], &i, sizeof i) == sizeof i) {
            acked = i;
            synced = i % 8 ? synced : i;
        }
        close(p[0]);
        if (WIFEXITED(status)) {
            fprintf(stderr, "patches round %d: child exited with %d before the kill\n", r, WEXITSTATUS(status));
            return free(m), 1;
        }
        /* A kill loses nothing the kernel has: every reported step is in,
         * synced or not, as in the other series. */
        if (patch_verify(dir, m, &size, &k, acked, acked + 1, synced) != 0) {
            fprintf(stderr, "patches round %d FAILED (replay with --seed %llu)\n", r, (unsigned long long)seed0);
            return free(m), 1;
        }
    }
    free(m);
    printf("crashtest: %d rounds of small writes into patched chunks, %u steps: ok\n", rounds, k);
    return 0;
}

int main(int argc, char **argv)
{
    int rounds = 50;
    uint64_t seed = (uint64_t)time(NULL);
    char dir[512] = "";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            snprintf(dir, sizeof dir, "%s", argv[++i]);
        else {
            fprintf(stderr, "usage: crashtest [--rounds N] [--seed S] [--dir DIR]\n");
            return 2;
        }
    }
    int own_dir = !*dir;
    if (own_dir) {
        const char *t = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/crashtest.XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            return 1;
        }
    }
    const uint64_t seed0 = seed;
    printf("crashtest: %d rounds, seed %llu (replay with --seed %llu)\n", rounds,
           (unsigned long long)seed, (unsigned long long)seed);
    fflush(stdout);
    uint32_t next = 1;
    long total_acked = 0;
    int failed = 0;
    for (int r = 0; r < rounds && !failed; r++) {
        int p[2];
        if (pipe(p) < 0) {
            perror("pipe");
            return 1;
        }
        pid_t pid = fork();
        if (pid == 0) {
            close(p[0]);
            child(dir, next, p[1]);
        }
        close(p[1]);
        /* Every other round runs longer, so that some reach long runs of
         * unsynced appends after the open's own flush. */
        useconds_t delay = (useconds_t)(2000 + rnd(&seed) % (r % 2 ? 60000 : 250000));
        usleep(delay);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        uint32_t b, acked = next - 1;
        while (read(p[0], &b, sizeof b) == sizeof b)
            acked = b;
        close(p[0]);
        if (WIFEXITED(status)) {
            fprintf(stderr, "round %d: child exited with %d before the kill\n", r, WEXITSTATUS(status));
            failed = 1;
            break;
        }
        long maxb = verify(dir, acked, next);
        if (maxb < 0) {
            fprintf(stderr, "round %d FAILED (seed %llu)\n", r, (unsigned long long)seed);
            failed = 1;
            break;
        }
        total_acked += (long)acked - (long)(next - 1);
        next = (uint32_t)maxb + 1;
    }
    if (own_dir && !failed) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", dir);
    } else if (failed) {
        fprintf(stderr, "store left for inspection in %s\n", dir);
    }
    printf("crashtest: %d rounds, %ld acknowledged batches checked: %s\n", rounds, total_acked,
           failed ? "FAILED" : "ok");
    if (!failed) {
        char ldir[600];
        snprintf(ldir, sizeof ldir, "%s.links", dir);
        failed = link_rounds(ldir, rounds / 3 + 1, &seed);
        if (!failed && own_dir) {
            char cmd[700];
            snprintf(cmd, sizeof cmd, "rm -rf '%s'", ldir);
            if (system(cmd) != 0)
                fprintf(stderr, "could not remove %s\n", ldir);
        } else if (failed) {
            fprintf(stderr, "store left for inspection in %s\n", ldir);
        }
    }
    if (!failed) {
        char vdir[600];
        snprintf(vdir, sizeof vdir, "%s.vlog", dir);
        failed = vlog_rounds(vdir, rounds / 3 + 1, &seed);
        if (!failed && own_dir) {
            char cmd[700];
            snprintf(cmd, sizeof cmd, "rm -rf '%s'", vdir);
            if (system(cmd) != 0)
                fprintf(stderr, "could not remove %s\n", vdir);
        } else if (failed) {
            fprintf(stderr, "store left for inspection in %s\n", vdir);
        }
    }
    if (!failed) {
        char pdir[600];
        snprintf(pdir, sizeof pdir, "%s.patch", dir);
        failed = patch_rounds(pdir, rounds / 3 + 1, &seed, seed0);
        if (!failed && own_dir) {
            char cmd[700];
            snprintf(cmd, sizeof cmd, "rm -rf '%s'", pdir);
            if (system(cmd) != 0)
                fprintf(stderr, "could not remove %s\n", pdir);
        } else if (failed) {
            fprintf(stderr, "store left for inspection in %s\n", pdir);
        }
    }
    return failed;
}
