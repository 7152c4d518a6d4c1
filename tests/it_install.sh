#!/bin/sh
# make install into a scratch DESTDIR, then build the README's example
# against the installed copy with pkg-config, both shared and static, and
# run it.
set -eu
build=${1:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
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
