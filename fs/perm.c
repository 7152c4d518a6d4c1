/*
 * perm.c - the permission rules (perm.h): the owner's, the group's or
 * everyone else's three bits, whichever class the caller falls in first;
 * the sticky bit; who may change a file's mode, owner and times.  These are
 * Linux's rules for a filesystem without ACLs, so a program sees on a mount
 * the errors it sees on a local disk.
 */
#include "perm.h"

#include <errno.h>

static int is_root(const struct perm_who *w)
{
    return w->uid == 0;
}

int perm_in_group(struct perm_who *w, gid_t gid)
{
    if (w->gid == gid)
        return 1;
    if (w->ngroups < 0) {
        w->ngroups = 0;
        if (w->load)
            w->load(w);
        if (!w->groups)
            w->ngroups = 0;
    }
    for (int i = 0; i < w->ngroups; i++)
        if (w->groups[i] == gid)
            return 1;
    return 0;
}

int perm_may(struct perm_who *w, const struct stat *st, int mask)
{
    mask &= PERM_R | PERM_W | PERM_X;
    mode_t m = st->st_mode;
    if (is_root(w)) {
        /* Root reads and writes anything and searches any directory, but
         * runs only what someone may run. */
        if ((mask & PERM_X) && !S_ISDIR(m) && !(m & (S_IXUSR | S_IXGRP | S_IXOTH)))
            return -EACCES;
        return 0;
    }
    int bits;
    if (w->uid == st->st_uid) {
        bits = (m >> 6) & 7;
    } else {
        int grp = (m >> 3) & 7, oth = m & 7;
        /* Group membership may cost a read of the caller's groups: look
         * only when the two classes would answer differently. */
        int g_ok = (mask & ~grp) == 0, o_ok = (mask & ~oth) == 0;
        bits = g_ok == o_ok || perm_in_group(w, st->st_gid) ? grp : oth;
    }
    return (mask & ~bits) ? -EACCES : 0;
}

int perm_owner(const struct perm_who *w, const struct stat *st)
{
    return is_root(w) || w->uid == st->st_uid ? 0 : -EPERM;
}

int perm_sticky(const struct perm_who *w, const struct stat *dir, const struct stat *victim)
{
    if (!(dir->st_mode & S_ISVTX) || is_root(w))
        return 0;
    return w->uid == dir->st_uid || w->uid == victim->st_uid ? 0 : -EPERM;
}

/* Is MODE what a write by someone without CAP_FSETID leaves of ST's? */
static int write_kills(const struct stat *st, mode_t mode)
{
    mode_t may = S_ISUID | (st->st_mode & S_IXGRP ? S_ISGID : 0);
    mode_t old = st->st_mode & 07777, lost = old & ~(mode & 07777);
    return S_ISREG(st->st_mode) && lost && !(lost & ~may) && !((mode & 07777) & ~old);
}

int perm_chmod(struct perm_who *w, const struct stat *st, mode_t *mode, int handle)
{
    if (write_kills(st, *mode) && (handle || perm_may(w, st, PERM_W) == 0))
        return 0;
    int rc = perm_owner(w, st);
    if (rc)
        return rc;
    if (!is_root(w) && (*mode & S_ISGID) && !perm_in_group(w, st->st_gid))
        *mode &= ~(mode_t)S_ISGID;
    return 0;
}

int perm_chown(struct perm_who *w, const struct stat *st, uid_t uid, gid_t gid)
{
    if (is_root(w))
        return 0;
    if (uid != (uid_t)-1 && (w->uid != st->st_uid || uid != st->st_uid))
        return -EPERM;
    if (gid != (gid_t)-1 && (w->uid != st->st_uid || (gid != st->st_gid && !perm_in_group(w, gid))))
        return -EPERM;
    return 0;
}

int perm_utimens(struct perm_who *w, const struct stat *st, int touch)
{
    if (perm_owner(w, st) == 0)
        return 0;
    return touch ? perm_may(w, st, PERM_W) : -EPERM;
}
