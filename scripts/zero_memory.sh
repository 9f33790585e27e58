#!/bin/bash
# Per-rank memory of ViT-B-32 under dist.shard none / optimizer / gradients at 2 and 4 ranks (CPU,
# one step, batch 2 per rank, synthetic data): the figures of the README's ZeRO section.
# Prints a line per run and writes $OUT_DIR/zero_memory.jsonl (one record per run, taken from
# the "memory" record the trainer writes to metrics.jsonl after the first step).
set -euo pipefail
B=$(realpath "${TORCHCLIP:-build/tools/torchclip}")
D=${OUT_DIR:-/tmp/zero_memory}
mkdir -p "$D"
cd "$D"
printf 'model: ViT-B-32\ndata:\n  train: synthetic:64\n  batch_size: 2\n  workers: 1\ntrain: {steps: 1, threads: 1}\n' > vitb32.yaml
: > zero_memory.jsonl
for n in ${RANKS:-2 4}; do
  for s in none optimizer gradients; do
    rm -rf "out_${n}_$s"
    start=$SECONDS
    "$B" train --config vitb32.yaml --out "out_${n}_$s" --nproc "$n" --set dist.shard="$s" > "log_${n}_$s.txt" 2>&1
    echo "== $n ranks, shard $s ($((SECONDS - start)) s): $(grep 'memory per rank' "log_${n}_$s.txt")"
    grep '"memory"' "out_${n}_$s/metrics.jsonl" | sed "s/^{/{\"ranks\": $n, \"shard\": \"$s\", /" >> zero_memory.jsonl
    rm -rf "out_${n}_$s/checkpoints"
  done
done
echo "results: $D/zero_memory.jsonl"
