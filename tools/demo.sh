#!/bin/sh
# make run: the demo store in ./data.
build=${1:-build}
"$build/stash-demo" ./data || exit 1
echo
echo "The store lives in ./data; run 'make run' again to see it grow, 'rm -rf data' to start over."
