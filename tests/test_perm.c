/*
 * test_perm.c - the daemon's permission rules (fs/perm.c) against what
 * Linux does on a local disk: the class that decides, root's exceptions,
 * the sticky bit, chmod/chown/utimens, and that the caller's groups are
 * read only when they can change the answer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "perm.h"

static int loads;

static const gid_t some_groups[] = {300, 301};

static void load_groups(struct perm_who *w)
{
    loads++;
    w->ngroups = 2;
    w->groups = some_groups;
}

static struct perm_who who(uid_t uid, gid_t gid)
{
    struct perm_who w;
    memset(&w, 0, sizeof w);
    w.uid = uid;
    w.gid = gid;
    w.ngroups = -1;
    w.load = load_groups;
    loads = 0;
    return w;
}

static struct stat file(mode_t mode, uid_t uid, gid_t gid)
{
    struct stat st;
    memset(&st, 0, sizeof st);
    st.st_mode = mode;
    st.st_uid = uid;
    st.st_gid = gid;
    return st;
}

static void test_classes(void **state)
{
    (void)state;
    struct stat f = file(S_IFREG | 0640, 100, 200);
    struct perm_who owner = who(100, 999), grp = who(101, 200), other = who(102, 999);
    assert_int_equal(perm_may(&owner, &f, PERM_R | PERM_W), 0);
    assert_int_equal(perm_may(&owner, &f, PERM_X), -EACCES);
    assert_int_equal(perm_may(&grp, &f, PERM_R), 0);
    assert_int_equal(perm_may(&grp, &f, PERM_W), -EACCES);
    assert_int_equal(perm_may(&other, &f, PERM_R), -EACCES);
    assert_int_equal(perm_may(&other, &f, 0), 0);   /* F_OK */

    /* The first class that matches decides, even when a later one would
     * allow more: an owner kept out by 0077 cannot read. */
    struct stat locked = file(S_IFREG | 0077, 100, 200);
    assert_int_equal(perm_may(&owner, &locked, PERM_R), -EACCES);
    assert_int_equal(perm_may(&grp, &locked, PERM_R), 0);
    struct stat grp_out = file(S_IFREG | 0604, 100, 200);
    assert_int_equal(perm_may(&grp, &grp_out, PERM_R), -EACCES);
    assert_int_equal(perm_may(&other, &grp_out, PERM_R), 0);
}

static void test_supplementary_groups(void **state)
{
    (void)state;
    struct stat f = file(S_IFREG | 0640, 100, 301);
    struct perm_who w = who(102, 999);
    assert_int_equal(perm_may(&w, &f, PERM_R), 0);      /* through group 301 */
    assert_int_equal(loads, 1);
    assert_int_equal(perm_may(&w, &f, PERM_W), -EACCES);
    assert_int_equal(loads, 1);                         /* read once per caller */
    struct stat g = file(S_IFREG | 0640, 100, 302);
    assert_int_equal(perm_may(&w, &g, PERM_R), -EACCES);

    /* Not read when both classes answer alike, nor for the owner. */
    w = who(102, 999);
    struct stat same = file(S_IFREG | 0644, 100, 301);
    assert_int_equal(perm_may(&w, &same, PERM_R), 0);
    assert_int_equal(perm_may(&w, &same, PERM_W), -EACCES);
    struct perm_who o = who(100, 999);
    assert_int_equal(perm_may(&o, &f, PERM_R), 0);
    assert_int_equal(loads, 0);

    /* A caller whose groups cannot be read is in none of them. */
    w = who(102, 999);
    w.load = NULL;
    assert_int_equal(perm_may(&w, &f, PERM_R), -EACCES);
    assert_true(perm_in_group(&w, 999));
}

static void test_root(void **state)
{
    (void)state;
    struct perm_who r = who(0, 0);
    struct stat none = file(S_IFREG | 0000, 100, 200);
    assert_int_equal(perm_may(&r, &none, PERM_R | PERM_W), 0);
    assert_int_equal(perm_may(&r, &none, PERM_X), -EACCES);
    struct stat some = file(S_IFREG | 0001, 100, 200);
    assert_int_equal(perm_may(&r, &some, PERM_X), 0);
    struct stat d = file(S_IFDIR | 0000, 100, 200);
    assert_int_equal(perm_may(&r, &d, PERM_R | PERM_W | PERM_X), 0);
    mode_t m = 02755;
    assert_int_equal(perm_chmod(&r, &none, &m, 0), 0);
    assert_int_equal(m, 02755);
    assert_int_equal(perm_chown(&r, &none, 5, 6), 0);
    assert_int_equal(perm_utimens(&r, &none, 0), 0);
    assert_int_equal(loads, 0);
}

static void test_sticky(void **state)
{
    (void)state;
    struct stat tmp = file(S_IFDIR | 01777, 0, 0), plain = file(S_IFDIR | 0777, 0, 0);
    struct stat mine = file(S_IFREG | 0644, 100, 100), theirs = file(S_IFREG | 0666, 101, 101);
    struct perm_who w = who(100, 100);
    assert_int_equal(perm_sticky(&w, &tmp, &mine), 0);
    assert_int_equal(perm_sticky(&w, &tmp, &theirs), -EPERM);
    assert_int_equal(perm_sticky(&w, &plain, &theirs), 0);
    struct stat owned = file(S_IFDIR | 01777, 100, 100);
    assert_int_equal(perm_sticky(&w, &owned, &theirs), 0);   /* the directory's owner */
    struct perm_who r = who(0, 0);
    assert_int_equal(perm_sticky(&r, &tmp, &theirs), 0);
}

static void test_chmod(void **state)
{
    (void)state;
    struct stat f = file(S_IFREG | 0644, 100, 301);
    struct perm_who owner = who(100, 100), other = who(101, 100);
    mode_t m = 0600;
    assert_int_equal(perm_chmod(&other, &f, &m, 0), -EPERM);
    m = 02755;
    assert_int_equal(perm_chmod(&owner, &f, &m, 0), 0);        /* in group 301 */
    assert_int_equal(m, 02755);
    struct stat g = file(S_IFREG | 0644, 100, 302);
    m = 02755;
    assert_int_equal(perm_chmod(&owner, &g, &m, 0), 0);        /* not in 302 */
    assert_int_equal(m, 0755);
    m = 04755;
    assert_int_equal(perm_chmod(&owner, &g, &m, 0), 0);
    assert_int_equal(m, 04755);
}

/* After a write by someone without CAP_FSETID the kernel asks for the
 * file's mode less its set-ID bits: a writer may make that change, and
 * only that one. */
static void test_chmod_by_writer(void **state)
{
    (void)state;
    struct stat f = file(S_IFREG | 06777, 100, 100), ro = file(S_IFREG | 04755, 100, 100);
    struct stat nox = file(S_IFREG | 02666, 100, 100), d = file(S_IFDIR | 02777, 100, 100);
    struct perm_who w = who(101, 101);
    mode_t m = 0777;
    assert_int_equal(perm_chmod(&w, &f, &m, 0), 0);           /* write permission */
    assert_int_equal(m, 0777);
    m = 04777;
    assert_int_equal(perm_chmod(&w, &f, &m, 0), 0);           /* the group bit alone */
    m = 0755;
    assert_int_equal(perm_chmod(&w, &ro, &m, 0), -EPERM);     /* may not write */
    assert_int_equal(perm_chmod(&w, &ro, &m, 1), 0);          /* but holds it open */
    m = 0775;
    assert_int_equal(perm_chmod(&w, &f, &m, 0), -EPERM);      /* other bits go too */
    m = 0666;
    assert_int_equal(perm_chmod(&w, &nox, &m, 0), -EPERM);    /* set-group-ID without x */
    m = 0777;
    assert_int_equal(perm_chmod(&w, &d, &m, 0), -EPERM);      /* not a regular file */
}

static void test_chown(void **state)
{
    (void)state;
    struct stat f = file(S_IFREG | 0644, 100, 100);
    struct perm_who owner = who(100, 100), other = who(101, 100);
    assert_int_equal(perm_chown(&owner, &f, 101, (gid_t)-1), -EPERM);  /* giving away */
    assert_int_equal(perm_chown(&owner, &f, 100, (gid_t)-1), 0);       /* to itself */
    assert_int_equal(perm_chown(&other, &f, 100, (gid_t)-1), -EPERM);
    assert_int_equal(perm_chown(&owner, &f, (uid_t)-1, 300), 0);       /* a group it is in */
    assert_int_equal(perm_chown(&owner, &f, (uid_t)-1, 302), -EPERM);
    assert_int_equal(perm_chown(&owner, &f, (uid_t)-1, 100), 0);
    assert_int_equal(perm_chown(&other, &f, (uid_t)-1, 100), -EPERM);  /* not its file */
    assert_int_equal(perm_chown(&owner, &f, 100, 301), 0);
}

static void test_utimens(void **state)
{
    (void)state;
    struct stat f = file(S_IFREG | 0666, 100, 100), ro = file(S_IFREG | 0644, 100, 100);
    struct perm_who owner = who(100, 100), other = who(101, 101);
    assert_int_equal(perm_utimens(&owner, &ro, 0), 0);
    assert_int_equal(perm_utimens(&other, &f, 1), 0);        /* touch: may write */
    assert_int_equal(perm_utimens(&other, &ro, 1), -EACCES);
    assert_int_equal(perm_utimens(&other, &f, 0), -EPERM);   /* set: owner only */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classes),
        cmocka_unit_test(test_supplementary_groups),
        cmocka_unit_test(test_root),
        cmocka_unit_test(test_sticky),
        cmocka_unit_test(test_chmod),
        cmocka_unit_test(test_chmod_by_writer),
        cmocka_unit_test(test_chown),
        cmocka_unit_test(test_utimens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
