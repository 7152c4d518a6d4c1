/*
 * stashctl.c - the administration tool: read and write keys, list them,
 * show statistics, compact, and check every checksum of a store that no
 * other process holds.
 *
 *   stashctl [-d DATA_DIR | -c CONFIG] COMMAND [ARGS]
 *
 * Exit codes: 0 success, 1 not found / damage found / the store is busy or
 * cannot be opened, 2 bad usage.  Every failure prints one line naming what
 * failed and why.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "smartstash.h"
#include "batch.h"
#include "coding.h"
#include "ikey.h"
#include "value.h"
#include "vlog.h"
#include "sstable.h"
#include "version.h"
#include "wal.h"
#include "crc32c.h"

static const char *usage_line =
    "usage: stashctl [-d DATA_DIR | -c CONFIG] COMMAND [ARGS]\n"
    "commands:\n"
    "  put KEY [VALUE]                       set KEY (VALUE from stdin when absent)\n"
    "  get KEY                               write KEY's value to stdout\n"
    "  del KEY                               delete KEY\n"
    "  scan [PREFIX] [--values] [--limit N] [--null]\n"
    "                                        list keys in order (escaped; --null: raw, NUL-separated)\n"
    "  stats                                 print the store's statistics\n"
    "  compact                               compact the whole store\n"
    "  check                                 verify every checksum of every file\n"
    "  backup [--snapshot NAME] DEST_DIR     copy the store, consistent at one instant (or as\n"
    "                                        named snapshot NAME saw it), to DEST_DIR\n"
    "  snapshot create|delete NAME           take or drop a named snapshot (stashfs shows it\n"
    "                                        under .snapshots/NAME)\n"
    "  snapshot list                         list the named snapshots\n"
    "  dump-sst FILE                         print every entry of a table file\n"
    "  dump-wal FILE                         print every record of a log or MANIFEST file\n"
    "(dump-sst and dump-wal take a file path and need no -d/-c)\n";

static int usage(const char *why)
{
    if (why)
        fprintf(stderr, "stashctl: %s\n", why);
    fputs(usage_line, stderr);
    return 2;
}

static int fail(const char *what)
{
    fprintf(stderr, "stashctl: %s: %s\n", what, stash_last_error(NULL));
    return 1;
}

/* fail() for a call that returned RC: its errno's text when the library
 * left no message (a batch refuses a key before any store sees it). */
static int fail_rc(const char *what, int rc)
{
    const char *m = stash_last_error(NULL);
    fprintf(stderr, "stashctl: %s: %s\n", what, m && *m ? m : strerror(rc < 0 ? -rc : EIO));
    return 1;
}

static int print_snapshot(void *arg, const char *name, uint64_t seq, int64_t ctime_ns)
{
    char when[64];
    time_t t = (time_t)(ctime_ns / 1000000000);
    struct tm tm;
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
    printf("%s\t%s\tsequence %llu\n", name, when, (unsigned long long)seq);
    return 0;
}

static int open_store(const char *dir, const char *cfg, int read_only, stash_t **db, int *busy)
{
    stash_options_t o;
    char *d = NULL;
    int rc;
    if (cfg) {
        if ((rc = stash_config_load(cfg, &o, &d)) != 0)
            return fail("config");
        dir = d;
    } else {
        stash_options_init(&o);
    }
    o.create_if_missing = 0;
    o.read_only = read_only;
    rc = stash_open(dir, &o, db);
    stash_free(d);
    if (rc == -EBUSY && busy) {
        *busy = 1;
        return 1;
    }
    if (rc) {
        fprintf(stderr, "stashctl: cannot open the store: %s\n", stash_last_error(NULL));
        return 1;
    }
    return 0;
}

/*
 * The store in DIR is held by another process.  When that is a stashfs
 * daemon, it takes the backup: stashctl asks through an attribute of the
 * mount's root (see stashfs), and waits for the copy.  Otherwise the store
 * is busy, said in one line.
 */
static int backup_through_mount(const char *dir, const char *snap, const char *dest)
{
    char lock[PATH_MAX], txt[1100] = "";
    snprintf(lock, sizeof lock, "%s/LOCK", dir);
    int fd = open(lock, O_RDONLY | O_CLOEXEC);
    ssize_t k = fd >= 0 ? read(fd, txt, sizeof txt - 1) : -1;
    if (fd >= 0)
        close(fd);
    txt[k > 0 ? k : 0] = '\0';
    char *note = strchr(txt, '\n');
    if (note) {
        *note++ = '\0';
        note[strcspn(note, "\n")] = '\0';
    }
    const char *tag = "stashfs, mounted at ";
    if (!note || strncmp(note, tag, strlen(tag))) {
        fprintf(stderr, "stashctl: cannot open the store: %s\n", stash_last_error(NULL));
        return 1;
    }
    const char *mnt = note + strlen(tag);
    /* The value: [NAME NUL] DEST, DEST absolute (the daemon runs in /). */
    char cwd[PATH_MAX] = "";
    if (dest[0] != '/' && !getcwd(cwd, sizeof cwd)) {
        fprintf(stderr, "stashctl: getcwd: %s\n", strerror(errno));
        return 1;
    }
    size_t sl = snap ? strlen(snap) + 1 : 0, n = sl + strlen(cwd) + 1 + strlen(dest);
    char *val = malloc(n + 1);
    if (!val) {
        fprintf(stderr, "stashctl: out of memory\n");
        return 1;
    }
    if (snap)
        memcpy(val, snap, sl);
    snprintf(val + sl, n + 1 - sl, "%s%s%s", cwd, *cwd ? "/" : "", dest);
    n = sl + strlen(val + sl);
    int ok = setxattr(mnt, snap ? "user.stashfs.backup-snapshot" : "user.stashfs.backup", val, n, 0) == 0;
    free(val);
    if (ok)
        return 0;
    int e = errno;
    char msg[1100];
    ssize_t m = e == ENOTSUP || e == EPERM || e == EACCES ? -1 : getxattr(mnt, "user.stashfs.backup", msg, sizeof msg - 1);
    msg[m > 0 ? m : 0] = '\0';
    fprintf(stderr, "stashctl: backup by stashfs (process %s, mounted at %s): %s\n", txt, mnt,
            m > 0 ? msg : strerror(e));
    return 1;
}

/* stash_put_stream's source: standard input. */
static int read_stdin(void *arg, void *buf, size_t len, size_t *got)
{
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, len);
        if (n >= 0) {
            *got = (size_t)n;
            return 0;
        }
        if (errno != EINTR) {
            int e = errno;
            fprintf(stderr, "stashctl: reading standard input: %s\n", strerror(e));
            *(int *)arg = 1;
            return -e;
        }
    }
}

/* KEY's value to standard output, 1 MiB at a time, all at one instant. */
static int cmd_get(stash_t *db, const char *key)
{
    size_t cap = 1u << 20, n;
    char *buf = malloc(cap);
    stash_snapshot_t *s = stash_snapshot_new(db);
    if (!buf || !s) {
        free(buf);
        stash_snapshot_free(db, s);
        fprintf(stderr, "stashctl: out of memory\n");
        return 1;
    }
    int rc = 0;
    for (uint64_t off = 0;; off += n) {
        int r = stash_pread_at(db, s, key, strlen(key), buf, cap, off, &n);
        if (r == -ENOENT) {
            fprintf(stderr, "stashctl: %s: not found\n", key);
            rc = 1;
        } else if (r) {
            rc = fail("get");
        } else if (n && fwrite(buf, 1, n, stdout) != n) {
            fprintf(stderr, "stashctl: writing standard output: %s\n", strerror(errno));
            rc = 1;
        }
        if (rc || n == 0)
            break;
    }
    if (rc == 0 && fflush(stdout) != 0) {
        fprintf(stderr, "stashctl: writing standard output: %s\n", strerror(errno));
        rc = 1;
    }
    free(buf);
    stash_snapshot_free(db, s);
    return rc;
}

/* A key as one printable line: bytes outside printable ASCII, and the
 * backslash, as \xHH. */
static void print_escaped(const unsigned char *k, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (isprint(k[i]) && k[i] != '\\')
            putchar(k[i]);
        else
            printf("\\x%02x", k[i]);
    }
}

static int cmd_scan(stash_t *db, int argc, char **argv)
{
    const char *prefix = "";
    int values = 0, nul = 0;
    long limit = -1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--values"))
            values = 1;
        else if (!strcmp(argv[i], "--null"))
            nul = 1;
        else if (!strcmp(argv[i], "--limit") && i + 1 < argc) {
            char *end;
            limit = strtol(argv[++i], &end, 10);
            if (*end || limit < 0)
                return usage("--limit takes a non-negative number");
        } else if (argv[i][0] == '-' && argv[i][1] == '-')
            return usage("unknown scan option");
        else
            prefix = argv[i];
    }
    size_t plen = strlen(prefix);
    stash_iter_t *it = stash_iter_new(db, NULL);
    if (!it)
        return fail("scan");
    long n = 0;
    /* Stop at the prefix's end, not at the first live key after it. */
    size_t el = plen;
    while (el && (unsigned char)prefix[el - 1] == 0xFF)
        el--;
    if (el) {
        char *end = strndup(prefix, el);
        if (end)
            end[el - 1]++;
        if (!end || stash_iter_set_upper(it, end, el) != 0) {
            free(end);
            stash_iter_free(it);
            return fail("scan");
        }
        free(end);
    }
    if (plen)
        stash_iter_seek(it, prefix, plen);
    else
        stash_iter_seek_first(it);
    for (; stash_iter_valid(it) && (limit < 0 || n < limit); stash_iter_next(it), n++) {
        size_t kl, vl;
        const unsigned char *k = stash_iter_key(it, &kl);
        if (kl < plen || memcmp(k, prefix, plen) != 0)
            break;
        /* A value that cannot be read stops the scan (below), before its
         * key is printed with no value. */
        const unsigned char *v = values ? stash_iter_value(it, &vl) : NULL;
        if (values && !v && stash_iter_status(it))
            break;
        if (nul) {
            fwrite(k, 1, kl, stdout);
            putchar('\0');
            if (values) {
                fwrite(v, 1, vl, stdout);
                putchar('\0');
            }
            continue;
        }
        print_escaped(k, kl);
        if (values) {
            putchar('\t');
            print_escaped(v, vl);
        }
        putchar('\n');
    }
    int rc = stash_iter_status(it);
    stash_iter_free(it);
    if (rc) {
        fprintf(stderr, "stashctl: scan stopped: %s\n", stash_strerror(rc));
        return 1;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}

/* ---- dump-sst, dump-wal: every record of one file, for debugging ---- */

/* Up to 48 bytes of P, escaped, and how much was left out. */
static void print_preview(const uint8_t *p, size_t n)
{
    putchar('"');
    print_escaped(p, n > 48 ? 48 : n);
    putchar('"');
    if (n > 48)
        printf("... (%zu bytes)", n);
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* A user key from its stored form (a leading 0xFF is stored as FF 00). */
static void print_user_key(const uint8_t *k, size_t kl)
{
    if (kl >= 2 && k[0] == NS_BYTE && k[1] == NS_ESC) {
        fputs("\\xff", stdout);
        print_escaped(k + 2, kl - 2);
    } else {
        print_escaped(k, kl);
    }
}

/* What envelope E (decoded from V, VL bytes) holds. */
static void print_envelope(const struct envelope *e, const uint8_t *v, size_t vl)
{
    if (e->kind == VK_LINK) {
        printf(" link to value %016llx", (unsigned long long)e->link);
    } else if (e->kind == VK_PLAIN) {
        printf(" plain %zu bytes ", vl - (size_t)(e->data - v));
        print_preview(e->data, vl - (size_t)(e->data - v));
    } else {
        printf(" %s mode %o uid %u gid %u mtime %lld xattrs %zu bytes, ", e->kind == VK_ATTR ? "attr" : "chunked",
               (unsigned)e->st.mode, (unsigned)e->st.uid, (unsigned)e->st.gid, (long long)e->st.mtime_ns, e->xlen);
        if (e->kind == VK_ATTR) {
            printf("%llu bytes ", (unsigned long long)e->st.size);
            print_preview(e->data, (size_t)e->st.size);
        } else {
            printf("%llu bytes in gen %016llx", (unsigned long long)e->st.size, (unsigned long long)e->gen);
            if (e->chunks_known)
                printf(", %llu chunk%s", (unsigned long long)e->chunks, e->chunks == 1 ? "" : "s");
        }
    }
}

/* One stored entry: its sequence number and type, the key (a user key, or
 * which of the engine's records it is), and what its value holds. */
static void print_entry(uint64_t seq, int type, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    printf("%llu %s ", (unsigned long long)seq, type == KT_PUT ? "put" : type == KT_DEL ? "del" : "?");
    if (key_is_sys(k, kl)) {
        int ns = kl >= 2 ? k[1] : -1;
        if ((ns == NS_CHUNK || ns == NS_TCHUNK) && kl == CHUNK_KEY_LEN)
            printf("<chunk gen %016llx index %llu>", (unsigned long long)be64(k + 2),
                   (unsigned long long)be64(k + 10));
        else if (ns == NS_PATCH && kl == CHUNK_KEY_LEN)
            printf("<patches of chunk gen %016llx index %llu>", (unsigned long long)be64(k + 2),
                   (unsigned long long)be64(k + 10));
        else if ((ns == NS_BLOB || ns == NS_STREAM) && kl == BLOB_KEY_LEN)
            printf("<%s gen %016llx>", ns == NS_BLOB ? "owner" : "stream", (unsigned long long)be64(k + 2));
        else if (ns == NS_SNAP) {
            fputs("<snapshot ", stdout);
            print_escaped(k + 2, kl - 2);
            putchar('>');
        } else if (ns == NS_LINK && kl == LINK_KEY_LEN) {
            printf("<linked value %016llx>", (unsigned long long)be64(k + 2));
        } else if (ns == NS_LREF && kl > LINK_KEY_LEN) {
            printf("<value %016llx has name ", (unsigned long long)be64(k + 2));
            print_user_key(k + LINK_KEY_LEN, kl - LINK_KEY_LEN);
            putchar('>');
        } else {
            fputs("<engine key ", stdout);
            print_escaped(k, kl);
            putchar('>');
        }
        if (type == KT_PUT) {
            struct vptr p;
            if (ns == NS_CHUNK || (ns == NS_TCHUNK && vl >= 1 && v[0] == CTAG_BYTES))
                printf(" %zu bytes", ns == NS_CHUNK ? vl : vl - 1);
            else if (ns == NS_TCHUNK && vptr_decode(v, vl, &p) == 0)
                printf(" %u bytes%s in value file %06llu.val at offset %llu", p.len, p.zstd ? " (zstd)" : "",
                       (unsigned long long)p.file, (unsigned long long)p.off);
            else if (ns == NS_TCHUNK)
                printf(" DAMAGED CHUNK RECORD (%zu bytes)", vl);
            else if (ns == NS_PATCH) {
                uint8_t *c = calloc(1, CHUNK_SIZE);
                size_t end = 0;
                if (c && patch_apply(v, vl, c, &end) == 0)
                    printf(" %zu bytes, written up to byte %zu", vl, end);
                else if (c)
                    printf(" DAMAGED PATCH RECORD (%zu bytes)", vl);
                free(c);
            }
            else if (ns == NS_BLOB || ns == NS_STREAM) {
                fputs(" for ", stdout);
                print_user_key(v, vl);
            } else if (ns == NS_SNAP && vl >= 8) {
                printf(" sequence %llu", (unsigned long long)dec_u64(v));
            } else if (ns == NS_LINK && kl == LINK_KEY_LEN) {
                struct envelope e;
                if (link_decode(v, vl, be64(k + 2), &e) < 0) {
                    printf(" DAMAGED VALUE (%zu bytes)", vl);
                } else {
                    printf(" %u names,", e.nlink);
                    print_envelope(&e, v, vl);
                }
            }
        }
        putchar('\n');
        return;
    }
    print_user_key(k, kl);
    if (type == KT_PUT) {
        struct envelope e;
        if (env_decode(v, vl, &e) < 0) {
            printf(" DAMAGED VALUE (%zu bytes)\n", vl);
            return;
        }
        print_envelope(&e, v, vl);
    }
    putchar('\n');
}

static int dump_sst(const char *path)
{
    sst_reader_t *r;
    if (sst_open(path, 0, &ikey_fmt, NULL, &r) != 0) {
        fprintf(stderr, "stashctl: %s\n", stash_last_error(NULL));
        return 1;
    }
    printf("# %s: %llu entries, %llu bytes\n", path, (unsigned long long)sst_entries(r),
           (unsigned long long)sst_file_size(r));
    sst_iter_t *it = sst_iter_new(r);
    int bad_key = 0;
    for (sst_iter_seek_first(it); it && sst_iter_valid(it); sst_iter_next(it)) {
        size_t kl, vl;
        const uint8_t *k = sst_iter_key(it, &kl);
        const uint8_t *v = sst_iter_value(it, &vl);
        if (kl < 8) {
            bad_key = 1;
            break;
        }
        uint64_t tag = ikey_tag(k, kl);
        print_entry(TAG_SEQ(tag), TAG_TYPE(tag), k, ikey_ulen(kl), v, vl);
    }
    int rc = !it ? -ENOMEM : bad_key ? -EIO : sst_iter_status(it);
    sst_iter_free(it);
    sst_close(r);
    if (rc) {
        fprintf(stderr, "stashctl: %s: %s\n", path,
                bad_key ? "an entry's key is shorter than an internal key (8 bytes): damaged"
                        : stash_last_error(NULL));
        return 1;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}

static int print_batch_entry(void *arg, uint64_t seq, int type, const uint8_t *k, size_t kl,
                             const uint8_t *v, size_t vl)
{
    print_entry(seq, type, k, kl, v, vl);
    return 0;
}

/* A log record is a write batch; a MANIFEST record a version edit. */
static int print_record(void *arg, const void *rec, size_t len, uint64_t off)
{
    const uint8_t *p = rec, *end = p + len;
    if (*(int *)arg) {
        printf("# edit at offset %llu:", (unsigned long long)off);
        if (len < 1 || p[0] != 1) {
            printf(" unknown edit format\n");
            return 0;
        }
        /* tag 6: an added table with its entry count and key range */
        static const char *names[] = {NULL, "log", "next_file", "last_seq", "add", "delete", "add"};
        static const int nargs[] = {0, 1, 1, 1, 3, 2, 4};
        for (p++; p < end;) {
            int tag = *p++;
            if (tag < 1 || tag > 6) {
                printf(" <unknown tag %d>", tag);
                break;
            }
            printf(" %s", names[tag]);
            for (int i = 0; i < nargs[tag]; i++) {
                uint64_t v;
                size_t n = dec_varint(p, end, &v);
                if (!n) {
                    printf(" <truncated>");
                    p = end;
                    break;
                }
                p += n;
                printf("%s%llu", i == 3 ? " entries=" : i ? "," : " ", (unsigned long long)v);
            }
            for (int i = 0; tag == 6 && i < 2 && p < end; i++) {
                uint64_t kl;
                size_t n = dec_varint(p, end, &kl);
                if (!n || kl < 8 || kl > (uint64_t)(end - p - (ptrdiff_t)n)) {
                    printf(" <bad key>");
                    p = end;
                    break;
                }
                p += n;
                fputs(i ? ".." : " keys ", stdout);
                print_escaped(p, (size_t)kl - 8);   /* the user key, without its trailer */
                p += kl;
            }
        }
        putchar('\n');
        return 0;
    }
    uint64_t first;
    uint32_t count;
    if (batch_decode(p, len, NULL, NULL, &first, &count) != 0) {
        printf("# batch at offset %llu: DAMAGED (%zu bytes)\n", (unsigned long long)off, len);
        return 0;
    }
    printf("# batch at offset %llu: %u entries from sequence %llu\n", (unsigned long long)off, count,
           (unsigned long long)first);
    return batch_decode(p, len, print_batch_entry, NULL, NULL, NULL);
}

/* Whether the file at PATH holds only zero bytes from offset FROM on. */
static int zero_tail(const char *path, uint64_t from)
{
    FILE *f = fopen(path, "rb");
    if (!f || fseeko(f, (off_t)from, SEEK_SET) != 0) {
        if (f)
            fclose(f);
        return 0;
    }
    int c, zero = 1;
    while (zero && (c = getc(f)) != EOF)
        zero = c == 0;
    fclose(f);
    return zero;
}
static int dump_wal(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    int manifest = !strncmp(base, "MANIFEST-", 9);
    char *end;
    unsigned long long num = strtoull(manifest ? base + 9 : base, &end, 10);
    if (end == (manifest ? base + 9 : base) || (manifest ? *end != '\0' : strcmp(end, ".log") != 0)) {
        fprintf(stderr, "stashctl: %s: not a log (NNNNNN.log) or MANIFEST-NNNNNN name\n", path);
        return 1;
    }
    printf("# %s\n", path);
    uint64_t good;
    if (wal_replay(path, num, WAL_NEWEST, print_record, &manifest, &good) != 0) {
        fprintf(stderr, "stashctl: %s\n", stash_last_error(NULL));
        return 1;
    }
    struct stat st;
    if (stat(path, &st) == 0 && (uint64_t)st.st_size > good)
        printf("# %llu bytes after the last whole record (%s)\n", (unsigned long long)st.st_size - good,
               zero_tail(path, good) ? "zeros written ahead of the log" : "a torn tail");
    return fflush(stdout) == 0 ? 0 : 1;
}

/* ---- progress bars (on a terminal only) ---- */

static int show_progress;       /* stderr is a terminal */
static uint64_t prog_total, prog_done;
static int prog_last = -1;

static void progress(const char *what, uint64_t done, uint64_t total)
{
    if (!show_progress || !total)
        return;
    int pct = done >= total ? 100 : (int)(done * 100 / total);
    if (pct == prog_last)
        return;
    prog_last = pct;
    char bar[41];
    for (int i = 0; i < 40; i++)
        bar[i] = i < pct * 40 / 100 ? '#' : '.';
    bar[40] = 0;
    fprintf(stderr, "\r%s [%s] %3d%%", what, bar, pct);
}

static void progress_end(const char *what)
{
    if (!show_progress)
        return;
    prog_last = -1;
    progress(what, 1, 1);
    fputc('\n', stderr);
    prog_last = -1;
}

static void clear_progress(void)
{
    if (show_progress && prog_last >= 0) {
        fprintf(stderr, "\r%60s\r", "");
        prog_last = -1;
    }
}

/* compact: a thread draws the bar from the engine's counters while
 * stash_compact_range works.  The whole-store compaction reads level 0
 * into 1, then 1 (grown) into 2, and so on to the deepest level: its input
 * is about the sum, over those steps, of everything above plus the next
 * level. */
struct compact_watch {
    stash_t *db;
    uint64_t base, total;
    atomic_int done;
};

static void *watch_compaction(void *arg)
{
    struct compact_watch *w = arg;
    while (!atomic_load(&w->done)) {
        stash_counters_t c;
        if (stash_counters(w->db, &c) == 0) {
            uint64_t d = c.compact_entries_read - w->base;
            progress("compacting", d < w->total ? d : w->total - 1, w->total);
        }
        usleep(200000);
    }
    return NULL;
}

static int cmd_compact(stash_t *db)
{
    struct compact_watch w = {.db = db};
    stash_counters_t c;
    pthread_t t;
    int watching = 0;
    if (show_progress && stash_counters(db, &c) == 0) {
        int deepest = 1;
        for (int l = 1; l < STASH_LEVELS; l++)
            if (c.level_tables[l])
                deepest = l;
        uint64_t above = 0;
        for (int l = 0; l < deepest; l++) {
            above += c.level_entries[l];
            w.total += above + c.level_entries[l + 1];
        }
        w.base = c.compact_entries_read;
        watching = w.total > 0 && pthread_create(&t, NULL, watch_compaction, &w) == 0;
    }
    int rc = stash_compact_range(db, NULL, 0, NULL, 0);
    if (watching) {
        atomic_store(&w.done, 1);
        pthread_join(t, NULL);
    }
    if (rc == 0)
        progress_end("compacting");
    else
        clear_progress();
    return rc ? fail("compact") : 0;
}

/* ---- check ---- */

static int damaged;

static void report(const char *file, const char *what)
{
    clear_progress();
    printf("damaged: %s: %s\n", file, what);
    damaged++;
}

/*
 * Pointers into value files (docs/format.md) are checked as the tables and
 * logs holding them are read: the bytes each names are read and their CRC
 * compared.  Damage is summed up per value file (there may be thousands of
 * pointers into one missing file) and reported at the end.
 */
#define VDAMAGE_MAX 64
static struct {
    uint64_t num;
    uint64_t bad;
    char first[200];
} vdamage[VDAMAGE_MAX];
static int nvdamage;
static uint64_t vchecked;
static int vfd = -1;
static uint64_t vfd_num;
static uint8_t *vbuf;

static void vlog_bad(uint64_t num, const char *holder, uint64_t off, const char *why)
{
    int i = 0;
    while (i < nvdamage && vdamage[i].num != num)
        i++;
    if (i == nvdamage) {
        if (nvdamage == VDAMAGE_MAX)
            i = VDAMAGE_MAX - 1;    /* lumped in with the last one */
        else {
            nvdamage++;
            vdamage[i].num = num;
            snprintf(vdamage[i].first, sizeof vdamage[i].first, "%s at offset %llu (pointed to from %s)", why,
                     (unsigned long long)off, holder);
        }
    }
    vdamage[i].bad++;
}

/*
 * A pointer into a value file that is not there is damage only when it is
 * the newest version of its chunk: a file goes once nothing anyone can
 * read points into it, while older versions in logs and tables (hidden by
 * a later write or deletion of the chunk) may still name it.  Such
 * pointers are suspects until a second walk looks for newer versions.
 */
struct suspect {
    uint8_t key[CHUNK_KEY_LEN];
    uint64_t seq, file, off;
    uint64_t newer;     /* the lowest sequence of a newer version (UINT64_MAX: none) */
    char holder[40];
};
static struct suspect *sus;
static size_t nsus, capsus;

static void suspect(const uint8_t *key, uint64_t seq, const struct vptr *p, const char *holder)
{
    if (nsus == capsus) {
        size_t cap = capsus ? 2 * capsus : 256;
        struct suspect *n = realloc(sus, cap * sizeof *n);
        if (!n) {
            vlog_bad(p->file, holder, p->off, "missing");    /* no memory to tell: say it */
            return;
        }
        sus = n;
        capsus = cap;
    }
    struct suspect *x = &sus[nsus++];
    memcpy(x->key, key, CHUNK_KEY_LEN);
    x->seq = seq;
    x->file = p->file;
    x->off = p->off;
    x->newer = UINT64_MAX;
    snprintf(x->holder, sizeof x->holder, "%s", holder);
}

static int suspect_cmp(const void *a, const void *b)
{
    const struct suspect *x = a, *y = b;
    int c = memcmp(x->key, y->key, CHUNK_KEY_LEN);
    return c ? c : x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Second walk: an entry of chunk KEY at SEQ hides the suspects of KEY below
 * SEQ (sus sorted by suspect_cmp). */
static void note_version(const uint8_t *key, size_t klen, uint64_t seq)
{
    if (klen != CHUNK_KEY_LEN || key[0] != NS_BYTE || key[1] != NS_TCHUNK || !nsus)
        return;
    size_t lo = 0, hi = nsus;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (memcmp(sus[mid].key, key, CHUNK_KEY_LEN) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo; i < nsus && !memcmp(sus[i].key, key, CHUNK_KEY_LEN) && sus[i].seq < seq; i++)
        if (seq < sus[i].newer)
            sus[i].newer = seq;
}

/* Named snapshots, as the second walk finds their records (the newest
 * version of each name): a version a snapshot sees is still read. */
static struct snaprec {
    uint8_t name[256];
    size_t len;
    uint64_t at;        /* the record's own sequence */
    int live;           /* its newest version is a put */
    uint64_t seq;       /* the sequence the snapshot sees */
} *snaps;
static size_t nsnaps, capsnaps;

static void note_snapshot(const uint8_t *key, size_t klen, uint64_t at, int type, const uint8_t *v, size_t vl)
{
    if (klen < 3 || klen - 2 > 255 || key[0] != NS_BYTE || key[1] != NS_SNAP)
        return;
    size_t i = 0;
    while (i < nsnaps && !(snaps[i].len == klen - 2 && !memcmp(snaps[i].name, key + 2, klen - 2)))
        i++;
    if (i == nsnaps) {
        if (nsnaps == capsnaps) {
            size_t cap = capsnaps ? 2 * capsnaps : 16;
            struct snaprec *n = realloc(snaps, cap * sizeof *n);
            if (!n)
                return;
            snaps = n;
            capsnaps = cap;
        }
        memset(&snaps[i], 0, sizeof snaps[i]);
        memcpy(snaps[i].name, key + 2, klen - 2);
        snaps[i].len = klen - 2;
        nsnaps++;
    } else if (at < snaps[i].at) {
        return;         /* an older version of the record */
    }
    snaps[i].at = at;
    snaps[i].live = type == KT_PUT && vl >= 8;
    snaps[i].seq = snaps[i].live ? dec_u64(v) : 0;
}

/* Is suspect X harmless: a newer version hides it from now and from every
 * named snapshot? */
static int suspect_hidden(const struct suspect *x)
{
    if (x->newer == UINT64_MAX)
        return 0;
    for (size_t i = 0; i < nsnaps; i++)
        if (snaps[i].live && snaps[i].seq >= x->seq && snaps[i].seq < x->newer)
            return 0;
    return 1;
}

/* The open value file's synced size (vlog_mark_decode), and why it could
 * not be opened; pointers of the newest log naming bytes a crash lost. */
static uint64_t vfd_mark;
static int vfd_err;
static uint64_t torn_ptrs;

/*
 * NEWEST: the pointer is from the newest log, whose batches recovery ends
 * at the first whose bytes a crash lost (vlog_torn): bytes past the file's
 * end but not below its synced size, or past its synced size and not
 * matching.  Those are noted, not counted as damage.
 */
static void check_ptr(const char *dir, const char *holder, const uint8_t *key, uint64_t seq, const uint8_t *v,
                      size_t vl, int newest)
{
    struct vptr p;
    if (vptr_decode(v, vl, &p) < 0 || p.len > CHUNK_SIZE) {
        report(holder, "a damaged value-file pointer");
        return;
    }
    vchecked++;
    if (!vbuf && !(vbuf = malloc(CHUNK_SIZE)))
        return;
    if (vfd < 0 || vfd_num != p.file) {
        char path[PATH_MAX];
        if (vfd >= 0)
            close(vfd);
        snprintf(path, sizeof path, "%s/%06llu.val", dir, (unsigned long long)p.file);
        vfd = open(path, O_RDONLY | O_CLOEXEC);
        vfd_err = vfd < 0 ? errno : 0;
        vfd_num = p.file;
        vfd_mark = 0;
        if (vfd >= 0) {
            uint8_t h[VLOG_HDR];
            ssize_t hr = pread(vfd, h, sizeof h, 0);
            vfd_mark = vlog_mark_decode(h, hr > 0 ? (size_t)hr : 0, p.file);
        }
    }
    if (vfd < 0) {
        errno = vfd_err;
        if (errno == ENOENT)
            suspect(key, seq, &p, holder);
        else
            vlog_bad(p.file, holder, p.off, strerror(errno));
        return;
    }
    ssize_t r = pread(vfd, vbuf, p.len, (off_t)p.off);
    int cut = r >= 0 && r != (ssize_t)p.len, bad = r == (ssize_t)p.len && crc32c(vbuf, p.len) != p.crc;
    int synced = vfd_mark != UINT64_MAX && p.off + p.len <= vfd_mark;
    if (r < 0)
        vlog_bad(p.file, holder, p.off, strerror(errno));
    else if (newest && ((cut && !synced) || (bad && p.off + p.len > vfd_mark)))
        torn_ptrs++;
    else if (cut || bad)
        vlog_bad(p.file, holder, p.off, cut ? "cut short" : "checksum mismatch");
}

static int is_vptr(int type, const uint8_t *k, size_t ukl, const uint8_t *v, size_t vl)
{
    return type == KT_PUT && ukl == CHUNK_KEY_LEN && k[0] == NS_BYTE && k[1] == NS_TCHUNK && vl >= 1 &&
           (v[0] == CTAG_VPTR || v[0] == CTAG_VPTRZ);
}

struct logcheck {
    const char *dir, *name;
    int newest;
};

static int check_log_entry(void *arg, uint64_t seq, int type, const uint8_t *key, size_t klen,
                           const uint8_t *val, size_t vlen)
{
    struct logcheck *c = arg;
    if (is_vptr(type, key, klen, val, vlen))
        check_ptr(c->dir, c->name, key, seq, val, vlen, c->newest);
    return 0;
}

static int newer_log_entry(void *arg, uint64_t seq, int type, const uint8_t *key, size_t klen,
                           const uint8_t *val, size_t vlen)
{
    (void)arg;
    note_version(key, klen, seq);
    note_snapshot(key, klen, seq, type, val, vlen);
    return 0;
}

static int newer_log_record(void *arg, const void *rec, size_t len, uint64_t off)
{
    (void)off;
    (void)batch_decode(rec, len, newer_log_entry, arg, NULL, NULL);
    return 0;
}

/* The second walk over table NAME (errors were reported by the first). */
static void newer_in_table(const char *dir, const char *name, uint64_t num)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    sst_reader_t *r;
    if (sst_open(path, num, &ikey_fmt, NULL, &r) != 0)
        return;
    sst_iter_t *it = sst_iter_new(r);
    for (sst_iter_seek_first(it); it && sst_iter_valid(it); sst_iter_next(it)) {
        size_t kl, vl;
        const uint8_t *k = sst_iter_key(it, &kl), *v = sst_iter_value(it, &vl);
        if (kl >= 8) {
            uint64_t tag = ikey_tag(k, kl);
            note_version(k, ikey_ulen(kl), TAG_SEQ(tag));
            note_snapshot(k, ikey_ulen(kl), TAG_SEQ(tag), TAG_TYPE(tag), v, vl);
        }
    }
    sst_iter_free(it);
    sst_close(r);
}

static int check_log_record(void *arg, const void *rec, size_t len, uint64_t off)
{
    /* A damaged batch is the log's damage, reported by wal_replay's CRC;
     * a record that fails to decode here is left to the engine's replay. */
    (void)batch_decode(rec, len, check_log_entry, arg, NULL, NULL);
    return 0;
}

static void vlog_report(void)
{
    for (int i = 0; i < nvdamage; i++) {
        char file[32], what[400];
        snprintf(file, sizeof file, "%06llu.val", (unsigned long long)vdamage[i].num);
        snprintf(what, sizeof what, "%llu chunk%s unreadable, the first: %s", (unsigned long long)vdamage[i].bad,
                 vdamage[i].bad == 1 ? "" : "s", vdamage[i].first);
        report(file, what);
    }
    if (vfd >= 0)
        close(vfd);
    free(vbuf);
}

/* The tables the MANIFEST names, with their sizes and entry counts. */
static uint64_t *live, *live_size, *live_entries;
static int nlive, have_live;

static int check_table(const char *dir, const char *name, uint64_t num)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    sst_reader_t *r;
    if (sst_open(path, num, &ikey_fmt, NULL, &r) != 0) {
        report(name, stash_last_error(NULL));
        return 1;
    }
    for (int i = 0; have_live && i < nlive; i++)
        if (live[i] == num && (live_size[i] != sst_file_size(r) || live_entries[i] != sst_entries(r))) {
            char what[200];
            snprintf(what, sizeof what, "not the table the MANIFEST names (%llu bytes and %llu entries, not %llu "
                     "and %llu)", (unsigned long long)sst_file_size(r), (unsigned long long)sst_entries(r),
                     (unsigned long long)live_size[i], (unsigned long long)live_entries[i]);
            report(name, what);
            sst_close(r);
            return 1;
        }
    sst_iter_t *it = sst_iter_new(r);
    if (!it) {
        report(name, "out of memory");
        sst_close(r);
        return 1;
    }
    uint64_t n = 0, all = sst_entries(r), size = sst_file_size(r);
    for (sst_iter_seek_first(it); sst_iter_valid(it); sst_iter_next(it)) {
        size_t kl, vl;
        const uint8_t *k = sst_iter_key(it, &kl), *v = sst_iter_value(it, &vl);
        if (kl < 8) {
            report(name, "an entry's key is shorter than an internal key (8 bytes)");
            break;
        }
        if (is_vptr(TAG_TYPE(ikey_tag(k, kl)), k, ikey_ulen(kl), v, vl))
            check_ptr(dir, name, k, TAG_SEQ(ikey_tag(k, kl)), v, vl, 0);
        if (++n % 4096 == 0 && all)
            progress("checking", prog_done + (n < all ? size / all * n : size), prog_total);
    }
    if (sst_iter_status(it)) {
        size_t sl, ll;
        const unsigned char *s = sst_smallest(r, &sl), *l = sst_largest(r, &ll);
        char msg[600];
        clear_progress();
        snprintf(msg, sizeof msg, "%s (table holds keys ", stash_last_error(NULL));
        printf("damaged: %s: %s", name, msg);
        print_escaped(s, sl > 8 ? sl - 8 : 0);
        fputs(" to ", stdout);
        print_escaped(l, ll > 8 ? ll - 8 : 0);
        puts(")");
        damaged++;
    } else if (n != sst_entries(r)) {
        report(name, "entry count does not match its properties");
    }
    sst_iter_free(it);
    sst_close(r);
    return 1;
}

/* The tables the MANIFEST names; a table outside it is an orphan left by an
 * interrupted flush or compaction (the next open removes it), not damage. */

/* The MANIFEST's tables; a store whose CURRENT or MANIFEST cannot be read
 * (it would not open) is damaged, and then every table is checked. */
static void load_live(const char *dir)
{
    vset_t vs;
    stash_options_t o;
    char *d = strdup(dir);
    memset(&vs, 0, sizeof vs);
    stash_options_init(&o);
    vs.dir = d;
    vs.opt = &o;
    if (vset_recover(&vs, 1) != 0 || !vs.cur) {
        report("MANIFEST", stash_last_error(NULL));
    } else {
        int n = 0;
        for (int l = 0; l < NLEVELS; l++)
            n += vs.cur->n[l];
        live = calloc((size_t)n + 1, sizeof *live);
        live_size = calloc((size_t)n + 1, sizeof *live_size);
        live_entries = calloc((size_t)n + 1, sizeof *live_entries);
        if (live && live_size && live_entries) {
            for (int l = 0; l < NLEVELS; l++)
                for (int i = 0; i < vs.cur->n[l]; i++)
                {
                    live_size[nlive] = vs.cur->f[l][i]->size;
                    live_entries[nlive] = vs.cur->f[l][i]->entries;
                    live[nlive++] = vs.cur->f[l][i]->number;
                }
            have_live = 1;
        }
    }
    vset_close(&vs);
    free(d);
}

static int is_live(uint64_t num)
{
    if (!have_live)
        return 1;   /* no readable MANIFEST: check every table */
    for (int i = 0; i < nlive; i++)
        if (live[i] == num)
            return 1;
    return 0;
}

/* The newest log may end in bytes that are not a whole record (zeros
 * written ahead are no news): a write a crash tore, which the next open
 * drops, or damage there that cannot be told from one.  Not counted as
 * damage; said, since what they held is not in the store. */
static void torn_tail_note(const char *path, const char *name, uint64_t good)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || (uint64_t)st.st_size <= good) {
        if (fd >= 0)
            close(fd);
        return;
    }
    uint8_t b[65536];
    uint64_t at = good, nonzero = 0;
    ssize_t r;
    while (!nonzero && (r = pread(fd, b, sizeof b, (off_t)at)) > 0) {
        for (ssize_t i = 0; i < r && !nonzero; i++)
            nonzero = b[i] != 0;
        at += (uint64_t)r;
    }
    close(fd);
    if (nonzero) {
        clear_progress();
        printf("note: %s: the %llu bytes after offset %llu are not a whole record (a write torn by a crash, "
               "or damage there): the next open drops them\n", name,
               (unsigned long long)((uint64_t)st.st_size - good), (unsigned long long)good);
    }
}

static int cmd_check(const char *dir)
{
    load_live(dir);
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "stashctl: cannot list %s: %s\n", dir, strerror(errno));
        return 1;
    }
    uint64_t newest_log = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        unsigned long long num = strtoull(e->d_name, &end, 10);
        if (isdigit((unsigned char)e->d_name[0]) && !strcmp(end, ".log") && num > newest_log)
            newest_log = num;
    }
    rewinddir(d);
    /* The bar counts bytes of the files to read. */
    while ((e = readdir(d))) {
        char path[PATH_MAX];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if ((isdigit((unsigned char)e->d_name[0]) || !strncmp(e->d_name, "MANIFEST-", 9)) &&
            stat(path, &st) == 0 && S_ISREG(st.st_mode))
            prog_total += (uint64_t)st.st_size;
    }
    rewinddir(d);
    int tables = 0, logs = 0, manifests = 0;
    while ((e = readdir(d))) {
        char path[PATH_MAX], *end;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (isdigit((unsigned char)e->d_name[0])) {
            unsigned long long num = strtoull(e->d_name, &end, 10);
            if (!strcmp(end, ".sst") && !is_live(num)) {
                clear_progress();
                printf("orphan: %s (in no version: left by an interrupted flush or compaction; "
                       "the next open removes it)\n", e->d_name);
            } else if (!strcmp(end, ".sst")) {
                tables += check_table(dir, e->d_name, num);
            } else if (!strcmp(end, ".log")) {
                logs++;
                struct logcheck lc = {dir, e->d_name, num == newest_log};
                uint64_t good = 0;
                if (wal_replay(path, num, num == newest_log ? WAL_NEWEST : 0, check_log_record, &lc, &good) != 0)
                    report(e->d_name, stash_last_error(NULL));
                else if (num == newest_log)
                    torn_tail_note(path, e->d_name, good);
            }
        } else if (!strncmp(e->d_name, "MANIFEST-", 9)) {
            unsigned long long num = strtoull(e->d_name + 9, &end, 10);
            manifests++;
            if (*end || wal_replay(path, num, WAL_NEWEST, NULL, NULL, NULL) != 0)
                report(e->d_name, *end ? "not a MANIFEST name" : stash_last_error(NULL));
        }
        struct stat st;
        if ((isdigit((unsigned char)e->d_name[0]) || !strncmp(e->d_name, "MANIFEST-", 9)) &&
            stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            prog_done += (uint64_t)st.st_size;
            progress("checking", prog_done, prog_total);
        }
    }
    /* Pointers into missing files: damage only where no newer version of
     * the chunk exists anywhere. */
    if (nsus) {
        qsort(sus, nsus, sizeof *sus, suspect_cmp);
        rewinddir(d);
        while ((e = readdir(d))) {
            char path[PATH_MAX], *end;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (!isdigit((unsigned char)e->d_name[0]))
                continue;
            unsigned long long num = strtoull(e->d_name, &end, 10);
            if (!strcmp(end, ".sst") && is_live(num))
                newer_in_table(dir, e->d_name, num);
            else if (!strcmp(end, ".log"))
                (void)wal_replay(path, num, num == newest_log ? WAL_NEWEST : 0, newer_log_record, NULL, NULL);
        }
        for (size_t i = 0; i < nsus; i++)
            if (!suspect_hidden(&sus[i]))
                vlog_bad(sus[i].file, sus[i].holder, sus[i].off, "missing");
        free(sus);
        free(snaps);
    }
    closedir(d);
    progress_end("checking");
    vlog_report();
    if (torn_ptrs) {
        char name[32];
        snprintf(name, sizeof name, "%06llu.log", (unsigned long long)newest_log);
        printf("note: %s names %llu value-file chunk%s that a crash lost (never synced): the next open ends "
               "the log before the first batch naming one\n", name, (unsigned long long)torn_ptrs,
               torn_ptrs == 1 ? "" : "s");
    }
    free(live);
    free(live_size);
    free(live_entries);
    printf("%s: %d tables, %d logs, %d MANIFEST, %llu value-file chunks checked, %d damaged\n",
           damaged ? "damage found" : "clean", tables, logs, manifests, (unsigned long long)vchecked, damaged);
    return damaged ? 1 : 0;
}

/* check reads the files of a store that may be too damaged to open: it takes
 * the store's lock itself (shared, as a reader would) instead of opening it. */
static int check_store(const char *dir, const char *cfg)
{
    char *d = NULL;
    stash_options_t o;
    if (cfg) {
        if (stash_config_load(cfg, &o, &d) != 0)
            return fail("config");
        dir = d;
    }
    char lock[PATH_MAX];
    snprintf(lock, sizeof lock, "%s/LOCK", dir);
    int fd = open(lock, O_RDONLY | O_CLOEXEC);
    int rc;
    if (fd < 0) {
        fprintf(stderr, "stashctl: %s holds no store: %s\n", dir, strerror(errno));
        rc = 1;
    } else if (flock(fd, LOCK_SH | LOCK_NB) < 0) {
        /* LOCK: the holder's pid, then what it is (stashfs: its mountpoint). */
        char txt[1100] = "";
        ssize_t k = pread(fd, txt, sizeof txt - 1, 0);
        txt[k > 0 ? k : 0] = '\0';
        char *note = strchr(txt, '\n');
        if (note) {
            *note++ = '\0';
            note[strcspn(note, "\n")] = '\0';
        }
        fprintf(stderr, "stashctl: store %s is in use by process %s%s%s%s\n", dir, *txt ? txt : "unknown",
                note && *note ? " (" : "", note && *note ? note : "", note && *note ? ")" : "");
        rc = 1;
    } else {
        rc = cmd_check(dir);
    }
    if (fd >= 0)
        close(fd);
    stash_free(d);
    return rc;
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *cfg = NULL;
    int c;
    if (argc == 2 && !strcmp(argv[1], "--help")) {
        fputs(usage_line, stdout);
        return 0;
    }
    while ((c = getopt(argc, argv, "+d:c:h")) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 'c': cfg = optarg; break;
        case 'h': fputs(usage_line, stdout); return 0;
        default: return usage(NULL);
        }
    }
    if (optind < argc && (!strcmp(argv[optind], "dump-sst") || !strcmp(argv[optind], "dump-wal"))) {
        if (argc - optind != 2 || !*argv[optind + 1])
            return usage("dump-sst and dump-wal take one FILE");
        return argv[optind][5] == 's' ? dump_sst(argv[optind + 1]) : dump_wal(argv[optind + 1]);
    }
    if ((!dir && !cfg) || (dir && cfg))
        return usage("give the store with -d DATA_DIR or -c CONFIG");
    if (optind >= argc)
        return usage("no command");
    const char *cmd = argv[optind];
    int nargs = argc - optind - 1;
    char **args = argv + optind + 1;

    const char *snap = NULL;
    if (!strcmp(cmd, "backup") && nargs >= 1 && !strcmp(args[0], "--snapshot")) {
        if (nargs < 2 || !*args[1])
            return usage("--snapshot takes a NAME");
        snap = args[1];
        args += 2;
        nargs -= 2;
    }
    int writes = !strcmp(cmd, "put") || !strcmp(cmd, "del") || !strcmp(cmd, "compact") ||
                 (!strcmp(cmd, "backup") && !snap) ||
                 (!strcmp(cmd, "snapshot") && argc - optind >= 2 && strcmp(argv[optind + 1], "list"));
    int known = writes || !strcmp(cmd, "backup") || !strcmp(cmd, "snapshot") || !strcmp(cmd, "get") || !strcmp(cmd, "scan") || !strcmp(cmd, "stats") ||
                !strcmp(cmd, "check");
    if (!known)
        return usage("unknown command");
    if ((!strcmp(cmd, "get") || !strcmp(cmd, "del")) && nargs != 1)
        return usage("give exactly one KEY");
    if (!strcmp(cmd, "snapshot") &&
        !((nargs == 1 && !strcmp(args[0], "list")) ||
          (nargs == 2 && (!strcmp(args[0], "create") || !strcmp(args[0], "delete")) && *args[1])))
        return usage("snapshot takes create NAME, delete NAME or list");
    if (!strcmp(cmd, "backup") && (nargs != 1 || !*args[0]))
        return usage("backup takes one DEST_DIR");
    if (!strcmp(cmd, "put") && (nargs < 1 || nargs > 2))
        return usage("put takes KEY and an optional VALUE");
    if ((!strcmp(cmd, "stats") || !strcmp(cmd, "compact") || !strcmp(cmd, "check")) && nargs)
        return usage("this command takes no arguments");
    if (nargs >= 1 && strcmp(cmd, "scan") && !*args[0])
        return usage("a key cannot be empty");

    show_progress = isatty(STDERR_FILENO);
    if (!strcmp(cmd, "check"))
        return check_store(dir, cfg);
    stash_t *db;
    int busy = 0;
    if (open_store(dir, cfg, !writes, &db, !strcmp(cmd, "backup") ? &busy : NULL)) {
        if (busy) {
            /* With -c, the config's data_dir names the store. */
            char *d = NULL;
            stash_options_t o;
            if (cfg && stash_config_load(cfg, &o, &d) == 0)
                dir = d;
            int r = backup_through_mount(dir, snap, args[0]);
            stash_free(d);
            return r;
        }
        return 1;
    }
    int rc = 0;
    if (!strcmp(cmd, "put") && args[1]) {
        stash_batch_t *b = stash_batch_new();
        int r = b ? stash_batch_put(b, args[0], strlen(args[0]), args[1], strlen(args[1])) : -ENOMEM;
        if (r == 0)
            r = stash_write(db, b, STASH_SYNC);
        if (r)
            rc = fail_rc("put", r);
        stash_batch_free(b);
    } else if (!strcmp(cmd, "put")) {
        int input_failed = 0;
        if (stash_put_stream(db, args[0], strlen(args[0]), read_stdin, &input_failed, STASH_SYNC) != 0 &&
            !input_failed)
            rc = fail("put");
        else if (input_failed)
            rc = 1;
    } else if (!strcmp(cmd, "get")) {
        rc = cmd_get(db, args[0]);
    } else if (!strcmp(cmd, "del")) {
        void *v;
        size_t vl;
        int r = stash_get(db, args[0], strlen(args[0]), &v, &vl);
        if (r == -ENOENT) {
            fprintf(stderr, "stashctl: %s: not found\n", args[0]);
            rc = 1;
        } else {
            if (r == 0)
                stash_free(v);
            stash_batch_t *b = stash_batch_new();
            if (!b || stash_batch_delete(b, args[0], strlen(args[0])) != 0 ||
                stash_write(db, b, STASH_SYNC) != 0)
                rc = fail("del");
            stash_batch_free(b);
        }
    } else if (!strcmp(cmd, "scan")) {
        rc = cmd_scan(db, nargs, args);
    } else if (!strcmp(cmd, "stats")) {
        char buf[8192];
        stash_stats(db, buf, sizeof buf);
        fputs(buf, stdout);
    } else if (!strcmp(cmd, "compact")) {
        rc = cmd_compact(db);
    } else if (!strcmp(cmd, "snapshot") && !strcmp(args[0], "list")) {
        rc = stash_snapshot_list(db, print_snapshot, NULL) ? fail("snapshot list") : 0;
    } else if (!strcmp(cmd, "snapshot") && !strcmp(args[0], "create")) {
        uint64_t seq;
        if (stash_snapshot_create(db, args[1], &seq) != 0)
            rc = fail("snapshot create");
    } else if (!strcmp(cmd, "snapshot")) {
        int r = stash_snapshot_delete(db, args[1]);
        if (r == -ENOENT) {
            fprintf(stderr, "stashctl: snapshot %s: not found\n", args[1]);
            rc = 1;
        } else if (r) {
            rc = fail("snapshot delete");
        }
    } else if (!strcmp(cmd, "backup")) {
        int r = snap ? stash_backup_snapshot(db, snap, args[0]) : stash_backup(db, args[0]);
        if (r == -ENOENT && snap) {
            fprintf(stderr, "stashctl: snapshot %s: not found\n", snap);
            rc = 1;
        } else if (r) {
            rc = fail("backup");
        }
    }
    if (stash_close(db) != 0 && rc == 0)
        rc = fail("close");
    return rc;
}
