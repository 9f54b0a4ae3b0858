"""Slow, obviously-correct references for the Numba kernels (one reading at a time, lists)."""

from __future__ import annotations

import math

import numpy as np

from edge_ml.kernels.calibration import MIN_SCORES, MIN_STD
from edge_ml.kernels.window import SCALER_HORIZON, SQUASH


def window_features(values: list[float], window: int) -> np.ndarray:
    """Features of each value against the ``window`` values before it (NumPy over slices)."""
    out = np.zeros((len(values), 4))
    # Centre on the first value so 1e9 + noise keeps its digits here too (exact for steps).
    centred = np.asarray(values, dtype=np.float64) - (values[0] if values else 0.0)
    for i, v in enumerate(values):
        history = centred[max(0, i - window): i]
        out[i, 0] = v
        if len(history):
            out[i, 1] = centred[i] - history.mean()
            out[i, 2] = history.std()
            out[i, 3] = v - values[i - 1]
    return out


def standard_scale(features: np.ndarray) -> np.ndarray:
    """z-score against an EWMA (equal weights until the horizon) then tanh squash."""
    n_features = features.shape[1]
    mean = [0.0] * n_features
    var = [0.0] * n_features
    out = np.zeros_like(features)
    for n, row in enumerate(features):
        alpha = 1.0 / (n + 1.0) if n + 1.0 < SCALER_HORIZON else 1.0 / SCALER_HORIZON
        for j, x in enumerate(row):
            if n > 1 and var[j] > 0.0:
                out[n, j] = 0.5 + 0.5 * math.tanh((x - mean[j]) / math.sqrt(var[j]) / SQUASH)
            else:
                out[n, j] = 0.5
            delta = x - mean[j]
            mean[j] += alpha * delta
            var[j] = (1.0 - alpha) * (var[j] + alpha * delta * delta)
    return out


def calibrate(raw: list[float], horizon: int) -> list[float]:
    mean = var = 0.0
    levels = []
    for n, score in enumerate(raw):
        if n >= MIN_SCORES:
            z = (score - mean) / max(math.sqrt(var), MIN_STD)
            levels.append(0.5 * (1.0 + math.erf(z / math.sqrt(2.0))))
        else:
            levels.append(0.0)
        alpha = 1.0 / (n + 1) if n + 1 < horizon else 1.0 / horizon
        delta = score - mean
        mean += alpha * delta
        var = (1.0 - alpha) * (var + alpha * delta * delta)
    return levels


def alert_codes(levels: list[float], ts: list[float], warming: list[int], threshold: float,
                resolve_threshold: float, debounce: int, cooldown_s: float) -> list[int]:
    """The alert state machine written as plainly as possible."""
    codes = []
    is_open = False
    above = below = 0
    closed_at: float | None = None
    for level, t, warm in zip(levels, ts, warming, strict=True):
        code = 0
        if is_open:
            if level < resolve_threshold:
                below += 1
                if below >= debounce:
                    is_open, below, above, closed_at, code = False, 0, 0, t, 2
            else:
                below = 0
        elif warm:
            above = 0
        elif level >= threshold:
            above += 1
            cooling = closed_at is not None and t - closed_at < cooldown_s
            if above >= debounce and not cooling:
                is_open, above, below, code = True, 0, 0, 1
        else:
            above = 0
        codes.append(code)
    return codes
