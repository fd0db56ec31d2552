#!/usr/bin/env bash
# The benchmark on a GPU machine without network (README, "Benchmarking on a GPU machine without
# network"): installs the wheels of .whl/ (experiments/gpu_wheels.sh) into a scratch folder,
# prints the devices, runs a smoke and then each part of the benchmark into its own subfolder of
# OUT, and collects every part's bench.md, status and seconds in OUT/summary.md.
#
#   experiments/gpu_bench.sh [OUT] [--device-kind KIND] [--quick] [--parts LIST]
#
# OUT defaults to $OUT, else runs/gpu_bench. --device-kind is passed to the benchmark (cpu runs
# it here). --quick shrinks the parts to seconds (a check of this script, not a measurement) and
# leaves out epochs and pipeline, which no flag shrinks that far on a CPU, unless --parts names
# them. --parts runs only these of smoke,allcnn,resnet18,ensemble,epochs,audit,pipeline, e.g. to
# split the rows over calls with a time limit. PYTHON picks the interpreter (default python3),
# SCRATCH the install folder (default a temporary one), GPU_BENCH_WHEELS the wheel folder
# (default .whl). Exits 0 if every part that ran succeeded, 1 if any failed (the others still
# run), 2 on bad usage.
set -euo pipefail

ALL_PARTS=(smoke allcnn resnet18 ensemble epochs audit pipeline)

usage() {
  echo "usage: $0 [OUT] [--device-kind auto|cpu|gpu|tpu] [--quick]" \
    "[--parts $(IFS=,; echo "${ALL_PARTS[*]}")]"
}
bad_usage() {
  echo "error: $*" >&2
  usage >&2
  exit 2
}

out="" kind=auto quick=0 parts=""
while (($#)); do
  case $1 in
    --device-kind) (($# >= 2)) || bad_usage "--device-kind needs a value"; kind=$2; shift 2 ;;
    --device-kind=*) kind=${1#*=}; shift ;;
    --parts) (($# >= 2)) || bad_usage "--parts needs a value"; parts=$2; shift 2 ;;
    --parts=*) parts=${1#*=}; shift ;;
    --quick) quick=1; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) bad_usage "unknown option $1" ;;
    *) [[ -z $out ]] || bad_usage "one output folder, got $out and $1"; out=$1; shift ;;
  esac
done
case $kind in
  auto | cpu | gpu | tpu) ;;
  *) bad_usage "--device-kind is one of auto, cpu, gpu, tpu; got '$kind'" ;;
esac
selected=()
IFS=, read -r -a wanted <<< "${parts:-$(IFS=,; echo "${ALL_PARTS[*]}")}"
for p in "${wanted[@]}"; do
  [[ " ${ALL_PARTS[*]} " == *" $p "* ]] || bad_usage "unknown part '$p'"
  selected+=("$p")
done
((${#selected[@]})) || bad_usage "--parts names no part"

out=${out:-${OUT:-runs/gpu_bench}}
mkdir -p "$out"
out=$(cd "$out" && pwd)  # absolute: the parts run from the repository root
cd "$(dirname "$0")/.."
root=$PWD
python=${PYTHON:-python3}
wheels=${GPU_BENCH_WHEELS:-$root/.whl}
summary=$out/summary.md

if [[ -n ${SCRATCH:-} ]]; then
  scratch=$SCRATCH
  mkdir -p "$scratch"
else
  scratch=$(mktemp -d "${TMPDIR:-/tmp}/gpu_bench.XXXXXX")
  trap 'rm -rf "$scratch"' EXIT
fi

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# --- the wheels ---------------------------------------------------------------------------------
# Only the wheels this interpreter can load and does not already have at that version: the
# image's own packages must not be shadowed, and a machine with everything needs nothing.
install_note="no wheel folder ($wheels)"
shopt -s nullglob
all_wheels=("$wheels"/*.whl)
shopt -u nullglob
if ((${#all_wheels[@]})); then
  # A failure here stops the script: without the wheels every part would fail anyway.
  listing=$("$python" - "${all_wheels[@]}" <<'EOF'
import importlib.metadata as md
import os
import sys
try:
  from packaging.tags import sys_tags
  from packaging.utils import parse_wheel_filename
except ImportError:  # pip vendors packaging
  from pip._vendor.packaging.tags import sys_tags
  from pip._vendor.packaging.utils import parse_wheel_filename
supported = set(sys_tags())
for path in sys.argv[1:]:
  name, version, _, tags = parse_wheel_filename(os.path.basename(path))
  try:
    have = md.version(name)
  except md.PackageNotFoundError:
    have = None
  if have == str(version):
    print(f"skip {name} {version}: installed", file=sys.stderr)
  elif not supported & set(tags):
    print(f"skip {os.path.basename(path)}: not for this Python/platform", file=sys.stderr)
  else:
    print(path)
EOF
  )
  todo=()
  [[ -z $listing ]] || mapfile -t todo <<< "$listing"
  if ((${#todo[@]})); then
    if "$python" -m pip --version > /dev/null 2>&1; then
      "$python" -m pip install --disable-pip-version-check --no-index --no-deps --no-compile \
        --target "$scratch" "${todo[@]}"
    else
      # No pip: a wheel is a zip of its files as they lie in site-packages.
      for w in "${todo[@]}"; do "$python" -m zipfile -e "$w" "$scratch"; done
    fi
    install_note="installed $(printf '%s ' "${todo[@]##*/}")into $scratch"
  else
    install_note="${#all_wheels[@]} wheels, all present already or not for this Python"
  fi
fi
echo "wheels: $install_note"
export PYTHONPATH="$scratch:$root${PYTHONPATH:+:$PYTHONPATH}"

# --- the machine --------------------------------------------------------------------------------
{
  echo "# GPU benchmark: $(date -u '+%Y-%m-%d %H:%M UTC') on ${HOSTNAME:-?}"
  echo
  echo "git $(git -C "$root" rev-parse --short HEAD 2> /dev/null || echo '?'),"\
    "device kind $kind$( ((quick)) && echo ', --quick (sizes that check the script only)');"\
    "wheels: $install_note."
} > "$summary"

if command -v nvidia-smi > /dev/null; then
  nvidia-smi || true
fi
failed=()
env_log=$out/environment.txt
if ! "$python" - > "$env_log" 2>&1 <<'EOF'
import platform
import jax
print("python", platform.python_version(), "jax", jax.__version__)
print("jax.devices():", jax.devices())
# Everything the parts import, so a missing wheel shows here first.
import jax_unlearn.bench, jax_unlearn.pipeline, jax_unlearn.configs.demo, jax_unlearn.events
import ml_collections, tensorboardX
EOF
then
  failed+=(environment)
fi
cat "$env_log"
{
  echo
  echo '```'
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  fi
  cat "$env_log"
  echo '```'
  if ((${#failed[@]})); then echo; echo "**environment check FAILED** (see above)"; fi
} >> "$summary"

# --- the parts ----------------------------------------------------------------------------------
# Each part: the benchmark's arguments, full size (about 10 minutes on an H200 in all) or quick.
declare -A ARGS SKIP_WHY
if ((quick)); then
  ARGS=(
    [smoke]="--models allcnn --batch-sizes 2 --steps 1 --warmup 0 --no-torch --cases predict"
    [allcnn]="--models allcnn --batch-sizes 2 --steps 2 --warmup 1"
    [resnet18]="--models resnet18 --batch-sizes 2 --steps 1 --warmup 0 --no-torch --cases predict"
    [ensemble]="--models= --no-torch --ensemble 2 --ensemble-models mlp --ensemble-steps 1 \
--ensemble-seconds 0.1"
    [epochs]="--models= --no-torch --epochs 4"
    [audit]="--models= --no-torch --audit 8"
    [pipeline]="--models= --no-torch --pipeline"
  )
  # No flag shrinks these two below minutes on a CPU, so --quick leaves them out unless --parts
  # names them (on a GPU they take seconds to a few minutes).
  SKIP_WHY=(
    [epochs]="its models are fixed (the TFT and AllCNN epochs alone take about 2 minutes on 2 CPU
cores); --quick --parts epochs runs it at --epochs 4"
    [pipeline]="two fresh runs of the demo, even at its smoke sizes about 3 minutes on 2 CPU cores;
--quick --parts pipeline runs the demo with smoke = True"
  )
else
  ARGS=(
    [smoke]="--models allcnn --batch-sizes 8 --steps 2 --warmup 1 --no-torch"
    [allcnn]="--models allcnn --batch-sizes 256,1024"
    [resnet18]="--models resnet18 --batch-sizes 256,1024"
    [ensemble]="--models= --no-torch --ensemble 64"
    [epochs]="--models= --no-torch --epochs 64"
    [audit]="--models= --no-torch --audit 128"
    [pipeline]="--models= --no-torch --pipeline demo"
  )
fi

declare -A STATUS SECONDS_OF
run_part() {
  local name=$1 dir=$out/$1 start rc=0 args
  read -r -a args <<< "${ARGS[$name]}"
  rm -rf "$dir"
  mkdir -p "$dir"
  if [[ $name == pipeline ]] && ((quick)); then
    # The demo at its smoke sizes, as a config file: --pipeline takes a name or a path.
    printf '%s\n' '"""The demo at its smoke sizes (experiments/gpu_bench.sh --quick)."""' \
      'from jax_unlearn.configs import demo' '' '' 'def get_config():' \
      '  c = demo.get_config()' '  c.smoke = True' '  return c' > "$dir/demo_smoke.py"
    args+=("$dir/demo_smoke.py")
  fi
  local cmd=("$python" -m jax_unlearn.bench "${args[@]}" --device-kind "$kind" --out "$dir")
  echo
  echo "=== $name: ${cmd[*]}"
  start=$(now)
  "${cmd[@]}" > "$dir/log.txt" 2>&1 || rc=$?
  SECONDS_OF[$name]=$(elapsed "$start" "$(now)")
  tail -n 40 "$dir/log.txt"
  # Exit 1 is also a failed correctness guard (ours and torch disagree): a failure too.
  if ((rc == 0)) && [[ -s $dir/bench.md && -f $dir/bench.jsonl ]]; then
    STATUS[$name]=ok
  else
    STATUS[$name]="FAILED (exit $rc)"
    failed+=("$name")
  fi
  echo "=== $name: ${STATUS[$name]} in ${SECONDS_OF[$name]} s"
  # Appended as each part ends, so what finished survives a run cut short.
  {
    echo
    echo "## Part $name: ${STATUS[$name]}, ${SECONDS_OF[$name]} s"
    echo
    echo "\`python -m jax_unlearn.bench ${args[*]##*/} --device-kind $kind --out $name\`"
    echo
    if [[ ${STATUS[$name]} == ok ]]; then
      sed 's/^#/##/' "$dir/bench.md"  # one level down, under this part's title
    else
      echo "Last lines of $name/log.txt:"
      echo
      echo '```'
      tail -n 30 "$dir/log.txt"
      echo '```'
    fi
  } >> "$summary"
}

for name in "${selected[@]}"; do
  if [[ -n $parts || -z ${SKIP_WHY[$name]:-} ]]; then
    run_part "$name"
  else
    STATUS[$name]="skipped (--quick)"
    SECONDS_OF[$name]=0
    echo
    echo "=== $name: skipped under --quick: ${SKIP_WHY[$name]}"
    printf '\n## Part %s: skipped under --quick\n\n%s.\n' "$name" "${SKIP_WHY[$name]^}" \
      >> "$summary"
  fi
done

{
  echo
  echo "## Parts"
  echo
  echo "| part | status | seconds |"
  echo "|---|---|--:|"
  for name in "${selected[@]}"; do
    echo "| $name | ${STATUS[$name]} | ${SECONDS_OF[$name]} |"
  done
  echo
  if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}"
  else
    echo "All parts that ran succeeded."
  fi
} >> "$summary"

echo
echo "summary: $summary"
if ((${#failed[@]})); then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
