/*
 * loop.c - stashfs's request loop; see loop.h for the contract.
 *
 * Leader and followers: the serving threads take turns at reading the
 * device.  The thread whose turn it is reads a request and, if it is quick,
 * answers it and reads the next, keeping the turn, so a run of quick
 * requests costs no thread switch at all.  A slow request (loop.h says
 * which) makes it give the turn up first, waking a waiting thread or
 * starting a new one, and then answer the request itself: the request is
 * not delayed by a wake-up, and the next reader's wake-up overlaps the slow
 * work.  Each thread keeps its own buffer.
 *
 * Polling: the reader keeps trying the device for a short while (spin_us)
 * after each answer before it sleeps, so a run of requests from one
 * process never waits for a CPU to wake.  Only the thread holding the turn
 * polls, and it yields the CPU between tries.
 *
 * Ending: serving threads block every signal, so a signal (SIGTERM,
 * SIGINT, SIGHUP: libfuse's handlers end the session) lands on the thread
 * that called loop_run, which waits on a semaphore for that or for a
 * reader that saw the unmount.  It then wakes the waiting threads, cancels
 * the one blocked in read(2) (cancellation is enabled only there, where it
 * holds no lock), and joins them all; a thread answering a request
 * finishes it first.
 */
#define FUSE_USE_VERSION 312

#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static struct {
    struct fuse_session *se;
    pthread_mutex_t mu;
    pthread_cond_t turn;            /* the reader's turn is free, or stop */
    int reading;                    /* a thread holds the turn */
    atomic_int stop;                /* (also read by the reader outside mu) */
    unsigned waiting;               /* threads waiting for the turn */
    unsigned nthreads, max;         /* serving threads, and their limit */
    pthread_t *threads;
    sem_t finish;                   /* posted when a reader sees the end */
    int err;                        /* a failed read of the device */
    uint64_t spin_ns;               /* how long the reader polls before sleeping */
    struct loop_hooks hooks;
} lp;

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Read the next request into BUF: first keep trying for lp.spin_ns, giving
 * the CPU to anyone else runnable between tries, then sleep in poll(2).
 * Why: a process working through files sends its next request a few
 * microseconds after our reply, and a reader asleep by then costs the
 * round trip a wake-up of an idle CPU, which on a virtual machine is most
 * of the round trip's cost.  The device is non-blocking when spin_ns > 0.
 * Cancellation is enabled only while waiting. */
static int receive(struct fuse_buf *buf)
{
    if (!lp.spin_ns) {
        pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
        int n = fuse_session_receive_buf(lp.se, buf);
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
        return n;
    }
    uint64_t until = now_ns() + lp.spin_ns;
    for (;;) {
        int n = fuse_session_receive_buf(lp.se, buf);
        if (n != -EAGAIN)
            return n;
        if (now_ns() > until)
            break;
        sched_yield();
    }
    for (;;) {
        struct pollfd p = { .fd = fuse_session_fd(lp.se), .events = POLLIN };
        pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
        poll(&p, 1, -1);
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
        int n = fuse_session_receive_buf(lp.se, buf);
        if (n != -EAGAIN)
            return n;
    }
}

/* Does the request in BUF go off the reader's turn?  Reads the kernel's
 * header only: the opcode, and for READ and WRITE the transfer's size. */
static int slow(const struct fuse_buf *buf)
{
    if (buf->flags & FUSE_BUF_IS_FD || buf->size < sizeof(struct fuse_in_header))
        return 0;
    const struct fuse_in_header *in = buf->mem;
    switch (in->opcode) {
    case FUSE_FSYNC:
    case FUSE_FSYNCDIR:
        return 1;
    case FUSE_READ:
        if (buf->size < sizeof *in + sizeof(struct fuse_read_in))
            return 0;
        return ((const struct fuse_read_in *)(in + 1))->size > SLOW_IO;
    case FUSE_WRITE:
        if (buf->size < sizeof *in + sizeof(struct fuse_write_in))
            return 0;
        return ((const struct fuse_write_in *)(in + 1))->size > SLOW_IO;
    default:
        return 0;
    }
}

static __thread unsigned long requests;
static __thread uint64_t req_node;         /* the request's inode */
static __thread int req_kill;              /* a WRITE or SETATTR that kills set-ID bits */
static __thread uint64_t req_link;         /* a LINK's source inode */
static __thread uint64_t req_create;       /* a CREATE's unique number */
static __thread uint32_t req_opcode;
static __thread uint64_t req_init;         /* an INIT's unique number */
static __thread uint32_t req_init_flags;   /* and the flags the kernel offers */
static __thread struct loop_rename req_ren; /* a RENAME's names (oldname NULL: none) */
static atomic_int killpriv;                /* FUSE_HANDLE_KILLPRIV_V2 agreed at INIT */

unsigned long loop_request(void)
{
    return requests;
}

uint64_t loop_node(void)
{
    return req_node;
}

int loop_in_rename(void)
{
    return req_opcode == FUSE_RENAME || req_opcode == FUSE_RENAME2;
}

int loop_in_lookup(void)
{
    return req_opcode == FUSE_LOOKUP;
}

int loop_rename(struct loop_rename *r)
{
    *r = req_ren;
    return loop_in_rename() && req_ren.oldname;
}

uint64_t loop_link_source(void)
{
    return req_link;
}

int loop_kills_suid(uint64_t *node)
{
    *node = req_node;
    return requests && req_kill;
}

int loop_inval_attrs(uint64_t node)
{
    return fuse_lowlevel_notify_inval_inode(lp.se, node, -1, 0);
}

static void add_handle(const struct fuse_buf *buf);

/* Count the request in BUF and note what loop.h's calls tell of it. */
static void take(const struct fuse_buf *buf)
{
    requests++;
    req_node = 0;
    req_kill = 0;
    req_link = 0;
    req_create = 0;
    req_init = 0;
    req_opcode = 0;
    req_ren.oldname = req_ren.newname = NULL;
    if (buf->flags & FUSE_BUF_IS_FD || buf->size < sizeof(struct fuse_in_header))
        return;
    const struct fuse_in_header *in = buf->mem;
    req_node = in->nodeid;
    req_opcode = in->opcode;
    if (in->opcode == FUSE_WRITE && buf->size >= sizeof *in + sizeof(struct fuse_write_in))
        req_kill = (((const struct fuse_write_in *)(in + 1))->write_flags & FUSE_WRITE_KILL_SUIDGID) != 0;
    if (in->opcode == FUSE_OPEN && buf->size >= sizeof *in + sizeof(struct fuse_open_in))
        req_kill = (((const struct fuse_open_in *)(in + 1))->open_flags & FUSE_OPEN_KILL_SUIDGID) != 0;
    if (in->opcode == FUSE_SETATTR && buf->size >= sizeof *in + sizeof(struct fuse_setattr_in)) {
        struct fuse_setattr_in *a = (struct fuse_setattr_in *)(in + 1);
        req_kill = (a->valid & FATTR_KILL_SUIDGID) != 0;
        if (atomic_load(&killpriv) && !(a->valid & (FATTR_MODE | FATTR_UID | FATTR_GID | FATTR_SIZE | FATTR_ATIME |
                                                    FATTR_MTIME | FATTR_ATIME_NOW | FATTR_MTIME_NOW | FATTR_CTIME))) {
            /* A SETATTR that changes nothing: under HANDLE_KILLPRIV_V2,
             * what the kernel sends for a chown to the same owner and
             * group (-1, -1), or before a write that must clear set-ID
             * bits; with the bits it would have cleared itself left out.
             * Passed on as a chown to the same owner that clears them. */
            a->valid |= FATTR_UID | FATTR_GID;
            a->uid = a->gid = UINT32_MAX;
            req_kill = 1;
        }
    }
    if (in->opcode == FUSE_LINK && buf->size >= sizeof *in + sizeof(struct fuse_link_in))
        req_link = ((const struct fuse_link_in *)(in + 1))->oldnodeid;
    if (in->opcode == FUSE_CREATE)
        req_create = in->unique;
    /* (Kernels before 5.17 send the 16-byte fuse_init_in, without flags2.) */
    if (in->opcode == FUSE_INIT && buf->size >= sizeof *in + offsetof(struct fuse_init_in, flags) + sizeof(uint32_t)) {
        req_init = in->unique;
        req_init_flags = ((const struct fuse_init_in *)(in + 1))->flags;
    }
    if (loop_in_rename()) {
        /* fuse_rename_in or fuse_rename2_in, then "oldname\0newname\0" */
        size_t arg = in->opcode == FUSE_RENAME ? sizeof(struct fuse_rename_in) : sizeof(struct fuse_rename2_in);
        size_t end = in->len < buf->size ? in->len : buf->size;
        if (end > sizeof *in + arg) {
            const char *name = (const char *)(in + 1) + arg, *stop = (const char *)in + end;
            const char *nul = memchr(name, 0, (size_t)(stop - name));
            const char *nul2 = nul ? memchr(nul + 1, 0, (size_t)(stop - nul - 1)) : NULL;
            if (nul2) {
                req_ren.oldname = name;
                req_ren.newname = nul + 1;
                req_ren.olddir = in->nodeid;
                req_ren.newdir = ((const struct fuse_rename_in *)(in + 1))->newdir;
                req_ren.flags = in->opcode == FUSE_RENAME2 ? ((const struct fuse_rename2_in *)(in + 1))->flags : 0;
            }
        }
    }
    if (lp.hooks.handle_of)
        add_handle(buf);
}

/* A GETATTR or SETATTR without a handle, for an inode the filesystem has a
 * handle of to serve it through (loop_hooks): name that handle in it, as
 * the kernel does for fstat-like calls it makes through a file. */
static void add_handle(const struct fuse_buf *buf)
{
    struct fuse_in_header *in = buf->mem;
    uint64_t fh;
    if (in->opcode == FUSE_GETATTR && buf->size >= sizeof *in + sizeof(struct fuse_getattr_in)) {
        struct fuse_getattr_in *g = (struct fuse_getattr_in *)(in + 1);
        if (!(g->getattr_flags & FUSE_GETATTR_FH) && (fh = lp.hooks.handle_of(in->nodeid)) != 0) {
            g->getattr_flags |= FUSE_GETATTR_FH;
            g->fh = fh;
        }
    } else if (in->opcode == FUSE_SETATTR && buf->size >= sizeof *in + sizeof(struct fuse_setattr_in)) {
        struct fuse_setattr_in *a = (struct fuse_setattr_in *)(in + 1);
        if (!(a->valid & FATTR_FH) && (fh = lp.hooks.handle_of(in->nodeid)) != 0) {
            a->valid |= FATTR_FH;
            a->fh = fh;
        }
    }
}

/* The session's device calls (fuse_session_custom_io): plain read(2) and
 * writev(2), with a look at each CREATE's reply for loop_hooks.created. */
static ssize_t dev_read(int fd, void *buf, size_t len, void *userdata)
{
    (void)userdata;
    return read(fd, buf, len);
}

/*
 * The INIT reply, with two flags added when the kernel offers them, which
 * libfuse before 3.16 never passes on, whatever the filesystem asks:
 *   - FUSE_PARALLEL_DIROPS.  Without it the kernel lets one LOOKUP or
 *     READDIR at a time into a directory, so processes working in one
 *     directory wait for each other's round trips.  The daemon's handlers
 *     are safe for it, as libfuse's path interface is (it locks the paths
 *     it resolves).
 *   - FUSE_HANDLE_KILLPRIV_V2: the daemon clears set-user-ID and
 *     set-group-ID bits where a write, a truncation or a chown must (the
 *     kernel says when, in the request: loop_kills_suid).  Without it the
 *     kernel asks for the file's security.capability before every write(2)
 *     through its page cache, and for its attributes before every chown: a
 *     round trip each, doubling the cost of small writes through a
 *     read-write handle.
 * Later libfuse may set these itself; adding them again changes nothing.
 */
static ssize_t init_reply(int fd, struct iovec *iov, int count)
{
    struct fuse_init_out o;
    uint32_t add = req_init_flags & (FUSE_PARALLEL_DIROPS | FUSE_HANDLE_KILLPRIV_V2);
    if (count != 2 || iov[1].iov_len < offsetof(struct fuse_init_out, flags) + sizeof o.flags ||
        iov[1].iov_len > sizeof o || !add)
        return writev(fd, iov, count);
    memcpy(&o, iov[1].iov_base, iov[1].iov_len);
    o.flags |= add;
    struct iovec v[2] = { iov[0], { &o, iov[1].iov_len } };
    ssize_t n = writev(fd, v, 2);
    if (n > 0 && (add & FUSE_HANDLE_KILLPRIV_V2))
        atomic_store(&killpriv, 1);
    return n;
}

int loop_killpriv(void)
{
    return atomic_load(&killpriv);
}

static ssize_t dev_writev(int fd, struct iovec *iov, int count, void *userdata)
{
    (void)userdata;
    const struct fuse_out_header *out = iov[0].iov_base;
    if (req_init && out->unique == req_init && out->error == 0)
        return init_reply(fd, iov, count);
    if (req_create && lp.hooks.created && count >= 2 && out->unique == req_create && out->error == 0 &&
        iov[1].iov_len >= sizeof(struct fuse_entry_out) + sizeof(struct fuse_open_out)) {
        const struct fuse_entry_out *e = iov[1].iov_base;
        const struct fuse_open_out *o = (const struct fuse_open_out *)(e + 1);
        lp.hooks.created(o->fh, e->nodeid);
    }
    return writev(fd, iov, count);
}

static void *serve(void *arg);

/* Start one more serving thread, every signal blocked.  Called with lp.mu
 * held.  Failing is not an error: the turn waits for a busy thread. */
static void add_thread(void)
{
    if (lp.nthreads == lp.max + 1 || lp.stop)
        return;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    if (pthread_create(&lp.threads[lp.nthreads], NULL, serve, NULL) == 0)
        lp.nthreads++;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* The session is over (unmounted, or a read failed with ERR): stop every
 * thread and wake loop_run.  Called with lp.mu held. */
static void end(int err)
{
    if (err && !lp.err)
        lp.err = err;
    fuse_session_exit(lp.se);
    lp.stop = 1;
    pthread_cond_broadcast(&lp.turn);
    sem_post(&lp.finish);
}

static void free_buf(void *p)
{
    free(((struct fuse_buf *)p)->mem);
}

static void *serve(void *arg)
{
    (void)arg;
    struct fuse_buf buf;
    memset(&buf, 0, sizeof buf);
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    pthread_cleanup_push(free_buf, &buf);
    pthread_mutex_lock(&lp.mu);
    for (;;) {
        while (lp.reading && !lp.stop) {
            lp.waiting++;
            pthread_cond_wait(&lp.turn, &lp.mu);
            lp.waiting--;
        }
        if (lp.stop)
            break;
        lp.reading = 1;
        pthread_mutex_unlock(&lp.mu);
        /* This thread's turn: read and answer until a slow request. */
        for (;;) {
            int n = receive(&buf);
            if (n == -EINTR)
                continue;
            /* Only an error, the end of the device or loop_run's stop ends
             * the serving: a request read after a signal is answered too.
             * (Once loop_run marks the session exited, after the stopping
             * hook, libfuse hands back nothing more: what is still queued
             * fails with ENOTCONN when the mount goes.) */
            if (n <= 0 || lp.stop) {
                if (n > 0) {
                    take(&buf);
                    fuse_session_process_buf(lp.se, &buf);
                }
                pthread_mutex_lock(&lp.mu);
                lp.reading = 0;
                end(n < 0 ? n : 0);
                goto out;
            }
            if (lp.max && slow(&buf)) {
                pthread_mutex_lock(&lp.mu);
                lp.reading = 0;
                if (lp.waiting)
                    pthread_cond_signal(&lp.turn);
                else
                    add_thread();
                pthread_mutex_unlock(&lp.mu);
                take(&buf);
                fuse_session_process_buf(lp.se, &buf);
                break;
            }
            take(&buf);
            fuse_session_process_buf(lp.se, &buf);
        }
        pthread_mutex_lock(&lp.mu);
    }
out:
    pthread_mutex_unlock(&lp.mu);
    pthread_cleanup_pop(1);
    return NULL;
}

/* SIGINT, SIGTERM, SIGHUP while loop_run serves: the thread in loop_run
 * ends the loop itself.  (libfuse's handlers would mark the session
 * exited at once, and a serving thread's next read would then hand back
 * nothing: the loop would stop answering while the filesystem's own
 * threads may still wait on an answer.) */
static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
    got_signal = sig;
    sem_post(&lp.finish);
}

int loop_run(struct fuse_session *se, unsigned workers, unsigned spin_us,
             const struct loop_hooks *hooks)
{
    memset(&lp, 0, sizeof lp);
    lp.se = se;
    if (hooks) {
        static const struct fuse_custom_io io = {.read = dev_read, .writev = dev_writev};
        if (fuse_session_custom_io(se, &io, fuse_session_fd(se)) == 0)
            lp.hooks = *hooks;
        lp.hooks.stopping = hooks->stopping;
    }
    if (workers > 4096)
        workers = 4096;         /* (workers + 1 threads are counted below) */
    lp.max = workers;
    lp.spin_ns = (uint64_t)spin_us * 1000;
    if (lp.spin_ns) {
        int fd = fuse_session_fd(se);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
    pthread_mutex_init(&lp.mu, NULL);
    pthread_cond_init(&lp.turn, NULL);
    sem_init(&lp.finish, 0, 0);
    if (!(lp.threads = calloc(workers + 1, sizeof *lp.threads)))
        return -ENOMEM;
    pthread_mutex_lock(&lp.mu);
    add_thread();
    int started = lp.nthreads;
    pthread_mutex_unlock(&lp.mu);
    if (!started) {
        free(lp.threads);
        return -EAGAIN;
    }
    /* Signals land here (the serving threads block them); the timeout only
     * guards against one taken by another thread of the process. */
    static const int sigs[3] = { SIGINT, SIGTERM, SIGHUP };
    struct sigaction sa, old[3];
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    got_signal = 0;
    for (int i = 0; i < 3; i++)
        sigaction(sigs[i], &sa, &old[i]);
    while (!fuse_session_exited(se) && !got_signal) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_sec += 1;
        if (sem_timedwait(&lp.finish, &t) < 0 && errno != EINTR && errno != ETIMEDOUT)
            break;
    }
    /* Still serving: the filesystem stops what waits on requests. */
    if (lp.hooks.stopping)
        lp.hooks.stopping();
    fuse_session_exit(se);
    for (int i = 0; i < 3; i++)
        sigaction(sigs[i], &old[i], NULL);
    pthread_mutex_lock(&lp.mu);
    lp.stop = 1;
    pthread_cond_broadcast(&lp.turn);
    unsigned n = lp.nthreads;
    pthread_mutex_unlock(&lp.mu);
    for (unsigned i = 0; i < n; i++)
        pthread_cancel(lp.threads[i]);      /* acts only on a thread in read(2) */
    for (unsigned i = 0; i < n; i++)
        pthread_join(lp.threads[i], NULL);
    free(lp.threads);
    sem_destroy(&lp.finish);
    pthread_cond_destroy(&lp.turn);
    pthread_mutex_destroy(&lp.mu);
    return lp.err;
}
