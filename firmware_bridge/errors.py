"""The firmware_bridge exception hierarchy: everything it raises derives from BridgeError."""

from __future__ import annotations


class BridgeError(Exception):
    """Base class of every error raised by firmware_bridge."""


class FrameError(BridgeError):
    """A frame is malformed, too large, or breaks the v1 protocol rules."""


class PortError(BridgeError):
    """The serial port could not be opened, read, or has gone away."""


class MqttError(BridgeError):
    """The MQTT client could not be configured (bad TLS files, unreadable password file)."""
