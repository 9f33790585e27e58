#!/usr/bin/env bash
# Load test of `torchclip serve` with and without batching of concurrent text queries, in one run
# on this machine: starts the server on a free port for each setting, runs `torchclip bench serve`
# against it, stops it with SIGTERM, and prints the throughput ratio. JSON per setting goes to
# OUT_DIR/serve-<setting>.json.
#
#   scripts/bench_serve.sh MODEL_DIR INDEX [--clients 8] [--seconds 10] [--out OUT_DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tc=build/tools/torchclip
[ $# -ge 2 ] || { echo "usage: $0 MODEL_DIR INDEX [--clients N] [--seconds S] [--out DIR]" >&2; exit 2; }
model=$1 index=$2
shift 2
clients=8 seconds=10 out=runs/bench-serve
while [ $# -gt 0 ]; do
  case $1 in
    --clients) clients=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "$0: unknown flag $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"

run_one() {  # NAME SERVE_FLAGS...
  local name=$1
  shift
  local log="$out/serve-$name.log"
  $tc serve --model "$model" --index "$index" --port 0 "$@" >"$log" 2>&1 &
  local pid=$!
  local port=""
  for _ in $(seq 1 600); do  # at most 60 s to load
    port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$log")
    [ -n "$port" ] && break
    kill -0 $pid 2>/dev/null || { echo "serve exited:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$port" ] || { kill -9 $pid; echo "serve did not listen within 60 s" >&2; exit 1; }
  $tc bench serve --url "http://127.0.0.1:$port" --clients "$clients" --seconds "$seconds" --json >"$out/serve-$name.json"
  kill -TERM $pid
  wait $pid
  echo "$name ($*): $(cat "$out/serve-$name.json")" >&2
}

run_one batched --batch-wait-ms 2
run_one unbatched --max-batch 1
python3 - "$out" <<'PY'
import json, sys
b = json.load(open(f"{sys.argv[1]}/serve-batched.json"))
u = json.load(open(f"{sys.argv[1]}/serve-unbatched.json"))
for name, r in (("batched (--batch-wait-ms 2)", b), ("one query per tower call (--max-batch 1)", u)):
    print(f"{name:42s} {r['qps']:8.1f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
          f"texts/call {r['text_batch_mean']:5.2f}  errors {r['errors']}  server RSS {r['server_rss_growth']*100:+.2f}%")
print(f"batching: {b['qps'] / u['qps']:.2f}x the requests per second")
PY
