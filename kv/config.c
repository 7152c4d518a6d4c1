/*
 * config.c - stash_config_load() and stash_open_config(): the YAML config
 * file, read with libyaml's document loader.
 *
 * The file is one mapping of scalar keys to scalar values: data_dir plus the
 * fields of stash_options_t under their own names.  Anything else -- an
 * unknown or repeated key, a value that is not a plain non-negative number
 * where one is wanted, a nested value, a file that is not YAML -- is refused
 * with -EINVAL and a message naming the file, the key and the line.
 */
#include "smartstash.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "err.h"

enum kind { K_SIZE, K_UINT, K_INT, K_SINT, K_BOOL, K_DIR, K_NAME };

struct field {
    const char *name;
    enum kind kind;
    size_t off;        /* offset in stash_options_t */
};

#define F(name, kind) { #name, kind, offsetof(stash_options_t, name) }
static const struct field fields[] = {
    { "data_dir", K_DIR, 0 },
    F(memtable_size, K_SIZE),
    F(compaction_interval, K_UINT),
    F(wal_flush_interval, K_UINT),
    F(compression_level, K_SINT),
    F(block_cache_size, K_SIZE),
    F(bloom_bits_per_key, K_INT),
    F(create_if_missing, K_BOOL),
    F(read_only, K_BOOL),
    F(block_size, K_SIZE),
    F(target_file_size, K_SIZE),
    F(level1_max_bytes, K_SIZE),
    F(l0_compaction_trigger, K_INT),
    F(l0_slowdown_trigger, K_INT),
    F(l0_stop_trigger, K_INT),
    F(max_open_files, K_INT),
    F(mmap_reads, K_BOOL),
    F(snapshot_dir, K_NAME),
};
#define NFIELDS (sizeof fields / sizeof fields[0])

/*
 * Parse a non-negative number with an optional binary suffix (sizes only).
 * Returns 0, or -1 with *why set.
 */
static int parse_number(const char *s, int sizes, uint64_t max, uint64_t *out, const char **why)
{
    const char *p = s;
    if (!isdigit((unsigned char)*p)) {
        *why = *p == '-' ? "must not be negative" : "is not a number";
        return -1;
    }
    uint64_t v = 0;
    for (; isdigit((unsigned char)*p); p++) {
        if (v > (UINT64_MAX - 9) / 10) {
            *why = "is too large";
            return -1;
        }
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (*p) {
        static const struct { const char *s; unsigned shift; } suf[] = {
            { "k", 10 }, { "kb", 10 }, { "kib", 10 },
            { "m", 20 }, { "mb", 20 }, { "mib", 20 },
            { "g", 30 }, { "gb", 30 }, { "gib", 30 },
        };
        unsigned shift = 0;
        for (size_t i = 0; sizes && i < sizeof suf / sizeof suf[0]; i++)
            if (strcasecmp(p, suf[i].s) == 0)
                shift = suf[i].shift;
        if (!shift) {
            *why = sizes ? "has an unknown suffix (use K, M, G, KiB, MiB or GiB)" : "is not a number";
            return -1;
        }
        if (v > (UINT64_MAX >> shift)) {
            *why = "is too large";
            return -1;
        }
        v <<= shift;
    }
    if (v > max) {
        *why = "is too large";
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_bool(const char *s, int *out)
{
    static const char *yes[] = { "true", "yes", "on", "1" }, *no[] = { "false", "no", "off", "0" };
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

/* DATA_DIR relative to the directory of the config file at PATH. */
static char *resolve_dir(const char *path, const char *dir)
{
    if (dir[0] == '/')
        return strdup(dir);
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(dir);
    size_t n = (size_t)(slash - path) + 1;
    char *r = malloc(n + strlen(dir) + 1);
    if (r) {
        memcpy(r, path, n);
        strcpy(r + n, dir);
    }
    return r;
}

static int set_field(const char *path, const struct field *f, const char *val, int line,
                     stash_options_t *o, char **dir)
{
    uint64_t v;
    const char *why = NULL;
    if (f->kind == K_DIR) {
        if (!*val)
            return err_set(-EINVAL, "config %s line %d: data_dir is empty", path, line);
        *dir = resolve_dir(path, val);
        return *dir ? 0 : err_set(-ENOMEM, "out of memory");
    }
    char *dst = (char *)o + f->off;
    if (f->kind == K_NAME) {
        /* "" is a value here: it reserves no name. */
        if (strlen(val) >= sizeof o->snapshot_dir || strchr(val, '/') || !strcmp(val, ".") ||
            !strcmp(val, ".."))
            return err_set(-EINVAL, "config %s line %d: %s '%s' is not a file name (no '/', not . "
                           "or .., under 256 bytes)", path, line, f->name, val);
        strcpy(dst, val);
        return 0;
    }
    if (!*val)
        return err_set(-EINVAL, "config %s line %d: %s has no value", path, line, f->name);
    switch (f->kind) {
    case K_BOOL: {
        int b;
        if (parse_bool(val, &b) < 0)
            return err_set(-EINVAL, "config %s line %d: %s must be true or false, not '%s'",
                           path, line, f->name, val);
        memcpy(dst, &b, sizeof b);
        return 0;
    }
    case K_SIZE:
        if (parse_number(val, 1, SIZE_MAX, &v, &why) < 0)
            break;
        size_t sz = (size_t)v;
        memcpy(dst, &sz, sizeof sz);
        return 0;
    case K_UINT:
        if (parse_number(val, 0, UINT_MAX, &v, &why) < 0)
            break;
        unsigned u = (unsigned)v;
        memcpy(dst, &u, sizeof u);
        return 0;
    case K_INT:
        if (parse_number(val, 0, INT_MAX, &v, &why) < 0)
            break;
        int i = (int)v;
        memcpy(dst, &i, sizeof i);
        return 0;
    case K_SINT: {   /* may be negative */
        int neg = *val == '-';
        if (parse_number(val + neg, 0, INT_MAX, &v, &why) < 0)
            break;
        int si = neg ? -(int)v : (int)v;
        memcpy(dst, &si, sizeof si);
        return 0;
    }
    case K_DIR:
    case K_NAME:
        break;
    }
    return err_set(-EINVAL, "config %s line %d: %s '%s' %s", path, line, f->name, val, why);
}

/* Walk the root mapping of DOC, filling O and *DIR. */
static int walk(const char *path, yaml_document_t *doc, stash_options_t *o, char **dir)
{
    yaml_node_t *root = yaml_document_get_root_node(doc);
    if (!root)
        return err_set(-EINVAL, "config %s: the file is empty", path);
    if (root->type != YAML_MAPPING_NODE)
        return err_set(-EINVAL, "config %s line %d: expected a mapping of keys to values",
                       path, (int)root->start_mark.line + 1);
    int seen[NFIELDS] = { 0 };
    for (yaml_node_pair_t *pr = root->data.mapping.pairs.start;
         pr < root->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = yaml_document_get_node(doc, pr->key);
        yaml_node_t *v = yaml_document_get_node(doc, pr->value);
        int line = (int)k->start_mark.line + 1;
        if (k->type != YAML_SCALAR_NODE)
            return err_set(-EINVAL, "config %s line %d: a key must be a plain name", path, line);
        const char *name = (const char *)k->data.scalar.value;
        if (strlen(name) != k->data.scalar.length)
            return err_set(-EINVAL, "config %s line %d: a key holds a NUL byte", path, line);
        size_t i;
        for (i = 0; i < NFIELDS && strcmp(fields[i].name, name) != 0; i++)
            ;
        if (i == NFIELDS)
            return err_set(-EINVAL, "config %s line %d: unknown key '%s'", path, line, name);
        if (seen[i]++)
            return err_set(-EINVAL, "config %s line %d: key '%s' appears twice", path, line, name);
        if (v->type != YAML_SCALAR_NODE)
            return err_set(-EINVAL, "config %s line %d: %s must be a single value", path,
                           (int)v->start_mark.line + 1, name);
        if (strlen((const char *)v->data.scalar.value) != v->data.scalar.length)
            return err_set(-EINVAL, "config %s line %d: the value of %s holds a NUL byte", path,
                           (int)v->start_mark.line + 1, name);
        int rc = set_field(path, &fields[i], (const char *)v->data.scalar.value,
                           (int)v->start_mark.line + 1, o, dir);
        if (rc)
            return rc;
    }
    if (!*dir)
        return err_set(-EINVAL, "config %s: data_dir is missing", path);
    return 0;
}

int stash_config_load(const char *yaml_path, stash_options_t *o, char **data_dir)
{
    if (!yaml_path || !o || !data_dir)
        return err_set(-EINVAL, "stash_config_load: bad arguments");
    stash_options_init(o);
    *data_dir = NULL;
    FILE *f = fopen(yaml_path, "rb");
    if (!f)
        return err_set(-errno, "config %s: %s", yaml_path, strerror(errno));
    yaml_parser_t parser;
    yaml_document_t doc;
    int rc;
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        return err_set(-ENOMEM, "out of memory");
    }
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        rc = err_set(-EINVAL, "config %s line %d: not valid YAML: %s", yaml_path,
                     (int)parser.problem_mark.line + 1,
                     parser.problem ? parser.problem : "parse error");
    } else {
        char *dir = NULL;
        rc = walk(yaml_path, &doc, o, &dir);
        if (rc == 0) {
            /* A second document in the same file is not a config we understand. */
            yaml_document_t more;
            if (!yaml_parser_load(&parser, &more)) {
                rc = err_set(-EINVAL, "config %s line %d: not valid YAML: %s", yaml_path,
                             (int)parser.problem_mark.line + 1,
                             parser.problem ? parser.problem : "parse error");
            } else {
                if (yaml_document_get_root_node(&more))
                    rc = err_set(-EINVAL, "config %s: more than one YAML document", yaml_path);
                yaml_document_delete(&more);
            }
        }
        if (rc == 0)
            *data_dir = dir;
        else
            free(dir);
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}

int stash_open_config(const char *yaml_path, stash_t **out)
{
    stash_options_t o;
    char *dir;
    if (!out)
        return err_set(-EINVAL, "stash_open_config: bad arguments");
    *out = NULL;
    int rc = stash_config_load(yaml_path, &o, &dir);
    if (rc)
        return rc;
    rc = stash_open(dir, &o, out);
    free(dir);
    return rc;
}
