#!/usr/bin/env bash
# A TORCHCLIP_OPENCV=OFF build end to end on the CPU: links no OpenCV, refuses image files naming
# the option, and trains from synthetic decoded images (the path tensor files take) on the CPU.
# Usage: scripts/check_no_opencv.sh BUILD/tools/torchclip
set -euo pipefail
tc=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
if ldd "$tc" | grep -q opencv; then echo "check_no_opencv: $tc links OpenCV" >&2; exit 1; fi
"$tc" model info --config tiny >/dev/null
printf 'filepath,title\na.png,a caption\n' > "$dir/d.csv"
if "$tc" data check --data "$dir/d.csv" > "$dir/err.txt" 2>&1 || ! grep -q TORCHCLIP_OPENCV=OFF "$dir/err.txt"; then
  echo "check_no_opencv: a CSV of images was not refused naming the option:" >&2; cat "$dir/err.txt" >&2; exit 1
fi
cat > "$dir/m.yaml" <<'YAML'
embed_dim: 16
vision_cfg: {image_size: 16, patch_size: 8, layers: 1, width: 32, head_width: 16}
text_cfg: {context_length: 16, width: 32, heads: 2, layers: 1}
YAML
cat > "$dir/t.yaml" <<YAML
model: $dir/m.yaml
data: {train: "synthetic:64:24x24", batch_size: 16, workers: 2, normalize: device}
train: {steps: 3, threads: 1, checkpoint_every: 0}
YAML
"$tc" train --config "$dir/t.yaml" --out "$dir/run" > "$dir/train.log" 2>&1 \
  || { cat "$dir/train.log" >&2; exit 1; }
grep -q '"step": 3' "$dir/run/metrics.jsonl"
echo "check_no_opencv: no OpenCV linked, image files refused naming TORCHCLIP_OPENCV, synthetic training ran 3 steps"
