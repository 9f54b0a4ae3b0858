"""firmware_bridge: microcontroller sensor frames over serial to MQTT, and a simulated fleet.

A standalone package: it never imports ``edge_ml`` (edge-ml may import it). See README.md here
for the wire protocol and wiring.
"""

from __future__ import annotations

from firmware_bridge.errors import BridgeError, FrameError, MqttError, PortError
from firmware_bridge.frame import MAX_FRAME_SIZE, Frame, decode_frame, encode_frame
from firmware_bridge.serial_framing import FrameReader, frame_to_wire
from firmware_bridge.simulator import Anomaly, Fleet, Reading, SimulatedSensor

__all__ = [
    "MAX_FRAME_SIZE",
    "Anomaly",
    "BridgeError",
    "Fleet",
    "Frame",
    "FrameError",
    "FrameReader",
    "MqttError",
    "PortError",
    "Reading",
    "SimulatedSensor",
    "decode_frame",
    "encode_frame",
    "frame_to_wire",
]
