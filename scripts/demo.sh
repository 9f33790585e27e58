#!/usr/bin/env bash
# The main job. Until the training issue lands, this is the end-to-end run of the model core:
# set up, build, describe the tiny and ViT-B-32 CLIPs, and benchmark a forward+backward training
# step of each with the CLIP loss, against this machine's matmul rate.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
scripts/build.sh
tc=build/tools/torchclip
mkdir -p build/results
$tc model info --config tiny
$tc bench model --config tiny --batch 32 --iters 10
$tc bench model --config ViT-B-32 --batch 8 --iters 3 --warmup 1
$tc bench model --config tiny --batch 32 --iters 10 --json >build/results/bench_tiny.json
echo "results: build/results/bench_tiny.json"
