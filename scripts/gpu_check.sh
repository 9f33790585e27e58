#!/usr/bin/env bash
# The GPU check, one command on a CUDA machine (the device tool's H200), about 8 minutes:
#   1. builds torchclip against THAT machine's torch (python3 -c 'import torch; print(
#      torch.utils.cmake_prefix_path)'), with TORCHCLIP_CUDA=ON and TORCHCLIP_OPENCV=OFF (no
#      OpenCV there), its small dependencies from .gpu/ (scripts/gpu_prepare.sh, run beforehand);
#   2. runs the CUDA tests (ctest -L cuda) and the unit tests on the GPU build;
#   3. bench train, bf16, batch 256: ViT-B-32 and ViT-B-16 against open_clip eager and with
#      torch.compile, in one run each (the ratio is what counts);
#   4. bench model for the model FLOPs utilisation against the measured bf16 matmul rate;
#   5. a short `train` on CUDA from synthetic decoded images (no decoder in this build);
# and writes everything under $OUT: gpu.json (the figures), logs, nvidia-smi.txt.
# Usage (device tool): run(command="bash scripts/gpu_check.sh", carry=[".gpu"], timeout_s=540)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/torchclip-gpu-out}
mkdir -p "$OUT"
START=$(date +%s)
log() { echo "[gpu_check $(( $(date +%s) - START ))s] $*" | tee -a "$OUT/gpu_check.log"; }
DEPS=/tmp/torchclip-deps
ARCH=x86_64-linux-gnu

log "unpacking carried packages"
[ -d .gpu/deb ] || { echo "no .gpu/: run scripts/gpu_prepare.sh here first and carry .gpu" >&2; exit 2; }
mkdir -p "$DEPS"
for f in .gpu/deb/*.deb; do dpkg -x "$f" "$DEPS"; done
rm -f "$DEPS/usr/lib/$ARCH/libz.so"  # points at Debian's absolute runtime path; the machine's own libz is linked
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
  && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export LD_LIBRARY_PATH=$DEPS/usr/lib/$ARCH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -c 'import torch, open_clip; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0), "open_clip", open_clip.__version__)' \
  | tee -a "$OUT/gpu_check.log"

log "configure + build (CUDA, no OpenCV)"
# zlib1g-dev's libz.so points at the Debian runtime's absolute path: link the machine's own.
ZLIB_SO=$(ls /usr/lib/$ARCH/libz.so.1 /lib/$ARCH/libz.so.1 2>/dev/null | head -1)
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DTORCHCLIP_CUDA=ON -DTORCHCLIP_OPENCV=OFF \
  -DCMAKE_PREFIX_PATH="$DEPS/usr" -DSENTENCEPIECE_ROOT="$DEPS/usr" -DGLOO_INCLUDE_DIR="$DEPS/usr/include" \
  -DZLIB_INCLUDE_DIR="$DEPS/usr/include" -DZLIB_LIBRARY="$ZLIB_SO" > "$OUT/configure.log" 2>&1 || { log "configure FAILED"; tail -40 "$OUT/configure.log"; exit 1; }
cmake --build build-gpu -j "$(nproc)" --target torchclip unit_tests cuda_tests > "$OUT/build.log" 2>&1 \
  || { log "build FAILED"; grep -m20 -B2 -A8 'error' "$OUT/build.log"; exit 1; }
log "built"
TC=build-gpu/tools/torchclip

log "ctest -L cuda"
(cd build-gpu && ctest -L cuda --output-on-failure --timeout 240) > "$OUT/ctest_cuda.log" 2>&1; CTEST_CUDA=$?
tail -5 "$OUT/ctest_cuda.log" | tee -a "$OUT/gpu_check.log"
build-gpu/tests/unit_tests --gtest_brief=1 > "$OUT/unit_tests.log" 2>&1; UNIT=$?
tail -3 "$OUT/unit_tests.log" | tee -a "$OUT/gpu_check.log"

for cfg in ViT-B-32 ViT-B-16; do
  for mode in eager compile; do  # 4 runs of about a minute each
    flag=""; [ "$mode" = compile ] && flag="--openclip-compile"
    log "bench train $cfg bf16 b256 ($mode open_clip)"
    timeout 110 $TC bench train --config $cfg --batch 256 --iters 10 --warmup 3 --precision bf16 --device cuda $flag --json \
      > "$OUT/bench_train_${cfg}_${mode}.json" 2> "$OUT/bench_train_${cfg}_${mode}.err"
    tail -c 300 "$OUT/bench_train_${cfg}_${mode}.json" | tee -a "$OUT/gpu_check.log"
  done
done
log "bench model ViT-B-32 bf16 b256 (MFU)"
timeout 90 $TC bench model --config ViT-B-32 --batch 256 --iters 20 --warmup 5 --precision bf16 --device cuda --json \
  > "$OUT/bench_model_ViT-B-32.json" 2> "$OUT/bench_model.err"

log "train 60 steps on CUDA from synthetic decoded images"
timeout 120 $TC train --config configs/train/fashion-mnist-tiny.yaml --out /tmp/gpu-run \
  --set data.train=synthetic:8192:256x256 --set 'data.val=""' --set model=ViT-B-32 --set data.batch_size=256 \
  --set data.workers=14 --set train.steps=60 --set train.device=cuda --set train.precision=bf16 \
  --set train.epochs=0 --set train.checkpoint_every=0 --set train.log_every=10 > "$OUT/train.log" 2>&1; TRAIN=$?
cp /tmp/gpu-run/metrics.jsonl "$OUT/train_metrics.jsonl" 2>/dev/null

log "summary"
OUTDIR="$OUT" CTEST_CUDA=$CTEST_CUDA UNIT=$UNIT TRAIN=$TRAIN python3 - <<'PY' | tee -a "$OUT/gpu_check.log"
import glob, json, os
out = os.environ["OUTDIR"]
res = {"ctest_cuda_rc": int(os.environ["CTEST_CUDA"]), "unit_tests_rc": int(os.environ["UNIT"]),
       "train_rc": int(os.environ["TRAIN"])}
for f in sorted(glob.glob(f"{out}/bench_*.json")):
    try:
        res[os.path.basename(f)[:-5]] = json.loads(open(f).read().strip().splitlines()[-1])
    except Exception as e:
        res[os.path.basename(f)[:-5]] = {"error": str(e)}
try:
    lines = [json.loads(l) for l in open(f"{out}/train_metrics.jsonl") if '"loss"' in l and '"eval"' not in l]
    res["train_last"] = lines[-1] if lines else None
except Exception as e:
    res["train_last"] = {"error": str(e)}
json.dump(res, open(f"{out}/gpu.json", "w"), indent=1)
for k, v in res.items():
    if isinstance(v, dict) and "ratio" in v:
        print(f"{k}: torchclip/open_clip {v['ratio']:.3f}")
    elif isinstance(v, dict) and "utilisation" in v:
        print(f"{k}: model FLOPs utilisation {100 * v['utilisation']:.1f}% of the measured bf16 matmul rate")
print({k: v for k, v in res.items() if k.endswith("_rc")})
PY
log "done"
