"""Online models: river-backed reference and the Numba half-space-tree forest."""
