"""``python -m firmware_bridge`` runs the firmware-bridge CLI."""

from firmware_bridge.cli import main

main()
