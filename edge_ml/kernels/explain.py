"""Why a level is what it is: the view whose tail gave it, and the stream's usual range.

Kept apart from the calibration and the feature kernels on purpose: these read their outputs
(the z-scores, the profile residual, the level) and never their state, so a new calibration
only has to keep two facts true for the hook in :func:`edge_ml.kernels.fused.detect_batch` to
stay right:

- ``z[0]`` is a profile residual divided by the deviation it was scaled with (0 while the
  time-of-day slot and the slot before it are too young), and ``z[Z_RESIDUAL]`` is that same
  residual;
- the level is the largest of the seasonal level (the tail of ``z[0]`` or the persistent view
  of it, whichever is larger: :func:`level_view` takes it as ``season``), the "quiet" tail of
  ``z[3]``, the level of the run of equal readings the reading is in (``kernels.runs``) and the
  HST likelihood.

View codes (the ``VIEWS`` names are what alerts carry): 0 seasonal deviation (one reading
far from its time-of-day profile), 1 stuck/quiet sensor, 2 the HST model's score likelihood, 3
a device's joint view, 4 a shift (the seasonal view's persistent part: a run of readings each
only moderately off their profile, as after a level shift; the reading itself may lie inside
its usual range).
"""

from __future__ import annotations

import math

from numba import njit

from edge_ml.kernels.calibration import QUIET_Z_DIVISOR, tail_level

SEASONAL = 0
STUCK = 1
MODEL = 2
JOINT = 3
SHIFT = 4
VIEWS = ("seasonal", "stuck", "model", "joint", "shift")
# The usual range is the time-of-day profile +- this many deviations (about 99.7% of readings
# of a Gaussian stream fall inside): "what was expected", not the alert threshold.
EXPECTED_Z = 3.0


@njit(cache=True)
def level_view(level, season, shift, z_volatility, run):
    """Which view gave ``level``: the seasonal level ``season`` (a ``shift`` when its persistent
    part gave it), the quiet tail or the ``run`` of equal readings (both the stuck view), else
    the model's.

    Ties go to the seasonal view, then to the stuck one: they name something an operator can
    check on the stream itself.
    """
    if level <= season:
        return SHIFT if shift else SEASONAL
    if level <= run or level <= tail_level(min(z_volatility, 0.0) / QUIET_Z_DIVISOR):
        return STUCK
    return MODEL


@njit(cache=True)
def expected_range(value, residual, z_season, out):
    """Write the usual range ``[low, high]`` of the reading into ``out`` (NaN when unknown).

    The profile's expectation is ``value - residual``; its deviation is ``residual / z_season``
    (the scale the seasonal z-score used, floors included).
    """
    if z_season == 0.0 or not math.isfinite(z_season):
        out[0] = math.nan
        out[1] = math.nan
        return
    centre = value - residual
    half = EXPECTED_Z * abs(residual / z_season)
    out[0] = centre - half
    out[1] = centre + half
