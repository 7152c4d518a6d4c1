/*
 * smartstash.h - the public interface of libsmartstash, SmartStashDB's
 * embedded key-value engine.  This header is the manual: every call, its
 * arguments, what it returns and what can go wrong.
 *
 * Model
 *   A store is a directory.  Keys are byte strings of 1 to STASH_MAX_KEY
 *   bytes, ordered bytewise (memcmp order, shorter first on a tie).  Values
 *   are byte strings of 0 to STASH_MAX_VALUE bytes.  Every change gets a
 *   sequence number; a snapshot names one and sees the store as it was then.
 *
 *   A write (put, delete or batch) is appended to the write-ahead log and
 *   then applied to the in-memory table before the call returns, so it
 *   survives the death of the process at once.  It survives a power loss
 *   once the log has been fsynced: at once with STASH_SYNC, at the next
 *   stash_sync(), or within wal_flush_interval seconds otherwise.
 *
 * Errors
 *   Every int-returning call gives 0 on success or a negative errno:
 *     -ENOENT  the key does not exist (or is deleted at that snapshot)
 *     -EINVAL  bad arguments: NULL handle, empty key, key longer than
 *              STASH_MAX_KEY, value longer than STASH_MAX_VALUE, bad config
 *     -EBUSY   another handle, in this process or another, holds the store
 *     -EIO     corruption found (a bad checksum, a truncated file) or an
 *              I/O error from the disk
 *     -ENOSPC  the disk is full; the failed write was not applied
 *     -EROFS   the store was opened read_only, or went read-only after a
 *              write to the log could not be made durable
 *     -ENOMEM  out of memory
 *     -EOVERFLOW  any write, once the store has used every sequence number
 *              (2^56 - 1 of them: not in practice); nothing is applied
 *   stash_last_error() gives a human sentence about the last failure, e.g.
 *   "wal 000007.log: bad checksum at offset 8192".
 *
 * Threads
 *   A stash_t may be used from any number of threads at once.  Readers never
 *   wait for each other.  Writers are queued and committed in groups: one
 *   log append (and at most one fsync) covers every writer that arrived
 *   while the previous group was being written.  A batch, an iterator or a
 *   snapshot handle belongs to one thread at a time.
 */
#ifndef SMARTSTASH_H
#define SMARTSTASH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define STASH_VERSION_MAJOR 0
#define STASH_VERSION_MINOR 1

#define STASH_MAX_KEY   65536u                /* bytes */
#define STASH_MAX_VALUE (1024u * 1024u * 1024u) /* bytes (1 GiB) */

typedef struct stash stash_t;                 /* an open store */
typedef struct stash_batch stash_batch_t;     /* a group of writes applied atomically */
typedef struct stash_iter stash_iter_t;       /* an ordered cursor */
typedef struct stash_snapshot stash_snapshot_t; /* a pinned point in time */

/*
 * Options.  Always start from stash_options_init(), then change fields; a
 * zero in a size field does not mean "default".  The same names are the keys
 * of the YAML config file read by stash_open_config().
 */
typedef struct stash_options {
    size_t   memtable_size;        /* bytes written to the memtable before it is
                                      frozen and a new one (and a new log) is
                                      started; each memtable also has a bloom
                                      filter of memtable_size / 64 bytes.
                                      Default 64 MiB, minimum 64 KiB. */
    unsigned compaction_interval;  /* seconds between runs of the background
                                      compaction timer.  A run that finds no
                                      write since the run before flushes the
                                      memtable and compacts level 0 into
                                      level 1 (when they hold at least a
                                      quarter of level 1's bytes), so a store
                                      at rest shrinks to its compact size.
                                      Default 60. */
    unsigned wal_flush_interval;   /* seconds between background fsyncs of the
                                      log; 0 = fsync every write as if it had
                                      STASH_SYNC.  Default 10. */
    int      compression_level;    /* zstd level for table blocks: 1..22, or
                                      -100..-1 for zstd's fast levels, 0 = off.
                                      Default -1: blocks decompress about twice
                                      as fast as at level 1 (random reads and
                                      scans of compressed tables gain 50-90%),
                                      for about 12% more space. */
    size_t   block_cache_size;     /* bytes of uncompressed table blocks kept in
                                      memory.  Default 8 MiB. */
    int      bloom_bits_per_key;   /* bloom filter bits per key, 0 = no filter,
                                      up to 32.  Default 10. */
    int      create_if_missing;    /* 1: create the store if DIR has none.
                                      Default 1. */
    int      read_only;            /* 1: open for reading only; writes fail with
                                      -EROFS, the log is replayed but not
                                      changed.  Default 0. */
    /* Table and compaction shape (used once tables exist). */
    size_t   block_size;           /* bytes of a table data block before
                                      compression.  Default 2048. */
    size_t   target_file_size;     /* bytes of a compaction output table.
                                      Default 64 MiB. */
    size_t   level1_max_bytes;     /* size of level 1; level n+1 is 10 times
                                      level n.  Default 64 MiB. */
    int      l0_compaction_trigger;/* level-0 tables that start a compaction.
                                      Default 4. */
    int      l0_slowdown_trigger;  /* level-0 tables at which writers are
                                      delayed.  Default 8. */
    int      l0_stop_trigger;      /* level-0 tables at which writers wait.
                                      Default 12. */
    int      max_open_files;       /* table files kept open.  Default 512. */
    int      mmap_reads;           /* 1: read tables through a read-only
                                      memory mapping instead of pread: no
                                      system call or copy per block read
                                      (checksums are still checked on every
                                      read).  The cost: an I/O error of the
                                      disk under a table, or a table file
                                      truncated by another program, kills
                                      the process with SIGBUS instead of
                                      failing the read with -EIO (as with
                                      LMDB, or LevelDB's default).  Blocks
                                      over 32 KiB (chunks of large values)
                                      are always read with pread.  Default 1. */
    char     snapshot_dir[256];    /* the name under which stashfs shows named
                                      snapshots: writes of the key NAME or of
                                      keys starting "NAME/" fail with -EINVAL,
                                      so no file can hide behind it.  No '/',
                                      not "." or "..".  Default ".snapshots";
                                      "" reserves nothing. */
    const char *holder;            /* one line stash_open() writes to the
                                      store's LOCK file after the pid, shown
                                      with the pid to any other process that
                                      finds the store in use (stashfs writes
                                      "stashfs, mounted at MNT").  Default
                                      NULL; not read from the config file. */
} stash_options_t;

/* Flag for stash_write: the batch is on disk (fsynced) before it returns. */
#define STASH_SYNC 1

/* Fill *o with the defaults listed above. */
void stash_options_init(stash_options_t *o);

/*
 * Open the store in directory DIR.  O may be NULL for the defaults.  On
 * success *out is a handle for stash_close().  The log left by an earlier
 * run is replayed: every acknowledged write is visible again; a record torn
 * by a crash at the very end of the newest log is dropped and the log is cut
 * back to the last whole record.
 * Errors: -EINVAL (bad options or arguments), -ENOENT (no store and
 * create_if_missing is 0), -EBUSY (another handle holds the store), -EIO (a
 * damaged log: nothing is opened, stash_last_error() names file and offset),
 * -EACCES, -ENOSPC, -ENOMEM.
 */
int  stash_open(const char *dir, const stash_options_t *o, stash_t **out);

/*
 * Open the store described by the YAML file YAML_PATH.  The file is a
 * mapping; data_dir (required) names the store directory, relative paths
 * being taken from the directory that holds the config file; every other key
 * is an option field above, by the same name.  Sizes may carry a suffix
 * (K, M, G, KiB, MiB, GiB, powers of 1024).
 * Errors: those of stash_open(), and -EINVAL for a file that is not YAML, an
 * unknown key, a missing data_dir or a bad value; stash_last_error() names
 * the key and the line.
 */
int  stash_open_config(const char *yaml_path, stash_t **out);

/*
 * Read a config file into *o (which is first filled with the defaults) and
 * *data_dir (malloc'd, free with stash_free()).  For programs that want to
 * change options before opening, as stashfs does with its -o flags.
 * Errors: -EINVAL, -ENOENT, -ENOMEM, as stash_open_config().
 */
int  stash_config_load(const char *yaml_path, stash_options_t *o, char **data_dir);

/*
 * Close the handle: every acknowledged write is made durable (the log is
 * fsynced), background threads are joined, memory is freed, the lock is
 * released.  The handle is gone even when an error is returned.  Iterators
 * and snapshots must be freed first.  Errors: -EIO if the final fsync failed.
 */
int  stash_close(stash_t *db);

/* Set KEY to VAL.  Errors: -EINVAL, -EROFS, -ENOSPC, -EIO, -ENOMEM. */
int  stash_put(stash_t *db, const void *key, size_t klen, const void *val, size_t vlen);

/*
 * Read KEY's current value into *val (malloc'd, at least one byte even for
 * an empty value; free it with stash_free()) and its length into *vlen.
 * Errors: -ENOENT, -EINVAL, -EIO, -ENOMEM.
 */
int  stash_get(stash_t *db, const void *key, size_t klen, void **val, size_t *vlen);

/* Delete KEY.  Deleting a missing key is not an error.  Errors as stash_put. */
int  stash_delete(stash_t *db, const void *key, size_t klen);

/*
 * Make every write acknowledged before this call durable: it returns once
 * the log holding them is fsynced.  Concurrent callers share one fsync.
 * Errors: -EIO (the store then goes read-only), -EROFS.
 */
int  stash_sync(stash_t *db);

/* Free memory returned by the library (stash_get values, config strings). */
void stash_free(void *p);

/* Batches: collect puts and deletes, then apply them all at once.  The
 * returned batch is NULL only when memory is exhausted. */
stash_batch_t *stash_batch_new(void);
/* Add a put or a delete.  Errors: -EINVAL (NULL batch, bad key or value
 * size), -ENOMEM.  Later entries for the same key win. */
int  stash_batch_put(stash_batch_t *b, const void *key, size_t klen, const void *val, size_t vlen);
int  stash_batch_delete(stash_batch_t *b, const void *key, size_t klen);
/* Number of entries in the batch. */
size_t stash_batch_count(const stash_batch_t *b);
/* Empty the batch so it can be filled again. */
void stash_batch_clear(stash_batch_t *b);

/*
 * Apply batch B atomically: after a crash it is present whole or not at all,
 * and no reader ever sees part of it.  FLAGS: 0, or STASH_SYNC to return only
 * once it is on disk (readers may see it a little earlier: it is applied as
 * soon as it is in the log, and the call then waits for the fsync; if that
 * fsync fails, the call returns -EIO and the store turns read-only).  The
 * batch is not changed; free it with stash_batch_free().  An empty batch is
 * a no-op (with STASH_SYNC, a sync).
 * Errors: -EINVAL, -EROFS, -ENOSPC, -EIO, -ENOMEM.
 */
int  stash_write(stash_t *db, stash_batch_t *b, int flags);
void stash_batch_free(stash_batch_t *b);

/*
 * Snapshots: a handle that sees the store as it was when it was taken,
 * whatever is written afterwards.  Free it with stash_snapshot_free() on the
 * same db.  stash_snapshot_new returns NULL only on a NULL db or no memory.
 */
stash_snapshot_t *stash_snapshot_new(stash_t *db);
void stash_snapshot_free(stash_t *db, stash_snapshot_t *s);
/* The sequence number a snapshot sees (every write up to it included). */
uint64_t stash_snapshot_seq(const stash_snapshot_t *s);
/*
 * Named snapshots: kept in the store, so they survive close, restart and
 * crashes, and compaction keeps everything they see until they are
 * deleted.  Names are 1 to STASH_SNAPSHOT_NAME_MAX bytes without '/'.
 *
 * stash_snapshot_create records NAME at the current moment (durably, before
 * it returns) and gives its sequence number in *seq (may be NULL).  Errors:
 * -EEXIST, -EINVAL, -EROFS, -ENOSPC, -EIO.
 * stash_snapshot_delete drops NAME.  Errors: -ENOENT, -EINVAL, -EROFS, -EIO.
 * stash_snapshot_list calls FN for each (in no particular order) until FN
 * returns non-zero, which is then returned.
 * stash_snapshot_open gives a handle on NAME (and its creation time in
 * *ctime_ns, may be NULL) for the *_at calls, freed with
 * stash_snapshot_free; it stays valid if NAME is deleted meanwhile.  NULL
 * when there is no such snapshot (stash_last_error says so).
 */
#define STASH_SNAPSHOT_NAME_MAX 255
int  stash_snapshot_create(stash_t *db, const char *name, uint64_t *seq);
int  stash_snapshot_delete(stash_t *db, const char *name);
int  stash_snapshot_list(stash_t *db, int (*fn)(void *arg, const char *name, uint64_t seq, int64_t ctime_ns),
                         void *arg);
stash_snapshot_t *stash_snapshot_open(stash_t *db, const char *name, int64_t *ctime_ns);

/* As stash_get, at snapshot S (NULL = now). */
int  stash_get_at(stash_t *db, const stash_snapshot_t *s, const void *key, size_t klen, void **val, size_t *vlen);

/*
 * Iterators: an ordered forward cursor over the store at snapshot S (NULL =
 * the moment of the call).  Writes made after that point are not seen.  A new
 * iterator is not positioned: call a seek first.  Keys and values returned
 * stay valid until the next call on the iterator.  stash_iter_new returns NULL
 * only on a NULL db or no memory.  A value that cannot be read (damage, no
 * memory for a large one) comes back NULL with length 0, and from then on
 * stash_iter_status returns that error: check it after a scan.
 */
stash_iter_t *stash_iter_new(stash_t *db, const stash_snapshot_t *s);
void stash_iter_seek(stash_iter_t *it, const void *key, size_t klen); /* first key >= key */
void stash_iter_seek_first(stash_iter_t *it);
int  stash_iter_valid(const stash_iter_t *it);  /* 1 when positioned on an entry */
void stash_iter_next(stash_iter_t *it);         /* requires valid */
const void *stash_iter_key(const stash_iter_t *it, size_t *klen);
const void *stash_iter_value(const stash_iter_t *it, size_t *vlen);
int  stash_iter_status(const stash_iter_t *it); /* 0, or the error that stopped it */
void stash_iter_free(stash_iter_t *it);

/*
 * Limit IT to keys below END (ELEN bytes, bytewise; NULL lifts the limit).
 * From then on a seek or stash_iter_next that reaches END leaves IT not
 * valid, without going on through what lies beyond: deleted keys there are
 * never looked at, which is what makes a prefix scan over a range that once
 * held many deleted keys cheap.  For the keys starting with P, END is P
 * with its last byte incremented (dropping trailing 0xFF bytes first).
 * Returns 0, -EINVAL or -ENOMEM.
 */
int  stash_iter_set_upper(stash_iter_t *it, const void *end, size_t elen);

/*
 * Large values, ranged access and attributes.
 *
 * A value over 64 KiB is kept in 64 KiB chunks under the engine's own keys
 * (docs/format.md), so a ranged read or write costs O(length + 64 KiB), not
 * O(value), and a value may grow past STASH_MAX_VALUE through
 * stash_pwrite/stash_truncate (up to STASH_MAX_FILE).  stash_get/stash_put
 * and iterators still give and take whole values; iterators never show the
 * chunks.  Beside its value every key keeps a stash_stat_t: size, and the
 * mode, owner and times that stashfs shows (a key written by stash_put has
 * mode 0 and its write time, to the second, as all three times).
 *
 * The calls below serialise with each other per key (a read-modify-write of
 * one key never loses a concurrent one); stash_put and stash_delete do not
 * wait for them.
 */
#define STASH_MAX_FILE (1ull << 44)            /* bytes (16 TiB) */

typedef struct stash_stat {
    uint64_t size;      /* value length in bytes */
    uint32_t mode;      /* st_mode as stashfs shows it; 0 = none recorded */
    uint32_t uid, gid;
    int64_t  atime_ns, mtime_ns, ctime_ns;     /* nanoseconds since 1970 */
    uint32_t nlink;     /* names of the value: 1, more once stash_link gave it others */
    uint64_t link_id;   /* 0, or the same nonzero number for every name of a linked value */
    uint64_t ino;       /* 0, or a number stash_create chose, kept by renames and links */
    uint64_t stored;    /* bytes the value takes before compression: for a value over
                           64 KiB, 64 KiB per chunk it has (holes, stash_seek, have
                           none), at most its size; else, and for one made before
                           chunks were counted, its size */
} stash_stat_t;

/*
 * KEY's size and attributes, at snapshot S (NULL = now), without reading a
 * large value's chunks.  Errors: -ENOENT, -EINVAL, -EIO, -ENOMEM.
 */
int  stash_stat(stash_t *db, const stash_snapshot_t *s, const void *key, size_t klen, stash_stat_t *st);

/*
 * Make NEWKEY a second name of KEY's value: a hard link.  From then on both
 * names give the same value, size and attributes; a change through either
 * (stash_pwrite, stash_truncate, stash_setstat, the xattr calls) is seen
 * through both, and stash_stat gives nlink, the number of names, and one
 * link_id for all of them.  Replacing or deleting a name (stash_put,
 * stash_delete, a batch, stash_rename onto it) takes only that name away;
 * the value goes with its last name.  stash_rename moves a name.  Renaming
 * one name of a value onto another of the same value does nothing.
 * Errors: -ENOENT (no KEY), -EEXIST (NEWKEY exists), -EMLINK (65,000 names
 * already), -EINVAL (a bad or reserved key), -EROFS, -EIO, -ENOMEM.
 * Caveat: once a store holds a link, every put and delete looks up the
 * value it replaces, as it does once the store holds a large value.
 */
int  stash_link(stash_t *db, const void *key, size_t klen, const void *newkey, size_t nklen);

/*
 * Call FN(ARG, name, length) for each name of the linked value LINK_ID (the
 * link_id stash_stat gives), in key order, as of now.  A nonzero return
 * from FN stops the walk and is returned.  Errors: -EINVAL (LINK_ID 0),
 * -EIO, -ENOMEM.
 */
int  stash_link_names(stash_t *db, uint64_t link_id,
                      int (*fn)(void *arg, const void *key, size_t klen), void *arg);

/*
 * The size and attributes of the entry an iterator is on, as stash_stat
 * would give them, without another lookup (and without reading a large
 * value's chunks).  Returns 0, -EINVAL when IT is not on an entry, or -EIO
 * for a damaged entry.
 */
int  stash_iter_stat(const stash_iter_t *it, stash_stat_t *st);

/* Bits of stash_setstat's MASK: which fields of *st to store. */
#define STASH_SET_MODE  0x01
#define STASH_SET_UID   0x02
#define STASH_SET_GID   0x04
#define STASH_SET_ATIME 0x08
#define STASH_SET_MTIME 0x10
#define STASH_SET_CTIME 0x20
#define STASH_SET_INO   0x40    /* a nonzero inode number (for a key stash_put
                                   wrote, which has none: stashfs gives it the
                                   number it showed when the file is opened) */

/*
 * Change the fields of KEY's attributes named by MASK (size is not touched:
 * use stash_truncate; nlink and link_id follow from stash_link).  The value
 * is unchanged.  Errors: -ENOENT, -EINVAL (also for STASH_SET_INO with ino 0),
 * -EROFS, -ENOSPC, -EIO, -ENOMEM.
 */
int  stash_setstat(stash_t *db, const void *key, size_t klen, const stash_stat_t *st, unsigned mask);

/* Flags of stash_create. */
#define STASH_EXCL 1    /* fail with -EEXIST when KEY exists */

/*
 * Set KEY to an empty value with attributes *ST (its size, nlink, link_id
 * and ino fields are ignored), replacing any value it had (with STASH_EXCL:
 * failing instead).  The value gets a random nonzero inode number (ino),
 * which stays with it through changes, renames and links; stashfs shows it.
 * Errors: -EEXIST, -EINVAL, -EROFS, -ENOSPC, -EIO, -ENOMEM.
 */
int  stash_create(stash_t *db, const void *key, size_t klen, const stash_stat_t *st, unsigned flags);

/*
 * Read up to LEN bytes of KEY's value from offset OFF into BUF; *nread gets
 * the count, short only at the end of the value (0 at or past it).  A part
 * never written (a gap left by a write past the end) reads as zeros.
 * Errors: -ENOENT, -EINVAL, -EIO, -ENOMEM.
 */
int  stash_pread(stash_t *db, const void *key, size_t klen, void *buf, size_t len, uint64_t off, size_t *nread);
/* As stash_pread, at snapshot S (NULL = now). */
int  stash_pread_at(stash_t *db, const stash_snapshot_t *s, const void *key, size_t klen, void *buf,
                    size_t len, uint64_t off, size_t *nread);

/* WHENCE of stash_seek (the values of Linux's SEEK_DATA and SEEK_HOLE). */
#define STASH_SEEK_DATA 3
#define STASH_SEEK_HOLE 4

/*
 * Where, at or after offset OFF of KEY's value (at snapshot S, NULL = now),
 * the next data begins (STASH_SEEK_DATA) or the next hole (STASH_SEEK_HOLE):
 * a range never written, or dropped by stash_zero_range, that reads as
 * zeros and takes no space.  Holes are whole 64 KiB chunks of a value over
 * 64 KiB; everything else counts as data (zeros written count as data,
 * and the end of the value is a hole), as lseek(2) allows.  *result gets
 * the offset.  Cost: O(chunks passed over), read from the keys alone.
 * Errors: -ENXIO (OFF at or past the end, or, for STASH_SEEK_DATA, no
 * data after OFF), -ENOENT, -EINVAL, -EIO, -ENOMEM.
 */
int  stash_seek(stash_t *db, const stash_snapshot_t *s, const void *key, size_t klen, uint64_t off,
                int whence, uint64_t *result);

/*
 * Write LEN bytes from BUF into KEY's value at offset OFF, growing it (with
 * zeros in any gap) when OFF + LEN is past its end; a missing KEY is created
 * first.  The modification time becomes now.  With LEN 0 the size stays
 * (as write(2) of no bytes leaves a file's).  Atomic: after a crash the
 * write is there whole or not at all.  Errors: -EFBIG (past STASH_MAX_FILE),
 * -EINVAL, -EROFS, -ENOSPC, -EIO, -ENOMEM.
 */
int  stash_pwrite(stash_t *db, const void *key, size_t klen, const void *buf, size_t len, uint64_t off);

/*
 * Write LEN bytes from BUF at the end of KEY's value, as one step: no
 * other change to the value (through any name of it) comes between
 * finding the end and writing there, so appends through several names or
 * threads never overwrite each other.  *OFF (if OFF is not NULL) gets the
 * offset written at.  A missing KEY is created.  Errors as stash_pwrite.
 */
int  stash_append(stash_t *db, const void *key, size_t klen, const void *buf, size_t len, uint64_t *off);

/*
 * Make KEY's value SIZE bytes long: cut it, or extend it with zeros (an
 * extension costs no space until written).  Errors: -ENOENT, -EFBIG,
 * -EINVAL, -EROFS, -ENOSPC, -EIO, -ENOMEM.
 */
int  stash_truncate(stash_t *db, const void *key, size_t klen, uint64_t size);

/*
 * Make KEY's value at least SIZE bytes long: extend it with zeros as
 * stash_truncate does when it is shorter, and leave it (and its times)
 * alone when it is not, in one step under the key's lock, so a value that
 * grew meanwhile is never cut back.  *GREW (if not NULL) is set to 1 when
 * the value grew, else 0.  Errors: as stash_truncate.
 */
int  stash_extend(stash_t *db, const void *key, size_t klen, uint64_t size, int *grew);

/*
 * Make bytes [OFF, OFF + LEN) of KEY's value zeros, as far as they lie
 * within it; its size is unchanged (a range past the end changes nothing).
 * Whole 64 KiB chunks in the range are dropped and take no space (a hole);
 * the bytes around them are written.  The modification time becomes now.
 * Atomic like stash_pwrite.  Errors: -ENOENT, -EINVAL, -EROFS, -ENOSPC,
 * -EIO, -ENOMEM.
 */
int  stash_zero_range(stash_t *db, const void *key, size_t klen, uint64_t off, uint64_t len);

/*
 * Set KEY to the bytes that READ hands over, without ever holding the whole
 * value in memory: for values of any size up to STASH_MAX_FILE (stash_put
 * stops at STASH_MAX_VALUE and needs the value in one buffer).  READ is
 * called with ARG and a buffer of LEN bytes; it stores up to LEN bytes,
 * sets *got to their count and returns 0, with *got = 0 at the end of the
 * value; a negative errno from it stops the put and is returned.
 *
 * Like stash_put, the result is one plain value (attributes reset to the
 * defaults) that replaces the old one atomically, when READ reports the
 * end; until then readers see the old value.  64 KiB pieces of zeros are
 * left out and read back as holes (stash_seek).  FLAGS: 0 or STASH_SYNC (on
 * disk before return).  A failure, or a crash before the end, leaves the
 * old value; the space the partial value took is given back (after a
 * crash, by the next stash_open()).
 * Errors: READ's own, -EFBIG, -EINVAL (also a reserved key: see
 * snapshot_dir), -EROFS, -ENOSPC, -EIO, -ENOMEM.
 */
int  stash_put_stream(stash_t *db, const void *key, size_t klen,
                      int (*read)(void *arg, void *buf, size_t len, size_t *got), void *arg,
                      int flags);

/* KEY's value length.  Errors: -ENOENT, -EINVAL, -EIO, -ENOMEM. */
int  stash_value_size(stash_t *db, const void *key, size_t klen, uint64_t *size);

/* Flags of stash_rename. */
#define STASH_NOREPLACE 1   /* fail with -EEXIST when TO exists */

/*
 * Move FROM's value and attributes to TO in one atomic step, replacing TO's
 * (unless STASH_NOREPLACE).  A large value moves without copying its chunks.
 * Errors: -ENOENT (no FROM), -EEXIST, -EINVAL, -EROFS, -ENOSPC, -EIO.
 */
int  stash_rename(stash_t *db, const void *from, size_t flen, const void *to, size_t tlen, unsigned flags);

/*
 * Move every key that starts with FROM to the same key starting with TO
 * instead, in one atomic batch (cost: O(keys moved), values are not copied
 * for large ones).  Keys already under TO that are not overwritten stay.
 * *moved (may be NULL) gets the count.  Errors: -EINVAL (TO starts with
 * FROM, or a moved key would be too long), -EROFS, -ENOSPC, -EIO, -ENOMEM.
 */
int  stash_rename_prefix(stash_t *db, const void *from, size_t flen, const void *to, size_t tlen,
                         uint64_t *moved);

/* Flags of stash_rename2: which moves are of a prefix's keys. */
#define STASH_PREFIX1 1
#define STASH_PREFIX2 2

/*
 * Two moves made at once, in one atomic batch: FROM1 to TO1 and FROM2 to
 * TO2.  A move is of one key or, with its STASH_PREFIXn flag, of every key
 * that starts with FROMn (that start replaced by TOn).  Values, attributes,
 * links and large values move as with stash_rename, without copying.  For
 * swapping two names: (a, b) with (b, a) swaps two keys, (a/, b/) with
 * (b/, a/) and both flags two key ranges, (a, b) with (b/, a/) and
 * STASH_PREFIX2 a key with a range.
 * Nothing is overwritten but by the other move: a key under a target that
 * exists and is not itself moved fails the call.  A move of one key needs
 * that key; a prefix's move may find no key.  Cost: O(keys moved), all of
 * them held in memory until the batch is written.
 * Errors: -ENOENT (FROMn of a one-key move is not there), -EEXIST (a key
 * would be overwritten), -EINVAL (bad arguments, the moves overlap, a moved
 * key would be too long, a reserved key: see snapshot_dir), -EROFS,
 * -ENOSPC, -EIO, -ENOMEM.
 */
int  stash_rename2(stash_t *db, const void *from1, size_t f1len, const void *to1, size_t t1len,
                   const void *from2, size_t f2len, const void *to2, size_t t2len, unsigned flags);

/*
 * Extended attributes: named byte strings kept with KEY's attributes (names
 * 1..255 bytes, no NUL; all of one key's names and values together at most
 * 64 KiB).  They move with stash_rename and vanish with the key.
 *
 * stash_getxattr copies NAME's value into BUF (LEN bytes) and its length
 * into *vlen; with LEN 0 only the length.  Errors: -ENODATA (no such
 * attribute), -ERANGE (BUF too small), -ENOENT (no KEY), -EINVAL, -EIO.
 *
 * stash_setxattr sets NAME to VAL; FLAGS STASH_XATTR_CREATE fails with
 * -EEXIST when it is there, STASH_XATTR_REPLACE with -ENODATA when it is
 * not.  Errors also: -ENOSPC (over 64 KiB in all), -ERANGE (name), -ENOENT,
 * -EINVAL, -EROFS, -EIO.
 *
 * stash_listxattr writes the names, each followed by a NUL, into BUF and
 * their total length into *need (with LEN 0 only the length).  Errors:
 * -ERANGE, -ENOENT, -EINVAL, -EIO.
 *
 * stash_removexattr removes NAME.  Errors: -ENODATA, -ENOENT, -EINVAL,
 * -EROFS, -EIO.
 */
#define STASH_XATTR_CREATE  1
#define STASH_XATTR_REPLACE 2
int  stash_getxattr(stash_t *db, const stash_snapshot_t *s, const void *key, size_t klen, const char *name,
                    void *buf, size_t len, size_t *vlen);
int  stash_setxattr(stash_t *db, const void *key, size_t klen, const char *name, const void *val,
                    size_t vlen, int flags);
int  stash_listxattr(stash_t *db, const stash_snapshot_t *s, const void *key, size_t klen, char *buf,
                     size_t len, size_t *need);
int  stash_removexattr(stash_t *db, const void *key, size_t klen, const char *name);

/*
 * Compact the tables holding user keys in [BEGIN, END] (a NULL end is
 * unbounded: NULL, 0, NULL, 0 compacts the whole store), after writing the
 * memtable out, and return when done: every table in the range is moved
 * down to the deepest level holding data and rewritten there, so it costs
 * about one read and one write of the range's data.  Overwritten and
 * deleted entries that no snapshot can see are dropped.  Errors: -EINVAL,
 * -EROFS, -EIO, -ENOSPC.
 */
int  stash_compact_range(stash_t *db, const void *begin, size_t blen, const void *end, size_t elen);

/*
 * Make DEST_DIR a consistent copy of the store while it keeps serving
 * reads and writes: the memtable is written out, then the tables of that
 * moment are hard-linked into DEST_DIR (copied when it is on another
 * filesystem) beside a MANIFEST describing exactly them, all fsynced.  The
 * copy holds every write acknowledged before the call, whole batches only,
 * and opens as a store of its own (stash_open, stashfs).  DEST_DIR must not
 * exist or be empty.  Errors: -EEXIST (DEST_DIR not empty), -EROFS (a
 * read-only handle), -ENOSPC, -EIO, -EINVAL.
 */
int  stash_backup(stash_t *db, const char *dest_dir);

/*
 * Make DEST_DIR a new store holding exactly what named snapshot NAME sees:
 * every key, value, attribute and large value as of that instant, and no
 * named snapshots.  The live store keeps serving reads and writes (and may
 * be read-only).  The entries are copied one by one into a store created
 * in DEST_DIR with this store's options, so it costs a read and a write of
 * the snapshot's data; the copy is fsynced before the call returns.  DEST_DIR
 * must not exist or be empty; after a failure it holds a partial store the
 * caller should remove.  Errors: -ENOENT (no snapshot NAME), -EEXIST
 * (DEST_DIR not empty), -ENOSPC, -EIO, -EINVAL, -ENOMEM.
 */
int  stash_backup_snapshot(stash_t *db, const char *name, const char *dest_dir);

/*
 * Write a human-readable summary of the store (tables and bytes per level,
 * memtables, log, cache hit rate, bytes written by flushes and compactions
 * and the write amplification they add up to, stalls) into BUF, always
 * NUL-terminated.  Returns 0 or -EINVAL.
 */
int  stash_stats(stash_t *db, char *buf, size_t len);

/* The same figures as numbers, for programs (and progress displays). */
#define STASH_LEVELS 7
typedef struct stash_counters {
    uint64_t sequence;                 /* of the newest write */
    uint64_t memtable_bytes;           /* the memtable and frozen ones */
    uint64_t level_tables[STASH_LEVELS];
    uint64_t level_bytes[STASH_LEVELS];
    uint64_t level_entries[STASH_LEVELS];
    uint64_t flush_bytes;              /* written to level 0, since open */
    uint64_t compactions;              /* since open */
    uint64_t compact_bytes_read;       /* by finished compactions */
    uint64_t compact_bytes_written;
    uint64_t compact_entries_read;     /* by compactions, counted while they
                                          run: grows during one long
                                          compaction */
    uint64_t stalls;                   /* writes delayed or stopped */
} stash_counters_t;

/* Fill *C.  Errors: -EINVAL. */
int  stash_counters(stash_t *db, stash_counters_t *c);

/* A short static description of a (negative or positive) errno value. */
const char *stash_strerror(int err);

/*
 * The human detail of the last failure of a call made by this thread (the
 * message is kept per thread, so threads do not overwrite each other's).
 * DB may be NULL, e.g. after stash_open() failed.  Never NULL; "" when there
 * is nothing to say.
 */
const char *stash_last_error(stash_t *db);

#ifdef __cplusplus
}
#endif
#endif /* SMARTSTASH_H */
