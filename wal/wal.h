/*
 * wal.h - the write-ahead log: an append-only file of checksummed records.
 *
 * A log file is named NNNNNN.log (its log number, six or more decimal
 * digits) and is a sequence of 32 KiB blocks.  A record is split into
 * fragments so that no fragment crosses a block boundary; each fragment has a
 * 7-byte header (CRC32C, length, type) and the CRC also covers the log
 * number, so a stale block of another log never passes for one of this log.
 * The first record of every file is a header naming the format version and
 * the log number.  docs/format.md gives the byte layout.
 *
 * Writing: wal_create() makes the file durable (file and directory fsynced)
 * before it returns; wal_append() hands one whole record to the kernel (one
 * write(), or a copy into a shared mapping of zeros written ahead, see
 * wal_set_prealloc), so a record survives the process being killed once the
 * call returns; wal_sync() makes everything appended so far durable (every
 * 4 MiB written, appends start the disk writing without waiting for it, so
 * that a sync after a long run finds little left).  If an
 * append fails part-way, the file is cut back to the previous record so the
 * log stays well-formed; when even that fails the writer refuses further
 * appends (-EIO) and the caller must treat the store as read-only.
 *
 * Reading: wal_replay() hands back every whole record in order.  A tail of
 * zeros (space written ahead, see wal_set_prealloc) ends any log.  A record
 * that fails its check is handled by where it is: at the tail of the newest
 * log (no valid fragment anywhere after it) it is a write torn by a crash and
 * is dropped without error, and so is everything from a page of zeros that
 * a crash kept from the disk (see docs/format.md); anywhere else it is
 * corruption and replay fails with -EIO, naming file and offset, before any
 * record after it is returned.  So that damage to records that were synced
 * is never taken for such a tear, the first record appended after a sync
 * is preceded by a SYNCED fragment saying how far the log was durable
 * (format version 2): a failure below what a later one says is damage.
 *
 * Thread-safety: a wal_t is used by one thread at a time (the engine's commit
 * leader); different wal_t's are independent.  wal_replay() is reentrant.
 */
#ifndef STASH_WAL_H
#define STASH_WAL_H

#include <stddef.h>
#include <stdint.h>

#define WAL_BLOCK_SIZE 32768
#define WAL_VERSION    2

typedef struct wal wal_t;

/* Write "DIR/NNNNNN.log" for LOGNUM into BUF (at least 32 + strlen(dir)). */
void wal_path(char *buf, size_t len, const char *dir, uint64_t lognum);

/*
 * Create a new, empty log DIR/NNNNNN.log (failing with -EEXIST if it exists),
 * write its header record, fsync the file and DIR.  Mode 0644.
 * Errors: -EEXIST, -ENOSPC, -EIO, -EACCES, -ENOMEM (message set).
 */
int wal_create(const char *dir, uint64_t lognum, wal_t **out);

/*
 * Append one record of LEN bytes (0 allowed, no upper bound but memory).
 * Errors: -ENOSPC or -EIO; the record is then not in the log.
 */
int wal_append(wal_t *w, const void *rec, size_t len);

/* fdatasync the log.  Errors: -EIO (the writer then refuses appends). */
int wal_sync(wal_t *w);

/*
 * wal_sync in two halves, so that the fdatasync can run on another thread
 * while the writer goes on appending.  wal_sync_start (the writer's call)
 * readies what was appended for the sync and returns 0, or -EIO if the
 * log refuses writes.  wal_sync_fd (any thread), given wal_fd's
 * descriptor, makes everything appended before it started durable; the
 * caller must keep the log open until it returns.  Errors: -EIO, with a
 * message naming log LOGNUM; the log's writer is not told (the caller
 * stops writing).
 */
int wal_sync_start(wal_t *w);
int wal_sync_fd(int fd, uint64_t lognum);

/* fsync directory DIR (after creating, renaming or removing a file in it,
 * so that the change is durable): 0, or a negative errno with a message
 * naming it.  Every module that makes files durable uses this one. */
int wal_sync_dir(const char *dir);

/* The file's name in error messages (NNNNNN.log until set; at most 31 bytes). */
void wal_set_name(wal_t *w, const char *name);

int wal_fd(const wal_t *w);

/*
 * Write zeros ahead of the records: when a wal_sync (or, on filesystems that
 * allow the mapping below, a wal_append) finds fewer than BYTES/4 zero bytes
 * past the last record, it first writes zeros up to BYTES past it.  Later
 * records overwrite those zeros, so syncing them flushes data blocks only:
 * no change of file size for the filesystem to journal, which makes small
 * synced appends much cheaper.  0 (the default) turns it off.  A reader
 * takes an all-zero tail as the end of any log.  Failing to write the zeros
 * (a full disk) is not an error: the log just stops writing ahead.
 *
 * On ext4, xfs and tmpfs, once a log has taken 32 appends since its
 * last sync, the zeros ahead are mapped shared and appends copy into the
 * mapping: no system call per record.  Only zeros already written are
 * mapped, so the filesystem has their blocks and a full disk cannot turn a
 * store into SIGBUS.  The one way left for a store to fault is a filesystem
 * that has shut down after an I/O error, where a write(2) would fail anyway.
 */
void wal_set_prealloc(wal_t *w, size_t bytes);

/* The log is durable up to UPTO bytes (a sync through wal_sync_fd, made
 * by another thread, has returned): the next append says so in the log.
 * wal_sync notes it by itself.  The writer's call. */
void wal_note_synced(wal_t *w, uint64_t upto);

/* Bytes in the file so far, and whether anything is appended but unsynced. */
uint64_t wal_size(const wal_t *w);
int wal_dirty(const wal_t *w);
uint64_t wal_number(const wal_t *w);

/* Close without syncing (call wal_sync first when it matters); frees W.
 * Zeros written ahead are cut off (not synced: either way the log reads the
 * same). */
int wal_close(wal_t *w);

/*
 * Called by wal_replay for each whole record: REC/LEN are valid only during
 * the call; OFF is the record's first byte in the file.  A non-zero return
 * stops the replay, and wal_replay returns it.
 */
typedef int (*wal_record_fn)(void *arg, const void *rec, size_t len, uint64_t off);

#define WAL_NEWEST 1  /* this is the newest log: a torn tail is tolerated */
#define WAL_REPAIR 2  /* with WAL_NEWEST: cut a torn tail off the file and fsync */

/*
 * Replay the log at PATH (its log number is LOGNUM), calling FN for each
 * record in order.  FLAGS: 0 for an older log (every record must be whole),
 * or WAL_NEWEST, optionally with WAL_REPAIR.  *GOOD_END (may be NULL) gets the
 * offset just past the last whole record.
 * Errors: -EIO for corruption, a bad header, a wrong version or log number
 * (message: "wal 000007.log: bad checksum at offset 8192"); -ENOENT; -ENOMEM;
 * or FN's non-zero return.
 */
int wal_replay(const char *path, uint64_t lognum, int flags,
               wal_record_fn fn, void *arg, uint64_t *good_end);

#endif
