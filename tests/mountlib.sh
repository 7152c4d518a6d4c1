# mountlib.sh - sourced by the mount tests: a scratch store and mountpoint,
# mounting stashfs in the foreground (so its pid is known), unmounting, and
# cleaning up in a trap so that a failed run leaves no mount behind and
# kills only the daemon it started.
#
# Sets: build fs ctl tmp store mnt pid fails.  The caller may set extra_cleanup.
set -u
build=${1:-build}
build=$(cd "$build" && pwd)
fs="$build/stashfs"
ctl="$build/stashctl"
if [ ! -e /dev/fuse ] || ! command -v fusermount3 >/dev/null 2>&1; then
    if [ "${STASH_SKIP_FUSE:-0}" = 1 ]; then echo "$(basename "$0"): skipped (STASH_SKIP_FUSE=1)"; exit 0; fi
    echo "FAIL: FUSE is not available here (no /dev/fuse or fusermount3); set STASH_SKIP_FUSE=1 to skip"
    exit 1
fi
tmp=$(mktemp -d)
store="$tmp/store"; mnt="$tmp/mnt"; mkdir -p "$mnt"
pid=""; extra_cleanup=""; fails=0

# Unmount (lazily when busy or dead) and wait for the daemon to close the
# store; kill it only if it hangs.
unmount() {
    if grep -q " $mnt fuse" /proc/mounts; then
        fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
    fi
    if [ -n "$pid" ]; then
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        pid=""
    fi
}
cleanup() {
    unmount
    [ -n "$extra_cleanup" ] && eval "$extra_cleanup"
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

# mount_fs [stashfs options]: mount $store at $mnt, wait until it is there.
mount_fs() {
    "$fs" -f "$@" "$store" "$mnt" 2>"$tmp/daemon.err" &
    pid=$!
    i=0
    until grep -q " $mnt fuse" /proc/mounts; do
        sleep 0.05; i=$((i + 1))
        if [ $i -gt 200 ] || ! kill -0 "$pid" 2>/dev/null; then
            echo "FAIL: stashfs did not mount"; cat "$tmp/daemon.err"; exit 1
        fi
    done
}
