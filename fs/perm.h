/*
 * perm.h - the permission rules of POSIX file access, as the daemon applies
 * them to each request (stashfs checks permissions itself unless mounted
 * with -o default_permissions; README, "Permissions").
 *
 * Owns nothing but the rules: given who asks (struct perm_who) and the
 * attributes of the files involved, each call says whether the request may
 * go on (0) or the errno to fail it with (-EACCES, -EPERM).  It reads no
 * file and keeps no state, so it is safe from any thread; a perm_who belongs
 * to the one request it describes.
 *
 * The caller with user ID 0 has every capability (CAP_DAC_OVERRIDE,
 * CAP_FOWNER, CAP_CHOWN, CAP_FSETID): it passes every check except execute
 * permission on a file that no one may execute.  Capabilities held by other
 * users are not seen.
 */
#ifndef STASHFS_PERM_H
#define STASHFS_PERM_H

#include <sys/stat.h>
#include <sys/types.h>

struct perm_who {
    uid_t uid;
    gid_t gid;
    /* The supplementary groups, read only when a check needs them:
     * ngroups is -1 until then; load() sets groups and ngroups (>= 0; a
     * load that fails leaves ngroups 0, in no group but gid). */
    int ngroups;
    const gid_t *groups;
    void (*load)(struct perm_who *w);
};

/* Access bits, as access(2) numbers them. */
#define PERM_R 4
#define PERM_W 2
#define PERM_X 1

/* May W have the access MASK (PERM_R | PERM_W | PERM_X) to a file of ST's
 * mode and owner?  0 or -EACCES. */
int perm_may(struct perm_who *w, const struct stat *st, int mask);

/* Is W the owner of ST (or root)?  0 or -EPERM. */
int perm_owner(const struct perm_who *w, const struct stat *st);

/* Is W a member of group GID (its own group or a supplementary one)? */
int perm_in_group(struct perm_who *w, gid_t gid);

/* May W remove or replace the entry VICTIM in directory DIR (the write and
 * search permission on DIR checked apart)?  In a sticky directory only the
 * owner of the entry or of the directory may.  0 or -EPERM. */
int perm_sticky(const struct perm_who *w, const struct stat *dir, const struct stat *victim);

/* chmod of ST to MODE by W: -EPERM unless W owns it; otherwise 0 and
 * *mode is MODE, less the set-group-ID bit when W is not in the file's
 * group.  One change passes for a writer too (HANDLE: W holds the file
 * open, else write permission counts): a regular file losing its
 * set-user-ID bit, and its set-group-ID bit if group execution is on, and
 * nothing else, which is what the kernel asks after a write by someone
 * without CAP_FSETID. */
int perm_chmod(struct perm_who *w, const struct stat *st, mode_t *mode, int handle);

/* chown of ST to UID, GID ((uid_t)-1, (gid_t)-1: unchanged) by W: only
 * root gives a file away; its owner may change its group to one W is in.
 * 0 or -EPERM. */
int perm_chown(struct perm_who *w, const struct stat *st, uid_t uid, gid_t gid);

/* Setting the times of ST: to now (TOUCH: both times now) needs ownership
 * or write permission (-EACCES); to anything else, ownership (-EPERM). */
int perm_utimens(struct perm_who *w, const struct stat *st, int touch);

#endif
