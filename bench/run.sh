#!/usr/bin/env bash
# Builds the release binaries and runs the benchmark harness; writes bench/RESULTS.md.
# Usage: bench/run.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p mecha -p mecha-bench
exec target/release/mecha-bench all --mecha target/release/mecha "$@"
