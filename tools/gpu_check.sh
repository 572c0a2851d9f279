#!/usr/bin/env bash
# tools/gpu_check.sh: one prepared run of the harness on a lent GPU machine (Python 3.12 at python3, torch 2.11,
# numpy/pandas/scipy/scikit-learn/matplotlib; no pydantic, no ray, no network). It prints the machine, installs the
# carried wheels, then, within a budget of BUDGET_S seconds (default 390; each step gets at most what is left, in
# this order): the host-sync check of every algorithm (tools/gpu_sync_check.py), `creditbench bench` of every
# algorithm on digits (mlp-2x128-tanh, with --profile when the bench has it), a 2-epoch rfl trial and its resume,
# bp alone on Fashion-MNIST mlp-3x1024-tanh batch 256, and every algorithm on Fashion-MNIST mlp-5x256-tanh batch 128.
# Files under $OUT (8 at most, all of them come back): gpu_check.log (everything, progress lines included),
# sync_check.txt, bench_digits.json/.txt, train_rfl.txt, train_rfl_summary.json, bench_fmnist.json/.txt.
#
# Prepare in the checkout (nothing of it is committed; ray is not needed by bench or train; versions of constraints.txt;
# pydantic 2.14 needs typing-extensions>=4.16, newer than torch's may be; torchvision 0.26 is torch 2.11's, used only
# where the machine has no importable torchvision):
#   mkdir -p .git/info; echo /.whl/ >> .git/info/exclude; echo /data/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl/optional torchvision==0.26.0
#   mkdir -p data/FashionMNIST/raw && cp /usr/share/datasets/fashion-mnist/*.gz data/FashionMNIST/raw/
#   du -ch .whl data        # about 40 MiB; the carry and the working tree travel together (64 MiB at most)
# Call through the device tool, once:
#   run(command="bash tools/gpu_check.sh", carry=[".whl", "data"], timeout_s=480)
# Dry run here (no GPU; the cp312 wheels are left out under the venv's Python 3.11, which has its own packages):
#   DEVICE=cpu PY=.venv/bin/python OUT=/tmp/gpu_dry UPDATES=10 ROUNDS=1 BUDGET_S=3000 bash tools/gpu_check.sh
# Knobs: PY, OUT, DEVICE, UPDATES (100), ROUNDS (2), BUDGET_S (390), TORCHVISION (auto | wheel: how the
# Fashion-MNIST loader's `import torchvision` is met; auto: the machine's, else the carried wheel).
set -euo pipefail

PY=${PY:-python3}
OUT=${OUT:-/tmp/gpu_check_out}
DEVICE=${DEVICE:-cuda}
UPDATES=${UPDATES:-100}
ROUNDS=${ROUNDS:-2}
BUDGET_S=${BUDGET_S:-390}
TORCHVISION=${TORCHVISION:-auto}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PYTHONUNBUFFERED=1
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "$OUT"
T0=$SECONDS
FAILED=()
SKIPPED=()
RC=0

step() {  # step NAME CAP_S STDOUT_FILE|- CMD...: CMD under min(CAP_S, budget left), its status in RC; a failure
  # never stops the run
  local name=$1 cap=$2 out=$3 left t rc=0 start=$SECONDS
  shift 3
  left=$((BUDGET_S - (SECONDS - T0)))
  if ((left < 20)); then
    echo "=== $name: SKIPPED (budget of ${BUDGET_S}s spent)"
    SKIPPED+=("$name")
    RC=skipped
    return 0
  fi
  t=$((cap < left ? cap : left))
  echo "=== $name (limit ${t}s): $*"
  if [[ $out == - ]]; then timeout -k 10 "$t" "$@" || rc=$?; else timeout -k 10 "$t" "$@" >"$out" || rc=$?; fi
  echo "=== $name: rc=$rc in $((SECONDS - start))s$([[ $rc == 124 || $rc == 137 ]] && echo ' (TIMED OUT)')"
  ((rc == 0)) || FAILED+=("$name(rc=$rc)")
  RC=$rc
  return 0
}

table() {  # table BENCH_JSON: the bench's table from its --json output (the bench is not run twice)
  if [[ ! -s $1 ]]; then echo "(no bench result in $1: the step failed or ran out of time)"; return 1; fi
  "$PY" - "$1" <<'EOF'
import json, math, sys
from harness import bench
nan = lambda o: ({k: nan(v) for k, v in o.items()} if isinstance(o, dict) else [nan(v) for v in o]
                 if isinstance(o, list) else math.nan if o is None else o)
print(getattr(bench, "bench_text", bench.table_text)(nan(json.load(open(sys.argv[1])))))
EOF
}

progress() {  # progress STEP: the per-round lines a bench step logged (what is left of a bench that did not finish)
  echo "progress lines of $1 (no table):"
  sed -n "/^=== $1 (limit/,/^=== $1: rc=/p" "$OUT/gpu_check.log" | grep -E "^(round|profile) " || echo "(none)"
}

install_wheels() {  # install_wheels TARGET WHEEL...: with pip; where this Python has no pip, unpacked (wheels are zips)
  rm -rf "$1"
  if "$PY" -m pip --version >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$@"
  else
    echo "no pip for $PY: unpacking the wheels into $1"
    "$PY" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' "$@"
  fi
}

py312() { "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; }  # the wheels are cp312

main() {
  echo "gpu_check: $(date -u +%FT%TZ) on ${HOSTNAME:-?};" \
    "DEVICE=$DEVICE UPDATES=$UPDATES ROUNDS=$ROUNDS BUDGET_S=$BUDGET_S TORCHVISION=$TORCHVISION"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo 'no git')," \
    "$(git status --porcelain 2>/dev/null | wc -l) changed"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi -L || true
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv || true
  else
    echo "nvidia-smi: absent"
  fi
  if [[ -d .whl ]] && py312; then
    install_wheels /tmp/site .whl/*.whl || FAILED+=("wheels")
    echo "installed into /tmp/site: $(cd .whl && ls ./*.whl | tr '\n' ' ')"
    export PYTHONPATH=/tmp/site:$PWD
  else
    if [[ -d .whl ]]; then echo ".whl: wheels for Python 3.12, not for this Python; not installed (a dry run)"; fi
    export PYTHONPATH=$PWD
  fi
  rm -f /tmp/cb_bench_wide.json /tmp/cb_resume.err "$OUT"/{sync_check.txt,bench_digits.json,bench_digits.txt} \
    "$OUT"/{train_rfl.txt,train_rfl_summary.json,bench_fmnist.json,bench_fmnist.txt}
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA build",
torch.version.cuda, "| torch.cuda.is_available():", torch.cuda.is_available()); import pydantic, numpy, pandas, sklearn;
print("pydantic", pydantic.VERSION, "from", pydantic.__file__, "| numpy", numpy.__version__, "| pandas",
pandas.__version__, "| scikit-learn", sklearn.__version__)' || FAILED+=("imports")
  local help profile=""
  help=$("$PY" -m harness.cli bench --help) || FAILED+=("bench --help")
  if grep -q -- "--profile" <<<"$help"; then profile=--profile; fi
  echo "bench --profile: ${profile:-absent}"

  step sync-check 120 "$OUT/sync_check.txt" "$PY" tools/gpu_sync_check.py "$DEVICE" 20
  cat "$OUT/sync_check.txt" 2>/dev/null || true

  step bench-digits 200 "$OUT/bench_digits.json" "$PY" -m harness.cli bench --device "$DEVICE" --dataset digits \
    --network mlp-2x128-tanh --algo all --rounds "$ROUNDS" --updates "$UPDATES" $profile --json
  table "$OUT/bench_digits.json" >"$OUT/bench_digits.txt" || progress bench-digits >>"$OUT/bench_digits.txt"
  cat "$OUT/bench_digits.txt"

  rm -rf /tmp/cb_train_rfl
  step train-rfl 90 /tmp/cb_train_rfl.stdout "$PY" -m harness.cli train --algo rfl --dataset digits --device "$DEVICE" \
    --epochs 2 --out /tmp/cb_train_rfl
  cp /tmp/cb_train_rfl/summary.json "$OUT/train_rfl_summary.json" 2>/dev/null || true
  step train-rfl-resume 60 /tmp/cb_train_rfl_resume.stdout sh -c 'exec "$@" 2>/tmp/cb_resume.err' sh \
    "$PY" -m harness.cli train --algo rfl --dataset digits --device "$DEVICE" --epochs 3 --out /tmp/cb_train_rfl
  local resume_rc=$RC
  cat /tmp/cb_resume.err 2>/dev/null || true
  "$PY" - "$OUT/train_rfl_summary.json" >"$OUT/train_rfl.txt" <<'EOF' || echo "(no rfl summary)" >"$OUT/train_rfl.txt"
import json, sys
s = json.load(open(sys.argv[1]))
mib = lambda b: f"{b / 2**20:.2f} MiB" if b is not None else "n/a"
ms = lambda k: f"{s[k] * 1e3:.3f} ms" if s.get(k) is not None else "n/a"
print(f"rfl on {s['dataset']} {s['network']}, {s['epochs']} epochs, {s['updates']} updates, status {s['status']}, "
      f"test_acc {s['test_acc']}; device {s['env'].get('device')} {s['env'].get('gpu', '')}")
print(f"seconds_per_update {ms('seconds_per_update')} (median {ms('seconds_per_update_median')}, p10 "
      f"{ms('seconds_per_update_p10')}, p90 {ms('seconds_per_update_p90')}; {s.get('timed_updates')} timed updates)")
peak = s.get("peak_memory_bytes")
print(f"peak_memory_bytes {peak} ({mib(peak)}); wall_time_s {s['wall_time_s']:.2f}")
print("by phase:", {k: f"{v * 1e3:.3f} ms" for k, v in (s.get("seconds_per_update_by_phase") or {}).items()})
EOF
  {
    echo "resume to 3 epochs (--out of the 2-epoch trial):"
    case $resume_rc in
      0) echo "ok" ;;
      skipped) echo "skipped (budget)" ;;
      *) echo "FAILED (rc=$resume_rc): $(grep -v '^[[:space:]]*$' /tmp/cb_resume.err 2>/dev/null | tail -1)" ;;
    esac
  } >>"$OUT/train_rfl.txt"
  cat "$OUT/train_rfl.txt"

  local fm="" fm_pp=$PYTHONPATH
  for d in data/FashionMNIST/raw data/fashion-mnist; do
    if [[ -e $d/train-images-idx3-ubyte.gz || -e $d/train-images-idx3-ubyte ]]; then fm=$d; break; fi
  done
  if [[ -z $fm ]]; then
    echo "=== Fashion-MNIST: no data/FashionMNIST/raw or data/fashion-mnist in the checkout; skipped"
    SKIPPED+=("fashion-mnist(no data)")
  else
    mkdir -p /tmp/cb_data/FashionMNIST/raw
    for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
      if [[ -e $fm/$f ]]; then cp "$fm/$f" /tmp/cb_data/FashionMNIST/raw/; else "$PY" -c 'import gzip, shutil, sys
shutil.copyfileobj(gzip.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$fm/$f.gz" "/tmp/cb_data/FashionMNIST/raw/$f"; fi
    done  # decompressed into a scratch folder (the loader would unpack .gz files beside themselves, in the carried copy)
    export CREDITBENCH_DATA_DIR=/tmp/cb_data
    if [[ $TORCHVISION == auto ]] && "$PY" -c "import torchvision.datasets" 2>/dev/null; then
      echo "torchvision: the machine's own"
      fm_pp=$PYTHONPATH
    elif compgen -G ".whl/optional/torchvision-*.whl" >/dev/null && py312 &&
      install_wheels /tmp/site_tv .whl/optional/torchvision-*.whl &&
      PYTHONPATH=/tmp/site_tv:$PYTHONPATH "$PY" -c "import torchvision.datasets"; then
      fm_pp=/tmp/site_tv:$PYTHONPATH
      echo "torchvision: the carried wheel ($(ls .whl/optional/torchvision-*.whl))"
    else
      echo "error: torchvision cannot be imported here and no carried wheel installs; Fashion-MNIST benches skipped"
      SKIPPED+=("fashion-mnist(no torchvision)")
      fm_pp=""
    fi
    if [[ -n $fm_pp ]]; then
    step bench-fmnist-bp-3x1024 90 /tmp/cb_bench_wide.json env PYTHONPATH="$fm_pp" "$PY" -m harness.cli bench \
      --device "$DEVICE" --dataset fashion-mnist --network mlp-3x1024-tanh --batch-size 256 --algo bp \
      --rounds "$ROUNDS" --updates "$UPDATES" --json
    step bench-fmnist 400 "$OUT/bench_fmnist.json" env PYTHONPATH="$fm_pp" "$PY" -m harness.cli bench \
      --device "$DEVICE" --dataset fashion-mnist --network mlp-5x256-tanh --batch-size 128 --algo all \
      --rounds "$ROUNDS" --updates "$UPDATES" --json
    {
      table "$OUT/bench_fmnist.json" || progress bench-fmnist
      echo
      table /tmp/cb_bench_wide.json || progress bench-fmnist-bp-3x1024
    } >"$OUT/bench_fmnist.txt"
    cat "$OUT/bench_fmnist.txt"
    echo "--- bench JSON of bp on mlp-3x1024-tanh batch 256:"
    cat /tmp/cb_bench_wide.json 2>/dev/null || true
    fi
  fi

  echo "=== done in $((SECONDS - T0))s; failed: ${FAILED[*]:-none}; skipped: ${SKIPPED[*]:-none}"
  echo "files in $OUT ($(find "$OUT" -type f | wc -l), 8 come back):"
  ls -la "$OUT"
  [[ ${#FAILED[@]} -eq 0 ]]
}

main 2>&1 | tee "$OUT/gpu_check.log"
