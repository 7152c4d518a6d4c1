/*
 * loop.c - stashfs's request loop; see loop.h for the contract.
 *
 * The loop thread reads one request at a time into a buffer of the
 * session's size.  A request for the pool takes its buffer with it (the
 * loop reads the next one into a spare), and the worker that answers it
 * puts the buffer back on the spare list, so buffers are reused rather than
 * allocated per request.  Workers are started when a request waits and
 * none is idle, up to the limit; they stay until the loop ends.
 */
#define FUSE_USE_VERSION 312

#include "loop.h"

#include <errno.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

struct job {
    struct fuse_buf buf;
    struct job *next;
};

static struct {
    struct fuse_session *se;
    pthread_mutex_t mu;
    pthread_cond_t work;             /* a job is queued, or the loop ends */
    struct job *head, **tail;        /* queued jobs, oldest first */
    struct job *spare;               /* answered jobs, buffers kept */
    pthread_t *threads;
    unsigned nthreads, max, idle;
    int stop;
} pool;

/* Does the request in BUF go to the pool?  Reads the kernel's header only:
 * the opcode, and for READ and WRITE the size of the transfer. */
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
        return ((const struct fuse_read_in *)(in + 1))->size > POOL_MIN_IO;
    case FUSE_WRITE:
        if (buf->size < sizeof *in + sizeof(struct fuse_write_in))
            return 0;
        return ((const struct fuse_write_in *)(in + 1))->size > POOL_MIN_IO;
    default:
        return 0;
    }
}

static void *worker(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (!pool.head && !pool.stop) {
            pool.idle++;
            pthread_cond_wait(&pool.work, &pool.mu);
            pool.idle--;
        }
        struct job *j = pool.head;
        if (!j)
            break;                      /* stopping, and nothing is left */
        if (!(pool.head = j->next))
            pool.tail = &pool.head;
        pthread_mutex_unlock(&pool.mu);
        fuse_session_process_buf(pool.se, &j->buf);
        pthread_mutex_lock(&pool.mu);
        j->next = pool.spare;
        pool.spare = j;
    }
    pthread_mutex_unlock(&pool.mu);
    return NULL;
}

/* Start one more worker, signals blocked.  Called with pool.mu held.
 * Returns 0 or -1 (no thread: the caller answers the request itself). */
static int add_worker(void)
{
    if (pool.nthreads == pool.max)
        return 0;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&pool.threads[pool.nthreads], NULL, worker, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return pool.nthreads ? 0 : -1;
    pool.nthreads++;
    return 0;
}

/* Queue J for the pool.  Returns 0, or -1 if no worker could be started. */
static int hand_off(struct job *j)
{
    pthread_mutex_lock(&pool.mu);
    int rc = 0;
    if (pool.idle == 0)
        rc = add_worker();
    if (rc == 0) {
        j->next = NULL;
        *pool.tail = j;
        pool.tail = &j->next;
        pthread_cond_signal(&pool.work);
    }
    pthread_mutex_unlock(&pool.mu);
    return rc;
}

/* A job for the next request: a spare, or a new one whose buffer libfuse
 * allocates on the first read into it. */
static struct job *take_job(void)
{
    pthread_mutex_lock(&pool.mu);
    struct job *j = pool.spare;
    if (j)
        pool.spare = j->next;
    pthread_mutex_unlock(&pool.mu);
    if (!j)
        j = calloc(1, sizeof *j);
    return j;
}

int loop_run(struct fuse_session *se, unsigned workers)
{
    memset(&pool, 0, sizeof pool);
    pool.se = se;
    pool.max = workers;
    pool.tail = &pool.head;
    pthread_mutex_init(&pool.mu, NULL);
    pthread_cond_init(&pool.work, NULL);
    if (workers && !(pool.threads = calloc(workers, sizeof *pool.threads)))
        return -ENOMEM;
    int rc = 0;
    struct job *j = NULL;
    while (!fuse_session_exited(se)) {
        if (!j && !(j = take_job())) {
            rc = -ENOMEM;
            break;
        }
        int n = fuse_session_receive_buf(se, &j->buf);
        if (n == -EINTR)
            continue;
        if (n <= 0) {
            rc = n;
            break;
        }
        if (workers && slow(&j->buf) && hand_off(j) == 0) {
            j = NULL;
            continue;
        }
        fuse_session_process_buf(se, &j->buf);
    }
    /* Let the pool answer what it holds, then end it. */
    pthread_mutex_lock(&pool.mu);
    pool.stop = 1;
    pthread_cond_broadcast(&pool.work);
    pthread_mutex_unlock(&pool.mu);
    for (unsigned i = 0; i < pool.nthreads; i++)
        pthread_join(pool.threads[i], NULL);
    if (j) {
        free(j->buf.mem);
        free(j);
    }
    while ((j = pool.spare)) {
        pool.spare = j->next;
        free(j->buf.mem);
        free(j);
    }
    free(pool.threads);
    pthread_cond_destroy(&pool.work);
    pthread_mutex_destroy(&pool.mu);
    return rc;
}
