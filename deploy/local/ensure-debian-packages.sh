#!/usr/bin/env bash
# Installs the Debian packages tokenwarden's setup needs, when missing: redis-server (the local
# Redis and the tests'), redis-sentinel (the Sentinel failover drill) and prometheus (its
# promtool checks the alert rules); with --browser also chromium (the web page's end-to-end
# tests drive it headless: `make test` asks for it, `make run` does not). Installs only: a service the packages would start is not
# started (the tests start what they need on free ports). Needs root (or passwordless sudo).
set -euo pipefail
# command the package provides -> the package
declare -A wanted=([redis-server]=redis-server [redis-sentinel]=redis-sentinel [promtool]=prometheus)
[ "${1:-}" = "--browser" ] && wanted[chromium]=chromium
missing=()
for command in "${!wanted[@]}"; do
  command -v "$command" >/dev/null 2>&1 || missing+=("${wanted[$command]}")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo)
else
  echo "error: ${missing[*]} not installed and installing needs root; run" \
       "'sudo apt-get install -y --no-install-recommends ${missing[*]}', then make again" >&2
  exit 1
fi
echo "installing Debian's ${missing[*]}..." >&2
# Keep the packages' services from starting while they install (policy-rc.d, exit 101).
policy=/usr/sbin/policy-rc.d
placed=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  placed=yes
fi
cleanup() { [ -n "$placed" ] && "${sudo[@]}" rm -f "$policy"; return 0; }
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for command in "${!wanted[@]}"; do
  command -v "$command" >/dev/null 2>&1 || { echo "error: $command did not install" >&2; exit 1; }
done
