#!/usr/bin/env bash
# Creates the Python virtualenv used by the SDK end-to-end tests (crates/mecha/tests/e2e/python_sdk.rs)
# and installs the official Dapr Python SDK into it.
#
# Idempotent: a marker file records what was installed; a second run with the same pins is a no-op.
# MECHA_VENV chooses the location (default: <repo root>/.venv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MECHA_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

# Pins. Change them here; the marker makes the next run reinstall.
REQUIREMENTS=(
  # With the gRPC app framework (`dapr.ext.grpc`), which ships inside the dapr wheel.
  "dapr[grpc]==1.19.0"
)
MARKER="$VENV/.mecha-venv-ok"
WANT="$(printf '%s\n' "${REQUIREMENTS[@]}")"

if [[ -x "$VENV/bin/python" && -f "$MARKER" && "$(cat "$MARKER")" == "$WANT" ]]; then
  echo "setup-venv: $VENV already has ${REQUIREMENTS[*]} (nothing to do)"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
"$VENV/bin/python" -m pip install --quiet "${REQUIREMENTS[@]}"
# Fail now, not in the tests, if the SDK cannot be imported.
"$VENV/bin/python" -c 'from dapr.clients import DaprClient' >/dev/null

printf '%s\n' "${REQUIREMENTS[@]}" >"$MARKER"
echo "setup-venv: installed ${REQUIREMENTS[*]} into $VENV ($("$VENV/bin/python" -m pip show dapr 2>/dev/null | sed -n 's/^Version: /dapr /p'))"
