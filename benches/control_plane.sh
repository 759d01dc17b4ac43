#!/usr/bin/env bash
# Measurements on a real control plane (issue #16; BENCHMARKS.md quotes them): cold starts
# through the controllers with pushed readiness and with polling only, the share of them that
# is ours, and 2 000 labelled functions (first sync, RSS, API requests idle and under load, the
# warm path, one re-list). The control_plane test binary does the work in its `--measure`
# mode, in a network namespace of its own, with its own control plane
# (scripts/kube-test-env.sh start-control-plane; the binaries are built once per machine).
# Release builds of the binary and of the example gateway it starts. About 5 min once built.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/kube-test-env.sh build
cargo build --release --all-features --examples
exec cargo test --release --all-features --test control_plane -- --measure
