#!/bin/sh
# Install edge-ml as a systemd service: venv in /opt/edge-ml/venv, units in
# /etc/systemd/system, example config in /etc/edge-ml/edge-ml.toml (never overwritten).
#
#   sudo systemd/install.sh                 # from a checkout: installs this source tree
#   sudo systemd/install.sh edge-ml==0.1.0  # or any pip requirement (wheel file, index name)
#
# Environment: PREFIX (default /opt/edge-ml), PYTHON (default python3), UNIT_DIR
# (default /etc/systemd/system), CONFIG_DIR (default /etc/edge-ml), MOSQUITTO_CONF_DIR
# (default /etc/mosquitto/conf.d: the broker settings edge-ml needs go there when it exists),
# DESTDIR (staging root;
# with DESTDIR set, systemctl is not called; a venv is not relocatable, so a staged tree is
# for inspection and packaging tests, not for copying). Idempotent: run it again to upgrade.
set -eu
# The service runs as a dynamic user: everything installed must be world-readable.
umask 022

here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(dirname "$here")
requirement=${1:-$source_dir}
PREFIX=${PREFIX:-/opt/edge-ml}
PYTHON=${PYTHON:-python3}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
CONFIG_DIR=${CONFIG_DIR:-/etc/edge-ml}
MOSQUITTO_CONF_DIR=${MOSQUITTO_CONF_DIR:-/etc/mosquitto/conf.d}
DESTDIR=${DESTDIR:-}

if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo), or set DESTDIR to stage the files" >&2
    exit 1
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "install.sh: edge-ml needs Python >= 3.11 ($PYTHON is older)" >&2
    exit 1
}

venv="$DESTDIR$PREFIX/venv"
echo "==> virtualenv $venv"
"$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
echo "==> pip install $requirement"
"$venv/bin/python" -m pip install --quiet --upgrade "$requirement"

echo "==> units to $DESTDIR$UNIT_DIR"
install -d -m 0755 "$DESTDIR$UNIT_DIR"
install -m 0644 "$here/edge-ml.service" "$here/firmware-bridge@.service" "$DESTDIR$UNIT_DIR/"

echo "==> config in $DESTDIR$CONFIG_DIR"
install -d -m 0755 "$DESTDIR$CONFIG_DIR"
install -m 0644 "$here/edge-ml.example.toml" "$DESTDIR$CONFIG_DIR/edge-ml.example.toml"
if [ ! -e "$DESTDIR$CONFIG_DIR/edge-ml.toml" ]; then
    install -m 0644 "$here/edge-ml.example.toml" "$DESTDIR$CONFIG_DIR/edge-ml.toml"
    echo "    wrote $CONFIG_DIR/edge-ml.toml (all defaults: edit it)"
else
    echo "    kept the existing $CONFIG_DIR/edge-ml.toml"
fi
"$venv/bin/edge-ml" config check --config "$DESTDIR$CONFIG_DIR/edge-ml.toml" >/dev/null

# A stock mosquitto queues 1000 messages per client and drops the rest silently: the local
# broker gets the settings edge-ml needs (docs/deploy.md). Only where mosquitto's conf.d exists
# (a remote broker is configured where it runs); an existing file is kept (it may be edited).
mosquitto_restart=
if [ -d "$DESTDIR$MOSQUITTO_CONF_DIR" ]; then
    target="$DESTDIR$MOSQUITTO_CONF_DIR/edge-ml.conf"
    if [ ! -e "$target" ]; then
        echo "==> mosquitto settings to $MOSQUITTO_CONF_DIR/edge-ml.conf"
        install -m 0644 "$here/mosquitto-edge-ml.conf" "$target"
        mosquitto_restart=yes
    elif ! cmp -s "$here/mosquitto-edge-ml.conf" "$target"; then
        echo "    kept the existing $MOSQUITTO_CONF_DIR/edge-ml.conf (differs from" \
             "systemd/mosquitto-edge-ml.conf)"
    fi
else
    echo "    no $MOSQUITTO_CONF_DIR: set the broker up as in docs/deploy.md (The local broker)"
fi

if [ -z "$DESTDIR" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    echo "==> systemctl daemon-reload"
    systemctl daemon-reload
    if [ -n "$mosquitto_restart" ]; then
        echo "Apply the broker settings:  systemctl restart mosquitto"
    fi
    echo "Done. Start it with:  systemctl enable --now edge-ml"
    echo "Serial sensors:       systemctl enable --now firmware-bridge@ttyUSB0"
else
    echo "Done (systemd not running here: no daemon-reload)."
fi
