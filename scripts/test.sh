#!/usr/bin/env bash
# The project's one test command: prepares the Python SDK venv, then runs every test of the
# workspace with cargo-nextest (profile in .config/nextest.toml). Extra arguments go to nextest,
# e.g. `scripts/test.sh -E 'test(python)'` or `scripts/test.sh --no-capture`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/setup-venv.sh"
exec cargo nextest run --workspace --features mecha/middleware-wasm --no-fail-fast "$@"
