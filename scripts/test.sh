#!/usr/bin/env bash
# Sets up a fresh machine if needed, builds, and runs every test (labels: unit, golden, integration).
# Pass ctest arguments to narrow it, e.g. scripts/test.sh -L unit
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
scripts/build.sh
cd build
ctest -j2 --output-on-failure "$@"
