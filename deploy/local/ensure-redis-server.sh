#!/usr/bin/env bash
# Installs Debian's redis-server when it is missing. Needs root (or passwordless sudo).
set -euo pipefail
command -v redis-server >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -eq 0 ]; then
  apt=(apt-get)
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  apt=(sudo apt-get)
else
  echo "error: redis-server is not installed and installing it needs root; run" \
       "'sudo apt-get install -y redis-server', then make again" >&2
  exit 1
fi
echo "installing Debian's redis-server..." >&2
export DEBIAN_FRONTEND=noninteractive
"${apt[@]}" update -qq
"${apt[@]}" install -y -qq --no-install-recommends redis-server >/dev/null
command -v redis-server >/dev/null 2>&1 || { echo "error: redis-server did not install" >&2; exit 1; }
