/*
 * db.c - the engine: opening and recovering a store, the group-commit write
 * path, point reads, snapshots, iterators, the background thread, closing.
 *
 * State and its guards.  db->mu guards everything in struct stash except what
 * is marked "leader": the writer at the head of the write queue (the leader)
 * owns the log and the right to insert into the active memtable, and does its
 * I/O with mu released.  Readers take mu only long enough to take a reference
 * on the current view (the set of memtables) and read the visible sequence
 * number; the search itself is lock-free.
 *
 * Invariants.
 *   - A write is appended to the log before it is applied to the memtable,
 *     and becomes visible (last_seq covers it) only after both.
 *   - Every log older than the current one was fsynced before the current
 *     one was created, so after a crash only the newest log can be torn.
 *   - last_seq only grows; every entry with sequence <= last_seq is in one of
 *     the memtables of the current view (tables will join the view later).
 *   - Once a write could not be made durable (a failed fsync, or a log that
 *     could not be cut back after a failed append), bgerr is -EROFS and every
 *     later write fails with it: the store is read-only until reopened.
 */
#include "smartstash.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "batch.h"
#include "cache.h"
#include "coding.h"
#include "compact.h"
#include "err.h"
#include "iter.h"
#include "memtable.h"
#include "dbint.h"
#include "value.h"
#include "vlog.h"
#include "version.h"
#include "wal.h"

#define GROUP_MAX   (1u << 20)   /* bytes a commit group grows to */
#define GROUP_SMALL (128u << 10) /* a small first batch only takes this much more */
#define MAX_FROZEN  2            /* frozen memtables before writers wait for a flush */
#define LOG_WRITE_AHEAD (1u << 20) /* zeros kept ahead of the log so synced appends do
                                     not change its size (see wal_set_prealloc) */

/* What a reader sees: the active memtable, the frozen ones (newest first)
 * and the tables. */
struct view {
    atomic_int ref;
    vlog_t *vl;                 /* value files, pinned at vepoch */
    uint64_t vepoch;
    memtable_t *mem;
    version_t *ver;
    int nimm;
    memtable_t *imm[];
};

/* A frozen memtable, and the oldest log still needed once it is flushed. */
struct frozen {
    memtable_t *mt;
    uint64_t log_keep;
    uint64_t frozen_us;         /* when it was frozen */
    uint64_t bytes;             /* log bytes it holds */
};

/* One thread waiting in the write queue. */
struct writer {
    const stash_batch_t *b;   /* NULL: nothing to write (a sync request) */
    int sync;
    int force;                /* start a new memtable even if this one has room */
    int done;
    int rc;
    pthread_cond_t cv;
    struct writer *next;
};

struct stash_snapshot {
    uint64_t seq;
    struct stash_snapshot *prev, *next;
};

struct named {
    char name[STASH_SNAPSHOT_NAME_MAX + 1];
    uint64_t seq;
    int64_t ctime_ns;
    struct stash_snapshot *pin;
};

struct stash {
    char *dir;
    stash_options_t opt;
    int lockfd;

    pthread_mutex_t mu;
    struct writer *wq_head, *wq_tail;
    wal_t *log;                 /* leader */
    stash_batch_t *group;       /* leader: scratch for merged batches */
    memtable_t *mem;            /* replaced under mu by the leader */
    struct frozen *imm;         /* oldest first */
    int nimm, capimm;
    struct view *view;
    version_t *ver;             /* the current version (a reference) */
    uint64_t last_seq;
    uint64_t log_size;          /* bytes in the current log */
    uint64_t log_synced;        /* bytes of the current log known durable */
    int syncing;                /* an fsync of the log runs outside the queue */
    pthread_cond_t sync_cv;     /* ... and has ended */
    int bgerr;
    struct stash_snapshot snaps;/* list sentinel */

    pthread_t bg;
    int bg_running;
    atomic_int closing;         /* read by table work without mu */
    pthread_cond_t bg_cv;
    pthread_cond_t done_cv;     /* a flush or compaction finished */

    /* Tables.  work_mu serialises flushes and compactions (the background
     * thread's and stash_compact_range's); vs and cptr are theirs. */
    pthread_mutex_t work_mu;
    atomic_int work_wanted;     /* foreground callers waiting for work_mu */
    vset_t vs;
    sst_cache_t *cache;
    uint8_t *cptr[NLEVELS];
    size_t cplen[NLEVELS];
    struct cstats cst;          /* under mu */
    int work_err;               /* the last flush or compaction error, under mu */
    int work_err_flush;         /* and it was a flush's */
    char work_msg[256];         /* and its message */
    char ro_msg[256];           /* why the store turned read-only (bgerr), under mu */
    uint64_t st_stalls, st_stall_us;
    double drain_rate;          /* log bytes per µs that flushes drain (pace), under mu */
    uint64_t pace_us;           /* when the writes paced so far are due */
    uint64_t st_paced_us;

    /* Large values: keys are locked by stripe for read-modify-write, and
     * plain writes clean up the chunks of what they replace once any
     * chunked value may exist. */
    pthread_mutex_t keylock[KEY_STRIPES];
    atomic_int has_blobs;               /* or hard links */
    atomic_int plain_writers;           /* writers that saw has_blobs clear, on their way */
    vlog_t *vl;                         /* value files (vlog.h) */
    pthread_t vlog_thread;              /* collects their garbage: vlog_main */
    int vlog_running;
    atomic_int vlog_stop;
    pthread_cond_t vlog_cv;             /* wakes it to stop */
    pthread_mutex_t gc_mu;              /* one vlog_collect at a time */
    uint64_t vlog_freed, vlog_moved;    /* files given back, chunks moved; under mu */
    uint64_t vlog_scan_us;              /* the last collection took (stats), under mu */
    pthread_mutex_t linklock;           /* recursive; see db_link_hold */
    _Atomic uint64_t compact_entries;   /* read by compactions, as they go */

    /* Named snapshots: their records live under the engine's keys; each
     * holds a pinned snapshot in snaps.  Under named_mu. */
    pthread_mutex_t named_mu;
    struct named *named;
    int nnamed, capnamed;

    /* statistics, under mu */
    uint64_t st_puts, st_dels, st_groups, st_writers, st_syncs, st_logged, st_rotations;
    uint64_t st_idle;           /* compactions of a store at rest */
};

struct stash_iter {
    stash_t *db;
    struct view *v;
    iiter_t *m;
    uint64_t seq;
    int valid;
    int status;
    uint8_t *cur;               /* stored key of the current entry */
    size_t curlen, curcap;
    uint8_t *ukey;              /* its user key, when escaped (ukeyon) */
    size_t ukeycap;
    int ukeyon;
    struct ivalue *val;         /* the current value, decoded */
    uint8_t *ub;                /* stored form of the upper bound, or NULL */
    size_t ublen;
};

/* An iterator's decoded value; separate so the const accessor may fill it. */
struct ivalue {
    int ready;
    const uint8_t *p;
    size_t n;
    uint8_t *big;               /* an assembled chunked value */
    void *shared;               /* a hard link's shared entry */
    int err;                    /* a damaged envelope */
};

/* ------------------------------------------------------------------ */
/* options, errors, small helpers                                       */

void stash_options_init(stash_options_t *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->memtable_size = 64u << 20;
    o->compaction_interval = 60;
    o->wal_flush_interval = 10;
    o->compression_level = -1;
    o->block_cache_size = 8u << 20;
    o->bloom_bits_per_key = 10;
    o->create_if_missing = 1;
    o->read_only = 0;
    o->block_size = 2048;
    o->target_file_size = 64u << 20;
    o->level1_max_bytes = 64u << 20;
    o->l0_compaction_trigger = 4;
    o->l0_slowdown_trigger = 8;
    o->l0_stop_trigger = 12;
    o->max_open_files = 512;
    o->mmap_reads = 1;
    strcpy(o->snapshot_dir, ".snapshots");
}

static int check_options(const stash_options_t *o)
{
    if (o->memtable_size < (64u << 10))
        return err_set(-EINVAL, "memtable_size %zu is below the minimum of 65536", o->memtable_size);
    if (o->compression_level < -100 || o->compression_level > 22)
        return err_set(-EINVAL, "compression_level %d outside -100..22", o->compression_level);
    if (o->bloom_bits_per_key < 0 || o->bloom_bits_per_key > 32)
        return err_set(-EINVAL, "bloom_bits_per_key %d outside 0..32", o->bloom_bits_per_key);
    if (o->block_size < 256 || o->block_size > (16u << 20))
        return err_set(-EINVAL, "block_size %zu outside 256..16777216", o->block_size);
    if (o->l0_compaction_trigger < 1 || o->l0_slowdown_trigger < o->l0_compaction_trigger ||
        o->l0_stop_trigger < o->l0_slowdown_trigger)
        return err_set(-EINVAL, "level-0 triggers must satisfy 1 <= compaction <= slowdown <= stop");
    if (o->max_open_files < 1 || o->target_file_size < (64u << 10) || o->level1_max_bytes < (64u << 10))
        return err_set(-EINVAL, "max_open_files, target_file_size or level1_max_bytes too small");
    const char *sd = o->snapshot_dir;
    if (!memchr(sd, 0, sizeof o->snapshot_dir) || strchr(sd, '/') || !strcmp(sd, ".") || !strcmp(sd, "..") ||
        (unsigned char)sd[0] == 0xFF)
        return err_set(-EINVAL, "snapshot_dir is not a file name (no '/', not . or .., under 256 bytes)");
    if (o->holder && (strlen(o->holder) > 1024 || strchr(o->holder, '\n')))
        return err_set(-EINVAL, "holder must be one line of at most 1024 bytes");
    return 0;
}

static int check_key(const void *key, size_t klen)
{
    if (!key || klen == 0 || klen > STASH_MAX_KEY)
        return err_set(-EINVAL, "key length %zu outside 1..%u", key ? klen : 0, STASH_MAX_KEY);
    return 0;
}

const char *stash_strerror(int err)
{
    switch (err < 0 ? -err : err) {
    case 0: return "success";
    case ENOENT: return "not found";
    case EINVAL: return "invalid argument";
    case EBUSY: return "store is in use by another handle";
    case EIO: return "corruption or I/O error";
    case ENOSPC: return "no space left on device";
    case EROFS: return "store is read-only";
    case ENOMEM: return "out of memory";
    case EACCES: return "permission denied";
    case EEXIST: return "already exists";
    case ENOTDIR: return "not a directory";
    default: return "unknown error";
    }
}

const char *stash_last_error(stash_t *db)
{
    (void)db;
    return err_get();
}

void stash_free(void *p)
{
    free(p);
}

static int sys_err(int e)
{
    return e ? -e : -EIO;
}

/* ------------------------------------------------------------------ */
/* views                                                                */

static void view_unref(struct view *v)
{
    if (!v || atomic_fetch_sub_explicit(&v->ref, 1, memory_order_acq_rel) != 1)
        return;
    mt_unref(v->mem);
    version_unref(v->ver);
    for (int i = 0; i < v->nimm; i++)
        mt_unref(v->imm[i]);
    if (v->vl)
        vlog_unpin(v->vl, v->vepoch);
    free(v);
}

/* Build a view of the current memtables; called with mu held. */
static struct view *view_make(stash_t *db)
{
    struct view *v = malloc(sizeof *v + (size_t)db->nimm * sizeof(memtable_t *));
    if (!v)
        return NULL;
    atomic_init(&v->ref, 1);
    v->vl = db->vl;
    v->vepoch = v->vl ? vlog_pin(v->vl) : 0;
    v->mem = db->mem;
    mt_ref(v->mem);
    v->ver = db->ver;
    version_ref(v->ver);
    v->nimm = db->nimm;
    for (int i = 0; i < db->nimm; i++) {
        v->imm[i] = db->imm[db->nimm - 1 - i].mt;
        mt_ref(v->imm[i]);
    }
    return v;
}

/* Take a reference on the current view and the visible sequence number. */
static struct view *view_get(stash_t *db, uint64_t *seq)
{
    pthread_mutex_lock(&db->mu);
    struct view *v = db->view;
    atomic_fetch_add_explicit(&v->ref, 1, memory_order_relaxed);
    if (seq)
        *seq = db->last_seq;
    pthread_mutex_unlock(&db->mu);
    return v;
}

/* ------------------------------------------------------------------ */
/* the write path                                                       */

static int apply_entry(void *arg, uint64_t seq, int type, const uint8_t *key, size_t klen,
                       const uint8_t *val, size_t vlen)
{
    return mt_add(arg, seq, type, key, klen, val, vlen);
}

static int view_lookup(struct view *v, uint64_t seq, const uint8_t *ik, size_t iklen,
                       void **val, size_t *vlen);

/* An empty memtable for these options: a filter of 1/64 of its size, and
 * segments of a quarter of it (see memtable.h).  More segments make random
 * inserts cheaper still but seeks dearer (a seek searches every segment):
 * four is the balance measured with stash-bench. */
static memtable_t *new_memtable(const stash_options_t *o)
{
    size_t m = o->memtable_size;
    return mt_new(m / 64, m / 4);
}

/* Wake the background thread: a memtable waits to be flushed. */
static void schedule_flush(stash_t *db)
{
    pthread_cond_signal(&db->bg_cv);
}

/* Install a new view after the memtables or the version changed (mu held). */
static int refresh_view(stash_t *db)
{
    struct view *v = view_make(db);
    if (!v)
        return -ENOMEM;
    view_unref(db->view);
    db->view = v;
    return 0;
}

static uint64_t now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000;
}

/* Has the current log taken records since the last fsync started?  (mu held) */
static int log_dirty(const stash_t *db)
{
    return db->log_size > db->log_synced;
}

/* Turn the store read-only (mu held): a write failed in a way that leaves
 * the log or the MANIFEST in a state it cannot vouch for.  WHY is kept for
 * the error every later write gets. */
static void go_read_only(stash_t *db, const char *why)
{
    if (!db->bgerr)
        snprintf(db->ro_msg, sizeof db->ro_msg, "%s", why);
    db->bgerr = -EROFS;
}

/* The error of a write refused because the store is read-only (mu held). */
static int read_only_error(stash_t *db)
{
    return err_set(db->bgerr, "store %s is read-only after an earlier write failed: %s", db->dir,
                   db->ro_msg);
}

/*
 * Called by the leader with mu held before it writes: keep memory and read
 * cost bounded by making writers wait while too many memtables wait for a
 * flush or level 0 holds too many tables, and slow them down a little as
 * level 0 fills up.
 */
static int throttle(stash_t *db)
{
    int slowed = 0;
    uint64_t t0 = 0;
    for (;;) {
        if (db->bgerr || db->closing)
            return db->bgerr ? read_only_error(db) : 0;
        int l0 = db->ver->n[0];
        /* On a disk too full for the last flush or compaction, level 0 may
         * not shrink for a long while, and stopping writers would not make
         * room: they go on while memtables can still be frozen, and get the
         * error once they cannot (then a flush, too, failed for room).
         * Stopped for good, a store whose compaction needed more room than
         * a full disk had left refused every write after space was freed. */
        int l0_stop = l0 >= db->opt.l0_stop_trigger && db->work_err != -ENOSPC;
        if (db->nimm >= MAX_FROZEN || l0_stop) {
            /* Waiting would not help while tables cannot be written: level
             * 0 does not shrink while compactions fail, and memtables wait
             * for good once a flush failed.  After a failed compaction the
             * waiting memtable is flushed next (one failed for room, which
             * leaves the flushes their room, does not stop writers). */
            if (db->work_err && (l0_stop || db->work_err_flush)) {
                pthread_cond_signal(&db->bg_cv);     /* to try again now */
                return err_set(db->work_err, "store %s: cannot write tables: %s", db->dir, db->work_msg);
            }
            if (!t0)
                t0 = now_us();
            pthread_cond_signal(&db->bg_cv);
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            t.tv_sec += 1;
            pthread_cond_timedwait(&db->done_cv, &db->mu, &t);
            continue;
        }
        if (l0 >= db->opt.l0_slowdown_trigger && !slowed) {
            if (!t0)
                t0 = now_us();
            slowed = 1;
            pthread_mutex_unlock(&db->mu);
            usleep(1000);
            pthread_mutex_lock(&db->mu);
            continue;
        }
        break;
    }
    if (t0) {
        db->st_stalls++;
        db->st_stall_us += now_us() - t0;
    }
    return 0;
}

/*
 * Called by the leader with mu held before it logs BYTES: while a frozen
 * memtable waits for its flush, or level 0 is past its slowdown trigger,
 * the log is paced at the rate flushes have been draining memtables
 * (measured from freeze to the end of the flush, so time spent behind a
 * compaction counts), at half that rate past the slowdown trigger.  The
 * active memtable then fills about when the flush before it ends, and the
 * wait is spread over the writes in steps of a millisecond or more, rather
 * than a run at full speed into a stop of a second at the memtable switch.
 */
static void pace(stash_t *db, size_t bytes)
{
    int behind = db->nimm > 0, slow = db->ver->n[0] >= db->opt.l0_slowdown_trigger;
    if ((!behind && !slow) || db->drain_rate <= 0 || db->closing) {
        db->pace_us = 0;
        return;
    }
    double rate = slow ? db->drain_rate / 2 : db->drain_rate * 1.5;
    uint64_t now = now_us();
    if (db->pace_us < now)
        db->pace_us = now;
    db->pace_us += (uint64_t)((double)bytes / rate);
    if (db->pace_us < now + 1000)
        return;
    uint64_t wait = db->pace_us - now;
    if (wait > 200000)
        wait = 200000;
    db->st_paced_us += wait;
    pthread_mutex_unlock(&db->mu);
    usleep((useconds_t)wait);
    pthread_mutex_lock(&db->mu);
}

/*
 * Called by the leader with mu held: when the active memtable is full, freeze
 * it and start a new memtable and a new log.  The old log is fsynced first,
 * so only the newest log can ever be torn by a crash.
 */
#define FORCE_IDLE 2   /* make_room's FORCE from idle_compact: never wait */

static int make_room(stash_t *db, int force)
{
    if (!force && mt_memory(db->mem) < db->opt.memtable_size)
        return 0;
    if (force && mt_count(db->mem) == 0)
        return 0;
    /* The background thread freezing the memtable of a store at rest must
     * not wait in throttle for flushes only it would do: if writes came
     * back meanwhile and filled the queue, it leaves the memtable be. */
    if (force == FORCE_IDLE && (db->nimm > 0 || db->ver->n[0] >= db->opt.l0_slowdown_trigger))
        return 0;
    int rc = throttle(db);
    if (rc)
        return rc;
    uint64_t num = vset_new_file(&db->vs);
    wal_t *old = db->log, *nw = NULL;
    int dirty = log_dirty(db);
    pthread_mutex_unlock(&db->mu);
    wal_set_prealloc(old, 0);   /* retiring: no zeros ahead */
    rc = dirty ? vlog_sync(db->vl) : 0;
    if (rc == 0 && dirty)
        rc = wal_sync(old);
    int synced_ok = rc == 0;
    if (rc == 0 && (rc = wal_create(db->dir, num, &nw)) == 0)
        wal_set_prealloc(nw, LOG_WRITE_AHEAD);
    memtable_t *mt = rc == 0 ? new_memtable(&db->opt) : NULL;
    if (rc == 0 && !mt)
        rc = err_set(-ENOMEM, "out of memory for a new memtable");
    pthread_mutex_lock(&db->mu);
    if (rc == 0 && db->nimm == db->capimm) {
        int cap = db->capimm ? 2 * db->capimm : 8;
        struct frozen *f = realloc(db->imm, (size_t)cap * sizeof *f);
        if (!f)
            rc = err_set(-ENOMEM, "out of memory for the frozen memtable list");
        else {
            db->imm = f;
            db->capimm = cap;
        }
    }
    if (rc) {
        if (!synced_ok)
            go_read_only(db, err_get());
        if (nw) {
            wal_close(nw);
            char path[PATH_MAX];
            wal_path(path, sizeof path, db->dir, num);
            unlink(path);
        }
        mt_unref(mt);
        return rc;
    }
    db->imm[db->nimm].bytes = db->log_size;
    db->imm[db->nimm].frozen_us = now_us();
    db->log_size = db->log_synced = wal_size(nw);
    db->imm[db->nimm].mt = db->mem;
    db->imm[db->nimm].log_keep = num;
    db->nimm++;
    db->mem = mt;
    db->log = nw;
    db->st_rotations++;
    if (refresh_view(db) < 0) {
        /* Without a new view readers would miss the new memtable. */
        go_read_only(db, "out of memory for a new view");
        rc = err_set(-ENOMEM, "out of memory for a new view; store is now read-only");
    }
    /* A sync outside the queue may still hold the old log's descriptor. */
    while (db->syncing)
        pthread_cond_wait(&db->sync_cv, &db->mu);
    pthread_mutex_unlock(&db->mu);
    wal_close(old);
    pthread_mutex_lock(&db->mu);
    schedule_flush(db);
    return rc;
}

/*
 * The leader merges the batches of the writers queued behind it into one
 * log record.  Returns the last writer taken and sets *out to the batch to
 * log (the leader's own when nobody else joined).
 */
static struct writer *build_group(stash_t *db, struct writer *w, const stash_batch_t **out,
                                  int *sync, int *rc)
{
    const stash_batch_t *g = w->b;
    size_t len = 0, limit;
    struct writer *last = w;
    *sync = w->sync;
    *rc = 0;
    if (g)
        batch_data(g, &len);
    limit = len <= GROUP_SMALL ? len + GROUP_SMALL : GROUP_MAX;
    for (struct writer *p = w->next; p; p = p->next) {
        size_t plen = 0;
        if (p->b)
            batch_data(p->b, &plen);
        if (len + plen > limit)
            break;
        if (p->b && stash_batch_count(p->b)) {
            if (g != db->group) {
                stash_batch_clear(db->group);
                if (g && (*rc = batch_append(db->group, g)) < 0)
                    break;
                g = db->group;
            }
            if ((*rc = batch_append(db->group, p->b)) < 0)
                break;
        }
        len += plen;
        *sync |= p->sync;
        last = p;
    }
    *out = g;
    return last;
}

/*
 * Called with mu held, out of the write queue: return once log LOGNUM is
 * durable up to TARGET bytes.  One fdatasync runs at a time, by whichever
 * waiter finds none running, and covers everything appended before it
 * started; the others wait for it, so syncs that arrive while one runs
 * share the next.  Meanwhile the queue goes on: writers that need no sync
 * never wait for the disk.  A rotated log was synced whole by make_room.
 */
static int wait_synced(stash_t *db, uint64_t lognum, uint64_t target)
{
    for (;;) {
        if (db->bgerr)
            return read_only_error(db);
        if (!db->log || wal_number(db->log) != lognum || db->log_synced >= target)
            return 0;
        if (db->syncing) {
            pthread_cond_wait(&db->sync_cv, &db->mu);
            continue;
        }
        db->syncing = 1;
        uint64_t upto = db->log_size;
        int fd = wal_fd(db->log);
        pthread_mutex_unlock(&db->mu);
        /* Value files first: a pointer is never durable before its bytes. */
        int rc = vlog_sync(db->vl);
        if (rc == 0)
            rc = wal_sync_fd(fd, lognum);
        pthread_mutex_lock(&db->mu);
        db->syncing = 0;
        pthread_cond_broadcast(&db->sync_cv);
        if (rc) {
            go_read_only(db, err_get());
            return rc;
        }
        if (db->log && wal_number(db->log) == lognum && upto > db->log_synced)
            db->log_synced = upto;
    }
}

static int do_write(stash_t *db, const stash_batch_t *b, int sync, int force)
{
    struct writer w = { .b = b, .sync = sync, .force = force };
    pthread_cond_init(&w.cv, NULL);
    pthread_mutex_lock(&db->mu);
    if (db->wq_tail)
        db->wq_tail->next = &w;
    else
        db->wq_head = &w;
    db->wq_tail = &w;
    while (!w.done && db->wq_head != &w)
        pthread_cond_wait(&w.cv, &db->mu);
    if (w.done) {
        pthread_mutex_unlock(&db->mu);
        pthread_cond_destroy(&w.cv);
        return w.rc;
    }

    /* This thread leads a commit group. */
    int rc = db->bgerr;
    if (rc)
        read_only_error(db);
    else
        rc = make_room(db, force);
    struct writer *last = &w;
    int must_sync = 0;
    uint64_t lognum = 0, target = 0;
    if (rc == 0) {
        const stash_batch_t *g;
        int gsync;
        last = build_group(db, &w, &g, &gsync, &rc);
        if (rc == 0 && g) {
            size_t glen;
            batch_data(g, &glen);
            pace(db, glen);
        }
        uint32_t count = g ? (uint32_t)stash_batch_count(g) : 0;
        memtable_t *mem = db->mem;
        wal_t *log = db->log;
        uint64_t seq = db->last_seq + 1, synced = db->log_synced;
        size_t len = 0;
        must_sync = gsync || db->opt.wal_flush_interval == 0;
        if (rc == 0 && count && db->last_seq + count > SEQ_MAX)
            rc = err_set(-EOVERFLOW, "store %s has used up its sequence numbers", db->dir);
        if (rc == 0) {
            pthread_mutex_unlock(&db->mu);
            const uint8_t *data = NULL;
            wal_note_synced(log, synced);
            if (count) {
                batch_set_seq((stash_batch_t *)g, seq);
                data = batch_data(g, &len);
                rc = wal_append(log, data, len);
            }
            /* The fdatasync itself runs after the queue moves on. */
            if (rc == 0 && must_sync) {
                rc = wal_sync_start(log);
            }
            if (rc == 0 && count)
                rc = batch_decode(data, len, apply_entry, mem, NULL, NULL);
            pthread_mutex_lock(&db->mu);
            if (rc == 0) {
                db->last_seq += count;
                db->log_size = wal_size(log);
                lognum = wal_number(log);
                target = db->log_size;
                db->st_groups += count > 0;
                db->st_logged += len;
                db->st_syncs += must_sync;
            } else if (rc != -ENOSPC || !count) {
                /* An append the log could not take back leaves it in an
                 * unknown state: stop writing. */
                go_read_only(db, err_get());
            }
        }
        if (g == db->group)
            stash_batch_clear(db->group);
    }

    /* Take the group off the queue and let the next leader go.  Writers
     * that need no sync are done; the others wait for the fsync below. */
    int waiting = rc == 0 && must_sync;
    for (;;) {
        struct writer *p = db->wq_head;
        db->wq_head = p->next;
        db->st_writers++;
        if (p != &w && !waiting) {
            p->rc = rc;
            p->done = 1;
            pthread_cond_signal(&p->cv);
        }
        if (p == last)
            break;
    }
    if (db->wq_head)
        pthread_cond_signal(&db->wq_head->cv);
    else
        db->wq_tail = NULL;
    if (waiting) {
        rc = wait_synced(db, lognum, target);
        /* The group's chain, w to last, is still linked; a woken writer
         * returns at once, so each next pointer is read before waking. */
        for (struct writer *p = last == &w ? NULL : w.next, *nx; p; p = nx) {
            nx = p == last ? NULL : p->next;
            p->rc = rc;
            p->done = 1;
            pthread_cond_signal(&p->cv);
        }
    }
    pthread_mutex_unlock(&db->mu);
    pthread_cond_destroy(&w.cv);
    return rc;
}

pthread_mutex_t *db_keylock(stash_t *db, const uint8_t *ik, size_t iklen)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < iklen; i++)
        h = (h ^ ik[i]) * 16777619u;
    return &db->keylock[h % KEY_STRIPES];
}

/*
 * From now on the store may hold chunked values or hard links (has_blobs),
 * so plain puts and deletes must clean up what they replace.  A writer that
 * saw the flag clear and is still on its way would replace what the caller
 * is about to make without cleaning it up (its chunks would stay for good):
 * wait for those first.  Called before a change that may make the store's
 * first blob reads the keys it touches.
 */
void db_blobs_begin(stash_t *db)
{
    if (atomic_load(&db->has_blobs))
        return;
    atomic_store(&db->has_blobs, 1);
    for (int i = 0; atomic_load(&db->plain_writers); i++) {
        if (i < 100)
            sched_yield();
        else
            nanosleep(&(struct timespec){0, 100000}, NULL);
    }
}

int db_commit(stash_t *db, stash_batch_t *b, int sync)
{
    if (batch_has_blobs(b))
        atomic_store(&db->has_blobs, 1);
    return do_write(db, b, sync, 0);
}

/* ---- hard links ---- */

void db_link_hold(stash_t *db, int *held)
{
    if (!*held) {
        pthread_mutex_lock(&db->linklock);
        *held = 1;
    }
}

void db_link_release(stash_t *db, int *held)
{
    if (*held) {
        pthread_mutex_unlock(&db->linklock);
        *held = 0;
    }
}

int db_resolve(struct view *v, uint64_t seq, struct envelope *e, void **raw, size_t *rlen)
{
    uint8_t lk[LINK_KEY_LEN];
    uint64_t id = e->link;
    link_key(lk, id);
    *raw = NULL;
    int rc = db_view_get(v, seq, lk, sizeof lk, raw, rlen);
    if (rc == -ENOENT)
        return err_set(-EIO, "a hard link names value %016llx, which is missing", (unsigned long long)id);
    if (rc)
        return rc;
    if (link_decode(*raw, *rlen, id, e) < 0) {
        free(*raw);
        *raw = NULL;
        return err_set(-EIO, "damaged shared entry of hard-linked value %016llx", (unsigned long long)id);
    }
    return 0;
}

struct blast {
    const uint8_t *key;
    size_t klen;
    int type;                   /* of the last entry for KEY, -1: none */
    const uint8_t *val;
    size_t vlen;
};

static int blast_fn(void *arg, uint64_t seq, int type, const uint8_t *key, size_t klen,
                    const uint8_t *val, size_t vlen)
{
    struct blast *l = arg;
    if (klen == l->klen && !memcmp(key, l->key, klen)) {
        l->type = type;
        l->val = val;
        l->vlen = vlen;
    }
    return 0;
}

/* KEY's value as batch B leaves it: 0 with a malloc'd copy, -ENOENT when B
 * deletes it, 1 when B does not touch it, or -ENOMEM. */
static int batch_last(const stash_batch_t *b, const uint8_t *key, size_t klen, void **val, size_t *vlen)
{
    size_t len;
    const uint8_t *data = batch_data(b, &len);
    struct blast l = {key, klen, -1, NULL, 0};
    if (batch_decode(data, len, blast_fn, &l, NULL, NULL) < 0 || l.type < 0)
        return 1;
    if (l.type != KT_PUT)
        return -ENOENT;
    if (!(*val = malloc(l.vlen ? l.vlen : 1)))
        return -ENOMEM;
    memcpy(*val, l.val, l.vlen);
    *vlen = l.vlen;
    return 0;
}

/* One name of shared value ID goes: its back reference is deleted and the
 * name count lowered, the value with it when it was the last. */
static int drop_value(stash_t *db, stash_batch_t *b, const struct envelope *e);

static int drop_link(stash_t *db, stash_batch_t *b, const uint8_t *ik, size_t iklen, uint64_t id)
{
    uint8_t lk[LINK_KEY_LEN], *rk = malloc(LINK_KEY_LEN + iklen);
    if (!rk)
        return -ENOMEM;
    link_key(lk, id);
    int rc = batch_del_raw(b, rk, lref_key(rk, id, ik, iklen));
    free(rk);
    void *raw = NULL;
    size_t rlen = 0;
    int r = rc ? rc : batch_last(b, lk, sizeof lk, &raw, &rlen);
    if (r == 1) {
        uint64_t seq;
        struct view *v = db_view(db, NULL, &seq);
        r = db_view_get(v, seq, lk, sizeof lk, &raw, &rlen);
        db_view_put(v);
    }
    if (r == -ENOENT)
        return 0;               /* already gone: nothing to count down */
    if (r)
        return r;
    struct envelope e;
    if (link_decode(raw, rlen, id, &e) < 0) {
        /* Damaged: it cannot be counted down, and its other names keep
         * reading -EIO, but this name may still go, as a file with
         * unreadable contents can still be removed. */
        rc = 0;
    } else if (e.nlink <= 1) {
        rc = batch_del_raw(b, lk, sizeof lk);
        if (rc == 0 && e.kind == VK_CHUNKED)
            rc = drop_value(db, b, &e);
    } else {
        e.nlink--;
        e.st.ctime_ns = now_ns();
        uint8_t *hdr = malloc(env_header_max(e.xlen));
        rc = hdr ? batch_put_raw(b, lk, sizeof lk, hdr, env_encode_header(&e, hdr), e.data,
                                 e.kind == VK_CHUNKED ? 0 : (size_t)e.st.size)
                 : -ENOMEM;
        free(hdr);
    }
    free(raw);
    return rc;
}

int move_lref(stash_batch_t *b, uint64_t id, const uint8_t *from, size_t flen, const uint8_t *to, size_t tlen)
{
    uint8_t *rk = malloc(LINK_KEY_LEN + (flen > tlen ? flen : tlen));
    if (!rk)
        return -ENOMEM;
    int rc = batch_del_raw(b, rk, lref_key(rk, id, from, flen));
    if (rc == 0)
        rc = batch_put_raw(b, rk, lref_key(rk, id, to, tlen), NULL, 0, NULL, 0);
    free(rk);
    return rc;
}

int db_drop_old(stash_t *db, stash_batch_t *b, const uint8_t *ik, size_t iklen, const struct envelope *old)
{
    if (old->link)
        return drop_link(db, b, ik, iklen, old->link);
    if (old->kind == VK_CHUNKED)
        return drop_value(db, b, old);
    return 0;
}

int db_reserved(stash_t *db, const uint8_t *ik, size_t iklen)
{
    const char *sd = db->opt.snapshot_dir;
    size_t n = strlen(sd);
    if (!n || iklen < n || memcmp(ik, sd, n) || (iklen > n && ik[n] != '/'))
        return 0;
    return err_set(-EINVAL, "key %.*s is reserved: %s is where stashfs shows the store's snapshots "
                   "(option snapshot_dir)", (int)(iklen > 200 ? 200 : iklen), (const char *)ik, sd);
}

int db_writable(stash_t *db)
{
    return db->opt.read_only ? err_set(-EROFS, "store %s is open read-only", db->dir) : 0;
}

/* Add to B the deletion of chunk I of E and of its patch record. */
static int drop_index(stash_batch_t *b, const struct envelope *e, uint64_t i)
{
    uint8_t ck[CHUNK_KEY_LEN];
    ckey(ck, e, i);
    int rc = batch_del_raw(b, ck, sizeof ck);
    if (rc == 0 && e->tagged) {
        pkey(ck, e, i);
        rc = batch_del_raw(b, ck, sizeof ck);
    }
    return rc;
}

static int chunk_walk(struct view *v, uint64_t seq, const struct envelope *e, uint64_t from, uint64_t last,
                      int (*fn)(void *arg, uint64_t i, int there), void *arg);

struct dropper {
    stash_batch_t *b;
    const struct envelope *e;
    int rc;
};

static int drop_one(void *arg, uint64_t i, int there)
{
    struct dropper *d = arg;
    if (there)
        d->rc = drop_index(d->b, d->e, i);
    return d->rc != 0;
}

/* Below this many indexes a range is dropped index by index: cheaper than
 * starting a merged iterator. */
#define DROP_WALK_MIN 64

int db_drop_chunks(stash_t *db, stash_batch_t *b, const struct envelope *e, uint64_t from, uint64_t last)
{
    if (from > last)
        return 0;
    if (last - from < DROP_WALK_MIN) {
        int rc = 0;
        for (uint64_t i = from; rc == 0 && i <= last; i++)
            rc = drop_index(b, e, i);
        return rc;
    }
    uint64_t seq;
    struct view *v = db_view(db, NULL, &seq);
    struct dropper d = {b, e, 0};
    int rc = chunk_walk(v, seq, e, from, last, drop_one, &d);
    db_view_put(v);
    return rc ? rc : d.rc;
}

/* Add to B the deletion of stored chunked value E: its chunks and its
 * owner record. */
static int drop_value(stash_t *db, stash_batch_t *b, const struct envelope *e)
{
    uint8_t bk[BLOB_KEY_LEN];
    uint64_t n = (e->st.size + CHUNK_SIZE - 1) / CHUNK_SIZE;
    int rc = n ? db_drop_chunks(db, b, e, 0, n - 1) : 0;
    blob_key(bk, e->gen);
    return rc ? rc : batch_del_raw(b, bk, sizeof bk);
}

int batch_drop_chunks(stash_batch_t *b, const struct envelope *e)
{
    uint8_t ck[CHUNK_KEY_LEN], bk[BLOB_KEY_LEN];
    int rc = 0;
    for (uint64_t i = 0; rc == 0 && i < (e->st.size + CHUNK_SIZE - 1) / CHUNK_SIZE; i++) {
        ckey(ck, e, i);
        rc = batch_del_raw(b, ck, sizeof ck);
        if (rc == 0 && e->tagged) {
            pkey(ck, e, i);
            rc = batch_del_raw(b, ck, sizeof ck);
        }
    }
    blob_key(bk, e->gen);
    return rc ? rc : batch_del_raw(b, bk, sizeof bk);
}

struct cleanup {
    stash_t *db;
    int bad;                /* a put of a reserved key */
    uint64_t mask;          /* stripes of the batch's user keys */
    struct view *v;
    uint64_t seq;
    stash_batch_t *out;
    int held;               /* the link lock */
    int rc;
    /* The user keys the batch changed so far (open addressing, NSEEN
     * slots, a power of two) and the last entry for each: a key changed
     * again replaces that entry, not the stored value. */
    struct seen { const uint8_t *key, *val; size_t klen, vlen; int type; } *seen;
    size_t nseen;
};

static uint64_t key_hash(const uint8_t *k, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    while (n--)
        h = (h ^ *k++) * 1099511628211ull;
    return h;
}

static int stripe_of(void *arg, uint64_t seq, int type, const uint8_t *key, size_t klen,
                     const uint8_t *val, size_t vlen)
{
    struct cleanup *c = arg;
    if (type == KT_PUT && !c->bad && db_reserved(c->db, key, klen))
        c->bad = -EINVAL;
    if (!key_is_sys(key, klen))
        c->mask |= 1ull << (db_keylock(c->db, key, klen) - c->db->keylock);
    return 0;
}

static int drop_replaced(void *arg, uint64_t seq, int type, const uint8_t *key, size_t klen,
                         const uint8_t *val, size_t vlen)
{
    struct cleanup *c = arg;
    void *old;
    size_t olen;
    struct envelope e;
    if (key_is_sys(key, klen))
        return 0;
    struct seen *sl = &c->seen[key_hash(key, klen) & (c->nseen - 1)];
    while (sl->key && !(sl->klen == klen && !memcmp(sl->key, key, klen)))
        sl = sl == &c->seen[c->nseen - 1] ? c->seen : sl + 1;
    if (sl->key) {
        /* Changed earlier in this batch: the stored value went then; what
         * that entry put goes now (a large put's chunks). */
        int rc = 0;
        if (sl->type == KT_PUT && env_decode(sl->val, sl->vlen, &e) == 0 && e.kind == VK_CHUNKED)
            rc = batch_drop_chunks(c->out, &e);
        sl->type = type;
        sl->val = val;
        sl->vlen = vlen;
        return rc;
    }
    *sl = (struct seen){key, val, klen, vlen, type};
    int rc = view_lookup(c->v, c->seq, key, klen, &old, &olen);
    if (rc == -ENOENT)
        return 0;
    if (rc)
        return rc;
    if (env_decode(old, olen, &e) == 0) {
        if (e.link)
            db_link_hold(c->db, &c->held);
        rc = db_drop_old(c->db, c->out, key, klen, &e);
    }
    free(old);
    return rc;
}

/*
 * Commit a batch of user writes.  Once the store may hold chunked values or
 * hard links, a put or delete that replaces one must also drop its chunks or
 * count down its names: the keys' stripes are locked, the values they
 * replace looked up, and the changes committed in the same batch.
 */
static int write_user(stash_t *db, stash_batch_t *b, int sync)
{
    size_t len;
    const uint8_t *data = batch_data(b, &len);
    struct cleanup c = {.db = db};
    batch_decode(data, len, stripe_of, &c, NULL, NULL);
    if (c.bad)
        return c.bad;
    if (batch_has_blobs(b))
        db_blobs_begin(db);
    if (!atomic_load(&db->has_blobs)) {
        /* Counted while on the way (db_blobs_begin), and the flag read
         * again once counted. */
        atomic_fetch_add(&db->plain_writers, 1);
        if (!atomic_load(&db->has_blobs)) {
            int rc = do_write(db, b, sync, 0);
            atomic_fetch_sub(&db->plain_writers, 1);
            return rc;
        }
        atomic_fetch_sub(&db->plain_writers, 1);
    }
    for (int i = 0; i < KEY_STRIPES; i++)
        if (c.mask & (1ull << i))
            pthread_mutex_lock(&db->keylock[i]);
    int rc;
    if (!(c.out = stash_batch_new()) || batch_append(c.out, b) < 0) {
        rc = err_set(-ENOMEM, "out of memory");
    } else {
        size_t n0 = stash_batch_count(c.out);
        for (c.nseen = 2; c.nseen < 2 * n0; c.nseen *= 2)
            ;
        c.v = db_view(db, NULL, &c.seq);
        rc = (c.seen = calloc(c.nseen, sizeof *c.seen)) ? batch_decode(data, len, drop_replaced, &c, NULL, NULL)
                                                        : err_set(-ENOMEM, "out of memory");
        free(c.seen);
        view_unref(c.v);
        if (rc == 0)
            rc = do_write(db, stash_batch_count(c.out) == n0 ? b : c.out, sync, 0);
        db_link_release(db, &c.held);
    }
    stash_batch_free(c.out);
    for (int i = KEY_STRIPES - 1; i >= 0; i--)
        if (c.mask & (1ull << i))
            pthread_mutex_unlock(&db->keylock[i]);
    return rc;
}

int stash_write(stash_t *db, stash_batch_t *b, int flags)
{
    if (!db || !b || (flags & ~STASH_SYNC))
        return err_set(-EINVAL, "stash_write: bad arguments");
    if (db->opt.read_only)
        return err_set(-EROFS, "store %s is open read-only", db->dir);
    if (stash_batch_count(b) == 0)
        return (flags & STASH_SYNC) ? do_write(db, NULL, 1, 0) : 0;
    return write_user(db, b, flags & STASH_SYNC);
}

static int write_one(stash_t *db, int type, const void *key, size_t klen,
                     const void *val, size_t vlen)
{
    if (!db)
        return err_set(-EINVAL, "NULL store handle");
    int rc = check_key(key, klen);
    if (rc)
        return rc;
    if (vlen > STASH_MAX_VALUE || (vlen && !val))
        return err_set(-EINVAL, "value length %zu over the limit of %u", vlen, STASH_MAX_VALUE);
    if (db->opt.read_only)
        return err_set(-EROFS, "store %s is open read-only", db->dir);
    if (type == KT_PUT && vlen > INLINE_MAX)
        return db_put_large(db, key, klen, val, vlen, 0);
    stash_batch_t *b = stash_batch_new();
    if (!b)
        return err_set(-ENOMEM, "out of memory");
    rc = type == KT_PUT ? stash_batch_put(b, key, klen, val, vlen) : stash_batch_delete(b, key, klen);
    if (rc == 0)
        rc = write_user(db, b, 0);
    stash_batch_free(b);
    return rc;
}

int stash_put(stash_t *db, const void *key, size_t klen, const void *val, size_t vlen)
{
    return write_one(db, KT_PUT, key, klen, val, vlen);
}

int stash_delete(stash_t *db, const void *key, size_t klen)
{
    return write_one(db, KT_DEL, key, klen, NULL, 0);
}

int stash_sync(stash_t *db)
{
    if (!db)
        return err_set(-EINVAL, "NULL store handle");
    if (db->opt.read_only)
        return 0;
    return do_write(db, NULL, 1, 0);
}

/* ------------------------------------------------------------------ */
/* reads                                                                */

/* Look stored key IK up at SEQ in view V: 0 and a malloc'd copy of the
 * stored value, -ENOENT, or another negative errno. */
static int view_lookup(struct view *v, uint64_t seq, const uint8_t *ik, size_t iklen,
                       void **val, size_t *vlen)
{
    const void *p = NULL;
    size_t n = 0;
    int r = mt_get(v->mem, ik, iklen, seq, &p, &n);
    for (int i = 0; r < 0 && i < v->nimm; i++)
        r = mt_get(v->imm[i], ik, iklen, seq, &p, &n);
    if (r == -1) {
        r = version_get(v->ver, ik, iklen, seq, val, vlen);
        if (r < -1)
            return r;
        return r == KT_PUT ? 0 : -ENOENT;
    }
    if (r != KT_PUT)
        return -ENOENT;
    void *copy = malloc(n ? n : 1);
    if (!copy)
        return err_set(-ENOMEM, "out of memory for a value of %zu bytes", n);
    memcpy(copy, p, n);
    *val = copy;
    *vlen = n;
    return 0;
}

struct view *db_view(stash_t *db, const stash_snapshot_t *s, uint64_t *seq)
{
    struct view *v = view_get(db, seq);
    if (s)
        *seq = s->seq;
    return v;
}

void db_view_put(struct view *v)
{
    view_unref(v);
}

struct vlog *db_vlog(stash_t *db)
{
    return db->vl;
}

int db_vlog_level(stash_t *db)
{
    return db->opt.compression_level;
}

int db_view_get(struct view *v, uint64_t seq, const uint8_t *ik, size_t iklen, void **val, size_t *vlen)
{
    return view_lookup(v, seq, ik, iklen, val, vlen);
}

int db_chunk_bytes(struct view *v, const struct envelope *e, const uint8_t *raw, size_t rlen,
                   uint8_t *scratch, const uint8_t **bytes, size_t *n)
{
    if (!e->tagged) {
        *bytes = raw;
        *n = rlen;
    } else if (rlen >= 1 && raw[0] == CTAG_BYTES) {
        *bytes = raw + 1;
        *n = rlen - 1;
    } else {
        struct vptr p;
        if (vptr_decode(raw, rlen, &p) < 0 || p.len > CHUNK_SIZE)
            return err_set(-EIO, "damaged chunk record of value %016llx", (unsigned long long)e->gen);
        int rc = vlog_read(v->vl, &p, scratch, CHUNK_SIZE, n);
        if (rc)
            return rc;
        *bytes = scratch;
    }
    if (*n > CHUNK_SIZE)
        return err_set(-EIO, "damaged chunk of value %016llx: %zu bytes", (unsigned long long)e->gen, *n);
    return 0;
}

static int bad_patch(const struct envelope *e, uint64_t idx)
{
    return err_set(-EIO, "damaged patch record of chunk %llu of value %016llx", (unsigned long long)idx,
                   (unsigned long long)e->gen);
}

int db_patch_get(struct view *v, uint64_t seq, const struct envelope *e, uint64_t idx, void **p, size_t *plen)
{
    *p = NULL;
    *plen = 0;
    if (!e->tagged)
        return 0;
    uint8_t pk[CHUNK_KEY_LEN];
    pkey(pk, e, idx);
    int rc = view_lookup(v, seq, pk, sizeof pk, p, plen);
    return rc == -ENOENT ? 0 : rc;
}

int db_chunk_patch(struct view *v, uint64_t seq, const struct envelope *e, uint64_t idx, uint8_t *c,
                   size_t *n)
{
    void *p;
    size_t plen;
    int rc = db_patch_get(v, seq, e, idx, &p, &plen);
    if (rc == 0 && p)
        rc = patch_apply(p, plen, c, n) < 0 ? bad_patch(e, idx) : 1;
    free(p);
    return rc;
}

int db_read_chunks(struct view *v, uint64_t seq, const struct envelope *e, uint8_t *buf,
                   uint64_t off, size_t len)
{
    uint8_t *scratch = NULL;
    int rc = 0;
    while (len && rc == 0) {
        uint64_t idx = off / CHUNK_SIZE;
        size_t in = (size_t)(off % CHUNK_SIZE);
        size_t n = CHUNK_SIZE - in < len ? CHUNK_SIZE - in : len;
        uint8_t ck[CHUNK_KEY_LEN];
        void *c, *pr = NULL;
        size_t clen, prl = 0;
        ckey(ck, e, idx);
        rc = view_lookup(v, seq, ck, sizeof ck, &c, &clen);
        if (rc == -ENOENT) {
            memset(buf, 0, n);
            rc = 0;
        } else if (rc == 0) {
            const uint8_t *bytes;
            size_t have;
            struct vptr p;
            rc = db_patch_get(v, seq, e, idx, &pr, &prl);  /* small writes over it, if any */
            if (rc == 0 && e->tagged && in == 0 && vptr_decode(c, clen, &p) == 0 &&
                (pr || p.zstd ? n == CHUNK_SIZE : p.len <= n)) {
                /* A whole chunk from a value file: straight into BUF, and
                 * its patches over it (BUF holds the whole chunk then). */
                rc = vlog_read(v->vl, &p, buf, n, &have);
                if (rc == 0)
                    memset(buf + have, 0, n - have);
                if (rc == 0 && pr && patch_apply(pr, prl, buf, &have) < 0)
                    rc = bad_patch(e, idx);
            } else if (rc == 0 && !scratch && e->tagged && !(scratch = malloc(CHUNK_SIZE))) {
                rc = err_set(-ENOMEM, "out of memory");
            } else if (rc == 0 && (rc = db_chunk_bytes(v, e, c, clen, scratch, &bytes, &have)) == 0) {
                if (pr) {
                    if (bytes != scratch)
                        memmove(scratch, bytes, have);
                    memset(scratch + have, 0, CHUNK_SIZE - have);
                    bytes = scratch;
                    if (patch_apply(pr, prl, scratch, &have) < 0)
                        rc = bad_patch(e, idx);
                }
                if (rc == 0) {
                    have = have > in ? have - in : 0;
                    if (have > n)
                        have = n;
                    memcpy(buf, bytes + in, have);
                    memset(buf + have, 0, n - have);
                }
            }
            free(c);
            free(pr);
        }
        buf += n;
        off += n;
        len -= n;
    }
    free(scratch);
    return rc;
}

int db_key(const void *key, size_t klen, struct skey *k)
{
    int rc = check_key(key, klen);
    if (rc == 0 && skey_make(k, key, klen) < 0)
        rc = err_set(-ENOMEM, "out of memory");
    return rc;
}

int stash_get_at(stash_t *db, const stash_snapshot_t *s, const void *key, size_t klen,
                 void **val, size_t *vlen)
{
    if (!db || !val || !vlen)
        return err_set(-EINVAL, "stash_get: bad arguments");
    struct skey k;
    int rc = db_key(key, klen, &k);
    if (rc)
        return rc;
    uint64_t seq;
    struct view *v = db_view(db, s, &seq);
    void *raw;
    size_t rlen;
    rc = view_lookup(v, seq, k.p, k.len, &raw, &rlen);
    struct envelope e;
    if (rc == 0 && env_decode(raw, rlen, &e) < 0) {
        free(raw);
        rc = err_set(-EIO, "damaged value envelope for a key of %zu bytes", klen);
    } else if (rc == 0 && e.kind == VK_LINK) {
        void *shared = NULL;
        free(raw);
        raw = NULL;
        if ((rc = db_resolve(v, seq, &e, &shared, &rlen)) == 0)
            raw = shared;
    }
    if (rc == 0 && e.kind != VK_CHUNKED) {
        /* Slide the value to the front of the copy. */
        memmove(raw, e.data, (size_t)e.st.size);
        *val = raw;
        *vlen = (size_t)e.st.size;
    } else if (rc == 0) {
        free(raw);
        uint8_t *big = e.st.size > STASH_MAX_VALUE ? NULL : malloc(e.st.size ? (size_t)e.st.size : 1);
        if (e.st.size > STASH_MAX_VALUE)
            rc = err_set(-EFBIG, "value of %llu bytes is larger than stash_get gives: use stash_pread",
                         (unsigned long long)e.st.size);
        else if (!big)
            rc = err_set(-ENOMEM, "out of memory for a value of %llu bytes", (unsigned long long)e.st.size);
        else if ((rc = db_read_chunks(v, seq, &e, big, 0, (size_t)e.st.size)) != 0)
            free(big);
        else {
            *val = big;
            *vlen = (size_t)e.st.size;
        }
    }
    view_unref(v);
    skey_done(&k);
    return rc;
}

int stash_get(stash_t *db, const void *key, size_t klen, void **val, size_t *vlen)
{
    return stash_get_at(db, NULL, key, klen, val, vlen);
}

/* ------------------------------------------------------------------ */
/* snapshots                                                            */

/* A snapshot handle pinned in the list, at *SEQ, or at the newest sequence
 * when SEQ is NULL (read in the same critical section as the pin, so
 * compaction can never drop what it sees). */
static stash_snapshot_t *snapshot_pin(stash_t *db, const uint64_t *seq)
{
    stash_snapshot_t *s = malloc(sizeof *s);
    if (!s)
        return NULL;
    pthread_mutex_lock(&db->mu);
    s->seq = seq ? *seq : db->last_seq;
    s->next = db->snaps.next;
    s->prev = &db->snaps;
    s->next->prev = s;
    db->snaps.next = s;
    pthread_mutex_unlock(&db->mu);
    return s;
}

stash_snapshot_t *stash_snapshot_new(stash_t *db)
{
    return db ? snapshot_pin(db, NULL) : NULL;
}

void stash_snapshot_free(stash_t *db, stash_snapshot_t *s)
{
    if (!db || !s)
        return;
    pthread_mutex_lock(&db->mu);
    s->prev->next = s->next;
    s->next->prev = s->prev;
    pthread_mutex_unlock(&db->mu);
    free(s);
}

uint64_t stash_snapshot_seq(const stash_snapshot_t *s)
{
    return s ? s->seq : 0;
}

static size_t named_key(const char *name, uint8_t *out)
{
    size_t n = strlen(name);
    out[0] = NS_BYTE;
    out[1] = NS_SNAP;
    memcpy(out + 2, name, n);
    return n + 2;
}

static int check_snap_name(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > STASH_SNAPSHOT_NAME_MAX || strchr(name, '/'))
        return err_set(-EINVAL, "a snapshot name is 1 to %d bytes without '/'", STASH_SNAPSHOT_NAME_MAX);
    return 0;
}

static struct named *find_named(stash_t *db, const char *name)
{
    for (int i = 0; i < db->nnamed; i++)
        if (!strcmp(db->named[i].name, name))
            return &db->named[i];
    return NULL;
}

static int add_named(stash_t *db, const char *name, uint64_t seq, int64_t ctime_ns, stash_snapshot_t *pin)
{
    if (db->nnamed == db->capnamed) {
        int cap = db->capnamed ? db->capnamed * 2 : 8;
        struct named *n = realloc(db->named, (size_t)cap * sizeof *n);
        if (!n)
            return err_set(-ENOMEM, "out of memory");
        db->named = n;
        db->capnamed = cap;
    }
    struct named *n = &db->named[db->nnamed++];
    snprintf(n->name, sizeof n->name, "%s", name);
    n->seq = seq;
    n->ctime_ns = ctime_ns;
    n->pin = pin;
    return 0;
}

int stash_snapshot_create(stash_t *db, const char *name, uint64_t *seq)
{
    if (!db)
        return err_set(-EINVAL, "NULL store handle");
    int rc = check_snap_name(name);
    if (rc || (rc = db_writable(db)))
        return rc;
    pthread_mutex_lock(&db->named_mu);
    if (find_named(db, name)) {
        pthread_mutex_unlock(&db->named_mu);
        return err_set(-EEXIST, "snapshot %s exists", name);
    }
    /* Pin first: from here on compaction keeps what the snapshot sees. */
    stash_snapshot_t *pin = stash_snapshot_new(db);
    stash_batch_t *b = stash_batch_new();
    uint8_t k[2 + STASH_SNAPSHOT_NAME_MAX], v[8 + 10];
    int64_t ct = now_ns();
    rc = pin && b ? 0 : err_set(-ENOMEM, "out of memory");
    if (rc == 0) {
        enc_u64(v, pin->seq);
        size_t vl = 8 + enc_varint(v + 8, (uint64_t)ct);
        rc = batch_put_raw(b, k, named_key(name, k), NULL, 0, v, vl);
    }
    if (rc == 0)
        rc = do_write(db, b, 1, 0);
    if (rc == 0)
        rc = add_named(db, name, pin->seq, ct, pin);
    if (rc == 0 && seq)
        *seq = pin->seq;
    if (rc && pin)
        stash_snapshot_free(db, pin);
    stash_batch_free(b);
    pthread_mutex_unlock(&db->named_mu);
    return rc;
}

int stash_snapshot_delete(stash_t *db, const char *name)
{
    if (!db)
        return err_set(-EINVAL, "NULL store handle");
    int rc = check_snap_name(name);
    if (rc || (rc = db_writable(db)))
        return rc;
    pthread_mutex_lock(&db->named_mu);
    struct named *n = find_named(db, name);
    stash_batch_t *b = n ? stash_batch_new() : NULL;
    uint8_t k[2 + STASH_SNAPSHOT_NAME_MAX];
    if (!n)
        rc = err_set(-ENOENT, "no snapshot %s", name);
    else if (!b)
        rc = err_set(-ENOMEM, "out of memory");
    else if ((rc = batch_del_raw(b, k, named_key(name, k))) == 0 && (rc = do_write(db, b, 1, 0)) == 0) {
        stash_snapshot_free(db, n->pin);
        *n = db->named[--db->nnamed];
    }
    stash_batch_free(b);
    pthread_mutex_unlock(&db->named_mu);
    return rc;
}

int stash_snapshot_list(stash_t *db, int (*fn)(void *arg, const char *name, uint64_t seq, int64_t ctime_ns),
                        void *arg)
{
    if (!db || !fn)
        return err_set(-EINVAL, "stash_snapshot_list: bad arguments");
    int rc = 0;
    pthread_mutex_lock(&db->named_mu);
    for (int i = 0; i < db->nnamed && rc == 0; i++)
        rc = fn(arg, db->named[i].name, db->named[i].seq, db->named[i].ctime_ns);
    pthread_mutex_unlock(&db->named_mu);
    return rc;
}

stash_snapshot_t *stash_snapshot_open(stash_t *db, const char *name, int64_t *ctime_ns)
{
    if (!db || check_snap_name(name))
        return NULL;
    pthread_mutex_lock(&db->named_mu);
    struct named *n = find_named(db, name);
    stash_snapshot_t *s = NULL;
    if (!n)
        err_set(-ENOENT, "no snapshot %s", name);
    else if (!(s = snapshot_pin(db, &n->seq)))
        err_set(-ENOMEM, "out of memory");
    else if (ctime_ns)
        *ctime_ns = n->ctime_ns;
    pthread_mutex_unlock(&db->named_mu);
    return s;
}

/* Pin every named snapshot recorded in the store (IT: a raw iterator). */
int stash_link_names(stash_t *db, uint64_t link_id,
                     int (*fn)(void *arg, const void *key, size_t klen), void *arg)
{
    if (!db || !fn || !link_id)
        return err_set(-EINVAL, "stash_link_names: bad arguments");
    stash_iter_t *it = stash_iter_new(db, NULL);
    uint8_t pre[LINK_KEY_LEN], *last = malloc(LINK_KEY_LEN + IKEY_MAX), *name = malloc(IKEY_MAX);
    size_t lastlen = 0;
    int rc = it && last && name ? 0 : err_set(-ENOMEM, "out of memory");
    lref_key(pre, link_id, NULL, 0);
    iiter_t *m = it ? it->m : NULL;
    for (m ? m->ops->seek(m, pre, sizeof pre, TAG(it->seq, 0xff)) : (void)0;
         rc == 0 && m && m->ops->valid(m); m->ops->next(m)) {
        size_t kl, ul;
        const uint8_t *k = m->ops->key(m, &kl);
        uint64_t tag = m->ops->tag(m);
        if (kl <= sizeof pre || kl > LINK_KEY_LEN + IKEY_MAX || memcmp(k, pre, sizeof pre))
            break;
        if (TAG_SEQ(tag) > it->seq || (kl == lastlen && !memcmp(k, last, kl)))
            continue;           /* newer than this view, or an older version */
        memcpy(last, k, kl);
        lastlen = kl;
        if (TAG_TYPE(tag) == KT_PUT && key_unescape(k + sizeof pre, kl - sizeof pre, name, &ul) == 0)
            rc = fn(arg, name, ul);
    }
    if (rc == 0 && m)
        rc = m->ops->status(m);
    free(last);
    free(name);
    stash_iter_free(it);
    return rc;
}

static int load_named(stash_t *db, stash_iter_t *it)
{
    const uint8_t start[2] = {NS_BYTE, NS_SNAP};
    iiter_t *m = it->m;
    int rc = 0;
    char last[STASH_SNAPSHOT_NAME_MAX + 1] = "";
    size_t lastlen = (size_t)-1;
    for (m->ops->seek(m, start, sizeof start, TAG(it->seq, 0xff)); rc == 0 && m->ops->valid(m); m->ops->next(m)) {
        size_t kl, vl;
        const uint8_t *k = m->ops->key(m, &kl);
        if (kl < 3 || k[0] != NS_BYTE || k[1] != NS_SNAP || kl - 2 > STASH_SNAPSHOT_NAME_MAX)
            break;
        if (kl - 2 == lastlen && !memcmp(last, k + 2, lastlen))
            continue;           /* an older version of one already seen */
        memcpy(last, k + 2, kl - 2);
        last[kl - 2] = 0;
        lastlen = kl - 2;
        if (TAG_TYPE(m->ops->tag(m)) != KT_PUT)
            continue;
        const uint8_t *v = m->ops->value(m, &vl);
        uint64_t ct;
        if (vl < 9 || !dec_varint(v + 8, v + vl, &ct)) {
            rc = err_set(-EIO, "damaged record of snapshot %s", last);
            break;
        }
        uint64_t sq = dec_u64(v);
        stash_snapshot_t *pin = snapshot_pin(db, &sq);
        rc = pin ? add_named(db, last, sq, (int64_t)ct, pin) : err_set(-ENOMEM, "out of memory");
    }
    return rc ? rc : m->ops->status(m);
}

/* ------------------------------------------------------------------ */
/* iterators                                                            */

/* One iterator merging everything view V holds (its memtables and tables),
 * in stored-key order, every version; NULL without memory. */
static iiter_t *view_merge(struct view *v)
{
    iiter_t *m = NULL;
    int n = 1 + v->nimm;
    iiter_t **kids = calloc((size_t)(n + v->ver->n[0] + NLEVELS), sizeof *kids);
    int ok = kids != NULL;
    for (int i = 0; ok && i < n; i++) {
        kids[i] = iter_memtable(i == 0 ? v->mem : v->imm[i - 1]);
        ok = kids[i] != NULL;
    }
    if (ok)
        ok = version_iters(v->ver, kids, &n) == 0;
    if (ok)
        m = iter_merge(kids, n);
    else if (kids)
        for (int i = 0; i < n; i++)
            iter_free(kids[i]);
    free(kids);
    return m;
}

/*
 * Walk the chunk records of chunked value E as of V/SEQ with index in
 * [FROM, LAST], in index order, in one pass of a merged iterator (a step
 * per record, not a lookup per index): FN(ARG, index, there) for each
 * index that has a record (THERE: a chunk; 0: its deletion), until FN
 * returns nonzero.  Indexes without a record are not visited.  0 or a
 * negative errno.
 */
static int chunk_walk(struct view *v, uint64_t seq, const struct envelope *e, uint64_t from, uint64_t last,
                      int (*fn)(void *arg, uint64_t i, int there), void *arg)
{
    iiter_t *m = view_merge(v);
    if (!m)
        return err_set(-ENOMEM, "out of memory");
    uint8_t ck[CHUNK_KEY_LEN];
    ckey(ck, e, from);
    uint64_t seen = UINT64_MAX;
    for (m->ops->seek(m, ck, sizeof ck, TAG(seq, 0xff)); m->ops->valid(m); m->ops->next(m)) {
        size_t kl;
        const uint8_t *k = m->ops->key(m, &kl);
        if (kl != CHUNK_KEY_LEN || memcmp(k, ck, 10))
            break;                          /* past this value's chunks */
        uint64_t i = 0, tag = m->ops->tag(m);
        for (int b = 10; b < 18; b++)
            i = i << 8 | k[b];
        if (i > last)
            break;
        if (TAG_SEQ(tag) > seq || i == seen)
            continue;                       /* too new, or an older version */
        seen = i;
        if (fn(arg, i, TAG_TYPE(tag) == KT_PUT))
            break;
    }
    int rc = m->ops->status(m);
    iter_free(m);
    return rc;
}

struct scan { int present; uint64_t want, found; };

/* chunk_walk's FN for db_chunk_scan: stop at the first chunk (PRESENT), or
 * at the first index with no chunk (a gap before I, or I deleted). */
static int scan_one(void *arg, uint64_t i, int there)
{
    struct scan *s = arg;
    if (s->present) {
        if (there)
            s->found = i;
        return there;
    }
    if (i > s->want || !there) {
        s->found = i > s->want ? s->want : i;
        return 1;
    }
    s->want = i + 1;                        /* chunks up to I are there */
    return 0;
}

int db_chunk_scan(struct view *v, uint64_t seq, const struct envelope *e, uint64_t from, uint64_t last,
                  int present, uint64_t *idx)
{
    struct scan s = {present, from, last + 1};
    int rc = chunk_walk(v, seq, e, from, last, scan_one, &s);
    if (!present && s.found > last && s.want <= last)
        s.found = s.want;                   /* the chunks end before LAST */
    if (rc == 0)
        *idx = s.found;
    return rc;
}

static int count_one(void *arg, uint64_t i, int there)
{
    (void)i;
    *(uint64_t *)arg += there != 0;
    return 0;
}

int db_chunk_count(struct view *v, uint64_t seq, const struct envelope *e, uint64_t from, uint64_t last,
                   uint64_t *n)
{
    *n = 0;
    return from > last ? 0 : chunk_walk(v, seq, e, from, last, count_one, n);
}

stash_iter_t *stash_iter_new(stash_t *db, const stash_snapshot_t *s)
{
    if (!db)
        return NULL;
    stash_iter_t *it = calloc(1, sizeof *it);
    if (!it)
        return NULL;
    if (!(it->val = calloc(1, sizeof *it->val))) {
        free(it);
        return NULL;
    }
    it->db = db;
    it->v = view_get(db, &it->seq);
    if (s)
        it->seq = s->seq;
    it->m = view_merge(it->v);
    if (!it->m) {
        view_unref(it->v);
        free(it->val);
        free(it);
        return NULL;
    }
    return it;
}

void stash_iter_free(stash_iter_t *it)
{
    if (!it)
        return;
    iter_free(it->m);
    view_unref(it->v);
    free(it->cur);
    free(it->ukey);
    free(it->val->big);
    free(it->val->shared);
    free(it->val);
    free(it->ub);
    free(it);
}

/* Remember the stored key K as the current one (in it->cur, escaped). */
static int save_key(stash_iter_t *it, const void *k, size_t kl)
{
    if (kl > it->curcap) {
        uint8_t *p = realloc(it->cur, kl);
        if (!p)
            return -ENOMEM;
        it->cur = p;
        it->curcap = kl;
    }
    memcpy(it->cur, k, kl);
    it->curlen = kl;
    return 0;
}

/*
 * Move the merged iterator to the next entry the snapshot should show: the
 * newest version visible at it->seq of the next user key, if it is a put.
 * With SKIPPING, entries of the user key in it->cur are passed over first.
 */
static void find_visible(stash_iter_t *it, int skipping)
{
    iiter_t *m = it->m;
    it->val->ready = 0;
    while (m->ops->valid(m)) {
        uint64_t tag = m->ops->tag(m);
        size_t kl;
        const void *k = m->ops->key(m, &kl);
        if (key_is_sys(k, kl))
            break;      /* the engine's own keys sort after every user key */
        if (it->ub) {
            size_t n = kl < it->ublen ? kl : it->ublen;
            int c = memcmp(k, it->ub, n);
            if (c > 0 || (c == 0 && kl >= it->ublen))
                break;  /* past the bound: nothing more to look at */
        }
        if (TAG_SEQ(tag) > it->seq ||
            (skipping && kl == it->curlen && memcmp(k, it->cur, kl) == 0)) {
            m->ops->next(m);
            continue;
        }
        if (save_key(it, k, kl) < 0) {
            it->status = -ENOMEM;
            break;
        }
        if (TAG_TYPE(tag) == KT_DEL) {
            skipping = 1;
            m->ops->next(m);
            continue;
        }
        if (it->curlen >= 2 && it->cur[0] == NS_BYTE) {
            if (it->ukeycap < it->curlen) {
                uint8_t *u = realloc(it->ukey, it->curlen);
                if (!u) {
                    it->status = -ENOMEM;
                    break;
                }
                it->ukey = u;
                it->ukeycap = it->curlen;
            }
            size_t ul;
            key_unescape(it->cur, it->curlen, it->ukey, &ul);
            it->ukeyon = 1;
        } else {
            it->ukeyon = 0;
        }
        it->valid = 1;
        return;
    }
    it->valid = 0;
    if (!it->status)
        it->status = m->ops->status(m);
}

void stash_iter_seek(stash_iter_t *it, const void *key, size_t klen)
{
    if (!it)
        return;
    it->status = 0;
    struct skey k;
    if (!key || klen > STASH_MAX_KEY) {
        it->valid = 0;
        it->status = err_set(-EINVAL, "stash_iter_seek: bad key");
        return;
    }
    if (skey_make(&k, key, klen) < 0) {
        it->valid = 0;
        it->status = err_set(-ENOMEM, "out of memory");
        return;
    }
    it->m->ops->seek(it->m, k.p, k.len, TAG(it->seq, 0xff));
    skey_done(&k);
    find_visible(it, 0);
}

int stash_iter_set_upper(stash_iter_t *it, const void *end, size_t elen)
{
    if (!it || (end && (elen == 0 || elen > STASH_MAX_KEY)))
        return err_set(-EINVAL, "stash_iter_set_upper: bad arguments");
    free(it->ub);
    it->ub = NULL;
    it->ublen = 0;
    if (!end)
        return 0;
    if (!(it->ub = malloc(elen + 1)))
        return err_set(-ENOMEM, "out of memory");
    it->ublen = key_escape(end, elen, it->ub);
    return 0;
}

void stash_iter_seek_first(stash_iter_t *it)
{
    if (!it)
        return;
    it->status = 0;
    it->m->ops->seek_first(it->m);
    find_visible(it, 0);
}

int stash_iter_valid(const stash_iter_t *it)
{
    return it && it->valid;
}

void stash_iter_next(stash_iter_t *it)
{
    if (!it || !it->valid)
        return;
    it->m->ops->next(it->m);
    find_visible(it, 1);
}

const void *stash_iter_key(const stash_iter_t *it, size_t *klen)
{
    if (!it || !it->valid) {
        if (klen)
            *klen = 0;
        return NULL;
    }
    if (klen)
        *klen = it->ukeyon ? it->curlen - 1 : it->curlen;
    return it->ukeyon ? it->ukey : it->cur;
}

const void *stash_iter_value(const stash_iter_t *it, size_t *vlen)
{
    struct ivalue *iv = it ? it->val : NULL;
    if (!it || !it->valid) {
        if (vlen)
            *vlen = 0;
        return NULL;
    }
    if (!iv->ready) {
        size_t n = 0;
        const uint8_t *p = it->m->ops->value(it->m, &n);
        struct envelope e;
        free(iv->big);
        free(iv->shared);
        iv->big = iv->shared = NULL;
        iv->p = NULL;
        iv->n = 0;
        int rc = 0;
        if (env_decode(p, n, &e) < 0) {
            rc = err_set(-EIO, "damaged value envelope");
        } else if (e.kind == VK_LINK && (rc = db_resolve(it->v, it->seq, &e, &iv->shared, &n)) != 0) {
            /* a damaged or missing shared entry: err says which */
        } else if (e.kind != VK_CHUNKED) {
            iv->p = e.data;
            iv->n = (size_t)e.st.size;
        } else if (e.st.size <= STASH_MAX_VALUE &&
                   (iv->big = malloc(e.st.size ? (size_t)e.st.size : 1)) != NULL) {
            if ((rc = db_read_chunks(it->v, it->seq, &e, iv->big, 0, (size_t)e.st.size)) == 0) {
                iv->p = iv->big;
                iv->n = (size_t)e.st.size;
            } else {
                free(iv->big);
                iv->big = NULL;
            }
        } else {
            rc = err_set(e.st.size > STASH_MAX_VALUE ? -EFBIG : -ENOMEM, "a value of %llu bytes cannot be given whole",
                         (unsigned long long)e.st.size);
        }
        /* The first failure stays for stash_iter_status: a value read
         * fine later must not hide it. */
        if (rc && !iv->err)
            iv->err = rc;
        iv->ready = 1;
    }
    if (vlen)
        *vlen = iv->n;
    return iv->p;
}

int stash_iter_stat(const stash_iter_t *it, stash_stat_t *st)
{
    if (!it || !it->valid || !st)
        return err_set(-EINVAL, "stash_iter_stat: the iterator is not on an entry");
    size_t n = 0;
    const uint8_t *p = it->m->ops->value(it->m, &n);
    struct envelope e;
    if (env_decode(p, n, &e) < 0)
        return err_set(-EIO, "damaged value envelope");
    void *shared = NULL;
    int rc = e.kind == VK_LINK ? db_resolve(it->v, it->seq, &e, &shared, &n) : 0;
    if (rc == 0)
        *st = e.st;
    free(shared);
    return rc;
}

/*
 * Move every key under FROM to TO in one batch, holding every key stripe so
 * no read-modify-write of a moved key runs meanwhile.  Sources and targets
 * are read at one view; a target that held another chunked value has its
 * chunks dropped.
 */
/* Limit IT to the keys starting with P (PLEN bytes): a scan stops at the
 * end of the prefix, not at the first live key after it. */
static int iter_prefix(stash_iter_t *it, const void *p, size_t plen)
{
    size_t el = plen;
    while (el && ((const uint8_t *)p)[el - 1] == 0xFF)
        el--;
    if (!el)
        return stash_iter_set_upper(it, NULL, 0);
    uint8_t *end = malloc(el);
    if (!end)
        return err_set(-ENOMEM, "out of memory");
    memcpy(end, p, el);
    end[el - 1]++;
    int rc = stash_iter_set_upper(it, end, el);
    free(end);
    return rc;
}

int stash_rename_prefix(stash_t *db, const void *from, size_t flen, const void *to, size_t tlen,
                        uint64_t *moved)
{
    if (!db || !from || !to || !flen || !tlen || flen > STASH_MAX_KEY || tlen > STASH_MAX_KEY)
        return err_set(-EINVAL, "stash_rename_prefix: bad arguments");
    size_t common = flen < tlen ? flen : tlen;
    if (memcmp(from, to, common) == 0)
        return err_set(-EINVAL, "stash_rename_prefix: one prefix starts with the other");
    int rc = db_writable(db);
    if (rc)
        return rc;
    if (moved)
        *moved = 0;
    for (int i = 0; i < KEY_STRIPES; i++)
        pthread_mutex_lock(&db->keylock[i]);
    stash_iter_t *it = stash_iter_new(db, NULL);
    stash_batch_t *b = stash_batch_new();
    uint8_t *nk = NULL, *ik = NULL;
    uint64_t n = 0;
    int held = 0;
    if (!it || !b)
        rc = err_set(-ENOMEM, "out of memory");
    if (rc == 0)
        rc = iter_prefix(it, from, flen);
    for (stash_iter_seek(it, from, flen); rc == 0 && stash_iter_valid(it); stash_iter_next(it)) {
        size_t kl, vl, iklen;
        const uint8_t *k = stash_iter_key(it, &kl);
        if (kl < flen || memcmp(k, from, flen) != 0)
            break;
        if (kl - flen + tlen > STASH_MAX_KEY) {
            rc = err_set(-EINVAL, "a moved key would be longer than %u bytes", STASH_MAX_KEY);
            break;
        }
        if (!nk && (!(nk = malloc(STASH_MAX_KEY)) || !(ik = malloc(IKEY_MAX)))) {
            rc = err_set(-ENOMEM, "out of memory");
            break;
        }
        memcpy(nk, to, tlen);
        memcpy(nk + tlen, k + flen, kl - flen);
        iklen = key_escape(nk, kl - flen + tlen, ik);
        if ((rc = db_reserved(db, ik, iklen)))
            break;
        const uint8_t *raw = it->m->ops->value(it->m, &vl);
        struct envelope e, te;
        if (env_decode(raw, vl, &e) < 0) {
            rc = err_set(-EIO, "damaged value envelope under the moved prefix");
            break;
        }
        void *old;
        size_t olen;
        int r = view_lookup(it->v, it->seq, ik, iklen, &old, &olen);
        if (r == 0) {
            if (env_decode(old, olen, &te) == 0) {
                if (te.link)
                    db_link_hold(db, &held);
                rc = db_drop_old(db, b, ik, iklen, &te);
            }
            free(old);
        } else if (r != -ENOENT) {
            rc = r;
        }
        if (rc == 0)
            rc = batch_put_raw(b, ik, iklen, NULL, 0, raw, vl);
        if (rc == 0 && e.kind == VK_CHUNKED) {
            uint8_t bk[BLOB_KEY_LEN];
            blob_key(bk, e.gen);
            rc = batch_put_raw(b, bk, sizeof bk, NULL, 0, ik, iklen);
        }
        if (rc == 0 && e.kind == VK_LINK)
            rc = move_lref(b, e.link, it->cur, it->curlen, ik, iklen);
        if (rc == 0)
            rc = batch_del_raw(b, it->cur, it->curlen);
        n++;
    }
    if (rc == 0 && it)
        rc = stash_iter_status(it);
    if (rc == 0 && n)
        rc = do_write(db, b, 0, 0);
    db_link_release(db, &held);
    free(nk);
    free(ik);
    stash_batch_free(b);
    stash_iter_free(it);
    for (int i = KEY_STRIPES - 1; i >= 0; i--)
        pthread_mutex_unlock(&db->keylock[i]);
    if (rc == 0 && moved)
        *moved = n;
    return rc;
}

/* ---- two moves in one batch (stash_rename2) ---- */

struct mv {
    const uint8_t *from, *to;
    size_t flen, tlen;
    int prefix;
};

/* Whether user key K is moved by M[0] or M[1]. */
static int mv_source(const struct mv *m, const uint8_t *k, size_t kl)
{
    for (int i = 0; i < 2; i++)
        if (m[i].prefix ? kl >= m[i].flen && !memcmp(k, m[i].from, m[i].flen)
                        : kl == m[i].flen && !memcmp(k, m[i].from, kl))
            return 1;
    return 0;
}

/* Whether A (a prefix when AP) and B (likewise) can name one key. */
static int mv_overlap(const uint8_t *a, size_t al, int ap, const uint8_t *b, size_t bl, int bp)
{
    size_t c = al < bl ? al : bl;
    if (memcmp(a, b, c))
        return 0;
    if (al == bl)
        return 1;
    return al < bl ? ap : bp;
}

/* Scratch room of the moves: a new user key, its escaped form, a link name. */
struct mv_scratch {
    uint8_t *nk, *ik, *rk;
};

/*
 * User key K (escaped OLDIK, stored value RAW) moves by M: its old key and
 * link name go into DELS, its new key, owner and link name into PUTS.  The
 * new key must be free or itself moved (ALL).
 */
static int mv_note(stash_t *db, stash_iter_t *it, const struct mv *all, const struct mv *m, const uint8_t *k,
                   size_t kl, const uint8_t *oldik, size_t oldlen, const uint8_t *raw, size_t rawlen,
                   struct mv_scratch *sc, stash_batch_t *dels, stash_batch_t *puts)
{
    size_t nl = m->prefix ? kl - m->flen + m->tlen : m->tlen;
    if (nl > STASH_MAX_KEY)
        return err_set(-EINVAL, "a moved key would be longer than %u bytes", STASH_MAX_KEY);
    struct envelope e;
    if (env_decode(raw, rawlen, &e) < 0)
        return err_set(-EIO, "damaged value envelope of a moved key");
    memcpy(sc->nk, m->to, m->prefix ? m->tlen : nl);
    if (m->prefix)
        memcpy(sc->nk + m->tlen, k + m->flen, kl - m->flen);
    size_t il = key_escape(sc->nk, nl, sc->ik);
    int rc = db_reserved(db, sc->ik, il);
    if (rc == 0 && !mv_source(all, sc->nk, nl)) {
        void *old;
        size_t olen;
        int r = view_lookup(it->v, it->seq, sc->ik, il, &old, &olen);
        if (r == 0) {
            free(old);
            rc = err_set(-EEXIST, "a key the move would overwrite is not itself moved");
        } else if (r != -ENOENT) {
            rc = r;
        }
    }
    uint64_t link = e.kind == VK_LINK ? e.link : 0;
    if (rc == 0)
        rc = batch_del_raw(dels, oldik, oldlen);
    if (rc == 0 && link)
        rc = batch_del_raw(dels, sc->rk, lref_key(sc->rk, link, oldik, oldlen));
    if (rc == 0)
        rc = batch_put_raw(puts, sc->ik, il, NULL, 0, raw, rawlen);
    if (rc == 0 && e.kind == VK_CHUNKED) {
        uint8_t bk[BLOB_KEY_LEN];
        blob_key(bk, e.gen);
        rc = batch_put_raw(puts, bk, sizeof bk, NULL, 0, sc->ik, il);
    }
    if (rc == 0 && link)
        rc = batch_put_raw(puts, sc->rk, lref_key(sc->rk, link, sc->ik, il), NULL, 0, NULL, 0);
    return rc == -ENOMEM ? err_set(rc, "out of memory") : rc;
}

int stash_rename2(stash_t *db, const void *from1, size_t f1len, const void *to1, size_t t1len,
                  const void *from2, size_t f2len, const void *to2, size_t t2len, unsigned flags)
{
    if (!db || !from1 || !to1 || !from2 || !to2 || !f1len || !t1len || !f2len || !t2len ||
        f1len > STASH_MAX_KEY || t1len > STASH_MAX_KEY || f2len > STASH_MAX_KEY || t2len > STASH_MAX_KEY ||
        (flags & ~(unsigned)(STASH_PREFIX1 | STASH_PREFIX2)))
        return err_set(-EINVAL, "stash_rename2: bad arguments");
    struct mv m[2] = {
        { from1, to1, f1len, t1len, !!(flags & STASH_PREFIX1) },
        { from2, to2, f2len, t2len, !!(flags & STASH_PREFIX2) },
    };
    /* No key moved twice, none moved onto by both moves; no range moved
     * into itself. */
    if (mv_overlap(m[0].from, m[0].flen, m[0].prefix, m[1].from, m[1].flen, m[1].prefix) ||
        mv_overlap(m[0].to, m[0].tlen, m[0].prefix, m[1].to, m[1].tlen, m[1].prefix) ||
        (m[0].prefix && mv_overlap(m[0].from, m[0].flen, 1, m[0].to, m[0].tlen, 1)) ||
        (m[1].prefix && mv_overlap(m[1].from, m[1].flen, 1, m[1].to, m[1].tlen, 1)))
        return err_set(-EINVAL, "stash_rename2: the moves overlap");
    int rc = db_writable(db);
    if (rc)
        return rc;
    for (int i = 0; i < KEY_STRIPES; i++)
        pthread_mutex_lock(&db->keylock[i]);
    stash_iter_t *it = stash_iter_new(db, NULL);
    /* One batch: every old key and link name goes, then every new one is
     * put (so that a key both moved away and moved onto ends up moved
     * onto).  The puts are gathered apart and appended. */
    stash_batch_t *dels = stash_batch_new(), *puts = stash_batch_new();
    struct mv_scratch sc = { malloc(STASH_MAX_KEY), malloc(IKEY_MAX), malloc(LINK_KEY_LEN + IKEY_MAX) };
    uint8_t *oldik = malloc(IKEY_MAX);
    uint64_t n = 0;
    if (!it || !dels || !puts || !sc.nk || !sc.ik || !sc.rk || !oldik)
        rc = err_set(-ENOMEM, "out of memory");
    for (int i = 0; i < 2 && rc == 0; i++) {
        if (!m[i].prefix) {
            size_t il = key_escape(m[i].from, m[i].flen, oldik);
            void *raw = NULL;
            size_t rl;
            rc = view_lookup(it->v, it->seq, oldik, il, &raw, &rl);
            if (rc == 0) {
                rc = mv_note(db, it, m, &m[i], m[i].from, m[i].flen, oldik, il, raw, rl, &sc, dels, puts);
                n++;
            }
            free(raw);
            continue;
        }
        rc = iter_prefix(it, m[i].from, m[i].flen);
        for (stash_iter_seek(it, m[i].from, m[i].flen); rc == 0 && stash_iter_valid(it); stash_iter_next(it)) {
            size_t kl, rl;
            const uint8_t *k = stash_iter_key(it, &kl);
            if (kl < m[i].flen || memcmp(k, m[i].from, m[i].flen) != 0)
                break;
            const uint8_t *raw = it->m->ops->value(it->m, &rl);
            rc = mv_note(db, it, m, &m[i], k, kl, it->cur, it->curlen, raw, rl, &sc, dels, puts);
            n++;
        }
        if (rc == 0)
            rc = stash_iter_status(it);
    }
    if (rc == 0 && (rc = batch_append(dels, puts)) != 0)
        rc = err_set(rc, rc == -ENOMEM ? "out of memory" : "stash_rename2: too many keys to move at once");
    if (rc == 0 && n)
        rc = do_write(db, dels, 0, 0);
    free(sc.nk);
    free(sc.ik);
    free(sc.rk);
    free(oldik);
    stash_batch_free(dels);
    stash_batch_free(puts);
    stash_iter_free(it);
    for (int i = KEY_STRIPES - 1; i >= 0; i--)
        pthread_mutex_unlock(&db->keylock[i]);
    return rc;
}

int stash_iter_status(const stash_iter_t *it)
{
    if (it && !it->status && it->val->err)
        return it->val->err;
    return it ? it->status : -EINVAL;
}

/* ------------------------------------------------------------------ */
/* background thread                                                    */

/*
 * Table work, serialised by work_mu.  Each step records its result in the
 * MANIFEST first and then installs the new version and view under mu, so a
 * reader sees either the memtable or the table holding its data, never
 * neither.
 */

/* After a failed flush (FLUSH) or compaction: remember why, and say so in
 * stats.  A MANIFEST that could not be written leaves the store read-only. */
static void work_failed(stash_t *db, int rc, int manifest, int flush)
{
    pthread_mutex_lock(&db->mu);
    db->work_err = rc;
    db->work_err_flush = flush;
    snprintf(db->work_msg, sizeof db->work_msg, "%s", err_get());
    if (manifest)
        go_read_only(db, db->work_msg);
    pthread_cond_broadcast(&db->done_cv);
    pthread_mutex_unlock(&db->mu);
}

static void install(stash_t *db)
{
    version_unref(db->ver);
    db->ver = db->vs.cur;
    version_ref(db->ver);
    if (refresh_view(db) < 0)
        go_read_only(db, "out of memory for a new view");
    pthread_cond_broadcast(&db->done_cv);
}

static uint64_t smallest_snapshot(stash_t *db);

/* Write the oldest frozen memtable to a level-0 table.  1 when one was
 * flushed, 0 when none waits, or a negative errno. */
static int flush_one(stash_t *db)
{
    pthread_mutex_lock(&db->mu);
    if (!db->nimm || db->bgerr) {
        pthread_mutex_unlock(&db->mu);
        return 0;
    }
    memtable_t *mt = db->imm[0].mt;
    uint64_t keep = db->imm[0].log_keep, seq = db->last_seq;
    uint64_t frozen_us = db->imm[0].frozen_us, bytes = db->imm[0].bytes;
    uint64_t snap = smallest_snapshot(db);
    struct cstats st = db->cst;
    pthread_mutex_unlock(&db->mu);

    fmeta_t *f = NULL;
    int rc = flush_memtable(&db->vs, &db->opt, mt, snap, &f, &st);
    vedit_t *e = rc ? NULL : calloc(1, sizeof *e);
    if (rc == 0 && !e)
        rc = err_set(-ENOMEM, "out of memory");
    if (rc) {
        if (f) {
            atomic_store(&f->obsolete, 1);
            fmeta_unref(f);
        }
        work_failed(db, rc, 0, 1);
        return rc;
    }
    e->has_log = 1;
    e->log_number = keep;
    e->has_seq = 1;
    e->last_seq = seq;
    if (f) {
        e->add[0].level = 0;
        e->add[0].f = f;
        e->nadd = 1;
    }
    /* Should recording the table fail, it stays on disk all the same: a
     * failed fsync of the MANIFEST says nothing of what reached the disk,
     * and the next open must find the table if it finds the record (it
     * deletes the table if not). */
    rc = vset_apply(&db->vs, e);
    free(e);
    if (f)
        fmeta_unref(f);
    if (rc) {
        work_failed(db, rc, 1, 1);
        return rc;
    }
    pthread_mutex_lock(&db->mu);
    /* A small memtable (frozen at rest or for a forced flush) says more
     * about fixed costs than about the rate: it is not measured. */
    uint64_t took = now_us() - frozen_us;
    if (took > 0 && bytes >= db->opt.memtable_size / 8) {
        double r = (double)bytes / (double)took;
        db->drain_rate = db->drain_rate > 0 ? (db->drain_rate + r) / 2 : r;
    }
    db->work_err = 0;
    db->work_err_flush = 0;
    db->nimm--;
    memmove(db->imm, db->imm + 1, (size_t)db->nimm * sizeof *db->imm);
    db->cst.flush_bytes = st.flush_bytes;
    db->cst.flush_dropped = st.flush_dropped;
    install(db);
    pthread_mutex_unlock(&db->mu);
    mt_unref(mt);
    vset_remove_obsolete(&db->vs, keep, 0);
    return 1;
}

/* The sequence below which no snapshot needs older versions. */
static uint64_t smallest_snapshot(stash_t *db)
{
    uint64_t s = db->last_seq;
    for (stash_snapshot_t *p = db->snaps.next; p != &db->snaps; p = p->next)
        if (p->seq < s)
            s = p->seq;
    return s;
}

/* Called from inside a long compaction: writers waiting for a flush must
 * not wait for the whole compaction. */
static void flush_waiting(void *arg, uint64_t entries)
{
    stash_t *db = arg;
    atomic_fetch_add(&db->compact_entries, entries);
    pthread_mutex_lock(&db->mu);
    int waiting = db->nimm > 0 && !db->bgerr;
    pthread_mutex_unlock(&db->mu);
    while (waiting && flush_one(db) > 0)
        ;
}

/* Run compaction C (taking it over) and install its result. */
static int run_compaction(stash_t *db, struct compaction *c)
{
    pthread_mutex_lock(&db->mu);
    uint64_t snap = smallest_snapshot(db);
    struct cstats st = db->cst;
    pthread_mutex_unlock(&db->mu);
    vedit_t *e = calloc(1, sizeof *e);
    int rc = e ? compact_run(&db->vs, &db->opt, c, snap, e, &st, flush_waiting, db)
               : err_set(-ENOMEM, "out of memory");
    int manifest = 0;
    if (rc == 0) {
        rc = vset_apply(&db->vs, e);
        manifest = rc != 0;
    }
    /* A failed compact_run dropped its outputs itself.  Those of one whose
     * record failed stay on disk, as in flush_one: the record may be there. */
    for (int i = 0; e && i < e->nadd; i++)
        fmeta_unref(e->add[i].f);
    free(e);
    compact_free(c);
    if (rc) {
        work_failed(db, rc, manifest, 0);
        return rc;
    }
    pthread_mutex_lock(&db->mu);
    if (!db->work_err_flush)
        db->work_err = 0;       /* a compaction went through: what failed before does not stop writers */
    db->cst.compactions = st.compactions;
    db->cst.moves = st.moves;
    db->cst.compact_bytes_read = st.compact_bytes_read;
    db->cst.compact_bytes_written = st.compact_bytes_written;
    install(db);
    pthread_mutex_unlock(&db->mu);
    vset_remove_obsolete(&db->vs, db->vs.log_number, 0);
    return 1;
}

/*
 * Flush a frozen memtable if one waits, then compact if a level is over its
 * bounds, and repeat until there is nothing to do (or the store closes).
 * Compaction is considered after every flush: under a steady stream of
 * flushes, level 0 must not grow until writers stop.  A long compaction
 * flushes waiting memtables itself (flush_waiting), so writers never wait
 * for a whole compaction.
 */
static void table_work(stash_t *db)
{
    pthread_mutex_lock(&db->work_mu);
    while (!db->closing && !atomic_load(&db->work_wanted)) {
        int flushed = flush_one(db);
        if (flushed < 0)
            break;
        pthread_mutex_lock(&db->mu);
        int broken = db->bgerr != 0;
        pthread_mutex_unlock(&db->mu);
        struct compaction c;
        if (!broken && compact_pick(db->vs.cur, &db->opt, db->cptr, db->cplen, &c)) {
            if (run_compaction(db, &c) < 0)
                break;
        } else if (!flushed) {
            break;
        }
    }
    pthread_mutex_unlock(&db->work_mu);
}

/*
 * Called by the background thread when the store took no write for a whole
 * compaction_interval: the memtable goes to a table and level 0 into level
 * 1, so a store at rest takes its compact size (tables compressed,
 * overwritten entries dropped, no log left to replay at the next open).
 * Level 0 is kept uncompressed while writes come because it is rewritten
 * soon; at rest nothing rewrites it.
 */
static void idle_compact(stash_t *db, uint64_t seq)
{
    /* Still at rest after the table work before it (which may have taken
     * long): no write since SEQ, nothing frozen, level 0 short.  The
     * freeze below queues as a writer, and a leader in front of it must
     * not be one waiting in throttle for this thread. */
    pthread_mutex_lock(&db->mu);
    int still = db->last_seq == seq && db->nimm == 0 && db->ver->n[0] < db->opt.l0_slowdown_trigger;
    pthread_mutex_unlock(&db->mu);
    if (!still || do_write(db, NULL, 0, FORCE_IDLE) != 0)   /* freeze the memtable, if it holds anything */
        return;
    pthread_mutex_lock(&db->work_mu);
    int rc;
    while ((rc = flush_one(db)) > 0)
        ;
    struct compaction c;
    if (rc == 0 && !db->closing && compact_range_pick(db->vs.cur, 0, NULL, 0, NULL, 0, 0, &c))
        rc = run_compaction(db, &c);
    pthread_mutex_unlock(&db->work_mu);
    if (rc < 0)
        return;   /* work_err says why; the next tick at rest tries again */
    pthread_mutex_lock(&db->mu);
    db->st_idle++;
    pthread_mutex_unlock(&db->mu);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * One pass over the tagged chunk records of iterator IT: for each pointer
 * some reader sees (the newest version at or below a sequence in SEQS, see
 * vlog_collect) into a file of CAND, add its record's bytes to LIVE; and
 * when MOVE is given, note in *R the pointers into a file whose MOVE flag
 * is set that only the newest sequence sees (at most RELOC_MAX bytes of
 * them).  One a snapshot sees too is left: the file stays for the snapshot
 * anyway, and is emptied once it is released.
 */
struct reloc {
    uint8_t ck[CHUNK_KEY_LEN];
    uint8_t ptr[VPTR_LEN];
};

#define RELOC_MAX (64u << 20)   /* bytes moved out of sparse files per collection */

static int scan_pointers(stash_iter_t *it, const uint64_t *seqs, size_t ns, const uint64_t *cand, size_t nc,
                         uint64_t *live, const uint8_t *move, struct reloc **r, size_t *nr)
{
    iiter_t *m = it->m;
    const uint8_t start[2] = {NS_BYTE, NS_TCHUNK};
    uint8_t last[CHUNK_KEY_LEN] = {0};
    uint64_t newer = UINT64_MAX, moving = 0;
    size_t cap = 0;
    for (m->ops->seek(m, start, sizeof start, TAG(UINT64_MAX >> 8, 0xff)); m->ops->valid(m); m->ops->next(m)) {
        size_t kl, vl;
        const uint8_t *k = m->ops->key(m, &kl);
        if (kl < 2 || k[0] != NS_BYTE || k[1] != NS_TCHUNK)
            break;
        uint64_t seq = TAG_SEQ(m->ops->tag(m));
        if (kl != CHUNK_KEY_LEN || memcmp(k, last, kl)) {
            newer = UINT64_MAX;     /* the newest version of this key */
            if (kl == CHUNK_KEY_LEN)
                memcpy(last, k, kl);
        }
        /* Seen by a reader at X when seq <= X < newer: the smallest X at
         * or above seq decides. */
        size_t lo = 0, hi = ns;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (seqs[mid] < seq)
                lo = mid + 1;
            else
                hi = mid;
        }
        int seen = lo < ns && seqs[lo] < newer;
        int current = lo == ns - 1 && seen;    /* seen at the newest sequence only */
        newer = seq;
        if (!seen || TAG_TYPE(m->ops->tag(m)) != KT_PUT)
            continue;
        struct vptr p;
        const uint8_t *v = m->ops->value(m, &vl);
        if (vptr_decode(v, vl, &p) < 0)
            continue;
        uint64_t *hit = bsearch(&p.file, cand, nc, sizeof *cand, cmp_u64);
        if (!hit)
            continue;
        live[hit - cand] += VLOG_REC_HDR + CHUNK_KEY_LEN + p.len;
        if (!move || !move[hit - cand] || !current || moving >= RELOC_MAX)
            continue;
        if (*nr == cap) {
            struct reloc *g = realloc(*r, (cap = cap ? 2 * cap : 64) * sizeof **r);
            if (!g)
                return err_set(-ENOMEM, "out of memory");
            *r = g;
        }
        memcpy((*r)[*nr].ck, k, CHUNK_KEY_LEN);
        memcpy((*r)[*nr].ptr, v, VPTR_LEN);
        (*nr)++;
        moving += p.len;
    }
    return m->ops->status(m);
}

/*
 * Move live chunk R out of its (mostly dead) value file: under the lock
 * every change to the chunk takes (its owner's stripe, or the link lock for
 * a hard-linked value), and only if the record still holds the same
 * pointer, its stored bytes are copied to the active file and the record
 * rewritten.  A chunk of a streamed put not yet committed (no owner
 * record) stays.  Returns 0 or a negative errno.
 */
static int relocate(stash_t *db, const struct reloc *r)
{
    uint8_t bk[BLOB_KEY_LEN] = {NS_BYTE, NS_BLOB};
    memcpy(bk + 2, r->ck + 2, 8);
    uint64_t seq;
    struct view *v = view_get(db, &seq);
    void *own = NULL, *own2 = NULL, *cur = NULL;
    size_t olen, olen2, clen;
    int rc = view_lookup(v, seq, bk, sizeof bk, &own, &olen);
    view_unref(v);
    if (rc)
        return rc == -ENOENT ? 0 : rc;
    int link = olen >= 2 && ((uint8_t *)own)[0] == NS_BYTE && ((uint8_t *)own)[1] == NS_LINK;
    int held = 0;
    pthread_mutex_t *lk = link ? NULL : db_keylock(db, own, olen);
    if (link)
        db_link_hold(db, &held);
    else
        pthread_mutex_lock(lk);
    v = view_get(db, &seq);
    rc = view_lookup(v, seq, bk, sizeof bk, &own2, &olen2);
    int same = rc == 0 && olen2 == olen && !memcmp(own, own2, olen);
    if (same) {
        /* A chunk deleted meanwhile (a truncation) must stay deleted. */
        rc = view_lookup(v, seq, r->ck, CHUNK_KEY_LEN, &cur, &clen);
        same = rc == 0 && clen == VPTR_LEN && !memcmp(cur, r->ptr, VPTR_LEN);
    }
    view_unref(v);
    if (rc == -ENOENT)
        rc = 0;
    struct vptr from, to;
    if (rc == 0 && same && vptr_decode(r->ptr, VPTR_LEN, &from) == 0 &&
        (rc = vlog_copy(db->vl, r->ck, CHUNK_KEY_LEN, &from, &to)) == 0) {
        uint8_t rec[VPTR_LEN];
        vptr_encode(rec, &to);
        stash_batch_t *b = stash_batch_new();
        rc = b ? batch_put_raw(b, r->ck, CHUNK_KEY_LEN, NULL, 0, rec, sizeof rec) : -ENOMEM;
        if (rc == 0)
            rc = do_write(db, b, 0, 0);
        stash_batch_free(b);
        vlog_done(db->vl, to.file);
    }
    if (link)
        db_link_release(db, &held);
    else
        pthread_mutex_unlock(lk);
    free(own);
    free(own2);
    free(cur);
    return rc;
}

/* Every record logged so far durable.  At close (single-threaded, the
 * background thread gone) directly; otherwise as a synced empty write, in
 * turn with the writers. */
static int collect_durable(stash_t *db)
{
    if (db->closing) {
        if (!log_dirty(db))
            return 0;
        int rc = vlog_sync(db->vl);
        return rc ? rc : wal_sync(db->log);
    }
    return do_write(db, NULL, 1, 0);
}

/*
 * Give back the value files no pointer anyone can still read names, and
 * empty the sparse ones.  The candidates are the settled files (vlog.h),
 * taken before the view, so the view holds every pointer into them; a
 * pointer counts when its record is the version some reader sees: the
 * newest at or below the view's sequence, or below a snapshot's (the
 * snapshots are read after the view: one taken later sees nothing older).
 * Readers on older views keep what they can reach through the pins until
 * they finish.  A file less than half of which is live (and at least 1 MiB)
 * has its current live chunks moved to the active file (relocate), up to
 * RELOC_MAX bytes a time, and goes at a later collection.  SEAL: seal the
 * active file first, whatever was appended lately (vlog_seal_idle).  One
 * collection runs at a time (gc_mu).  Returns the files given back.
 */
static int vlog_collect(stash_t *db, int seal)
{
    vlog_t *vl = db->vl;
    if (!vl || db->opt.read_only)
        return 0;
    pthread_mutex_lock(&db->gc_mu);
    vlog_seal_idle(vl, seal);
    uint64_t *cand = NULL, *sizes = NULL, *seqs = NULL, *live = NULL, t0 = now_us();
    uint8_t *move = NULL;
    struct reloc *r = NULL;
    size_t nc = 0, ns = 0, nr = 0;
    int rc = vlog_settled(vl, &cand, &sizes, &nc);
    stash_iter_t *it = rc == 0 && nc ? stash_iter_new(db, NULL) : NULL;
    if (rc == 0 && nc && !it)
        rc = err_set(-ENOMEM, "out of memory");
    if (it) {
        pthread_mutex_lock(&db->mu);
        size_t cap = 1;
        for (stash_snapshot_t *p = db->snaps.next; p != &db->snaps; p = p->next)
            cap++;
        if ((seqs = malloc(cap * sizeof *seqs))) {
            seqs[ns++] = it->seq;
            for (stash_snapshot_t *p = db->snaps.next; p != &db->snaps; p = p->next)
                if (p->seq < it->seq)
                    seqs[ns++] = p->seq;
        }
        pthread_mutex_unlock(&db->mu);
        live = calloc(nc, sizeof *live);
        move = calloc(nc, 1);
        if (!seqs || !live || !move)
            rc = err_set(-ENOMEM, "out of memory");
    }
    int sparse = 0;
    if (it && rc == 0) {
        qsort(seqs, ns, sizeof *seqs, cmp_u64);
        rc = scan_pointers(it, seqs, ns, cand, nc, live, NULL, NULL, NULL);
        for (size_t i = 0; rc == 0 && i < nc; i++)
            sparse |= move[i] = live[i] && sizes[i] >= (1u << 20) && live[i] < sizes[i] / 2;
        if (rc == 0 && sparse) {
            memset(live, 0, nc * sizeof *live);
            rc = scan_pointers(it, seqs, ns, cand, nc, live, move, &r, &nr);
        }
    }
    size_t nd = 0;
    for (size_t i = 0; rc == 0 && i < nc; i++)
        if (!live[i])
            cand[nd++] = cand[i];
    stash_iter_free(it);
    /* The records that left these files unnamed (a delete, an overwrite, a
     * moved chunk) must be on disk before the files go: were the log's tail
     * lost to a power cut, the old pointers would come back and find their
     * file missing. */
    if (rc == 0 && nd && collect_durable(db) != 0)
        nd = 0;         /* kept for a later collection */
    if (rc == 0 && nd) {
        vlog_retire(vl, cand, nd);
        /* The store's own view pins the epoch it was made in: renew it, so
         * that only readers still at work hold the files back. */
        pthread_mutex_lock(&db->mu);
        (void)refresh_view(db);
        pthread_mutex_unlock(&db->mu);
    }
    uint64_t moved = 0;
    for (size_t i = 0; rc == 0 && i < nr && !atomic_load(&db->vlog_stop); i++) {
        if ((rc = relocate(db, &r[i])) == 0)
            moved++;
    }
    free(cand);
    free(sizes);
    free(seqs);
    free(live);
    free(move);
    free(r);
    int reaped = vlog_reap(vl);
    pthread_mutex_lock(&db->mu);
    db->vlog_freed += (uint64_t)reaped;
    db->vlog_moved += moved;
    db->vlog_scan_us = now_us() - t0;
    pthread_mutex_unlock(&db->mu);
    pthread_mutex_unlock(&db->gc_mu);
    return rc < 0 ? rc : reaped;
}

/*
 * The value-file thread: a collection every VLOG_GC_EVERY seconds (or, in a
 * store where one takes more than a tenth of that, every 20 times what it
 * took) while writes come in, twice more once they stop (the second seals
 * an idle active file so that it can go too), and one at start (what a
 * crash left behind).  Its
 * own thread, as relocations are writes, which may have to wait for the
 * background thread's flushes.
 */
#define VLOG_GC_EVERY 2             /* seconds */

static void *vlog_main(void *arg)
{
    stash_t *db = arg;
    uint64_t seen = UINT64_MAX, every = VLOG_GC_EVERY * 1000000u;
    int quiet = 0;
    pthread_mutex_lock(&db->mu);
    while (!atomic_load(&db->vlog_stop)) {
        if (!db->bgerr && (db->last_seq != seen || quiet < 2)) {
            quiet = db->last_seq == seen ? quiet + 1 : 0;
            seen = db->last_seq;
            pthread_mutex_unlock(&db->mu);
            uint64_t t0 = now_us();
            (void)vlog_collect(db, 0);
            /* A collection reads every chunk record: in a store so large
             * that this takes long, collect less often, so that it keeps
             * to about a twentieth of one core. */
            every = (now_us() - t0) * 20;
            if (every < VLOG_GC_EVERY * 1000000u)
                every = VLOG_GC_EVERY * 1000000u;
            pthread_mutex_lock(&db->mu);
        } else {
            pthread_mutex_unlock(&db->mu);
            int n = vlog_reap(db->vl);
            pthread_mutex_lock(&db->mu);
            db->vlog_freed += (uint64_t)n;
        }
        if (atomic_load(&db->vlog_stop))
            break;
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        uint64_t ns = (uint64_t)t.tv_nsec + every * 1000u;
        t.tv_sec += (time_t)(ns / 1000000000u);
        t.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&db->vlog_cv, &db->mu, &t);
    }
    pthread_mutex_unlock(&db->mu);
    return NULL;
}

/*
 * The background thread: flushes frozen memtables as soon as they appear,
 * compacts when a level crosses its bound, compacts a store at rest (see
 * idle_compact) when a compaction_interval tick finds no write since the
 * tick before, and fsyncs the log every wal_flush_interval seconds if
 * anything was appended since the last fsync (as a sync writer's group
 * does once off the write queue: never queued behind a leader that may be
 * waiting for this thread).
 */
static void *bg_main(void *arg)
{
    stash_t *db = arg;
    uint64_t wal_every = (uint64_t)db->opt.wal_flush_interval * 1000000u;
    uint64_t comp_every = (uint64_t)(db->opt.compaction_interval ? db->opt.compaction_interval : 60) * 1000000u;
    uint64_t next_wal = now_us() + wal_every, next_comp = now_us() + comp_every;
    pthread_mutex_lock(&db->mu);
    uint64_t tick_seq = db->last_seq;   /* last_seq at the last compaction tick */
    while (!db->closing) {
        uint64_t now = now_us();
        uint64_t wake = next_comp;
        if (wal_every && next_wal < wake)
            wake = next_wal;
        /* (A read-only store flushes nothing: it only waits to close.
         * Counting its frozen memtables as work spun this loop with mu
         * held, and closing the store waited for ever.) */
        int work = db->nimm > 0 && !db->bgerr;
        /* After a failed flush or compaction, with memtables waiting or
         * level 0 at its compaction trigger, try again within a second:
         * writers may be stopped until it goes through (a disk that failed
         * once may be fine again). */
        if (db->work_err && !db->bgerr && (db->nimm > 0 || db->ver->n[0] >= db->opt.l0_compaction_trigger) &&
            wake > now + 1000000u)
            wake = now + 1000000u;
        if (!work && wake > now) {
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            uint64_t ns = (uint64_t)t.tv_nsec + (wake - now) * 1000u;
            t.tv_sec += (time_t)(ns / 1000000000u);
            t.tv_nsec = (long)(ns % 1000000000u);
            pthread_cond_timedwait(&db->bg_cv, &db->mu, &t);
        }
        if (db->closing)
            break;
        now = now_us();
        /* The sync does not queue as a writer: the leader at the head of
         * the queue may be waiting in throttle for this very thread (to
         * flush a memtable, or to compact a level 0 that a long
         * stash_compact_range let grow to its stop trigger).  It syncs what
         * the queue has appended so far, as a sync writer's group does
         * once off the queue. */
        if (wal_every && now >= next_wal) {
            next_wal = now + wal_every;
            if (log_dirty(db) && !db->bgerr && db->log)
                wait_synced(db, wal_number(db->log), db->log_size);
        }
        int due = now >= next_comp;
        if (due)
            next_comp = now + comp_every;
        if (db->bgerr)
            continue;
        /* At rest: no write for a whole interval, and enough to tidy that
         * it is worth rewriting level 1 for: the memtable and level 0 hold
         * at least a quarter of level 1's bytes (a few writes now and then
         * do not rewrite level 1 every time; they wait for the usual level-0
         * trigger).  Not while level 0 is long enough to slow writers down
         * (the flush below must not wait on this thread's own compactions). */
        int idle = due && db->last_seq == tick_seq && db->nimm == 0 && !db->work_err &&
                   (mt_count(db->mem) > 0 || db->ver->n[0] > 0) &&
                   db->ver->n[0] < db->opt.l0_slowdown_trigger &&
                   mt_memory(db->mem) + level_bytes(db->ver, 0) >= level_bytes(db->ver, 1) / 4;
        if (due)
            tick_seq = db->last_seq;
        pthread_mutex_unlock(&db->mu);
        /* Flushes always; compactions when a threshold is crossed (picked
         * inside) or the store is at rest. */
        table_work(db);
        if (idle)
            idle_compact(db, tick_seq);
        pthread_mutex_lock(&db->mu);
        /* A foreground caller (backup, compact_range) wants the table work:
         * step aside until it is done (it flushes for the writers). */
        while (atomic_load(&db->work_wanted) && !db->closing) {
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            t.tv_nsec += 20000000;
            if (t.tv_nsec >= 1000000000) {
                t.tv_sec++;
                t.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&db->bg_cv, &db->mu, &t);
        }
        /* After a failed flush, do not spin: try again a little later
         * (work_err stays set, and writers that would wait get it, until a
         * flush succeeds). */
        if (db->work_err && db->work_err_flush && db->nimm > 0 && !db->closing) {
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            t.tv_sec += 1;
            pthread_cond_timedwait(&db->bg_cv, &db->mu, &t);
        }
    }
    pthread_mutex_unlock(&db->mu);
    return NULL;
}

/* Table work for a foreground caller.  Unfair mutexes would let the
 * background thread, looping under a steady write load, take work_mu back
 * forever; work_wanted makes it step aside. */
static void work_lock_fg(stash_t *db)
{
    atomic_fetch_add(&db->work_wanted, 1);
    pthread_mutex_lock(&db->work_mu);
}

static void work_unlock_fg(stash_t *db)
{
    pthread_mutex_unlock(&db->work_mu);
    atomic_fetch_sub(&db->work_wanted, 1);
    pthread_mutex_lock(&db->mu);
    pthread_cond_broadcast(&db->bg_cv);
    pthread_mutex_unlock(&db->mu);
}

/* DEST must be missing (it is made) or an empty directory. */
static int backup_dest(const char *dest)
{
    if (mkdir(dest, 0755) == 0)
        return 0;
    int e = errno;
    DIR *d = e == EEXIST ? opendir(dest) : NULL;
    struct dirent *de;
    int empty = d != NULL;
    while (d && (de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            empty = 0;
    if (d)
        closedir(d);
    if (!empty)
        return err_set(e == EEXIST ? -EEXIST : -e, "backup destination %s: %s", dest,
                       e == EEXIST ? "not an empty directory" : strerror(e));
    return 0;
}

int stash_backup(stash_t *db, const char *dest)
{
    if (!db || !dest || !*dest)
        return err_set(-EINVAL, "stash_backup: bad arguments");
    if (db->opt.read_only)
        return err_set(-EROFS, "store %s is open read-only: its memtable cannot be written out", db->dir);
    int rc = backup_dest(dest);
    if (rc)
        return rc;
    /* A view held throughout pins the value files: none that the tables
     * linked below point into can be given back meanwhile. */
    struct view *pin = view_get(db, NULL);
    /* Everything acknowledged so far goes to tables first. */
    rc = do_write(db, NULL, 0, 1);
    if (rc) {
        view_unref(pin);
        return rc;
    }
    work_lock_fg(db);
    while ((rc = flush_one(db)) > 0)
        ;
    if (rc == 0) {
        pthread_mutex_lock(&db->mu);
        uint64_t seq = db->last_seq;
        pthread_mutex_unlock(&db->mu);
        /* work_mu keeps compactions out while the tables are linked. */
        /* The tables' pointers need the value files, linked first: every
         * one (some may hold only garbage; the copy's first collection
         * drops them). */
        rc = vlog_backup(db->vl, dest);
        if (rc == 0)
            rc = vset_backup(&db->vs, db->vs.cur, dest, seq);
    }
    work_unlock_fg(db);
    view_unref(pin);
    return rc < 0 ? rc : 0;
}

/*
 * Copy what iterator IT sees -- the newest version at or below its sequence
 * of every stored key, deletions left out, named snapshot records left out
 * -- into store OUT, in batches of about a megabyte.
 */
static int copy_visible(stash_iter_t *it, stash_t *out)
{
    iiter_t *m = it->m;
    stash_batch_t *b = stash_batch_new();
    uint8_t *last = malloc(IKEY_MAX), *chunk = NULL;
    size_t lastlen = 0;
    int have = 0, rc = b && last ? 0 : err_set(-ENOMEM, "out of memory");
    for (m->ops->seek_first(m); rc == 0 && m->ops->valid(m); m->ops->next(m)) {
        size_t kl, vl;
        const uint8_t *k = m->ops->key(m, &kl);
        uint64_t tag = m->ops->tag(m);
        if (TAG_SEQ(tag) > it->seq)
            continue;               /* written after the snapshot */
        if (have && kl == lastlen && !memcmp(k, last, kl))
            continue;               /* an older version */
        memcpy(last, k, kl);
        lastlen = kl;
        have = 1;
        if (TAG_TYPE(tag) != KT_PUT || (kl >= 2 && k[0] == NS_BYTE && k[1] == NS_SNAP))
            continue;
        if (key_is_sys(k, kl))
            atomic_store(&out->has_blobs, 1);
        const uint8_t *v = m->ops->value(m, &vl);
        struct vptr p;
        if (kl == CHUNK_KEY_LEN && k[0] == NS_BYTE && k[1] == NS_TCHUNK && vptr_decode(v, vl, &p) == 0) {
            /* A pointer into this store's value files: the copy gets the
             * bytes themselves. */
            if (!chunk && !(chunk = malloc(1 + CHUNK_SIZE))) {
                rc = err_set(-ENOMEM, "out of memory");
                break;
            }
            if (p.len > CHUNK_SIZE) {
                rc = err_set(-EIO, "damaged chunk record in the tables");
                break;
            }
            chunk[0] = CTAG_BYTES;
            size_t got;
            if ((rc = vlog_read(it->v->vl, &p, chunk + 1, CHUNK_SIZE, &got)) < 0)
                break;
            v = chunk;
            vl = 1 + got;
        }
        rc = batch_put_raw(b, k, kl, NULL, 0, v, vl);
        if (rc == 0 && batch_data(b, &vl) && vl >= (1u << 20)) {
            rc = do_write(out, b, 0, 0);
            stash_batch_clear(b);
        }
    }
    if (rc == 0)
        rc = m->ops->status(m);
    if (rc == 0 && stash_batch_count(b))
        rc = do_write(out, b, 0, 0);
    if (rc == 0)
        rc = do_write(out, NULL, 1, 0);     /* fsync the copy's log */
    stash_batch_free(b);
    free(last);
    free(chunk);
    return rc;
}

int stash_backup_snapshot(stash_t *db, const char *name, const char *dest)
{
    if (!db || !name || !dest || !*dest)
        return err_set(-EINVAL, "stash_backup_snapshot: bad arguments");
    int rc = check_snap_name(name);
    if (rc)
        return rc;
    pthread_mutex_lock(&db->named_mu);
    struct named *n = find_named(db, name);
    stash_snapshot_t *s = n ? snapshot_pin(db, &n->seq) : NULL;
    pthread_mutex_unlock(&db->named_mu);
    if (!s)
        return n ? err_set(-ENOMEM, "out of memory") : err_set(-ENOENT, "no snapshot %s", name);
    rc = backup_dest(dest);
    stash_t *out = NULL;
    if (rc == 0) {
        stash_options_t o = db->opt;
        o.create_if_missing = 1;
        o.read_only = 0;
        o.holder = NULL;
        rc = stash_open(dest, &o, &out);
    }
    stash_iter_t *it = rc == 0 ? stash_iter_new(db, s) : NULL;
    if (rc == 0 && !it)
        rc = err_set(-ENOMEM, "out of memory");
    if (rc == 0)
        rc = copy_visible(it, out);
    stash_iter_free(it);
    stash_snapshot_free(db, s);
    if (out) {
        int crc = stash_close(out);
        if (rc == 0)
            rc = crc;
    }
    return rc;
}

static int compact_range_stored(stash_t *db, const void *begin, size_t blen, const void *end, size_t elen);

int stash_compact_range(stash_t *db, const void *begin, size_t blen, const void *end, size_t elen)
{
    if (!db || (blen && !begin) || (elen && !end))
        return err_set(-EINVAL, "stash_compact_range: bad arguments");
    if (db->opt.read_only)
        return err_set(-EROFS, "store %s is open read-only", db->dir);
    if (!begin)
        blen = 0;
    if (!end)
        elen = 0;
    /* Bounds as stored keys; an unbounded end also covers the engine's keys. */
    struct skey b = {0}, e = {0};
    int rc = skey_make(&b, begin, blen) < 0 || skey_make(&e, end, elen) < 0
                 ? err_set(-ENOMEM, "out of memory")
                 : compact_range_stored(db, b.p, b.len, e.p, e.len);
    skey_done(&b);
    skey_done(&e);
    return rc;
}

#define RANGE_PIECE 64

static int compact_range_stored(stash_t *db, const void *begin, size_t blen, const void *end, size_t elen)
{
    /* Everything written so far goes to tables first. */
    int rc = do_write(db, NULL, 0, 1);
    if (rc)
        return rc;
    work_lock_fg(db);
    while ((rc = flush_one(db)) > 0)
        ;
    int deepest = 1;
    for (int l = 1; l < NLEVELS && rc == 0; l++)
        if (db->vs.cur->n[l])
            deepest = l;
    /* A level at a time, and above level 0 in pieces of RANGE_PIECE
     * tables (with what they overlap below), so that no one compaction
     * (and MANIFEST record) grows with the store. */
    for (int l = 0; l < deepest && rc >= 0; l++) {
        struct compaction c;
        while (rc >= 0 && compact_range_pick(db->vs.cur, l, begin, blen, end, elen, RANGE_PIECE, &c)) {
            rc = run_compaction(db, &c);
            if (l == 0)
                break;
        }
    }
    /* Then the deepest level itself, in place: what only it holds
     * (versions kept for a snapshot since released, deletions with nothing
     * beneath them) goes no other way.  Its tables in the range, as they
     * are now, one piece after another. */
    version_t *v = db->vs.cur;
    uint64_t *nums = rc >= 0 && v->n[deepest] ? malloc((size_t)v->n[deepest] * sizeof *nums) : NULL;
    size_t n = 0, at = 0;
    for (int i = 0; nums && i < v->n[deepest]; i++)
        if (compact_overlaps(v->f[deepest][i], begin, blen, end, elen))
            nums[n++] = v->f[deepest][i]->number;
    if (rc >= 0 && v->n[deepest] && !nums)
        rc = err_set(-ENOMEM, "out of memory");
    struct compaction c;
    while (rc >= 0 && compact_place_pick(db->vs.cur, deepest, nums, n, &at, RANGE_PIECE, &c))
        rc = run_compaction(db, &c);
    free(nums);
    work_unlock_fg(db);
    /* And value files no longer referenced go. */
    if (rc >= 0)
        rc = vlog_collect(db, 1);
    return rc < 0 ? rc : 0;
}

/* ------------------------------------------------------------------ */
/* open, recovery, close                                                */

struct replay {
    stash_t *db;
    const char *name;
    uint64_t lognum;
    uint64_t prev_seq;    /* the last sequence replayed: records only go up */
    int cut;              /* a batch's value-file bytes are missing: the log ends there */
    uint64_t cut_off;     /* at this offset of the file */
    int started;          /* a record of this log is already applied */
    int err;              /* checking a pointer failed (not for damage) */
    int newest;           /* the newest log: pointers past a synced size are read */
};

/* Whether every value-file pointer batch entry names bytes that are there,
 * as far as a crash could have kept them from being (-EIO when one does
 * not; a failure to find out goes to r->err). */
static int ptr_present(void *arg, uint64_t seq, int type, const uint8_t *key, size_t klen,
                       const uint8_t *val, size_t vlen)
{
    struct replay *r = arg;
    struct vptr p;
    (void)seq;
    if (type != KT_PUT || klen != CHUNK_KEY_LEN || key[0] != NS_BYTE || key[1] != NS_TCHUNK ||
        vptr_decode(val, vlen, &p) != 0)
        return 0;
    int t = vlog_torn(r->db->vl, &p, r->newest);
    if (t < 0)
        r->err = t;
    /* Only the newest log can be torn: an older one was synced whole, its
     * value files first (make_room).  Bytes missing under its pointers are
     * damage: the batch replays and those chunks read -EIO, and the synced
     * writes after it stay (cutting the log there dropped them). */
    if (t > 0 && !r->newest)
        t = 0;
    return t ? -EIO : 0;
}

/* Apply one log record during recovery, freezing the memtable when full. */
static int replay_record(void *arg, const void *rec, size_t len, uint64_t off)
{
    struct replay *r = arg;
    stash_t *db = r->db;
    uint64_t first;
    uint32_t count;
    if (batch_decode(rec, len, NULL, NULL, &first, &count) < 0)
        return err_set(-EIO, "wal %s: malformed batch at offset %llu", r->name, (unsigned long long)off);
    if (count == 0 || first <= r->prev_seq || first + count - 1 > SEQ_MAX)
        return err_set(-EIO, "wal %s: sequence %llu out of order at offset %llu",
                       r->name, (unsigned long long)first, (unsigned long long)off);
    /* Value-file bytes are written before the batch that points to them,
     * but without an fsync a crash of the machine can keep the bytes and
     * not the batch or, the other way, the batch and not the bytes.  A
     * batch whose bytes are missing is torn like a half-written record:
     * the log ends before it.  A writer cuts the file there (recover): were
     * the log kept, once the value file it names is collected (no replayed
     * pointer names it) a later open would find no file to call the batch
     * torn by and replay it, and the batches after it, over writes that
     * reused their sequence numbers. */
    int missing = r->cut || batch_decode(rec, len, ptr_present, r, NULL, NULL) < 0;
    if (r->err)
        return r->err;
    if (missing) {
        if (!r->cut)
            r->cut_off = off;
        r->cut = 1;
        return 0;
    }
    /* A memtable is frozen only between logs, never inside one: then each
     * flush at open records that every log before the next one is in a
     * table, and a crash between two of open's flushes replays no record
     * twice (it would otherwise come back as a second, identical entry in
     * another table).  A memtable at open so holds whole logs, at most the
     * memtable_size a log was written with plus one log. */
    int at_start = !r->started;
    r->started = 1;
    if (at_start && mt_memory(db->mem) >= db->opt.memtable_size) {
        if (db->nimm == db->capimm) {
            int cap = db->capimm ? 2 * db->capimm : 8;
            struct frozen *f = realloc(db->imm, (size_t)cap * sizeof *f);
            if (!f)
                return err_set(-ENOMEM, "out of memory during recovery");
            db->imm = f;
            db->capimm = cap;
        }
        memtable_t *mt = new_memtable(&r->db->opt);
        if (!mt)
            return err_set(-ENOMEM, "out of memory during recovery");
        /* This log, and every later one, goes to the next memtable. */
        /* No bytes: its flush at open does not count in the drain rate. */
        db->imm[db->nimm] = (struct frozen){ .mt = db->mem, .log_keep = r->lognum, .frozen_us = now_us() };
        db->nimm++;
        db->mem = mt;
    }
    int rc = batch_decode(rec, len, apply_entry, db->mem, NULL, NULL);
    if (rc)
        return err_set(rc, "out of memory during recovery");
    r->prev_seq = first + count - 1;
    if (r->prev_seq > db->last_seq)
        db->last_seq = r->prev_seq;
    return 0;
}

/* The numbers of the NNNNNN.log files in the store directory, sorted. */
static int list_logs(const char *dir, uint64_t **out, int *n)
{
    DIR *d = opendir(dir);
    if (!d)
        return err_set(sys_err(errno), "store %s: cannot list: %s", dir, strerror(errno));
    uint64_t *v = NULL;
    int cnt = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        unsigned long long num = strtoull(e->d_name, &end, 10);
        if (strcmp(end, ".log") != 0)
            continue;
        if (cnt == cap) {
            cap = cap ? 2 * cap : 16;
            uint64_t *nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) {
                free(v);
                closedir(d);
                return err_set(-ENOMEM, "out of memory");
            }
            v = nv;
        }
        v[cnt++] = num;
    }
    closedir(d);
    if (cnt)
        qsort(v, (size_t)cnt, sizeof *v, cmp_u64);
    *out = v;
    *n = cnt;
    return 0;
}

/*
 * Load the tables' version from the MANIFEST, then replay every log it
 * still needs (those numbered at or above its log number) into memtables.
 * A writer then starts a fresh MANIFEST and a new log.
 */
static int recover(stash_t *db)
{
    int rc = vset_recover(&db->vs, db->opt.read_only);
    if (rc)
        return rc;
    db->last_seq = db->vs.last_seq;
    uint64_t *logs = NULL;
    int n = 0, first = 0;
    uint64_t prev = 0;
    rc = list_logs(db->dir, &logs, &n);
    while (rc == 0 && first < n && logs[first] < db->vs.log_number)
        first++;
    for (int i = first; rc == 0 && i < n; i++) {
        char path[PATH_MAX], name[32];
        wal_path(path, sizeof path, db->dir, logs[i]);
        snprintf(name, sizeof name, "%06llu.log", (unsigned long long)logs[i]);
        struct replay r = { .db = db, .name = name, .lognum = logs[i], .prev_seq = prev, .newest = i == n - 1 };
        int flags = 0;
        if (i == n - 1)
            flags = WAL_NEWEST | (db->opt.read_only ? 0 : WAL_REPAIR);
        rc = wal_replay(path, logs[i], flags, replay_record, &r, NULL);
        prev = r.prev_seq;
        /* The batches cut at a torn value-file pointer go for good (the
         * sync below makes the new length durable before anything new is
         * written); they were never fsynced, as a log's fsync waits for
         * the value files first. */
        if (rc == 0 && r.cut && !db->opt.read_only && truncate(path, (off_t)r.cut_off) < 0)
            rc = err_set(sys_err(errno), "wal %s: cannot cut at offset %llu, before a batch whose value-file "
                         "bytes are missing: %s", name, (unsigned long long)r.cut_off, strerror(errno));
    }
    /* What a killed process appended but never fsynced is made durable
     * before anything new is written (a MANIFEST, a log): after that, a
     * power cut could tear a log that is no longer the newest, and such a
     * log must replay whole.  (A replay may have removed an empty one.) */
    for (int i = first; rc == 0 && !db->opt.read_only && i < n; i++) {
        char path[PATH_MAX];
        wal_path(path, sizeof path, db->dir, logs[i]);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 && errno != ENOENT)
            rc = err_set(-EIO, "wal %06llu.log: cannot open: %s", (unsigned long long)logs[i], strerror(errno));
        if (fd >= 0)
            rc = wal_sync_fd(fd, logs[i]);
        if (fd >= 0)
            close(fd);
    }
    uint64_t next = n ? logs[n - 1] + 1 : 1;
    free(logs);
    if (rc == 0 && !db->opt.read_only) {
        rc = vset_start(&db->vs, next, db->last_seq);
        if (rc == 0)
            vset_remove_obsolete(&db->vs, db->vs.log_number, 1);
    }
    db->ver = db->vs.cur;
    version_ref(db->ver);
    return rc;
}

/* Take the store's LOCK file: exclusive for writers, shared for readers. */
static int take_lock(stash_t *db)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/LOCK", db->dir);
    int ro = db->opt.read_only;
    db->lockfd = open(path, (ro ? O_RDONLY : O_RDWR | O_CREAT) | O_CLOEXEC, 0644);
    if (db->lockfd < 0)
        return err_set(sys_err(errno), "store %s: cannot open LOCK: %s", db->dir, strerror(errno));
    if (flock(db->lockfd, (ro ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0) {
        int e = errno;
        /* LOCK holds the holder's pid, then optionally one line saying
         * what it is (stashfs: where it is mounted). */
        char txt[1100] = "", *note = NULL;
        ssize_t k = pread(db->lockfd, txt, sizeof txt - 1, 0);
        if (k > 0) {
            txt[k] = '\0';
            char *nl = strchr(txt, '\n');
            if (nl) {
                *nl = '\0';
                note = nl + 1;
                note[strcspn(note, "\n")] = '\0';
            }
        }
        if (e == EWOULDBLOCK)
            return err_set(-EBUSY, "store %s is in use by process %s%s%s%s", db->dir, *txt ? txt : "unknown",
                           note && *note ? " (" : "", note && *note ? note : "", note && *note ? ")" : "");
        return err_set(sys_err(e), "store %s: cannot lock: %s", db->dir, strerror(e));
    }
    if (!ro) {
        char txt[1100];
        const char *h = db->opt.holder;
        int k = snprintf(txt, sizeof txt, "%ld\n%s%s", (long)getpid(), h ? h : "", h ? "\n" : "");
        if (ftruncate(db->lockfd, 0) < 0 || pwrite(db->lockfd, txt, (size_t)k, 0) != k)
            return err_set(sys_err(errno), "store %s: cannot write LOCK: %s", db->dir, strerror(errno));
    }
    db->opt.holder = NULL;      /* the caller's string is not kept */
    return 0;
}

/* Make sure DIR exists (creating it when allowed) and holds a store. */
static int prepare_dir(stash_t *db)
{
    struct stat st;
    char lock[PATH_MAX];
    snprintf(lock, sizeof lock, "%s/LOCK", db->dir);
    if (stat(db->dir, &st) < 0) {
        if (errno != ENOENT)
            return err_set(sys_err(errno), "store %s: %s", db->dir, strerror(errno));
        if (!db->opt.create_if_missing || db->opt.read_only)
            return err_set(-ENOENT, "store %s does not exist", db->dir);
        if (mkdir(db->dir, 0755) < 0 && errno != EEXIST)
            return err_set(sys_err(errno), "store %s: cannot create: %s", db->dir, strerror(errno));
        char parent[PATH_MAX];
        snprintf(parent, sizeof parent, "%s", db->dir);
        char *slash = strrchr(parent, '/');
        if (slash && slash != parent)
            *slash = '\0';
        else
            snprintf(parent, sizeof parent, "%s", slash ? "/" : ".");
        int rc = wal_sync_dir(parent);
        if (rc)
            return rc;
    } else if (!S_ISDIR(st.st_mode)) {
        return err_set(-ENOTDIR, "store %s is not a directory", db->dir);
    }
    if (access(lock, F_OK) < 0 && (!db->opt.create_if_missing || db->opt.read_only))
        return err_set(-ENOENT, "%s holds no store", db->dir);
    return 0;
}

static uint64_t vlog_newnum(void *arg)
{
    stash_t *db = arg;
    return vset_new_file(&db->vs);
}

static void destroy(stash_t *db)
{
    view_unref(db->view);
    db->view = NULL;
    vlog_close(db->vl);         /* after the last view: views pin it */
    version_unref(db->ver);
    vset_close(&db->vs);
    sst_cache_free(db->cache);   /* after every table is closed */
    for (int l = 0; l < NLEVELS; l++)
        free(db->cptr[l]);
    mt_unref(db->mem);
    for (int i = 0; i < db->nimm; i++)
        mt_unref(db->imm[i].mt);
    free(db->imm);
    stash_batch_free(db->group);
    if (db->lockfd >= 0)
        close(db->lockfd);   /* releases the flock */
    pthread_mutex_destroy(&db->mu);
    pthread_mutex_destroy(&db->work_mu);
    pthread_mutex_destroy(&db->named_mu);
    pthread_mutex_destroy(&db->linklock);
    free(db->named);
    for (int i = 0; i < KEY_STRIPES; i++)
        pthread_mutex_destroy(&db->keylock[i]);
    pthread_cond_destroy(&db->bg_cv);
    pthread_cond_destroy(&db->done_cv);
    pthread_cond_destroy(&db->sync_cv);
    pthread_cond_destroy(&db->vlog_cv);
    pthread_mutex_destroy(&db->gc_mu);
    free(db->dir);
    free(db);
}

/*
 * At open, before the background thread starts: whether the store may hold
 * chunked values (any owner record, live or deleted, says so: writes then
 * clean up the chunks of what they replace), and the named snapshots, pinned
 * before any compaction can run.
 */
/* Record that no log older than the current one is needed (at open, when
 * the logs replayed held nothing), and delete them. */
static int drop_empty_logs(stash_t *db)
{
    vedit_t *e = calloc(1, sizeof *e);
    if (!e)
        return err_set(-ENOMEM, "out of memory");
    e->has_log = 1;
    e->log_number = wal_number(db->log);
    work_lock_fg(db);
    int rc = vset_apply(&db->vs, e);
    work_unlock_fg(db);
    free(e);
    if (rc == 0)
        vset_remove_obsolete(&db->vs, wal_number(db->log), 0);
    return rc;
}

/*
 * Drop what streamed puts cut off by a crash left behind: every stream
 * record still live names a generation no value owns; its chunks and the
 * record itself are deleted.
 */
static int drop_streams(stash_t *db, stash_iter_t *it)
{
    iiter_t *m = it->m;
    const uint8_t start[2] = {NS_BYTE, NS_STREAM};
    uint8_t (*gens)[8] = NULL, last[BLOB_KEY_LEN] = {0};
    size_t n = 0, cap = 0;
    int rc = 0;
    for (m->ops->seek(m, start, sizeof start, TAG(it->seq, 0xff)); m->ops->valid(m); m->ops->next(m)) {
        size_t kl;
        const uint8_t *k = m->ops->key(m, &kl);
        if (kl < 2 || k[0] != NS_BYTE || k[1] != NS_STREAM)
            break;
        if (kl != BLOB_KEY_LEN || !memcmp(k, last, kl))
            continue;           /* an older version of one already seen */
        memcpy(last, k, kl);
        if (TAG_TYPE(m->ops->tag(m)) != KT_PUT)
            continue;
        if (n == cap) {
            void *g = realloc(gens, (cap = cap ? cap * 2 : 8) * sizeof *gens);
            if (!g) {
                free(gens);
                return err_set(-ENOMEM, "out of memory");
            }
            gens = g;
        }
        memcpy(gens[n++], k + 2, 8);
    }
    rc = m->ops->status(m);
    stash_batch_t *b = n && rc == 0 ? stash_batch_new() : NULL;
    if (n && rc == 0 && !b)
        rc = err_set(-ENOMEM, "out of memory");
    for (size_t i = 0; i < n && rc == 0; i++) {
        stash_batch_clear(b);
        /* Chunks of either kind, and patch records (value.h). */
        static const uint8_t nss[3] = {NS_CHUNK, NS_TCHUNK, NS_PATCH};
        for (int ns = 0; ns < 3 && rc == 0; ns++) {
            uint8_t ck[CHUNK_KEY_LEN] = {NS_BYTE, nss[ns]}, prev[CHUNK_KEY_LEN] = {0};
            memcpy(ck + 2, gens[i], 8);
            for (m->ops->seek(m, ck, sizeof ck, TAG(it->seq, 0xff)); rc == 0 && m->ops->valid(m);
                 m->ops->next(m)) {
                size_t kl;
                const uint8_t *k = m->ops->key(m, &kl);
                if (kl != CHUNK_KEY_LEN || memcmp(k, ck, 10))
                    break;
                if (!memcmp(k, prev, kl))
                    continue;
                memcpy(prev, k, kl);
                if (TAG_TYPE(m->ops->tag(m)) == KT_PUT)
                    rc = batch_del_raw(b, k, kl);
            }
        }
        uint8_t sk[BLOB_KEY_LEN] = {NS_BYTE, NS_STREAM};
        memcpy(sk + 2, gens[i], 8);
        if (rc == 0 && (rc = m->ops->status(m)) == 0 && (rc = batch_del_raw(b, sk, sizeof sk)) == 0)
            rc = do_write(db, b, 1, 0);
    }
    stash_batch_free(b);
    free(gens);
    return rc;
}

static int load_engine_keys(stash_t *db)
{
    stash_iter_t *it = stash_iter_new(db, NULL);
    if (!it)
        return err_set(-ENOMEM, "out of memory");
    const uint8_t blobs[2] = {NS_BYTE, NS_BLOB};
    it->m->ops->seek(it->m, blobs, sizeof blobs, TAG(it->seq, 0xff));
    size_t kl = 0;
    const uint8_t *k = it->m->ops->valid(it->m) ? it->m->ops->key(it->m, &kl) : NULL;
    if (k && kl >= 2 && k[0] == NS_BYTE && k[1] == NS_BLOB)
        atomic_store(&db->has_blobs, 1);
    const uint8_t links[2] = {NS_BYTE, NS_LINK};
    it->m->ops->seek(it->m, links, sizeof links, TAG(it->seq, 0xff));
    k = it->m->ops->valid(it->m) ? it->m->ops->key(it->m, &kl) : NULL;
    if (k && kl >= 2 && k[0] == NS_BYTE && (k[1] == NS_LINK || k[1] == NS_LREF))
        atomic_store(&db->has_blobs, 1);
    int rc = it->m->ops->status(it->m);
    if (rc == 0)
        rc = load_named(db, it);
    stash_iter_free(it);
    return rc;
}

int stash_open(const char *dir, const stash_options_t *o, stash_t **out)
{
    err_clear();
    if (!dir || !*dir || !out)
        return err_set(-EINVAL, "stash_open: bad arguments");
    *out = NULL;
    if (strlen(dir) > PATH_MAX - 64)
        return err_set(-EINVAL, "store path too long");
    stash_t *db = calloc(1, sizeof *db);
    if (!db)
        return err_set(-ENOMEM, "out of memory");
    db->lockfd = -1;
    if (o)
        db->opt = *o;
    else
        stash_options_init(&db->opt);
    db->dir = strdup(dir);
    db->snaps.next = db->snaps.prev = &db->snaps;
    pthread_mutex_init(&db->mu, NULL);
    pthread_mutex_init(&db->work_mu, NULL);
    pthread_mutex_init(&db->named_mu, NULL);
    pthread_mutexattr_t ra;
    pthread_mutexattr_init(&ra);
    pthread_mutexattr_settype(&ra, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&db->linklock, &ra);
    pthread_mutexattr_destroy(&ra);
    for (int i = 0; i < KEY_STRIPES; i++)
        pthread_mutex_init(&db->keylock[i], NULL);
    /* Every timed wait here counts on the monotonic clock. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&db->bg_cv, &ca);
    pthread_cond_init(&db->done_cv, &ca);
    pthread_cond_init(&db->sync_cv, &ca);
    pthread_cond_init(&db->vlog_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&db->gc_mu, NULL);
    db->mem = new_memtable(&db->opt);
    db->group = stash_batch_new();
    db->cache = sst_cache_new(db->opt.block_cache_size);
    db->vs.dir = db->dir;
    db->vs.opt = &db->opt;
    db->vs.cache = db->cache;
    int rc = 0;
    if (!db->dir || !db->mem || !db->group || !db->cache)
        rc = err_set(-ENOMEM, "out of memory");
    if (rc == 0)
        rc = check_options(&db->opt);
    if (rc == 0)
        rc = prepare_dir(db);
    if (rc == 0)
        rc = take_lock(db);
    if (rc == 0)
        rc = vlog_open(db->dir, db->opt.read_only, vlog_newnum, db, &db->vl);
    if (rc == 0)
        rc = recover(db);
    if (rc == 0 && !db->opt.read_only) {
        rc = wal_create(db->dir, vset_new_file(&db->vs), &db->log);
        if (rc == 0) {
            wal_set_prealloc(db->log, LOG_WRITE_AHEAD);
            db->log_size = db->log_synced = wal_size(db->log);
        }
    }
    if (rc == 0 && !(db->view = view_make(db)))
        rc = err_set(-ENOMEM, "out of memory");
    if (rc == 0)
        rc = load_engine_keys(db);
    if (rc == 0 && !db->opt.read_only) {
        if (pthread_create(&db->bg, NULL, bg_main, db) != 0)
            rc = err_set(-ENOMEM, "cannot start the background thread");
        else {
            db->bg_running = 1;
            pthread_setname_np(db->bg, "stash-bg");     /* as top -H shows it */
        }
    }
    /* With the background thread running, as its writes may fill memtables. */
    if (rc == 0 && !db->opt.read_only) {
        stash_iter_t *it = stash_iter_new(db, NULL);
        rc = it ? drop_streams(db, it) : err_set(-ENOMEM, "out of memory");
        stash_iter_free(it);
        /* What the logs held goes to a table now, as LevelDB's recovery
         * does: reads do not search a large recovered memtable, and the old
         * logs go at once (a process that opens, writes a little and closes
         * would otherwise leave a log behind each time).  That is only
         * tidying: when it fails (a disk too full for the table, or for the
         * compaction a full level 0 waits on), the store opens anyway with
         * the data in memory and still in its logs, and the background
         * thread retries as it does for any failed flush. */
        if (rc == 0) {
            pthread_mutex_lock(&db->mu);
            int frc = make_room(db, 1);
            pthread_mutex_unlock(&db->mu);
            work_lock_fg(db);
            while (frc == 0 && (frc = flush_one(db)) > 0)
                frc = 0;
            work_unlock_fg(db);
            pthread_mutex_lock(&db->mu);
            int empty = db->nimm == 0 && mt_count(db->mem) == 0;
            if (frc && db->bgerr)
                rc = frc;   /* not tidying: the store could not be made writable */
            pthread_mutex_unlock(&db->mu);
            /* The logs held nothing: the MANIFEST says so, and they go. */
            if (rc == 0 && frc == 0 && empty)
                rc = drop_empty_logs(db);
        }
        /* Value-file collections only now: they make the log durable with
         * a synced write, which must not meet the open's own make_room. */
        if (rc == 0 && pthread_create(&db->vlog_thread, NULL, vlog_main, db) != 0)
            rc = err_set(-ENOMEM, "cannot start the value-file thread");
        else if (rc == 0) {
            db->vlog_running = 1;
            pthread_setname_np(db->vlog_thread, "stash-gc");
        }
        if (rc)
            stash_close(db);
        else
            *out = db;
        return rc;
    }
    if (rc) {
        if (db->log)
            wal_close(db->log);
        destroy(db);
        return rc;
    }
    *out = db;
    return 0;
}

int stash_close(stash_t *db)
{
    if (!db)
        return err_set(-EINVAL, "NULL store handle");
    int rc = 0;
    if (db->vlog_running) {
        /* First, while the background thread still flushes for the
         * relocations' writes. */
        pthread_mutex_lock(&db->mu);
        atomic_store(&db->vlog_stop, 1);
        pthread_cond_signal(&db->vlog_cv);
        pthread_mutex_unlock(&db->mu);
        pthread_join(db->vlog_thread, NULL);
        db->vlog_running = 0;
    }
    if (db->bg_running) {
        pthread_mutex_lock(&db->mu);
        db->closing = 1;
        pthread_cond_signal(&db->bg_cv);
        pthread_mutex_unlock(&db->mu);
        pthread_join(db->bg, NULL);
        /* Give back value files that hold only garbage: a short-lived
         * process may never stay long enough for a collection. */
        if (!db->bgerr)
            (void)vlog_collect(db, 1);
    }
    if (db->log) {
        wal_set_prealloc(db->log, 0);
        if (log_dirty(db) && !db->bgerr && (rc = vlog_sync(db->vl)) == 0)
            rc = wal_sync(db->log);
        wal_close(db->log);
    }
    while (db->snaps.next != &db->snaps) {
        stash_snapshot_t *s = db->snaps.next;
        db->snaps.next = s->next;
        free(s);
    }
    destroy(db);
    return rc;
}

/* ------------------------------------------------------------------ */
/* statistics                                                           */

int stash_counters(stash_t *db, stash_counters_t *c)
{
    if (!db || !c)
        return err_set(-EINVAL, "stash_counters: bad arguments");
    memset(c, 0, sizeof *c);
    pthread_mutex_lock(&db->mu);
    c->sequence = db->last_seq;
    c->memtable_bytes = mt_memory(db->mem);
    for (int i = 0; i < db->nimm; i++)
        c->memtable_bytes += mt_memory(db->imm[i].mt);
    for (int l = 0; l < NLEVELS && l < STASH_LEVELS; l++) {
        c->level_tables[l] = (uint64_t)db->ver->n[l];
        c->level_bytes[l] = level_bytes(db->ver, l);
        for (int i = 0; i < db->ver->n[l]; i++)
            c->level_entries[l] += db->ver->f[l][i]->entries;
    }
    c->flush_bytes = db->cst.flush_bytes;
    c->compactions = db->cst.compactions;
    c->compact_bytes_read = db->cst.compact_bytes_read;
    c->compact_bytes_written = db->cst.compact_bytes_written;
    c->stalls = db->st_stalls;
    pthread_mutex_unlock(&db->mu);
    c->compact_entries_read = atomic_load(&db->compact_entries);
    return 0;
}

int stash_stats(stash_t *db, char *buf, size_t len)
{
    if (!db || !buf || !len)
        return -EINVAL;
    pthread_mutex_lock(&db->mu);
    size_t imm_bytes = 0, o = 0;
    uint64_t imm_entries = 0;
    for (int i = 0; i < db->nimm; i++) {
        imm_bytes += mt_memory(db->imm[i].mt);
        imm_entries += mt_count(db->imm[i].mt);
    }
    int nsnap = 0;
    for (stash_snapshot_t *s = db->snaps.next; s != &db->snaps; s = s->next)
        nsnap++;
    size_t cused;
    uint64_t hits, misses;
    sst_cache_stats(db->cache, &cused, &hits, &misses);
    struct cstats c = db->cst;
    uint64_t vfiles = 0, vbytes = 0, vappended = 0, vstored = 0;
    if (db->vl)
        vlog_usage(db->vl, &vfiles, &vbytes, &vappended, &vstored);
    double user = (double)db->st_logged + (double)vappended;
    o += (size_t)snprintf(buf + o, len - o,
             "store:            %s%s\n"
             "sequence:         %llu\n"
             "memtable:         %zu bytes, %llu entries\n"
             "frozen memtables: %d (%zu bytes, %llu entries)\n"
             "log:              %06llu.log, %llu bytes\n",
             db->dir, db->opt.read_only ? " (read-only)" : "",
             (unsigned long long)db->last_seq,
             mt_memory(db->mem), (unsigned long long)mt_count(db->mem),
             db->nimm, imm_bytes, (unsigned long long)imm_entries,
             (unsigned long long)(db->log ? wal_number(db->log) : 0),
             (unsigned long long)db->log_size);
    for (int l = 0; l < NLEVELS && o < len; l++) {
        uint64_t entries = 0;
        for (int i = 0; i < db->ver->n[l]; i++)
            entries += db->ver->f[l][i]->entries;
        o += (size_t)snprintf(buf + o, len - o, "level %d:          %d tables, %llu bytes, %llu entries\n",
                              l, db->ver->n[l], (unsigned long long)level_bytes(db->ver, l),
                              (unsigned long long)entries);
    }
    if (o < len)
        o += (size_t)snprintf(buf + o, len - o,
             "value files:      %llu, %llu bytes; %llu bytes appended since open (%llu stored), "
             "%llu files given back, %llu chunks moved out of sparse ones; the last collection took %.3f s\n",
             (unsigned long long)vfiles, (unsigned long long)vbytes, (unsigned long long)vappended,
             (unsigned long long)vstored, (unsigned long long)db->vlog_freed, (unsigned long long)db->vlog_moved,
             (double)db->vlog_scan_us / 1e6);
    if (o < len)
        o += (size_t)snprintf(buf + o, len - o,
             "open tables:      %d (at most %d kept open when idle)\n"
             "block cache:      %zu bytes used, %llu hits, %llu misses (%.1f%% hit rate)\n"
             "writes:           %llu writers in %llu commit groups, %llu fsyncs, %llu bytes logged\n"
             "flushes:          %llu bytes written to level 0; %llu overwritten versions left out\n"
             "compactions:      %llu (%llu moved without rewriting), %llu bytes read, %llu written\n"
             "at rest:          %llu times the memtable and level 0 were compacted after an idle interval\n"
             "write amplification: %.2f (log + value file + flush + compaction bytes / logged + value file bytes)\n"
             "memtable switches: %llu\n"
             "stalls:           %llu, %.3f s in all; writes paced for %.3f s\n"
             "snapshots:        %d\n"
             "state:            %s\n",
             vset_open_tables(&db->vs), db->opt.max_open_files,
             cused, (unsigned long long)hits, (unsigned long long)misses,
             hits + misses ? 100.0 * (double)hits / (double)(hits + misses) : 0.0,
             (unsigned long long)db->st_writers, (unsigned long long)db->st_groups,
             (unsigned long long)db->st_syncs, (unsigned long long)db->st_logged,
             (unsigned long long)c.flush_bytes, (unsigned long long)db->cst.flush_dropped,
             (unsigned long long)c.compactions, (unsigned long long)c.moves,
             (unsigned long long)c.compact_bytes_read, (unsigned long long)c.compact_bytes_written,
             (unsigned long long)db->st_idle,
             user > 0 ? (user + (double)c.flush_bytes + (double)c.compact_bytes_written) / user : 0.0,
             (unsigned long long)db->st_rotations,
             (unsigned long long)db->st_stalls, (double)db->st_stall_us / 1e6,
             (double)db->st_paced_us / 1e6, nsnap,
             db->bgerr ? "read-only after a failed write" : db->work_err ? "last background job failed" : "ok");
    pthread_mutex_unlock(&db->mu);
    return 0;
}
