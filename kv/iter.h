/*
 * iter.h - internal iterators: one interface over every source of entries
 * (memtables now, tables later) and a merging iterator that combines them.
 *
 * An internal iterator walks entries in table order, (user key ascending,
 * tag descending), showing every version and every deletion marker; hiding
 * old versions and deletions is the engine's job (db.c).  key(), value() and
 * tag() are valid while the iterator stays on the entry.  A source that finds
 * damage stops (valid() is 0) and reports it through status().
 *
 * Thread-safety: an iterator is used by one thread at a time.
 */
#ifndef STASH_ITER_H
#define STASH_ITER_H

#include <stddef.h>
#include <stdint.h>

#include "memtable.h"

typedef struct iiter iiter_t;

struct iiter_ops {
    void (*seek)(iiter_t *it, const void *key, size_t klen, uint64_t tag);
    void (*seek_first)(iiter_t *it);
    int (*valid)(const iiter_t *it);
    void (*next)(iiter_t *it);
    const void *(*key)(const iiter_t *it, size_t *klen);
    uint64_t (*tag)(const iiter_t *it);
    const void *(*value)(const iiter_t *it, size_t *vlen);
    int (*status)(const iiter_t *it);
    void (*destroy)(iiter_t *it);
};

struct iiter {
    const struct iiter_ops *ops;
};

/* An internal iterator over memtable M (which the caller keeps referenced). */
iiter_t *iter_memtable(const memtable_t *m);

/*
 * An iterator over the union of N children, in table order.  It takes
 * ownership of the children (and of the CHILD array's contents, not the
 * array).  Entries that compare equal (impossible between the engine's
 * sources, whose sequence numbers differ) come from the lower index first.
 */
iiter_t *iter_merge(iiter_t **child, int n);

static inline void iter_free(iiter_t *it)
{
    if (it)
        it->ops->destroy(it);
}

#endif
