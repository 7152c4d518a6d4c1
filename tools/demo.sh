#!/bin/sh
# make run: mount the store kept in ./data at ./mnt, in the foreground, until
# Ctrl-C (or fusermount3 -u mnt from another terminal) unmounts it cleanly.
build=${1:-build}
mkdir -p mnt || exit 1
if grep -q " $(pwd)/mnt fuse" /proc/mounts; then
    echo "./mnt is already mounted: unmount it with 'fusermount3 -u mnt' first" >&2
    exit 1
fi
cat <<MSG
Mounting the store in ./data at ./mnt.  In another terminal:

    echo hello > mnt/greeting      # a key and its value
    mkdir -p mnt/notes && cp README.md mnt/notes/
    ls -lR mnt; cat mnt/greeting
    build/stashctl -d data stats   # (once unmounted) the engine's view

Press Ctrl-C here (or run 'fusermount3 -u mnt') to unmount; everything
written is kept in ./data for the next 'make run'.
MSG
exec "$build/stashfs" -f ./data ./mnt
