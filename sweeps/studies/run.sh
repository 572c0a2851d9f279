#!/usr/bin/env bash
# Run a study list (sweeps/studies/*.txt) trial by trial with `creditbench train`, resumably.
# usage: sweeps/studies/run.sh sweeps/studies/rfl-issue10.txt [results/studies/rfl-issue10]
# Each trial runs single-threaded (OMP_NUM_THREADS=1, as inside a sweep) so numbers are reproducible.
# A list may set the network and the epochs on a line '#% NETWORK EPOCHS' (default mlp-5x256-tanh 10).
# SHARD=k/N runs only every N-th trial from the k-th (0-based), so N runners share a list on N cores:
#   SHARD=0/2 sweeps/studies/run.sh LIST & SHARD=1/2 sweeps/studies/run.sh LIST &
set -uo pipefail
list=$1
out=${2:-results/studies/$(basename "$list" .txt)}
bin=${CREDITBENCH:-.venv/bin/creditbench}
mkdir -p "$out"
read -r network epochs < <(sed -n 's/^#% //p' "$list" | head -1)
network=${network:-mlp-5x256-tanh}
epochs=${epochs:-10}
shard=${SHARD:-0/1}
k=${shard%/*}
n=${shard#*/}
i=-1
grep -v '^#' "$list" | while read -r name algo seed sets; do
  [ -z "$name" ] && continue
  i=$((i + 1))
  [ $((i % n)) -ne "$k" ] && continue
  if [ -f "$out/$name/summary.json" ]; then echo "done: $name"; continue; fi
  args=()
  for kv in $sets; do args+=(--set "$kv"); done
  echo "run: $name"
  OMP_NUM_THREADS=1 "$bin" train --algo "$algo" --dataset fashion-mnist --network "$network" --epochs "$epochs" \
    --seed "$seed" --out "$out/$name" "${args[@]}" > "$out/$name.log" 2>&1 || echo "failed: $name (see $out/$name.log)"
done
