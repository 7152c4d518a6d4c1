/*
 * loop.h - stashfs's request loop: one thread answers the quick requests
 * itself and hands the slow ones to a small pool.
 *
 * Why not libfuse's multi-threaded loop: its threads all wait in read(2) on
 * /dev/fuse and the kernel wakes them in turn, longest-waiting first, so
 * every request pays a switch to a cold thread, often on another CPU.  One
 * thread that goes straight from a reply to the next request is faster
 * (create, stat and read of small files) and, with several processes at
 * work, finds requests already queued and never sleeps.  What it must not
 * do is hold everyone behind a request that waits on the disk or moves a
 * lot of data, so those go to the pool:
 *   - FSYNC and FSYNCDIR (a disk flush; several at once commit together);
 *   - READ and WRITE of more than POOL_MIN_IO bytes (readahead sends
 *     several reads at once, and the pool serves them in parallel).
 *
 * Contract:
 *   loop_run(se, workers) serves SE until it exits (unmount, a signal)
 *   and returns 0, or a negative errno when reading the device fails.  The
 *   pool has at most WORKERS threads, started as requests need them; with
 *   WORKERS == 0 every request is answered on the calling thread.  Before
 *   it returns, every handed-off request has been answered and the pool's
 *   threads have ended.
 *
 * Requirements: the session must not use splice for reads
 * (FUSE_CAP_SPLICE_READ off): a spliced request lives in a pipe of the
 * thread that read it and cannot change threads.  The filesystem's
 * handlers must be thread-safe when WORKERS > 0.  Pool threads block every
 * signal, so SIGINT/SIGTERM reach the loop's thread and end its read.
 */
#ifndef STASHFS_LOOP_H
#define STASHFS_LOOP_H

#include <fuse_lowlevel.h>

/* Reads and writes larger than this go to the pool. */
#define POOL_MIN_IO (64u << 10)

int loop_run(struct fuse_session *se, unsigned workers);

#endif
