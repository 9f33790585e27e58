#!/usr/bin/env bash
# Reproduces the cases of issue 18 that the unit tests cover below the command line, as commands
# a user would run, and judges each against the fixed behaviour: exit code and message.
#   scripts/hardening_repro.sh [BINARY] [OUT.jsonl]
# BINARY defaults to build/tools/torchclip. Run it with an older build to see which cases that
# build gets wrong (every case passes on a build that has the fixes). One JSON line per case goes
# to OUT.jsonl (default: hardening_repro.jsonl in the work folder, which is printed).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$(realpath "${1:-$root/build/tools/torchclip}")
work=$(mktemp -d /tmp/torchclip_repro.XXXXXX)
out=${2:-$work/hardening_repro.jsonl}
cd "$work" || exit 1
python3 "$root/scripts/hardening_fixtures.py" "$work" || exit 1

pass=0
fail=0
# case NAME EXPECTED_CODES MUST_MATCH MUST_NOT_MATCH COMMAND...
# EXPECTED_CODES is a regex over the exit code (e.g. '^0$', '^[123]$'); the patterns are
# extended regexes over stdout+stderr ('' to skip).
case_() {
  local name=$1 codes=$2 want=$3 unwanted=$4
  shift 4
  local log="$work/$name.log" rc
  timeout 120 bash -c "$*" >"$log" 2>&1
  rc=$?
  local ok=1 why=""
  [[ $rc =~ $codes ]] || { ok=0; why="exit $rc, expected $codes"; }
  if [ -n "$want" ] && ! grep -Eq -- "$want" "$log"; then ok=0; why="${why:+$why; }no '$want'"; fi
  if [ -n "$unwanted" ] && grep -Eq -- "$unwanted" "$log"; then ok=0; why="${why:+$why; }has '$unwanted'"; fi
  local first
  first=$(grep -v -E '^(check|train|embed|index) \[|img/s|step/s' "$log" | head -1 | cut -c1-150)
  if [ $ok = 1 ]; then pass=$((pass + 1)); verdict=fixed; else fail=$((fail + 1)); verdict=DEFECT; fi
  printf '%-28s exit %-3s %-6s %s\n' "$name" "$rc" "$verdict" "${why:-$first}"
  python3 -c 'import json,sys; print(json.dumps({"case": sys.argv[1], "exit": int(sys.argv[2]), "verdict": sys.argv[3], "why": sys.argv[4], "first_line": sys.argv[5]}))' \
    "$name" "$rc" "$verdict" "$why" "$first" >>"$out"
}

tc="$bin"
# --- data sources -------------------------------------------------------------------------------
case_ csv_byte_order_mark '^0$' 'usable samples +2' '' "$tc data check --data bom.csv"
case_ csv_tab_separated '^0$' 'tab-separated' '' "$tc data check --data tabs.csv"
case_ csv_malformed_quote '^0$' 'csv_malformed +1' '' "$tc data check --data quote.csv"
case_ bmp_images '^0$' 'usable samples +2' 'not_an_image' "$tc data check --data bmps"
case_ folder_named_tar '^0$' 'image folder' 'tar_truncated' "$tc data check --data folder.tar"
case_ shard_empty_caption_key '^0$' 'empty_caption +1' '' "$tc data check --data shard-0.tar"

# --- configs --------------------------------------------------------------------------------------
cat >base.yaml <<'YAML'
model: tiny
data: {train: synthetic:8, batch_size: 4, workers: 1}
train: {steps: 1, threads: 1}
YAML
printf 'model: tiny\ndata: {train: synthetic:8, batch_size: 4, workers: 1}\ntrain: {steps: 1, threads: 1}\ntrain: {steps: 2}\n' >dup.yaml
case_ yaml_duplicate_key '^3$' 'dup.yaml:4' '' "$tc train --config dup.yaml --out r_dup"
case_ yaml_octal_integer '^0$' 'batch_size: 16' 'batch_size: 14' "$tc train --config base.yaml --out r_octal --set data.batch_size=016 --set data.train=synthetic:32"
case_ negative_min_lr '^3$' 'schedule.min_lr' '' "$tc train --config base.yaml --out r_minlr --set schedule.min_lr=-1"
case_ nan_learning_rate '^3$' 'optim.lr' '' "$tc train --config base.yaml --out r_lr --set optim.lr=.nan"
case_ max_failures_zero '^3$' 'max_consecutive_failures' '' "$tc train --config base.yaml --out r_mcf --set data.max_consecutive_failures=0"
printf 'model: /etc/passwd\ndata: {train: synthetic:8, batch_size: 4}\n' >passwd.yaml
case_ config_path_not_echoed '^3$' '/etc/passwd' 'daemon:' "$tc train --config passwd.yaml --out r_pw"
case_ batch_never_forms '^[123]$' 'batch' '' "timeout 60 $tc train --config base.yaml --out r_nobatch --set data.train=synthetic:3"

# --- weights and model folders --------------------------------------------------------------------
case_ safetensors_absurd_shape '^[123]$' 'absurd.safetensors.*visual.proj' 'SymInt|stoul' \
  "$tc convert --openclip-config ViT-B-32 --weights absurd.safetensors --out m_absurd"
# A model folder: a training checkpoint of the tiny model.
"$tc" train --config base.yaml --out run >/dev/null 2>&1
model=$(ls -d "$work"/run/checkpoints/step-* 2>/dev/null | tail -1)
if [ -z "$model" ]; then
  echo "could not train the tiny model for the model cases; see $work"
  exit 1
fi
python3 - "$model" <<'PY'
import json, os, shutil, struct, sys
src = sys.argv[1]
def edit(dst, change):
    shutil.copytree(src, dst)
    path = os.path.join(dst, 'model.safetensors')
    raw = open(path, 'rb').read()
    n = struct.unpack('<Q', raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    body = bytearray(raw[8 + n:])
    change(header, body)
    new = json.dumps(header, separators=(',', ':')).encode()
    new += b' ' * (n - len(new)) if len(new) <= n else b''
    assert len(new) == n, 'header grew'
    open(path, 'wb').write(raw[:8] + new + bytes(body))
def as_i32(header, body):  # same bytes, integer dtype
    header['logit_scale']['dtype'] = 'I32'
def nan(header, body):      # the temperature becomes NaN
    s, e = header['logit_scale']['data_offsets']
    body[s:e] = struct.pack('<f', float('nan'))
edit(os.path.join(os.path.dirname(src), 'm_i32'), as_i32)
edit(os.path.join(os.path.dirname(src), 'm_nan'), nan)
# Same weights, another activation: embeddings change, so must the fingerprint.
other = os.path.join(os.path.dirname(src), 'm_quick')
shutil.copytree(src, other)
cfg = os.path.join(other, 'config.yaml')
text = open(cfg).read()
open(cfg, 'w').write(text.replace('quick_gelu: false', 'quick_gelu: true'))
# A folder without config.yaml.
bare = os.path.join(os.path.dirname(src), 'm_noconfig')
shutil.copytree(src, bare)
os.remove(os.path.join(bare, 'config.yaml'))
PY
ck=$(dirname "$model")
case_ weights_mistyped '^[123]$' 'logit_scale' '' "$tc zeroshot --model $ck/m_i32 --classes red,blue --images a.png --json"
case_ weights_non_finite '^[123]$' 'logit_scale' '"prob": -?nan' "$tc zeroshot --model $ck/m_nan --classes red,blue --images a.png --json"
case_ model_without_config '^[123]$' 'config.yaml' 'neither a file nor a known name' "$tc zeroshot --model $ck/m_noconfig --classes red,blue --images a.png"
"$tc" index --model "$model" --images a.png b.png --out lib.idx >/dev/null 2>&1
case_ fingerprint_covers_config '^[123]$' 'built by model' '' "$tc search --index lib.idx --model $ck/m_quick --query red"
case_ resume_missing_folder '^[123]$' 'nowhere' 'no MANIFEST' "$tc train --config base.yaml --out r_resume --resume $work/nowhere"

# --- files changed or filled under a running command ------------------------------------------------
case_ index_truncated_under_search '^[123]$' 'lib2.idx' 'Bus error|core dumped' \
  "cp lib.idx lib2.idx; (sleep 3; echo red) | $tc search --index lib2.idx --model $model & sleep 1.5; : > lib2.idx; wait \$!"
# A full disk (a file-size limit; SIGXFSZ ignored, so writes fail with EFBIG as on a full disk):
# a clear error, no temporaries left, and the run resumes once there is room.
case_ full_disk_then_resume '^0$' 'File too large' '' \
  "(trap '' XFSZ; ulimit -f 200; $tc train --config base.yaml --out r_full --set train.steps=2); \
   test -z \"\$(find r_full -name '*.tmp*')\" && $tc train --config base.yaml --out r_full --set train.steps=2 --resume auto"

echo "$pass fixed, $fail defects (logs in $work; results in $out)"
[ $fail = 0 ]
