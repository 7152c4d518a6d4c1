/*
 * test_memtable.c - the skip lists: table order, snapshot visibility, memory
 * accounting, readers running while the writer inserts, and segments against
 * a model.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>

#include "memtable.h"

static void test_order_and_versions(void **state)
{
    (void)state;
    memtable_t *m = mt_new(0, 0);
    assert_non_null(m);
    /* Insert out of order, several versions per key. */
    assert_int_equal(mt_add(m, 5, KT_PUT, "b", 1, "b5", 2), 0);
    assert_int_equal(mt_add(m, 1, KT_PUT, "a", 1, "a1", 2), 0);
    assert_int_equal(mt_add(m, 9, KT_DEL, "b", 1, NULL, 0), 0);
    assert_int_equal(mt_add(m, 3, KT_PUT, "ab", 2, "ab3", 3), 0);
    assert_int_equal(mt_add(m, 7, KT_PUT, "a", 1, "a7", 2), 0);
    assert_int_equal(mt_add(m, 2, KT_PUT, "b", 1, "b2", 2), 0);

    /* Table order: key ascending (shorter first on a shared prefix), newest first. */
    const char *keys[] = { "a", "a", "ab", "b", "b", "b" };
    const uint64_t seqs[] = { 7, 1, 3, 9, 5, 2 };
    mt_iter_t *it = mt_iter_new(m);
    int i = 0;
    for (mt_iter_seek_first(it); mt_iter_valid(it); mt_iter_next(it), i++) {
        size_t kl;
        const char *k = mt_iter_key(it, &kl);
        assert_true(i < 6);
        assert_int_equal(kl, strlen(keys[i]));
        assert_memory_equal(k, keys[i], kl);
        assert_int_equal(TAG_SEQ(mt_iter_tag(it)), seqs[i]);
    }
    assert_int_equal(i, 6);
    assert_int_equal(mt_count(m), 6);

    /* Seek lands on the first entry >= (key, tag). */
    mt_iter_seek(it, "b", 1, TAG(6, 0xff));
    assert_true(mt_iter_valid(it));
    assert_int_equal(TAG_SEQ(mt_iter_tag(it)), 5);
    mt_iter_seek(it, "aa", 2, TAG(SEQ_MAX, 0xff));
    size_t kl;
    assert_memory_equal(mt_iter_key(it, &kl), "ab", 2);
    mt_iter_seek(it, "c", 1, TAG(SEQ_MAX, 0xff));
    assert_false(mt_iter_valid(it));
    mt_iter_free(it);
    mt_unref(m);
}

static void test_snapshot_visibility(void **state)
{
    (void)state;
    memtable_t *m = mt_new(0, 0);
    mt_add(m, 10, KT_PUT, "k", 1, "v10", 3);
    mt_add(m, 20, KT_DEL, "k", 1, NULL, 0);
    mt_add(m, 30, KT_PUT, "k", 1, "v30", 3);
    const void *v;
    size_t vl;
    assert_int_equal(mt_get(m, "k", 1, 9, &v, &vl), -1);      /* before the first write */
    assert_int_equal(mt_get(m, "k", 1, 10, &v, &vl), KT_PUT);
    assert_memory_equal(v, "v10", 3);
    assert_int_equal(mt_get(m, "k", 1, 19, &v, &vl), KT_PUT);
    assert_int_equal(mt_get(m, "k", 1, 20, &v, &vl), KT_DEL);
    assert_int_equal(mt_get(m, "k", 1, 29, &v, &vl), KT_DEL);
    assert_int_equal(mt_get(m, "k", 1, SEQ_MAX, &v, &vl), KT_PUT);
    assert_memory_equal(v, "v30", 3);
    assert_int_equal(mt_get(m, "j", 1, SEQ_MAX, &v, &vl), -1);
    assert_int_equal(mt_get(m, "kk", 2, SEQ_MAX, &v, &vl), -1);
    mt_unref(m);
}

static void test_empty_and_large_values(void **state)
{
    (void)state;
    memtable_t *m = mt_new(0, 0);
    size_t big = 16u << 20;
    char *b = malloc(big);
    for (size_t i = 0; i < big; i++)
        b[i] = (char)(i * 7);
    assert_int_equal(mt_add(m, 1, KT_PUT, "empty", 5, "", 0), 0);
    assert_int_equal(mt_add(m, 2, KT_PUT, "big", 3, b, big), 0);
    const void *v;
    size_t vl;
    assert_int_equal(mt_get(m, "empty", 5, 5, &v, &vl), KT_PUT);
    assert_int_equal(vl, 0);
    assert_int_equal(mt_get(m, "big", 3, 5, &v, &vl), KT_PUT);
    assert_int_equal(vl, big);
    assert_memory_equal(v, b, big);
    assert_true(mt_memory(m) >= big);
    free(b);
    mt_unref(m);
}

/* Random keys against a sorted reference: every key found, order exact. */
static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* With no filter, a saturated one and a real one: every key present is
 * found, every key absent is not. */
static void random_order(size_t filter_bytes, size_t seg_bytes)
{
    uint64_t s = tu_seed("test_memtable random", 42);
    enum { N = 20000 };
    uint32_t *ks = malloc(N * sizeof *ks);
    memtable_t *m = mt_new(filter_bytes, seg_bytes);
    for (int i = 0; i < N; i++) {
        ks[i] = (uint32_t)(tu_rand(&s) % 1000000000u) * 2 + 1; /* odd: even probes miss */
        char k[16];
        int kl = snprintf(k, sizeof k, "%010u", ks[i]);
        assert_int_equal(mt_add(m, (uint64_t)i + 1, KT_PUT, k, (size_t)kl, &ks[i], 4), 0);
    }
    qsort(ks, N, sizeof *ks, cmp_u32);
    mt_iter_t *it = mt_iter_new(m);
    mt_iter_seek_first(it);
    char prev[16] = "";
    for (int i = 0; i < N; i++) {
        assert_true(mt_iter_valid(it));
        size_t kl;
        const char *k = mt_iter_key(it, &kl);
        char want[16];
        snprintf(want, sizeof want, "%010u", ks[i]);
        assert_int_equal(kl, 10);
        assert_memory_equal(k, want, 10);
        assert_true(strncmp(prev, k, 10) <= 0);
        memcpy(prev, k, 10);
        mt_iter_next(it);
    }
    assert_false(mt_iter_valid(it));
    for (int i = 0; i < N; i++) {
        char k[16];
        snprintf(k, sizeof k, "%010u", ks[i]);
        const void *v;
        size_t vl;
        assert_int_equal(mt_get(m, k, 10, SEQ_MAX, &v, &vl), KT_PUT);
    }
    for (int i = 0; i < 1000; i++) {
        uint32_t probe = (uint32_t)(tu_rand(&s) % 1000000000u) * 2;
        char k[16];
        snprintf(k, sizeof k, "%010u", probe);
        const void *v;
        size_t vl;
        assert_int_equal(mt_get(m, k, 10, SEQ_MAX, &v, &vl), -1);
    }
    mt_iter_free(it);
    mt_unref(m);
    free(ks);
}

static void test_random_order(void **state)
{
    (void)state;
    random_order(0, 0);
    random_order(512, 0);
    random_order(65536, 0);
    /* In segments: 20,000 entries of about 70 bytes fill all sixteen. */
    random_order(0, 60000);
    random_order(65536, 60000);
    random_order(512, 100000);
}

/* Readers scan while one writer inserts: every scan is sorted and a key
 * once seen is always found again. */
struct conc {
    memtable_t *m;
    atomic_int done;
    atomic_long checks;
};

static void *reader(void *arg)
{
    struct conc *c = arg;
    mt_iter_t *it = mt_iter_new(c->m);
    while (!atomic_load(&c->done)) {
        char prev[16] = "";
        size_t n = 0;
        for (mt_iter_seek_first(it); mt_iter_valid(it); mt_iter_next(it)) {
            size_t kl;
            const char *k = mt_iter_key(it, &kl);
            if (kl != 8 || (n > 0 && memcmp(prev, k, 8) >= 0))
                abort();   /* out of order: fails the test loudly */
            memcpy(prev, k, 8);
            n++;
            const void *v;
            size_t vl;
            if (mt_get(c->m, k, 8, SEQ_MAX, &v, &vl) != KT_PUT || vl != 8 || memcmp(v, k, 8) != 0)
                abort();
        }
        atomic_fetch_add(&c->checks, (long)n);
    }
    mt_iter_free(it);
    return NULL;
}

static void concurrent_readers(size_t seg_bytes)
{
    struct conc c = { .m = mt_new(4096, seg_bytes) };   /* with filters: they must never hide a key seen */
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, reader, &c);
    uint64_t s = 7;
    for (int i = 0; i < 30000; i++) {
        char k[9];
        snprintf(k, sizeof k, "%08u", (unsigned)(tu_rand(&s) % 100000000u));
        const void *v;
        size_t vl;
        if (mt_get(c.m, k, 8, SEQ_MAX, &v, &vl) == KT_PUT)
            continue;
        assert_int_equal(mt_add(c.m, (uint64_t)i + 1, KT_PUT, k, 8, k, 8), 0);
    }
    atomic_store(&c.done, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_true(atomic_load(&c.checks) > 0);
    mt_unref(c.m);
}

static void test_concurrent_readers(void **state)
{
    (void)state;
    concurrent_readers(0);
    concurrent_readers(100000);   /* segments start while readers scan */
}

/*
 * Segments against a model: many versions of few keys, puts and deletions,
 * spread over every segment; each lookup at a random sequence number gives
 * the newest entry at or below it, and a seek lands where the model says.
 */
struct ment {
    unsigned key;
    uint64_t seq;
    int type;
};

static int ment_cmp(const void *a, const void *b)
{
    const struct ment *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->seq > y->seq ? -1 : x->seq < y->seq;   /* newest first */
}

static void test_segments_model(void **state)
{
    (void)state;
    uint64_t s = tu_seed("test_memtable segments", 17);
    enum { N = 30000, KEYS = 700 };
    static struct ment e[N];
    memtable_t *m = mt_new(2048, 40000);
    for (int i = 0; i < N; i++) {
        e[i].key = (unsigned)(tu_rand(&s) % KEYS);
        e[i].seq = (uint64_t)i * 3 + 1;
        e[i].type = tu_rand(&s) % 5 ? KT_PUT : KT_DEL;
        char k[16], v[24];
        int kl = snprintf(k, sizeof k, "k%05u", e[i].key);
        int vl = snprintf(v, sizeof v, "v%llu", (unsigned long long)e[i].seq);
        assert_int_equal(mt_add(m, e[i].seq, e[i].type, k, (size_t)kl, v, (size_t)vl), 0);
    }
    qsort(e, N, sizeof *e, ment_cmp);
    /* The whole order. */
    mt_iter_t *it = mt_iter_new(m);
    int i = 0;
    for (mt_iter_seek_first(it); mt_iter_valid(it); mt_iter_next(it), i++) {
        size_t kl;
        const char *k = mt_iter_key(it, &kl);
        char want[16];
        snprintf(want, sizeof want, "k%05u", e[i].key);
        assert_true(i < N);
        assert_int_equal(kl, strlen(want));
        assert_memory_equal(k, want, kl);
        assert_int_equal(TAG_SEQ(mt_iter_tag(it)), e[i].seq);
    }
    assert_int_equal(i, N);
    /* Lookups and seeks at random sequence numbers. */
    for (int t = 0; t < 20000; t++) {
        unsigned key = (unsigned)(tu_rand(&s) % (KEYS + 20));
        uint64_t seq = tu_rand(&s) % (N * 3 + 5);
        char k[16];
        int kl = snprintf(k, sizeof k, "k%05u", key);
        int want = -1;
        uint64_t wseq = 0;
        int first = -1;   /* the model's first entry >= (key, seq) */
        for (int j = 0; j < N; j++) {
            if (e[j].key < key || (e[j].key == key && e[j].seq > seq))
                continue;
            first = j;
            if (e[j].key == key) {
                want = e[j].type;
                wseq = e[j].seq;
            }
            break;
        }
        const void *v;
        size_t vl;
        int got = mt_get(m, k, (size_t)kl, seq, &v, &vl);
        assert_int_equal(got, want);
        if (got == KT_PUT) {
            char wv[24];
            snprintf(wv, sizeof wv, "v%llu", (unsigned long long)wseq);
            assert_int_equal(vl, strlen(wv));
            assert_memory_equal(v, wv, vl);
        }
        mt_iter_seek(it, k, (size_t)kl, TAG(seq, 0xff));
        if (first < 0) {
            assert_false(mt_iter_valid(it));
        } else {
            assert_true(mt_iter_valid(it));
            assert_int_equal(TAG_SEQ(mt_iter_tag(it)), e[first].seq);
        }
    }
    mt_iter_free(it);
    mt_unref(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_versions),
        cmocka_unit_test(test_snapshot_visibility),
        cmocka_unit_test(test_empty_and_large_values),
        cmocka_unit_test(test_random_order),
        cmocka_unit_test(test_concurrent_readers),
        cmocka_unit_test(test_segments_model),
    };
    tu_filter();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
