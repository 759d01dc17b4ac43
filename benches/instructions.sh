#!/usr/bin/env bash
# Instructions per request on the warm path, counted by callgrind (repeatable on a noisy
# machine, unlike wall time). Arguments: warm_path bench names; default: bare vs wrapped.
#   benches/instructions.sh ['warm_path/bare/1 thread' ...]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
[ $# -gt 0 ] || set -- 'warm_path/bare/1 thread' 'warm_path/wrapped/1 thread'
BIN=$(cargo bench --features test-util --bench warm_path --no-run 2>&1 | grep -o 'target/release/deps/warm_path-[a-f0-9]*' | head -1)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for name in "$@"; do
  valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" --bench --profile-time 1 "$name\$" >/dev/null 2>&1
  # Inclusive instructions of the bench's per-request `call` helper (`served::call` for the
  # warm_path_served group: it clones the service too), divided by its calls.
  sym='warm_path::call'
  case $name in warm_path_served/*) sym='warm_path::served::call' ;; esac
  callgrind_annotate --tree=caller --inclusive=yes "$out" 2>/dev/null | awk -v name="$name" -v sym="$sym" '
    index($0, "* ") && index($0, "???:" sym " ") { gsub(",", "", $1); total = $1 }
    index($0, "???:" sym " (") && !index($0, "* ") && !calls { s = $0; sub(/.*call \(/, "", s); sub(/x\).*/, "", s); gsub(",", "", s); calls = s }
    END { printf "%s: %d instructions per request (%d requests)\n", name, total / calls, calls }'
done
