#!/bin/sh
# stashctl: every command, every exit code, damage found by check, and a
# store held by another process.
set -u
build=${1:-build}
ctl="$build/stashctl"
tmp=$(mktemp -d)
holder=""
cleanup() {
    [ -n "$holder" ] && kill "$holder" 2>/dev/null && wait "$holder" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
store="$tmp/store"
fails=0
expect() {   # expect CODE DESCRIPTION COMMAND...
    want=$1; what=$2; shift 2
    "$@" >"$tmp/out" 2>"$tmp/err"
    got=$?
    if [ "$got" != "$want" ]; then
        echo "FAIL: $what: exit $got, wanted $want"; cat "$tmp/err"; fails=$((fails + 1))
    fi
}
same() {     # same DESCRIPTION FILE1 FILE2
    if ! cmp -s "$2" "$3"; then echo "FAIL: $1"; fails=$((fails + 1)); fi
}

expect 2 "no arguments" "$ctl"
expect 2 "no store" "$ctl" get k
expect 2 "unknown command" "$ctl" -d "$store" frobnicate
expect 2 "get without key" "$ctl" -d "$store" get
expect 2 "empty key" "$ctl" -d "$store" get ""
expect 1 "missing store" "$ctl" -d "$store" get k
grep -q "does not exist" "$tmp/err" || { echo "FAIL: missing store message"; fails=$((fails + 1)); }

"$build/stash-demo" "$store" >/dev/null || { echo "FAIL: demo store"; exit 1; }
expect 0 "put" "$ctl" -d "$store" put greeting hello
expect 0 "get" "$ctl" -d "$store" get greeting
printf hello >"$tmp/want"; same "get returns the value" "$tmp/out" "$tmp/want"

head -c 300000 /dev/urandom >"$tmp/blob"
expect 0 "put from stdin" sh -c "'$ctl' -d '$store' put blob <'$tmp/blob'"
expect 0 "get binary" "$ctl" -d "$store" get blob
same "binary value round trip" "$tmp/out" "$tmp/blob"

# A value far larger than stash_put takes, streamed both ways.
head -c 40000000 /dev/urandom >"$tmp/huge"
expect 0 "put of 40 MB from stdin" sh -c "'$ctl' -d '$store' put huge <'$tmp/huge'"
expect 0 "get of 40 MB" "$ctl" -d "$store" get huge
same "40 MB round trip" "$tmp/out" "$tmp/huge"
expect 0 "put from an empty stdin" sh -c "'$ctl' -d '$store' put huge </dev/null"
expect 0 "get of the emptied value" "$ctl" -d "$store" get huge
[ -s "$tmp/out" ] && { echo "FAIL: emptied value not empty"; fails=$((fails + 1)); }
expect 1 "put under the snapshots directory" "$ctl" -d "$store" put .snapshots/x v
grep -q "reserved" "$tmp/err" || { echo "FAIL: reserved key message"; cat "$tmp/err"; fails=$((fails + 1)); }

expect 0 "del" "$ctl" -d "$store" del greeting
expect 1 "get deleted" "$ctl" -d "$store" get greeting
grep -q "not found" "$tmp/err" || { echo "FAIL: not-found message"; fails=$((fails + 1)); }
expect 1 "del missing" "$ctl" -d "$store" del greeting

for k in a/1 a/2 a/3 b/1; do "$ctl" -d "$store" put "$k" "v$k" || fails=$((fails + 1)); done
"$ctl" -d "$store" put "$(printf 'odd\001key')" x || fails=$((fails + 1))
expect 0 "scan prefix" "$ctl" -d "$store" scan a/
printf 'a/1\na/2\na/3\n' >"$tmp/want"; same "scan lists the prefix in order" "$tmp/out" "$tmp/want"
expect 0 "scan limit values" "$ctl" -d "$store" scan a/ --limit 2 --values
printf 'a/1\tva/1\na/2\tva/2\n' >"$tmp/want"; same "scan --limit --values" "$tmp/out" "$tmp/want"
expect 0 "scan escapes" "$ctl" -d "$store" scan odd
printf 'odd\\x01key\n' >"$tmp/want"; same "scan escapes unprintable bytes" "$tmp/out" "$tmp/want"
expect 0 "scan null" "$ctl" -d "$store" scan b/ --null
printf 'b/1\0' >"$tmp/want"; same "scan --null" "$tmp/out" "$tmp/want"
expect 2 "scan bad option" "$ctl" -d "$store" scan --frob

expect 0 "stats" "$ctl" -d "$store" stats
grep -q "level 0:" "$tmp/out" || { echo "FAIL: stats output"; fails=$((fails + 1)); }
expect 0 "compact" "$ctl" -d "$store" compact
expect 0 "get after compact" "$ctl" -d "$store" get blob
same "value survives compaction" "$tmp/out" "$tmp/blob"
expect 0 "check clean" "$ctl" -d "$store" check
grep -q "^clean" "$tmp/out" || { echo "FAIL: check output"; cat "$tmp/out"; fails=$((fails + 1)); }

# dump-sst / dump-wal print a file's records; they need no store option.
expect 0 "dump-sst" "$ctl" dump-sst "$(ls "$store"/*.sst | head -n 1)"
grep -q '^[0-9]* put a/1 plain 4 bytes "va/1"$' "$tmp/out" || { echo "FAIL: dump-sst output"; head "$tmp/out"; fails=$((fails + 1)); }
grep -q '<chunk gen [0-9a-f]* index 0> 65536 bytes' "$tmp/out" || { echo "FAIL: dump-sst chunk"; fails=$((fails + 1)); }
grep -q 'put blob chunked .* bytes in gen [0-9a-f]*, [0-9]* chunks$' "$tmp/out" || { echo "FAIL: dump-sst chunk count"; grep blob "$tmp/out"; fails=$((fails + 1)); }
"$ctl" -d "$store" put walkey walvalue
expect 0 "dump-wal" "$ctl" dump-wal "$(ls "$store"/*.log | tail -n 1)"
grep -q '^[0-9]* put walkey plain 8 bytes "walvalue"$' "$tmp/out" || { echo "FAIL: dump-wal output"; cat "$tmp/out"; fails=$((fails + 1)); }
expect 0 "dump-wal of a MANIFEST" "$ctl" dump-wal "$(ls "$store"/MANIFEST-* | tail -n 1)"
grep -q '^# edit at offset [0-9]*:.* add 1,' "$tmp/out" || { echo "FAIL: MANIFEST dump"; cat "$tmp/out"; fails=$((fails + 1)); }
expect 1 "dump-sst of a non-table" "$ctl" dump-sst "$store/CURRENT"
expect 1 "dump-wal of a badly named file" "$ctl" dump-wal "$store/CURRENT"
expect 2 "dump-sst without a file" "$ctl" dump-sst

# On a terminal, compact and check draw a progress bar on stderr (a pty
# from script(1)); in a pipe they do not.
if command -v script >/dev/null 2>&1; then
    script -qec "'$ctl' -d '$store' compact" /dev/null >"$tmp/tty" 2>&1
    grep -q "compacting \[#*\] 100%" "$tmp/tty" || { echo "FAIL: compact progress bar"; od -c "$tmp/tty" | head; fails=$((fails + 1)); }
    script -qec "'$ctl' -d '$store' check" /dev/null >"$tmp/tty" 2>&1
    grep -q "checking \[#*\] 100%" "$tmp/tty" || { echo "FAIL: check progress bar"; fails=$((fails + 1)); }
    grep -q "^clean" "$tmp/tty" || { echo "FAIL: check result under a terminal"; fails=$((fails + 1)); }
fi
"$ctl" -d "$store" check 2>"$tmp/err" >/dev/null
[ -s "$tmp/err" ] && { echo "FAIL: progress drawn into a pipe"; fails=$((fails + 1)); }

# A backup is a store of its own, with the same contents, that passes check.
expect 0 "backup" "$ctl" -d "$store" backup "$tmp/bak"
expect 0 "check backup" "$ctl" -d "$tmp/bak" check
expect 0 "get from backup" "$ctl" -d "$tmp/bak" get blob
same "backup holds the values" "$tmp/out" "$tmp/blob"
"$ctl" -d "$store" scan >"$tmp/keys1"; "$ctl" -d "$tmp/bak" scan >"$tmp/keys2"
same "backup holds the same keys" "$tmp/keys1" "$tmp/keys2"
expect 1 "backup into a non-empty directory" "$ctl" -d "$store" backup "$tmp/bak"
grep -q "not an empty directory" "$tmp/err" || { echo "FAIL: backup refusal message"; fails=$((fails + 1)); }
# A backup of a named snapshot holds what it saw, not what came after.
"$ctl" -d "$store" snapshot create before
"$ctl" -d "$store" put a/1 after
"$ctl" -d "$store" del blob
expect 0 "backup --snapshot" "$ctl" -d "$store" backup --snapshot before "$tmp/bak-snap"
expect 0 "check snapshot backup" "$ctl" -d "$tmp/bak-snap" check
expect 0 "get from snapshot backup" "$ctl" -d "$tmp/bak-snap" get blob
same "snapshot backup holds the old large value" "$tmp/out" "$tmp/blob"
expect 0 "get old value from snapshot backup" "$ctl" -d "$tmp/bak-snap" get a/1
printf 'va/1' >"$tmp/want"; same "snapshot backup holds the old value" "$tmp/out" "$tmp/want"
"$ctl" -d "$tmp/bak" scan >"$tmp/keys1"; "$ctl" -d "$tmp/bak-snap" scan >"$tmp/keys2"
same "snapshot backup holds the snapshot's keys" "$tmp/keys1" "$tmp/keys2"
expect 0 "snapshot backup has no snapshots" "$ctl" -d "$tmp/bak-snap" snapshot list
[ -s "$tmp/out" ] && { echo "FAIL: snapshots copied into a snapshot backup"; fails=$((fails + 1)); }
expect 1 "backup of a missing snapshot" "$ctl" -d "$store" backup --snapshot nosuch "$tmp/bak-none"
grep -q "snapshot nosuch: not found" "$tmp/err" || { echo "FAIL: missing snapshot message"; cat "$tmp/err"; fails=$((fails + 1)); }
expect 2 "backup --snapshot without a name" "$ctl" -d "$store" backup --snapshot
"$ctl" -d "$store" snapshot delete before
"$ctl" -d "$store" put a/1 va/1
"$ctl" -d "$store" put blob <"$tmp/blob"
expect 2 "backup without destination" "$ctl" -d "$store" backup

# Named snapshots.
expect 0 "snapshot create" "$ctl" -d "$store" snapshot create s1
expect 1 "snapshot create twice" "$ctl" -d "$store" snapshot create s1
expect 0 "put after snapshot" "$ctl" -d "$store" put a/1 changed
expect 0 "snapshot list" "$ctl" -d "$store" snapshot list
grep -q "^s1	" "$tmp/out" || { echo "FAIL: snapshot list output"; cat "$tmp/out"; fails=$((fails + 1)); }
expect 2 "snapshot without a name" "$ctl" -d "$store" snapshot create
expect 0 "snapshot delete" "$ctl" -d "$store" snapshot delete s1
expect 1 "snapshot delete missing" "$ctl" -d "$store" snapshot delete s1
expect 0 "snapshot list empty" "$ctl" -d "$store" snapshot list
[ -s "$tmp/out" ] && { echo "FAIL: snapshot list after delete"; fails=$((fails + 1)); }

# Another process holds the store: one line naming its pid, exit 1.
(exec 9<"$store/LOCK"; flock 9; exec sleep 30) &   # one process holds the lock
holder=$!
sleep 0.3
expect 1 "busy store" "$ctl" -d "$store" get blob
grep -q "in use" "$tmp/err" || { echo "FAIL: busy message"; cat "$tmp/err"; fails=$((fails + 1)); }
expect 1 "busy store check" "$ctl" -d "$store" check
kill "$holder"; wait "$holder" 2>/dev/null; holder=""

# -c CONFIG names the store too.
printf 'data_dir: store\n' >"$tmp/config.yaml"
expect 0 "config" "$ctl" -c "$tmp/config.yaml" get a/1

# An orphan table (an interrupted flush leaves one) is not damage.
: >"$store/999999.sst"
expect 0 "check with an orphan table" "$ctl" -d "$store" check
grep -q "^orphan: 999999.sst" "$tmp/out" || { echo "FAIL: orphan report"; cat "$tmp/out"; fails=$((fails + 1)); }
rm -f "$store/999999.sst"

# Damage a table: check names it and exits 1.
table=$(ls -S "$store"/*.sst | head -n 1)
printf '\377' | dd of="$table" bs=1 seek=100 conv=notrunc 2>/dev/null
expect 1 "check damaged" "$ctl" -d "$store" check
grep -q "damaged: $(basename "$table")" "$tmp/out" || { echo "FAIL: check report"; cat "$tmp/out"; fails=$((fails + 1)); }

# Damage a value file (the 300 KB value's chunks are there; the 40 MB
# value's file went when it was emptied): check names it, and get of that
# value fails rather than give wrong bytes.
# (only files with chunks: an empty spare may be there too)
vfile=$(find "$tmp/bak" -name '*.val' -size +32c 2>/dev/null)
[ "$(echo "$vfile" | wc -l)" = 1 ] || { echo "FAIL: value files in the backup: $vfile"; fails=$((fails + 1)); }
vfile=$(echo "$vfile" | head -n 1)
if [ -z "$vfile" ]; then
    echo "FAIL: no value file in the backup"; fails=$((fails + 1))
else
    printf '\377' | dd of="$vfile" bs=1 seek=100000 conv=notrunc 2>/dev/null
    expect 1 "check damaged value file" "$ctl" -d "$tmp/bak" check
    grep -q "damaged: $(basename "$vfile"): 1 chunk unreadable, the first: checksum mismatch" "$tmp/out" ||
        { echo "FAIL: value file damage report"; cat "$tmp/out"; fails=$((fails + 1)); }
    expect 1 "get from a damaged value file" "$ctl" -d "$tmp/bak" get blob
    grep -q "checksum mismatch" "$tmp/err" || { echo "FAIL: value file get message"; fails=$((fails + 1)); }
fi

# A value file given back after its value was deleted is no damage, though
# the log and tables still hold the older pointers into it; the file of a
# value still there going missing is.
store3="$tmp/store3"
mkdir -p "$store3"
"$build/stash-demo" "$store3" >/dev/null || { echo "FAIL: demo store3"; fails=$((fails + 1)); }
head -c 3000000 /dev/urandom >"$tmp/big3"
if "$ctl" -d "$store3" put gone <"$tmp/big3" && "$ctl" -d "$store3" put kept <"$tmp/big3" &&
    "$ctl" -d "$store3" del gone; then
    expect 0 "check after a large value went" "$ctl" -d "$store3" check
    "$ctl" -d "$store3" del kept
    "$ctl" -d "$store3" put kept <"$tmp/big3"
    vf=$(ls -S "$store3"/*.val | head -n 1)
    rm -f "$vf"
    expect 1 "check with the value file of a value still there gone" "$ctl" -d "$store3" check
    grep -q "missing at offset" "$tmp/out" || { echo "FAIL: missing value file report"; cat "$tmp/out"; fails=$((fails + 1)); }
else
    echo "FAIL: put of a large value into store3"; fails=$((fails + 1))
fi

# A value file that only a named snapshot still reads, gone: damage, though
# the key holds a newer value.
store5="$tmp/store5"
mkdir -p "$store5"
"$build/stash-demo" "$store5" >/dev/null || { echo "FAIL: demo store5"; fails=$((fails + 1)); }
head -c 1000000 /dev/urandom >"$tmp/big5"
"$ctl" -d "$store5" put k <"$tmp/big5"
"$ctl" -d "$store5" snapshot create snap1
head -c 1000000 /dev/urandom >"$tmp/big5"
"$ctl" -d "$store5" put k <"$tmp/big5"
vf=$(ls "$store5"/*.val | head -n 1)   # the oldest: the snapshot's value
rm -f "$vf"
expect 1 "check with a snapshot's value file gone" "$ctl" -d "$store5" check
grep -q "$(basename "$vf"): .* missing" "$tmp/out" || { echo "FAIL: snapshot value file report"; cat "$tmp/out"; fails=$((fails + 1)); }

# Stores that would not open: check says so (it passed them as clean).
for what in current table swap; do
    s6="$tmp/store6$what"
    mkdir -p "$s6"
    "$build/stash-demo" "$s6" >/dev/null || { echo "FAIL: demo $s6"; fails=$((fails + 1)); }
    "$ctl" -d "$s6" compact >/dev/null
    t6=$(ls "$s6"/*.sst | head -n 1)
    case $what in
    current) rm -f "$s6/CURRENT" ;;
    table) rm -f "$t6" ;;
    swap) # another table of another size in its place
        "$ctl" -d "$s6" put extra "a value that makes the other store's table larger" &&
            mkdir -p "$tmp/other6" && "$build/stash-demo" "$tmp/other6" >/dev/null &&
            "$ctl" -d "$tmp/other6" put extra "a value that makes this table larger than the first" &&
            "$ctl" -d "$tmp/other6" compact >/dev/null &&
            cp "$(ls "$tmp"/other6/*.sst | head -n 1)" "$t6" ;;
    esac
    expect 1 "check of a store whose $what is broken" "$ctl" -d "$s6" check
    grep -q "^damaged: " "$tmp/out" || { echo "FAIL: check report ($what)"; cat "$tmp/out"; fails=$((fails + 1)); }
done

# The newest log's last record damaged: a torn write to the engine, dropped
# at the next open; check says so (not damage: it cannot be told apart).
store4="$tmp/store4"
mkdir -p "$store4"
"$build/stash-demo" "$store4" >/dev/null || { echo "FAIL: demo store4"; fails=$((fails + 1)); }
"$ctl" -d "$store4" put lastkey lastvalue
log=$(ls "$store4"/*.log | tail -n 1)
printf 'U' | dd of="$log" bs=1 seek=$(($(stat -c %s "$log") - 3)) conv=notrunc 2>/dev/null
expect 0 "check of a log with a torn last record" "$ctl" -d "$store4" check
grep -q "^note: $(basename "$log"): the .* bytes after offset .* are not a whole record" "$tmp/out" ||
    { echo "FAIL: torn tail note"; cat "$tmp/out"; fails=$((fails + 1)); }

[ "$fails" = 0 ] && echo "stashctl: all checks passed"
[ "$fails" = 0 ]
