/*
 * memtable.c - skip lists over an arena; see memtable.h for the contract.
 *
 * A node is one arena allocation: the header, its tower of next pointers,
 * then the key bytes and the value bytes.  Towers are 1..MAX_HEIGHT high with
 * a branching factor of 4.  The single writer builds a node completely, then
 * links it bottom-up with release stores; a reader that sees a pointer
 * (acquire load) therefore sees the whole node.  A list head's height only
 * grows; a reader that sees a new height before the links simply finds NULL
 * there and drops a level.
 *
 * Segments: a large memtable is several skip lists ("segments") of about
 * seg_bytes each, filled one after the other, so an insert searches a list
 * of a few megabytes (it stays in the caches) instead of one of the whole
 * memtable.  Every entry of a newer segment has a higher sequence number
 * than every entry of an older one (the writer adds in sequence order), so a
 * lookup searches the segments newest first and stops at the first visible
 * entry; each segment has its own bloom filter, besides the one over the
 * whole memtable, so that only segments that may hold the key are searched.
 * Iterators merge the segments.  A segment is published (segs[n], then nseg
 * with a release store) only once built.
 */
#include "memtable.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bloom.h"

#define MAX_HEIGHT   12
#define MAX_SEGS     16
#define ARENA_BLOCK  (64 * 1024)
#define ARENA_ALIGN  8
#define FILTER_WORDS 8              /* 512-bit filter blocks */
#define FILTER_PROBES 6

struct node {
    uint64_t tag;
    uint64_t vlen;
    uint32_t klen;
    uint32_t height;
    _Atomic(struct node *) next[];   /* height entries, then key, then value */
};

struct ablock {
    struct ablock *prev;
    /* payload follows */
};

struct filter {
    _Atomic uint64_t *w;             /* FILTER_WORDS-word blocks, or NULL */
    uint64_t blocks;
};

struct seg {
    struct node *head;
    atomic_int height;               /* of the tallest tower in use */
    struct filter f;
};

struct memtable {
    atomic_int ref;
    struct filter f;                 /* over the whole memtable */
    _Atomic size_t memory;
    _Atomic uint64_t count;
    uint64_t rnd;                    /* writer-only */
    struct ablock *blocks;           /* writer-only: arena blocks, newest first */
    char *cur;                       /* writer-only: free space in the newest block */
    size_t left;
    size_t seg_bytes;                /* start a new segment after this many; 0 = one */
    size_t seg_filter;               /* bytes of each segment's filter */
    size_t seg_start;                /* writer-only: memory when the last one began */
    atomic_int nseg;
    struct seg *segs[MAX_SEGS];
};

struct mt_iter {
    const memtable_t *m;
    int n;                           /* segments seen at the last seek */
    int best;                        /* the segment at the smallest entry, -1: none */
    struct node *at[MAX_SEGS];
};

static inline const uint8_t *nkey(const struct node *n)
{
    return (const uint8_t *)&n->next[n->height];
}

static inline const uint8_t *nval(const struct node *n)
{
    return nkey(n) + n->klen;
}

/* Carve SIZE bytes from the arena.  Large requests get a block of their own
 * so the tail of the shared block is not wasted. */
static void *arena_alloc(memtable_t *m, size_t size)
{
    size = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    atomic_fetch_add_explicit(&m->memory, size, memory_order_relaxed);
    if (size <= m->left) {
        void *p = m->cur;
        m->cur += size;
        m->left -= size;
        return p;
    }
    size_t bsize = size > ARENA_BLOCK / 4 ? size : ARENA_BLOCK;
    struct ablock *b = malloc(sizeof *b + bsize);
    if (!b)
        return NULL;
    b->prev = m->blocks;
    m->blocks = b;
    char *p = (char *)(b + 1);
    if (bsize == ARENA_BLOCK) {
        m->cur = p + size;
        m->left = bsize - size;
    }
    return p;
}

static inline int node_cmp(const struct node *n, const void *key, size_t klen, uint64_t tag)
{
    return ikey_cmp(nkey(n), n->klen, n->tag, key, klen, tag);
}

static struct node *new_node(memtable_t *m, int height, size_t klen, size_t vlen)
{
    size_t size = sizeof(struct node) + (size_t)height * sizeof(struct node *) + klen + vlen;
    struct node *n = arena_alloc(m, size);
    if (!n)
        return NULL;
    n->height = (uint32_t)height;
    n->klen = (uint32_t)klen;
    n->vlen = vlen;
    for (int i = 0; i < height; i++)
        atomic_init(&n->next[i], NULL);
    return n;
}

static int filter_init(struct filter *f, size_t bytes)
{
    f->w = NULL;
    f->blocks = 0;
    if (!bytes)
        return 0;
    f->blocks = bytes / (FILTER_WORDS * 8) ? bytes / (FILTER_WORDS * 8) : 1;
    f->w = calloc(f->blocks * FILTER_WORDS, sizeof *f->w);
    return f->w ? 0 : -ENOMEM;
}

/* A new, empty segment: its head node comes from the arena. */
static struct seg *seg_new(memtable_t *m, size_t filter_bytes)
{
    struct seg *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    if (filter_init(&g->f, filter_bytes) < 0 || !(g->head = new_node(m, MAX_HEIGHT, 0, 0))) {
        free(g->f.w);
        free(g);
        return NULL;
    }
    atomic_init(&g->height, 1);
    return g;
}

memtable_t *mt_new(size_t filter_bytes, size_t seg_bytes)
{
    memtable_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->rnd = 0x9E3779B97F4A7C15ULL ^ (uintptr_t)m;
    atomic_init(&m->ref, 1);
    m->seg_bytes = seg_bytes;
    if (seg_bytes && filter_bytes)
        m->seg_filter = filter_bytes / 8 > 64 ? filter_bytes / 8 : 64;
    if (filter_init(&m->f, filter_bytes) < 0 || !(m->segs[0] = seg_new(m, m->seg_filter))) {
        mt_unref(m);
        return NULL;
    }
    atomic_init(&m->nseg, 1);
    return m;
}

void mt_ref(memtable_t *m)
{
    atomic_fetch_add_explicit(&m->ref, 1, memory_order_relaxed);
}

void mt_unref(memtable_t *m)
{
    if (!m || atomic_fetch_sub_explicit(&m->ref, 1, memory_order_acq_rel) != 1)
        return;
    struct ablock *b = m->blocks;
    while (b) {
        struct ablock *p = b->prev;
        free(b);
        b = p;
    }
    for (int i = 0; i < MAX_SEGS; i++) {
        if (m->segs[i]) {
            free(m->segs[i]->f.w);
            free(m->segs[i]);
        }
    }
    free(m->f.w);
    free(m);
}

size_t mt_memory(const memtable_t *m)
{
    return atomic_load_explicit(&m->memory, memory_order_relaxed);
}

uint64_t mt_count(const memtable_t *m)
{
    return atomic_load_explicit(&m->count, memory_order_relaxed);
}

static int random_height(memtable_t *m)
{
    int h = 1;
    for (;;) {
        m->rnd ^= m->rnd << 13;
        m->rnd ^= m->rnd >> 7;
        m->rnd ^= m->rnd << 17;
        if (h >= MAX_HEIGHT || (m->rnd & 3) != 0)
            return h;
        h++;
    }
}

/*
 * The filters: blocked bloom filters.  A key's hash picks one 512-bit
 * block (one cache line) and FILTER_PROBES bits in it.  The single writer
 * sets a key's bits before it links the key's node, and a reader that can
 * see that node's sequence number synchronised with the writer after both,
 * so a filter never says "absent" of a key the reader may see.
 */
static uint64_t key_hash(const void *key, size_t klen)
{
    uint64_t h = bloom_hash(key, klen);
    return (h ^ (h << 29)) * 0x9E3779B97F4A7C15ull;
}

/* Only the single writer sets bits, so a plain load and store will do: a
 * locked read-modify-write per probe costs more than the rest of the add. */
static void filter_add(struct filter *f, uint64_t h)
{
    uint64_t block = (h >> 32) % f->blocks * FILTER_WORDS, bits = h * 0xBF58476D1CE4E5B9ull;
    for (int i = 0; i < FILTER_PROBES; i++, bits >>= 9) {
        _Atomic uint64_t *w = &f->w[block + (bits & 511) / 64];
        atomic_store_explicit(w, atomic_load_explicit(w, memory_order_relaxed) | 1ull << (bits & 63),
                              memory_order_relaxed);
    }
}

static int filter_may_hold(const struct filter *f, uint64_t h)
{
    if (!f->w)
        return 1;
    uint64_t block = (h >> 32) % f->blocks * FILTER_WORDS, bits = h * 0xBF58476D1CE4E5B9ull;
    for (int i = 0; i < FILTER_PROBES; i++, bits >>= 9)
        if (!(atomic_load_explicit(&f->w[block + (bits & 511) / 64], memory_order_relaxed) &
              (1ull << (bits & 63))))
            return 0;
    return 1;
}

/*
 * The first node of segment G >= (key, tag), or NULL.  When PREV is given,
 * it receives at each level the last node < (key, tag), which is where an
 * insert links in.
 */
static struct node *find_ge(const struct seg *g, const void *key, size_t klen,
                            uint64_t tag, struct node **prev)
{
    struct node *x = g->head, *ge = NULL;   /* ge: a node known to be >= */
    int level = atomic_load_explicit(&g->height, memory_order_relaxed) - 1;
    for (;;) {
        struct node *nx = atomic_load_explicit(&x->next[level], memory_order_acquire);
        /* A node already found >= at the level above needs no second look. */
        if (nx && nx != ge) {
            /* Should NX be >= KEY, the next look is one level down from X:
             * start that load now, while NX's is under way. */
            if (level > 0)
                __builtin_prefetch(atomic_load_explicit(&x->next[level - 1], memory_order_relaxed));
            if (node_cmp(nx, key, klen, tag) < 0) {
                x = nx;
                continue;
            }
            ge = nx;
        }
        if (prev)
            prev[level] = x;
        if (level == 0)
            return nx;
        level--;
    }
}

int mt_add(memtable_t *m, uint64_t seq, int type,
           const void *key, size_t klen, const void *val, size_t vlen)
{
    assert(seq <= SEQ_MAX);
    uint64_t tag = TAG(seq, type);
    if (type != KT_PUT)
        vlen = 0;
    int ns = atomic_load_explicit(&m->nseg, memory_order_relaxed);
    if (m->seg_bytes && ns < MAX_SEGS && mt_memory(m) - m->seg_start >= m->seg_bytes) {
        /* The current segment is full: readers see the new one only once
         * it is whole. */
        struct seg *g = seg_new(m, m->seg_filter);
        if (!g)
            return -ENOMEM;
        m->segs[ns] = g;
        atomic_store_explicit(&m->nseg, ns + 1, memory_order_release);
        m->seg_start = mt_memory(m);
        ns++;
    }
    struct seg *g = m->segs[ns - 1];
    struct node *prev[MAX_HEIGHT];
    find_ge(g, key, klen, tag, prev);
    uint64_t h = m->f.w || g->f.w ? key_hash(key, klen) : 0;
    if (m->f.w)
        filter_add(&m->f, h);
    if (g->f.w)
        filter_add(&g->f, h);

    int height = random_height(m);
    struct node *n = new_node(m, height, klen, vlen);
    if (!n)
        return -ENOMEM;
    n->tag = tag;
    memcpy((uint8_t *)nkey(n), key, klen);
    if (vlen)
        memcpy((uint8_t *)nval(n), val, vlen);

    int cur = atomic_load_explicit(&g->height, memory_order_relaxed);
    if (height > cur) {
        for (int i = cur; i < height; i++)
            prev[i] = g->head;
        atomic_store_explicit(&g->height, height, memory_order_relaxed);
    }
    for (int i = 0; i < height; i++) {
        struct node *nx = atomic_load_explicit(&prev[i]->next[i], memory_order_relaxed);
        atomic_store_explicit(&n->next[i], nx, memory_order_relaxed);
        atomic_store_explicit(&prev[i]->next[i], n, memory_order_release);
    }
    atomic_fetch_add_explicit(&m->count, 1, memory_order_relaxed);
    return 0;
}

int mt_get(const memtable_t *m, const void *key, size_t klen, uint64_t seq,
           const void **val, size_t *vlen)
{
    /* An empty memtable (a store just opened, or at rest) answers without
     * touching its filter, whose probes would each miss the cache. */
    if (atomic_load_explicit(&m->count, memory_order_relaxed) == 0)
        return -1;
    uint64_t h = key_hash(key, klen);
    if (!filter_may_hold(&m->f, h))
        return -1;
    int ns = atomic_load_explicit(&m->nseg, memory_order_acquire);
    /* Newest segment first: its visible entries are the newest. */
    for (int i = ns - 1; i >= 0; i--) {
        const struct seg *g = m->segs[i];
        if (ns > 1 && !filter_may_hold(&g->f, h))
            continue;
        struct node *n = find_ge(g, key, klen, TAG(seq, 0xff), NULL);
        if (!n || n->klen != klen || (klen && memcmp(nkey(n), key, klen) != 0))
            continue;
        if (TAG_TYPE(n->tag) != KT_PUT)
            return KT_DEL;
        *val = nval(n);
        *vlen = n->vlen;
        return KT_PUT;
    }
    return -1;
}

/* ---- iterators: a merge of the segments ---- */

static void pick_best(mt_iter_t *it)
{
    int b = -1;
    for (int i = 0; i < it->n; i++) {
        const struct node *x = it->at[i];
        if (x && (b < 0 || ikey_cmp(nkey(x), x->klen, x->tag, nkey(it->at[b]), it->at[b]->klen,
                                    it->at[b]->tag) < 0))
            b = i;
    }
    it->best = b;
}

mt_iter_t *mt_iter_new(const memtable_t *m)
{
    mt_iter_t *it = calloc(1, sizeof *it);
    if (it) {
        it->m = m;
        it->best = -1;   /* not positioned: the seeks count the segments */
    }
    return it;
}

void mt_iter_free(mt_iter_t *it)
{
    free(it);
}

/*
 * find_ge in every segment at once: the searches take one step each in
 * turn, and a search that moves to a node asks for the node it compares
 * next ahead of time, so the cache misses of the segments overlap instead of
 * adding up.
 */
static void find_ge_all(const memtable_t *m, int n, const void *key, size_t klen, uint64_t tag,
                        struct node **out)
{
    struct node *x[MAX_SEGS], *ge[MAX_SEGS];
    int level[MAX_SEGS], left = n;
    for (int i = 0; i < n; i++) {
        x[i] = m->segs[i]->head;
        ge[i] = NULL;
        level[i] = atomic_load_explicit(&m->segs[i]->height, memory_order_relaxed) - 1;
    }
    while (left) {
        for (int i = 0; i < n; i++) {
            if (level[i] < 0)
                continue;
            struct node *nx = atomic_load_explicit(&x[i]->next[level[i]], memory_order_acquire);
            if (nx && nx != ge[i]) {
                if (node_cmp(nx, key, klen, tag) < 0) {
                    x[i] = nx;
                    __builtin_prefetch(atomic_load_explicit(&nx->next[level[i]], memory_order_relaxed));
                    continue;
                }
                ge[i] = nx;
            }
            if (level[i] == 0) {
                out[i] = nx;
                level[i] = -1;
                left--;
            } else {
                level[i]--;
                __builtin_prefetch(atomic_load_explicit(&x[i]->next[level[i]], memory_order_relaxed));
            }
        }
    }
}

void mt_iter_seek(mt_iter_t *it, const void *key, size_t klen, uint64_t tag)
{
    it->n = atomic_load_explicit(&it->m->nseg, memory_order_acquire);
    if (it->n == 1)
        it->at[0] = find_ge(it->m->segs[0], key, klen, tag, NULL);
    else
        find_ge_all(it->m, it->n, key, klen, tag, it->at);
    pick_best(it);
}

void mt_iter_seek_first(mt_iter_t *it)
{
    it->n = atomic_load_explicit(&it->m->nseg, memory_order_acquire);
    for (int i = 0; i < it->n; i++)
        it->at[i] = atomic_load_explicit(&it->m->segs[i]->head->next[0], memory_order_acquire);
    pick_best(it);
}

int mt_iter_valid(const mt_iter_t *it)
{
    return it->best >= 0;
}

void mt_iter_next(mt_iter_t *it)
{
    assert(it->best >= 0);
    struct node **x = &it->at[it->best];
    *x = atomic_load_explicit(&(*x)->next[0], memory_order_acquire);
    /* Scans walk nodes scattered over the arena, a cache miss each: ask
     * for the one after this ahead of time. */
    if (*x)
        __builtin_prefetch(atomic_load_explicit(&(*x)->next[0], memory_order_relaxed));
    if (it->n == 1)
        it->best = *x ? 0 : -1;
    else
        pick_best(it);
}

const void *mt_iter_key(const mt_iter_t *it, size_t *klen)
{
    *klen = it->at[it->best]->klen;
    return nkey(it->at[it->best]);
}

uint64_t mt_iter_tag(const mt_iter_t *it)
{
    return it->at[it->best]->tag;
}

const void *mt_iter_value(const mt_iter_t *it, size_t *vlen)
{
    *vlen = it->at[it->best]->vlen;
    return nval(it->at[it->best]);
}
