#!/usr/bin/env bash
# Create or reuse .venv with every pinned dependency, install this package editable, and build
# the ROS 2 interfaces (msg/srv/action) with rosidl. Idempotent: a second run only checks stamps.
#   bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)'; then
  echo "setup: need Python 3.10-3.12 (ROS 2 Kilted wheels); found $("$PY" --version 2>&1)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi

stamp=.venv/.ros2_spatial_mllm-deps
want=$(cat requirements.txt requirements/*.txt setup.py | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing pinned dependencies (requirements.txt)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  .venv/bin/python -m pip install --quiet --no-deps -e .
  echo "$want" > "$stamp"
fi

if [ -f scripts/build_interfaces.sh ]; then
  bash scripts/build_interfaces.sh
fi
