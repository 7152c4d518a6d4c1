/*
 * compact.h - choosing and running compactions, and writing memtables out
 * as tables.
 *
 * A compaction merges the chosen tables of level L with the tables of level
 * L+1 that overlap them into new tables at level L+1 (about target_file_size
 * bytes each, split only between user keys).  While merging, an entry is
 * dropped when a newer entry of the same key is visible to every live
 * snapshot, and a deletion marker is dropped when every snapshot sees it and
 * no deeper level can hold the key.  A table of level L that overlaps
 * nothing in L+1 is moved down without rewriting (never from level 0).
 *
 * Flushes write level-0 tables uncompressed (they are rewritten by the next
 * compaction anyway); compactions compress at compression_level.
 *
 * These functions build a version edit; the caller applies it.  They are
 * called by one thread at a time (the engine serialises table work).
 */
#ifndef STASH_COMPACT_H
#define STASH_COMPACT_H

#include "memtable.h"
#include "version.h"

struct compaction {
    int level;                    /* inputs from level and level + 1 */
    fmeta_t **in[2];
    int nin[2];
    int trivial;                  /* one table moved down as is */
    int in_place;                 /* outputs go to LEVEL itself (compact_place_pick) */
};

/* Counters kept by the caller, for stash_stats. */
struct cstats {
    uint64_t flush_bytes, compact_bytes_read, compact_bytes_written, compactions, moves;
    uint64_t flush_dropped;     /* hidden versions a flush left out */
};

/*
 * The most urgent compaction of version V, or 0 when every level is within
 * its bounds.  POINTER holds, per level, where the last compaction stopped
 * (round robin through a level's key space).
 */
int compact_pick(version_t *v, const stash_options_t *o, uint8_t **pointer, size_t *plen,
                 struct compaction *c);

/* The compaction of every table of LEVEL overlapping user keys [BEGIN, END]
 * (NULL = unbounded), or 0 when there is none.  Above level 0, at most MAX
 * of them (0: all), the first in key order: a caller compacting a large
 * range picks again until none is left. */
int compact_range_pick(version_t *v, int level, const void *begin, size_t blen,
                       const void *end, size_t elen, int max, struct compaction *c);

/* Whether table F's user-key range meets [B, E] (NULL = unbounded). */
int compact_overlaps(const fmeta_t *f, const void *b, size_t bl, const void *e, size_t el);

/* A compaction rewriting, in their own LEVEL (above 0), the tables whose
 * numbers are NUMS[*AT...], taken in key order while they are still in V,
 * at most MAX of them; *AT moves past those looked at.  0 when none is left.
 * NUMS must name tables that follow one another in the level (those of one
 * key range), so that the outputs overlap no other table of it.  What the
 * level alone holds goes only this way: versions a released snapshot kept,
 * deletions with nothing left beneath them in the deepest level. */
int compact_place_pick(version_t *v, int level, const uint64_t *nums, size_t n, size_t *at, int max,
                       struct compaction *c);

void compact_free(struct compaction *c);

/*
 * Run C, filling edit E (deletes of the inputs, adds of the outputs).  YIELD
 * (may be NULL) is called now and then with ARG and the number of input
 * entries read since its last call, between output entries (and once at the
 * end), so the caller can count progress and flush a waiting memtable in
 * the middle of a long compaction; it may install new versions but must not
 * touch C's inputs.
 */
int compact_run(vset_t *vs, const stash_options_t *o, struct compaction *c,
                uint64_t smallest_snapshot, vedit_t *e, struct cstats *st,
                void (*yield)(void *arg, uint64_t entries), void *arg);

/* Write memtable M as a level-0 table; *OUT is NULL for an empty memtable.
 * Versions hidden by a newer version of their key at or below
 * SMALLEST_SNAPSHOT (no reader can see them) are left out. */
int flush_memtable(vset_t *vs, const stash_options_t *o, memtable_t *m, uint64_t smallest_snapshot,
                   fmeta_t **out, struct cstats *st);

#endif
