"""The package's only pyserial user: a serial port that reports every failure as PortError."""

from __future__ import annotations

import logging

import serial

from firmware_bridge.errors import PortError

log = logging.getLogger(__name__)


class SerialPort:
    """A serial device opened raw (8N1, no flow control, exclusive), read with a short timeout.

    Parameters
    ----------
    path
        Device path (``/dev/ttyUSB0``, a ``/dev/serial/by-id/...`` link, or a pty).
    baud
        Line speed.
    timeout
        Longest a :meth:`read` blocks when nothing arrives, in seconds.
    """

    def __init__(self, path: str, baud: int = 115200, timeout: float = 0.1) -> None:
        self.path = path
        self.baud = baud
        self.timeout = timeout
        self._serial: serial.Serial | None = None

    @property
    def is_open(self) -> bool:
        """True while the device is open."""
        return self._serial is not None

    def open(self) -> None:
        """Open the device; PortError when it is missing or busy."""
        try:
            # exclusive: a second bridge on the same port would silently steal half the bytes.
            self._serial = serial.Serial(self.path, self.baud, timeout=self.timeout,
                                         exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PortError(f"cannot open {self.path}: {exc}") from exc
        log.info("opened %s at %s baud", self.path, self.baud)

    def read(self) -> bytes:
        """Bytes received so far (waits up to ``timeout`` for the first); PortError if gone."""
        if self._serial is None:
            raise PortError(f"{self.path} is not open")
        try:
            data = self._serial.read(1)
            if data:
                waiting = self._serial.in_waiting
                if waiting:
                    data += self._serial.read(waiting)
            return data
        except (serial.SerialException, OSError) as exc:
            raise PortError(f"{self.path} went away: {exc}") from exc

    def close(self) -> None:
        """Close the device (safe to call twice, and after it vanished)."""
        if self._serial is not None:
            try:
                self._serial.close()
            except (serial.SerialException, OSError):
                log.debug("error closing %s ignored", self.path)
            self._serial = None
