"""edge-ml: anomaly detection for IoT sensor streams on a gateway."""

from __future__ import annotations

__version__ = "0.1.0"
