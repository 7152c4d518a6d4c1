/*
 * dbint.h - what db.c lends the other engine files that work on stored
 * keys and values (file.c: ranged access, attributes, renames).
 *
 * A view pins the memtables and tables of one moment; reads through it at a
 * sequence number are consistent however long they take.  Key locks are
 * striped mutexes taken around a read-modify-write of one stored key.
 */
#ifndef STASH_DBINT_H
#define STASH_DBINT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "smartstash.h"
#include "value.h"

#define KEY_STRIPES 64

struct view;

/* The current view (a reference) and the sequence to read at: S's when S is
 * given, else the newest. */
struct view *db_view(stash_t *db, const stash_snapshot_t *s, uint64_t *seq);
void db_view_put(struct view *v);

/* Stored key IK at SEQ: 0 with a malloc'd copy of the stored value,
 * -ENOENT, or another negative errno. */
int db_view_get(struct view *v, uint64_t seq, const uint8_t *ik, size_t iklen, void **val, size_t *vlen);

/*
 * The bytes of chunk record RAW (RLEN bytes) of chunked value E, read
 * through V: *BYTES and *N point into RAW, or, for a pointer into a value
 * file, into SCRATCH (CHUNK_SIZE bytes) once read and checked.  0 or -EIO.
 */
int db_chunk_bytes(struct view *v, const struct envelope *e, const uint8_t *raw, size_t rlen,
                   uint8_t *scratch, const uint8_t **bytes, size_t *n);

/* Chunk IDX's patch record (value.h) as of SEQ: *P (malloc'd; NULL when
 * there is none, or E is not tagged) and *PLEN.  0 or a negative errno. */
int db_patch_get(struct view *v, uint64_t seq, const struct envelope *e, uint64_t idx, void **p, size_t *plen);

/*
 * Apply chunk IDX's patch record (value.h), as of SEQ, to C (CHUNK_SIZE
 * bytes, of which the first *N are the chunk's and the rest zeros): 1 when
 * there was one, 0 when not (or E is not tagged), or -EIO for a damaged one.
 */
int db_chunk_patch(struct view *v, uint64_t seq, const struct envelope *e, uint64_t idx, uint8_t *c,
                   size_t *n);

/* The store's value files (vlog.h), and the zstd level for what goes in. */
struct vlog *db_vlog(stash_t *db);
int db_vlog_level(stash_t *db);

/* LEN bytes of chunked value E from OFF into BUF (missing chunks: zeros). */
int db_read_chunks(struct view *v, uint64_t seq, const struct envelope *e, uint8_t *buf,
                   uint64_t off, size_t len);

/* The first chunk index in [FROM, LAST] of chunked value E, as of V/SEQ,
 * whose chunk is there (PRESENT) or missing (!PRESENT) into *IDX, or
 * LAST + 1 when there is none.  0 or a negative errno. */
int db_chunk_scan(struct view *v, uint64_t seq, const struct envelope *e, uint64_t from, uint64_t last,
                  int present, uint64_t *idx);

/* How many chunks of chunked value E, as of V/SEQ, are there with index in
 * [FROM, LAST] (0 when FROM > LAST), into *N.  0 or a negative errno. */
int db_chunk_count(struct view *v, uint64_t seq, const struct envelope *e, uint64_t from, uint64_t last,
                   uint64_t *n);

/* stash_put of a value over INLINE_MAX (file.c): through value files. */
int db_put_large(stash_t *db, const void *key, size_t klen, const void *val, size_t vlen, int sync);

/* Commit B as stash_write does, without the chunk clean-up (callers hold the
 * key locks and add their own). */
int db_commit(stash_t *db, stash_batch_t *b, int sync);
/* Before a change that may make the store's first chunked value or hard
 * link reads its keys: see db.c. */
void db_blobs_begin(stash_t *db);

/* The stripe lock of stored key IK. */
pthread_mutex_t *db_keylock(stash_t *db, const uint8_t *ik, size_t iklen);

/* -EINVAL (with a message) when stored key IK is the snapshot directory's
 * name or lies under it (option snapshot_dir), else 0. */
int db_reserved(stash_t *db, const uint8_t *ik, size_t iklen);

/* -EROFS (with a message) when DB is read-only. */
int db_writable(stash_t *db);

/* Validate user KEY and make its stored form (free with skey_done). */
int db_key(const void *key, size_t klen, struct skey *k);

/* Add to B the deletion of every chunk and the owner record of chunked
 * value E: one deletion per 64 KiB of its size, whether there is a chunk
 * or not.  For a value whose chunks are put in B itself. */
int batch_drop_chunks(stash_batch_t *b, const struct envelope *e);

/* Add to B the deletion of the chunks (and their patch records) of
 * chunked value E stored with index in [FROM, LAST]: a short range index
 * by index, a long one by walking the records there are, so that a large
 * sparse value costs what it holds, not its size.  The caller holds E's
 * key stripe (no one else changes its chunks meanwhile).  0 or a negative
 * errno. */
int db_drop_chunks(stash_t *db, stash_batch_t *b, const struct envelope *e, uint64_t from, uint64_t last);

/*
 * Hard links.  A change to a shared entry (value.h) is made under the link
 * lock, one recursive mutex taken after any key stripes and held until the
 * change is committed; *HELD says whether this caller holds it.
 */
void db_link_hold(stash_t *db, int *held);
void db_link_release(stash_t *db, int *held);

/* E is a link (kind VK_LINK): read its shared entry at V/SEQ into *RAW
 * (malloc'd) and decode it into E.  -EIO when it is missing or damaged. */
int db_resolve(struct view *v, uint64_t seq, struct envelope *e, void **raw, size_t *rlen);

/*
 * Add to B what replacing or deleting stored key IK, whose value was OLD,
 * also changes: a chunked value's chunks go; a link (OLD->link set) loses
 * its back reference and one name, and its shared entry goes with the last.
 * The caller holds IK's stripe, and the link lock when OLD is a link.
 */
int db_drop_old(stash_t *db, stash_batch_t *b, const uint8_t *ik, size_t iklen, const struct envelope *old);

/* Add to B the move of value ID's back reference from name FROM to TO. */
int move_lref(stash_batch_t *b, uint64_t id, const uint8_t *from, size_t flen, const uint8_t *to, size_t tlen);

#endif
