/*
 * test_config.c - the YAML config file: every key, size suffixes, relative
 * data_dir, the product's documented example, and each kind of bad file
 * refused with a message naming the key and the line.
 */
#include "testutil.h"

#include <errno.h>

#include "smartstash.h"

static char path[600];

static int setup(void **state)
{
    tu_setup(state);
    snprintf(path, sizeof path, "%s/config.yaml", dir);
    return 0;
}

static void write_cfg(const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_documented_example(void **state)
{
    (void)state;
    write_cfg("data_dir: \"./data\"          # storage directory\n"
              "memtable_size: 1048576      # bytes\n"
              "compaction_interval: 60     # seconds\n"
              "wal_flush_interval: 10      # seconds\n");
    stash_options_t o;
    char *d;
    assert_int_equal(stash_config_load(path, &o, &d), 0);
    assert_int_equal(o.memtable_size, 1048576);
    assert_int_equal(o.compaction_interval, 60);
    assert_int_equal(o.wal_flush_interval, 10);
    /* Relative to the config file's directory. */
    char want[700];
    snprintf(want, sizeof want, "%s/./data", dir);
    assert_string_equal(d, want);
    /* Keys left out keep their defaults. */
    stash_options_t def;
    stash_options_init(&def);
    assert_int_equal(o.bloom_bits_per_key, def.bloom_bits_per_key);
    assert_int_equal(o.block_cache_size, def.block_cache_size);
    assert_int_equal(o.create_if_missing, 1);
    stash_free(d);
}

static void test_every_key(void **state)
{
    (void)state;
    write_cfg("# every option\n"
              "data_dir: /var/lib/stash\n"
              "memtable_size: 4MiB\n"
              "compaction_interval: 5\n"
              "wal_flush_interval: 0\n"
              "compression_level: 7\n"
              "block_cache_size: 2g\n"
              "bloom_bits_per_key: 12\n"
              "create_if_missing: no\n"
              "read_only: true\n"
              "block_size: 16K\n"
              "target_file_size: 32MB\n"
              "level1_max_bytes: '128M'\n"
              "l0_compaction_trigger: 2\n"
              "l0_slowdown_trigger: 6\n"
              "l0_stop_trigger: 10\n"
              "max_open_files: 100\n"
              "snapshot_dir: .snaps\n");
    stash_options_t o;
    char *d;
    assert_int_equal(stash_config_load(path, &o, &d), 0);
    assert_string_equal(d, "/var/lib/stash");
    assert_int_equal(o.memtable_size, 4u << 20);
    assert_int_equal(o.compaction_interval, 5);
    assert_int_equal(o.wal_flush_interval, 0);
    assert_int_equal(o.compression_level, 7);
    assert_int_equal(o.block_cache_size, (size_t)2 << 30);
    assert_int_equal(o.bloom_bits_per_key, 12);
    assert_int_equal(o.create_if_missing, 0);
    assert_int_equal(o.read_only, 1);
    assert_int_equal(o.block_size, 16384);
    assert_int_equal(o.target_file_size, 32u << 20);
    assert_int_equal(o.level1_max_bytes, 128u << 20);
    assert_int_equal(o.l0_compaction_trigger, 2);
    assert_int_equal(o.l0_slowdown_trigger, 6);
    assert_int_equal(o.l0_stop_trigger, 10);
    assert_int_equal(o.max_open_files, 100);
    assert_string_equal(o.snapshot_dir, ".snaps");
    stash_free(d);
    write_cfg("data_dir: x\ncompression_level: -3\n");   /* zstd's fast levels */
    assert_int_equal(stash_config_load(path, &o, &d), 0);
    assert_int_equal(o.compression_level, -3);
    stash_free(d);
    write_cfg("data_dir: x\nsnapshot_dir: ''\n");   /* empty: nothing reserved */
    assert_int_equal(stash_config_load(path, &o, &d), 0);
    assert_string_equal(o.snapshot_dir, "");
    stash_free(d);
}

/* Each bad file fails with -EINVAL and a message holding every NEEDLE. */
static void bad(const char *text, const char *n1, const char *n2)
{
    write_cfg(text);
    stash_options_t o;
    char *d = (char *)1;
    int rc = stash_config_load(path, &o, &d);
    const char *msg = stash_last_error(NULL);
    if (rc != -EINVAL || (n1 && !strstr(msg, n1)) || (n2 && !strstr(msg, n2)))
        fprintf(stderr, "config:\n%s\n-> rc %d, message: %s\n", text, rc, msg);
    assert_int_equal(rc, -EINVAL);
    assert_null(d);
    assert_non_null(strstr(msg, "config.yaml"));
    if (n1)
        assert_non_null(strstr(msg, n1));
    if (n2)
        assert_non_null(strstr(msg, n2));
}

static void test_bad_files(void **state)
{
    (void)state;
    bad("data_dir: x\nmemtable_sise: 10\n", "memtable_sise", "line 2");
    bad("data_dir: x\nmemtable_size: -5\n", "memtable_size", "line 2");
    bad("data_dir: x\n\nwal_flush_interval: soon\n", "wal_flush_interval", "line 3");
    bad("data_dir: x\ncompaction_interval: 1.5\n", "compaction_interval", "line 2");
    bad("data_dir: x\nmemtable_size: 10 XB\n", "memtable_size", "line 2");
    bad("data_dir: x\nmemtable_size: 99999999999999999999999\n", "too large", "line 2");
    bad("data_dir: x\nbloom_bits_per_key: 99999999999\n", "bloom_bits_per_key", "line 2");
    bad("data_dir: x\nread_only: maybe\n", "read_only", "line 2");
    bad("data_dir: x\ncompression_level: --3\n", "compression_level", "line 2");
    bad("data_dir: x\ncompression_level: '-'\n", "compression_level", "line 2");
    bad("data_dir: x\nbloom_bits_per_key: -3\n", "must not be negative", "line 2");
    bad("data_dir: x\nmemtable_size:\n", "memtable_size", "line 2");
    bad("data_dir: x\nmemtable_size: [1, 2]\n", "memtable_size", "line 2");
    bad("data_dir: x\ndata_dir: y\n", "twice", "line 2");
    bad("memtable_size: 1M\n", "data_dir is missing", NULL);
    bad("- just\n- a list\n", "mapping", "line 1");
    bad("data_dir: x\n  bad indent: [\n", "not valid YAML", "line");
    bad("", "empty", NULL);
    bad("# only a comment\n", "empty", NULL);
    bad("data_dir: x\n---\ndata_dir: y\n", "more than one", NULL);
    bad("data_dir: x\n---\nmemtable_size: [\n", "not valid YAML", "line");
    bad("data_dir: x\n...\n\"unterminated\n", "not valid YAML", "line");
    bad("data_dir: \"store\\0/../etc\"\n", "NUL", "line 1");
    bad("\"data_dir\\0x\": d\n", "NUL", "line 1");
    bad("data_dir: x\nsnapshot_dir: a/b\n", "snapshot_dir", "line 2");
    bad("data_dir: x\nsnapshot_dir: ..\n", "snapshot_dir", "line 2");
}

static void test_missing_file(void **state)
{
    (void)state;
    stash_options_t o;
    char *d;
    assert_int_equal(stash_config_load(path, &o, &d), -ENOENT);
    assert_non_null(strstr(stash_last_error(NULL), "config.yaml"));
    stash_t *db = (stash_t *)1;
    assert_int_equal(stash_open_config(path, &db), -ENOENT);
    assert_null(db);
}

static void test_open_config(void **state)
{
    (void)state;
    write_cfg("data_dir: store\nmemtable_size: 1M\nwal_flush_interval: 1\n");
    stash_t *db;
    assert_int_equal(stash_open_config(path, &db), 0);
    assert_int_equal(stash_put(db, "k", 1, "v", 1), 0);
    assert_int_equal(stash_close(db), 0);
    char store[700];
    snprintf(store, sizeof store, "%s/store", dir);
    assert_int_equal(stash_open(store, NULL, &db), 0);
    void *v;
    size_t vl;
    assert_int_equal(stash_get(db, "k", 1, &v, &vl), 0);
    stash_free(v);
    assert_int_equal(stash_close(db), 0);
    /* Values that parse but are out of range are refused by open. */
    write_cfg("data_dir: store\nmemtable_size: 1K\n");
    assert_int_equal(stash_open_config(path, &db), -EINVAL);
    assert_non_null(strstr(stash_last_error(NULL), "memtable_size"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_documented_example, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_every_key, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_bad_files, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, tu_teardown),
        cmocka_unit_test_setup_teardown(test_open_config, setup, tu_teardown),
    };
    tu_filter();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
