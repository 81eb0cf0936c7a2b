#!/usr/bin/env bash
# Counts the instructions each sidecar runs per proxied HTTP call (user space, with valgrind's
# callgrind), for comparing builds without timing noise: the same binary and load give the
# same count to within 0.5 %. Kernel time (the socket calls) is not counted.
#
# Usage: bench/callgrind.sh [MECHA_BINARY] [REQUESTS]   (defaults: target/release/mecha 2000)
# Needs valgrind, oha and target/release/mecha-bench (bench/run.sh builds it). Starts an echo
# app, a callee sidecar and a caller sidecar (both under callgrind) on free loopback ports,
# warms up with 300 calls, then counts REQUESTS calls of 1 KB through
# /v1.0/invoke/bench-b/method/echo at 16 connections. Set KEEP=DIR to keep the callgrind
# files (callgrind_annotate reads them; a build with symbols, e.g.
# CARGO_PROFILE_RELEASE_STRIP=none, names the functions).
set -euo pipefail
cd "$(dirname "$0")/.."
MECHA=${1:-target/release/mecha}
N=${2:-2000}
BENCH=target/release/mecha-bench
PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
for tool in valgrind callgrind_control oha; do
  command -v "$tool" >/dev/null || { echo "callgrind.sh: $tool is missing" >&2; exit 1; }
done
[[ -x $BENCH ]] || { echo "callgrind.sh: build $BENCH first (cargo build --release -p mecha-bench)" >&2; exit 1; }

dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
app=$(port); b_http=$(port); b_grpc=$(port); b_metrics=$(port)
a_http=$(port); a_grpc=$(port); a_metrics=$(port)

head -c 1024 /dev/zero | tr '\0' y >"$dir/body.bin"
mkdir "$dir/resources"
cat >"$dir/config.yaml" <<YAML
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: bench
spec:
  nameResolution:
    component: sqlite
    configuration:
      connectionString: "$dir/names.db"
YAML

"$BENCH" app-server "$app" 1024 & pids+=($!)
sidecar() { # NAME HTTP GRPC METRICS [ARGS...]
  local name=$1 http=$2 grpc=$3 metrics=$4; shift 4
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.$name.%p" \
    "$MECHA" sidecar --app-id "$name" --log-level warn --config "$dir/config.yaml" \
    --dapr-http-port "$http" --dapr-grpc-port "$grpc" --metrics-port "$metrics" \
    --resources-path "$dir/resources" "$@" >/dev/null 2>"$dir/$name.log" &
  pids+=($!)
}
sidecar bench-b "$b_http" "$b_grpc" "$b_metrics" --app-port "$app" --app-protocol http
callee=${pids[-1]}
sidecar bench-a "$a_http" "$a_grpc" "$a_metrics"
caller=${pids[-1]}

url="http://127.0.0.1:$a_http/v1.0/invoke/bench-b/method/echo"
for _ in $(seq 200); do
  curl -sf -m 5 -XPOST --data-binary @"$dir/body.bin" "$url" >/dev/null && break
  sleep 0.3
done
oha --no-tui -c 16 -n 300 -m POST -D "$dir/body.bin" "$url" >/dev/null
callgrind_control -z "$caller" >/dev/null 2>&1
callgrind_control -z "$callee" >/dev/null 2>&1
oha --no-tui --output-format json -c 16 -n "$N" -m POST -T application/octet-stream \
  -D "$dir/body.bin" "$url" >"$dir/oha.json"
callgrind_control -d "$caller" >/dev/null 2>&1
callgrind_control -d "$callee" >/dev/null 2>&1
sleep 1
ok=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['statusCodeDistribution'].get('200', 0))" "$dir/oha.json")
[[ $ok == "$N" ]] || echo "callgrind.sh: only $ok of $N calls answered 200" >&2
for side in caller:bench-a callee:bench-b; do
  name=${side#*:}
  file=$(ls -t "$dir"/cg."$name".*.1 | head -1)
  total=$(awk '/^(summary|totals):/ {print $2; exit}' "$file")
  echo "${side%%:*} sidecar: $((total / N)) instructions per call"
  if [[ -n ${KEEP:-} ]]; then mkdir -p "$KEEP"; cp "$file" "$KEEP/callgrind.${side%%:*}.out"; fi
done
