#!/usr/bin/env bash
# Configures and builds torchclip (2 parallel jobs; ccache is used when installed).
# Usage: scripts/build.sh [--dir DIR] [CMAKE ARGS...]   DIR defaults to build/; extra arguments go
# to the CMake configure step, e.g. -DTORCHCLIP_SANITIZE=ON or -DTORCHCLIP_CUDA=ON.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir=build
if [ "${1:-}" = "--dir" ]; then
  dir=$2
  shift 2
fi
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [ ! -f "$dir/CMakeCache.txt" ]; then
  cmake -S . -B "$dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
elif [ $# -gt 0 ]; then
  cmake -S . -B "$dir" "$@" >/dev/null
fi
cmake --build "$dir" -j "${TORCHCLIP_JOBS:-2}"
