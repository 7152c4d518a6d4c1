/*
 * memtable.c - skip list over an arena; see memtable.h for the contract.
 *
 * A node is one arena allocation: the header, its tower of next pointers,
 * then the key bytes and the value bytes.  Towers are 1..MAX_HEIGHT high with
 * a branching factor of 4.  The single writer builds a node completely, then
 * links it bottom-up with release stores; a reader that sees a pointer
 * (acquire load) therefore sees the whole node.  The list head's height only
 * grows; a reader that sees a new height before the links simply finds NULL
 * there and drops a level.
 */
#include "memtable.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bloom.h"

#define MAX_HEIGHT   12
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

struct memtable {
    atomic_int ref;
    _Atomic uint64_t *filter;        /* FILTER_WORDS-word blocks, or NULL */
    uint64_t fblocks;
    atomic_int height;               /* of the tallest tower in use */
    _Atomic size_t memory;
    _Atomic uint64_t count;
    uint64_t rnd;                    /* writer-only */
    struct ablock *blocks;           /* writer-only: arena blocks, newest first */
    char *cur;                       /* writer-only: free space in the newest block */
    size_t left;
    struct node *head;
};

struct mt_iter {
    const memtable_t *m;
    struct node *n;
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

int ikey_cmp(const void *ka, size_t kalen, uint64_t taga,
             const void *kb, size_t kblen, uint64_t tagb)
{
    size_t n = kalen < kblen ? kalen : kblen;
    int c = n ? memcmp(ka, kb, n) : 0;
    if (c)
        return c;
    if (kalen != kblen)
        return kalen < kblen ? -1 : 1;
    if (taga != tagb)
        return taga > tagb ? -1 : 1;   /* newer first */
    return 0;
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

memtable_t *mt_new(size_t filter_bytes)
{
    memtable_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    if (filter_bytes) {
        m->fblocks = filter_bytes / (FILTER_WORDS * 8) ? filter_bytes / (FILTER_WORDS * 8) : 1;
        m->filter = calloc(m->fblocks * FILTER_WORDS, sizeof *m->filter);
        if (!m->filter) {
            free(m);
            return NULL;
        }
    }
    atomic_init(&m->ref, 1);
    atomic_init(&m->height, 1);
    m->rnd = 0x9E3779B97F4A7C15ULL ^ (uintptr_t)m;
    m->head = new_node(m, MAX_HEIGHT, 0, 0);
    if (!m->head) {
        free(m->filter);
        free(m);
        return NULL;
    }
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
    free(m->filter);
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
 * The filter: a blocked bloom filter.  A key's hash picks one 512-bit
 * block (one cache line) and FILTER_PROBES bits in it.  The single writer
 * sets a key's bits before it links the key's node, and a reader that can
 * see that node's sequence number synchronised with the writer after both,
 * so the filter never says "absent" of a key the reader may see.
 */
static void filter_bits(const memtable_t *m, const void *key, size_t klen, uint64_t *block, uint64_t *bits)
{
    uint64_t h = bloom_hash(key, klen);
    h = (h ^ (h << 29)) * 0x9E3779B97F4A7C15ull;
    *block = (h >> 32) % m->fblocks * FILTER_WORDS;
    *bits = h * 0xBF58476D1CE4E5B9ull;
}

static void filter_add(memtable_t *m, const void *key, size_t klen)
{
    uint64_t block, bits;
    filter_bits(m, key, klen, &block, &bits);
    for (int i = 0; i < FILTER_PROBES; i++, bits >>= 9)
        atomic_fetch_or_explicit(&m->filter[block + (bits & 511) / 64], 1ull << (bits & 63),
                                 memory_order_relaxed);
}

static int filter_may_hold(const memtable_t *m, const void *key, size_t klen)
{
    uint64_t block, bits;
    filter_bits(m, key, klen, &block, &bits);
    for (int i = 0; i < FILTER_PROBES; i++, bits >>= 9)
        if (!(atomic_load_explicit(&m->filter[block + (bits & 511) / 64], memory_order_relaxed) &
              (1ull << (bits & 63))))
            return 0;
    return 1;
}

/*
 * The first node >= (key, tag), or NULL.  When PREV is given, it receives at
 * each level the last node < (key, tag), which is where an insert links in.
 */
static struct node *find_ge(const memtable_t *m, const void *key, size_t klen,
                            uint64_t tag, struct node **prev)
{
    struct node *x = m->head, *ge = NULL;   /* ge: a node known to be >= */
    int level = atomic_load_explicit(&m->height, memory_order_relaxed) - 1;
    for (;;) {
        struct node *nx = atomic_load_explicit(&x->next[level], memory_order_acquire);
        /* A node already found >= at the level above needs no second look. */
        if (nx && nx != ge) {
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
    struct node *prev[MAX_HEIGHT];
    find_ge(m, key, klen, tag, prev);
    if (m->filter)
        filter_add(m, key, klen);

    int h = random_height(m);
    struct node *n = new_node(m, h, klen, vlen);
    if (!n)
        return -ENOMEM;
    n->tag = tag;
    memcpy((uint8_t *)nkey(n), key, klen);
    if (vlen)
        memcpy((uint8_t *)nval(n), val, vlen);

    int cur = atomic_load_explicit(&m->height, memory_order_relaxed);
    if (h > cur) {
        for (int i = cur; i < h; i++)
            prev[i] = m->head;
        atomic_store_explicit(&m->height, h, memory_order_relaxed);
    }
    for (int i = 0; i < h; i++) {
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
    if (m->filter && !filter_may_hold(m, key, klen))
        return -1;
    struct node *n = find_ge(m, key, klen, TAG(seq, 0xff), NULL);
    if (!n || n->klen != klen || (klen && memcmp(nkey(n), key, klen) != 0))
        return -1;
    if (TAG_TYPE(n->tag) != KT_PUT)
        return KT_DEL;
    *val = nval(n);
    *vlen = n->vlen;
    return KT_PUT;
}

mt_iter_t *mt_iter_new(const memtable_t *m)
{
    mt_iter_t *it = calloc(1, sizeof *it);
    if (it)
        it->m = m;
    return it;
}

void mt_iter_free(mt_iter_t *it)
{
    free(it);
}

void mt_iter_seek(mt_iter_t *it, const void *key, size_t klen, uint64_t tag)
{
    it->n = find_ge(it->m, key, klen, tag, NULL);
}

void mt_iter_seek_first(mt_iter_t *it)
{
    it->n = atomic_load_explicit(&it->m->head->next[0], memory_order_acquire);
}

int mt_iter_valid(const mt_iter_t *it)
{
    return it->n != NULL;
}

void mt_iter_next(mt_iter_t *it)
{
    assert(it->n);
    it->n = atomic_load_explicit(&it->n->next[0], memory_order_acquire);
}

const void *mt_iter_key(const mt_iter_t *it, size_t *klen)
{
    *klen = it->n->klen;
    return nkey(it->n);
}

uint64_t mt_iter_tag(const mt_iter_t *it)
{
    return it->n->tag;
}

const void *mt_iter_value(const mt_iter_t *it, size_t *vlen)
{
    *vlen = it->n->vlen;
    return nval(it->n);
}
