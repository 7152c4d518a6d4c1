#!/bin/sh
# The C example in README.md compiles against the tree and runs as it says.
set -eu
build=${1:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
awk '/^```c$/{on=1;next} /^```$/{if(on)exit} on' README.md > "$tmp/example.c"
cc -std=c11 -Wall -Wextra -Werror -Ikv "$tmp/example.c" -o "$tmp/example" \
   "$build/libsmartstash.a" $(pkg-config --libs libzstd yaml-0.1) -lpthread
out=$(cd "$tmp" && ./example)
echo "$out"
[ "$out" = "greeting = hello
greeting is gone" ]
[ -d "$tmp/example-data" ]
