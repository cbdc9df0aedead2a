#!/usr/bin/env bash
# One command for a fresh machine: install with the test tools and Chromium, then run the tests.
# Needs a Redis (VLMQ_TEST_REDIS_URL, default redis://127.0.0.1:6379/13); without one, an embedded
# Redis is started for the run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
scripts/install_tools.sh
. .venv/bin/activate
exec python -m pytest -q "$@"
