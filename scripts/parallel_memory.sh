#!/bin/bash
# Per-rank memory of the parallel layouts, from the "memory" record the trainer writes to
# metrics.jsonl after the first step (CPU, one step, synthetic data, 1 thread per rank): the
# figures of the README's ZeRO and model-parallel sections.
#   scripts/parallel_memory.sh zero     ViT-B-32, dist.shard none/optimizer/gradients at 2 and 4 ranks, batch 2
#   scripts/parallel_memory.sh towers   ViT-B-16 and RN50, one process against dist.towers: split, batch 4
# Prints a line per run and writes $OUT_DIR/<mode>_memory.jsonl (one record per run).
set -euo pipefail
mode=${1:?usage: scripts/parallel_memory.sh zero|towers}
B=$(realpath "${TORCHCLIP:-build/tools/torchclip}")
D=${OUT_DIR:-/tmp/parallel_memory}
mkdir -p "$D"
cd "$D"
results="${mode}_memory.jsonl"
: > "$results"

# run NAME MODEL BATCH LABELS_JSON [train flags...]: one step, its memory line and record.
run() {
  local name=$1 model=$2 batch=$3 labels=$4
  shift 4
  printf 'model: %s\ndata:\n  train: synthetic:64\n  batch_size: %s\n  workers: 1\ntrain: {steps: 1, threads: 1}\n' \
    "$model" "$batch" > "$name.yaml"
  rm -rf "out_$name"
  local start=$SECONDS
  "$B" train --config "$name.yaml" --out "out_$name" "$@" > "log_$name.txt" 2>&1
  echo "== $name ($((SECONDS - start)) s): $(grep 'memory per rank' "log_$name.txt")"
  grep '"memory"' "out_$name/metrics.jsonl" | sed "s/^{/{$labels, /" >> "$results"
  rm -rf "out_$name/checkpoints"
}

case $mode in
  zero)
    for n in ${RANKS:-2 4}; do
      for s in none optimizer gradients; do
        run "vitb32_${n}_$s" ViT-B-32 2 "\"ranks\": $n, \"shard\": \"$s\"" --nproc "$n" --set dist.shard="$s"
      done
    done ;;
  towers)
    for model in ${MODELS:-ViT-B-16 RN50}; do
      run "${model}_one" "$model" 4 "\"model\": \"$model\", \"layout\": \"one\""
      run "${model}_split" "$model" 4 "\"model\": \"$model\", \"layout\": \"split\"" --nproc 2 --set dist.towers=split
    done ;;
  *) echo "unknown mode '$mode'; valid: zero, towers" >&2; exit 2 ;;
esac
echo "results: $D/$results"
