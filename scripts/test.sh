#!/usr/bin/env bash
# One command for a fresh machine: install with the test tools and Chromium, then run the tests.
# Needs a Redis (VLMQ_TEST_REDIS_URL, default redis://127.0.0.1:6379/13); without one, an embedded
# Redis is started for the run. Two pytest-xdist processes, a test file each at a time, each with its
# own Redis database (13, then 12) and its own stack: most of the suite waits on real processes, so
# two overlap well on two cores (about 5.3 minutes instead of 6.6 here).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
scripts/install_tools.sh
. .venv/bin/activate
exec python -m pytest -q -n "${VLMQ_TEST_PROCESSES:-2}" --dist loadfile "$@"
