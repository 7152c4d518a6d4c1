/*
 * vlog.h - value files: where whole chunks of large values are written once,
 * outside the tree (docs/format.md, "Value files").
 *
 * A chunk written whole through stash_pwrite goes to the end of the active
 * value file, NNNNNN.val, and the tree keeps only a pointer to it (file
 * number, offset, length, CRC32C of the bytes): the bytes are not copied
 * again by flushes and compactions.  A value file holds a header and then
 * records (length, CRC, chunk key, bytes); it is only ever appended to, and
 * is sealed, never to be appended to again, when it reaches VLOG_FILE_MAX or the
 * store closes.
 *
 * Durability: vlog_append() hands the bytes to the kernel before it returns,
 * and the caller commits the pointer to the log after that.  vlog_sync()
 * makes every appended byte durable; the engine calls it before every fsync
 * of its log, so a pointer is never durable before the bytes it points to.
 * After each fsync of a file, its header's synced size is rewritten (not
 * itself synced: it reaches the disk with the next fsync or writeback):
 * every record below it is on disk, so that after a crash only pointers
 * past it need their bytes read to tell whether the crash lost them
 * (vlog_torn).  It is the one part of a sealed file ever written again.
 * A thread of the writable vlog_t starts the disk writing every 8 MiB
 * appended to a file (without waiting), so that an fsync after a long run
 * finds little left to do and no append waits for a full disk queue.
 *
 * Lifetime.  A file is garbage when no pointer anyone can still read names
 * it.  The engine finds out by a scan (see db.c, vlog_collect): vlog_settled()
 * lists the candidates, sealed files whose appends are all committed, so a
 * scan that starts later sees every pointer into them; vlog_retire() records
 * the ones the scan found unreferenced.  Readers pin the current epoch for as
 * long as they may follow a pointer (a view does: vlog_pin/vlog_unpin), and
 * a retired file is unlinked only once every epoch up to the one it was
 * retired in is unpinned (vlog_reap), so no reader ever finds a file gone.
 * Space is given back file by file: the engine empties a file that is
 * mostly garbage by moving its live chunks (vlog_copy) first.
 *
 * Reads: vlog_read() checks the CRC and returns -EIO, naming the file, on a
 * mismatch, a short file or a missing one; never wrong bytes.
 *
 * Thread-safety: every call is safe from any thread; appends from several
 * threads go to disjoint ranges and run in parallel.
 */
#ifndef STASH_VLOG_H
#define STASH_VLOG_H

#include <stddef.h>
#include <stdint.h>

#define VLOG_FILE_MAX  (128u << 20)
#define VLOG_VERSION   2
#define VLOG_HDR       32       /* file header: magic, version, number, synced size, CRC */
#define VLOG_HDR_V1    16       /* the header of version 1: no synced size */
#define VLOG_REC_HDR   8        /* record header: length, CRC; the key follows */
#define VPTR_LEN       25       /* an encoded pointer, tag byte included */

typedef struct vlog vlog_t;

/* Where a chunk's bytes are. */
struct vptr {
    uint64_t file;
    uint64_t off;               /* of the bytes, past the record header and key */
    uint32_t len;               /* bytes stored */
    uint32_t crc;               /* CRC32C of the bytes stored */
    int zstd;                   /* stored compressed (a zstd frame) */
};

/* NEWNUM gives fresh file numbers (shared with the store's other files). */
typedef uint64_t (*vlog_numfn)(void *arg);

/*
 * Open the value files of store DIR: every NNNNNN.val there is sealed, and
 * (unless READ_ONLY) fsynced, since a killed process may have left its
 * bytes in the page cache only.  No file is created until the first append.
 * Errors: -ENOMEM, -EIO (a value file that cannot be read or synced, named
 * in the message).
 */
int vlog_open(const char *dir, int read_only, vlog_numfn newnum, void *arg, vlog_t **out);

/* Seal the active file (fsync it) and free everything.  Returns 0 or -EIO. */
int vlog_close(vlog_t *vl);

/*
 * Append LEN bytes (at most 4 GiB) as the chunk under KEY (KLEN bytes, kept
 * for tools that walk a file) and fill *P.  LEVEL != 0: compressed with zstd
 * at that level when a probe of the first 4 KiB and then the whole shrink
 * by an eighth; incompressible bytes cost only the probe.  The file stays unsettled until
 * vlog_done(vl, p->file) is called, after the pointer is committed (or has
 * failed to be).  Errors: -ENOSPC, -EIO (message set).
 */
int vlog_append(vlog_t *vl, const void *key, size_t klen, const void *buf, size_t len, int level,
                struct vptr *p);
void vlog_done(vlog_t *vl, uint64_t file);

/* Read the chunk *P points to into BUF (room for CAP bytes), checked and
 * decompressed; *N gets its length.  BUF past *N may be overwritten too
 * (zstd uses the spare room as scratch): a caller that wants zeros there
 * writes them after.  0, -EIO (damage, a chunk over CAP) or -ENOMEM. */
int vlog_read(vlog_t *vl, const struct vptr *p, void *buf, size_t cap, size_t *n);

/*
 * Whether the bytes *P names were lost by a crash of the machine: a pointer
 * logged, not yet fsynced, can survive while its bytes, not yet fsynced
 * either, do not.  Torn: past the end of the file (the file itself was made
 * durable before any pointer into it) but not below its synced size (a
 * file cut short there is damage: the chunk reads -EIO), or past the
 * file's synced size and not matching the pointer's CRC (read to find out:
 * a later append to the same file may have survived where this one did
 * not).  A missing file is
 * not torn: files are removed when collected, and a logged pointer into one
 * is a version that later records hide.  A file of version 1 has no synced
 * size; only its end is checked.  CHECK 0: only the end is checked (a log
 * older than the newest was synced whole, and its value files before it).
 * For recovery, before any append.  Returns 1 (torn), 0, or -ENOMEM or
 * -EIO (the file could not be read: not a crash's doing).
 */
int vlog_torn(vlog_t *vl, const struct vptr *p, int check);

/* The synced size in header H (LEN bytes read from the start of file
 * NUM): UINT64_MAX for a version 1 file (no synced size), 0 for a header
 * damaged or not there (nothing proven synced). */
uint64_t vlog_mark_decode(const uint8_t *h, size_t len, uint64_t num);

/* Make every append that has returned durable: 0 or -EIO. */
int vlog_sync(vlog_t *vl);

/* Pointer coding: tag byte (1 stored as is, 2 zstd), file, offset (u64
 * LE), stored length, CRC of the stored bytes (u32 LE). */
void vptr_encode(uint8_t out[VPTR_LEN], const struct vptr *p);
int vptr_decode(const uint8_t *in, size_t n, struct vptr *p);   /* 0 or -EIO */

/* Garbage collection; see the top of this file. */
uint64_t vlog_pin(vlog_t *vl);
void vlog_unpin(vlog_t *vl, uint64_t epoch);
/* Seal the active file when nothing was appended to it since the last call
 * and it holds at least an eighth of VLOG_FILE_MAX (FORCE: in any case),
 * and no append is out, so that it can be collected too; the next append
 * starts a new one. */
void vlog_seal_idle(vlog_t *vl, int force);
/* The candidates, sorted (malloc'd into *NUMS, their sizes in bytes into
 * *SIZES; *N may be 0): 0 or -ENOMEM. */
int vlog_settled(vlog_t *vl, uint64_t **nums, uint64_t **sizes, size_t *n);

/* Append the bytes *FROM points to, as stored (checked, not decompressed),
 * under KEY, and fill *TO; settle TO's file with vlog_done afterwards.  For
 * moving the live chunks out of a file that is mostly garbage. */
int vlog_copy(vlog_t *vl, const void *key, size_t klen, const struct vptr *from, struct vptr *to);
/* Files NUMS[0..N) are garbage as of now: they go once older pins are gone. */
void vlog_retire(vlog_t *vl, const uint64_t *nums, size_t n);
/* Unlink the retired files no pinned epoch can still read; returns how many. */
int vlog_reap(vlog_t *vl);

/* Files and bytes on disk, and bytes appended since open (as given, and as
 * stored). */
void vlog_usage(vlog_t *vl, uint64_t *files, uint64_t *bytes, uint64_t *appended, uint64_t *stored);

/* Hard-link (or copy) every sealed file and the active one's bytes so far
 * into directory DEST: 0 or a negative errno with a message. */
int vlog_backup(vlog_t *vl, const char *dest);

#endif
