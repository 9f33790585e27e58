#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz, -DTORCHCLIP_FUZZ=ON with clang) in build-fuzz/ and
# runs each for SECONDS on a fresh copy of its seed corpus (tests/fuzz/corpus/NAME).
# Usage: scripts/fuzz.sh SECONDS [NAMES...]   NAMES: safetensors tar pack csv config bpe (default: all)
# Writes build-fuzz/fuzz.json (per harness: execs/s, libFuzzer's final cov: and ft:, crashes) and
# the logs in build-fuzz/logs/; a crash, sanitizer report, timeout or out-of-memory input is saved
# in build-fuzz/crashes/ and makes the script exit 1. TORCHCLIP_JOBS sets the build's parallel
# jobs (2), TORCHCLIP_FUZZ_CXX the compiler (clang++); TORCHCLIP_FUZZ_STRICT=1 makes an exception
# of a type a reader does not document a finding too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ]; then
  echo "usage: scripts/fuzz.sh SECONDS [NAMES...]  (NAMES: safetensors tar pack csv config bpe)" >&2
  exit 2
fi
seconds=$1
shift
dir=build-fuzz
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  names=()
  for d in tests/fuzz/corpus/*/; do names+=("$(basename "$d")"); done
fi

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [ ! -f "$dir/CMakeCache.txt" ]; then
  cmake -S . -B "$dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_COMPILER="${TORCHCLIP_FUZZ_CXX:-clang++}" \
    -DTORCHCLIP_FUZZ=ON -DTORCHCLIP_BUILD_TESTS=OFF >/dev/null
fi
targets=()
for n in "${names[@]}"; do targets+=(--target "fuzz_$n"); done
cmake --build "$dir" -j "${TORCHCLIP_JOBS:-2}" "${targets[@]}"

mkdir -p "$dir/logs" "$dir/crashes"
failed=0
results=()
for n in "${names[@]}"; do
  corpus="$dir/corpus/$n"
  rm -rf "$corpus"
  mkdir -p "$corpus"
  cp tests/fuzz/corpus/"$n"/* "$corpus"/
  log="$dir/logs/$n.log"
  rm -f "$dir/crashes/$n-"*
  rc=0
  "$dir/tests/fuzz/fuzz_$n" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$dir/crashes/$n-" "$corpus" </dev/null >"$log" 2>&1 &
  pid=$!
  wait "$pid" || rc=$?
  rm -f /dev/shm/torchclip_fuzz_"$pid".* "${TMPDIR:-/tmp}"/torchclip_fuzz_"$pid".*  # the harness's input files
  [ "$rc" -ne 0 ] && failed=1
  results+=("$n" "$rc" "$log")
done

python3 - "$dir/fuzz.json" "$dir/crashes" "${results[@]}" <<'PY'
import json, pathlib, re, sys
out, crashes = sys.argv[1], pathlib.Path(sys.argv[2])
rows = []
args = sys.argv[3:]
for name, rc, log in zip(args[0::3], args[1::3], args[2::3]):
    text = pathlib.Path(log).read_text(errors="replace")
    cov = re.findall(r"cov: (\d+) ft: (\d+)", text)
    stat = dict(re.findall(r"^stat::(\w+):\s*(\d+)", text, re.M))
    saved = sorted(str(p) for p in crashes.glob(f"{name}-*"))
    rows.append({
        "harness": name,
        "exit_code": int(rc),
        "execs": int(stat.get("number_of_executed_units", 0)),
        "execs_per_second": int(stat.get("average_exec_per_sec", 0)),
        "cov": int(cov[-1][0]) if cov else 0,
        "ft": int(cov[-1][1]) if cov else 0,
        "corpus_added": int(stat.get("new_units_added", 0)),
        "peak_rss_mb": int(stat.get("peak_rss_mb", 0)),
        "crashed": int(rc) != 0,
        "crash_inputs": saved,
        "log": log,
    })
    r = rows[-1]
    verdict = "CRASH " + " ".join(saved) if r["crashed"] else "ok"
    print(f"{name:12} {r['execs_per_second']:>7} exec/s  cov {r['cov']:>6}  ft {r['ft']:>7}  "
          f"execs {r['execs']:>9}  {verdict}")
pathlib.Path(out).write_text(json.dumps(rows, indent=2) + "\n")
PY
echo "summary: $dir/fuzz.json"
exit $failed
