#!/usr/bin/env bash
# Re-measure every model at MMRec's epoch count (peers.md) with 1 and 2 torch threads, keeping the
# faster; run it with nothing else on the machine. Then regenerate the results table.
#   bash benchmarks/speed_all.sh /tmp/baby-like
set -euo pipefail
data=${1:-/tmp/baby-like}
repeats=${REPEATS:-3}  # per thread count; the median run counts
cd "$(dirname "$0")/.."
unset OMP_NUM_THREADS MKL_NUM_THREADS
for m in lightgcn vbpr freedom bm3 mgcn lattice; do
    python benchmarks/run.py --data "$data" --model "$m" --epochs 5 --threads 1,2 --repeats "$repeats"
done
python benchmarks/run.py --data "$data" --model mmgcn --epochs 3 --threads 1,2
python benchmarks/table.py "$(basename "$data")"
