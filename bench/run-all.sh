#!/bin/sh
# Runs every scenario in turn, each bounded by its own script:
#   bench/run-all.sh [--quick] [--peers nchan,pushpin|none]
# Needs a build (BUILD=dir, default build/) with sluice and bench/sluice-bench.
# Tables go to stdout, progress to stderr, JSON to bench/results/.
set -eu
here=$(dirname "$0")
for s in idle fanout saturation subjects churn jetstream; do
    echo "== $s $*"
    python3 "$here/$s.py" "$@"
    echo
done
