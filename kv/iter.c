/*
 * iter.c - the memtable adapter and the merging iterator; see iter.h.
 *
 * The merging iterator keeps its children in a binary min-heap ordered by
 * the current entry of each valid child, so next() costs O(log n) and the
 * smallest entry is always at the root.  Invalid children are kept out of
 * the heap; their status is still reported.
 */
#include "iter.h"

#include <stdlib.h>

/* ---- memtable adapter ---- */

struct mtiter {
    iiter_t base;
    mt_iter_t *it;
};

#define MTI(x) ((struct mtiter *)(x))
#define CMTI(x) ((const struct mtiter *)(x))

static void mti_seek(iiter_t *it, const void *k, size_t kl, uint64_t tag) { mt_iter_seek(MTI(it)->it, k, kl, tag); }
static void mti_first(iiter_t *it) { mt_iter_seek_first(MTI(it)->it); }
static int mti_valid(const iiter_t *it) { return mt_iter_valid(CMTI(it)->it); }
static void mti_next(iiter_t *it) { mt_iter_next(MTI(it)->it); }
static const void *mti_key(const iiter_t *it, size_t *kl) { return mt_iter_key(CMTI(it)->it, kl); }
static uint64_t mti_tag(const iiter_t *it) { return mt_iter_tag(CMTI(it)->it); }
static const void *mti_value(const iiter_t *it, size_t *vl) { return mt_iter_value(CMTI(it)->it, vl); }
static int mti_status(const iiter_t *it) { (void)it; return 0; }
static void mti_destroy(iiter_t *it)
{
    mt_iter_free(MTI(it)->it);
    free(it);
}

static const struct iiter_ops mt_ops = {
    mti_seek, mti_first, mti_valid, mti_next, mti_key, mti_tag, mti_value, mti_status, mti_destroy,
};

iiter_t *iter_memtable(const memtable_t *m)
{
    struct mtiter *it = malloc(sizeof *it);
    if (!it)
        return NULL;
    it->it = mt_iter_new(m);
    if (!it->it) {
        free(it);
        return NULL;
    }
    it->base.ops = &mt_ops;
    return &it->base;
}

/* ---- merging iterator ---- */

/* A child's current entry, kept so that heap comparisons make no calls
 * through the child's operations (valid until the child moves). */
struct head {
    const void *k;
    size_t kl;
    uint64_t tag;
};

struct merge {
    iiter_t base;
    int err;          /* a child failed: the whole stream stops */
    int n;            /* children */
    int hn;           /* children in the heap (the valid ones) */
    iiter_t **child;
    int *heap;        /* indexes into child */
    struct head *cur; /* per child: its entry while it is in the heap */
};

#define MI(x) ((struct merge *)(x))
#define CMI(x) ((const struct merge *)(x))

/* Is child a before child b in table order (ties: lower index first)? */
static int before(const struct merge *m, int a, int b)
{
    const struct head *x = &m->cur[a], *y = &m->cur[b];
    int c = ikey_cmp(x->k, x->kl, x->tag, y->k, y->kl, y->tag);
    return c < 0 || (c == 0 && a < b);
}

/* Note child I's entry after it moved (it must be valid). */
static void load(struct merge *m, int i)
{
    iiter_t *c = m->child[i];
    m->cur[i].k = c->ops->key(c, &m->cur[i].kl);
    m->cur[i].tag = c->ops->tag(c);
}

static void sift_down(struct merge *m, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, s = i;
        if (l < m->hn && before(m, m->heap[l], m->heap[s]))
            s = l;
        if (r < m->hn && before(m, m->heap[r], m->heap[s]))
            s = r;
        if (s == i)
            return;
        int t = m->heap[i];
        m->heap[i] = m->heap[s];
        m->heap[s] = t;
        i = s;
    }
}

/* A child that stopped on an error stops the merge: going on with the
 * others would show a store with that child's entries missing. */
static int failed(struct merge *m, iiter_t *c)
{
    int rc = c->ops->status(c);
    if (rc) {
        m->err = rc;
        m->hn = 0;
    }
    return rc;
}

static void rebuild(struct merge *m)
{
    m->hn = 0;
    m->err = 0;
    for (int i = 0; i < m->n; i++) {
        if (m->child[i]->ops->valid(m->child[i])) {
            load(m, i);
            m->heap[m->hn++] = i;
        }
        else if (failed(m, m->child[i]))
            return;
    }
    for (int i = m->hn / 2 - 1; i >= 0; i--)
        sift_down(m, i);
}

static void mg_seek(iiter_t *it, const void *k, size_t kl, uint64_t tag)
{
    struct merge *m = MI(it);
    for (int i = 0; i < m->n; i++)
        m->child[i]->ops->seek(m->child[i], k, kl, tag);
    rebuild(m);
}

static void mg_first(iiter_t *it)
{
    struct merge *m = MI(it);
    for (int i = 0; i < m->n; i++)
        m->child[i]->ops->seek_first(m->child[i]);
    rebuild(m);
}

static int mg_valid(const iiter_t *it)
{
    return CMI(it)->hn > 0;
}

static void mg_next(iiter_t *it)
{
    struct merge *m = MI(it);
    iiter_t *c = m->child[m->heap[0]];
    c->ops->next(c);
    if (!c->ops->valid(c)) {
        if (failed(m, c))
            return;
        m->heap[0] = m->heap[--m->hn];
    } else {
        load(m, m->heap[0]);
    }
    sift_down(m, 0);
}

static const void *mg_key(const iiter_t *it, size_t *kl)
{
    const struct head *h = &CMI(it)->cur[CMI(it)->heap[0]];
    *kl = h->kl;
    return h->k;
}

static uint64_t mg_tag(const iiter_t *it)
{
    return CMI(it)->cur[CMI(it)->heap[0]].tag;
}

static const void *mg_value(const iiter_t *it, size_t *vl)
{
    iiter_t *c = CMI(it)->child[CMI(it)->heap[0]];
    return c->ops->value(c, vl);
}

static int mg_status(const iiter_t *it)
{
    const struct merge *m = CMI(it);
    if (m->err)
        return m->err;
    for (int i = 0; i < m->n; i++) {
        int rc = m->child[i]->ops->status(m->child[i]);
        if (rc)
            return rc;
    }
    return 0;
}

static void mg_destroy(iiter_t *it)
{
    struct merge *m = MI(it);
    for (int i = 0; i < m->n; i++)
        iter_free(m->child[i]);
    free(m->child);
    free(m->heap);
    free(m->cur);
    free(m);
}

static const struct iiter_ops merge_ops = {
    mg_seek, mg_first, mg_valid, mg_next, mg_key, mg_tag, mg_value, mg_status, mg_destroy,
};

iiter_t *iter_merge(iiter_t **child, int n)
{
    struct merge *m = calloc(1, sizeof *m);
    if (m) {
        m->child = malloc(sizeof *m->child * (size_t)(n ? n : 1));
        m->heap = malloc(sizeof *m->heap * (size_t)(n ? n : 1));
        m->cur = malloc(sizeof *m->cur * (size_t)(n ? n : 1));
    }
    if (!m || !m->child || !m->heap || !m->cur) {
        for (int i = 0; i < n; i++)
            iter_free(child[i]);
        if (m) {
            free(m->child);
            free(m->heap);
            free(m->cur);
            free(m);
        }
        return NULL;
    }
    for (int i = 0; i < n; i++)
        m->child[i] = child[i];
    m->n = n;
    m->base.ops = &merge_ops;
    return &m->base;
}
