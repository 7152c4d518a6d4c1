/*
 * cache.c - sharded LRU block cache; see cache.h.
 *
 * An entry is "in the cache" while it is in its shard's hash table and LRU
 * list; the cache itself holds one reference on it then.  Eviction and
 * replacement drop that reference; whoever drops the last one frees it.
 */
#include "cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define SHARDS 16

struct cache_entry {
    uint64_t file, off;
    void *data;
    size_t len;
    int refs;                        /* under the shard lock */
    int in_cache;
    struct cache_entry *hnext;       /* hash chain */
    struct cache_entry *prev, *next; /* LRU list, most recent at head.next */
};

struct shard {
    pthread_mutex_t mu;
    size_t capacity, used;
    struct cache_entry **table;
    size_t nbuckets, count;
    struct cache_entry lru;          /* sentinel */
};

struct sst_cache {
    struct shard s[SHARDS];
    _Atomic uint64_t hits, misses;
};

static uint64_t mix(uint64_t file, uint64_t off)
{
    uint64_t h = file * 0x9E3779B97F4A7C15ULL ^ off * 0xC2B2AE3D27D4EB4FULL;
    h ^= h >> 31;
    return h * 0x94D049BB133111EBULL;
}

sst_cache_t *sst_cache_new(size_t capacity)
{
    sst_cache_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    for (int i = 0; i < SHARDS; i++) {
        struct shard *s = &c->s[i];
        pthread_mutex_init(&s->mu, NULL);
        s->capacity = (capacity + SHARDS - 1) / SHARDS;
        s->lru.next = s->lru.prev = &s->lru;
        s->nbuckets = 256;
        s->table = calloc(s->nbuckets, sizeof *s->table);
        if (!s->table) {
            for (int j = 0; j <= i; j++)
                free(c->s[j].table);
            free(c);
            return NULL;
        }
    }
    return c;
}

static void entry_free(struct cache_entry *e)
{
    free(e->data);
    free(e);
}

void sst_cache_free(sst_cache_t *c)
{
    if (!c)
        return;
    for (int i = 0; i < SHARDS; i++) {
        struct shard *s = &c->s[i];
        struct cache_entry *e = s->lru.next;
        while (e != &s->lru) {
            struct cache_entry *n = e->next;
            entry_free(e);
            e = n;
        }
        free(s->table);
        pthread_mutex_destroy(&s->mu);
    }
    free(c);
}

static struct shard *shard_of(sst_cache_t *c, uint64_t h)
{
    return &c->s[h >> 60];
}

static struct cache_entry **slot(struct shard *s, uint64_t h, uint64_t file, uint64_t off)
{
    struct cache_entry **p = &s->table[h % s->nbuckets];
    while (*p && ((*p)->file != file || (*p)->off != off))
        p = &(*p)->hnext;
    return p;
}

static void lru_unlink(struct cache_entry *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
}

static void lru_push(struct shard *s, struct cache_entry *e)
{
    e->next = s->lru.next;
    e->prev = &s->lru;
    e->next->prev = e;
    s->lru.next = e;
}

/* Take E out of the table and list; returns 1 if the caller must free it. */
static int remove_entry(struct shard *s, struct cache_entry *e)
{
    uint64_t h = mix(e->file, e->off);
    struct cache_entry **p = slot(s, h, e->file, e->off);
    if (*p == e)
        *p = e->hnext;
    lru_unlink(e);
    s->used -= e->len;
    s->count--;
    e->in_cache = 0;
    return --e->refs == 0;
}

static void grow(struct shard *s)
{
    size_t n = s->nbuckets * 2;
    struct cache_entry **t = calloc(n, sizeof *t);
    if (!t)
        return;   /* longer chains, still correct */
    for (size_t i = 0; i < s->nbuckets; i++) {
        struct cache_entry *e = s->table[i];
        while (e) {
            struct cache_entry *nx = e->hnext;
            size_t b = mix(e->file, e->off) % n;
            e->hnext = t[b];
            t[b] = e;
            e = nx;
        }
    }
    free(s->table);
    s->table = t;
    s->nbuckets = n;
}

cache_entry_t *sst_cache_lookup(sst_cache_t *c, uint64_t file, uint64_t off)
{
    uint64_t h = mix(file, off);
    struct shard *s = shard_of(c, h);
    pthread_mutex_lock(&s->mu);
    struct cache_entry *e = *slot(s, h, file, off);
    if (e) {
        e->refs++;
        lru_unlink(e);
        lru_push(s, e);
    }
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_add_explicit(e ? &c->hits : &c->misses, 1, memory_order_relaxed);
    return e;
}

cache_entry_t *sst_cache_insert(sst_cache_t *c, uint64_t file, uint64_t off, void *data, size_t len)
{
    struct cache_entry *e = calloc(1, sizeof *e);
    if (!e) {
        free(data);
        return NULL;
    }
    e->file = file;
    e->off = off;
    e->data = data;
    e->len = len;
    e->refs = 1;                     /* the caller's */
    uint64_t h = mix(file, off);
    struct shard *s = shard_of(c, h);
    struct cache_entry *dead = NULL;
    pthread_mutex_lock(&s->mu);
    if (len <= s->capacity) {
        struct cache_entry **p = slot(s, h, file, off);
        if (*p) {
            struct cache_entry *old = *p;
            if (remove_entry(s, old)) {
                old->hnext = dead;
                dead = old;
            }
        }
        /* Make room: drop least recently used entries. */
        while (s->used + len > s->capacity && s->lru.prev != &s->lru) {
            struct cache_entry *v = s->lru.prev;
            if (remove_entry(s, v)) {
                v->hnext = dead;
                dead = v;
            }
        }
        p = slot(s, h, file, off);
        e->hnext = *p;
        *p = e;
        lru_push(s, e);
        e->refs++;                   /* the cache's */
        e->in_cache = 1;
        s->used += len;
        if (++s->count > s->nbuckets)
            grow(s);
    }
    pthread_mutex_unlock(&s->mu);
    while (dead) {
        struct cache_entry *n = dead->hnext;
        entry_free(dead);
        dead = n;
    }
    return e;
}

const void *sst_cache_data(const cache_entry_t *e, size_t *len)
{
    *len = e->len;
    return e->data;
}

void sst_cache_release(sst_cache_t *c, cache_entry_t *e)
{
    if (!e)
        return;
    struct shard *s = shard_of(c, mix(e->file, e->off));
    pthread_mutex_lock(&s->mu);
    int last = --e->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (last)
        entry_free(e);
}

void sst_cache_stats(sst_cache_t *c, size_t *used, uint64_t *hits, uint64_t *misses)
{
    size_t u = 0;
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_lock(&c->s[i].mu);
        u += c->s[i].used;
        pthread_mutex_unlock(&c->s[i].mu);
    }
    if (used)
        *used = u;
    if (hits)
        *hits = atomic_load(&c->hits);
    if (misses)
        *misses = atomic_load(&c->misses);
}
