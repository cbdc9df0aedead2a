#!/usr/bin/env bash
# One command for a fresh machine: install (first time), then run the whole service with the
# offline demo models: Redis (the local one, or an embedded one), API, workers, Flower, frontend.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/vlmq up "$@"
