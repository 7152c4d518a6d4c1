#!/bin/sh
# tools/fsbench, small: every workload runs on a stashfs mount and on a
# native directory, and the table has a number for each, with the ratio
# column; nothing is left behind in either directory.
. "$(dirname "$0")/mountlib.sh"
root=$(cd "$(dirname "$0")/.." && pwd)
mount_fs
mkdir "$tmp/native"
"$root/tools/fsbench" -n 400 -m 4 -b "$build" stash="$mnt" native="$tmp/native" >"$tmp/table" 2>"$tmp/err" ||
    { bad "fsbench failed"; cat "$tmp/err"; }
for w in create create_4p stat stat_cached read ls_lR tar_c untar rsync seq_write seq_read \
         rand_write rand_read fsync_4k unlink; do
    # | NAME UNIT | STASH ... | NATIVE ... | RATIO |, both figures above zero
    grep -Eq "^\| $w [^|]* \| [1-9][0-9]*( \(p99 [0-9.]+ µs\))? \| [1-9][0-9]*( \(p99 [0-9.]+ µs\))? \| [0-9]+\.[0-9][0-9] \|\$" "$tmp/table" ||
        bad "no figures for $w"
done
[ -z "$(ls -A "$mnt")" ] || bad "fsbench left files in the mount: $(ls -A "$mnt")"
[ -z "$(ls -A "$tmp/native")" ] || bad "fsbench left files in the native directory"
[ "$fails" = 0 ] || sed 's/^/    /' "$tmp/table"
[ "$fails" = 0 ] && echo "fsbench: all checks passed"
[ "$fails" = 0 ]
