/*
 * version.h - which tables make up the store, level by level, and the
 * MANIFEST that records every change to that set.
 *
 * A version is an immutable snapshot of the levels: level 0 holds tables
 * flushed from memtables, newest first, whose key ranges may overlap; each
 * level 1..NLEVELS-1 holds tables with disjoint key ranges sorted by key.
 * Readers and iterators hold a reference on the version they use; the
 * tables of a version stay open and on disk until the last version naming
 * them is gone.  A table dropped from the current version by a compaction is
 * marked obsolete and its file is deleted when its last reference goes.
 *
 * The version set owns the current version and the MANIFEST: a log (same
 * framing as the write-ahead log) of edits, each adding and removing tables
 * and advancing the log number, the next file number and the last sequence.
 * vset_apply() appends an edit, fsyncs it, and only then installs the new
 * version.  CURRENT names the live MANIFEST and is replaced atomically
 * (temporary file, fsync, rename, fsync of the directory).
 *
 * Thread-safety: vset_apply and vset_recover are called by one thread at a
 * time (the engine's background thread, or open); versions are immutable
 * and their reference counts atomic, so any thread may read and ref them.
 */
#ifndef STASH_VERSION_H
#define STASH_VERSION_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "cache.h"
#include "iter.h"
#include "smartstash.h"
#include "sstable.h"

#define NLEVELS 7

struct tcache;

/*
 * A table of some version.  Its reader is opened on demand through the
 * table cache, which keeps at most max_open_files readers open and closes the
 * least recently used idle one first (fmeta_acquire / fmeta_release).
 */
typedef struct fmeta {
    uint64_t number, size;
    uint8_t *smallest, *largest;      /* internal keys (owned copies) */
    size_t slen, llen;
    uint64_t entries;
    atomic_int refs;
    atomic_int obsolete;              /* delete the file at the last unref */
    const char *dir;
    struct tcache *tc;
    /* under tc->mu: */
    sst_reader_t *r;
    int users;
    struct fmeta *lprev, *lnext;      /* open readers, most recent first */
} fmeta_t;

typedef struct version {
    atomic_int refs;
    int n[NLEVELS];
    fmeta_t **f[NLEVELS];
} version_t;

/* The most tables one edit adds, and deletes: a compaction's outputs and
 * inputs (range compactions are cut into pieces well below it). */
#define VEDIT_MAX 16384

typedef struct vedit {
    int has_log, has_next, has_seq;
    uint64_t log_number, next_file, last_seq;
    int nadd, ndel;
    struct { int level; fmeta_t *f; } add[VEDIT_MAX];
    struct { int level; uint64_t number; } del[VEDIT_MAX];
} vedit_t;

typedef struct vset {
    char *dir;
    const stash_options_t *opt;
    sst_cache_t *cache;
    version_t *cur;
    uint64_t manifest_num;
    void *manifest;                   /* wal_t */
    uint64_t log_number;              /* logs below it are no longer needed */
    _Atomic uint64_t next_file;       /* shared by logs, tables, MANIFESTs */
    uint64_t last_seq;                /* as of the last edit */
    uint64_t pending_min;             /* tables numbered from here on may be a
                                         running compaction's outputs */
    struct tcache *tc;
} vset_t;

extern const sst_keyfmt_t ikey_fmt;

/* Table file path "DIR/NNNNNN.sst". */
void table_path(char *buf, size_t len, const char *dir, uint64_t number);

/* Open the table NUMBER as a new fmeta with one reference. */
int fmeta_open(vset_t *vs, uint64_t number, fmeta_t **out);
void fmeta_ref(fmeta_t *f);
void fmeta_unref(fmeta_t *f);

/* The table's reader, opened if need be; hold it until fmeta_release. */
int fmeta_acquire(fmeta_t *f, sst_reader_t **r);
void fmeta_release(fmeta_t *f);

/* Readers open now (for stats). */
int vset_open_tables(vset_t *vs);

void version_ref(version_t *v);
void version_unref(version_t *v);

/*
 * Load the store's version: read CURRENT and replay its MANIFEST (a new
 * store gets an empty one unless READ_ONLY).  Every table the MANIFEST names
 * is opened; a missing or damaged one fails with -EIO naming it.
 */
int vset_recover(vset_t *vs, int read_only);

/* Record edit E (filling in what it leaves out) and install the new version.
 * The edit's added fmetas are taken over.  -EIO / -ENOSPC on failure, and
 * then nothing changed. */
int vset_apply(vset_t *vs, vedit_t *e);

/* Delete files of the store directory that nothing needs: logs below
 * MIN_LOG, old MANIFESTs and, with TABLES (only when no older version can
 * exist, i.e. at open), tables that are not in the current version. */
void vset_remove_obsolete(vset_t *vs, uint64_t min_log, int tables);

void vset_close(vset_t *vs);

/* Make DEST (an existing empty directory) a store holding exactly version V
 * of this store: its tables hard-linked (or copied across filesystems), a
 * MANIFEST and CURRENT describing V, no logs; everything fsynced. */
int vset_backup(vset_t *vs, const version_t *v, const char *dest, uint64_t last_seq);

/*
 * Look KEY up in version V as of sequence SEQ.  Returns KT_PUT with *val /
 * *vlen (malloc'd), KT_DEL, -1 when no table holds it, or a negative errno
 * below -1 (-EIO) -- callers compare against those exact values.
 */
int version_get(version_t *v, const void *key, size_t klen, uint64_t seq, void **val, size_t *vlen);

/* Append internal iterators for V's tables (one per level-0 table, one per
 * other non-empty level) to KIDS at *N (room for 8 + level-0 count). */
int version_iters(version_t *v, iiter_t **kids, int *n);

/* One sorted stream over the N tables F (disjoint, in key order; or one
 * level-0 table), opening each as the stream reaches it.  The caller keeps
 * the array and the tables alive. */
iiter_t *iter_files(fmeta_t **f, int n);

/* After the logs are replayed: make the file counter pass MIN_NEXT and the
 * sequence LAST_SEQ, then start a fresh MANIFEST (writers only). */
int vset_start(vset_t *vs, uint64_t min_next, uint64_t last_seq);

/* A new file number (thread-safe). */
static inline uint64_t vset_new_file(vset_t *vs)
{
    return atomic_fetch_add(&vs->next_file, 1);
}

/* Total bytes in level L. */
uint64_t level_bytes(const version_t *v, int level);

#endif
