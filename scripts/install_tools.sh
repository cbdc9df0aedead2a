#!/usr/bin/env bash
# Installs the test tools that are not Python packages:
# - Debian's Chromium, for the browser tests (Playwright's own browser download is not used: the
#   tests launch /usr/bin/chromium directly). Needs root (or sudo) the first time.
# - promtool, Prometheus's metrics linter, taken out of Debian's `prometheus` package into
#   .venv/bin (no Prometheus service is installed or started).
# Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed"
else
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core
fi

if [ -x .venv/bin/promtool ]; then
    echo "promtool already installed"
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && apt-get download prometheus >/dev/null 2>&1) || { $SUDO apt-get update && (cd "$work" && apt-get download prometheus); }
    dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
    install -m 0755 "$work/root/usr/bin/promtool" .venv/bin/promtool
    echo "promtool: $(.venv/bin/promtool --version 2>&1 | head -1)"
fi
