/*
 * stashfs.c - the SmartStashDB filesystem: a store mounted as a directory,
 * paths as keys, file contents as values (libfuse3, path-based API; the
 * requests are read and dispatched by loop.c).
 *
 * Mapping (README, "The filesystem"):
 *   - the file MNT/a/b/c is the key "a/b/c"; its bytes are the value, its
 *     mode, owner and times the key's attributes (stash_stat), never part of
 *     the value.  A key written through the library (mode 0) shows as a
 *     regular file 0644 owned by the daemon's user.
 *   - a symbolic link's value is its target, a device node's value its
 *     number (8 bytes, little-endian); FIFOs and sockets have none.
 *   - a directory exists while some key starts with "dir/"; mkdir makes the
 *     key "dir/" (empty value, directory mode), which keeps an empty
 *     directory and holds its attributes.  A key ending in "/" is that
 *     record, never a file.
 *   - a key that cannot be a path (an empty, "." or ".." component, one over
 *     255 bytes) is not shown but never touched.  Where a key "a" and keys
 *     "a/..." both exist, "a" shows as the file and the keys under it stay
 *     hidden (and kept) until it is removed.
 *
 * State: one open store (the daemon holds its lock while mounted), so every
 * change to it passes through this process and the kernel's caches of
 * entries, attributes and pages are kept for a day: nothing else can make
 * them stale.  The one exception is hard links: the kernel knows each name
 * as its own inode, so a change through one name (or a name count that
 * changes) has the other names' cached attributes and pages dropped, by a
 * notifier thread (a notification sent from inside a request may wait on
 * that very request).  Inode numbers are the engine's (stash_create picks
 * one per value), or a hash of the path for keys written by the library.  Each call is one or a few engine calls; the engine serialises
 * read-modify-writes of one key, so threads need no lock here (only the
 * small table of recently touched directories has one).  Nor do calls on
 * overlapping keys run at once: libfuse's path interface locks each
 * request's path, a rename or rmdir holding its entries exclusively and a
 * call below a directory holding that directory shared, so an entry is
 * never made in a directory between the scan and the batch of its rename.
 * Directory streams keep their place in fi->fh (struct dirh).
 */
#define FUSE_USE_VERSION 312

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"
#include "perm.h"
#include "smartstash.h"

static stash_t *db;
static char *stashfs_data_dir;
static struct timespec mount_time;
static uid_t my_uid;
static gid_t my_gid;

/* Snapshots: MNT/<snapdir>/NAME/... is the tree at snapshot NAME. */
static const char *snapdir = ".snapshots";
static size_t snaplen = 10;
static __thread int64_t cur_ctime;
static __thread uint64_t cur_salt;         /* 0, or a hash of its name (inode numbers) */

/* Hard links: set once a linked value was seen (writes then look up their
 * value's names); the notifier's queue of paths to invalidate. */
static atomic_int links_seen;
static struct fuse *fuse_self;
static pthread_mutex_t inval_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t inval_cv = PTHREAD_COND_INITIALIZER;
static struct inval {
    struct inval *next;
    uint64_t node, ino;     /* a kernel inode of open file INO, or 0: PATH */
    int entry;              /* or: the entry PATH (a name) in directory NODE */
    char path[];
} *inval_head, **inval_tail = &inval_head;
static int inval_stop, inval_started;
static pthread_t inval_thread;

/* ------------------------------------------------------------------ */
/* paths and keys                                                       */

/*
 * Files removed while still open.  libfuse keeps such a file by renaming it
 * to ".fuse_hidden" and 16 hex digits in its directory until the last
 * descriptor closes.  Kept there, it would leave the directory not empty
 * (rm -r of a directory holding an open file failed with ENOTEMPTY) and,
 * after a crash, stay for good.  So the file goes to the key "/" + name
 * instead: outside every directory, never listed (its first component is
 * empty), and removed at the next mount if a crash left it.
 *
 * The names are libfuse's alone.  Only the path libfuse moved the file to
 * reaches that key (the registry of orphans below remembers it, and follows
 * renames of the directories above it); the same name in any other
 * directory is an ordinary, and normally missing, entry.  Renaming
 * anything to such a name is refused (EPERM) unless it is libfuse's own
 * move: one made within the request in which libfuse just looked the name
 * up and found it free (see hide_probe).  Creating one is refused too.
 */
#define HIDDEN_PREFIX ".fuse_hidden"
#define HIDDEN_LEN (sizeof HIDDEN_PREFIX - 1 + 16)

static int is_hidden(const char *name, size_t n)
{
    if (n != HIDDEN_LEN || memcmp(name, HIDDEN_PREFIX, sizeof HIDDEN_PREFIX - 1))
        return 0;
    for (size_t i = sizeof HIDDEN_PREFIX - 1; i < n; i++)
        if (!isxdigit((unsigned char)name[i]))
            return 0;
    return 1;
}

static const char *last_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Whether PATH ends in a removed-while-open name. */
static int hidden_path(const char *path)
{
    const char *nm = last_name(path);
    return is_hidden(nm, strlen(nm));
}

static __thread stash_snapshot_t *cur;     /* the snapshot this call reads, or NULL */
static int mount_ro;    /* mounted read-only (-o ro): opening writes nothing */
static int no_atime;    /* mounted noatime (the default): access times stay */

/*
 * Open files, by inode number (fi->fh of a file handle): how many handles.
 * And the orphans: for each removed-while-open name, its key, the file's
 * inode number and the path libfuse knows it by (NULL once its directory is
 * gone).  A call made through a handle alone (path NULL: the directory was
 * removed too) reaches the file through its key ("//" + name, see
 * of_path); the keys go when the file's last handle closes.  A file with
 * several names can have several orphans.
 *
 * Each open file also keeps the kernel's inode numbers (nodeids) of the
 * names it was opened through, and of those that gained a name by LINK
 * while it was open (a handle made by CREATE is on that inode, whose number
 * the request does not carry).  An orphan whose directory is gone has no
 * path to invalidate through, but its kernel inode still caches pages and
 * attributes for its handles: a change through another name reaches it by
 * these numbers (inval_one).  A number the kernel has forgotten is dropped
 * when an invalidation of it fails with ENOENT.
 */
struct ofile {
    uint64_t ino;
    int opens;
    unsigned nnodes, capnodes;
    uint64_t *nodes;
    struct ofile *next;
};
struct orphan {
    uint64_t ino;
    char key[HIDDEN_LEN + 2];
    char *path;
    struct orphan *next;
};
#define OF_BUCKETS 1024
static struct ofile *ofiles[OF_BUCKETS];
static struct orphan *orphans;
static pthread_mutex_t of_mu = PTHREAD_MUTEX_INITIALIZER;

static struct ofile **of_find(uint64_t ino)
{
    struct ofile **p = &ofiles[ino % OF_BUCKETS];
    while (*p && (*p)->ino != ino)
        p = &(*p)->next;
    return p;
}

/* The orphan of key KEY, or known as PATH (of_mu held). */
static struct orphan **orphan_by_key(const char *key)
{
    struct orphan **p = &orphans;
    while (*p && strcmp((*p)->key, key))
        p = &(*p)->next;
    return p;
}

static struct orphan *orphan_by_path(const char *path)
{
    struct orphan *o = orphans;
    while (o && (!o->path || strcmp(o->path, path)))
        o = o->next;
    return o;
}

/* The key of the orphan libfuse knows as PATH, into KEY; 0 if none. */
static int orphan_key(const char *path, char key[HIDDEN_LEN + 2])
{
    pthread_mutex_lock(&of_mu);
    struct orphan *o = orphan_by_path(path);
    if (o && key)
        memcpy(key, o->key, sizeof o->key);
    pthread_mutex_unlock(&of_mu);
    return o != NULL;
}

/* The key of PATH ("/a/b" -> "a/b", "/" -> "", an orphan's path -> its
 * "/" + name, see above), into BUF of CAP bytes with room for a trailing
 * '/'.  -ENAMETOOLONG when it does not fit. */
static int path_key(const char *path, char *buf, size_t cap, size_t *klen)
{
    /* "//" + name: an orphan reached through its handle (of_path);
     * libfuse's own paths never start so. */
    if (path[0] == '/' && path[1] == '/' && is_hidden(path + 2, strlen(path + 2))) {
        memcpy(buf, path + 1, HIDDEN_LEN + 2);
        *klen = HIDDEN_LEN + 1;
        return 0;
    }
    if (!cur && hidden_path(path) && cap >= HIDDEN_LEN + 2 && orphan_key(path, buf)) {
        *klen = HIDDEN_LEN + 1;
        return 0;
    }
    while (*path == '/')
        path++;
    size_t n = strlen(path);
    if (n + 2 > cap || n + 1 > STASH_MAX_KEY)
        return -ENAMETOOLONG;
    size_t comp = 0;
    for (size_t i = 0; i < n; i++)
        if (path[i] == '/')
            comp = 0;
        else if (++comp > 255)
            return -ENAMETOOLONG;
    memcpy(buf, path, n + 1);
    *klen = n;
    return 0;
}

/* Creating an entry of a reserved name (above). */
static int reserved(const char *path)
{
    return hidden_path(path) ? -EPERM : 0;
}

/*
 * libfuse picks a removed-while-open name by looking it up (getattr) until
 * one is free, then renames the file to it, in the same request.  The
 * thread remembers the last such name found free, with the number of the
 * request it served (loop_request); a rename to that name in that request
 * is libfuse's.  Under libfuse's own loop (no request numbers) the file
 * must also be open.
 */
static __thread uint64_t hide_probe;        /* a hash of the path; 0: none */
static __thread unsigned long hide_probe_req;

static uint64_t fnv64(uint64_t h, const void *p, size_t n);

static void hide_probed(const char *path)
{
    hide_probe = fnv64(0, path, strlen(path)) | 1;
    hide_probe_req = loop_request();
}

static int hide_expected(const char *path)
{
    int yes = hide_probe && hide_probe == (fnv64(0, path, strlen(path)) | 1) &&
              hide_probe_req == loop_request();
    hide_probe = 0;
    return yes;
}

/* Remember kernel inode NODE as one of open file O's (of_mu held).  Out of
 * memory it is not kept: its caches then age out in attr_timeout. */
static void of_add_node(struct ofile *o, uint64_t node)
{
    if (!node)
        return;
    for (unsigned i = 0; i < o->nnodes; i++)
        if (o->nodes[i] == node)
            return;
    if (o->nnodes == o->capnodes) {
        unsigned cap = o->capnodes ? 2 * o->capnodes : 2;
        uint64_t *n = realloc(o->nodes, cap * sizeof *n);
        if (!n)
            return;
        o->nodes = n;
        o->capnodes = cap;
    }
    o->nodes[o->nnodes++] = node;
}

/* Kernel inode NODE is forgotten: no open file keeps it any more. */
static void of_forget_node(uint64_t ino, uint64_t node)
{
    pthread_mutex_lock(&of_mu);
    struct ofile *o = *of_find(ino);
    for (unsigned i = 0; o && i < o->nnodes; i++)
        if (o->nodes[i] == node) {
            o->nodes[i] = o->nodes[--o->nnodes];
            break;
        }
    pthread_mutex_unlock(&of_mu);
}

/* Handle INO is on kernel inode NODE: it was made by CREATE (loop.h's
 * created, with the handle, which is INO), or its file gained a name by
 * LINK from NODE. */
static void of_on_node(uint64_t ino, uint64_t node)
{
    pthread_mutex_lock(&of_mu);
    struct ofile *o = *of_find(ino);
    if (o)
        of_add_node(o, node);
    pthread_mutex_unlock(&of_mu);
}

/* loop.h's handle_of: for a GETATTR or SETATTR without a handle on kernel
 * inode NODE, which libfuse could not serve when NODE is an orphan whose
 * path is gone (fstat, fchmod, futimens, fchown of a file removed while
 * open in a directory removed since), a handle of that orphan's file (the
 * handle is its inode number, fi->fh, which of_path turns into its key).
 * A mutex and a walk of the orphans: a handful, and none in most stores. */
static uint64_t of_handle_of(uint64_t node)
{
    uint64_t fh = 0;
    pthread_mutex_lock(&of_mu);
    for (struct orphan *x = orphans; x && !fh; x = x->next) {
        if (x->path)
            continue;
        struct ofile *o = *of_find(x->ino);
        for (unsigned i = 0; o && i < o->nnodes && !fh; i++)
            if (o->nodes[i] == node)
                fh = o->ino;
    }
    pthread_mutex_unlock(&of_mu);
    return fh;
}

/* A handle of INO (mode MODE) opens.  One opened write-only writes past the
 * kernel's page cache (direct_io): a sequential write then costs one copy
 * less and leaves no second copy of the data cached, and the kernel skips
 * the security.capability GETXATTR it sends before a new file's first write
 * through the cache.  Nothing can read or map through such a handle, and
 * the kernel drops what it caches of the range a direct write changes, so
 * readers through other handles see the new bytes.  A set-user-ID or
 * set-group-ID file keeps the cached path, whose writes clear those bits;
 * kill_suid covers a file that gains them while open, which needs the
 * write's flags that only loop.c reads (not libfuse's own loop).  So does
 * one opened O_APPEND: an asynchronous write through a direct handle comes
 * in pieces sent all at once, and w_write may move each to the end. */
static int of_open(uint64_t ino, mode_t mode, struct fuse_file_info *fi, uint64_t node)
{
    pthread_mutex_lock(&of_mu);
    struct ofile **p = of_find(ino), *o = *p;
    if (!o && (o = *p = calloc(1, sizeof *o)) != NULL)
        o->ino = ino;
    if (o) {
        o->opens++;
        of_add_node(o, node);
    }
    pthread_mutex_unlock(&of_mu);
    if (!o)
        return -ENOMEM;
    fi->fh = ino;
    if ((fi->flags & O_ACCMODE) == O_WRONLY && !(fi->flags & O_APPEND) && !(mode & (S_ISUID | S_ISGID)) &&
        loop_request())
        fi->direct_io = 1;
    return 0;
}

static uint64_t link_id_of(const char *path);
static void inval_id(uint64_t id, const char *except);
static void inval_queue(const char *path, size_t n, uint64_t node, uint64_t ino, int entry);

/* A handle of INO closes; at the last, its orphans go. */
static void of_close(uint64_t ino)
{
    struct orphan *gone = NULL;
    pthread_mutex_lock(&of_mu);
    struct ofile **p = of_find(ino), *o = *p;
    if (o && --o->opens == 0) {
        *p = o->next;
        free(o->nodes);
        free(o);
        for (struct orphan **q = &orphans; *q;) {
            struct orphan *x = *q;
            if (x->ino == ino) {
                *q = x->next;
                x->next = gone;
                gone = x;
            } else {
                q = &x->next;
            }
        }
    }
    pthread_mutex_unlock(&of_mu);
    while (gone) {
        struct orphan *x = gone;
        gone = x->next;
        /* The other names of a linked file show one link fewer now.
         * ("/" + key: the path that reaches an orphan by its key.) */
        char kp[HIDDEN_LEN + 3] = "/";
        uint64_t lid = link_id_of(strcat(kp, x->key));
        (void)stash_delete(db, x->key, strlen(x->key));
        if (lid)
            inval_id(lid, NULL);
        free(x->path);
        free(x);
    }
}

static int of_is_open(uint64_t ino)
{
    pthread_mutex_lock(&of_mu);
    int open = *of_find(ino) != NULL;
    pthread_mutex_unlock(&of_mu);
    return open;
}

/* File INO went from FROM_KEY to orphan key KEY, known as PATH: 1 if it is
 * open (the key stays until it closes), 0 if not. */
static int of_hide(uint64_t ino, const char *from_key, const char *key, const char *path)
{
    pthread_mutex_lock(&of_mu);
    int open = *of_find(ino) != NULL;
    struct orphan *o = *orphan_by_key(from_key);   /* an orphan hidden again */
    if (!o && open && (o = calloc(1, sizeof *o)) != NULL) {
        o->ino = ino;
        o->next = orphans;
        orphans = o;
    }
    if (o) {
        snprintf(o->key, sizeof o->key, "%s", key);
        free(o->path);
        o->path = strdup(path);   /* (no memory: reachable through handles only) */
    }
    pthread_mutex_unlock(&of_mu);
    return open;
}

/* Whether an orphan has key KEY. */
static int orphan_used(const char *key)
{
    pthread_mutex_lock(&of_mu);
    int used = *orphan_by_key(key) != NULL;
    pthread_mutex_unlock(&of_mu);
    return used;
}

/* Orphan key KEY was removed (libfuse's unlink at the last close of that
 * name). */
static void of_unhide(const char *key)
{
    pthread_mutex_lock(&of_mu);
    struct orphan **p = orphan_by_key(key), *o = *p;
    if (o) {
        *p = o->next;
        free(o->path);
        free(o);
    }
    pthread_mutex_unlock(&of_mu);
}

/* Directory FROM moved to TO (RMDIR: TO NULL, it was removed): the paths of
 * the orphans under it follow (or are gone).  Those under a directory TO
 * replaced are gone first: its name now leads elsewhere. */
static void of_moved(const char *from, const char *to)
{
    size_t fl = strlen(from), tl = to ? strlen(to) : 0;
    pthread_mutex_lock(&of_mu);
    for (struct orphan *o = orphans; to && o; o = o->next) {
        if (o->path && !strncmp(o->path, to, tl) && o->path[tl] == '/') {
            free(o->path);
            o->path = NULL;
        }
    }
    for (struct orphan *o = orphans; o; o = o->next) {
        if (!o->path || strncmp(o->path, from, fl) || o->path[fl] != '/')
            continue;
        char *np = NULL;
        if (to && (np = malloc(strlen(to) + strlen(o->path + fl) + 1)) != NULL)
            strcat(strcpy(np, to), o->path + fl);
        free(o->path);
        o->path = np;
    }
    pthread_mutex_unlock(&of_mu);
}

/* Directories A and B swapped (RENAME_EXCHANGE): the orphans under each
 * are under the other now. */
static void of_exchanged(const char *a, const char *b)
{
    size_t al = strlen(a), bl = strlen(b);
    pthread_mutex_lock(&of_mu);
    for (struct orphan *o = orphans; o; o = o->next) {
        if (!o->path)
            continue;
        int in_a = !strncmp(o->path, a, al) && o->path[al] == '/';
        int in_b = !strncmp(o->path, b, bl) && o->path[bl] == '/';
        if (!in_a && !in_b)
            continue;
        const char *to = in_a ? b : a;
        size_t cut = in_a ? al : bl;
        char *np = malloc(strlen(to) + strlen(o->path + cut) + 1);
        if (np)
            strcat(strcpy(np, to), o->path + cut);
        free(o->path);
        o->path = np;
    }
    pthread_mutex_unlock(&of_mu);
}

/* A path for a call through handle FI alone: "//" + name of an orphan of
 * its file (see path_key), in BUF; NULL if there is none. */
static const char *of_path(const struct fuse_file_info *fi, char *buf, size_t cap)
{
    const char *r = NULL;
    if (!fi || !fi->fh || cap < HIDDEN_LEN + 3)
        return NULL;
    pthread_mutex_lock(&of_mu);
    for (struct orphan *o = orphans; o && !r; o = o->next)
        if (o->ino == fi->fh)
            r = strcat(strcpy(buf, "/"), o->key);
    pthread_mutex_unlock(&of_mu);
    return r;
}

/* The path libfuse knows orphan KEY by, into BUF (CAP bytes); 0 if none. */
static int orphan_path(const char *key, size_t kl, char *buf, size_t cap)
{
    int found = 0;
    char k[HIDDEN_LEN + 2];
    if (kl != HIDDEN_LEN + 1)
        return 0;
    memcpy(k, key, kl);
    k[kl] = '\0';
    pthread_mutex_lock(&of_mu);
    struct orphan *o = *orphan_by_key(k);
    if (o && o->path && strlen(o->path) < cap) {
        strcpy(buf, o->path);
        found = 1;
    }
    pthread_mutex_unlock(&of_mu);
    return found;
}

/* Remove the files a crash left removed-but-open (above). */
static void drop_hidden(void)
{
    stash_iter_t *it = stash_iter_new(db, NULL);
    const char pre[] = "/" HIDDEN_PREFIX;
    int n = 0;
    for (stash_iter_seek(it, pre, sizeof pre - 1); stash_iter_valid(it); stash_iter_next(it)) {
        size_t kl;
        const char *k = stash_iter_key(it, &kl);
        if (kl < sizeof pre - 1 || memcmp(k, pre, sizeof pre - 1))
            break;
        if (kl == HIDDEN_LEN + 1 && is_hidden(k + 1, kl - 1) && stash_delete(db, k, kl) == 0)
            n++;
    }
    stash_iter_free(it);
    if (n)
        fprintf(stderr, "stashfs: removed %d file%s left open when the store was last used\n", n,
                n == 1 ? "" : "s");
}

#define KEYBUF (STASH_MAX_KEY + 2)

enum where { W_LIVE, W_SNAPROOT, W_SNAPTOP, W_SNAP };

/* FNV-1a over P, from H (0: the offset basis). */
static uint64_t fnv64(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    if (!h)
        h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

#define ROOT_INO 1
#define SNAPROOT_INO 2

/* The inverse of ino_of's mixing in the live tree: the stored number
 * that shows as SHOWN. */
static uint64_t ino_keeping(uint64_t shown)
{
    const uint64_t g = 0x9E3779B97F4A7C15ull;
    uint64_t inv = g;                   /* g * inv == 1 mod 2^64, by Newton */
    for (int i = 0; i < 6; i++)
        inv *= 2 - g * inv;
    uint64_t h = shown ^ (shown >> 29) ^ (shown >> 58);
    return h * inv;
}

/*
 * The inode number of KEY (attributes S) as this call sees it: the one the
 * engine keeps with the value (stash_create chose it; renames keep it, and
 * a value's hard links share it, which is how tar, rsync -H, cp -a and du
 * find them); for a key written through the library, which has none, a
 * hash of the key.  Inside a snapshot both are mixed with the snapshot's
 * name, so a snapshot's file is never taken for the live one.
 */
static uint64_t ino_of(const stash_stat_t *s, const char *key, size_t kl)
{
    uint64_t h;
    if (s->link_id)
        atomic_store_explicit(&links_seen, 1, memory_order_relaxed);
    if (s->ino) {
        h = (s->ino ^ cur_salt) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
    } else if (kl == 0 && !cur_salt) {
        return ROOT_INO;
    } else {
        h = fnv64(cur_salt ? fnv64(0, &cur_salt, sizeof cur_salt) : 0, key, kl);
    }
    return h <= SNAPROOT_INO ? h + SNAPROOT_INO + 1 : h;
}

/*
 * Where PATH is: the live tree, the snapshots directory, the top of one
 * snapshot (NAME), or inside one (*rel is the path within it).
 */
static int where(const char *path, char name[256], const char **rel)
{
    const char *p = path;
    *rel = path;
    while (*p == '/')
        p++;
    if (!snaplen || strncmp(p, snapdir, snaplen) || (p[snaplen] && p[snaplen] != '/'))
        return W_LIVE;
    p += snaplen;
    while (*p == '/')
        p++;
    if (!*p)
        return W_SNAPROOT;
    const char *sl = strchr(p, '/');
    size_t nl = sl ? (size_t)(sl - p) : strlen(p);
    if (nl > 255)
        return -ENAMETOOLONG;
    memcpy(name, p, nl);
    name[nl] = 0;
    *rel = sl ? sl : "/";
    return sl && sl[strspn(sl, "/")] ? W_SNAP : W_SNAPTOP;
}

/* Start a reading call: set cur to PATH's snapshot (if any) and *rel to
 * the path within it.  Returns a where value or a negative errno; pair
 * with leave(). */
static int enter(const char *path, const char **rel)
{
    char name[256];
    cur = NULL;
    cur_salt = 0;
    int w = where(path, name, rel);
    if (w == W_SNAPTOP || w == W_SNAP) {
        cur = stash_snapshot_open(db, name, &cur_ctime);
        if (!cur)
            return -ENOENT;
        cur_salt = fnv64(0, name, strlen(name)) | 1;
    }
    return w;
}

static void leave(void)
{
    if (cur)
        stash_snapshot_free(db, cur);
    cur = NULL;
    cur_salt = 0;
}

/* Writing calls: anything under the snapshots directory is read-only. */
static int live_only(const char *path)
{
    char name[256];
    const char *rel;
    int w = where(path, name, &rel);
    return w < 0 ? w : w == W_LIVE ? 0 : -EROFS;
}

/* Whether NAME (LEN bytes) can be a directory entry. */
static int good_name(const char *name, size_t len)
{
    if (len == 0 || len > 255)
        return 0;
    if (name[0] == '.' && (len == 1 || (len == 2 && name[1] == '.')))
        return 0;
    return memchr(name, '\0', len) == NULL;
}

/* Nanoseconds since 1970 (before it: negative) and back.  The stored
 * range is that of a signed 64-bit count, 1677-09-21 to 2262-04-11; times
 * outside it are kept as its nearer end. */
static void ns_to_ts(int64_t ns, struct timespec *t)
{
    int64_t sec = ns / 1000000000, rem = ns % 1000000000;
    if (rem < 0) {
        rem += 1000000000;
        sec--;
    }
    t->tv_sec = (time_t)sec;
    t->tv_nsec = (long)rem;
}

static int64_t ts_to_ns(const struct timespec *t)
{
    const int64_t max_sec = INT64_MAX / 1000000000 - 1;
    if (t->tv_sec > max_sec)
        return INT64_MAX;
    if (t->tv_sec < -max_sec)
        return INT64_MIN;
    return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

static int64_t now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return ts_to_ns(&t);
}

static void fill_stat(const stash_stat_t *s, int dir, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_mode = s->mode ? s->mode : (mode_t)(dir ? S_IFDIR | 0755 : S_IFREG | 0644);
    st->st_uid = s->mode ? s->uid : my_uid;
    st->st_gid = s->mode ? s->gid : my_gid;
    st->st_nlink = S_ISDIR(st->st_mode) ? 2 : s->nlink ? s->nlink : 1;
    st->st_size = S_ISDIR(st->st_mode) ? 0 : (off_t)s->size;
    st->st_blksize = 65536;
    /* What the file takes: holes (never-written 64 KiB chunks) take none,
     * so du counts them out and cp and tar look for them (lseek). */
    st->st_blocks = S_ISDIR(st->st_mode) ? 0 : (blkcnt_t)((s->stored + 511) / 512);
    ns_to_ts(s->atime_ns, &st->st_atim);
    ns_to_ts(s->mtime_ns, &st->st_mtim);
    ns_to_ts(s->ctime_ns, &st->st_ctim);
}

/* A device node's number: its value, 8 bytes little-endian (mknod). */
static void dev_number(const char *key, size_t kl, struct stat *st)
{
    if (!S_ISCHR(st->st_mode) && !S_ISBLK(st->st_mode))
        return;
    uint8_t b[8];
    size_t n = 0;
    uint64_t v = 0;
    if (stash_pread_at(db, cur, key, kl, b, sizeof b, 0, &n) == 0 && n == sizeof b)
        for (int i = 7; i >= 0; i--)
            v = v << 8 | b[i];
    st->st_rdev = (dev_t)v;
    st->st_size = 0;
    st->st_blocks = 0;
}

/* What a directory without a record shows: no mode recorded (fill_stat
 * gives 0755 and the daemon's user), dated when the store was mounted. */
static void implicit_dir(stash_stat_t *s)
{
    memset(s, 0, sizeof *s);
    s->atime_ns = s->mtime_ns = s->ctime_ns = ts_to_ns(&mount_time);
}

/* The record that keeps such a directory: what it showed, with mtime and
 * ctime T. */
static stash_stat_t dir_record(int64_t t)
{
    stash_stat_t d = {.mode = S_IFDIR | 0755, .uid = my_uid, .gid = my_gid};
    d.atime_ns = ts_to_ns(&mount_time);
    d.mtime_ns = d.ctime_ns = t;
    return d;
}

/*
 * An iterator over the keys under directory prefix PREFIX ("dir/", PLEN
 * bytes; "" = everything).  It stops at the end of the prefix instead of
 * walking on through the deleted keys of the directories after it: a
 * lookup of a new name in a directory whose files were deleted would
 * otherwise cost a walk over all of them.
 */
static stash_iter_t *dir_iter(const char *prefix, size_t plen)
{
    stash_iter_t *it = stash_iter_new(db, cur);
    if (it && plen) {
        char end[KEYBUF];
        memcpy(end, prefix, plen);
        end[plen - 1]++;            /* "dir/" -> "dir0" */
        if (stash_iter_set_upper(it, end, plen) < 0) {
            stash_iter_free(it);
            it = NULL;
        }
    }
    return it;
}

/* Whether some key starts with PREFIX (a directory's "dir/"). */
static int has_prefix(const char *prefix, size_t plen)
{
    stash_iter_t *it = dir_iter(prefix, plen);
    if (!it)
        return -ENOMEM;
    stash_iter_seek(it, prefix, plen);
    int found = 0;
    if (stash_iter_valid(it)) {
        size_t kl;
        const char *k = stash_iter_key(it, &kl);
        found = kl >= plen && memcmp(k, prefix, plen) == 0;
    }
    int rc = stash_iter_status(it);
    stash_iter_free(it);
    return rc < 0 ? rc : found;
}

enum kind { K_NONE, K_FILE, K_DIR };

/*
 * What PATH is: a file (the key exists), a directory (the key "path/"
 * exists, or any key under it), or nothing.  KEY holds the key (room for
 * the '/'), *s the attributes when known.
 */
static int lookup(const char *path, char *key, size_t *klen, stash_stat_t *s, enum kind *kind)
{
    int rc = path_key(path, key, KEYBUF, klen);
    if (rc)
        return rc;
    memset(s, 0, sizeof *s);
    if (*klen == 0 && cur) {
        /* The top of a snapshot: read-only, dated when it was taken. */
        *kind = K_DIR;
        s->mode = S_IFDIR | 0555;
        s->uid = my_uid;
        s->gid = my_gid;
        s->atime_ns = s->mtime_ns = s->ctime_ns = cur_ctime;
        return 0;
    }
    if (*klen == 0) {
        *kind = K_DIR;
        implicit_dir(s);
        stash_stat_t r;
        if (stash_stat(db, cur, "/", 1, &r) == 0)
            *s = r;
        return 0;
    }
    rc = stash_stat(db, cur, key, *klen, s);
    if (rc == 0 && !S_ISDIR(s->mode)) {
        *kind = K_FILE;
        return 0;
    }
    if (rc && rc != -ENOENT)
        return rc;
    key[*klen] = '/';
    rc = stash_stat(db, cur, key, *klen + 1, s);
    if (rc == 0) {
        key[*klen] = 0;
        *kind = K_DIR;
        return 0;
    }
    if (rc != -ENOENT) {
        key[*klen] = 0;
        return rc;
    }
    rc = has_prefix(key, *klen + 1);
    key[*klen] = 0;
    if (rc < 0)
        return rc;
    *kind = rc ? K_DIR : K_NONE;
    if (rc)
        implicit_dir(s);
    return 0;
}

/* ------------------------------------------------------------------ */
/* operations                                                           */

/*
 * A file removed while open counts its hidden key among its names, and
 * what fstat shows must not.  libfuse takes one off what its GETATTR of a
 * hidden node answers, but not off the getattr with which it answers a
 * SETATTR (fchmod, fchown, futimens, ftruncate: its attributes go to the
 * kernel's cache all the same): the setattr handlers leave their path here
 * (a hash, with the request's number under loop.c) for the getattr that
 * follows them in the same thread, which then takes the hidden name off
 * itself.
 */
static __thread uint64_t setattr_path;
static __thread unsigned long setattr_req;

static void setattr_mark(const char *path, int rc)
{
    setattr_path = rc == 0 && path ? fnv64(0, path, strlen(path)) | 1 : 0;
    setattr_req = loop_request();
}

static int setattr_marked(const char *path)
{
    int yes = setattr_path && setattr_path == (fnv64(0, path, strlen(path)) | 1) &&
              setattr_req == loop_request();
    setattr_path = 0;
    return yes;
}

static int r_getattr(const char *path, struct stat *st, int after_setattr)
{
    char key[KEYBUF];
    size_t kl;
    stash_stat_t s;
    enum kind k;
    int rc = lookup(path, key, &kl, &s, &k);
    if (rc)
        return rc;
    if (k == K_NONE)
        return -ENOENT;
    fill_stat(&s, k == K_DIR, st);
    st->st_ino = ino_of(&s, key, kl);
    if (key[0] == '/' && after_setattr && st->st_nlink > 0)
        st->st_nlink--;     /* removed while open: its hidden key is no name */
    dev_number(key, kl, st);
    return 0;
}

/*
 * A directory stream.  Each entry handed to the kernel gets a position of
 * its own, never given again in this stream ("." is 1, ".." 2, the others
 * from 3 on), which says where to go on from: after that entry.  The
 * stream keeps, for the positions it gave, the entry's name (and whether
 * it stood for a sub-tree), so reading on, and a seekdir back to a
 * position telldir gave, goes on right after that name, whatever was made
 * or removed meanwhile, and whatever the directory is called now: one seek.
 * (Positions counted entries before, so a seekdir after removals earlier
 * in the listing skipped entries.)  It keeps the newest ones in at most
 * DIRH_BYTES (about 20 bytes an entry), dropping the older half when full:
 * the kernel only ever goes on from a position of its last reply, and a
 * seekdir to a dropped position lists from the start.  rewinddir (position
 * 0) forgets them all, as POSIX allows.
 */
#define DIRH_BYTES (8u << 20)

struct dirh {
    off_t next;         /* the position a continuing read asks for */
    int done;           /* the listing reached its end at position next */
    uint64_t last;      /* the last position given (2: none past "..") */
    uint64_t base;      /* the position of at[0] */
    uint64_t keep;      /* positions from here are never dropped: the
                         * kernel may go on from any of its last reply */
    uint64_t reply;     /* the first position of the reply being made */
    uint32_t *at;       /* per position from base: where its name is in names */
    size_t nat, capat;
    char *names;        /* per entry: a byte (1: a sub-tree), the name, NUL */
    size_t nnames, capnames;
    int listed;         /* a READDIR came (the access time moves: fs_releasedir) */
};

/* Forget the older half of the positions kept (not those from d->keep on).
 * 0, or -1 when none can go. */
static int dirh_halve(struct dirh *d)
{
    size_t k = d->nat / 2;
    if (d->base + k > d->keep)
        k = d->keep > d->base ? (size_t)(d->keep - d->base) : 0;
    if (k == 0)
        return -1;
    size_t cut = k < d->nat ? d->at[k] : d->nnames;
    memmove(d->names, d->names + cut, d->nnames - cut);
    d->nnames -= cut;
    for (size_t i = k; i < d->nat; i++)
        d->at[i - k] = d->at[i] - (uint32_t)cut;
    d->nat -= k;
    d->base += k;
    return 0;
}

/* Note position POS (the next after d->last) as that of entry NAME (CL
 * bytes; TREE: a sub-tree).  Out of memory it is not kept (a seek to it
 * then lists from the start), nor are the ones before it. */
static void dirh_note(struct dirh *d, uint64_t pos, const char *name, size_t cl, int tree)
{
    if (pos != d->base + d->nat) {
        d->nat = d->nnames = 0;         /* (a gap: start again from here) */
        d->base = pos;
    }
    size_t need = cl + 2;
    while (d->nnames + need + (d->nat + 1) * sizeof *d->at > DIRH_BYTES)
        if (dirh_halve(d) < 0)
            break;
    if (d->nat == d->capat) {
        size_t cap = d->capat ? 2 * d->capat : 256;
        uint32_t *a = realloc(d->at, cap * sizeof *a);
        if (!a) {
            d->nat = d->nnames = 0, d->base = pos + 1;
            return;
        }
        d->at = a;
        d->capat = cap;
    }
    if (d->nnames + need > d->capnames) {
        size_t cap = d->capnames ? 2 * d->capnames : 4096;
        while (cap < d->nnames + need)
            cap *= 2;
        char *n = realloc(d->names, cap);
        if (!n) {
            d->nat = d->nnames = 0, d->base = pos + 1;
            return;
        }
        d->names = n;
        d->capnames = cap;
    }
    d->at[d->nat++] = (uint32_t)d->nnames;
    d->names[d->nnames++] = (char)(tree != 0);
    memcpy(d->names + d->nnames, name, cl);
    d->nnames += cl;
    d->names[d->nnames++] = '\0';
}

/* The entry that position POS was given with, or NULL. */
static const char *dirh_entry(const struct dirh *d, uint64_t pos, int *tree)
{
    if (pos < d->base || pos - d->base >= d->nat)
        return NULL;
    const char *e = d->names + d->at[pos - d->base];
    *tree = e[0];
    return e + 1;
}

static int may_path(struct perm_who *w, const char *path, int mask, struct stat *st);
static int asks(struct perm_who *w);

static int fs_opendir(const char *path, struct fuse_file_info *fi)
{
    struct perm_who pw;
    struct stat st;
    int prc = asks(&pw) ? may_path(&pw, path, PERM_R, &st) : 0;
    if (prc)
        return prc;
    struct dirh *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    d->last = 2;
    d->base = d->keep = d->reply = 3;
    fi->fh = (uint64_t)(uintptr_t)d;
    return 0;
}

static void atime_touch(const char *path);

static int fs_releasedir(const char *path, struct fuse_file_info *fi)
{
    struct dirh *d = (struct dirh *)(uintptr_t)fi->fh;
    if (d && d->listed)
        atime_touch(path);
    if (d) {
        free(d->at);
        free(d->names);
        free(d);
    }
    return 0;
}

static int r_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags, const struct stat *dots)
{
    struct dirh *d = fi ? (struct dirh *)(uintptr_t)fi->fh : NULL;
    if (!d)
        return -EBADF;
    d->listed = 1;
    char key[KEYBUF];
    size_t kl;
    int rc = path_key(path, key, sizeof key, &kl);
    if (rc)
        return rc;
    if (kl)
        key[kl++] = '/';
    int plus = (flags & FUSE_READDIR_PLUS) != 0;
    if (off > 0 && off == d->next && d->done)
        return 0;
    /* Where to go on from: the start, after "." or "..", or after an
     * entry this stream gave (a position it never gave: the start). */
    int tree = 0;
    const char *after = off >= 3 ? dirh_entry(d, (uint64_t)off, &tree) : NULL;
    uint64_t pos = off >= 3 ? (uint64_t)off : 0;   /* the last position given in this reply */
    d->done = 0;
    /* The last reply's positions stay, and the one asked for (a read the
     * caller's buffer could not take asks again from the same place). */
    d->keep = off >= 3 && (uint64_t)off < d->reply ? (uint64_t)off : d->reply;
    d->reply = d->last + 1;
    if (off <= 0) {
        d->nat = d->nnames = 0;         /* rewinddir: the old positions go */
        d->base = d->keep = d->last + 1;
        if (filler(buf, ".", dots ? &dots[0] : NULL, 1, 0))
            return 0;
        pos = 1;
    }
    if (off <= 1 || (off >= 3 && !after)) {
        if (filler(buf, "..", dots ? &dots[1] : NULL, 2, 0)) {
            d->next = (off_t)pos;
            return 0;
        }
        pos = 2;
    }
    if (off == 2)
        pos = 2;
    stash_iter_t *it = dir_iter(key, kl);
    if (!it)
        return -ENOMEM;
    char *seek = malloc(KEYBUF + 2);
    if (!seek) {
        stash_iter_free(it);
        return -ENOMEM;
    }
    memcpy(seek, key, kl);
    char name[256];
    size_t al = after ? strlen(after) : 0;
    if (after && kl + al + 1 <= KEYBUF) {
        /* Right after that entry: past its sub-tree ("name0": '0' follows
         * '/'), or past the file itself (skipped below if it is still
         * there). */
        memcpy(seek + kl, after, al);
        if (tree)
            seek[kl + al++] = '/' + 1;
        stash_iter_seek(it, seek, kl + al);
        if (!tree && stash_iter_valid(it)) {
            size_t n;
            const char *k = stash_iter_key(it, &n);
            if (n == kl + al && memcmp(k, seek, n) == 0)
                stash_iter_next(it);
        }
    } else {
        stash_iter_seek(it, key, kl);
    }
    for (;;) {
        if (!stash_iter_valid(it)) {
            d->next = (off_t)pos, d->done = 1;
            break;
        }
        size_t n;
        const char *k = stash_iter_key(it, &n);
        if (n < kl || memcmp(k, key, kl) != 0) {
            d->next = (off_t)pos, d->done = 1;
            break;
        }
        const char *rest = k + kl;
        size_t rl = n - kl;
        const char *slash = memchr(rest, '/', rl);
        size_t cl = slash ? (size_t)(slash - rest) : rl;
        if (rl == 0) {          /* the directory's own record */
            stash_iter_next(it);
            continue;
        }
        int ok = good_name(rest, cl) && !(kl == 0 && !cur && cl == snaplen && !memcmp(rest, snapdir, cl));
        if (ok) {
            memcpy(name, rest, cl);
            name[cl] = 0;
        }
        /* Each entry carries its type (d_type), and with readdirplus all its
         * attributes, read from the entry itself, so that ls -l or find
         * need no lookup per entry. */
        struct stat st;
        stash_stat_t s;
        int show = 0, full = 0, typed = 0;
        if (!slash) {
            show = ok;
            int got = show && stash_iter_stat(it, &s) == 0;
            /* A device node's number is in its value, which lookup reads:
             * it goes with only its inode number and type. */
            typed = got && (S_ISCHR(s.mode) || S_ISBLK(s.mode));
            full = got && !typed && !S_ISDIR(s.mode);
            if (full || typed) {
                fill_stat(&s, 0, &st);
                st.st_ino = ino_of(&s, k, kl + cl);
            }
        } else if (ok) {
            /* A sub-tree: one entry, unless a file of that name hides it.
             * Its attributes are those of its record "name/" when the
             * sub-tree starts with one, the defaults lookup() gives
             * otherwise. */
            memcpy(seek + kl, rest, cl);
            show = stash_stat(db, cur, seek, kl + cl, &s) != 0;
            if (show) {
                if (rl != cl + 1 || stash_iter_stat(it, &s) != 0)
                    implicit_dir(&s);
                fill_stat(&s, 1, &st);
                st.st_ino = ino_of(&s, seek, kl + cl);
                full = 1;
            }
        }
        if (show) {
            /* A new position for this entry; a reply already full takes
             * it no more, and the next read goes on after the last entry
             * it took. */
            uint64_t mine = d->last + 1;
            if (filler(buf, name, full || typed ? &st : NULL, (off_t)mine, full && plus ? FUSE_FILL_DIR_PLUS : 0)) {
                d->next = (off_t)pos;
                break;
            }
            dirh_note(d, mine, name, cl, slash != NULL);
            d->last = mine;
            pos = mine;
        }
        if (!slash) {
            stash_iter_next(it);
        } else {
            /* Skip past every key under the sub-tree: seek to "name0" ('0'
             * follows '/'). */
            memcpy(seek + kl, rest, cl);
            seek[kl + cl] = '/' + 1;
            stash_iter_seek(it, seek, kl + cl + 1);
        }
    }
    rc = stash_iter_status(it);
    stash_iter_free(it);
    free(seek);
    return rc < 0 ? -EIO : 0;
}

/*
 * The attributes of new entry KEY (KL bytes) of mode MODE: the caller's
 * owner, the time now.  In a set-group-ID directory the entry takes the
 * directory's group instead, and a new directory the bit too, as Linux
 * filesystems do (the kernel has already taken the bit off a new file's
 * mode where the caller may not have it).
 */
static stash_stat_t new_attrs(const char *key, size_t kl, mode_t mode)
{
    struct fuse_context *c = fuse_get_context();
    stash_stat_t s = {.mode = mode, .uid = c->uid, .gid = c->gid};
    size_t pl = kl;
    while (pl > 0 && key[pl - 1] != '/')
        pl--;
    stash_stat_t d;
    if (stash_stat(db, NULL, pl ? key : "/", pl ? pl : 1, &d) == 0 && S_ISDIR(d.mode) && (d.mode & S_ISGID)) {
        s.gid = d.gid;
        if (S_ISDIR(mode))
            s.mode |= S_ISGID;
    }
    s.atime_ns = s.mtime_ns = s.ctime_ns = now();
    return s;
}

/*
 * Directories whose times were set less than TOUCH_NS ago: a burst of
 * entries made or removed in one directory (an untar, an rm -r) moves its
 * times once per TOUCH_NS, not once per entry.  But a change after the
 * times were looked at always moves them (touch_seen), as the multigrain
 * times of local filesystems do, so a program that checks a directory's
 * mtime for news (git's untracked cache, a mail reader, a sync tool) never
 * misses a change.  Emptied whenever a directory's attributes are set
 * explicitly, so a time set by utimensat is always moved by the next
 * change.
 */
#define TOUCH_NS    2000000
#define TOUCH_SLOTS 256
#define TOUCH_KEY   96
static struct {
    size_t len;
    int64_t t;
    char key[TOUCH_KEY];
} touched[TOUCH_SLOTS];
static pthread_mutex_t touch_mu = PTHREAD_MUTEX_INITIALIZER;

static size_t touch_slot(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 1099511628211ull;
    return (size_t)(h % TOUCH_SLOTS);
}

static void touch_forget(void)
{
    pthread_mutex_lock(&touch_mu);
    memset(touched, 0, sizeof touched);
    pthread_mutex_unlock(&touch_mu);
}

/* The attributes of directory PATH go out (a GETATTR, a LOOKUP): the next
 * change in it moves its times however soon it comes. */
static void touch_seen(const char *path)
{
    char pk[KEYBUF];
    size_t pl;
    if (path_key(path, pk, sizeof pk - 1, &pl) != 0)
        return;
    pk[pl++] = '/';                 /* "dir/"; the root's record is "/" */
    if (pl > TOUCH_KEY)
        return;
    size_t slot = touch_slot(pk, pl);
    pthread_mutex_lock(&touch_mu);
    if (touched[slot].len == pl && !memcmp(touched[slot].key, pk, pl))
        touched[slot].len = 0;
    pthread_mutex_unlock(&touch_mu);
}

/* Moved after every change that can give a directory path other
 * attributes: chmod, chown or utimens of a directory, mkdir, rmdir, a
 * directory renamed.  The permission checks' walks cache what they found
 * while it stays put (dir_shown). */
static atomic_ulong dir_gen;

static void dirs_changed(void)
{
    atomic_fetch_add(&dir_gen, 1);
}

/*
 * The entries of the directory holding KEY (KL bytes) change (an entry is
 * made, removed or renamed): its mtime and ctime become now, as POSIX asks.
 * A directory shown without a record (keys written through the library as
 * "a/b" with no "a/") gets one, so that it also stays, empty, after its last
 * entry goes, as directories do until rmdir; the kernel keeps the
 * directory's entry cached and would disagree otherwise.  The root's record
 * is the key "/".
 */
static int touch_parent(const char *key, size_t kl)
{
    if (kl && key[0] == '/')
        return 0;       /* a removed file still open: in no directory */
    size_t pl = kl;
    while (pl > 0 && key[pl - 1] != '/')
        pl--;
    char pk[KEYBUF];
    if (pl == 0)
        pk[pl++] = '/';
    else
        memcpy(pk, key, pl);   /* "parent/" */
    stash_stat_t t = {.mtime_ns = now()};
    t.ctime_ns = t.mtime_ns;
    size_t slot = touch_slot(pk, pl);
    if (pl <= TOUCH_KEY) {
        pthread_mutex_lock(&touch_mu);
        int recent = touched[slot].len == pl && !memcmp(touched[slot].key, pk, pl) &&
                     t.mtime_ns - touched[slot].t < TOUCH_NS;
        pthread_mutex_unlock(&touch_mu);
        if (recent)
            return 0;
    }
    int rc = stash_setstat(db, pk, pl, &t, STASH_SET_MTIME | STASH_SET_CTIME);
    if (rc == 0 && pl <= TOUCH_KEY) {
        pthread_mutex_lock(&touch_mu);
        touched[slot].len = pl;
        touched[slot].t = t.mtime_ns;
        memcpy(touched[slot].key, pk, pl);
        pthread_mutex_unlock(&touch_mu);
    }
    if (rc != -ENOENT)
        return rc;
    stash_stat_t d = dir_record(t.mtime_ns);
    rc = stash_create(db, pk, pl, &d, STASH_EXCL);
    if (rc == -EEXIST)   /* made meanwhile by another call */
        rc = stash_setstat(db, pk, pl, &t, STASH_SET_MTIME | STASH_SET_CTIME);
    return rc;
}

/*
 * A call that made KEY failed in a later step (the parent's times, the
 * value, the handle): the key goes again, so that a call returning an error
 * leaves no entry behind.  Nothing else has seen the key: the kernel holds
 * the parent directory locked until the call returns.  Best effort: a store
 * that refused the step may refuse this too.  Returns RC.
 */
static int unmake(const char *key, size_t kl, int rc)
{
    (void)stash_delete(db, key, kl);
    return rc;
}

static int w_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    if (reserved(path))
        return -EPERM;
    char key[KEYBUF];
    size_t kl;
    int rc = path_key(path, key, sizeof key, &kl);
    if (rc)
        return rc;
    stash_stat_t s = new_attrs(key, kl, S_IFREG | (mode & 07777));
    rc = stash_create(db, key, kl, &s, STASH_EXCL);
    if (rc)
        return rc;
    rc = touch_parent(key, kl);
    if (rc == 0 && fi) {
        fi->fh = 0;
        if ((rc = stash_stat(db, NULL, key, kl, &s)) == 0)
            rc = of_open(ino_of(&s, key, kl), s.mode, fi, 0);
    }
    return rc ? unmake(key, kl, rc) : 0;
}

/* Regular files, FIFOs and sockets: an empty value with that mode (the
 * kernel serves a FIFO's or socket's I/O itself).  Device nodes, which would
 * need their device number kept too, are refused. */
static int w_mknod(const char *path, mode_t mode, dev_t rdev)
{
    if (reserved(path))
        return -EPERM;
    if (S_ISREG(mode))
        return w_create(path, mode, NULL);
    if (!S_ISFIFO(mode) && !S_ISSOCK(mode) && !S_ISCHR(mode) && !S_ISBLK(mode))
        return -EINVAL;
    char key[KEYBUF];
    size_t kl;
    int rc = path_key(path, key, sizeof key, &kl);
    if (rc)
        return rc;
    stash_stat_t s = new_attrs(key, kl, (mode & S_IFMT) | (mode & 07777));
    rc = stash_create(db, key, kl, &s, STASH_EXCL);
    if (rc)
        return rc;
    if (S_ISCHR(mode) || S_ISBLK(mode)) {
        /* The kernel has checked CAP_MKNOD; the number is the value. */
        uint8_t b[8];
        uint64_t v = (uint64_t)rdev;
        for (int i = 0; i < 8; i++)
            b[i] = (uint8_t)(v >> (8 * i));
        rc = stash_pwrite(db, key, kl, b, sizeof b, 0);
    }
    if (rc == 0)
        rc = touch_parent(key, kl);
    return rc ? unmake(key, kl, rc) : 0;
}

static void load_groups(struct perm_who *w);
static void drop_setid(const char *key, size_t kl, int inval);

static int r_open(const char *path, struct fuse_file_info *fi)
{
    fi->keep_cache = 1;
    fi->fh = 0;
    char key[KEYBUF];
    size_t kl;
    int rc = path_key(path, key, sizeof key, &kl);
    if (rc)
        return rc;
    if (fi->flags & O_TRUNC) {
        /* The kernel passes O_TRUNC here (atomic_o_trunc), and with it
         * leaves the set-ID bits to the daemon: a truncation by a caller
         * without CAP_FSETID clears them, as truncate(2) does.  The
         * kernel says which callers those are if it agreed to
         * HANDLE_KILLPRIV_V2 (loop.h); otherwise: all but root. */
        if ((rc = stash_truncate(db, key, kl, 0)) != 0)
            return rc;
        uint64_t node;
        if (loop_kills_suid(&node) || (!loop_killpriv() && fuse_get_context()->uid != 0))
            drop_setid(key, kl, 1);
    }
    if (cur)
        return 0;       /* a snapshot's files cannot be removed */
    stash_stat_t s;
    if ((rc = stash_stat(db, NULL, key, kl, &s)) != 0)
        return rc;
    if (!s.ino && kl && key[0] != '/' && !mount_ro) {
        /* A key written through the library has no inode number of its
         * own: ino_of shows a hash of the key, which a rename would change,
         * and the open handles would lose their file.  It gets, once, the
         * number that shows the same (not on a read-only mount: nothing is
         * renamed there). */
        stash_stat_t t = {.ino = ino_keeping(ino_of(&s, key, kl))};
        if (stash_setstat(db, key, kl, &t, STASH_SET_INO) == 0)
            s.ino = t.ino;
    }
    return of_open(ino_of(&s, key, kl), s.mode, fi, loop_node());
}

/* SEEK_DATA and SEEK_HOLE (the kernel answers the other kinds itself):
 * holes are the value's missing chunks (stash_seek), so cp, tar --sparse
 * and rsync --sparse skip them instead of reading zeros. */
static off_t r_lseek(const char *path, off_t off, int whence)
{
    char key[KEYBUF];
    size_t kl;
    uint64_t at;
    int rc = path_key(path, key, sizeof key, &kl);
    if (rc)
        return rc;
    if (off < 0 || (whence != SEEK_DATA && whence != SEEK_HOLE))
        return -EINVAL;
    rc = stash_seek(db, cur, key, kl, (uint64_t)off, whence == SEEK_DATA ? STASH_SEEK_DATA : STASH_SEEK_HOLE,
                    &at);
    return rc ? rc : (off_t)at;
}

static int r_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    char key[KEYBUF];
    size_t kl, got;
    int rc = path_key(path, key, sizeof key, &kl);
    if (rc)
        return rc;
    rc = stash_pread_at(db, cur, key, kl, buf, size, (uint64_t)off, &got);
    return rc ? rc : (int)got;
}

/* The set-ID bits of a file of mode MODE in group GID that a change by the
 * caller clears: set-user-ID, and set-group-ID where group execution makes
 * it one or the caller is not in the group and lacks CAP_FSETID, as the
 * kernel decides for a local filesystem. */
static int caller_fsetid(void);
static mode_t setid_bits(mode_t mode, gid_t gid)
{
    struct fuse_context *c = fuse_get_context();
    struct perm_who pw = {.uid = c->uid, .gid = c->gid, .ngroups = -1, .load = load_groups};
    mode_t kill = S_ISUID;
    if ((mode & S_ISGID) && ((mode & S_IXGRP) || (!perm_in_group(&pw, gid) && !caller_fsetid())))
        kill |= S_ISGID;
    return mode & kill;
}

/* Whether the caller has CAP_FSETID (capability number 4), from its
 * /proc/PID/status.  Where that cannot be read (the process is gone, or
 * not in the daemon's PID namespace), root is taken to have it and no one
 * else.  For rare requests only: it reads a file. */
static int caller_fsetid(void)
{
    struct fuse_context *c = fuse_get_context();
    char path[64], line[256];
    int has = c->uid == 0;
    snprintf(path, sizeof path, "/proc/%d/status", (int)c->pid);
    FILE *f = c->pid > 0 ? fopen(path, "re") : NULL;
    if (f) {
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "CapEff:", 7)) {
                has = (int)((strtoull(line + 7, NULL, 16) >> 4) & 1);
                break;
            }
        fclose(f);
    }
    return has;
}

/* Clear KEY's set-ID bits (setid_bits) unless it is a directory; with
 * INVAL, drop the mode the kernel caches, for requests whose reply does
 * not carry the new one. */
static void drop_setid(const char *key, size_t kl, int inval)
{
    stash_stat_t s;
    if (stash_stat(db, NULL, key, kl, &s) != 0 || S_ISDIR(s.mode))
        return;
    mode_t kill = setid_bits(s.mode, s.gid);
    stash_stat_t t = {.mode = s.mode & ~kill, .ctime_ns = now()};
    if (kill && stash_setstat(db, key, kl, &t, STASH_SET_MODE | STASH_SET_CTIME) == 0 && inval && loop_node())
        (void)loop_inval_attrs(loop_node());
}

/* After a write, a truncation or a chown for which the kernel says so
 * (loop_kills_suid: a writer without CAP_FSETID, any chown), the file loses
 * its set-ID bits, as the kernel would clear them itself were the daemon
 * not asking to do it (loop.h).  A WRITE's reply carries no attributes, so
 * the kernel's cached mode is dropped before it is answered; a SETATTR's
 * carries the new one.  (set_attrs does the same for a chown.) */
static void kill_suid(const char *key, size_t kl, int write)
{
    uint64_t node;
    if (loop_kills_suid(&node))
        drop_setid(key, kl, write);
}

static int w_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    char key[KEYBUF];
    size_t kl;
    int rc = path_key(path, key, sizeof key, &kl);
    if (rc)
        return rc;
    kill_suid(key, kl, 1);
    /* An append through one name of a hard-linked file: the kernel took
     * OFF from the size it caches for this name, which a change through
     * another name may have made stale (short of the real end after an
     * append there, past it after a cut).  The bytes go at the real end
     * (stash_append: no change through any name comes between); the
     * pieces of a write the kernel splits come one after the other, each
     * going on from the last.  The kernel then drops the attributes of
     * this name at once, and its pages (the cached path wrote the bytes at
     * OFF) once the write is answered: not here, where it holds those
     * pages locked.  Not for O_DIRECT, whose pieces of one write come in
     * parallel and in any order, each at its own OFF (an O_APPEND handle
     * is never opened direct for that reason, see of_open). */
    if (fi && (fi->flags & O_APPEND) && !(fi->flags & O_DIRECT) && link_id_of(path)) {
        uint64_t node = loop_node();
        rc = stash_append(db, key, kl, buf, size, NULL);
        if (rc == 0 && node) {
            (void)loop_inval_attrs(node);
            inval_queue("", 0, node, fi->fh, 0);
        }
        return rc ? rc : (int)size;
    }
    rc = stash_pwrite(db, key, kl, buf, size, (uint64_t)off);
    return rc ? rc : (int)size;
}

static int w_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    char key[KEYBUF];
    size_t kl;
    int rc = path_key(path, key, sizeof key, &kl);
    if (rc == 0 && (rc = stash_truncate(db, key, kl, (uint64_t)size)) == 0)
        kill_suid(key, kl, 0);
    return rc;
}

/*
 * fallocate(2).  Nothing is allocated ahead in an LSM store, so plain
 * allocation (mode 0, or FALLOC_FL_KEEP_SIZE) checks that the disk has
 * room for what the range adds past the end and then extends the file
 * like a truncate (a hole, reading as zeros); it reserves nothing, so a
 * later write can still meet a full disk.  Answering instead with
 * EOPNOTSUPP would send posix_fallocate(3) to glibc's fallback, which
 * writes one byte per 4 KiB block: a round trip each.  FALLOC_FL_PUNCH_HOLE
 * and FALLOC_FL_ZERO_RANGE zero the range, dropping the whole 64 KiB chunks
 * inside it.  Collapsing and inserting ranges are not supported.
 */
static int w_fallocate(const char *path, int mode, off_t off, off_t len)
{
    if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
        return -EOPNOTSUPP;
    if (off < 0 || len <= 0)
        return -EINVAL;
    if ((uint64_t)off > STASH_MAX_FILE || (uint64_t)len > STASH_MAX_FILE - (uint64_t)off)
        return -EFBIG;
    char key[KEYBUF];
    size_t kl;
    int rc = path_key(path, key, sizeof key, &kl);
    if (rc)
        return rc;
    uint64_t size, end = (uint64_t)off + (uint64_t)len;
    if ((rc = stash_value_size(db, key, kl, &size)) != 0)
        return rc;
    /* A caller without CAP_FSETID clears the set-ID bits, as on a local
     * filesystem (the kernel leaves them to the daemon: loop.h). */
    if (!caller_fsetid())
        drop_setid(key, kl, 1);
    int moved = 0;      /* the change below moved the file's times */
    if (!(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))) {
        struct statvfs sv;
        if (end > size && statvfs(stashfs_data_dir, &sv) == 0 &&
            (uint64_t)sv.f_bavail * sv.f_frsize < end - size)
            return -ENOSPC;
    } else {
        if ((rc = stash_zero_range(db, key, kl, (uint64_t)off, (uint64_t)len)) != 0)
            return rc;
        moved = (uint64_t)off < size;
    }
    /* Grown, never cut: the file may have grown past END meanwhile
     * (through another name, or the library). */
    int grew = 0;
    if (!(mode & FALLOC_FL_KEEP_SIZE) && (rc = stash_extend(db, key, kl, end, &grew)) != 0)
        return rc;
    /* Every fallocate that succeeds moves mtime and ctime, as on ext4,
     * also one that changes no byte. */
    stash_stat_t t = {.mtime_ns = now()};
    t.ctime_ns = t.mtime_ns;
    return moved || grew ? 0 : stash_setstat(db, key, kl, &t, STASH_SET_MTIME | STASH_SET_CTIME);
}

static int w_unlink(const char *path)
{
    char key[KEYBUF];
    size_t kl;
    stash_stat_t s;
    enum kind k;
    int rc = lookup(path, key, &kl, &s, &k);
    if (rc)
        return rc;
    if (k == K_NONE)
        return -ENOENT;
    if (k == K_DIR)
        return -EISDIR;
    if ((rc = touch_parent(key, kl)))
        return rc;
    if ((rc = stash_delete(db, key, kl)) == 0 && key[0] == '/')
        of_unhide(key);         /* libfuse removing an orphan's name */
    return rc;
}

static int w_mkdir(const char *path, mode_t mode)
{
    if (reserved(path))
        return -EPERM;
    char key[KEYBUF];
    size_t kl;
    stash_stat_t s;
    enum kind k;
    int rc = lookup(path, key, &kl, &s, &k);
    if (rc)
        return rc;
    if (k != K_NONE)
        return -EEXIST;
    key[kl] = '/';
    s = new_attrs(key, kl, S_IFDIR | (mode & 07777));
    rc = stash_create(db, key, kl + 1, &s, STASH_EXCL);
    if (rc)
        return rc;
    dirs_changed();     /* the path may have shown an implicit directory */
    rc = touch_parent(key, kl);
    return rc ? unmake(key, kl + 1, rc) : 0;
}

/* Whether directory KEY (without its '/') holds any entry. */
static int dir_empty(char *key, size_t kl)
{
    key[kl] = '/';
    stash_iter_t *it = dir_iter(key, kl + 1);
    if (!it) {
        key[kl] = 0;
        return -ENOMEM;
    }
    stash_iter_seek(it, key, kl + 1);
    int empty = 1;
    while (stash_iter_valid(it)) {
        size_t n;
        const char *k = stash_iter_key(it, &n);
        if (n < kl + 1 || memcmp(k, key, kl + 1) != 0)
            break;
        if (n > kl + 1) {
            empty = 0;
            break;
        }
        stash_iter_next(it);
    }
    int rc = stash_iter_status(it);
    stash_iter_free(it);
    key[kl] = 0;
    return rc < 0 ? rc : empty;
}

static int w_rmdir(const char *path)
{
    char key[KEYBUF];
    size_t kl;
    stash_stat_t s;
    enum kind k;
    int rc = lookup(path, key, &kl, &s, &k);
    if (rc)
        return rc;
    if (k == K_NONE)
        return -ENOENT;
    if (k == K_FILE)
        return -ENOTDIR;
    if (kl == 0)
        return -EBUSY;
    rc = dir_empty(key, kl);
    if (rc < 0)
        return rc;
    if (!rc)
        return -ENOTEMPTY;
    if ((rc = touch_parent(key, kl)))
        return rc;
    key[kl] = '/';
    if ((rc = stash_delete(db, key, kl + 1)) == 0) {
        of_moved(path, NULL);
        dirs_changed();
    }
    return rc;
}

/* The keys and kinds of FROM and TO (a rename, a link).  *FK and *TK are
 * malloc'd (KEYBUF bytes) or NULL, also on an error: the caller frees both. */
static int lookup2(const char *from, const char *to, char **fk, size_t *fl, enum kind *fkind,
                   char **tk, size_t *tl, enum kind *tkind)
{
    stash_stat_t s;
    *fk = malloc(KEYBUF);
    *tk = malloc(KEYBUF);
    int rc = *fk && *tk ? 0 : -ENOMEM;
    if (rc == 0)
        rc = lookup(from, *fk, fl, &s, fkind);
    if (rc == 0)
        rc = lookup(to, *tk, tl, &s, tkind);
    return rc;
}

/*
 * rename(2) of one name of a file onto another name of it that is open:
 * libfuse first moves the open name to a removed-while-open one (the hide
 * below), then asks for the rename, in the same request; by then the
 * target is free, and the source's name would go, where rename(2) does
 * nothing.  The thread remembers its last hide of an open file (the path
 * moved, its new key, the request: under stashfs's own loop only, which
 * numbers requests), and such a rename puts the target's name back as
 * another name of the file and leaves the source.  The hidden name stays
 * until the last close, counted in the link count as for an unlink.
 */
static __thread uint64_t hid_path;          /* a hash of the path; 0: none */
static __thread unsigned long hid_req;
static __thread char hid_key[HIDDEN_LEN + 2];

/* Is a rename onto TO the one that follows libfuse's move of TO, an open
 * file, aside in this request? */
static int after_move_aside(const char *to)
{
    return hid_path && loop_request() && hid_req == loop_request() && hid_path == (fnv64(0, to, strlen(to)) | 1);
}

/* Whether keys A and B are two names of one (hard-linked) file. */
static int one_file(const char *a, size_t al, const char *b, size_t bl)
{
    stash_stat_t as, bs;
    return stash_stat(db, NULL, a, al, &as) == 0 && stash_stat(db, NULL, b, bl, &bs) == 0 && as.link_id &&
           as.link_id == bs.link_id;
}

/*
 * renameat2(RENAME_EXCHANGE): FROM and TO swap in one batch
 * (stash_rename2): two files, two directories with everything under them,
 * or a file and a directory.  Both directories' times and both entries'
 * ctimes move.  (libfuse moves no open file aside for it.)
 */
static int w_exchange(const char *from, const char *to)
{
    if (hidden_path(from) || hidden_path(to))
        return -EPERM;
    char *fk, *tk;
    size_t fl, tl;
    enum kind fkind, tkind;
    int rc = lookup2(from, to, &fk, &fl, &fkind, &tk, &tl, &tkind);
    if (rc == 0 && (fkind == K_NONE || tkind == K_NONE))
        rc = -ENOENT;
    if (rc == 0 && (fl == 0 || tl == 0))
        rc = -EBUSY;        /* the root */
    /* Neither may hold the other. */
    if (rc == 0 && ((tl > fl && !memcmp(tk, fk, fl) && tk[fl] == '/') ||
                    (fl > tl && !memcmp(fk, tk, tl) && fk[tl] == '/')))
        rc = -EINVAL;
    /* Two names of one file: nothing changes (rename(2)). */
    if (rc == 0 && fkind == K_FILE && tkind == K_FILE && one_file(fk, fl, tk, tl)) {
        free(fk);
        free(tk);
        return 0;
    }
    if (rc == 0) {
        /* A directory moves as its keys "dir/...", to "name/..." of the
         * other entry's name. */
        fk[fl] = '/';
        tk[tl] = '/';
        if (fkind == K_FILE && tkind == K_FILE)
            rc = stash_rename2(db, fk, fl, tk, tl, tk, tl, fk, fl, 0);
        else if (fkind == K_DIR && tkind == K_DIR)
            rc = stash_rename2(db, fk, fl + 1, tk, tl + 1, tk, tl + 1, fk, fl + 1, STASH_PREFIX1 | STASH_PREFIX2);
        else if (fkind == K_FILE)
            rc = stash_rename2(db, fk, fl, tk, tl, tk, tl + 1, fk, fl + 1, STASH_PREFIX2);
        else
            rc = stash_rename2(db, tk, tl, fk, fl, fk, fl + 1, tk, tl + 1, STASH_PREFIX2);
        fk[fl] = tk[tl] = '\0';
    }
    if (rc == 0 && (fkind == K_DIR || tkind == K_DIR)) {
        of_exchanged(from, to);
        touch_forget();
        dirs_changed();
    }
    if (rc == 0) {
        /* Made by now: what follows does not fail the call. */
        (void)touch_parent(fk, fl);
        (void)touch_parent(tk, tl);
        stash_stat_t t = {.ctime_ns = now()};
        /* What was at FROM is at TO now, and the other way round. */
        if (fkind == K_DIR)
            tk[tl] = '/';
        (void)stash_setstat(db, tk, fkind == K_DIR ? tl + 1 : tl, &t, STASH_SET_CTIME);
        tk[tl] = '\0';
        if (tkind == K_DIR)
            fk[fl] = '/';
        (void)stash_setstat(db, fk, tkind == K_DIR ? fl + 1 : fl, &t, STASH_SET_CTIME);
    }
    free(fk);
    free(tk);
    return rc;
}

static int w_rename(const char *from, const char *to, unsigned int flags)
{
    if (flags == RENAME_EXCHANGE)
        return w_exchange(from, to);
    if (flags & ~(unsigned)RENAME_NOREPLACE)
        return -EINVAL;
    int after_hide = after_move_aside(to);
    hid_path = 0;
    /* Removed-while-open names (see path_key): a move to a free one is
     * libfuse keeping a file removed while open, when libfuse has just
     * looked that name up in this request (hide_expected) and the file is
     * open; any other move to or from such a name is refused. */
    int hide = hidden_path(to);
    if (hide && (orphan_key(to, NULL) || !hide_expected(to)))
        return -EPERM;
    /* libfuse moving an open target aside before a rename onto it: the
     * rename that follows moves the directories' times, or, onto another
     * name of the same file, changes nothing at all (rename(2)); the move
     * aside itself shows nowhere.  (An unlink's move aside is the unlink
     * and moves them.) */
    int quiet = hide && loop_in_rename();
    if (!hide && hidden_path(from) && orphan_key(from, NULL))
        return -EPERM;
    char *fk, *tk;
    size_t fl, tl;
    enum kind fkind, tkind;
    int rc = lookup2(from, to, &fk, &fl, &fkind, &tk, &tl, &tkind);
    if (rc == 0 && fkind == K_NONE)
        rc = -ENOENT;
    if (rc == 0 && tkind != K_NONE && (flags & RENAME_NOREPLACE))
        rc = -EEXIST;
    uint64_t hino = 0;
    if (rc == 0 && hide) {
        /* The file's new key: "/" + name, outside every directory. */
        tk[0] = '/';
        memcpy(tk + 1, last_name(to), HIDDEN_LEN + 1);
        tl = HIDDEN_LEN + 1;
        tkind = K_NONE;
        stash_stat_t hs;
        /* libfuse's names are new in each hide (a counter): one already in
         * use is someone else's move. */
        if (fkind != K_FILE || orphan_used(tk) || stash_stat(db, NULL, tk, tl, &hs) != -ENOENT)
            rc = -EPERM;
        else if ((rc = stash_stat(db, NULL, fk, fl, &hs)) == 0 && !loop_request() &&
                 !of_is_open(ino_of(&hs, fk, fl)))
            rc = -EPERM;        /* (libfuse's loop: no request numbers to go by) */
        hino = rc == 0 ? ino_of(&hs, fk, fl) : 0;
    }
    /* Two names of one file: rename(2) succeeds and does nothing else (no
     * times move).  (The kernel sees two inodes, so it asks.) */
    if (rc == 0 && fkind == K_FILE && tkind == K_FILE && one_file(fk, fl, tk, tl)) {
        free(fk);
        free(tk);
        return 0;
    }
    if (rc == 0 && after_hide && fkind == K_FILE && tkind == K_NONE) {
        stash_stat_t fs, hs;
        if (stash_stat(db, NULL, fk, fl, &fs) == 0 && fs.link_id &&
            stash_stat(db, NULL, hid_key, strlen(hid_key), &hs) == 0 && hs.link_id == fs.link_id) {
            rc = stash_link(db, fk, fl, tk, tl);
            free(fk);
            free(tk);
            return rc;
        }
    }
    /* The source's directory changes (its times move) once the rename is
     * known to go ahead: a refused one changes nothing. */
    if (rc == 0 && fkind == K_FILE) {
        if (tkind == K_DIR)
            rc = -EISDIR;
        else if ((rc = quiet ? 0 : touch_parent(fk, fl)) == 0)
            rc = stash_rename(db, fk, fl, tk, tl, 0);
    } else if (rc == 0) {
        /* A directory: the whole sub-tree moves in one batch. */
        if (fl == 0 || tl == 0 || (tl > fl && !memcmp(tk, fk, fl) && tk[fl] == '/'))
            rc = -EINVAL;
        else if (tkind == K_FILE)
            rc = -ENOTDIR;
        else if (tkind == K_DIR && (rc = dir_empty(tk, tl)) >= 0)
            rc = rc ? 0 : -ENOTEMPTY;
        if (rc == 0)
            rc = touch_parent(fk, fl);
        if (rc == 0 && tkind == K_DIR) {
            tk[tl] = '/';
            rc = stash_delete(db, tk, tl + 1);
        }
        if (rc == 0) {
            fk[fl] = '/';
            tk[tl] = '/';
            rc = stash_rename_prefix(db, fk, fl + 1, tk, tl + 1, NULL);
        }
        if (rc == 0)
            of_moved(from, to);     /* orphans under it move along */
        /* The paths under TO now name the moved directories, whose times
         * (perhaps set by utimensat) the next change must move, whatever
         * the directories that had those paths a moment ago were last
         * touched (touch_parent). */
        if (rc == 0) {
            touch_forget();
            dirs_changed();
        }
    }
    if (rc == 0 && !quiet) {
        /* The target's directory changed too, and the moved entry's ctime
         * moves (as on Linux filesystems).  The move is made by now: a
         * failure here does not fail the call, which would leave the entry
         * moved by a rename that returned an error. */
        (void)touch_parent(tk, tl);
        stash_stat_t t = {.ctime_ns = now()};
        size_t ol = fkind == K_DIR ? tl + 1 : tl;   /* a directory's record */
        (void)stash_setstat(db, tk, ol, &t, STASH_SET_CTIME);
    }
    /* Nothing holds it any more (closed since libfuse looked): it goes,
     * as the unlink wanted. */
    if (rc == 0 && hide) {
        tk[tl] = '\0';
        fk[fl] = '\0';
        if (!of_hide(hino, fk, tk, to)) {
            rc = stash_delete(db, tk, tl);
        } else {
            hid_path = fnv64(0, from, strlen(from)) | 1;
            hid_req = loop_request();
            memcpy(hid_key, tk, tl + 1);
        }
    }
    free(fk);
    free(tk);
    return rc;
}

/* link(2): NEW becomes another name of FROM's value (stash_link). */
static int w_link(const char *from, const char *to)
{
    if (reserved(to))
        return -EPERM;
    char *fk, *tk;
    size_t fl, tl;
    enum kind fkind, tkind;
    int rc = lookup2(from, to, &fk, &fl, &fkind, &tk, &tl, &tkind);
    if (rc == 0 && fkind == K_NONE)
        rc = -ENOENT;
    else if (rc == 0 && fkind == K_DIR)
        rc = -EPERM;
    else if (rc == 0 && tkind != K_NONE)
        rc = -EEXIST;
    if (rc == 0)
        rc = stash_link(db, fk, fl, tk, tl);
    if (rc == 0) {
        atomic_store(&links_seen, 1);
        if ((rc = touch_parent(tk, tl)) != 0)
            unmake(tk, tl, rc);     /* (the value keeps its other names) */
    }
    free(fk);
    free(tk);
    return rc;
}

/*
 * The key holding PATH's attributes: the file's own, or the directory's
 * record "dir/".  A directory shown without a record gets one (with what
 * was shown) when MAKE is set.  *shown (may be NULL) gets the attributes
 * as the mount shows them.
 */
static int attr_key(const char *path, char *key, size_t *kl, struct stat *shown, int make)
{
    stash_stat_t s;
    enum kind k;
    int rc = lookup(path, key, kl, &s, &k);
    if (rc)
        return rc;
    if (k == K_NONE)
        return -ENOENT;
    struct stat st;
    fill_stat(&s, k == K_DIR, &st);
    if (shown)
        *shown = st;
    if (k != K_DIR)
        return 0;
    key[(*kl)++] = '/';
    if (make && !s.mode) {
        stash_stat_t d = dir_record(ts_to_ns(&mount_time));
        if ((rc = stash_create(db, key, *kl, &d, STASH_EXCL)) && rc != -EEXIST)
            return rc;
    }
    return 0;
}

/*
 * Change what MASK names of PATH's attributes to WANT's (STASH_SET_MODE:
 * the permission bits).  Mode, owner and the change time are always
 * written whole, so a key written through the library gets them all.  The
 * change time is WANT's when it has one, now otherwise.
 */
static int set_attrs(const char *path, const stash_stat_t *want, unsigned mask)
{
    char key[KEYBUF];
    size_t kl;
    struct stat st;
    int rc = attr_key(path, key, &kl, &st, 1);
    if (rc)
        return rc;
    stash_stat_t s = *want;
    s.mode = (st.st_mode & S_IFMT) | ((mask & STASH_SET_MODE ? want->mode : st.st_mode) & 07777);
    if (!(mask & STASH_SET_UID))
        s.uid = st.st_uid;
    if (!(mask & STASH_SET_GID))
        s.gid = st.st_gid;
    s.ctime_ns = want->ctime_ns ? want->ctime_ns : now();
    int dir = S_ISDIR(st.st_mode);
    uint64_t node;
    if (!dir && loop_kills_suid(&node)) {  /* a chown (see kill_suid) */
        mode_t kill = setid_bits(st.st_mode, st.st_gid);
        /* chown(-1, -1) clears them for the owner and root, as on ext4;
         * for anyone else it is EPERM, except for one who may write the
         * file: the same request comes before a write of theirs, whose
         * own flag clears the bits (loop.h), and must not fail it. */
        struct fuse_context *c = fuse_get_context();
        struct perm_who pw = {.uid = c->uid, .gid = c->gid, .ngroups = -1, .load = load_groups};
        if (kill && !(mask & (STASH_SET_UID | STASH_SET_GID)) && c->uid != 0 && c->uid != st.st_uid) {
            if (perm_may(&pw, &st, PERM_W) != 0)
                return -EPERM;
            kill = 0;
        }
        s.mode &= ~kill;
    }
    if (dir)
        touch_forget();
    rc = stash_setstat(db, key, kl, &s, mask | STASH_SET_MODE | STASH_SET_UID | STASH_SET_GID | STASH_SET_CTIME);
    if (dir) {
        touch_forget();   /* a change made meanwhile must not hide this one */
        dirs_changed();
    }
    return rc;
}

static int w_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    stash_stat_t s = {.mode = mode};
    return set_attrs(path, &s, STASH_SET_MODE);
}

static int w_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    stash_stat_t s = {.uid = uid, .gid = gid};
    return set_attrs(path, &s, (uid != (uid_t)-1 ? STASH_SET_UID : 0) | (gid != (gid_t)-1 ? STASH_SET_GID : 0));
}

static int w_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
    stash_stat_t s = {0};
    unsigned mask = 0;
    int64_t t = now();
    if (!tv || tv[0].tv_nsec != UTIME_OMIT) {
        s.atime_ns = !tv || tv[0].tv_nsec == UTIME_NOW ? t : ts_to_ns(&tv[0]);
        mask |= STASH_SET_ATIME;
    }
    if (!tv || tv[1].tv_nsec != UTIME_OMIT) {
        s.mtime_ns = !tv || tv[1].tv_nsec == UTIME_NOW ? t : ts_to_ns(&tv[1]);
        mask |= STASH_SET_MTIME;
    }
    s.ctime_ns = t;     /* the same instant as a time set to now (touch) */
    return set_attrs(path, &s, mask);
}

static int w_symlink(const char *target, const char *path)
{
    if (reserved(path))
        return -EPERM;
    char key[KEYBUF];
    size_t kl;
    stash_stat_t s;
    enum kind k;
    int rc = lookup(path, key, &kl, &s, &k);
    if (rc)
        return rc;
    if (k != K_NONE)
        return -EEXIST;
    s = new_attrs(key, kl, S_IFLNK | 0777);
    rc = stash_create(db, key, kl, &s, STASH_EXCL);
    if (rc)
        return rc;
    rc = stash_pwrite(db, key, kl, target, strlen(target), 0);
    if (rc == 0)
        rc = touch_parent(key, kl);
    return rc ? unmake(key, kl, rc) : 0;
}

static int r_readlink(const char *path, char *buf, size_t size)
{
    char key[KEYBUF];
    size_t kl, got;
    int rc = path_key(path, key, sizeof key, &kl);
    if (rc)
        return rc;
    if (size == 0)
        return -EINVAL;
    rc = stash_pread_at(db, cur, key, kl, buf, size - 1, 0, &got);
    if (rc)
        return rc;
    buf[got] = 0;
    return 0;
}

/* The extended attribute namespaces kept: user. and trusted.  Any other
 * name (security.*, system.posix_acl_*) is answered ENOTSUP for reads and
 * removals as for writes, not ENODATA: "this filesystem has no such
 * attributes" rather than "this file has none".  Tools tell the two apart:
 * ls -l, after ENOTSUP once, stops asking for every file's SELinux label and
 * ACL on that filesystem (two round trips per file), and cp, tar and rsync
 * take it as no ACL.  0 for a name kept, or the error. */
static int xattr_ns_ok(const char *name)
{
    /* A namespace with nothing after it ("user.", "security.") is no name
     * (EINVAL, as the kernel answers for local filesystems). */
    const char *dot = strchr(name, '.');
    if (dot && !dot[1])
        return -EINVAL;
    return !strncmp(name, "user.", 5) || !strncmp(name, "trusted.", 8) ? 0 : -ENOTSUP;
}

static int w_setxattr(const char *path, const char *name, const char *val, size_t size, int flags)
{
    char key[KEYBUF];
    size_t kl;
    int rc = xattr_ns_ok(name);
    if (rc == 0)
        rc = attr_key(path, key, &kl, NULL, 1);
    if (rc)
        return rc;
    int f = (flags & XATTR_CREATE ? STASH_XATTR_CREATE : 0) | (flags & XATTR_REPLACE ? STASH_XATTR_REPLACE : 0);
    return stash_setxattr(db, key, kl, name, val, size, f);
}

static int r_getxattr(const char *path, const char *name, char *val, size_t size)
{
    char key[KEYBUF];
    size_t kl, n;
    int rc = xattr_ns_ok(name);
    if (rc == 0)
        rc = attr_key(path, key, &kl, NULL, 0);
    if (rc)
        return rc;
    rc = stash_getxattr(db, cur, key, kl, name, val, size, &n);
    if (rc == -ENOENT)
        return -ENODATA;   /* an implicit directory has none */
    return rc ? rc : (int)n;
}

static int r_listxattr(const char *path, char *list, size_t size)
{
    char key[KEYBUF];
    size_t kl, n;
    int rc = attr_key(path, key, &kl, NULL, 0);
    if (rc)
        return rc;
    rc = stash_listxattr(db, cur, key, kl, list, size, &n);
    if (rc == -ENOENT)
        return 0;
    return rc ? rc : (int)n;
}

static int w_removexattr(const char *path, const char *name)
{
    char key[KEYBUF];
    size_t kl;
    int rc = xattr_ns_ok(name);
    if (rc == 0)
        rc = attr_key(path, key, &kl, NULL, 0);
    if (rc)
        return rc;
    rc = stash_removexattr(db, key, kl, name);
    return rc == -ENOENT ? -ENODATA : rc;
}

/* ---- hard links: the other names' kernel caches ---- */

/* The link id of live PATH's value, or 0 (always 0 until a link was seen). */
static uint64_t link_id_of(const char *path)
{
    if (!atomic_load_explicit(&links_seen, memory_order_relaxed))
        return 0;
    char key[KEYBUF];
    size_t kl;
    stash_stat_t s;
    if (path_key(path, key, sizeof key, &kl) || stash_stat(db, NULL, key, kl, &s))
        return 0;
    return s.link_id;
}

/* Queue PATH, or (NODE nonzero) kernel inode NODE of open file INO, or
 * (ENTRY) the entry PATH in directory NODE, for the notifier. */
static void inval_queue(const char *path, size_t n, uint64_t node, uint64_t ino, int entry)
{
    struct inval *e = malloc(sizeof *e + n + 1);
    if (!e)
        return;                 /* the caches age out in attr_timeout */
    memcpy(e->path, path, n);
    e->path[n] = 0;
    e->node = node;
    e->ino = ino;
    e->entry = entry;
    e->next = NULL;
    pthread_mutex_lock(&inval_mu);
    if (inval_stop) {
        free(e);                /* stopping: the mount is going away */
    } else {
        *inval_tail = e;
        inval_tail = &e->next;
        pthread_cond_signal(&inval_cv);
    }
    pthread_mutex_unlock(&inval_mu);
}

static void inval_push(const char *path, size_t n)
{
    inval_queue(path, n, 0, 0, 0);
}

/* Queue the kernel's entry NAME in directory DIR (a kernel inode). */
static void inval_entry(uint64_t dir, const char *name)
{
    inval_queue(name, strlen(name), dir, 0, 1);
}

/* An orphan of key KEY that libfuse has lost the path of (its directory was
 * removed) is still open: queue the kernel inodes its file was opened
 * through, but the one of the request being answered (whose caches the
 * kernel keeps right itself).  (of_mu, then inval_mu: the notifier never
 * holds the second while it takes the first.) */
static void inval_orphan_nodes(const char *key, size_t kl)
{
    char k[HIDDEN_LEN + 2];
    uint64_t self = loop_node();
    if (kl != HIDDEN_LEN + 1)
        return;
    memcpy(k, key, kl);
    k[kl] = '\0';
    pthread_mutex_lock(&of_mu);
    struct orphan *x = *orphan_by_key(k);
    struct ofile *o = x && !x->path ? *of_find(x->ino) : NULL;
    for (unsigned i = 0; o && i < o->nnodes; i++)
        if (o->nodes[i] != self)
            inval_queue("", 0, o->nodes[i], o->ino, 0);
    pthread_mutex_unlock(&of_mu);
}

struct inval_arg {
    const char *except;         /* a key not to invalidate, or NULL */
    size_t elen;
    char path[KEYBUF + 1];
};

static int inval_one(void *arg, const void *key, size_t klen)
{
    struct inval_arg *a = arg;
    if (klen > KEYBUF - 1 || (a->except && klen == a->elen && !memcmp(key, a->except, klen)))
        return 0;
    if (klen && *(const char *)key == '/') {
        /* An orphan: where libfuse has it, if anywhere. */
        if (orphan_path(key, klen, a->path, sizeof a->path))
            inval_push(a->path, strlen(a->path));
        else
            inval_orphan_nodes(key, klen);
        return 0;
    }
    a->path[0] = '/';
    memcpy(a->path + 1, key, klen);
    inval_push(a->path, klen + 1);
    return 0;
}

/* Have the kernel drop what it caches of every name of linked value ID
 * but EXCEPT (a path, or NULL). */
static void inval_id(uint64_t id, const char *except)
{
    struct inval_arg *a = malloc(sizeof *a);
    if (!a)
        return;
    a->except = NULL;
    if (except) {
        while (*except == '/')
            except++;
        a->except = except;
        a->elen = strlen(except);
    }
    (void)stash_link_names(db, id, inval_one, a);
    free(a);
}

static void inval_names(const char *path, const char *except)
{
    uint64_t id = link_id_of(path);
    if (id)
        inval_id(id, except);
}

static void *inval_loop(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&inval_mu);
    for (;;) {
        while (!inval_head && !inval_stop)
            pthread_cond_wait(&inval_cv, &inval_mu);
        if (!inval_head)
            break;
        struct inval *e = inval_head;
        if (!(inval_head = e->next))
            inval_tail = &inval_head;
        pthread_mutex_unlock(&inval_mu);
        if (e->entry)
            (void)fuse_lowlevel_notify_inval_entry(fuse_get_session(fuse_self), e->node, e->path, strlen(e->path));
        else if (!e->node)
            (void)fuse_invalidate_path(fuse_self, e->path);   /* -ENOENT: not cached */
        else if (fuse_lowlevel_notify_inval_inode(fuse_get_session(fuse_self), e->node, 0, 0) == -ENOENT)
            of_forget_node(e->ino, e->node);                 /* the kernel forgot it */
        free(e);
        pthread_mutex_lock(&inval_mu);
    }
    pthread_mutex_unlock(&inval_mu);
    return NULL;
}

/* Stop the thread that sends the kernel invalidations: it drops what is
 * queued and ends after the one it may be sending.  Called by the request
 * loop while requests are still answered (loop.h: an invalidation of a
 * file's pages waits for a READ of them), and again at destroy. */
static void inval_end(void)
{
    if (!inval_started)
        return;
    pthread_mutex_lock(&inval_mu);
    inval_stop = 1;
    while (inval_head) {
        struct inval *e = inval_head;
        inval_head = e->next;
        free(e);
    }
    inval_tail = &inval_head;
    pthread_cond_signal(&inval_cv);
    pthread_mutex_unlock(&inval_mu);
    pthread_join(inval_thread, NULL);
    inval_started = 0;
}

static void fs_destroy(void *private_data)
{
    (void)private_data;
    inval_end();
}

/* A change to PATH's value: when it is linked, its other names' caches go
 * stale (their attributes, their pages, their name count). */
#define LINKED_OP(call)                       \
    int rc = live_only(path);                 \
    if (rc)                                   \
        return rc;                            \
    uint64_t lid_ = link_id_of(path);         \
    rc = call;                                \
    if (rc >= 0 && lid_)                      \
        inval_id(lid_, path);                 \
    return rc

/* LINKED_OP for the calls of a SETATTR, which libfuse answers with a
 * getattr of PATH (see setattr_mark). */
#define LINKED_SETATTR(call)                  \
    int rc = live_only(path);                 \
    if (rc)                                   \
        return setattr_mark(path, rc), rc;    \
    uint64_t lid_ = link_id_of(path);         \
    rc = call;                                \
    setattr_mark(path, rc);                   \
    if (rc >= 0 && lid_)                      \
        inval_id(lid_, path);                 \
    return rc

/* ------------------------------------------------------------------ */
/* permissions                                                          */

/*
 * Who may do what is checked either by the kernel (default_permissions) or
 * here, by the rules of perm.h.  The kernel's checks need each directory's
 * attributes to be fresh, and it drops them whenever an entry is made or
 * removed in the directory, so with them every create and unlink costs one
 * more round trip (a GETATTR of the directory): a quarter of a create's
 * time and a third of an unlink's here.
 *
 * The daemon checks by default only where every caller is root: mounted by
 * root, without allow_other or allow_root (the kernel lets no one but the
 * mounting user's processes in).  Root passes every check but execute
 * permission on a file no one may run, so nothing is looked up for it.
 * Anywhere else the kernel checks, unless -o daemon_permissions asks for
 * the daemon's checks; their limits are in the README ("Permissions").
 *
 * The daemon's checks: search permission on every directory from the
 * mount's root down (walk) for a LOOKUP and for each call that names a file
 * to open, make, remove, rename, truncate, test (ACCESS) or give user
 * attributes; write permission on the directory an entry is made in or
 * removed from, with the sticky bit's rule; the permission the call needs
 * on the file itself; ownership for chmod, chown and times.  The kernel
 * resolves names it caches without asking, so the walk is what keeps a
 * directory that lost search permission closed; it also refuses what Linux
 * allows through a descriptor or a working directory below such a
 * directory (openat, fchdir).  GETATTR and SETATTR are not walked: the
 * kernel sends them for files already reached (fstat, fchmod).  Only the
 * default request loop tells LOOKUP from GETATTR, so libfuse's own loop
 * (-o clone_fd) always has the kernel check.
 */
static int kernel_perms;
static void snaproot_stat(struct stat *st);

/* The caller's supplementary groups: read from /proc by libfuse, into a
 * buffer per thread that grows to the largest list seen. */
static __thread gid_t *groups_buf;
static __thread int groups_cap;

static void load_groups(struct perm_who *w)
{
    int n = fuse_getgroups(groups_cap, groups_buf);
    if (n > groups_cap) {
        gid_t *g = realloc(groups_buf, (size_t)n * sizeof *g);
        if (g) {
            groups_buf = g;
            groups_cap = n;
            n = fuse_getgroups(groups_cap, groups_buf);
        }
    }
    w->groups = groups_buf;
    w->ngroups = n < 0 ? 0 : n > groups_cap ? groups_cap : n;
}

/* Fill *w with the caller; 0 when nothing needs checking (the kernel
 * checks, or root asks), 1 otherwise. */
static int asks(struct perm_who *w)
{
    if (kernel_perms)
        return 0;
    struct fuse_context *c = fuse_get_context();
    w->uid = c->uid;
    w->gid = c->gid;
    w->ngroups = -1;
    w->groups = NULL;
    w->load = load_groups;
    return w->uid != 0;
}

/* PATH's attributes as the mount shows them (getattr); *where (may be
 * NULL) gets where PATH is. */
static int attrs_of(const char *path, struct stat *st, int after_setattr, int *where)
{
    const char *rel;
    int w = enter(path, &rel), rc;
    if (w < 0)
        rc = w;
    else if (w == W_SNAPROOT)
        rc = (snaproot_stat(st), 0);
    else
        rc = r_getattr(rel, st, after_setattr);
    leave();
    if (where)
        *where = w;
    return rc;
}

/* attrs_of, for the permission checks: no side effect on the call being
 * checked. */
static int shown(const char *path, struct stat *st)
{
    return attrs_of(path, st, 0, NULL);
}

/*
 * The directories' attributes the checks looked up, kept per thread while
 * dir_gen stays as it was (dirs_changed).  Live paths only; snapshots are
 * looked up every time.
 */
#define WC_SLOTS 16
#define WC_PATH 192
static __thread struct walk_cache {
    unsigned long gen;      /* dir_gen + 1 when filled, 0: empty */
    size_t len;
    mode_t mode;
    uid_t uid;
    gid_t gid;
    char path[WC_PATH];
} wcache[WC_SLOTS];

/* shown, for directory P (LEN bytes, NUL-terminated). */
static int dir_shown(const char *p, size_t len, struct stat *st)
{
    unsigned long g = atomic_load(&dir_gen) + 1;
    struct walk_cache *c = len < WC_PATH && live_only(p) == 0 ? &wcache[fnv64(0, p, len) % WC_SLOTS] : NULL;
    if (c && c->gen == g && c->len == len && !memcmp(c->path, p, len)) {
        memset(st, 0, sizeof *st);
        st->st_mode = c->mode;
        st->st_uid = c->uid;
        st->st_gid = c->gid;
        return 0;
    }
    int rc = shown(p, st);
    if (rc == 0 && c && S_ISDIR(st->st_mode)) {
        c->gen = g;
        c->len = len;
        c->mode = st->st_mode;
        c->uid = st->st_uid;
        c->gid = st->st_gid;
        memcpy(c->path, p, len);
    }
    return rc;
}

/*
 * May W reach PATH: search permission on every directory above it, and
 * MASK as well on the one holding it, whose attributes go to *dir (when not
 * NULL; zeros for the root, which nothing holds).
 */
static int walk(struct perm_who *w, const char *path, int mask, struct stat *dir)
{
    const char *last = strrchr(path, '/');
    if (dir)
        memset(dir, 0, sizeof *dir);
    if (!last || (last == path && !path[1]))
        return 0;
    size_t n = strlen(path), parent = (size_t)(last - path);
    char small[512], *buf = n < sizeof small ? small : malloc(n + 1);
    if (!buf)
        return -ENOMEM;
    memcpy(buf, path, n + 1);
    int rc;
    for (size_t i = 0;;) {
        size_t len = i ? i : 1;
        char save = buf[len];
        struct stat st;
        buf[len] = '\0';
        rc = dir_shown(buf, len, &st);
        buf[len] = save;
        if (rc)
            break;
        if (!S_ISDIR(st.st_mode)) {
            rc = -ENOTDIR;
            break;
        }
        if ((rc = perm_may(w, &st, PERM_X | (i == parent ? mask : 0))))
            break;
        if (i == parent) {
            if (dir)
                *dir = st;
            break;
        }
        i = (size_t)(strchr(path + i + 1, '/') - path);
    }
    if (buf != small)
        free(buf);
    return rc;
}

/* walk, then MASK on PATH itself, whose attributes go to *st. */
static int may_path(struct perm_who *w, const char *path, int mask, struct stat *st)
{
    int rc = walk(w, path, 0, NULL);
    if (rc == 0)
        rc = shown(path, st);
    return rc ? rc : perm_may(w, st, mask);
}

/* May W remove or replace PATH's entry (rename, unlink, rmdir)?  Write and
 * search permission on its directory, and the sticky bit's rule; *victim
 * gets its attributes. */
static int may_delete(struct perm_who *w, const char *path, struct stat *victim)
{
    struct stat dir;
    int rc = walk(w, path, PERM_W, &dir);
    if (rc == 0)
        rc = shown(path, victim);
    return rc ? rc : perm_sticky(w, &dir, victim);
}

/* ------------------------------------------------------------------ */
/* the entry points: snapshots are read-only trees                      */

static void snaproot_stat(struct stat *st)
{
    stash_stat_t s = dir_record(ts_to_ns(&mount_time));
    fill_stat(&s, 1, st);
    st->st_ino = SNAPROOT_INO;
}

struct lister {
    void *buf;
    fuse_fill_dir_t filler;
};

static int list_one(void *arg, const char *name, uint64_t seq, int64_t ct)
{
    struct lister *l = arg;
    l->filler(l->buf, name, NULL, 0, 0);
    return 0;
}

/* A call through a handle alone (libfuse passes no path when it cannot
 * build one: the file was removed while open and its directory since); the
 * file lives on under its key (of_path). */
#define NULL_PATH(fi)                                          \
    char hp_[HIDDEN_LEN + 3];                                  \
    if (!path && !(path = of_path(fi, hp_, sizeof hp_)))       \
        return -ENOENT

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    struct perm_who pw;
    int prc = path && loop_in_lookup() && asks(&pw) ? walk(&pw, path, 0, NULL) : 0;
    if (prc)
        return prc;
    NULL_PATH(fi);
    int w, rc = attrs_of(path, st, setattr_marked(path), &w);
    if (rc == -ENOENT && w == W_LIVE && !fi && hidden_path(path))
        hide_probed(path);      /* libfuse looking for a free name (hide_probe) */
    if (rc == 0 && w == W_LIVE && S_ISDIR(st->st_mode) && path)
        touch_seen(path);
    return rc;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    if (!path)
        return 0;       /* a directory removed while open lists nothing */
    /* Entries' attributes go with their names only to a caller who may
     * search the directory (ls -l of a directory it may only read). */
    struct perm_who pw;
    struct stat dst;
    if ((flags & FUSE_READDIR_PLUS) && asks(&pw) && (shown(path, &dst) || perm_may(&pw, &dst, PERM_X)))
        flags &= ~FUSE_READDIR_PLUS;
    /* "." and ".." go with their inode numbers and type (d_ino, d_type),
     * as on a local disk; the root is its own parent. */
    struct stat dots[2];
    int dots_ok = 0;
    if (off <= 1 && shown(path, &dots[0]) == 0) {
        char up[PATH_MAX];
        size_t n = strlen(path);
        if (n < sizeof up) {
            memcpy(up, path, n + 1);
            char *sl = strrchr(up, '/');
            if (sl)
                sl[sl == up] = 0;       /* "/a/b" -> "/a", "/a" -> "/" */
            dots_ok = shown(up, &dots[1]) == 0;
        }
    }
    const char *rel;
    int w = enter(path, &rel), rc;
    if (w < 0) {
        rc = w;
    } else if (w == W_SNAPROOT) {
        struct lister l = {buf, filler};
        filler(buf, ".", dots_ok ? &dots[0] : NULL, 0, 0);
        filler(buf, "..", dots_ok ? &dots[1] : NULL, 0, 0);
        rc = stash_snapshot_list(db, list_one, &l);
    } else {
        rc = r_readdir(rel, buf, filler, off, fi, flags, dots_ok ? dots : NULL);
    }
    leave();
    return rc;
}

/* The bit the kernel leaves in an open's flags for execve (__FMODE_EXEC). */
#define OPEN_FOR_EXEC 040

static int fs_open(const char *path, struct fuse_file_info *fi)
{
    struct perm_who pw;
    if (asks(&pw)) {
        int acc = fi->flags & O_ACCMODE, mask = 0;
        struct stat st;
        mask |= acc == O_WRONLY ? 0 : PERM_R;          /* O_ACCMODE itself: both */
        mask |= acc != O_RDONLY || (fi->flags & O_TRUNC) ? PERM_W : 0;
        if (fi->flags & OPEN_FOR_EXEC)
            mask = PERM_X;                             /* execve needs no read permission */
        int prc = may_path(&pw, path, mask, &st);
        if (prc)
            return prc;
    }
    const char *rel;
    int w = enter(path, &rel), rc;
    if (w < 0)
        rc = w;
    else if (w != W_LIVE && ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)))
        rc = -EROFS;
    else if (w == W_SNAPROOT)
        rc = -EISDIR;
    else if (w == W_LIVE && (fi->flags & O_TRUNC)) {
        uint64_t lid = link_id_of(path);
        if ((rc = r_open(rel, fi)) == 0 && lid)
            inval_id(lid, path);
    } else
        rc = r_open(rel, fi);
    leave();
    return rc;
}

#define READ_OP(call, at_snaproot)        \
    const char *rel;                      \
    int w = enter(path, &rel), rc;        \
    if (w < 0)                            \
        rc = w;                           \
    else if (w == W_SNAPROOT)             \
        rc = at_snaproot;                 \
    else                                  \
        rc = call;                        \
    leave();                              \
    return rc

static int fs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    NULL_PATH(fi);
    READ_OP(r_read(rel, buf, size, off, fi), -EISDIR);
}

static off_t fs_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
    NULL_PATH(fi);
    const char *rel;
    int w = enter(path, &rel);
    off_t r = w < 0 ? w : w == W_SNAPROOT ? -EISDIR : r_lseek(rel, off, whence);
    leave();
    return r;
}

static int fs_readlink(const char *path, char *buf, size_t size)
{
    READ_OP(r_readlink(rel, buf, size), -EINVAL);
}

static int ctl_result(char *val, size_t size);

/* The user namespace's attributes are read and written as the file's
 * contents are, and on a sticky directory written by its owner alone (the
 * kernel itself keeps the other namespaces to root, and user attributes to
 * files and directories). */
static int may_xattr(const char *path, const char *name, int mask)
{
    struct perm_who pw;
    struct stat st;
    if (strncmp(name, "user.", 5) || !asks(&pw))
        return 0;
    int rc = walk(&pw, path, 0, NULL);
    if (rc == 0)
        rc = shown(path, &st);
    if (rc == 0 && (mask & PERM_W) && S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX))
        rc = perm_owner(&pw, &st);
    return rc ? rc : perm_may(&pw, &st, mask);
}

static int fs_getxattr(const char *path, const char *name, char *val, size_t size)
{
    if (!strcmp(path, "/") && !strcmp(name, "user.stashfs.backup"))
        return ctl_result(val, size);
    int prc = may_xattr(path, name, PERM_R);
    if (prc)
        return prc;
    READ_OP(r_getxattr(rel, name, val, size), -ENODATA);
}

static int fs_listxattr(const char *path, char *list, size_t size)
{
    int prc = may_xattr(path, "", 0);
    if (prc)
        return prc;
    READ_OP(r_listxattr(rel, list, size), 0);
}

/* A call that makes PATH: write and search permission on its directory. */
#define WRITE_OP(call)                                                   \
    struct perm_who pw;                                                  \
    int rc = asks(&pw) ? walk(&pw, path, PERM_W, NULL) : 0;        \
    if (rc == 0)                                                         \
        rc = live_only(path);                                            \
    return rc ? rc : call


static int fs_create(const char *path, mode_t mode, struct fuse_file_info *fi) { WRITE_OP(w_create(path, mode, fi)); }
static int fs_mknod(const char *path, mode_t mode, dev_t rdev) { WRITE_OP(w_mknod(path, mode, rdev)); }
static int fs_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    NULL_PATH(fi);
    LINKED_OP(w_write(path, buf, size, off, fi));
}
static int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    struct perm_who pw;
    struct stat st;
    int prc = !fi && asks(&pw) ? may_path(&pw, path, PERM_W, &st) : 0;
    if (prc)
        return setattr_mark(path, prc), prc;
    NULL_PATH(fi);
    LINKED_SETATTR(w_truncate(path, size, fi));
}
static int fs_unlink(const char *path)
{
    struct perm_who pw;
    struct stat st;
    int prc = asks(&pw) ? may_delete(&pw, path, &st) : 0;
    if (prc)
        return prc;
    LINKED_OP(w_unlink(path));
}
static int fs_fallocate(const char *path, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
    NULL_PATH(fi);
    LINKED_OP(w_fallocate(path, mode, off, len));
}
static int fs_symlink(const char *target, const char *path) { WRITE_OP(w_symlink(target, path)); }

static int fs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    NULL_PATH(fi);
    struct perm_who pw;
    struct stat st;
    if (asks(&pw)) {
        int prc = shown(path, &st);
        if (prc == 0)
            prc = perm_chmod(&pw, &st, &mode, fi != NULL);
        if (prc)
            return setattr_mark(path, prc), prc;
    }
    LINKED_SETATTR(w_chmod(path, mode, fi));
}
static int fs_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    NULL_PATH(fi);
    struct perm_who pw;
    struct stat st;
    if (asks(&pw)) {
        int prc = shown(path, &st);
        if (prc == 0)
            prc = perm_chown(&pw, &st, uid, gid);
        if (prc)
            return setattr_mark(path, prc), prc;
    }
    LINKED_SETATTR(w_chown(path, uid, gid, fi));
}
static int fs_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
    NULL_PATH(fi);
    struct perm_who pw;
    struct stat st;
    if (asks(&pw)) {
        /* Both times now is a touch, which write permission allows. */
        int touch = !tv || (tv[0].tv_nsec == UTIME_NOW && tv[1].tv_nsec == UTIME_NOW);
        int prc = shown(path, &st);
        if (prc == 0)
            prc = perm_utimens(&pw, &st, touch);
        if (prc)
            return setattr_mark(path, prc), prc;
    }
    LINKED_SETATTR(w_utimens(path, tv, fi));
}
/* The last close of a handle; a file removed while open goes with its last. */
/*
 * Access times, kept as relatime keeps them when the mount asks for them
 * (-o atime or relatime; the default is noatime, see main): a file opened
 * for reading, or a directory listed, gets the atime now when its handle
 * closes, if its atime was not later than its mtime or ctime, or is a day
 * old.  At the close, not at each read: reads the kernel answers from its
 * page cache never reach the daemon.  It costs a write and dropping the
 * kernel's cached attributes: a small-file read loop ran a fifth slower
 * (done instead on another thread, it ran half as fast).  Never in
 * snapshots or on a read-only mount.
 */
static void atime_touch(const char *path)
{
    char key[KEYBUF];
    size_t kl;
    struct stat st;
    if (no_atime || mount_ro || !path || live_only(path) != 0 || attr_key(path, key, &kl, &st, 0) != 0 ||
        (kl > 1 && key[0] == '/'))      /* (an orphan: no name to show it) */
        return;
    int64_t a = ts_to_ns(&st.st_atim), t = now();
    if (a > ts_to_ns(&st.st_mtim) && a > ts_to_ns(&st.st_ctim) && t - a < 86400 * (int64_t)1000000000)
        return;
    uint64_t lid = link_id_of(path);
    stash_stat_t s = {.atime_ns = t};
    if (stash_setstat(db, key, kl, &s, STASH_SET_ATIME) != 0)
        return;
    if (loop_node())
        (void)loop_inval_attrs(loop_node());
    if (lid)
        inval_id(lid, path);
}

static int fs_release(const char *path, struct fuse_file_info *fi)
{
    if ((fi->flags & O_ACCMODE) != O_WRONLY)
        atime_touch(path);
    if (fi->fh)
        of_close(fi->fh);
    return 0;
}
/*
 * Backups of the mounted store, asked for through two attribute names on
 * the mount's root (stashctl backup does so when it finds the store held by
 * this daemon, since it cannot open it itself):
 *   setxattr user.stashfs.backup = DEST                    stash_backup
 *   setxattr user.stashfs.backup-snapshot = NAME \0 DEST   stash_backup_snapshot
 * DEST is absolute.  The call returns when the copy is done, with its error;
 * getxattr user.stashfs.backup then reads the last result's message.  Only
 * the daemon's own user and root may ask.  Nothing is stored.
 */
#define CTL_BACKUP      "user.stashfs.backup"
#define CTL_BACKUP_SNAP "user.stashfs.backup-snapshot"
static pthread_mutex_t ctl_mu = PTHREAD_MUTEX_INITIALIZER;
static char ctl_msg[1100] = "no backup asked for yet";

static int is_control(const char *path, const char *name)
{
    return !strcmp(path, "/") && (!strcmp(name, CTL_BACKUP) || !strcmp(name, CTL_BACKUP_SNAP));
}

static int control(const char *name, const char *val, size_t size)
{
    uid_t who = fuse_get_context()->uid;
    if (who != 0 && who != my_uid)
        return -EPERM;
    char buf[2 * PATH_MAX];
    if (size >= sizeof buf)
        return -ENAMETOOLONG;
    memcpy(buf, val, size);
    buf[size] = '\0';
    const char *snap = NULL, *dest = buf;
    if (!strcmp(name, CTL_BACKUP_SNAP)) {
        size_t n = strlen(buf);
        if (n == size)
            return -EINVAL;
        snap = buf;
        dest = buf + n + 1;
    }
    if (dest[0] != '/')
        return -EINVAL;
    int rc = snap ? stash_backup_snapshot(db, snap, dest) : stash_backup(db, dest);
    pthread_mutex_lock(&ctl_mu);
    snprintf(ctl_msg, sizeof ctl_msg, "%s", rc ? stash_last_error(db) : "ok");
    pthread_mutex_unlock(&ctl_mu);
    return rc;
}

static int fs_setxattr(const char *path, const char *name, const char *val, size_t size, int flags)
{
    if (is_control(path, name))
        return control(name, val, size);
    int prc = may_xattr(path, name, PERM_W);
    if (prc)
        return prc;
    LINKED_OP(w_setxattr(path, name, val, size, flags));
}
static int fs_removexattr(const char *path, const char *name)
{
    int prc = may_xattr(path, name, PERM_W);
    if (prc)
        return prc;
    LINKED_OP(w_removexattr(path, name));
}

/* The message of the last backup asked for (see control()). */
static int ctl_result(char *val, size_t size)
{
    pthread_mutex_lock(&ctl_mu);
    size_t n = strlen(ctl_msg);
    int rc = size == 0 ? (int)n : size < n ? -ERANGE : (int)n;
    if (size >= n)
        memcpy(val, ctl_msg, n);
    pthread_mutex_unlock(&ctl_mu);
    return rc;
}

/* Is A's directory B's? */
static int same_dir(const char *a, const char *b)
{
    size_t al = (size_t)(strrchr(a, '/') - a), bl = (size_t)(strrchr(b, '/') - b);
    return al == bl && !memcmp(a, b, al);
}

/* rename: nothing to check between two names of one file (rename(2) does
 * nothing then); otherwise both entries as for unlink, and a directory
 * moved to another directory needs write permission on itself (its ".."
 * changes). */
static int may_rename(struct perm_who *pw, const char *from, const char *to)
{
    struct stat src, dst, dir;
    int there = shown(to, &dst) == 0;
    if (there && shown(from, &src) == 0 && src.st_ino == dst.st_ino)
        return 0;
    int rc = may_delete(pw, from, &src);
    if (rc == 0)
        rc = walk(pw, to, PERM_W, &dir);
    if (rc == 0 && there)
        rc = perm_sticky(pw, &dir, &dst);
    if (rc == 0 && S_ISDIR(src.st_mode) && !same_dir(from, to))
        rc = perm_may(pw, &src, PERM_W);
    return rc;
}

/*
 * The checks of a rename, made before anything moves.  A rename onto a
 * file that is open comes here twice: libfuse first moves the target
 * aside to a hidden name (TO), then makes the rename.  A refusal after the
 * move would lose the target's name (see put_back), so the rename's own
 * checks are made at the move, with its source: the request's source name
 * in the target's directory, and the second call passes.  A source in
 * another directory cannot be named from here; such a rename onto an open
 * file fails with EBUSY for a caller other than root.  Flags the rename
 * would refuse are refused at the move too.
 */
static __thread uint64_t moved_ok;          /* a hash of the target moved aside */
static __thread unsigned long moved_req;

static int rename_checks(const char *from, const char *to)
{
    struct loop_rename lr;
    int named = loop_rename(&lr);
    int aside = hidden_path(to) && loop_in_rename();
    if (aside && named && (lr.flags & ~(unsigned)RENAME_NOREPLACE))
        return -EINVAL;
    struct perm_who pw;
    if (!asks(&pw))
        return 0;
    if (!aside) {
        int passed = moved_ok && moved_req == loop_request() && moved_ok == (fnv64(0, to, strlen(to)) | 1);
        moved_ok = 0;
        return passed ? 0 : may_rename(&pw, from, to);
    }
    if (!named || lr.olddir != lr.newdir)
        return -EBUSY;
    size_t pl = (size_t)(strrchr(from, '/') - from), ol = strlen(lr.oldname);
    char *src = malloc(pl + ol + 2);
    if (!src)
        return -ENOMEM;
    memcpy(src, from, pl);
    src[pl] = '/';
    memcpy(src + pl + 1, lr.oldname, ol + 1);
    int rc = may_rename(&pw, src, from);
    free(src);
    if (rc == 0) {
        moved_ok = fnv64(0, from, strlen(from)) | 1;
        moved_req = loop_request();
    }
    return rc;
}

/*
 * A rename that failed after libfuse moved its open target TO aside (to
 * key ASIDE): TO gets its name back, as a second name of the open file's
 * value (the hidden one goes at the file's last close, as before), and the
 * kernel forgets its entry for TO, which names the node libfuse moved.
 */
static void put_back(const char *aside, const char *to)
{
    char key[KEYBUF];
    size_t kl;
    if (path_key(to, key, sizeof key, &kl) == 0 && stash_link(db, aside, strlen(aside), key, kl) == 0)
        atomic_store(&links_seen, 1);
    struct loop_rename lr;
    if (loop_rename(&lr))
        inval_entry(lr.newdir, lr.newname);
}

static int fs_rename(const char *from, const char *to, unsigned int flags)
{
    /* The rename that follows libfuse's move of an open target aside in
     * this request: should it fail, the target keeps its name. */
    char aside[HIDDEN_LEN + 2];
    int moved = after_move_aside(to);
    if (moved)
        memcpy(aside, hid_key, sizeof aside);
    int rc = rename_checks(from, to);
    struct perm_who pw;
    /* An exchange moves TO to FROM as well. */
    if (rc == 0 && flags == RENAME_EXCHANGE && asks(&pw))
        rc = may_rename(&pw, to, from);
    if (rc == 0)
        rc = live_only(from);
    if (rc == 0)
        rc = live_only(to);
    if (rc) {
        if (moved)
            put_back(aside, to);
        return rc;
    }
    uint64_t fid = link_id_of(from), tid = link_id_of(to);
    rc = w_rename(from, to, flags);
    if (rc && moved)
        put_back(aside, to);
    if (rc == 0 && fid)
        inval_id(fid, to);          /* ctime */
    if (rc == 0 && tid && tid != fid)
        inval_id(tid, to);          /* one name fewer */
    return rc;
}

/* mkdir in the snapshots directory takes a snapshot; rmdir drops one. */
static int fs_mkdir(const char *path, mode_t mode)
{
    struct perm_who pw;
    int prc = asks(&pw) ? walk(&pw, path, PERM_W, NULL) : 0;
    if (prc)
        return prc;
    char name[256];
    const char *rel;
    int w = where(path, name, &rel);
    if (w < 0)
        return w;
    if (w == W_SNAPTOP)
        return stash_snapshot_create(db, name, NULL);
    if (w != W_LIVE)
        return w == W_SNAPROOT ? -EEXIST : -EROFS;
    return w_mkdir(path, mode);
}

static int fs_rmdir(const char *path)
{
    struct perm_who pw;
    struct stat st;
    int prc = asks(&pw) ? may_delete(&pw, path, &st) : 0;
    if (prc)
        return prc;
    char name[256];
    const char *rel;
    int w = where(path, name, &rel);
    if (w < 0)
        return w;
    if (w == W_SNAPTOP)
        return stash_snapshot_delete(db, name);
    if (w != W_LIVE)
        return -EROFS;
    return w_rmdir(path);
}

static int fs_link(const char *from, const char *to)
{
    struct perm_who pw;
    int rc = 0;
    if (asks(&pw) && (rc = walk(&pw, from, 0, NULL)) == 0)
        rc = walk(&pw, to, PERM_W, NULL);
    if (rc)
        return rc;
    rc = live_only(from);
    if (rc == 0)
        rc = live_only(to);
    if (rc == 0)
        rc = w_link(from, to);
    if (rc == 0) {
        inval_names(from, NULL);    /* every name's count went up */
        /* The source's kernel inode, which a CREATE handle may be on. */
        char key[KEYBUF];
        size_t kl;
        stash_stat_t s;
        if (loop_link_source() && path_key(from, key, sizeof key, &kl) == 0 &&
            stash_stat(db, NULL, key, kl, &s) == 0)
            of_on_node(ino_of(&s, key, kl), loop_link_source());
    }
    return rc;
}

static int fs_statfs(const char *path, struct statvfs *sv)
{
    (void)path;
    if (statvfs(stashfs_data_dir, sv) < 0)
        return -errno;
    sv->f_namemax = 255;
    return 0;
}

static int fs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    return stash_sync(db);
}

static int fs_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
    return stash_sync(db);
}

/* access(2) and chdir.  Root too is refused execute permission on a file
 * that no one may run.  When the kernel checks permissions, this only has to
 * say whether PATH exists. */
static int fs_access(const char *path, int mask)
{
    struct perm_who pw;
    struct stat st;
    if (kernel_perms)
        return fs_getattr(path, &st, NULL);
    asks(&pw);
    return may_path(&pw, path, mask & (R_OK | W_OK | X_OK), &st);
}

/* Which of libfuse's cache timeouts the command line set (fs_init keeps
 * those; the others get a day). */
static int set_entry_t, set_attr_t, set_neg_t;

static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    /* This daemon is the store's only writer, and tells the kernel what
     * changes: the kernel may cache for long, unless told otherwise. */
    if (!set_entry_t)
        cfg->entry_timeout = 86400.0;
    if (!set_attr_t)
        cfg->attr_timeout = 86400.0;
    if (!set_neg_t)
        cfg->negative_timeout = 86400.0;
    cfg->kernel_cache = 1;
    cfg->use_ino = 1;
    /* No splice: a large write spliced into a pipe would be copied out of
     * it again into a fresh buffer for .write; read into the serving
     * thread's own buffer, it is copied once. */
    conn->want &= ~FUSE_CAP_SPLICE_READ;
    /* Sequential reads of large files come in bigger requests: 1 MiB of
     * read-ahead read a 1 GiB file 35% faster here than the 128 KiB
     * default.  Random reads are not read ahead at all. */
    if (conn->max_readahead < (1u << 20))
        conn->max_readahead = 1u << 20;
    /* A symbolic link's target never changes (a new link is a new inode):
     * the kernel may keep it instead of asking (READLINK) on every path
     * that goes through the link. */
    if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
        conn->want |= FUSE_CAP_CACHE_SYMLINKS;
    fuse_self = fuse_get_context()->fuse;
    /* Signals are for the thread waiting in loop_run (loop.h). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    inval_started = pthread_create(&inval_thread, NULL, inval_loop, NULL) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return NULL;
}

static const struct fuse_operations ops = {
    .init = fs_init,
    .destroy = fs_destroy,
    .getattr = fs_getattr,
    .readdir = fs_readdir,
    .opendir = fs_opendir,
    .releasedir = fs_releasedir,
    .release = fs_release,
    .create = fs_create,
    .mknod = fs_mknod,
    .open = fs_open,
    .read = fs_read,
    .write = fs_write,
    .truncate = fs_truncate,
    .fallocate = fs_fallocate,
    .lseek = fs_lseek,
    .unlink = fs_unlink,
    .mkdir = fs_mkdir,
    .rmdir = fs_rmdir,
    .rename = fs_rename,
    .chmod = fs_chmod,
    .chown = fs_chown,
    .utimens = fs_utimens,
    .symlink = fs_symlink,
    .readlink = fs_readlink,
    .link = fs_link,
    .statfs = fs_statfs,
    .fsync = fs_fsync,
    .fsyncdir = fs_fsyncdir,
    .access = fs_access,
    .setxattr = fs_setxattr,
    .getxattr = fs_getxattr,
    .listxattr = fs_listxattr,
    .removexattr = fs_removexattr,
};

/* ------------------------------------------------------------------ */
/* command line, start-up and shut-down                                 */

struct cli {
    char *config;
    char *memtable_size, *compaction_interval, *wal_flush_interval, *snapdir, *mmap_reads, *spin;
    int nonopts;
    int kernel_perms, daemon_perms, allow_other;
    int atime;          /* -o atime or relatime asked for access times */
};

enum { KEY_ALLOW = 1, KEY_ENTRY_T, KEY_ATTR_T, KEY_NEG_T, KEY_ATIME, KEY_RELATIME, KEY_NOATIME };


#define OPT(t, p) {t, offsetof(struct cli, p), 1}
static const struct fuse_opt cli_opts[] = {
    OPT("config=%s", config),
    OPT("memtable_size=%s", memtable_size),
    OPT("compaction_interval=%s", compaction_interval),
    OPT("wal_flush_interval=%s", wal_flush_interval),
    OPT("mmap_reads=%s", mmap_reads),
    OPT("snapdir=%s", snapdir),
    OPT("spin=%s", spin),
    {"default_permissions", offsetof(struct cli, kernel_perms), 1},
    {"daemon_permissions", offsetof(struct cli, daemon_perms), 1},
    FUSE_OPT_KEY("allow_other", KEY_ALLOW),
    FUSE_OPT_KEY("allow_root", KEY_ALLOW),
    FUSE_OPT_KEY("entry_timeout=", KEY_ENTRY_T),
    FUSE_OPT_KEY("attr_timeout=", KEY_ATTR_T),
    FUSE_OPT_KEY("negative_timeout=", KEY_NEG_T),
    FUSE_OPT_KEY("atime", KEY_ATIME),
    FUSE_OPT_KEY("relatime", KEY_RELATIME),
    FUSE_OPT_KEY("noatime", KEY_NOATIME),
    FUSE_OPT_END,
};

static int cli_proc(void *data, const char *arg, int key, struct fuse_args *out)
{
    struct cli *c = data;
    if (key == FUSE_OPT_KEY_NONOPT && !c->config && !stashfs_data_dir) {
        stashfs_data_dir = strdup(arg);
        return 0;   /* the first one is the store; the mountpoint stays */
    }
    if (key == KEY_ALLOW)
        c->allow_other = 1;     /* and passed on to libfuse */
    /* Access times (atime_touch): relatime is the kernel's way when the
     * mount is not noatime, and an option libfuse does not know. */
    if (key == KEY_ATIME || key == KEY_RELATIME || key == KEY_NOATIME)
        c->atime = key == KEY_NOATIME ? -1 : 1;
    if (key == KEY_RELATIME)
        return 0;
    set_entry_t |= key == KEY_ENTRY_T;     /* all passed on to libfuse */
    set_attr_t |= key == KEY_ATTR_T;
    set_neg_t |= key == KEY_NEG_T;
    return 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: stashfs [options] DATA_DIR MOUNTPOINT\n"
            "       stashfs -o config=FILE [options] MOUNTPOINT\n"
            "\n"
            "Mounts the SmartStashDB store in DATA_DIR (created when missing) at\n"
            "MOUNTPOINT: paths are keys, file contents are values.  Runs in the\n"
            "background once the mount is ready, unless -f is given; unmount with\n"
            "fusermount3 -u MOUNTPOINT (or umount, SIGTERM, SIGINT).\n"
            "\n"
            "stashfs options:\n"
            "    -o config=FILE           the engine's YAML config (its data_dir is the store)\n"
            "    -o memtable_size=N       bytes (K, M, G suffixes), overrides the config\n"
            "    -o compaction_interval=N seconds\n"
            "    -o wal_flush_interval=N  seconds (0: every write is fsynced)\n"
            "    -o mmap_reads=0|1        read tables through a memory mapping (default 0 here:\n"
            "                             the daemon's resident memory stays small)\n"
            "    -o snapdir=NAME          the snapshots directory (default .snapshots; empty: none)\n"
            "    -o spin=N                microseconds the request reader keeps polling after\n"
            "                             an answer before it sleeps (default 50; 0: never)\n"
            "    -o default_permissions   the kernel checks permissions (the default unless\n"
            "                             only root can reach the mount: mounted by root,\n"
            "                             no allow_other; the daemon checks there, saving a\n"
            "                             round trip per create and unlink)\n"
            "    -o daemon_permissions    the daemon checks permissions for every user (see\n"
            "                             the README for where that differs from a disk)\n"
            "    -o relatime, -o atime    keep access times as relatime does (the mount is\n"
            "                             noatime otherwise: a write per file read saved)\n"
            "\n"
            "Of libfuse's options below, stashfs changes these defaults: entry_timeout,\n"
            "attr_timeout and negative_timeout are 86400 seconds (the daemon is the store's\n"
            "only writer and tells the kernel what changes), and kernel_cache is always on.\n"
            "\n");
}

/* Parse a size with an optional K/M/G suffix (powers of 1024). */
static int parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*s))
        return -1;   /* strtoull would take "-1" */
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    switch (*end) {
    case 'k': case 'K': v <<= 10; end++; break;
    case 'm': case 'M': v <<= 20; end++; break;
    case 'g': case 'G': v <<= 30; end++; break;
    }
    if (*end == 'i' && end[1] == 'B')
        end += 2;
    if (*end)
        return -1;
    *out = (size_t)v;
    return 0;
}


/* A path as mountinfo writes it (a space as \\040) into UN, CAP bytes. */
static void mi_unescape(const char *at, char *un, size_t cap)
{
    size_t j = 0;
    for (size_t i = 0; at[i] && j + 1 < cap; i++) {
        if (at[i] == '\\' && at[i + 1] >= '0' && at[i + 1] <= '3' && at[i + 2] && at[i + 3]) {
            un[j++] = (char)((at[i + 1] - '0') * 64 + (at[i + 2] - '0') * 8 + (at[i + 3] - '0'));
            i += 3;
        } else {
            un[j++] = at[i];
        }
    }
    un[j] = '\0';
}

/* Whether process PID sees a FUSE filesystem mounted at MNT: 1 or 0, or
 * -1 with errno when its mount table cannot be read (ENOENT: no such
 * process). */
static int pid_mounted(long pid, const char *mnt)
{
    char p[64], line[8192];
    snprintf(p, sizeof p, "/proc/%ld/mountinfo", pid);
    FILE *f = fopen(p, "re");
    if (!f)
        return -1;
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        char at[4096], un[4096];
        const char *sep = strstr(line, " - ");
        if (!sep || sscanf(line, "%*u %*u %*s %*s %4095s", at) != 1)
            continue;
        mi_unescape(at, un, sizeof un);
        found = !strcmp(un, mnt) && !strncmp(sep + 3, "fuse", 4);
    }
    fclose(f);
    return found;
}

/*
 * Whether the store in DIR is held by a stashfs that is no longer mounted
 * (its LOCK names it: db.c): one unmounted a moment ago, still writing out
 * what it holds (seconds, for a full memtable).  Worth waiting for, so that
 * an unmount followed at once by a mount (a script, a remount) does not
 * fail as "in use": 1.  2 when the process the LOCK names is gone (or is
 * no stashfs now): the store may just have come free, worth one more try,
 * but if it is still held, someone else holds it.  0 otherwise.  SAY: tell
 * the user, once, that it waits.
 */
static int holder_closing(const char *dir, int say)
{
    static const char tag[] = "stashfs, mounted at ";
    char path[PATH_MAX], txt[PATH_MAX + 64], comm[32] = "";
    snprintf(path, sizeof path, "%s/LOCK", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, txt, sizeof txt - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n <= 0)
        return 0;
    txt[n] = '\0';
    char *nl = strchr(txt, '\n');
    if (!nl || strncmp(nl + 1, tag, sizeof tag - 1))
        return 0;
    char *mnt = nl + sizeof tag;
    mnt[strcspn(mnt, "\n")] = '\0';
    long pid = strtol(txt, NULL, 10);
    snprintf(path, sizeof path, "/proc/%ld/comm", pid);
    FILE *f = pid > 0 ? fopen(path, "re") : NULL;
    if (f) {
        if (!fgets(comm, sizeof comm, f))
            comm[0] = '\0';
        comm[strcspn(comm, "\n")] = '\0';
        fclose(f);
    }
    if (strcmp(comm, "stashfs") != 0)
        return pid > 0 && (f || errno == ENOENT) ? 2 : 0;
    if (pid_mounted(pid, mnt) != 0)
        return 0;               /* serving (or its mounts cannot be read) */
    if (say)
        fprintf(stderr, "stashfs: waiting for process %ld, unmounted from %s, to close the store\n", pid, mnt);
    return 1;
}

/*
 * What the daemon learns of its mount from /proc/self/mountinfo (its own
 * files are not to be looked at before it serves them): whether it is
 * read-only or noatime, and its device number.  Through the latter, sequential reads
 * are sped up: they come in requests as large as the kernel's read-ahead
 * for the mount, which is the block-device default of 128 KiB whatever the
 * daemon asks for at init (the kernel takes the smaller); it is raised to
 * 1 MiB through the mount's sysfs entry.  Best effort (that needs write
 * access to sysfs, as root has).
 */
static void look_at_mount(const char *mnt)
{
    FILE *f = mnt ? fopen("/proc/self/mountinfo", "r") : NULL;
    if (!f)
        return;
    char line[8192], dev[64] = "";
    unsigned maj, min;
    while (!dev[0] && fgets(line, sizeof line, f)) {
        char at[4096], mopts[258];
        /* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ... (spaces as \040) */
        if (sscanf(line, "%*u %*u %u:%u %*s %4095s %255s", &maj, &min, at, mopts) != 4)
            continue;
        char un[4096];
        mi_unescape(at, un, sizeof un);
        if (!strcmp(un, mnt)) {
            snprintf(dev, sizeof dev, "%u:%u", maj, min);
            mount_ro = !strncmp(mopts, "ro", 2) && (mopts[2] == ',' || !mopts[2]);
            size_t ml = strlen(mopts);
            mopts[ml] = ',';
            mopts[ml + 1 < sizeof mopts ? ml + 1 : ml] = 0;
            no_atime = strstr(mopts, "noatime,") != NULL;
        }
    }
    fclose(f);
    if (!dev[0])
        return;
    char path[128];
    snprintf(path, sizeof path, "/sys/class/bdi/%s/read_ahead_kb", dev);
    FILE *ra = fopen(path, "w");
    if (ra) {
        fputs("1024\n", ra);
        fclose(ra);
    }
}

/* Report a start-up failure in one line: on stderr, or through FD to the
 * parent waiting for the mount when the daemon runs in the background.
 * Returns the exit status, 1. */
__attribute__((format(printf, 2, 3))) static int die(int fd, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (fd >= 0) {
        ssize_t w = write(fd, msg, strlen(msg));
        (void)w;
    } else {
        fprintf(stderr, "%s", msg);
    }
    return 1;
}

int main(int argc, char **argv)
{
    /* One malloc arena for all threads.  Memtables are allocated by the
     * serving threads and freed by the engine's: with an arena per thread,
     * the freed memory stayed in each arena.  A 1 GiB copy after a few
     * thousand small files peaked at 226-231 MiB resident with an arena per
     * thread and 156 MiB with one, and small-file creates and large
     * transfers were no slower (a little faster: fewer fresh pages). */
    mallopt(M_ARENA_MAX, 1);
    /* libfuse allocates each read's buffer (up to 1 MiB) and frees it after
     * the reply.  With glibc's moving thresholds the freed buffer went back
     * to the kernel and the next one took a page fault per 4 KiB: a cold
     * 1 GiB read ran at 0.4-0.5 GB/s, and at 1.6-2.1 GB/s once buffers of
     * that size come from the heap and up to 16 MiB of its free top is kept
     * (peak RSS of the 1 GiB copy: 21-23 MiB before, 27-28 MiB after). */
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 16 << 20);
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct cli c = {0};
    if (fuse_opt_parse(&args, &c, cli_opts, cli_proc) < 0)
        return 2;
    struct fuse_cmdline_opts o;
    if (fuse_parse_cmdline(&args, &o) != 0)
        return 2;
    if (o.show_help) {
        usage(stdout);
        fuse_cmdline_help();
        fuse_lib_help(&args);
        return 0;
    }
    if (o.show_version) {
        printf("stashfs %d.%d, libfuse %s\n", STASH_VERSION_MAJOR, STASH_VERSION_MINOR, fuse_pkgversion());
        return 0;
    }
    stash_options_t so;
    stash_options_init(&so);
    if (c.config) {
        char *d = NULL;
        if (stash_config_load(c.config, &so, &d) != 0) {
            fprintf(stderr, "stashfs: %s\n", stash_last_error(NULL));
            return 1;
        }
        stashfs_data_dir = strdup(d);
        stash_free(d);
    }
    if (!stashfs_data_dir || !o.mountpoint) {
        fprintf(stderr, "stashfs: give DATA_DIR and MOUNTPOINT (stashfs --help)\n");
        return 2;
    }
    size_t v;
    if (c.memtable_size && (parse_size(c.memtable_size, &v) || !(so.memtable_size = v)))
        return die(-1, "stashfs: bad memtable_size %s\n", c.memtable_size);
    if (c.compaction_interval && parse_size(c.compaction_interval, &v) == 0)
        so.compaction_interval = (unsigned)v;
    else if (c.compaction_interval)
        return die(-1, "stashfs: bad compaction_interval %s\n", c.compaction_interval);
    if (c.wal_flush_interval && parse_size(c.wal_flush_interval, &v) == 0)
        so.wal_flush_interval = (unsigned)v;
    else if (c.wal_flush_interval)
        return die(-1, "stashfs: bad wal_flush_interval %s\n", c.wal_flush_interval);
    /* Mapped tables would count in the daemon's resident memory as it
     * serves files: off unless asked for. */
    so.mmap_reads = 0;
    if (c.mmap_reads && (!strcmp(c.mmap_reads, "1") || !strcmp(c.mmap_reads, "0")))
        so.mmap_reads = c.mmap_reads[0] == '1';
    else if (c.mmap_reads)
        return die(-1, "stashfs: bad mmap_reads %s (0 or 1)\n", c.mmap_reads);

    unsigned spin_us = 50;
    if (c.spin && parse_size(c.spin, &v) == 0 && v <= 1000000)
        spin_us = (unsigned)v;
    else if (c.spin)
        return die(-1, "stashfs: bad spin %s (microseconds, up to 1000000)\n", c.spin);

    /* The engine refuses keys under the snapshots directory's name. */
    if (c.snapdir) {
        if (strchr(c.snapdir, '/') || strlen(c.snapdir) >= sizeof so.snapshot_dir || !strcmp(c.snapdir, ".") ||
            !strcmp(c.snapdir, "..") || (unsigned char)c.snapdir[0] == 0xFF)
            return die(-1, "stashfs: bad snapdir %s\n", c.snapdir);
        strcpy(so.snapshot_dir, c.snapdir);
    }
    snapdir = so.snapshot_dir;
    snaplen = strlen(snapdir);
    struct stat st;
    if (stat(o.mountpoint, &st) < 0 || !S_ISDIR(st.st_mode))
        return die(-1, "stashfs: mountpoint %s: %s\n", o.mountpoint,
                   errno ? strerror(errno) : "not a directory");
    /* The store path must stay valid after the daemon's chdir("/"). */
    int made_dir = mkdir(stashfs_data_dir, 0755) == 0;
    if (!made_dir && errno != EEXIST)
        return die(-1, "stashfs: cannot create %s: %s\n", stashfs_data_dir, strerror(errno));
    char *abs = realpath(stashfs_data_dir, NULL);
    if (!abs)
        return die(-1, "stashfs: %s: %s\n", stashfs_data_dir, strerror(errno));
    free(stashfs_data_dir);
    stashfs_data_dir = abs;
    char *absmnt = realpath(o.mountpoint, NULL);
    char holder[PATH_MAX + 32];
    snprintf(holder, sizeof holder, "stashfs, mounted at %s", absmnt ? absmnt : o.mountpoint);
    holder[strcspn(holder, "\n")] = '\0';
    char mnt_abs[PATH_MAX] = "";
    if (absmnt && strlen(absmnt) < sizeof mnt_abs)
        strcpy(mnt_abs, absmnt);   /* (resolved now: once mounted, it is ours to serve) */
    free(absmnt);
    so.holder = holder;

    /* Options libfuse refuses are refused before the store is opened (a
     * directory made for it goes again). */
    /* Who checks permissions (see "permissions" above). */
    int libfuse_loop = !o.singlethread && (o.clone_fd || o.max_idle_threads != UINT_MAX);
    kernel_perms = c.kernel_perms || libfuse_loop || ((c.allow_other || geteuid() != 0) && !c.daemon_perms);
    if (kernel_perms)
        fuse_opt_add_arg(&args, "-odefault_permissions");
    /* mount(8), df and /proc/mounts show the store's directory as the
     * source (commas and backslashes escaped for the option parser). */
    char fsname[2 * PATH_MAX + 16];
    size_t fo = (size_t)snprintf(fsname, sizeof fsname, "-ofsname=");
    for (const char *p = stashfs_data_dir; *p && fo + 3 < sizeof fsname; p++) {
        if (*p == ',' || *p == '\\')
            fsname[fo++] = '\\';
        fsname[fo++] = *p;
    }
    fsname[fo] = '\0';
    fuse_opt_add_arg(&args, fsname);
    fuse_opt_add_arg(&args, "-osubtype=stashfs");
    /* No access times unless asked for: keeping them costs a write and a
     * kernel cache drop per file read (atime_touch).  The mount says so. */
    if (c.atime <= 0)
        fuse_opt_add_arg(&args, "-onoatime");
    struct fuse *f = fuse_new(&args, &ops, sizeof ops, NULL);
    if (!f) {
        if (made_dir)
            rmdir(stashfs_data_dir);
        fprintf(stderr, "stashfs: bad options (stashfs --help)\n");
        return 2;
    }

    /* In the background: the parent waits until the child has opened the
     * store and mounted, and reports the child's error if it could not. */
    int pfd[2] = {-1, -1};
    if (!o.foreground) {
        if (pipe(pfd) < 0)
            return die(-1, "stashfs: pipe: %s\n", strerror(errno));
        pid_t pid = fork();
        if (pid < 0)
            return die(-1, "stashfs: fork: %s\n", strerror(errno));
        if (pid > 0) {
            close(pfd[1]);
            char msg[1100];
            ssize_t n = read(pfd[0], msg, sizeof msg - 1);
            if (n > 0 && !(n == 2 && !memcmp(msg, "OK", 2))) {
                msg[n] = 0;
                fputs(msg, stderr);
                waitpid(pid, NULL, 0);
                return 1;
            }
            if (n <= 0) {
                int status;
                waitpid(pid, &status, 0);
                fprintf(stderr, "stashfs: the daemon exited before mounting\n");
                return 1;
            }
            return 0;
        }
        close(pfd[0]);
        setsid();
    }
    /* The engine's threads block the signals that end the mount, so they
     * reach the thread waiting in loop_run (loop.h). */
    sigset_t ends, old;
    sigemptyset(&ends);
    sigaddset(&ends, SIGINT);
    sigaddset(&ends, SIGTERM);
    sigaddset(&ends, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &ends, &old);
    int rc = stash_open(stashfs_data_dir, &so, &db);
    for (int i = 0, said = 0; rc == -EBUSY && i < 600; i++) {
        int h = holder_closing(stashfs_data_dir, !said);
        if (h == 0 || (h == 2 && i > 0))
            break;
        if (h == 1) {
            said = 1;
            usleep(100000);     /* up to a minute */
        }
        rc = stash_open(stashfs_data_dir, &so, &db);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc)
        return die(pfd[1], "stashfs: cannot open the store: %s\n", stash_last_error(NULL));
    if (!so.read_only)
        drop_hidden();
    clock_gettime(CLOCK_REALTIME, &mount_time);
    my_uid = getuid();
    my_gid = getgid();
    if (fuse_mount(f, o.mountpoint) != 0) {
        fuse_destroy(f);
        stash_close(db);
        return die(pfd[1], "stashfs: cannot mount at %s\n", o.mountpoint);
    }
    look_at_mount(mnt_abs[0] ? mnt_abs : NULL);
    struct fuse_session *se = fuse_get_session(f);
    fuse_set_signal_handlers(se);
    if (!o.foreground) {
        ssize_t w = write(pfd[1], "OK", 2);
        (void)w;
        close(pfd[1]);
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0) {
            dup2(nul, 0);
            dup2(nul, 1);
            dup2(nul, 2);
            if (nul > 2)
                close(nul);
        }
        if (chdir("/") < 0) {
            /* harmless: every path the daemon uses is absolute */
        }
    }
    if (libfuse_loop) {
        /* -o clone_fd or max_idle_threads: libfuse's multi-threaded loop,
         * as asked (every request on a pool thread). */
        struct fuse_loop_config *lc = fuse_loop_cfg_create();
        if (!lc) {
            rc = 1;
        } else {
            fuse_loop_cfg_set_clone_fd(lc, (unsigned)o.clone_fd);
            fuse_loop_cfg_set_max_threads(lc, o.max_threads);
            if (o.max_idle_threads != UINT_MAX)     /* (unset: libfuse's default) */
                fuse_loop_cfg_set_idle_threads(lc, o.max_idle_threads);
            rc = fuse_loop_mt(f, lc);
            /* It returns the signal that ended it; that is a clean stop. */
            if (rc == SIGTERM || rc == SIGINT || rc == SIGHUP)
                rc = 0;
            fuse_loop_cfg_destroy(lc);
        }
    } else {
        /* One thread at a time reads and answers quick requests; up to
         * -o max_threads (10) more take fsyncs and large transfers; -s:
         * one thread for everything (loop.h). */
        /* -o remember=T needs libfuse's thread that forgets old nodes (a
         * no-op without it); its own loops start it themselves. */
        if (fuse_start_cleanup_thread(f) != 0) {
            rc = -ENOMEM;
        } else {
            static const struct loop_hooks hooks = {.created = of_on_node, .handle_of = of_handle_of,
                                                    .stopping = inval_end};
            rc = loop_run(se, o.singlethread ? 0 : o.max_threads, spin_us, &hooks);
            fuse_stop_cleanup_thread(f);
        }
        if (rc)
            fprintf(stderr, "stashfs: serving requests: %s\n", strerror(-rc));
    }
    fuse_remove_signal_handlers(se);
    fuse_unmount(f);
    fuse_destroy(f);
    int crc = stash_close(db);
    if (crc)
        fprintf(stderr, "stashfs: closing the store: %s\n", stash_last_error(NULL));
    free(o.mountpoint);
    fuse_opt_free_args(&args);
    return rc || crc ? 1 : 0;
}
