/*
 * demo.c - what `make run` shows: open the store in ./data, count this run,
 * write a few keys, list everything in order, print the statistics.  Run it
 * twice to see the data survive a restart.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "smartstash.h"

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "./data";
    stash_t *db;
    if (stash_open(dir, NULL, &db) != 0) {
        fprintf(stderr, "stash-demo: %s\n", stash_last_error(NULL));
        return 1;
    }
    long runs = 0;
    void *v;
    size_t vl;
    if (stash_get(db, "demo/runs", 9, &v, &vl) == 0) {
        char buf[32] = "";
        memcpy(buf, v, vl < 31 ? vl : 31);
        runs = strtol(buf, NULL, 10);
        stash_free(v);
    }
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%ld", runs + 1);
    stash_batch_t *b = stash_batch_new();
    stash_batch_put(b, "demo/runs", 9, buf, (size_t)n);
    n = snprintf(buf, sizeof buf, "run %ld at %ld", runs + 1, (long)time(NULL));
    char key[64];
    int kl = snprintf(key, sizeof key, "demo/log/%06ld", runs + 1);
    stash_batch_put(b, key, (size_t)kl, buf, (size_t)n);
    if (stash_write(db, b, STASH_SYNC) != 0) {
        fprintf(stderr, "stash-demo: %s\n", stash_last_error(db));
        return 1;
    }
    stash_batch_free(b);

    printf("store %s, run number %ld; its contents, in key order:\n", dir, runs + 1);
    stash_iter_t *it = stash_iter_new(db, NULL);
    for (stash_iter_seek_first(it); stash_iter_valid(it); stash_iter_next(it)) {
        size_t klen, vlen;
        const char *k = stash_iter_key(it, &klen);
        const char *val = stash_iter_value(it, &vlen);
        printf("  %-20.*s = %.*s\n", (int)klen, k, (int)(vlen > 60 ? 60 : vlen), val);
    }
    stash_iter_free(it);
    char st[2048];
    stash_stats(db, st, sizeof st);
    printf("\n%s", st);
    return stash_close(db) ? 1 : 0;
}
