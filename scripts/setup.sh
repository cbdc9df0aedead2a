#!/usr/bin/env bash
# Creates .venv and installs vlmq into it. `scripts/setup.sh --dev` adds the test tools.
# torch is installed first, on its own: 2.13.0 here (a CPU wheel on this machine's disk); on a GPU
# host set VLMQ_TORCH_SPEC (e.g. "torch==2.13.0" from the CUDA index) before running this.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      python_bin=$candidate; break
    fi
  done
fi
[ -n "$python_bin" ] || { echo "vlmq needs Python 3.11 or newer" >&2; exit 1; }
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c 'import torch' 2>/dev/null || python -m pip install -q "${VLMQ_TORCH_SPEC:-torch==2.13.0}"
python -m pip install -q -e ".${extras}"
echo "vlmq installed in .venv ($(python -c 'import torch; print("torch", torch.__version__)'))"
