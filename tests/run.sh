#!/bin/sh
# Runs every test program in BUILD (plain, then the sanitizer builds, then the
# crash test and the mount tests) and ends with one summary line.
build=${1:-build}
pass=0; fail=0; failed=""
run() {
    name=$1; shift
    echo "=== $name"
    if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); failed="$failed $name"; fi
}
# A test program that hangs fails after TEST_TIMEOUT seconds (default 600)
# instead of holding up the run.
limit() {
    timeout -k 10 "${TEST_TIMEOUT:-600}" "$@"
    rc=$?
    [ $rc = 124 ] && echo "(killed after ${TEST_TIMEOUT:-600} s: it hung)"
    return $rc
}
for t in "$build"/test_*; do
    [ -x "$t" ] && run "$(basename "$t")" limit "$t"
done
for t in "$build"/asan/test_*; do
    [ -x "$t" ] && run "asan/$(basename "$t")" limit env ASAN_OPTIONS=detect_leaks=1 "$t"
done
for t in "$build"/tsan/test_*; do
    # test_file's renames and batches hold up to all 64 key stripes at once,
    # more locks than ThreadSanitizer's deadlock detector can track.
    opts=""
    [ "$(basename "$t")" = test_file ] && opts="detect_deadlocks=0"
    [ -x "$t" ] && run "tsan/$(basename "$t")" limit env TSAN_OPTIONS="$opts" "$t"
done
if [ -x "$build/crashtest" ]; then
    run crashtest limit "$build/crashtest" --rounds "${CRASH_ROUNDS:-60}"
fi
for t in tests/it_*.sh; do
    [ -f "$t" ] && run "$(basename "$t")" sh "$t" "$build"
done
[ -n "$failed" ] && echo "failed:$failed"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
