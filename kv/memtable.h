/*
 * memtable.h - the in-memory table: skip lists of entries ordered by
 * (user key ascending, tag descending), where a tag is (sequence << 8 | type).
 *
 * Each entry is a put (with a value) or a deletion marker, stamped with the
 * sequence number of the write that made it, so a reader at sequence S sees,
 * for each key, the newest entry whose sequence is <= S.  Entries are never
 * changed or removed; a memtable is freed whole when its last reference goes.
 *
 * Memory comes from a private arena; mt_memory() reports the bytes handed out
 * by the arena (entries and their towers; the arena holds at most one 64 KiB
 * block more), which is what the engine compares against memtable_size.
 *
 * Thread-safety: one writer at a time (the caller serialises mt_add), and any
 * number of readers at once with no lock, also while the writer inserts: a
 * node is fully built before it is linked, and links are published with
 * release stores and read with acquire loads.  mt_ref/mt_unref are atomic.
 */
#ifndef STASH_MEMTABLE_H
#define STASH_MEMTABLE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { KT_DEL = 0, KT_PUT = 1 };

#define TAG(seq, type) (((uint64_t)(seq) << 8) | (uint64_t)(type))
#define TAG_SEQ(tag)   ((tag) >> 8)
#define TAG_TYPE(tag)  ((int)((tag) & 0xff))
#define SEQ_MAX        ((UINT64_C(1) << 56) - 1)

typedef struct memtable memtable_t;
typedef struct mt_iter mt_iter_t;

/*
 * A new empty memtable with one reference, or NULL without memory.
 * FILTER_BYTES > 0 gives it a bloom filter of about that many bytes over the
 * keys it holds, so that mt_get of a key it does not hold usually returns at
 * once instead of searching the list (the engine gives memtable_size / 64).
 * SEG_BYTES > 0 splits it into skip lists ("segments") of about that many
 * bytes, filled one after another (at most 16), so that inserts search a
 * short list (the engine gives memtable_size / 4).  Each segment then has a
 * filter of FILTER_BYTES / 8.  The filters
 * are outside mt_memory().
 */
memtable_t *mt_new(size_t filter_bytes, size_t seg_bytes);
void mt_ref(memtable_t *m);
void mt_unref(memtable_t *m);

/* Add an entry.  TYPE is KT_PUT or KT_DEL (VAL ignored).  -ENOMEM.  In a
 * memtable with segments, sequence numbers must rise from call to call (the
 * engine adds in commit order); lookups rely on it. */
int mt_add(memtable_t *m, uint64_t seq, int type,
           const void *key, size_t klen, const void *val, size_t vlen);

/* Bytes used in the arena, and the number of entries. */
size_t mt_memory(const memtable_t *m);
uint64_t mt_count(const memtable_t *m);

/*
 * Look KEY up as of sequence SEQ.  Returns KT_PUT (with *val / *vlen pointing
 * into the memtable, valid while the caller holds a reference), KT_DEL when
 * the newest visible entry is a deletion, or -1 when the key has no visible
 * entry here.
 */
int mt_get(const memtable_t *m, const void *key, size_t klen, uint64_t seq,
           const void **val, size_t *vlen);

/* Iterators walk every entry, all versions, in table order; a seek sees
 * every entry added before it.  The caller keeps a reference on the
 * memtable for the iterator's lifetime. */
mt_iter_t *mt_iter_new(const memtable_t *m);
void mt_iter_free(mt_iter_t *it);
void mt_iter_seek(mt_iter_t *it, const void *key, size_t klen, uint64_t tag);
void mt_iter_seek_first(mt_iter_t *it);
int  mt_iter_valid(const mt_iter_t *it);
void mt_iter_next(mt_iter_t *it);
const void *mt_iter_key(const mt_iter_t *it, size_t *klen);
uint64_t mt_iter_tag(const mt_iter_t *it);
const void *mt_iter_value(const mt_iter_t *it, size_t *vlen);

/* Bytewise comparison of the first N bytes of A and B, eight at a time:
 * keys are short, and a call to memcmp costs more than the comparing. */
static inline int key_bytes_cmp(const uint8_t *a, const uint8_t *b, size_t n)
{
    for (; n >= 8; a += 8, b += 8, n -= 8) {
        uint64_t x, y;
        memcpy(&x, a, 8);
        memcpy(&y, b, 8);
        if (x != y) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            x = __builtin_bswap64(x);
            y = __builtin_bswap64(y);
#endif
            return x < y ? -1 : 1;
        }
    }
    return n ? memcmp(a, b, n) : 0;
}

/* Compare (ka, taga) with (kb, tagb) in table order: user key ascending,
 * then tag descending (newer first). */
static inline int ikey_cmp(const void *ka, size_t kalen, uint64_t taga,
                           const void *kb, size_t kblen, uint64_t tagb)
{
    int c = key_bytes_cmp(ka, kb, kalen < kblen ? kalen : kblen);
    if (c)
        return c;
    if (kalen != kblen)
        return kalen < kblen ? -1 : 1;
    if (taga != tagb)
        return taga > tagb ? -1 : 1;
    return 0;
}

#endif
