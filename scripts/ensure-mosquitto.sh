#!/usr/bin/env bash
# Make sure the mosquitto broker binary is installed (tests and the demo start private copies of
# it on free loopback ports; the system service, if any, is left alone).
set -euo pipefail
if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
  exit 0
fi
echo "mosquitto is missing: installing it with apt-get" >&2
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "cannot install mosquitto: not root and no sudo. Run as root: apt-get install -y mosquitto" >&2
  exit 2
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "cannot install mosquitto: no apt-get here. Install the 'mosquitto' package with your" \
       "system's package manager, then run this again." >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq mosquitto >/dev/null
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]
