#!/usr/bin/env bash
# Makes sure the programs the tests run are there, installing the missing ones from Debian's
# packages (a fresh machine has only the toolchains). Called by the tests that need them
# (before they enter a private network namespace, from which nothing could be downloaded), by
# scripts/kube-test-env.sh and by .ci/run.
#
#   scripts/test-tools.sh COMMAND...      # any of: ip unshare curl openssl chromium
set -euo pipefail

log() { echo "test-tools: $*" >&2; }

packages=()
for command in "$@"; do
  case "$command" in
    chromium) command -v chromium >/dev/null || command -v chromium-browser >/dev/null && continue ;;
    *) command -v "$command" >/dev/null && continue ;;
  esac
  case "$command" in
    ip) packages+=(iproute2) ;;
    unshare) packages+=(util-linux) ;;
    curl | openssl | chromium) packages+=("$command") ;;
    *) log "no Debian package known for \`$command\`"; exit 2 ;;
  esac
done
[ ${#packages[@]} -eq 0 ] && exit 0

command -v apt-get >/dev/null || { log "missing: ${packages[*]}, and no apt-get to install them"; exit 1; }
[ "$(id -u)" -eq 0 ] || { log "missing: ${packages[*]}; installing them needs root (apt-get install ${packages[*]})"; exit 1; }
log "installing ${packages[*]} (Debian packages)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
