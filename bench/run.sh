#!/usr/bin/env bash
# Builds the release binaries and runs the benchmark harness; writes bench/RESULTS.md and the
# plots in bench/plots/ (or next to the file given with --out).
# Usage: bench/run.sh [--quick] [--out FILE]
# The invocation scenarios need HAProxy and oha: when missing, HAProxy is installed with
# apt-get (as root only) and oha with `cargo install oha --locked` (a few minutes, once).
# Exits non-zero when the harness fails or a scenario could not run; missed targets are only
# reported.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo_bin="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin"
if [[ -d "$cargo_bin" && ":$PATH:" != *":$cargo_bin:"* ]]; then
  PATH="$PATH:$cargo_bin"
fi
export PATH

if ! command -v haproxy >/dev/null 2>&1 && [[ ! -x /usr/sbin/haproxy ]]; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "[bench] installing haproxy" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy </dev/null
  else
    echo "[bench] haproxy is missing and this is not root: install it (apt-get install haproxy)" >&2
  fi
fi
if ! command -v oha >/dev/null 2>&1; then
  echo "[bench] installing oha (cargo install oha --locked; takes a few minutes, once)" >&2
  cargo install oha --locked
fi

cargo build --release -p mecha -p mecha-bench
exec target/release/mecha-bench all --mecha target/release/mecha "$@"
