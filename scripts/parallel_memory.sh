#!/bin/bash
# Figures of the parallel layouts from the records the trainer writes to metrics.jsonl (CPU,
# synthetic data, 1 thread per rank): the README's ZeRO, model-parallel and pipeline sections.
#   scripts/parallel_memory.sh zero     ViT-B-32, dist.shard none/optimizer/gradients at 2 and 4 ranks, batch 2
#   scripts/parallel_memory.sh towers   ViT-B-16 and RN50, one process against dist.towers: split, batch 4
#   scripts/parallel_memory.sh pipeline ViT-B-16, one process against 2 pipeline stages with 2 micro-batches, batch 4
#   scripts/parallel_memory.sh bubble   2 pipeline stages, M = 1, 2, 4, 8 micro-batches: the measured
#                                       idle share per stage against (S-1)/(M+S-1), batch 128, 8 steps
# The first two read the "memory" record of one step; bubble the "pipeline" record (steps after
# the first). Prints a line per run and writes $OUT_DIR/<mode>.jsonl (one record per run).
set -euo pipefail
mode=${1:?usage: scripts/parallel_memory.sh zero|towers}
B=$(realpath "${TORCHCLIP:-build/tools/torchclip}")
D=${OUT_DIR:-/tmp/parallel_memory}
mkdir -p "$D"
cd "$D"
results="${mode}.jsonl"
: > "$results"

# run NAME MODEL BATCH LABELS_JSON [train flags...]: STEPS steps (default 1), the printed line and
# the metrics record named by LINE and RECORD (default: the memory report).
run() {
  local name=$1 model=$2 batch=$3 labels=$4
  shift 4
  printf 'model: %s\ndata:\n  train: synthetic:1024\n  batch_size: %s\n  workers: 1\ntrain: {steps: %s, threads: 1}\n' \
    "$model" "$batch" "${STEPS:-1}" > "$name.yaml"
  rm -rf "out_$name"
  local start=$SECONDS
  "$B" train --config "$name.yaml" --out "out_$name" "$@" > "log_$name.txt" 2>&1
  echo "== $name ($((SECONDS - start)) s): $(grep "${LINE:-memory per rank}" "log_$name.txt")"
  grep "\"${RECORD:-memory}\"" "out_$name/metrics.jsonl" | sed "s/^{/{$labels, /" >> "$results"
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
  pipeline)
    for model in ${MODELS:-ViT-B-16}; do
      run "${model}_one" "$model" 4 "\"model\": \"$model\", \"layout\": \"one\""
      run "${model}_pipeline" "$model" 4 "\"model\": \"$model\", \"layout\": \"2 stages, 2 micro-batches\"" \
        --nproc 2 --set dist.pipeline_stages=2 --set dist.micro_batches=2
    done ;;
  bubble)
    # Two stages of two ViT blocks each (the stem on the first; the head, a one-layer text tower
    # and the loss on the last), so the stages' work is about equal, as the theory assumes.
    printf 'embed_dim: 64\nvision_cfg: {image_size: 64, patch_size: 8, layers: 4, width: 256, head_width: 64}\n' > bubble_model.yaml
    printf 'text_cfg: {context_length: 16, vocab_size: 49408, width: 64, heads: 2, layers: 1}\n' >> bubble_model.yaml
    for m in ${MICRO:-1 2 4 8}; do
      STEPS=8 LINE='pipeline bubble' RECORD=pipeline run "bubble_m$m" "$D/bubble_model.yaml" "${BATCH:-128}" "\"micro_batches\": $m" \
        --nproc 2 --set dist.pipeline_stages=2 --set dist.micro_batches="$m"
    done ;;
  *) echo "unknown mode '$mode'; valid: zero, towers, pipeline, bubble" >&2; exit 2 ;;
esac
echo "results: $D/$results"
