#!/usr/bin/env bash
# Run HERE (a machine that reaches Debian and PyPI) before scripts/gpu_check.sh: fetches what the
# GPU machine lacks into .gpu/ (git-ignored, about 5 MB), which the device call carries.
#   .gpu/deb  yaml-cpp, SentencePiece, GoogleTest, gloo headers, zlib headers (Debian 12 .debs,
#             unpacked there with dpkg -x, outside /)
#   .gpu/whl  open_clip and ftfy (+ wcwidth) for the side-by-side benchmark; the GPU image has
#             torch, timm, regex, huggingface_hub, safetensors and pyyaml already
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/versions.env
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/deb .gpu/whl
(cd .gpu/deb && apt-get download libyaml-cpp-dev libyaml-cpp0.7 libsentencepiece-dev libsentencepiece0 libgtest-dev \
   libgloo-dev zlib1g-dev)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
  "open_clip_torch==${OPEN_CLIP_VERSION}" "ftfy==${FTFY_VERSION}" wcwidth
du -sh .gpu
ls .gpu/deb .gpu/whl
