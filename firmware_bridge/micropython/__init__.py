"""Reference device-side code (MicroPython, also runs under CPython)."""
