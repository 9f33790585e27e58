#!/usr/bin/env bash
# Configures and builds torchclip into build/ (2 parallel jobs; ccache and the torch PCH are used
# when available). Extra arguments go to the CMake configure step, e.g. -DTORCHCLIP_SANITIZE=ON.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
elif [ $# -gt 0 ]; then
  cmake -S . -B build "$@" >/dev/null
fi
cmake --build build -j "${TORCHCLIP_JOBS:-2}"
