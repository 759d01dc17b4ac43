#!/usr/bin/env bash
# Side by side with an older tree's example gateway (for a change to the examples or the
# ProcessProvider), on 127.0.0.1, bounded in time:
#   OLD=/path/to/old/target/release/examples/axum_gateway benches/compare_gateways.sh first
#       a real cold start (curl to the bundled hello-world), 11 runs alternating old/new
#   OLD=... benches/compare_gateways.sh load
#       wrk -t1 -c64 10 s against both gateways with a static upstream, without and with the
#       layer (the old example's --upstream [--without-scale-from-zero]; the new
#       benches/gateway_load.rs), 3 rounds alternating
# The old tree must be one whose example still had --upstream (before issue #10).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OLD:?set OLD to the old axum_gateway example binary}"
cargo build --release --features process,openfaas --example axum_gateway
NEW_GW=target/release/examples/axum_gateway
med() { printf '%s\n' "$@" | sort -g | awk '{ v[NR]=$1 } END { print v[int((NR+1)/2)] }'; }
case "${1:-first}" in
first)
  declare -A C
  for run in $(seq 1 11); do
    for which in old new; do
      if [ $which = old ]; then BIN=$OLD; else BIN=$NEW_GW; fi
      "$BIN" --listen 127.0.0.1:18193 </dev/null >/dev/null 2>&1 & gw=$!
      until curl -s -o /dev/null http://127.0.0.1:18193/healthz; do sleep 0.05; done
      C[$which]+="$(curl -s -o /dev/null -w '%{time_total}' http://127.0.0.1:18193/function/hello-world) "
      kill $gw; wait $gw 2>/dev/null || true
    done
  done
  echo "cold start medians of 11 (s): old $(med ${C[old]}) new $(med ${C[new]})"
  ;;
load)
  command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
  NEW=$(cargo bench --features process,openfaas --bench gateway_load --no-run 2>&1 | grep -o 'target/release/deps/gateway_load-[a-f0-9]*' | head -1)
  UP=18290 LIFE=$(mktemp -u); mkfifo "$LIFE"
  sleep 3600 >"$LIFE" & PIDS=($!)
  PORT=$UP $NEW_GW --serve-function hello-world --startup-ms 0 <"$LIFE" >/dev/null 2>&1 & PIDS+=($!)
  "$OLD" --listen 127.0.0.1:18291 --upstream 127.0.0.1:$UP --without-scale-from-zero </dev/null >/dev/null 2>&1 & PIDS+=($!)
  "$NEW" --listen 127.0.0.1:18292 --upstream 127.0.0.1:$UP --without-scale-from-zero </dev/null >/dev/null 2>&1 & PIDS+=($!)
  "$OLD" --listen 127.0.0.1:18293 --upstream 127.0.0.1:$UP </dev/null >/dev/null 2>&1 & PIDS+=($!)
  "$NEW" --listen 127.0.0.1:18294 --upstream 127.0.0.1:$UP </dev/null >/dev/null 2>&1 & PIDS+=($!)
  trap 'kill "${PIDS[@]}" 2>/dev/null; rm -f "$LIFE"' EXIT
  sleep 1
  declare -A PORT=([old_bare]=18291 [new_bare]=18292 [old_layer]=18293 [new_layer]=18294)
  for r in 1 2 3; do
    for t in old_bare new_bare old_layer new_layer; do
      out=$(wrk -t1 -c64 -d10s --latency "http://127.0.0.1:${PORT[$t]}/function/hello-world")
      echo "round $r $t $(echo "$out" | awk '/Requests\/sec/ {print $2}') req/s"
    done
  done
  ;;
*) echo "usage: $0 [first|load]" >&2; exit 2 ;;
esac
