#!/usr/bin/env bash
# Gateway load on 127.0.0.1, bounded in time.
#
#   benches/load.sh [warm]   wrk against (a) the upstream directly, (b) the gateway of
#                            benches/gateway_load.rs (the axum example's router and proxy)
#                            without the layer, (c) the same gateway with the layer and a warm
#                            function; rounds alternate a/b/c, medians reported.
#   benches/load.sh cold     1 000 concurrent requests at a cold function with a 500 ms
#                            start-up (cargo bench --all-features --bench cold_burst).
#   benches/load.sh first    a real cold start end to end: a fresh axum example gateway,
#                            one curl to the bundled hello-world (process start included),
#                            then one warm curl; RUNS times (default 11), medians reported.
#
# Environment: DURATION per wrk run (default 10s), CONNECTIONS (64), ROUNDS (3).
# Installs wrk from Debian's packages when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-warm}
if [ "$mode" = cold ]; then
  exec cargo bench --all-features --bench cold_burst
fi
if [ "$mode" = first ]; then
  RUNS=${RUNS:-11}
  command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
  cargo build --release --features process,openfaas --example axum_gateway
  BIN=target/release/examples/axum_gateway
  PORT=18193
  cold=() warm=()
  for run in $(seq 1 "$RUNS"); do
    "$BIN" --listen 127.0.0.1:$PORT </dev/null >/dev/null 2>&1 &
    gw=$!
    until curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz"; do sleep 0.05; done
    c=$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$PORT/function/hello-world")
    w=$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$PORT/function/hello-world")
    kill $gw; wait $gw 2>/dev/null || true
    cold+=("$c") warm+=("$w")
    awk -v r="$run" -v c="$c" -v w="$w" 'BEGIN { printf "run %2d: cold %.1f ms, warm %.1f ms\n", r, c*1000, w*1000 }'
  done
  med() { printf '%s\n' "$@" | sort -g | awk '{ v[NR]=$1 } END { print v[int((NR+1)/2)]*1000 }'; }
  echo "median of $RUNS: cold $(med "${cold[@]}") ms, warm $(med "${warm[@]}") ms (curl time_total, new TCP connection each)"
  exit 0
fi
[ "$mode" = warm ] || { echo "usage: $0 [warm|cold|first]" >&2; exit 2; }

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-3}

if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release --features process,openfaas --example axum_gateway
BIN=target/release/examples/axum_gateway
GW=$(cargo bench --features process,openfaas --bench gateway_load --no-run 2>&1 | grep -o 'target/release/deps/gateway_load-[a-f0-9]*' | head -1)

UP=18190 BARE=18191 LAYER=18192
PIDS=()
LIFELINE=$(mktemp -u)
cleanup() {
  kill "${PIDS[@]}" 2>/dev/null || true
  rm -f "$LIFELINE"
}
trap cleanup EXIT

# The bundled function as the upstream. It exits when its stdin closes (its lifeline to a
# gateway), so a sleeping writer on a FIFO holds stdin open until cleanup.
mkfifo "$LIFELINE"
sleep 3600 >"$LIFELINE" 2>/dev/null </dev/null &
PIDS+=($!)
PORT=$UP "$BIN" --serve-function hello-world --startup-ms 0 <"$LIFELINE" >/dev/null 2>&1 &
PIDS+=($!)
"$GW" --listen 127.0.0.1:$BARE --upstream 127.0.0.1:$UP --without-scale-from-zero \
  </dev/null >/dev/null 2>&1 &
PIDS+=($!)
"$GW" --listen 127.0.0.1:$LAYER --upstream 127.0.0.1:$UP </dev/null >/dev/null 2>&1 &
PIDS+=($!)

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  exit 1
}
for port in $UP $BARE $LAYER; do wait_port $port; done

declare -A URL=(
  [a_upstream]="http://127.0.0.1:$UP/"
  [b_gateway_without_layer]="http://127.0.0.1:$BARE/function/hello-world"
  [c_gateway_with_layer]="http://127.0.0.1:$LAYER/function/hello-world"
)
TARGETS=(a_upstream b_gateway_without_layer c_gateway_with_layer)

# wrk's latency figures in microseconds.
to_us() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); print v } else if (v ~ /ms$/) { sub(/ms$/,"",v); print v*1000 } else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000000 } }'; }

run() { # target -> "rps p50_us p99_us"
  local out
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${URL[$1]}")
  if echo "$out" | grep -q 'Non-2xx'; then echo "$out" >&2; echo "non-2xx answers from $1" >&2; exit 1; fi
  local rps p50 p99
  rps=$(echo "$out" | awk '/Requests\/sec/ { print $2 }')
  p50=$(echo "$out" | awk '$1 == "50%" { print $2 }' | to_us)
  p99=$(echo "$out" | awk '$1 == "99%" { print $2 }' | to_us)
  echo "$rps $p50 $p99"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2/1048576 }' /proc/meminfo); wrk -t1 -c$CONNECTIONS -d$DURATION; $ROUNDS rounds"
for t in "${TARGETS[@]}"; do wrk -t1 -c"$CONNECTIONS" -d2s "${URL[$t]}" >/dev/null; done # warm-up

declare -A RESULTS
for round in $(seq 1 "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    r=$(run "$t")
    RESULTS[$t]+="$r"$'\n'
    printf 'round %s  %-26s %10.0f req/s  p50 %7.0f us  p99 %7.0f us\n' "$round" "$t" $r
  done
done

median() { sort -g | awk '{ v[NR]=$1 } END { print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2 }'; }
echo "medians:"
declare -A MED
for t in "${TARGETS[@]}"; do
  rps=$(printf '%s' "${RESULTS[$t]}" | awk 'NF { print $1 }' | median)
  p50=$(printf '%s' "${RESULTS[$t]}" | awk 'NF { print $2 }' | median)
  p99=$(printf '%s' "${RESULTS[$t]}" | awk 'NF { print $3 }' | median)
  MED[$t]=$rps
  printf '  %-26s %10.0f req/s  p50 %7.0f us  p99 %7.0f us\n' "$t" "$rps" "$p50" "$p99"
done
awk -v c="${MED[c_gateway_with_layer]}" -v b="${MED[b_gateway_without_layer]}" \
  'BEGIN { printf "ratio (c)/(b) requests/s: %.3f (target >= 0.95)\n", c/b }'
