#!/usr/bin/env bash
# Builds the unit tests with AddressSanitizer and UndefinedBehaviorSanitizer
# (-DTORCHCLIP_SANITIZE=ON) in build-asan/ and runs them; any sanitizer report fails the run.
# Usage: scripts/sanitize.sh [TARGET...]   (default: every executable of the `unit` label:
# unit_tests, data_tests, train_tests, dist_tests, hardening_tests, serve_tests; CI runs them all)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir=build-asan
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(unit_tests data_tests train_tests dist_tests hardening_tests serve_tests)
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [ ! -f "$dir/CMakeCache.txt" ]; then
  # -O1: the sanitizers' own advice (fast enough to run, frames still readable), and quicker to
  # compile than -O2 on two cores.
  cmake -S . -B "$dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Sanitize -DCMAKE_CXX_FLAGS_SANITIZE="-O1 -g1" \
    -DTORCHCLIP_SANITIZE=ON >/dev/null
fi
build_args=()
for t in "${targets[@]}"; do build_args+=(--target "$t"); done
cmake --build "$dir" -j "${TORCHCLIP_JOBS:-2}" "${build_args[@]}"
# halt_on_error: the first report fails the test; UBSan prints the stack of each report.
# detect_leaks=0: LibTorch's process-lifetime registries (operators, allocators, thread pools)
# are never freed by design and are not ours to report; use-after-free, overflows and UB are.
# handle_sigbus=0: a SIGBUS the search guard does not own must end the process by SIGBUS, as
# without the sanitizer (hardening_tests checks it with a death test).
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=0:abort_on_error=0:handle_sigbus=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS:-}"
for t in "${targets[@]}"; do
  echo "sanitize: running $dir/tests/$t under ASan+UBSan"
  "$dir/tests/$t" --gtest_brief=1
done
