/*
 * loop.h - stashfs's request loop: the thread reading the device answers
 * quick requests itself and hands its turn on before a slow one.
 *
 * Why not libfuse's multi-threaded loop: its threads all wait in read(2) on
 * /dev/fuse and the kernel wakes them in turn, longest-waiting first, so
 * every request pays a switch to a cold thread, often on another CPU.  One
 * thread that goes straight from a reply to the next request is faster
 * (create, stat and read of small files) and, with several processes at
 * work, finds requests already queued and never sleeps.  What it must not
 * do is hold everyone behind a request that waits on the disk or moves a
 * lot of data, so before one of those it passes the reading on to another
 * thread (waking or starting one) and then answers the request itself:
 *   - FSYNC and FSYNCDIR (a disk flush; several at once commit together);
 *   - READ and WRITE of more than SLOW_IO bytes (readahead sends
 *     several reads at once, and they are served in parallel).
 *
 * Contract:
 *   loop_run(se, workers, spin_us, hooks) serves SE until it exits (unmount, a
 *   signal) and returns 0, or a negative errno when reading the device
 *   fails.  At most 1 + WORKERS threads serve, started as slow requests
 *   need them; with WORKERS == 0 one thread answers everything in turn.
 *   With SPIN_US > 0 the device is made non-blocking and the reader polls
 *   it for up to SPIN_US microseconds after each answer before sleeping
 *   (a busy CPU for that long, yielded to anything else runnable, against
 *   an idle CPU's wake-up in the next round trip).  The calling
 *   thread only waits for the end.  Before it returns, every request taken
 *   has been answered and the serving threads have ended.  At a signal the
 *   serving threads go on answering until the filesystem's stopping hook
 *   (below) has returned, so that a thread of the filesystem waiting in
 *   the kernel on a request (a cache invalidation waits for the pages a
 *   READ holds) can finish.  Its answer to
 *   the kernel's INIT asks for FUSE_PARALLEL_DIROPS when the kernel offers
 *   it (libfuse before 3.16 never does, whatever the filesystem wants):
 *   lookups and listings in one directory then come in together.  It asks
 *   for FUSE_HANDLE_KILLPRIV_V2 too: the filesystem must then clear
 *   set-ID bits where loop_kills_suid (below) says.
 *
 * Requirements: the filesystem's handlers must be thread-safe when
 * WORKERS > 0.  Serving threads block every signal, so that SIGINT,
 * SIGTERM and SIGHUP reach the thread in loop_run; the caller should start
 * its other threads with them blocked too.  While it serves, loop_run
 * handles those three itself (libfuse's handlers, set before, are put back
 * when it returns), and stops only after the stopping hook.
 */
#ifndef STASHFS_LOOP_H
#define STASHFS_LOOP_H

#include <fuse_lowlevel.h>

/* Reads and writes larger than this count as slow. */
#define SLOW_IO (64u << 10)

/*
 * What the filesystem may ask of the loop (each call optional, NULL: not
 * asked).  libfuse's path interface cannot serve a GETATTR or SETATTR that
 * comes without a file handle (fstat, fchmod, futimens, fchown) for an
 * inode it has no path for any more: a file removed while open whose
 * directory was removed too.  These two let the filesystem serve them
 * through one of its handles instead:
 *   - created(fh, node): a CREATE's reply is going out: the new handle FH
 *     is on kernel inode NODE (which the request itself does not carry).
 *   - handle_of(node): a GETATTR or SETATTR for kernel inode NODE came
 *     without a handle: a handle of it to serve it through, or 0 to leave
 *     the request as it is.  Called for each such request: keep it cheap.
 * Both are called on the serving thread, within the request.  To see the
 * replies the loop sends them itself (fuse_session_custom_io on the
 * session's own device).
 */
struct loop_hooks {
    void (*created)(uint64_t fh, uint64_t node);
    uint64_t (*handle_of)(uint64_t node);
    /* stopping(): the loop is about to stop serving (a signal, an
     * unmount); called on the thread in loop_run while requests are still
     * answered.  Stop and join here any thread that talks to the kernel. */
    void (*stopping)(void);
};

int loop_run(struct fuse_session *se, unsigned workers, unsigned spin_us,
             const struct loop_hooks *hooks);

/* How many requests the calling thread has taken from the device in
 * loop_run: a number that tells one request from the next within a
 * handler.  0 for a thread that never served in loop_run (libfuse's loop). */
unsigned long loop_request(void);

/* The inode (nodeid) of the request the calling thread answers in
 * loop_run: for OPEN, READ, WRITE, GETATTR, RELEASE and the like the file's
 * own, for LOOKUP, CREATE, MKDIR, UNLINK, RENAME and LINK its directory's.
 * 0 outside loop_run. */
uint64_t loop_node(void);

/* Whether the request the calling thread answers in loop_run is a RENAME
 * (or RENAME2).  0 outside loop_run. */
int loop_in_rename(void);

/* Whether the request the calling thread answers in loop_run is a LOOKUP
 * (a name looked up in a directory; libfuse's path interface serves it
 * with a getattr, as it does GETATTR).  0 outside loop_run. */
int loop_in_lookup(void);
/* For a RENAME or RENAME2, what it asks: *r gets its names (valid until
 * the request is answered), directories (inodes) and flags, and the call
 * returns 1.  0 for any other request. */
struct loop_rename {
    const char *oldname, *newname;
    uint64_t olddir, newdir;
    unsigned flags;
};
int loop_rename(struct loop_rename *r);
/* For a LINK request, the inode of the file that gains a name (the
 * request's own inode is the new name's directory).  0 otherwise. */
uint64_t loop_link_source(void);

/* Whether the request the calling thread answers in loop_run is one after
 * which the file must lose its set-user-ID bit, and its set-group-ID bit
 * if group execution is on (the daemon answers INIT with
 * FUSE_HANDLE_KILLPRIV_V2, so the kernel leaves this to it):
 *   - a WRITE with FUSE_WRITE_KILL_SUIDGID (a writer without CAP_FSETID);
 *   - a SETATTR with FATTR_KILL_SUIDGID: a chown of a file that is not a
 *     directory, or a truncation by a caller without CAP_FSETID; and a
 *     SETATTR that changes nothing (chown(-1, -1), or the kernel clearing
 *     set-ID bits before a write), which reaches the filesystem as a chown
 *     to owner and group -1;
 *   - an OPEN with FUSE_OPEN_KILL_SUIDGID: O_TRUNC, by a caller without
 *     CAP_FSETID.
 * *NODE gets the request's inode.  0 outside loop_run. */
int loop_kills_suid(uint64_t *node);

/* Whether the kernel agreed to FUSE_HANDLE_KILLPRIV_V2: if not, it clears
 * set-ID bits itself, except on an OPEN with O_TRUNC (which it leaves to
 * the filesystem either way, without saying whether the caller has
 * CAP_FSETID). */
int loop_killpriv(void);

/* Have the kernel drop the attributes it caches of inode NODE (not its
 * pages, so it cannot wait on a request in flight): callable from inside a
 * handler.  0 or a negative errno. */
int loop_inval_attrs(uint64_t node);

#endif
