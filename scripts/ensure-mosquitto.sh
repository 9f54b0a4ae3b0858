#!/usr/bin/env bash
# Make sure the system packages the demo and the tests use are installed, with apt-get:
#   scripts/ensure-mosquitto.sh            mosquitto only (make demo)
#   scripts/ensure-mosquitto.sh --test     also openssl (TLS test certificates), systemd
#                                          (systemd-analyze checks the unit files) and chromium
#                                          (the report is rendered headless) (make test)
# Tests and the demo start private mosquitto copies on free loopback ports; a system broker
# service, if any, is left alone.
set -euo pipefail
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
missing=()
have mosquitto || missing+=(mosquitto)
if [ "${1:-}" = "--test" ]; then
  have openssl || missing+=(openssl)
  have systemd-analyze || missing+=(systemd)
  have chromium || have chromium-browser || missing+=(chromium)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "missing: ${missing[*]}: installing with apt-get" >&2
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "cannot install ${missing[*]}: not root and no sudo. As root: apt-get install -y ${missing[*]}" >&2
  exit 2
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "cannot install ${missing[*]}: no apt-get here. Install them with your system's" \
       "package manager, then run this again." >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
have mosquitto
