#!/bin/sh
# stashfs under faults: the daemon killed with -9 while files are written
# (every fsynced file intact after a remount, no file garbage, the store
# opens without repair); a full disk (ENOSPC to the writer, everything
# acknowledged kept, writes work again once space is freed); a damaged
# table (EIO on what it holds, never wrong bytes, the rest readable).
. "$(dirname "$0")/mountlib.sh"
small=""
extra_cleanup='[ -n "$small" ] && umount -l "$small" 2>/dev/null'
# content N: what file N holds when whole (several lines, written in pieces)
content() { _l=0; while [ $_l -lt 40 ]; do echo "file $1 line $_l ................................"; _l=$((_l + 1)); done; }

# ---- a snapshot survives kill -9 ----------------------------------------------
mount_fs
echo before >"$mnt/snapped"
mkdir "$mnt/.snapshots/k9" || bad "mkdir snapshot"
echo after >"$mnt/snapped"
kill -9 "$pid"; wait "$pid" 2>/dev/null; pid=""
fusermount3 -uz "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
mount_fs
[ "$(cat "$mnt/.snapshots/k9/snapped" 2>/dev/null)" = before ] || bad "snapshot lost by kill -9"
unmount

# ---- a file removed while open, then kill -9 -------------------------------
# The next mount removes it: no key of it is left, and its directory goes.
mount_fs
mkdir "$mnt/held" && echo data >"$mnt/held/f" || bad "make held/f"
exec 7<"$mnt/held/f"
rm "$mnt/held/f" || bad "rm of an open file"
kill -9 "$pid"; wait "$pid" 2>/dev/null; pid=""
exec 7<&-
fusermount3 -uz "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
"$ctl" -d "$store" scan | grep -q fuse_hidden || bad "no key of the removed open file before the remount"
mount_fs
grep -q "removed 1 file" "$tmp/daemon.err" || bad "the mount did not say it removed the file"
rmdir "$mnt/held" || bad "rmdir of the directory that held it"
unmount
"$ctl" -d "$store" scan | grep -q fuse_hidden && bad "the removed open file is still in the store"

# ---- value-file bytes a power cut lost: check notes them, open drops them ----
# A large file written and never synced (no periodic sync for 30 s), the
# daemon killed, and the value file's unsynced tail taken away as a power
# cut would: check says so in a note (exit 0), and after an open that
# drops those batches the store checks clean.
mount_fs -o wal_flush_interval=30
head -c 1000000 /dev/urandom >"$tmp/pc"
mkdir "$mnt/pc" && dd if="$tmp/pc" of="$mnt/pc/f" bs=1M status=none || bad "write pc/f"
kill -9 "$pid"; wait "$pid" 2>/dev/null; pid=""
fusermount3 -uz "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
vf=$(ls -S "$store"/*.val 2>/dev/null | head -n 1)
if [ -z "$vf" ]; then
    bad "no value file after a 1 MB write"
else
    truncate -s 500000 "$vf"
    "$ctl" -d "$store" check >"$tmp/out" 2>&1 || { bad "check after a power cut's loss"; cat "$tmp/out"; }
    grep -q "^note: .* value-file chunks that a crash lost" "$tmp/out" || { bad "no note of the lost chunks"; cat "$tmp/out"; }
    mount_fs
    # What is left of pc/f (if anything) reads without an error.
    [ ! -e "$mnt/pc/f" ] || cat "$mnt/pc/f" >/dev/null || bad "pc/f reads an error after the open"
    unmount
    "$ctl" -d "$store" check >"$tmp/out" 2>&1 || { bad "check after the open"; cat "$tmp/out"; }
fi

# ---- kill -9 while writing -------------------------------------------------
rounds=${FAULT_ROUNDS:-5}
r=0
while [ $r -lt $rounds ]; do
    mount_fs -o memtable_size=1M
    n=0; synced=""
    (
        n=0
        while :; do
            mkdir -p "$mnt/r$r" 2>/dev/null || exit 0
            content "$r.$n" >"$mnt/r$r/$n" || exit 0
            # every third file is fsynced; its number is recorded after
            if [ $((n % 3)) = 0 ]; then sync "$mnt/r$r/$n" && echo "$n" >>"$tmp/synced.$r" || exit 0; fi
            n=$((n + 1))
        done
    ) 2>/dev/null &
    writer=$!
    sleep "0.$((3 + r % 5))"
    kill -9 "$pid"; wait "$pid" 2>/dev/null; pid=""
    wait "$writer" 2>/dev/null
    fusermount3 -uz "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
    # The store opens without repair, and check finds nothing damaged.
    "$ctl" -d "$store" check >"$tmp/check.out" 2>&1 || { bad "round $r: stashctl check"; cat "$tmp/check.out"; }
    mount_fs
    nsynced=0
    for n in $(cat "$tmp/synced.$r" 2>/dev/null); do
        content "$r.$n" | cmp -s - "$mnt/r$r/$n" || bad "round $r: fsynced file $n not intact"
        nsynced=$((nsynced + 1))
    done
    # Every other file is empty or a prefix of its content, never garbage.
    for f in "$mnt/r$r"/*; do
        [ -e "$f" ] || continue
        n=$(basename "$f")
        size=$(stat -c %s "$f")
        content "$r.$n" | head -c "$size" | cmp -s - "$f" || bad "round $r: file $n is garbage"
    done
    echo "round $r: $(ls "$mnt/r$r" | wc -l) files after the kill, $nsynced fsynced and intact"
    unmount
    r=$((r + 1))
done

# ---- a damaged table ------------------------------------------------------
# A store of its own, so that every table holds these files.
store="$tmp/store2"
mount_fs
mkdir -p "$mnt/c"
i=0; while [ $i -lt 2000 ]; do content "c$i" >"$mnt/c/$i"; i=$((i + 1)); done
unmount
"$ctl" -d "$store" compact >/dev/null 2>&1 || bad "compact"
table=$(ls -S "$store"/*.sst | head -n 1)
echo "damaging $(basename "$table") ($(stat -c %s "$table") bytes; $(ls "$store"/*.sst | wc -l) tables)"
size=$(stat -c %s "$table")
printf '\377\377\377\377' | dd of="$table" bs=1 seek=$((size / 3)) conv=notrunc 2>/dev/null
mount_fs
good=0; eio=0
i=0; while [ $i -lt 2000 ]; do
    if cat "$mnt/c/$i" >"$tmp/got" 2>"$tmp/err"; then
        content "c$i" | cmp -s - "$tmp/got" && good=$((good + 1)) || bad "damaged table: file $i has wrong bytes"
    else
        grep -q "Input/output error" "$tmp/err" && eio=$((eio + 1)) || { bad "damaged table: file $i: $(cat "$tmp/err")"; }
    fi
    i=$((i + 1))
done
echo "damaged table: $good files read intact, $eio gave EIO"
[ "$eio" -gt 0 ] || bad "damaged table: no EIO at all"
[ "$good" -gt 0 ] || bad "damaged table: nothing readable"
unmount

# ---- a full disk ----------------------------------------------------------
# Twice, with 6 and then 4 MiB of ballast: at 4 the disk fills when level 0
# is due a compaction that needs more room than freeing the ballast gives
# (writers were then refused for good).
small="$tmp/small"
mkdir -p "$small"
for ballast in 6 4; do
if mount -t tmpfs -o size=24m tmpfs "$small" 2>/dev/null; then
    store="$small/store"
    head -c $((ballast * 1024 * 1024)) /dev/zero >"$small/ballast"
    mount_fs -o memtable_size=1M
    mkdir -p "$mnt/full"
    i=0; err=""
    while [ $i -lt 4000 ]; do
        if ! head -c 16384 /dev/urandom >"$mnt/full/$i" 2>"$tmp/err"; then err=$(cat "$tmp/err"); break; fi
        i=$((i + 1))
    done
    echo "full disk ($ballast MiB of ballast) after $i files: $err"
    echo "$err" | grep -q "No space left on device" || bad "full disk: no ENOSPC ($err)"
    last=$i
    rm -f "$small/ballast"
    sleep 1.5   # the engine retries its failed work within a second
    ok=0; j=0
    while [ $j -lt 20 ]; do
        echo "after" >"$mnt/after" 2>/dev/null && ok=1 && break
        sleep 0.5; j=$((j + 1))
    done
    [ "$ok" = 1 ] || bad "full disk ($ballast MiB): writes do not work again after freeing space"
    sync "$mnt/after" 2>/dev/null
    unmount
    mount_fs
    [ "$(cat "$mnt/after" 2>/dev/null)" = after ] || bad "full disk ($ballast MiB): the write after freeing space is lost"
    n=$(ls "$mnt/full" | wc -l)
    [ "$n" -ge "$last" ] || bad "full disk ($ballast MiB): $n files kept of $last acknowledged"
    unmount
    umount "$small"
else
    bad "full disk: cannot mount a tmpfs (run as root)"
fi
done
small=""

[ "$fails" = 0 ] && echo "stashfs faults: all checks passed"
[ "$fails" = 0 ]
