#!/bin/sh
# make install into a scratch DESTDIR, then: build the README's example
# against the installed copy with pkg-config, both shared and static, and run
# it; check the man pages; and mount with the installed stashfs the ways an
# administrator would -- mount -t fuse.stashfs and an fstab line -- inside a
# private mount namespace where the installed bin directory stands in for
# /usr/local/bin (mount(8) runs its helpers with no PATH of ours).
set -eu
build=${1:-build}
tmp=$(mktemp -d)
cleanup() {
    # A daemon left behind by a failure: the pid in its store's LOCK.
    for lock in "$tmp"/data*/LOCK; do
        [ -f "$lock" ] || continue
        p=$(head -n 1 "$lock")
        [ -n "$p" ] && grep -q stashfs "/proc/$p/cmdline" 2>/dev/null && kill "$p" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
make -s install DESTDIR="$tmp/root" PREFIX=/usr/local >/dev/null
lib="$tmp/root/usr/local/lib"
for f in libsmartstash.a libsmartstash.so libsmartstash.so.0 pkgconfig/smartstash.pc; do
    [ -e "$lib/$f" ] || { echo "missing after install: $f"; exit 1; }
done
[ -e "$tmp/root/usr/local/include/smartstash.h" ] || { echo "missing after install: smartstash.h"; exit 1; }
awk '/^```c$/{on=1;next} /^```$/{if(on)exit} on' README.md > "$tmp/example.c"
export PKG_CONFIG_PATH="$lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$tmp/root"
cc -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags smartstash) "$tmp/example.c" -o "$tmp/ex-shared" \
   $(pkg-config --libs smartstash)
cc -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags smartstash) "$tmp/example.c" -o "$tmp/ex-static" \
   "$lib/libsmartstash.a" $(pkg-config --libs-only-l --static smartstash | sed 's/-lsmartstash//')
(cd "$tmp" && LD_LIBRARY_PATH="$lib" ./ex-shared) | grep -q "greeting = hello"
(cd "$tmp" && rm -rf example-data && ./ex-static) | grep -q "greeting is gone"
readelf -d "$lib/libsmartstash.so.0" | grep -q 'SONAME.*libsmartstash.so.0'
echo "installed library, header and pkg-config file work (shared and static)"

root="$tmp/root/usr/local"
for f in bin/stashfs bin/stashctl share/man/man1/stashfs.1 share/man/man1/stashctl.1 \
         share/man/man3/smartstash.3 share/smartstash/stashfs@.service; do
    [ -e "$root/$f" ] || { echo "missing after install: $f"; exit 1; }
done
"$root/bin/stashctl" -h | grep -q "^usage: stashctl" || { echo "installed stashctl does not run"; exit 1; }
if command -v groff >/dev/null 2>&1; then
    for m in man1/stashfs.1 man1/stashctl.1 man3/smartstash.3; do
        out=$(groff -man -Tutf8 -ww -z "$root/share/man/$m" 2>&1)
        [ -z "$out" ] || { echo "man page $m: $out"; exit 1; }
    done
    echo "man pages format without warnings"
fi

# mount -t fuse.stashfs, an fstab line, unmount with umount(8).
mkdir -p "$tmp/mnt1" "$tmp/mnt2"
printf '%s %s fuse.stashfs defaults,nodev,nosuid,noatime,compaction_interval=30 0 0\n' "$tmp/data2" "$tmp/mnt2" >"$tmp/fstab"
unshare -m sh -eu -c '
    tmp=$1; root=$2
    trap "rc=\$?; umount $tmp/mnt1 2>/dev/null || :; umount $tmp/mnt2 2>/dev/null || :; exit \$rc" EXIT
    mount --bind "$root/bin" /usr/local/bin
    mount -t fuse.stashfs -o nodev,nosuid,compaction_interval=30 "$tmp/data1" "$tmp/mnt1"
    grep -q "^$tmp/data1 $tmp/mnt1 fuse.stashfs rw,nosuid,nodev" /proc/self/mounts
    echo one >"$tmp/mnt1/f"
    mount -T "$tmp/fstab" "$tmp/mnt2"
    grep -q "^$tmp/data2 $tmp/mnt2 fuse.stashfs rw,nosuid,nodev,noatime" /proc/self/mounts
    echo two >"$tmp/mnt2/f"
    umount "$tmp/mnt1"
    umount "$tmp/mnt2"
' sh "$tmp" "$root" || { echo "mount -t fuse.stashfs / fstab failed"; exit 1; }
# The daemons close their stores once unmounted.
for d in data1 data2; do
    i=0
    while ! "$root/bin/stashctl" -d "$tmp/$d" get f >"$tmp/got" 2>/dev/null; do
        i=$((i + 1)); [ $i -lt 100 ] || { echo "store $d still held after umount"; exit 1; }; sleep 0.1
    done
done
[ "$(cat "$tmp/got")" = two ] || { echo "fstab mount lost its file"; exit 1; }
[ "$("$root/bin/stashctl" -d "$tmp/data1" get f)" = one ] || { echo "mount -t lost its file"; exit 1; }
echo "installed stashfs mounts with mount -t fuse.stashfs and from fstab"

make -s uninstall DESTDIR="$tmp/root" PREFIX=/usr/local >/dev/null
left=$(find "$tmp/root" -type f -o -type l)
[ -z "$left" ] || { echo "left after make uninstall: $left"; exit 1; }
echo "make uninstall removes every installed file"
