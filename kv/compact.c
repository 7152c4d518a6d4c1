/*
 * compact.c - flushes and compactions; see compact.h.
 */
#include "compact.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "ikey.h"
#include "wal.h"

/* The largest zstd dictionary a compressed table trains (sstable.c): big
 * enough for the entropy tables and some shared content, small next to a
 * table of 64 KiB or more. */
#define TABLE_DICT_SIZE (16u << 10)

static sst_options_t table_options(const stash_options_t *o)
{
    sst_options_t so = { o->block_size, o->compression_level, o->bloom_bits_per_key, TABLE_DICT_SIZE };
    return so;
}

/* A growable internal-key buffer. */
struct kbuf {
    uint8_t *p;
    size_t len, cap;
};

static int kbuf_set(struct kbuf *b, const void *ukey, size_t klen, uint64_t tag)
{
    if (klen + IKEY_TRAILER > b->cap) {
        size_t cap = klen + IKEY_TRAILER + 64;
        uint8_t *p = realloc(b->p, cap);
        if (!p)
            return err_set(-ENOMEM, "out of memory");
        b->p = p;
        b->cap = cap;
    }
    ikey_make(b->p, ukey, klen, tag);
    b->len = klen + IKEY_TRAILER;
    return 0;
}

static int open_output(vset_t *vs, const stash_options_t *o, int compress, sst_writer_t **w,
                       uint64_t *num)
{
    char path[PATH_MAX];
    *num = vset_new_file(vs);
    table_path(path, sizeof path, vs->dir, *num);
    sst_options_t so = table_options(o);
    if (!compress)
        so.compression_level = 0;
    return sst_writer_open(path, &so, &ikey_fmt, w);
}

int flush_memtable(vset_t *vs, const stash_options_t *o, memtable_t *m, uint64_t smallest_snapshot,
                   fmeta_t **out, struct cstats *st)
{
    *out = NULL;
    if (mt_count(m) == 0)
        return 0;
    mt_iter_t *it = mt_iter_new(m);
    if (!it)
        return err_set(-ENOMEM, "out of memory");
    sst_writer_t *w = NULL;
    uint64_t num, size = 0;
    /* Level-0 tables live until the next compaction rewrites them: they are
     * written uncompressed, so a flush costs no more than the disk write. */
    int rc = open_output(vs, o, 0, &w, &num);
    if (rc) {
        mt_iter_free(it);
        return rc;
    }
    struct kbuf kb = { 0 };
    const void *prev = NULL;
    size_t prevl = 0;
    uint64_t newer_seq = UINT64_MAX;
    for (mt_iter_seek_first(it); rc == 0 && mt_iter_valid(it); mt_iter_next(it)) {
        size_t kl, vl;
        const void *k = mt_iter_key(it, &kl);
        uint64_t tag = mt_iter_tag(it);
        /* Versions of a key come newest first.  One that a newer version
         * hides from every snapshot is never read again: leave it out, as a
         * compaction would (deletion markers stay, since older versions may
         * lie in the tables beneath).  Entries are never changed, so PREV
         * stays valid while the iterator lives. */
        if (!prev || kl != prevl || memcmp(k, prev, kl) != 0) {
            prev = k;
            prevl = kl;
            newer_seq = UINT64_MAX;
        }
        int hidden = newer_seq <= smallest_snapshot;
        newer_seq = TAG_SEQ(tag);
        if (hidden) {
            st->flush_dropped++;
            continue;
        }
        const void *v = mt_iter_value(it, &vl);
        rc = kbuf_set(&kb, k, kl, tag);
        if (rc == 0)
            rc = sst_writer_add(w, kb.p, kb.len, v, vl);
    }
    mt_iter_free(it);
    free(kb.p);
    if (rc) {
        sst_writer_abandon(w);
        return rc;
    }
    if ((rc = sst_writer_finish(w, &size)) != 0)
        return rc;
    if ((rc = wal_sync_dir(vs->dir)) == 0)
        rc = fmeta_open(vs, num, out);
    if (rc == 0)
        st->flush_bytes += size;
    return rc;
}

/* ---- choosing ---- */

static const void *ukey_lo(const fmeta_t *f, size_t *n)
{
    *n = ikey_ulen(f->slen);
    return f->smallest;
}

static const void *ukey_hi(const fmeta_t *f, size_t *n)
{
    *n = ikey_ulen(f->llen);
    return f->largest;
}

/* Does F's user-key range meet [B, E] (NULL = unbounded)? */
static int overlaps(const fmeta_t *f, const void *b, size_t bl, const void *e, size_t el)
{
    size_t n;
    const void *hi = ukey_hi(f, &n);
    if (b && ikey_cmp(hi, n, 0, b, bl, 0) < 0)
        return 0;
    const void *lo = ukey_lo(f, &n);
    if (e && ikey_cmp(lo, n, 0, e, el, 0) > 0)
        return 0;
    return 1;
}

int compact_overlaps(const fmeta_t *f, const void *b, size_t bl, const void *e, size_t el)
{
    return overlaps(f, b, bl, e, el);
}

static int push(struct compaction *c, int which, fmeta_t *f)
{
    fmeta_t **p = realloc(c->in[which], (size_t)(c->nin[which] + 1) * sizeof *p);
    if (!p)
        return -ENOMEM;
    c->in[which] = p;
    p[c->nin[which]++] = f;
    fmeta_ref(f);
    return 0;
}

int compact_place_pick(version_t *v, int level, const uint64_t *nums, size_t n, size_t *at, int max,
                       struct compaction *c)
{
    memset(c, 0, sizeof *c);
    c->level = level;
    c->in_place = 1;
    for (; *at < n && c->nin[0] < max; (*at)++)
        for (int i = 0; i < v->n[level]; i++)
            if (v->f[level][i]->number == nums[*at]) {
                if (push(c, 0, v->f[level][i]) < 0) {
                    compact_free(c);
                    return 0;
                }
                break;
            }
    return c->nin[0] > 0;
}

void compact_free(struct compaction *c)
{
    for (int w = 0; w < 2; w++) {
        for (int i = 0; i < c->nin[w]; i++)
            fmeta_unref(c->in[w][i]);
        free(c->in[w]);
    }
    memset(c, 0, sizeof *c);
}

/* Widen [lo, hi] (user keys) to cover F. */
static void widen(const fmeta_t *f, const void **lo, size_t *ll, const void **hi, size_t *hl)
{
    size_t n;
    const void *k = ukey_lo(f, &n);
    if (!*lo || ikey_cmp(k, n, 0, *lo, *ll, 0) < 0) {
        *lo = k;
        *ll = n;
    }
    k = ukey_hi(f, &n);
    if (!*hi || ikey_cmp(k, n, 0, *hi, *hl, 0) > 0) {
        *hi = k;
        *hl = n;
    }
}

/* Add the tables of LEVEL + 1 overlapping the inputs' key range. */
static int add_next_level(version_t *v, struct compaction *c)
{
    const void *lo = NULL, *hi = NULL;
    size_t ll = 0, hl = 0;
    for (int i = 0; i < c->nin[0]; i++)
        widen(c->in[0][i], &lo, &ll, &hi, &hl);
    int nl = c->level + 1;
    for (int i = 0; i < v->n[nl]; i++)
        if (overlaps(v->f[nl][i], lo, ll, hi, hl) && push(c, 1, v->f[nl][i]) < 0)
            return -ENOMEM;
    c->trivial = c->nin[0] == 1 && c->nin[1] == 0;
    return 0;
}

/* Complete a choice of level-L inputs: add what they overlap in L+1. */
static int finish_pick(version_t *v, struct compaction *c)
{
    if (add_next_level(v, c) < 0) {
        compact_free(c);
        return 0;
    }
    /* Level-0 tables are uncompressed: they are always rewritten. */
    if (c->level == 0)
        c->trivial = 0;
    return 1;
}

static uint64_t max_bytes(const stash_options_t *o, int level)
{
    uint64_t b = o->level1_max_bytes;
    for (int l = 1; l < level; l++)
        b *= 10;
    return b;
}

int compact_pick(version_t *v, const stash_options_t *o, uint8_t **pointer, size_t *plen,
                 struct compaction *c)
{
    memset(c, 0, sizeof *c);
    double best = (double)v->n[0] / o->l0_compaction_trigger;
    int level = 0;
    for (int l = 1; l < NLEVELS - 1; l++) {
        double s = (double)level_bytes(v, l) / (double)max_bytes(o, l);
        if (s > best) {
            best = s;
            level = l;
        }
    }
    if (best < 1)
        return 0;
    c->level = level;
    if (level == 0) {
        for (int i = 0; i < v->n[0]; i++)
            if (push(c, 0, v->f[0][i]) < 0)
                goto oom;
    } else {
        /* The first table after where this level's last compaction ended. */
        int pick = 0;
        for (int i = 0; pointer[level] && i < v->n[level]; i++) {
            fmeta_t *f = v->f[level][i];
            if (ikey_packed_cmp(f->largest, f->llen, pointer[level], plen[level]) > 0) {
                pick = i;
                break;
            }
            pick = 0;
        }
        fmeta_t *f = v->f[level][pick];
        if (push(c, 0, f) < 0)
            goto oom;
        uint8_t *p = realloc(pointer[level], f->llen);
        if (p) {
            memcpy(p, f->largest, f->llen);
            pointer[level] = p;
            plen[level] = f->llen;
        }
    }
    return finish_pick(v, c);
oom:
    compact_free(c);
    return 0;
}

int compact_range_pick(version_t *v, int level, const void *begin, size_t blen,
                       const void *end, size_t elen, int max, struct compaction *c)
{
    memset(c, 0, sizeof *c);
    c->level = level;
    for (int i = 0; i < v->n[level] && (level == 0 || !max || c->nin[0] < max); i++)
        if (overlaps(v->f[level][i], begin, blen, end, elen) && push(c, 0, v->f[level][i]) < 0)
            goto oom;
    if (!c->nin[0])
        return 0;
    if (level == 0) {
        /* Level-0 tables overlap one another.  A table left behind that
         * overlaps the ones chosen could hold an older version of a key they
         * move down, and would then hide the newer one (or bring back what a
         * dropped deletion hid): take in every table that overlaps the
         * chosen ones' key range, until that range stops growing. */
        int grew = 1;
        while (grew) {
            grew = 0;
            const void *lo = NULL, *hi = NULL;
            size_t ll = 0, hl = 0;
            for (int i = 0; i < c->nin[0]; i++)
                widen(c->in[0][i], &lo, &ll, &hi, &hl);
            for (int i = 0; i < v->n[0]; i++) {
                fmeta_t *f = v->f[0][i];
                int have = 0;
                for (int j = 0; j < c->nin[0] && !have; j++)
                    have = c->in[0][j] == f;
                if (!have && overlaps(f, lo, ll, hi, hl)) {
                    if (push(c, 0, f) < 0)
                        goto oom;
                    grew = 1;
                }
            }
        }
    }
    return finish_pick(v, c);
oom:
    compact_free(c);
    return 0;
}

/* ---- running ---- */

/* Can a table below OUT_LEVEL hold user key K?  If not, a deletion of K that
 * every snapshot sees has nothing left to hide and can go. */
static int deeper_may_hold(version_t *v, int out_level, const void *k, size_t kl)
{
    for (int l = out_level + 1; l < NLEVELS; l++)
        for (int i = 0; i < v->n[l]; i++)
            if (overlaps(v->f[l][i], k, kl, k, kl))
                return 1;
    return 0;
}

static int finish_output(vset_t *vs, sst_writer_t **w, uint64_t num, int level, vedit_t *e,
                         struct cstats *st)
{
    uint64_t size;
    int rc = sst_writer_finish(*w, &size);
    *w = NULL;
    if (rc)
        return rc;
    fmeta_t *f;
    if ((rc = fmeta_open(vs, num, &f)) != 0)
        return rc;
    if (e->nadd == (int)(sizeof e->add / sizeof e->add[0])) {
        fmeta_unref(f);
        return err_set(-EIO, "compaction produced too many tables");
    }
    e->add[e->nadd].level = level;
    e->add[e->nadd++].f = f;
    st->compact_bytes_written += size;
    return 0;
}

int compact_run(vset_t *vs, const stash_options_t *o, struct compaction *c,
                uint64_t smallest_snapshot, vedit_t *e, struct cstats *st,
                void (*yield)(void *arg, uint64_t entries), void *arg)
{
    int out_level = c->level + !c->in_place;
    for (int w = 0; w < 2; w++) {
        for (int i = 0; i < c->nin[w]; i++) {
            if (e->ndel == (int)(sizeof e->del / sizeof e->del[0]))
                return err_set(-EIO, "compaction has too many inputs");
            e->del[e->ndel].level = c->level + w;
            e->del[e->ndel++].number = c->in[w][i]->number;
            st->compact_bytes_read += c->in[w][i]->size;
        }
    }
    st->compactions++;
    if (c->trivial) {
        fmeta_ref(c->in[0][0]);
        e->add[0].level = out_level;
        e->add[0].f = c->in[0][0];
        e->nadd = 1;
        st->moves++;
        return 0;
    }

    /* Level-0 inputs overlap: one stream each.  Other levels: one stream. */
    int nk = 0;
    iiter_t **kids = calloc((size_t)c->nin[0] + 2, sizeof *kids);
    if (!kids)
        return err_set(-ENOMEM, "out of memory");
    if (c->level == 0) {
        for (int i = 0; i < c->nin[0]; i++)
            kids[nk++] = iter_files(&c->in[0][i], 1);
    } else {
        kids[nk++] = iter_files(c->in[0], c->nin[0]);
    }
    if (c->nin[1])
        kids[nk++] = iter_files(c->in[1], c->nin[1]);
    for (int i = 0; i < nk; i++) {
        if (!kids[i]) {
            for (int j = 0; j < nk; j++)
                iter_free(kids[j]);
            free(kids);
            return err_set(-ENOMEM, "out of memory");
        }
    }
    iiter_t *m = iter_merge(kids, nk);
    free(kids);
    if (!m)
        return err_set(-ENOMEM, "out of memory");

    /* The deeper levels as they were when the compaction was chosen; a
     * flush during it only adds level-0 tables, which do not matter here. */
    version_t *v = vs->cur;
    version_ref(v);
    vs->pending_min = atomic_load(&vs->next_file);
    struct kbuf cur = { 0 }, out = { 0 };
    int have_cur = 0, rc = 0;
    uint64_t last_seq_for_key = UINT64_MAX, num = 0, steps = 0, bytes = 0;
    sst_writer_t *w = NULL;
    for (m->ops->seek_first(m); rc == 0 && m->ops->valid(m); m->ops->next(m)) {
        size_t kl, vl;
        const void *k = m->ops->key(m, &kl);
        m->ops->value(m, &vl);
        bytes += kl + vl;
        if (yield && (++steps == 4096 || bytes >= (4u << 20))) {
            yield(arg, steps);
            steps = bytes = 0;
        }
        uint64_t tag = m->ops->tag(m);
        if (!have_cur || kl != ikey_ulen(cur.len) || memcmp(k, cur.p, kl) != 0) {
            /* A new user key: the place to end a full output table. */
            if (w && sst_writer_size(w) >= o->target_file_size &&
                (rc = finish_output(vs, &w, num, out_level, e, st)) != 0)
                break;
            if ((rc = kbuf_set(&cur, k, kl, 0)) != 0)
                break;
            have_cur = 1;
            last_seq_for_key = UINT64_MAX;
        }
        uint64_t seq = TAG_SEQ(tag);
        int drop = 0;
        if (seq == last_seq_for_key)
            drop = 1;   /* the same entry twice: a log replayed again into
                         * level 0 after a crash during the flushes at open */
        else if (last_seq_for_key <= smallest_snapshot)
            drop = 1;   /* a newer entry of this key is visible to every snapshot */
        else if (TAG_TYPE(tag) == KT_DEL && seq <= smallest_snapshot &&
                 !deeper_may_hold(v, out_level, k, kl))
            drop = 1;   /* a deletion with nothing beneath it to hide */
        last_seq_for_key = seq;
        if (drop)
            continue;
        if (!w && (rc = open_output(vs, o, 1, &w, &num)) != 0)
            break;
        const void *val = m->ops->value(m, &vl);
        if ((rc = kbuf_set(&out, k, kl, tag)) == 0)
            rc = sst_writer_add(w, out.p, out.len, val, vl);
    }
    if (rc == 0)
        rc = m->ops->status(m);
    if (yield && steps)
        yield(arg, steps);
    if (rc == 0 && w)
        rc = finish_output(vs, &w, num, out_level, e, st);
    if (w)
        sst_writer_abandon(w);
    iter_free(m);
    version_unref(v);
    vs->pending_min = UINT64_MAX;
    free(cur.p);
    free(out.p);
    if (rc == 0)
        rc = wal_sync_dir(vs->dir);
    if (rc) {
        /* Nothing is recorded: drop the tables written so far. */
        for (int i = 0; i < e->nadd; i++) {
            atomic_store(&e->add[i].f->obsolete, 1);
            fmeta_unref(e->add[i].f);
        }
        e->nadd = 0;
    }
    return rc;
}
