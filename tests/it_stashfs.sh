#!/bin/sh
# stashfs with real tools: a fresh store mounted in a temporary directory,
# used with echo/cat, ls, mkdir -p, rm -r, cp -a, mv, ln -s, chmod, touch -d,
# setfattr/getfattr, truncate, find, du, df, tar and rsync; contents and
# metadata checked again after a remount; keys written through the library
# seen as files and files seen through the library; permissions as other
# users see them (fs_perm), checked by the daemon and by the kernel.  The mount is always
# removed, and only the daemon this script started is killed.
. "$(dirname "$0")/mountlib.sh"
check() {   # check DESCRIPTION COMMAND...: the command must succeed
    what=$1; shift
    "$@" >"$tmp/out" 2>&1 || { bad "$what"; sed 's/^/    /' "$tmp/out" | head -n 5; }
}

# Keys written through the library, between a first mount and the second.
mount_fs
unmount
"$ctl" -d "$store" put api/hello "from the library" || bad "stashctl put"
printf 'ab' | "$ctl" -d "$store" put "api/bad//name" || bad "stashctl put odd key"
for k in imp/g imp/sub/f imp2/h; do "$ctl" -d "$store" put "$k" "$k" || bad "stashctl put $k"; done
for k in lib1 libdir/k; do "$ctl" -d "$store" put "$k" "lib-$k" || bad "stashctl put $k"; done
"$ctl" -d "$store" put "old/.fuse_hidden0000000100000002" "left by an old version" || bad "stashctl put old hidden"
# Opening a library-written file on a read-only mount writes nothing
# (elsewhere it gives the key its inode number: a record in the log).
mount_fs -o ro
check "read-only mount reads a library key" test "$(cat "$mnt/lib1")" = "lib-lib1"
unmount
check "opening on a read-only mount writes nothing" sh -c "! for f in '$store'/*.log; do '$ctl' dump-wal \"\$f\"; done | grep -q 'put lib1 attr'"
mount_fs -o max_threads=4     # (fewer pool threads than the 8 writers below)
m="$mnt"

check "API key is a file" test "$(cat "$m/api/hello")" = "from the library"
check "1 MiB read-ahead" test "$(cat /sys/class/bdi/$(mountpoint -d "$m")/read_ahead_kb)" = 1024
check "API key listed" sh -c "ls '$m/api' | grep -qx hello"
check "odd key hidden" sh -c "[ -z \"\$(ls -A '$m/api/bad')\" ]"
check "API key mode 0644" test "$(stat -c %a "$m/api/hello")" = 644
check "chmod of a directory with no record" chmod 700 "$m/api"
# Directories that exist only as the prefix of library-written keys stay,
# empty, when their last entry goes (the kernel caches them as directories).
check "rm of the last file of a record-less directory" rm "$m/imp/sub/f" "$m/imp/g"
check "record-less directories stay" sh -c "test -d '$m/imp/sub' && [ -z \"\$(ls -A '$m/imp/sub')\" ] && [ \"\$(ls '$m/imp')\" = sub ]"
check "mv out of a record-less directory" sh -c "mv '$m/imp2/h' '$m/imp/h' && test -d '$m/imp2' && [ \"\$(cat '$m/imp/h')\" = imp2/h ]"
check "rmdir of the emptied directories" sh -c "rmdir '$m/imp/sub' '$m/imp2' && test ! -e '$m/imp2' && test -d '$m/imp'"
check "chown keeps what it is not given" sh -c "chown :123 '$m/api/hello' && [ \"\$(stat -c %u:%g '$m/api/hello')\" = \"\$(id -u):123\" ]"

# Files removed while open (libfuse keeps them under .fuse_hidden names,
# which stashfs keeps outside every directory).
cat >"$tmp/held.py" <<'PY'
import errno, os, sys
m = sys.argv[1]
def expect(what, got, want):
    if got != want:
        print("FAIL: %s: %r, wanted %r" % (what, got, want)); sys.exit(1)
def eperm(what, f):
    try:
        f(); print("FAIL: %s succeeded" % what); sys.exit(1)
    except OSError as e:
        expect(what, e.errno, errno.EPERM)
# A library-written key (no inode number of its own) renamed, alone or
# with its directory, and then removed while open.
fd = os.open(m + "/lib1", os.O_RDWR)
os.rename(m + "/lib1", m + "/lib2"); os.unlink(m + "/lib2")
expect("renamed library key read after unlink", os.pread(fd, 50, 0), b"lib-lib1")
os.close(fd)
fd = os.open(m + "/libdir/k", os.O_RDWR)
os.rename(m + "/libdir", m + "/libdir2"); os.unlink(m + "/libdir2/k")
expect("library key read after its directory moved", os.pread(fd, 50, 0), b"lib-libdir/k")
os.close(fd)
# Two names of one file, both removed while open, one directory removed:
# the last descriptor still reads and writes the file.
os.mkdir(m + "/l1"); os.mkdir(m + "/l2")
with open(m + "/l1/A", "w") as f: f.write("original")
os.link(m + "/l1/A", m + "/l2/B")
fa = os.open(m + "/l1/A", os.O_RDWR); fb = os.open(m + "/l2/B", os.O_RDWR)
os.unlink(m + "/l1/A"); os.unlink(m + "/l2/B"); os.rmdir(m + "/l1")
os.close(fb)
expect("two removed names: read", os.pread(fa, 50, 0), b"original")
os.pwrite(fa, b"XY", 0)
expect("two removed names: write", os.pread(fa, 50, 0), b"XYiginal")
os.close(fa)
os.rmdir(m + "/l2")
# In a sub-directory, a write through the other name shows through the
# removed one's descriptor.
os.mkdir(m + "/ld")
with open(m + "/ld/a", "w") as f: f.write("1234")
os.link(m + "/ld/a", m + "/ld/b")
fa = os.open(m + "/ld/a", os.O_RDWR); fb = os.open(m + "/ld/b", os.O_RDWR)
os.unlink(m + "/ld/a")
os.pwrite(fb, b"abcdefgh", 0)
expect("size through the removed name", os.fstat(fa).st_size, 8)
expect("data through the removed name", os.pread(fa, 50, 0), b"abcdefgh")
os.close(fa); os.close(fb)
# The names are libfuse's: nothing else is moved to one, not even an open
# file or another name of one.
os.link(m + "/ld/b", m + "/ld/c")
fb = os.open(m + "/ld/b", os.O_RDONLY)
eperm("rename another name of an open file to a reserved name",
      lambda: os.rename(m + "/ld/c", m + "/ld/.fuse_hidden0123456789abcdef"))
eperm("rename an open file to a reserved name",
      lambda: os.rename(m + "/ld/b", m + "/ld/.fuse_hidden0123456789abcdef"))
os.close(fb)
expect("names kept", sorted(os.listdir(m + "/ld")), ["b", "c"])
# A rename of one name of a file onto another that is open does nothing, as
# rename(2) says (libfuse moves the open name aside first, and the source's
# name went); the open file stays the same file.
os.mkdir(m + "/sf")
with open(m + "/sf/a", "w") as f: f.write("same")
os.link(m + "/sf/a", m + "/sf/c")
fc = os.open(m + "/sf/c", os.O_RDWR)
os.rename(m + "/sf/a", m + "/sf/c")
expect("rename onto another open name: both names stay", sorted(os.listdir(m + "/sf")), ["a", "c"])
os.pwrite(fc, b"SA", 0)
expect("written through the open name, read through the source", open(m + "/sf/a").read(), "SAme")
os.close(fc)
os.unlink(m + "/sf/a"); os.unlink(m + "/sf/c"); os.rmdir(m + "/sf")
# Such a name written by an old version is an ordinary file: shown, removable.
expect("old hidden name shown", os.listdir(m + "/old"), [".fuse_hidden0000000100000002"])
os.unlink(m + "/old/.fuse_hidden0000000100000002"); os.rmdir(m + "/old")
PY
check "files removed while open" python3 "$tmp/held.py" "$m"

echo "hello world" >"$m/greeting" || bad "echo >"
check "cat" test "$(cat "$m/greeting")" = "hello world"
echo "more" >>"$m/greeting" || bad "echo >>"
check "append" test "$(cat "$m/greeting")" = "$(printf 'hello world\nmore')"
check "ls -l size" sh -c "ls -l '$m/greeting' | awk '{print \$5}' | grep -qx 17"
check "mkdir -p" mkdir -p "$m/a/b/c"
check "empty dir exists" test -d "$m/a/b/c"
check "file in deep dir" sh -c "echo deep > '$m/a/b/c/f'"
check "rm -r" rm -r "$m/a"
check "dir gone" test ! -e "$m/a"
check "rmdir non-empty fails" sh -c "mkdir -p '$m/ne/x' && ! rmdir '$m/ne' 2>/dev/null"

# rename of files and of whole trees
mkdir -p "$m/tree/sub" && echo one >"$m/tree/1" && echo two >"$m/tree/sub/2"
check "mv file" mv "$m/tree/1" "$m/tree/1b"
check "mv replaces" sh -c "echo new > '$m/x' && echo old > '$m/y' && mv '$m/x' '$m/y' && [ \"\$(cat '$m/y')\" = new ] && [ ! -e '$m/x' ]"
check "mv dir" mv "$m/tree" "$m/moved"
check "moved tree" test "$(cat "$m/moved/sub/2")" = two
check "old tree gone" test ! -e "$m/tree"

# symlinks, modes, times, xattrs, truncate
check "ln -s" ln -s greeting "$m/link"
check "readlink" test "$(readlink "$m/link")" = greeting
check "cat through link" test "$(head -n 1 "$m/link")" = "hello world"
check "chmod" chmod 640 "$m/greeting"
check "mode" test "$(stat -c %a "$m/greeting")" = 640
check "touch -d" touch -d "2001-02-03 04:05:06.123456789" "$m/greeting"
check "mtime" test "$(stat -c %y "$m/greeting")" = "2001-02-03 04:05:06.123456789 +0000"
# Times before 1970 (tar and rsync restore them), and past the stored range
# (2262) kept as its end; they showed as 1970 before.
touch -d "1969-07-20 20:17:40.5 UTC" "$m/old"
check "mtime before 1970" test "$(stat -c %y "$m/old")" = "1969-07-20 20:17:40.500000000 +0000"
touch -d "2300-01-01 UTC" "$m/far"
check "mtime past 2262 kept as 2262" test "$(stat -c %Y "$m/far")" = 9223372036
check "setfattr" setfattr -n user.colour -v blue "$m/greeting"
check "getfattr" test "$(getfattr --absolute-names --only-values -n user.colour "$m/greeting")" = blue
check "dir xattr" sh -c "setfattr -n user.d -v 1 '$m/moved' && getfattr --absolute-names -d '$m/moved' 2>/dev/null | grep -q 'user.d=\"1\"'"
check "truncate up" truncate -s 100000 "$m/sparse"
check "size" test "$(stat -c %s "$m/sparse")" = 100000
check "zeros" cmp -n 100000 "$m/sparse" /dev/zero
check "truncate down" truncate -s 5 "$m/greeting"
check "cut" test "$(cat "$m/greeting")" = hello
check "find" sh -c "find '$m' -name 2 | grep -q moved/sub/2"
check "du" du -s "$m"
check "df shows the store" sh -c "df '$m' | grep -qF '$(cd "$store" && pwd -P)'"

# Every errno case from a C program.
mkdir -p "$m/errno" && "$build/fs_errno" "$m/errno" >"$tmp/out" 2>&1 || { bad "fs_errno"; cat "$tmp/out"; }
# fsx-style: 100,000 random writes, reads, truncations, mapped reads and
# writes, fsyncs and reopens on one file, checked against a copy in memory
# (a fixed seed: a failure replays), and larger files crossing chunks.
"$build/fs_fsx" "$m/fsx" 100000 20261125 262144 >"$tmp/out" 2>&1 || { bad "fs_fsx"; tail -n 20 "$tmp/out"; }
"$build/fs_fsx" "$m/fsx2" 10000 7 4194304 >"$tmp/out" 2>&1 || { bad "fs_fsx 4 MiB"; tail -n 20 "$tmp/out"; }
rm -f "$m/fsx" "$m/fsx2"
# A model test: 20,000 random calls (files, directories, renames, links,
# symbolic links, modes, times, xattrs, files open across an unlink) in the
# mount and in a native directory, every result compared, and the two trees
# compared whole every 200 calls and after a remount every 2,000 (a fixed
# seed: a failure replays).  remount.sh unmounts, waits for the daemon to
# close the store and mounts it again; its daemon's pid goes to model.pid.
cat >"$tmp/remount.sh" <<EOF
gone() { [ ! -e /proc/\$1 ] || grep -q '^State:[[:space:]]*[ZX]' /proc/\$1/status 2>/dev/null; }
old=\$(cat "$tmp/model.pid")
fusermount3 -u "$mnt" || exit 1
i=0; until gone "\$old"; do [ \$i -gt 200 ] && exit 1; sleep 0.05; i=\$((i + 1)); done
"$fs" -f -o max_threads=4 "$store" "$mnt" </dev/null >/dev/null 2>>"$tmp/daemon.err" &
echo \$! >"$tmp/model.pid"
i=0; until grep -q " $mnt fuse" /proc/mounts; do [ \$i -gt 200 ] && exit 1; sleep 0.05; i=\$((i + 1)); done
EOF
echo "$pid" >"$tmp/model.pid"
first=$pid; pid=""       # (meanwhile the trap unmounts by the mountpoint)
if "$build/fs_model" "$m/model" "$tmp/native" 20000 20261201 "sh $tmp/remount.sh" >"$tmp/out" 2>&1; then
    tail -n 1 "$tmp/out"
else
    bad "fs_model"; tail -n 40 "$tmp/out"
fi
pid=$(cat "$tmp/model.pid")
[ "$pid" != "$first" ] && wait "$first" 2>/dev/null
grep -q " $mnt fuse" /proc/mounts || { echo "FAIL: the mount did not come back after fs_model"; exit 1; }
rm -rf "$m/model" "$tmp/native"

# Inode numbers stay through renames of files and directories.
mkdir -p "$m/ino/d" && echo x >"$m/ino/f"
ino_f=$(stat -c %i "$m/ino/f") ino_d=$(stat -c %i "$m/ino/d")
mv "$m/ino/f" "$m/ino/g" && mv "$m/ino/d" "$m/ino/e"
check "a renamed file keeps its inode number" test "$(stat -c %i "$m/ino/g")" = "$ino_f"
check "a renamed directory keeps its inode number" test "$(stat -c %i "$m/ino/e")" = "$ino_d"
check "inode numbers differ" test "$ino_f" != "$ino_d"

# Hard links: one value under several names, in any directory; a change
# through one name is seen through the others at once (the kernel's caches
# of the other names are dropped); tar and rsync -H keep them.
echo one >"$m/h1"
check "ln" ln "$m/h1" "$m/h2"
mkdir -p "$m/hd"
check "ln into another directory" ln "$m/h2" "$m/hd/h3"
check "one inode, three names" test "$(stat -c '%i %h' "$m/h1" "$m/h2" "$m/hd/h3" | sort -u | wc -l)" = 1
check "link count 3" test "$(stat -c %h "$m/h1")" = 3
cat "$m/h2" "$m/hd/h3" >/dev/null          # (cache all three)
echo two >>"$m/h1"
check "appended through one name, read through another" test "$(cat "$m/hd/h3")" = "$(printf 'one\ntwo')"
check "its size through the third" test "$(stat -c %s "$m/h2")" = 8
# Appends through two names, each with its size cached: each append goes
# at the real end (the kernel's own idea of the end through the second
# name is stale), also from several processes at once.
echo base >"$m/ha"; ln "$m/ha" "$m/hb"; stat "$m/hb" >/dev/null
echo 123 >>"$m/ha"; echo XY >>"$m/hb"
check "appends through two names" test "$(cat "$m/ha")" = "$(printf 'base\n123\nXY')"
check "and its size through both" test "$(stat -c %s "$m/ha" "$m/hb" | sort -u)" = 12
: >"$m/ha"; echo Z >>"$m/hb"
check "append after a cut through the other name" test "$(od -An -c "$m/ha" | tr -d ' ')" = 'Z\n'
: >"$m/ha"
apps=""
for n in a b; do
    (i=0; while [ $i -lt 200 ]; do echo "$n$i" >>"$m/h$n"; i=$((i + 1)); done) &
    apps="$apps $!"
done
for a in $apps; do wait "$a"; done
check "400 lines appended through two names at once" test "$(wc -l <"$m/ha")" = 400
check "none lost" test "$(sort -u "$m/hb" | wc -l)" = 400
rm -f "$m/ha" "$m/hb"
chmod 600 "$m/h2"
check "chmod through one name" test "$(stat -c %a "$m/h1")" = 600
check "rm one name" rm "$m/h1"
check "the others stay" test "$(cat "$m/h2")" = "$(printf 'one\ntwo')"
check "their count drops" test "$(stat -c %h "$m/h2" "$m/hd/h3" | sort -u)" = 2
check "mv keeps the inode" sh -c "i=\$(stat -c %i '$m/h2'); mv '$m/h2' '$m/hd/h4' && [ \"\$(stat -c %i '$m/hd/h4')\" = \"\$i\" ]"
check "tar keeps hard links" sh -c "tar -C '$m' -cf '$tmp/h.tar' hd && mkdir '$tmp/hx' && tar -C '$tmp/hx' -xf '$tmp/h.tar' && [ \"\$(stat -c %h '$tmp/hx/hd/h3')\" = 2 ]"
check "rsync -aH keeps hard links" sh -c "rsync -aH '$tmp/hx/hd/' '$m/hr/' && [ \"\$(stat -c %i '$m/hr/h3')\" = \"\$(stat -c %i '$m/hr/h4')\" ] && [ \"\$(stat -c %h '$m/hr/h3')\" = 2 ]"
check "a hard-linked tree through cp -al" sh -c "cp -al '$m/hr' '$m/hr2' && [ \"\$(stat -c %h '$m/hr2/h3')\" = 4 ]"
check "du counts it once" test "$(du -s --apparent-size -B1 "$m/hr" "$m/hr2" | awk '{s+=$1} END {print s}')" = 8
check "rm -r of linked trees" rm -r "$m/hr" "$m/hr2"
# A linked name removed while open: the other name counts it until the close.
check "linked file removed while open" sh -c "echo kept >'$m/ho1' && ln '$m/ho1' '$m/ho2' && exec 7<'$m/ho1' && rm '$m/ho1' && [ \"\$(cat <&7)\" = kept ] && [ \"\$(stat -c %h '$m/ho2')\" = 2 ]"
check "its other name shows one link after the close" sh -c "i=0; while [ \"\$(stat -c %h '$m/ho2')\" != 1 ] && [ \$i -lt 50 ]; do sleep 0.1; i=\$((i + 1)); done; [ \"\$(stat -c %h '$m/ho2')\" = 1 ] && rm '$m/ho2'"

# tar round trip, rsync -a of a real tree, cp -a
src=/usr/include
[ -d "$src/linux" ] || src=/usr/share/doc
check "rsync -a" rsync -a "$src/" "$m/inc/"
check "diff -r after rsync" diff -r --no-dereference "$src" "$m/inc"
check "tar c" tar -C "$m" -cf "$tmp/t.tar" moved inc
mkdir -p "$m/untar"
check "tar x" tar -C "$m/untar" -xf "$tmp/t.tar"
check "diff -r after untar" diff -r --no-dereference "$m/inc" "$m/untar/inc"
check "cp -a" cp -a "$m/moved" "$m/copied"
check "cp -a keeps xattrs" sh -c "getfattr --absolute-names -d '$m/copied' 2>/dev/null | grep -q user.d"

# 8 processes, 1,000 files each, written and verified
writers=""
for p in 1 2 3 4 5 6 7 8; do
    (mkdir -p "$m/par/$p" && i=0
     while [ $i -lt 1000 ]; do echo "file $p $i" >"$m/par/$p/$i"; i=$((i + 1)); done
     i=0
     while [ $i -lt 1000 ]; do
         [ "$(cat "$m/par/$p/$i")" = "file $p $i" ] || exit 1; i=$((i + 1))
     done) &
    writers="$writers $!"
done
for w in $writers; do wait "$w" || bad "writer $w failed"; done
check "8 writers: 8,000 files" test "$(find "$m/par" -type f | wc -l)" = 8000
# Processes in one directory at once (the kernel lets their lookups and
# listings in together): 4 readers stat and list 500 files that stay while
# a writer makes and removes others beside them.
mkdir "$m/one"
i=0; while [ $i -lt 500 ]; do echo "$i" >"$m/one/s$i"; i=$((i + 1)); done
echo 2 >/proc/sys/vm/drop_caches 2>/dev/null || true   # so the readers look names up
(i=0; while [ $i -lt 1500 ]; do echo x >"$m/one/t$i"; [ $((i % 3)) = 0 ] || rm "$m/one/t$i"
     i=$((i + 1)); done) &
churn=$!
readers=""
for p in 1 2 3 4; do
    (j=$p; while [ $j -lt 500 ]; do
         [ "$(cat "$m/one/s$j")" = "$j" ] || exit 1
         j=$((j + 4))
     done
     [ "$(ls "$m/one" | grep -c '^s')" = 500 ] || exit 1
     [ "$(find "$m/one" -name 's*' | wc -l)" = 500 ] || exit 1) &
    readers="$readers $!"
done
for r in $readers; do wait "$r" || bad "reader $r in a shared directory"; done
wait "$churn" || bad "writer in a shared directory"
check "shared directory: 500 + 500 files" test "$(ls "$m/one" | wc -l)" = 1000
# A directory of 100,000 files: made by fsbench's C helper, listed whole
# (names alone, then with attributes), and removed.
t0=$(date +%s)
check "100,000 files made" sh -c "mkdir '$m/wide' && '$build/fsbench-files' '$m/wide' create 100000 1 16"
check "ls -f lists 100,000" test "$(ls -f "$m/wide/d000" | wc -l)" = 100002
check "ls -l lists 100,000" test "$(ls -l "$m/wide/d000" | grep -c '^-rw')" = 100000
check "rm -r of 100,000" rm -r "$m/wide"
check "gone" test ! -e "$m/wide"
echo "100,000 files made, listed twice and removed in $(( $(date +%s) - t0 )) s"
# 1 + 4 serving threads at most, beside the main and notifier threads and the
# engine's three (tables, value-file collection, value-file write-behind)
check "-o max_threads=4 holds" test "$(ls /proc/$pid/task | wc -l)" -le 10

# A 1 GiB file written and compared, and the daemon's memory
check "dd 1 GiB" dd if=/dev/urandom of="$tmp/big" bs=1M count=1024 status=none
check "cp big" cp "$tmp/big" "$m/big"
check "cmp big" cmp "$tmp/big" "$m/big"
rss=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
echo "daemon peak RSS: $((rss / 1024)) MiB"
check "peak RSS under 256 MiB" test "$rss" -lt 262144

# Snapshots: a consistent tree while a writer rewrites 1,000 files.
mkdir -p "$m/seq"
i=0; while [ $i -lt 1000 ]; do echo 0 >"$m/seq/$i"; i=$((i + 1)); done
(n=1; while [ ! -e "$tmp/stop" ]; do
     i=0; while [ $i -lt 1000 ]; do echo $n >"$m/seq/$i"; i=$((i + 1)); done
     n=$((n + 1))
 done) &
rewriter=$!
sleep 0.5
check "mkdir .snapshots/s1" mkdir "$m/.snapshots/s1"
check "tar c of a snapshot during writes" tar -C "$m/.snapshots/s1" -cf "$tmp/snap.tar" seq
touch "$tmp/stop"; wait "$rewriter"
mkdir -p "$tmp/snap" && tar -C "$tmp/snap" -xf "$tmp/snap.tar"
check "snapshot holds 1,000 files" test "$(ls "$tmp/snap/seq" | wc -l)" = 1000
# The writer goes through the files in order, so one instant shows files
# 0..k-1 at pass n and k..999 at pass n-1 (file k possibly just truncated).
i=0; while [ $i -lt 1000 ]; do printf '%s\n' "$(cat "$tmp/snap/seq/$i")"; i=$((i + 1)); done >"$tmp/snap.seq"
check "every file of the snapshot from one instant" awk '
    { a[NR] = $0 }
    END {
        for (j = 1; j <= NR; j++) if (a[j] != "") { first = a[j]; break }
        i = 1
        while (i <= NR && a[i] == first) i++
        if (i <= NR && a[i] == "") i++
        low = a[i]
        if (i <= NR && low != first - 1 && !(i == 2 && a[1] == "" && low == first)) exit 1
        while (i <= NR && a[i] == low) i++
        exit i <= NR
    }' "$tmp/snap.seq"
echo "snapshot: passes $(sort -u "$tmp/snap.seq" | tr '\n' ' ')"
echo after >"$m/seq/0"
check "later writes do not reach the snapshot" cmp -s "$tmp/snap/seq/0" "$m/.snapshots/s1/seq/0"
check "the live tree moved on" test "$(cat "$m/seq/0")" = after
check "snapshots hidden from ls -a" sh -c "! ls -a '$m' | grep -qx .snapshots"
check "ls .snapshots" sh -c "ls '$m/.snapshots' | grep -qx s1"
check "snapshot is read-only" sh -c "! echo x 2>/dev/null > '$m/.snapshots/s1/seq/0'"
check "snapshot files cannot be removed" sh -c "! rm -f '$m/.snapshots/s1/seq/0' 2>/dev/null"
cat "$m/.snapshots/s1/seq/5" >"$tmp/snap5"

# stashctl backup of the mounted store while a writer keeps writing: the
# daemon takes it.  The writer puts i into load/f(i mod 50), i = 1, 2, ...;
# a copy of one instant T holds exactly the values T-49 .. T, or T-49 .. T-1
# and an empty file when T's "echo >" had truncated but not yet written.
mkdir "$m/load"
(i=0; while [ ! -e "$tmp/stop-load" ]; do i=$((i + 1)); echo $i >"$m/load/f$((i % 50))"; done) &
loader=$!
sleep 1
check "stashctl backup of a mounted store" "$ctl" -d "$store" backup "$tmp/bak"
check "stashctl backup --snapshot of a mounted store" "$ctl" -d "$store" backup --snapshot s1 "$tmp/bak-s1"
touch "$tmp/stop-load"; wait "$loader"
"$ctl" -d "$store" backup "$tmp/bak" 2>"$tmp/err" && bad "backup into a used directory"
grep -q "backup by stashfs (process [0-9]*, mounted at .*): backup destination .* not an empty directory" "$tmp/err" ||
    { bad "backup refusal message"; cat "$tmp/err"; }
check "backup passes check" "$ctl" -d "$tmp/bak" check
check "snapshot backup passes check" "$ctl" -d "$tmp/bak-s1" check
mkdir "$tmp/mnt3"
extra_cleanup='fusermount3 -u "$tmp/mnt3" 2>/dev/null'
check "backup mounts" "$fs" "$tmp/bak" "$tmp/mnt3"
for f in "$tmp/mnt3"/load/f*; do echo "$(cat "$f")"; done | sort -n >"$tmp/bak.vals"
check "backup holds one instant of the writer" awk '
    $1 == "" { empty++; next }
    !n++ { first = $1 } { last = $1 }
    END { exit !(n + empty == 50 && empty <= 1 && last - first == n - 1 && last >= 50) }' "$tmp/bak.vals"
[ -s "$tmp/bak.vals" ] && echo "backup of a mounted store: values $(head -n 2 "$tmp/bak.vals" | tr '\n' ' ')... $(tail -n 1 "$tmp/bak.vals")"
check "backup holds the rest" cmp "$tmp/big" "$tmp/mnt3/big"
check "unmount the backup" fusermount3 -u "$tmp/mnt3"
"$ctl" -d "$tmp/bak-s1" get seq/5 >"$tmp/bak-s1.5"
check "snapshot backup holds the snapshot's files" cmp "$tmp/snap5" "$tmp/bak-s1.5"

# FIFOs, sockets and device nodes are kept as nodes (the kernel carries
# their data); a device node keeps its number.
check "mkfifo" mkfifo "$m/fifo"
(echo through >"$m/fifo") &
fifo_writer=$!
check "a FIFO carries data" test "$(cat "$m/fifo")" = through
wait "$fifo_writer"
check "a socket node" python3 -c "import socket; socket.socket(socket.AF_UNIX).bind('$m/sock')"
check "socket type" test -S "$m/sock"
check "mknod of a character device" mknod "$m/dev" c 1 3
check "mknod of a block device" mknod "$m/blk" b 7 200
check "device numbers" test "$(stat -c '%F %t:%T %s' "$m/dev" "$m/blk" | tr '\n' ' ')" = \
    "character special file 1:3 0 block special file 7:c8 0 "
check "ls -l shows the numbers" sh -c "ls -l '$m' | grep -q '^crw.* 1, *3 .* dev\$'"

# A rename the daemon refuses (a directory onto a non-empty one) leaves the
# times of the directory it would have left as they were (seen after the
# remount: the kernel keeps what it cached meanwhile).
mkdir -p "$m/rt/p/x" "$m/rt/q/y/z" && touch -d "2001-02-03 04:05:06" "$m/rt/p"
mv -T "$m/rt/p/x" "$m/rt/q/y" 2>/dev/null && bad "mv onto a non-empty directory succeeded"
# So does a rename of one name of a file onto another of its names, which
# does nothing (rename(2); mv refuses it).
mkdir -p "$m/rl/p" "$m/rl/q" && echo x >"$m/rl/p/a" && ln "$m/rl/p/a" "$m/rl/q/b" &&
    touch -d "2001-02-03 04:05:06" "$m/rl/p" "$m/rl/q"
check "rename between two names of a file" python3 -c "import os; os.rename('$m/rl/p/a', '$m/rl/q/b')"

# Everything is still there after a remount.
find "$m" -path "$m/par" -prune -o -print | sort >"$tmp/before.list"
stat -c '%n %a %s %Y %g' "$m/greeting" "$m/moved/sub/2" "$m/api" "$m/api/hello" "$m/old" >"$tmp/before.stat"
stat -c '%n %i %h %s %a' "$m/hd/h3" "$m/hd/h4" >"$tmp/before.links"
unmount
mount_fs
find "$m" -path "$m/par" -prune -o -print | sort >"$tmp/after.list"
stat -c '%n %a %s %Y %g' "$m/greeting" "$m/moved/sub/2" "$m/api" "$m/api/hello" "$m/old" >"$tmp/after.stat"
stat -c '%n %i %h %s %a' "$m/hd/h3" "$m/hd/h4" >"$tmp/after.links"
check "hard links after remount" cmp "$tmp/before.links" "$tmp/after.links"
check "same tree after remount" cmp "$tmp/before.list" "$tmp/after.list"
check "same metadata after remount" cmp "$tmp/before.stat" "$tmp/after.stat"
t2001=$(date -d "2001-02-03 04:05:06" +%s)
check "a rename between names of one file kept both" test "$(stat -c %h "$m/rl/p/a" "$m/rl/q/b" | tr '\n' ' ')" = "2 2 "
check "and their directories' times" test "$(stat -c %Y "$m/rl/p" "$m/rl/q" | tr '\n' ' ')" = "$t2001 $t2001 "
check "a refused rename left its directory's times" test "$(stat -c %Y "$m/rt/p")" = "$t2001"
check "xattr after remount" test "$(getfattr --absolute-names --only-values -n user.colour "$m/greeting")" = blue
check "big file after remount" cmp "$tmp/big" "$m/big"
check "diff -r after remount" diff -r --no-dereference "$src" "$m/inc"
check "snapshot after remount" cmp "$tmp/snap5" "$m/.snapshots/s1/seq/5"
check "FIFO after remount" test -p "$m/fifo"
check "socket after remount" test -S "$m/sock"
check "device after remount" test "$(stat -c '%F %t:%T' "$m/dev" "$m/blk" | tr '\n' ' ')" = \
    "character special file 1:3 block special file 7:c8 "
check "rmdir a snapshot" rmdir "$m/.snapshots/s1"
check "snapshot gone" test ! -e "$m/.snapshots/s1"
unmount

# A mount right after an unmount, while the old daemon still holds the
# store (stopped here, as if writing out a full memtable): the new one
# waits for it instead of failing as "in use", and says so.
mount_fs
echo held >"$m/held"
old=$pid; pid=""
kill -STOP "$old"
fusermount3 -u "$mnt"
( sleep 1; kill -CONT "$old" ) &
cont=$!
mount_fs
check "a mount waited for the daemon still closing the store" test "$(cat "$m/held")" = held
check "and said so" grep -q "waiting for process $old" "$tmp/daemon.err"
wait "$cont" "$old" 2>/dev/null
unmount
# The LOCK still names that daemon, gone now, but another program holds
# the store (a reader's shared lock): refused at once, not waited for.
( exec 9<"$store/LOCK"; flock -s 9 && exec sleep 20 ) &
holder=$!                           # (the one process holding the lock)
sleep 0.3
t0=$(date +%s)
timeout 15 "$fs" -f "$store" "$mnt" 2>"$tmp/held.err"
rc=$?
t1=$(date +%s)
kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null
check "a store another program holds is refused" test "$rc" = 1
check "at once" test $((t1 - t0)) -le 3
check "naming it in use" grep -q "in use" "$tmp/held.err"
grep -q " $mnt fuse" /proc/mounts && fusermount3 -u "$mnt"

# Details tools look at, as on a local disk: access times as relatime keeps
# them (not under -o noatime); a directory's mtime moved by a change right
# after it was looked at; touch's ctime equal to its mtime; "user." alone
# refused; readdir's inode numbers and types for devices, "." and "..".
cat >"$tmp/posix.py" <<'PY'
import errno, os, stat, sys, time
os.chdir(sys.argv[1]); noatime = sys.argv[2] == "noatime"
fails = []
def want(what, ok):
    if not ok: fails.append(what)
def settled(get, ok):
    # an access time moves moments after the close (atime_touch)
    for i in range(40):
        v = get()
        if ok(v): break
        time.sleep(0.05)
    return v
old = time.mktime((2020, 1, 1, 0, 0, 0, 0, 0, -1))
open("f", "w").write("x\n"); os.utime("f", (old, os.stat("f").st_mtime))
open("f").read()
if noatime:
    time.sleep(0.5); a1 = os.stat("f").st_atime
else:
    a1 = settled(lambda: os.stat("f").st_atime, lambda a: a > time.time() - 60)
want("atime after a read", (a1 == old) if noatime else (a1 > time.time() - 60))
if not noatime:
    open("f").read(); time.sleep(0.3); want("atime kept by a second read", os.stat("f").st_atime == a1)
    os.mkdir("d"); os.utime("d", (old, os.stat("d").st_mtime)); os.listdir("d")
    want("atime after a listing", settled(lambda: os.stat("d").st_atime, lambda a: a > time.time() - 60) > time.time() - 60)
    open("w", "w").write("x"); os.utime("w", (old, os.stat("w").st_mtime))
    with open("w", "a") as f: f.write("y")
    time.sleep(0.3); want("atime kept by a write", os.stat("w").st_atime == old)
    same = 0
    for i in range(20):
        os.mkdir("m%d" % i); open("m%d/a" % i, "w").close()
        t = os.stat("m%d" % i).st_mtime_ns; open("m%d/b" % i, "w").close()
        same += os.stat("m%d" % i).st_mtime_ns == t
    want("directory mtime moved by a create after a stat (%d of 20 not)" % same, same == 0)
    open("t", "w").close(); os.utime("t"); st = os.stat("t")
    want("touch: ctime == mtime", st.st_ctime_ns == st.st_mtime_ns)
    for ns in ("user.", "trusted.", "security."):
        try:
            os.setxattr("t", ns, b"1"); want("setxattr %s refused" % ns, False)
        except OSError as e:
            want("setxattr %s: EINVAL" % ns, e.errno == errno.EINVAL)
    try:
        os.getxattr("t", "security."); want("getxattr security. refused", False)
    except OSError as e:
        want("getxattr security.: EINVAL", e.errno == errno.EINVAL)
    os.mkdir("e"); os.mknod("e/c", 0o600 | stat.S_IFCHR, os.makedev(1, 3)); open("e/f", "w").close()
    for ent in os.scandir("e"):
        want("d_ino of " + ent.name, ent.inode() == os.lstat("e/" + ent.name).st_ino)
    want("d_type of a device", [e for e in os.scandir("e") if e.name == "c"][0].is_file(follow_symlinks=False) is False)
    # getdents64 itself (x86-64's number): scandir leaves out "." and ".."
    import ctypes, platform, struct
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("e", os.O_RDONLY | os.O_DIRECTORY); buf = ctypes.create_string_buffer(65536)
    n = libc.syscall(217, fd, buf, 65536) if platform.machine() == "x86_64" else -1; os.close(fd)
    ents, at = {}, 0
    while at < n:
        ino, _, reclen, typ = struct.unpack_from("<QqHB", buf.raw, at)
        ents[buf.raw[at + 19:at + reclen].split(b"\0")[0].decode()] = (ino, typ)
        at += reclen
    if n >= 0:
        want("d_ino of . and ..", ents.get(".", (0,))[0] == os.stat("e").st_ino and
             ents.get("..", (0,))[0] == os.stat(".").st_ino)
        want("d_type of . and ..", ents.get(".", (0, 0))[1] == 4 and ents.get("..", (0, 0))[1] == 4)
for f in fails: print("FAIL:", f)
sys.exit(1 if fails else 0)
PY
for how in relatime noatime; do
    mount_fs -o "$how"
    mkdir "$m/px"
    python3 "$tmp/posix.py" "$m/px" "$how" || bad "POSIX details (-o $how)"
    rm -rf "$m/px"
    unmount
done

# Files written through the mount are keys for the library.
check "stash_get of a file" test "$("$ctl" -d "$store" get moved/sub/2)" = two
"$ctl" -d "$store" get big >"$tmp/big2" && check "stash_get of the big file" cmp "$tmp/big" "$tmp/big2"
check "odd key kept" test "$("$ctl" -d "$store" get "api/bad//name")" = ab
check "no file removed while open is left" sh -c "! '$ctl' -d '$store' scan | grep -q fuse_hidden"
check "stash_get of a hard link" test "$("$ctl" -d "$store" get hd/h3)" = "$(printf 'one\ntwo')"
check "dumps show links" sh -c "for f in '$store'/*.sst '$store'/*.log; do '$ctl' dump-sst \"\$f\" 2>/dev/null; '$ctl' dump-wal \"\$f\" 2>/dev/null; done | grep -q '^[0-9]* put hd/h3 link to value [0-9a-f]*\$'"

# Background mode: returns once mounted; a busy store is refused in one line.
"$fs" "$store" "$mnt" 2>"$tmp/err" || bad "background mount"
grep -q " $mnt fuse" /proc/mounts || bad "background mount is not there"
mkdir -p "$tmp/mnt2"
if "$fs" "$store" "$tmp/mnt2" 2>"$tmp/err"; then bad "second mount of a held store"; fusermount3 -u "$tmp/mnt2"; fi
grep -q "in use by process [0-9]* (stashfs, mounted at .*$mnt)" "$tmp/err" || { bad "busy store message"; cat "$tmp/err"; }
"$ctl" -d "$store" get moved/sub/2 >/dev/null 2>"$tmp/err" && bad "stashctl on a mounted store"
grep -q "in use by process [0-9]* (stashfs, mounted at .*$mnt)" "$tmp/err" || { bad "stashctl busy message"; cat "$tmp/err"; }
"$ctl" -d "$store" check >/dev/null 2>"$tmp/err" && bad "stashctl check on a mounted store"
grep -q "mounted at .*$mnt" "$tmp/err" || { bad "stashctl check busy message"; cat "$tmp/err"; }
check "background unmount" fusermount3 -u "$mnt"
for opt in snapdir=a/b memtable_size=lots wal_flush_interval=-1 spin=soon; do
    if "$fs" -o "$opt" "$store" "$mnt" 2>"$tmp/err"; then bad "-o $opt accepted"; fusermount3 -u "$mnt"; fi
    grep -q "^stashfs: bad ${opt%%=*}" "$tmp/err" || { bad "-o $opt message"; cat "$tmp/err"; }
done
if "$fs" "$store" "$tmp/nowhere" 2>"$tmp/err"; then bad "missing mountpoint accepted"; fi
grep -qi "mount *point" "$tmp/err" || { bad "missing mountpoint message"; cat "$tmp/err"; }
# The background daemon closes the store: it opens again at once.
i=0; until "$ctl" -d "$store" get greeting >/dev/null 2>&1 || [ $i -gt 50 ]; do sleep 0.1; i=$((i + 1)); done
check "store free after unmount" "$ctl" -d "$store" get greeting

# Each way of serving requests (the default loop, the default loop with
# readers that sleep at once (-o spin=0), -s, libfuse's loop with -o
# clone_fd, the default loop beside libfuse's node-forgetting thread with
# -o remember) answers four processes writing files of 100 KiB writes
# with an fsync each (both pass the reading on to another thread) and small
# files, and ends cleanly on SIGTERM or SIGHUP, keeping everything written
# (SIGINT too, but a shell starts background jobs with it ignored).
head -c 204800 /dev/urandom >"$tmp/rnd"
n=0
for loop in "" "-o spin=0" "-s" "-o clone_fd" "-o remember=1"; do
    for sig in TERM HUP; do
        n=$((n + 1))
        mount_fs $loop
        writers=""
        for p in 1 2 3 4; do
            ( for i in 1 2 3; do
                  dd if="$tmp/rnd" of="$m/loop$n.$p.$i" bs=100k conv=fsync 2>/dev/null || exit 1
                  echo "$n $p $i" >"$m/small$n.$p.$i" || exit 1
              done ) &
            writers="$writers $!"
        done
        for w in $writers; do wait "$w" || bad "writer under loop '$loop'"; done
        kill -$sig "$pid"
        i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        if kill -0 "$pid" 2>/dev/null; then
            bad "SIG$sig did not stop the daemon (loop '$loop')"
        else
            wait "$pid"; st=$?; pid=""
            [ "$st" = 0 ] || bad "exit status $st after SIG$sig (loop '$loop')"
            grep -q " $mnt fuse" /proc/mounts && bad "still mounted after SIG$sig (loop '$loop')"
        fi
        unmount
        for p in 1 2 3 4; do for i in 1 2 3; do
            "$ctl" -d "$store" get "loop$n.$p.$i" >"$tmp/got" 2>&1 && cmp -s "$tmp/got" "$tmp/rnd" ||
                bad "loop$n.$p.$i after SIG$sig (loop '$loop')"
            [ "$("$ctl" -d "$store" get "small$n.$p.$i" 2>&1)" = "$n $p $i" ] ||
                bad "small$n.$p.$i after SIG$sig (loop '$loop')"
        done; done
    done
done

# SIGTERM while readers read a linked file whose other name is written to:
# the daemon's invalidations of the file's pages wait for the readers'
# READs, which must still be answered while the daemon stops (it hung for
# good, with the readers, about one time in six).  A hang is ended through
# the fuse control filesystem's abort, so that nothing is left waiting.
for round in 1 2 3 4; do
    mount_fs
    conn=$(stat -c %d "$m")     # the connection's number in the fuse control filesystem
    head -c 300000 /dev/urandom >"$m/X$round"; ln "$m/X$round" "$m/Y$round"
    busy=""
    for r in 1 2 3; do ( while cat "$m/X$round" >/dev/null 2>&1; do :; done ) & busy="$busy $!"; done
    ( while { echo a >>"$m/Y$round"; } 2>/dev/null; do :; done ) & busy="$busy $!"
    ( while dd if=/dev/zero of="$m/Y$round" bs=64k count=1 seek=1 conv=notrunc status=none 2>/dev/null; do :; done ) &
    busy="$busy $!"
    sleep 1.5
    kill -TERM "$pid"
    i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$pid" 2>/dev/null; then
        bad "SIGTERM under readers and invalidations did not stop the daemon (round $round)"
        mkdir -p "$tmp/fusectl"
        mount -t fusectl none "$tmp/fusectl" 2>/dev/null
        [ -e "$tmp/fusectl/$conn/abort" ] && echo 1 >"$tmp/fusectl/$conn/abort"
        umount "$tmp/fusectl" 2>/dev/null
    fi
    kill $busy 2>/dev/null; wait $busy 2>/dev/null
    [ -n "$pid" ] && wait "$pid" 2>/dev/null; pid=""
    unmount
    rm -f "$m/X$round" "$m/Y$round"     # what the writers left in the bare mountpoint
done

# A write by a writer without CAP_FSETID clears set-user-ID, also through a
# handle opened write-only (such writes bypass the kernel's page cache)
# before the file gained the bit, and a stat right after the write shows
# it; a writer with CAP_FSETID keeps it.
suid_case() {   # suid_case WHAT MODE_AFTER SETPRIV_OPTION...
    who=$1; want=$2; shift 2
    rm -f "$m/suid/f" "$m/suid/ready"
    echo x >"$m/suid/f"; chmod 777 "$m/suid/f"
    setpriv "$@" sh -c \
        "cd '$m/suid' && exec 3>>f && : >ready && until [ -u f ]; do sleep 0.05; done && echo y >&3 && stat -c %a f >ready" &
    w=$!
    i=0; until [ -e "$m/suid/ready" ] || [ $i -gt 100 ]; do sleep 0.05; i=$((i + 1)); done
    chmod 4777 "$m/suid/f"
    wait "$w" || bad "write by $who"
    check "mode after a write by $who, seen by the writer at once" test "$(cat "$m/suid/ready")" = "$want"
    check "mode after a write by $who" test "$(stat -c %a "$m/suid/f")" = "$want"
    check "the write by $who landed" test "$(cat "$m/suid/f")" = "$(printf 'x\ny')"
}
if command -v setpriv >/dev/null; then
    chmod o+x "$tmp"
    mount_fs -o allow_other
    mkdir -m 777 "$m/suid"
    suid_case "another user" 777 --reuid=65534 --regid=65534 --clear-groups
    suid_case "root without CAP_FSETID" 777 --inh-caps=-fsetid --bounding-set=-fsetid
    suid_case "root" 4777 --reuid=0
    # Which set-ID bits each change takes off, as on ext4 (the daemon
    # clears them, the kernel saying when: HANDLE_KILLPRIV_V2): a write, a
    # truncation, an open with O_TRUNC or a fallocate by a caller without
    # CAP_FSETID, and any chown.  Set-group-ID goes only where group
    # execution is on or the caller is not in the file's group.
    nob="setpriv --reuid=65534 --regid=65534 --clear-groups"
    nocap="setpriv --inh-caps=-fsetid --bounding-set=-fsetid"
    setid_case() {  # setid_case NAME MODE MODE_AFTER COMMAND (F: the file)
        rm -f "$m/suid/$1"; echo hello >"$m/suid/$1"; chmod "$2" "$m/suid/$1"
        F="$m/suid/$1" sh -c "$4" 2>/dev/null
        check "set-ID bits after $1 (mode $2)" test "$(stat -c %a "$m/suid/$1")" = "$3"
    }
    setid_case append 6777 777 "$nob sh -c 'echo x >>\$F'"
    setid_case append-sgid 2767 767 "$nob sh -c 'echo x >>\$F'"
    setid_case rw-write 6777 777 "$nob sh -c 'exec 3<>\$F; printf y >&3'"
    setid_case truncate 6777 777 "$nob truncate -s 100 \$F"
    setid_case truncate-sgid 2766 766 "$nob truncate -s 3 \$F"
    setid_case o_trunc 6777 777 "$nob sh -c ': >\$F'"
    setid_case fallocate 6777 777 "$nob fallocate -l 8192 \$F"
    setid_case chown 6777 777 "chown 1:1 \$F"
    setid_case chown-sgid-gx 2757 757 "chown 1:1 \$F"
    setid_case chown-sgid 2767 2767 "chown 1:1 \$F"
    setid_case root-append 6777 6777 "sh -c 'echo x >>\$F'"
    setid_case root-truncate 6777 6777 "truncate -s 10 \$F"
    setid_case root-o_trunc 6777 6777 "sh -c ': >\$F'"
    setid_case nocap-o_trunc 6777 777 "$nocap sh -c ': >\$F'"
    setid_case nocap-truncate 6777 777 "$nocap truncate -s 1 \$F"
    setid_case nocap-fallocate 6777 777 "$nocap fallocate -l 8192 \$F"
    same="perl -e 'chown(-1, -1, \$ARGV[0]) or exit 3'"
    setid_case chown-same 6777 777 "$same \$F"
    setid_case chown-same-sgid 6767 2767 "$same \$F"
    setid_case chown-same-other 6755 6755 "$nob $same \$F"
    F="$m/suid/chown-same-other" sh -c "$nob $same \$F"
    check "chown(-1, -1) by another user fails" test $? = 3
    setid_case nocap-append-sgid 2767 767 "chgrp 1000 \$F; chmod 2767 \$F; $nocap sh -c 'echo x >>\$F'"
    unmount
    # Permissions as users 1001 and 1002 see them, checked by the daemon
    # (the default without allow_other) and by the kernel.
    for how in allow_other,daemon_permissions allow_other; do
        mount_fs -o "$how"
        "$build/fs_perm" "$m" >"$tmp/out" 2>&1 || { bad "fs_perm -o $how"; cat "$tmp/out"; }
        unmount
    done
    chmod o-x "$tmp"
fi

# Making entries (create, mknod, mkdir, symlink, link, a rename into it) in
# a directory while it is renamed back and forth, and in another while it
# is removed and made again: every call that succeeded left its entry, once,
# and no call that failed left one (an open(O_CREAT) failing with ENOENT
# must not leave a file that shows after a remount); every key in the store
# is an entry shown.  In a store of its own, under the default loop and
# libfuse's.
cat >"$tmp/race.py" <<'PY'
import errno, json, os, random, sys, time
# race.py run MNT SECONDS OUT: in MNT/shared, MNT/s2 (the same directory,
# renamed back and forth by one process) and MNT/t (removed and made again
# by another), three processes make entries of every kind (create, mknod,
# mkdir, symlink, link, a rename of a file into it), each under a name of
# its own, recording which calls succeeded; then remove some again.
# race.py check MNT OUT: the tree holds exactly the entries made and not
# removed, each once, and none whose call failed; the names go to OUT.tree.
# race.py keys OUT KEYS: every key of the store (stashctl scan --null) is
# one of those entries or a directory shown.
def run(m, secs, out):
    os.mkdir(m + "/shared"); os.mkdir(m + "/t")
    end = time.time() + secs
    def mover():
        while time.time() < end:
            for a, b in (("shared", "s2"), ("s2", "shared")):
                try: os.rename(m + "/" + a, m + "/" + b)
                except OSError: pass
    def remover():
        while time.time() < end:
            try: os.rmdir(m + "/t")
            except OSError: pass
            try: os.mkdir(m + "/t")
            except OSError: pass
    def remove(name, kind):
        for _ in range(200):
            for d in ("shared", "s2", "t"):
                try:
                    (os.rmdir if kind == "d" else os.unlink)(m + "/" + d + "/" + name)
                    return True
                except FileNotFoundError: pass
        return False
    def maker(w):
        rnd = random.Random(w); res = {"ok": [], "failed": [], "removed": [], "errors": []}
        src = m + "/src%d" % w
        open(src, "w").close()
        n = 0
        while time.time() < end:
            n += 1
            kind = rnd.choice("cndslr"); d = rnd.choice(("shared", "s2", "t"))
            name = "%s%d_%d" % (kind, w, n); p = m + "/" + d + "/" + name
            if kind == "r":
                tmp = m + "/tmp%d" % w
                open(tmp, "w").close()
            try:
                if kind == "c": os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                elif kind == "n": os.mkfifo(p)
                elif kind == "d": os.mkdir(p)
                elif kind == "s": os.symlink("target", p)
                elif kind == "l": os.link(src, p)
                else: os.rename(tmp, p)
            except OSError as e:
                res["failed"].append(name)
                if e.errno != errno.ENOENT: res["errors"].append("%s: %s" % (p, e))
                if kind == "r" and os.path.exists(tmp): os.unlink(tmp)
                continue
            # Entries in t go again at once, so that t can be removed.
            if (d != "t" and rnd.random() < 0.5) or not remove(name, kind):
                res["ok"].append(name)
            else:
                res["removed"].append(name)
        os.unlink(src)
        json.dump(res, open("%s.%d" % (out, w), "w"))
    pids = []
    for f, a in [(mover, ()), (remover, ())] + [(maker, (w,)) for w in range(3)]:
        pid = os.fork()
        if pid == 0:
            try: f(*a); os._exit(0)
            except BaseException as e: print("%s: %r" % (f.__name__, e)); os._exit(1)
        pids.append(pid)
    if any(os.waitpid(pid, 0)[1] for pid in pids): sys.exit(1)
    res = {"ok": [], "failed": [], "removed": [], "errors": []}
    for w in range(3):
        for k, v in json.load(open("%s.%d" % (out, w))).items(): res[k] += v
    json.dump(res, open(out, "w"))
    print("made %d, removed %d, failed %d" % (len(res["ok"]) + len(res["removed"]), len(res["removed"]), len(res["failed"])))
    for e in res["errors"][:5]: print("unexpected error:", e)
    sys.exit(1 if res["errors"] else 0)
def check(m, out):
    res = json.load(open(out)); ok = set(res["ok"])
    seen = {}
    for root, ds, fs in os.walk(m):
        for x in ds + fs:
            p = os.path.relpath(os.path.join(root, x), m)
            if root != m: seen.setdefault(x, []).append(p)
    bad = 0
    top = set(os.listdir(m))
    if not top <= {"shared", "s2", "t"} or {"shared", "s2"} <= top:
        bad += 1; print("at the top:", " ".join(sorted(top)))
    for x, ps in sorted(seen.items()):
        if x not in ok or len(ps) > 1:
            bad += 1
            why = ("its call failed" if x in res["failed"] else "removed" if x in res["removed"]
                   else "twice" if x in ok else "never made")
            if bad <= 5: print("left over (%s): %s" % (why, " ".join(ps)))
    for x in sorted(ok - set(seen))[:5]: print("missing:", x); bad += 1
    with open(out + ".tree", "w") as f:
        for root, ds, fs in os.walk(m):
            for x in ds: f.write(os.path.relpath(os.path.join(root, x), m) + "/\n")
            for x in fs: f.write(os.path.relpath(os.path.join(root, x), m) + "\n")
    sys.exit(1 if bad else 0)
def keys(out, keyfile):
    shown = set(open(out + ".tree").read().split("\n")) - {""}
    bad = 0
    for k in open(keyfile, "rb").read().split(b"\0"):
        k = k.decode()
        if k and k != "/" and k not in shown:
            bad += 1
            if bad <= 5: print("key not shown:", k)
    sys.exit(1 if bad else 0)
if sys.argv[1] == "run": run(sys.argv[2], float(sys.argv[3]), sys.argv[4])
elif sys.argv[1] == "check": check(sys.argv[2], sys.argv[3])
else: keys(sys.argv[2], sys.argv[3])
PY
main_store=$store
for loop in "" "-o clone_fd"; do
    store="$tmp/race"; rm -rf "$store"
    mount_fs $loop
    check "entries made while their directories move ('$loop')" python3 "$tmp/race.py" run "$m" 2 "$tmp/race.json"
    check "just the entries made, once ('$loop')" python3 "$tmp/race.py" check "$m" "$tmp/race.json"
    unmount
    "$ctl" -d "$store" scan --null >"$tmp/race.keys" || bad "scan after the race ('$loop')"
    check "every key an entry shown ('$loop')" python3 "$tmp/race.py" keys "$tmp/race.json" "$tmp/race.keys"
    mount_fs
    check "just the entries made after a remount ('$loop')" python3 "$tmp/race.py" check "$m" "$tmp/race.json"
    unmount
done
store=$main_store

[ "$fails" = 0 ] && echo "stashfs: all checks passed"
[ "$fails" = 0 ]
