#!/usr/bin/env bash
# The GPU benchmarks of issue 16, in one call, every figure written as JSON.
#
#   benchmarks/gpu/run.sh [--device cuda|cpu] [--quick] --out DIR [--carry DIR]
#                         [--work DIR] [--budget-s N] [--steps a,b]
#
#   --device   cuda (default) or cpu
#   --quick    every step in tiny form (tiny BERT, few examples, 1 and 2 drivers)
#   --out      where summary.json and one JSON per step go (keep it to those: the
#              device tool brings back at most 8 files)
#   --carry    the folder prepare.sh built (default gpu-carry if present; none: no carry): its
#              wheels are installed into WORK/site when this Python lacks them,
#              its fp16 MiniLM is expanded to fp32 in WORK
#   --work     scratch (default: a new /tmp folder, removed at the end)
#   --budget-s all steps together (default 440 s, quick 300 s)
#   --steps    a subset, e.g. packing,e2e (to rerun what failed)
#
# Exit 0 when every step is ok, 1 when any failed (its error is in its JSON and
# the others still ran), 2 on bad arguments. Nothing reaches the network
# (HF_HUB_OFFLINE=1) and nothing listens: no Ray, no dashboard, SQLite files.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
REPO=$(pwd)

device=cuda quick=() out="" carry="" work="" rest=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --device) device=${2:-}; shift 2 ;;
    --quick) quick=(--quick); shift ;;
    --out) out=${2:-}; shift 2 ;;
    --carry) carry=${2:-}; shift 2 ;;
    --work) work=${2:-}; shift 2 ;;
    --budget-s|--steps) rest+=("$1" "${2:-}"); shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$out" ]; then echo "error: run.sh: --out DIR is required" >&2; exit 2; fi
case "$device" in cuda|cpu) ;; *) echo "error: run.sh: --device: expected cuda or cpu, got '$device'" >&2; exit 2 ;; esac
if [ -z "$carry" ] && [ -d gpu-carry ]; then carry=gpu-carry; fi
if [ "$carry" = none ]; then carry=""; fi
if [ -n "$carry" ] && [ ! -d "$carry" ]; then echo "error: run.sh: --carry: no folder '$carry'" >&2; exit 2; fi

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=$REPO/.venv/bin/python; else PY=$(command -v python3); fi
fi
made_work=0
if [ -z "$work" ]; then work=$(mktemp -d /tmp/hps-gpu-XXXXXX); made_work=1; fi
mkdir -p "$out" "$work"
out=$(cd "$out" && pwd) work=$(cd "$work" && pwd)
[ -n "$carry" ] && carry=$(cd "$carry" && pwd)

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 PIP_NO_INDEX=1
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}

# The carried wheels this Python lacks (or has too old) go into WORK/site, first on the path.
if [ -n "$carry" ] && [ -d "$carry/wheels" ]; then
  "$PY" benchmarks/gpu/_carry.py install "$carry/wheels" "$work/site" --report "$work/carry-install.json" \
    || echo "warning: installing the carried wheels failed; see $work/carry-install.json" >&2
  export PYTHONPATH=$work/site:$PYTHONPATH
fi

"$PY" benchmarks/gpu/run.py --device "$device" "${quick[@]}" --out "$out" --work "$work" \
  ${carry:+--carry "$carry"} "${rest[@]}"
rc=$?
if [ "$made_work" = 1 ]; then rm -rf "$work"; fi
exit $rc
