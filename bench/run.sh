#!/usr/bin/env bash
# Builds Rolegate in release mode, then runs the benchmark harness (bench/run.py).
# Usage: bench/run.sh [--quick] [--output FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${ROLEGATE:-}" ]; then
    swift build -c release --product rolegate
    swift build -c release --product VerifyBench
    swift build -c release --product AuditBench
fi
exec python3 bench/run.py "$@"
