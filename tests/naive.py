"""Slow, obviously-correct references for the Numba kernels: one stream, plain Python floats."""

from __future__ import annotations

import itertools
import math

from edge_ml.kernels.calibration import (
    CAL_ALPHA,
    CAL_MIN_SCORES,
    CAL_SHORT,
    DEV_MULT_P,
    LN_1E10,
    P_ALPHA,
    P_ALPHA_SD,
    P_CLIP,
    P_FLOOR,
    P_MIN,
    QUIET_Z_DIVISOR,
    SH_LEVEL,
    SH_PRIOR_READINGS,
    TAIL_COOL,
    TAIL_GAP,
    TAIL_L0,
    TAIL_PRIOR,
    TAIL_RATE,
)
from edge_ml.kernels.window import (
    ALPHA_BIN,
    ALPHA_OFFSET,
    ALPHA_SD,
    DEV_MULT,
    MIN_BIN_COUNT,
    ONE_PER_VISIT,
    POOL_WEIGHT,
    SD_FLOOR_FRAC,
    SLOT_RATE_INTERVAL_S,
    SQUASH,
    VOL_ALPHA,
    VOL_CLIP_AFTER,
    VOL_CLIP_Z,
    VOL_MIN_DEV,
)


def _covered(t: float, t_first: float, period_s: float, bins: int, back: int) -> float:
    """Share of slot ``back`` slots before ``t``'s own that lies between the stream's first
    reading and ``t`` (the whole slot once the stream is a period old)."""
    if t - t_first >= period_s:
        return 1.0
    width = period_s / bins
    b = min(bins - 1, int((t % period_s) / period_s * bins))
    own_start = t - t % period_s + b * width
    low, high = own_start - back * width, (t if back == 0 else own_start - (back - 1) * width)
    return min(1.0, max(0.0, (high - max(low, t_first)) / width))


def _slot_scale(prof_dev: list[float], prof_n: list[int], b: int, covered: float) -> float:
    """A slot's deviation shrunk toward the pool of all slots (weighted by their residuals)."""
    weights = [min(n - 1, (2.0 - ALPHA_BIN) / ALPHA_BIN) for n in prof_n]
    pooled = sum(w * d for w, d in zip(weights, prof_dev, strict=True) if w > 0) / sum(
        w for w in weights if w > 0)
    k = (prof_n[b] - 1) * covered
    return (k * prof_dev[b] + POOL_WEIGHT * pooled) / (k + POOL_WEIGHT) * math.sqrt(
        1.0 + 1.0 / prof_n[b])


def student_as_gaussian(t: float, nu: float) -> float:
    """Wallace's (1959) Gaussian equivalent of Student's t with ``nu`` degrees of freedom."""
    z = (8 * nu + 1) / (8 * nu + 3) * math.sqrt(nu * math.log1p(t * t / nu))
    return math.copysign(z, t)


def _slot_z(res: float, prof_dev: list[float], prof_n: list[int], b: int, covered: float,
            floor: float, one_per_visit: bool) -> float:
    t = res / max(DEV_MULT * _slot_scale(prof_dev, prof_n, b, covered), floor)
    if not one_per_visit:  # a fast stream: a Gaussian z
        return t
    return student_as_gaussian(t, (prof_n[b] - 1) * covered + POOL_WEIGHT)


def features(values: list[float], ts: list[float], period_s: float,
             bins: int) -> list[list[float]]:
    """The four z-scores of each reading against the history before it."""
    prof_mean = [0.0] * bins
    prof_dev = [0.0] * bins
    prof_n = [0] * bins
    offset = mean = dev = dmean = ddev = vol = lr_mean = lr_dev = 0.0
    prev = 0.0
    out = []
    for n, (v, t) in enumerate(zip(values, ts, strict=True)):
        d = v - prev if n else 0.0
        b = min(bins - 1, int((t % period_s) / period_s * bins))
        sd = DEV_MULT * dev
        floor = 1e-6 * (abs(mean) + 1.0)
        res = v - prof_mean[b] - offset
        z = [0.0, 0.0, 0.0, 0.0]
        log_ratio = math.log((vol + floor) / (ddev + floor))
        if n >= 3:
            z[3] = (log_ratio - lr_mean) / max(DEV_MULT * lr_dev, VOL_MIN_DEV)
        if n >= 2:
            low = max(SD_FLOOR_FRAC * sd, floor)
            # one reading a slot visit: the mean interval so far is about a slot's width
            slow = (t - ts[0]) / n >= ONE_PER_VISIT * period_s / bins
            if prof_n[b] >= MIN_BIN_COUNT:
                z[0] = _slot_z(res, prof_dev, prof_n, b, _covered(t, ts[0], period_s, bins, 0),
                               low, slow)
            elif prof_n[(b - 1) % bins] >= MIN_BIN_COUNT:  # a young slot: the one before it
                a = (b - 1) % bins
                z[0] = _slot_z(v - prof_mean[a] - offset, prof_dev, prof_n, a,
                               _covered(t, ts[0], period_s, bins, 1), low, slow)
            z[1] = (v - mean) / max(sd, floor)
            z[2] = (d - dmean) / max(DEV_MULT * ddev, floor)
        out.append(z)
        if prof_n[b] == 0:
            prof_mean[b] = v - offset
        else:
            # a stream faster than SLOT_RATE_INTERVAL_S learns per that much time, not per
            # reading
            interval = (t - ts[0]) / n if n >= 2 and t > ts[0] else math.inf
            a = max(ALPHA_BIN * min(1.0, interval / SLOT_RATE_INTERVAL_S), 1.0 / (prof_n[b] + 1))
            prof_dev[b] += a * (abs(res) - prof_dev[b])
            prof_mean[b] += a * res
        prof_n[b] += 1
        if prof_n[b] > MIN_BIN_COUNT:
            offset += ALPHA_OFFSET * res
        a = max(ALPHA_SD, 1.0 / (n + 1))
        delta = v - mean
        mean += a * delta
        if n >= 1:  # mean absolute deviation of the deviations seen so far
            dev += max(ALPHA_SD, 1 / n) * (abs(delta) - dev)
        dd = d - dmean
        dmean += a * dd
        if n >= 2:  # the first difference is 0 by definition, not a deviation
            ddev += max(ALPHA_SD, 1 / (n - 1)) * (abs(dd) - ddev)
            vol += max(VOL_ALPHA, 1 / (n - 1)) * (abs(dd) - vol)
        if n >= 3:  # the log ratio against its own running mean and deviation
            a_lr = max(ALPHA_SD, 1 / (n - 2))
            lr_delta = log_ratio - lr_mean
            if n >= VOL_CLIP_AFTER:  # a quiet stretch teaches at most VOL_CLIP_Z scales a reading
                lr_delta = max(lr_delta, -VOL_CLIP_Z * max(DEV_MULT * lr_dev, VOL_MIN_DEV))
            lr_mean += a_lr * lr_delta
            lr_dev += a_lr * (abs(lr_delta) - lr_dev)
        prev = v
    return out


def squash(z: float) -> float:
    return 0.5 + 0.5 * math.tanh(z / SQUASH)


def _tail(z: float) -> float:
    q = math.erfc(abs(z) / math.sqrt(2))
    return min(1.0, max(0.0, -math.log(q + 1e-10) / LN_1E10))


def levels(raw: list[float], z_season: list[float], z_volatility: list[float],
           warm: int) -> list[float]:
    """max(seasonal tail, quiet tail, likelihood of the short average of raw scores), the
    likelihood's z scaled by the model view's own tail of episodes (all learned)."""
    mean = var = 0.0
    recent: list[float] = []
    out = []
    model = _EpisodeTail(isolated=False)

    def likelihood_of(z: float) -> float:
        p = 0.5 * math.erfc(z / math.sqrt(2))
        return min(1.0, max(0.0, -math.log(p + 1e-10) / LN_1E10))

    for n, (r, zs, zv) in enumerate(zip(raw, z_season, z_volatility, strict=True)):
        recent = [*recent, r][-CAL_SHORT:]
        likelihood = 0.0
        if n >= warm + CAL_MIN_SCORES:
            z = (sum(recent) / len(recent) - mean) / (math.sqrt(var) + 1e-9)
            unscaled = likelihood_of(z)
            scale = model.scale()
            likelihood = likelihood_of(z * scale) if scale < 1.0 and z > 0.0 else unscaled
            model.learn(unscaled, z)
        quiet = _tail(min(zv, 0.0) / QUIET_Z_DIVISOR)
        out.append(max(_tail(zs), quiet, likelihood))
        if n < warm:  # the model's first window: not scores
            continue
        if n == warm:
            mean = r
        a = max(CAL_ALPHA, 1.0 / (n - warm + 1))
        delta = r - mean
        mean += a * delta
        var = (1 - a) * (var + a * delta * delta)
    return out


def _neglog_tail(zp: float) -> float:
    """-ln P(|Z| >= |zp|): erfc while it is representable, then the asymptotic series."""
    x = abs(zp)
    if x < 8.0:
        return -math.log(math.erfc(x / math.sqrt(2)))
    t = x / math.sqrt(2)
    return t * t + math.log(t * math.sqrt(math.pi)) - math.log(1 - 0.5 / t**2 + 0.75 / t**4)


def persistent_zs(z_season: list[float]) -> list[float]:
    """The persistent view: an EWMA of clipped z-scores against its own mean and deviation.

    Readings whose z-score is exactly 0 (a profile slot too young) are skipped and score 0, as
    do the first ``P_MIN`` learned ones.
    """
    ew = mean = dev = 0.0
    n = 0
    floor = P_FLOOR * math.sqrt(P_ALPHA / (2.0 - P_ALPHA))
    out = []
    for z in z_season:
        if z == 0.0:
            out.append(0.0)
            continue
        ew += P_ALPHA * (min(max(z, -P_CLIP), P_CLIP) - ew)
        d = ew - mean
        out.append(d / max(DEV_MULT_P * dev, floor) if n >= P_MIN else 0.0)
        mean += max(P_ALPHA_SD, 1.0 / (n + 1)) * d
        if n > 0:
            dev += max(P_ALPHA_SD, 1.0 / n) * (abs(d) - dev)
        n += 1
    return out


def persistent_levels(z_season: list[float]) -> list[float]:
    return [min(1.0, _neglog_tail(zp) / LN_1E10) for zp in persistent_zs(z_season)]


def alert_codes(levels: list[float], ts: list[float], warming: list[int], threshold: float,
                resolve_threshold: float, debounce: int, cooldown_s: float,
                cooldown_readings: int) -> list[int]:
    """The alert state machine written as plainly as possible."""
    codes = []
    is_open = False
    above = below = 0
    closed_at: float | None = None
    last_open: int | None = None
    for i, (level, t, warm) in enumerate(zip(levels, ts, warming, strict=True)):
        code = 0
        cooling = last_open is not None and i - last_open <= cooldown_readings
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
            recent = (closed_at is not None and t - closed_at < cooldown_s) or cooling
            if above >= debounce and not recent:
                is_open, above, below, code, last_open = True, 0, 0, 1, i
        else:
            above = 0
        codes.append(code)
    return codes


def discrete_rescaled(values: list[float], residuals: list[float],
                      z_season: list[float]) -> list[float]:
    """Seasonal z-scores with their scale floored by the stream's discrete structure.

    Written from the rules, not the kernel: after 10 readings a residual's scale is at least
    the rounding deviation q / sqrt(12) of the smallest nonzero step q seen; for a stream of
    non-negative integers, when more than half of its readings were 0 (running share), the
    spread of its nonzero values; and a count's z is at most its Anscombe z against the level
    it was judged against, 2 (sqrt(v + 3/8) - sqrt(level + 3/8)).
    """
    alpha = 1.0 / 600.0
    out = []
    seen: list[float] = []
    share_zero = nz_mean = nz_dev = 0.0
    nz_n = 0
    for v, r, z in zip(values, residuals, z_season, strict=True):
        if z != 0.0 and r != 0.0 and len(seen) >= 10:
            steps = [abs(b - a) for a, b in itertools.pairwise(seen) if b != a]
            floor = min(steps) / 2.0 if steps else 0.0
            count = all(x >= 0 and x == int(x) for x in seen)
            if count and share_zero > 0.5:
                floor = max(floor, 1.25 * nz_dev)
            if floor > abs(r / z):
                z = r / floor
            if count and v >= 0.0:
                za = 2.0 * (math.sqrt(v + 0.375) - math.sqrt(max(v - r, 0.0) + 0.375))
                if za != 0.0 and abs(za) < abs(z):
                    z = za
        out.append(z)
        a = max(alpha, 1.0 / (len(seen) + 1))
        share_zero += a * ((v == 0.0) - share_zero)
        if v != 0.0:
            d = v - nz_mean
            nz_mean += max(alpha, 1.0 / (nz_n + 1)) * d
            if nz_n > 0:
                nz_dev += max(alpha, 1.0 / nz_n) * (abs(d) - nz_dev)
            nz_n += 1
        seen.append(v)
    return out


def _gaussian_z(level: float) -> float:
    """|z| with two-sided tail 1e-10 ** level, by Newton's method from the asymptotic guess."""
    u = min(max(level, 0.0), 1.0) * LN_1E10
    z = math.sqrt(2.0 * max(u, 1e-3))
    for _ in range(100):
        q = math.erfc(z / math.sqrt(2.0))
        f = -math.log(q) - u
        slope = math.sqrt(2.0 / math.pi) * math.exp(-z * z / 2.0) / q
        z = max(z - f / slope, 1e-9)
    return z


class _EpisodeTail:
    """A stream's tail of extreme episodes (Pareto, Hill estimate), one view's worth."""

    def __init__(self, isolated: bool) -> None:
        self.isolated = isolated
        # The reading's tail corrects its counted rate for the counter's dead time (an episode
        # blocks the next for TAIL_COOL readings): r = m / (1 - m (TAIL_COOL + 1)).
        self.dead = TAIL_COOL + 1 if isolated else 0
        self.z0 = _gaussian_z(TAIL_L0)
        self.n = self.episodes = self.run = 0
        self.log_excess = self.peak = 0.0
        self.start: int | None = None

    def scale(self) -> float:
        """Count a scored reading; z_alert / z*, z* = z0 (lam / rate)^gamma, at most 1."""
        self.n += 1
        lam = (self.episodes + TAIL_PRIOR) / (self.n + TAIL_PRIOR / TAIL_RATE)
        lam /= 1.0 - lam * self.dead
        gamma = (self.log_excess + TAIL_PRIOR / self.z0 ** 2) / (self.episodes + TAIL_PRIOR)
        z_star = self.z0 * max(lam / TAIL_RATE, 1.0) ** gamma
        return min(1.0, _gaussian_z(0.5) / z_star)

    def learn(self, level: float, z: float) -> None:
        since = self.n - self.start if self.start is not None else math.inf
        if level >= TAIL_L0:
            peak = max(_gaussian_z(level), abs(z))
            if self.run == 0 and since > TAIL_COOL:
                self.start, self.peak, self.run = self.n, peak, 1
            elif self.run > 0:
                self.peak, self.run = max(self.peak, peak), self.run + 1
        elif self.run > 0 and since > TAIL_GAP:
            if self.run == 1 or not self.isolated:
                self.episodes += 1
                self.log_excess += math.log(max(self.peak, self.z0) / self.z0)
            self.run = 0


class _Shoulder:
    """A stream's isolated exceedances of |z| = u (level SH_LEVEL) with their log excesses
    censored at ln(z0 / u); the scale of its z-scores: the episode tail's margin
    z_alert / z0 times z*_gaussian / z*, where z* = u (rate / TAIL_RATE)^gamma extrapolates the
    exceedances (prior: SH_PRIOR_READINGS readings of a Gaussian stream)."""

    def __init__(self) -> None:
        self.u, self.z0 = _gaussian_z(SH_LEVEL), _gaussian_z(TAIL_L0)
        self.cap = math.log(self.z0 / self.u)
        q = math.erfc(self.u / math.sqrt(2.0))
        self.rate0 = q * (1.0 - q) ** 2
        self.excess0, self.uncensored0 = _gaussian_excess(self.u, self.cap)
        self.seen = self.count = self.uncensored = 0
        self.log_excess = self.prev = 0.0
        self.pending: float | None = None

    def learn(self, z: float) -> None:
        a = abs(z)
        if a == 0.0:
            return
        self.seen += 1
        if self.pending is not None:
            if a <= self.u:  # isolated on both sides
                self.count += 1
                self.log_excess += min(self.pending, self.cap)
                self.uncensored += self.pending < self.cap
            self.pending = None
        if a > self.u >= self.prev:
            self.pending = math.log(a / self.u)
        self.prev = a

    def scale(self, floor: float) -> float:
        prior = SH_PRIOR_READINGS * self.rate0
        rate = (self.count + prior) / (self.seen + SH_PRIOR_READINGS)
        gamma0 = self.excess0 / self.uncensored0
        gamma = (self.log_excess + prior * self.excess0) / (self.uncensored
                                                             + prior * self.uncensored0)
        z_star = self.u * (rate / TAIL_RATE) ** max(gamma, gamma0)
        z_star0 = self.u * (self.rate0 / TAIL_RATE) ** gamma0
        return max(floor, min(1.0, _gaussian_z(0.5) / self.z0 * z_star0 / z_star))


def _gaussian_excess(u: float, cap: float) -> tuple[float, float]:
    """E[min(ln(|z| / u), cap) | |z| > u] of a Gaussian, and P(ln(|z| / u) < cap | |z| > u):
    Simpson's rule up to the censoring point, the rest in closed form."""
    v = u * math.exp(cap)
    n = 20000
    h = (v - u) / n
    body = 0.0
    for i in range(n + 1):
        x = u + i * h
        weight = 1 if i in (0, n) else (4 if i % 2 else 2)
        body += weight * math.log(x / u) * math.exp(-0.5 * x * x)
    body *= h / 3.0
    tail_u = math.sqrt(math.pi / 2.0) * math.erfc(u / math.sqrt(2.0))
    tail_v = math.sqrt(math.pi / 2.0) * math.erfc(v / math.sqrt(2.0))
    return (body + cap * tail_v) / tail_u, 1.0 - tail_v / tail_u


def own_tail_levels(z_season: list[float], warming: list[int],
                    floor: float = 1.0) -> tuple[list[float], list[float]]:
    """The seasonal view's levels scaled by the stream's own tails, and unscaled.

    Isolated extreme episodes of the level (one reading at >= TAIL_L0) scale the seasonal
    z-score; every episode of the persistent view's own level scales the persistent z-score.
    Each tail: episodes at ``lam`` per scored reading with Hill mean ``gamma`` of ln(peak / z0);
    the z is scaled by z_alert / z*, z* = z0 (lam / rate)^gamma, when that is under 1. With a
    ``floor`` under 1 the seasonal z-score is also scaled by its shoulder, never below it.
    """
    reading, persistent = _EpisodeTail(isolated=True), _EpisodeTail(isolated=False)
    shoulder = _Shoulder()
    scaled, unscaled = [], []
    for z, zp, warm in zip(z_season, persistent_zs(z_season), warming, strict=True):

        def season(f: float, fp: float, z: float = z, zp: float = zp) -> float:
            return max(_tail(z * f), min(1.0, _neglog_tail(zp * fp) / LN_1E10))

        level = season(1.0, 1.0)
        unscaled.append(level)
        if warm:
            scaled.append(level)
            continue
        f = reading.scale()
        shoulder.learn(z)
        if floor < 1.0:
            f = min(f, shoulder.scale(floor))
        scaled.append(season(f, persistent.scale()))
        persistent.learn(min(1.0, _neglog_tail(zp) / LN_1E10), zp)
        reading.learn(level, z)
    return scaled, unscaled


def visit_rescaled(slots: list[int], z_season: list[float]) -> list[float]:
    """Seasonal z-scores divided by how much larger |z| runs at their position of a profile
    slot's visit than in the steady rest of the visits, when more than 1.25 times.

    Written from the rules, not the kernel: a visit begins when the slot differs from the last
    reading's; a slot's first visit ever is neither rescaled nor learned at positions 0-6;
    positions 0-6 each keep a mean of min(|z|, 3) over the other visits (weight
    max(0.02, 1/visits)), later positions (of every visit) one steady mean (weight
    max(1/600, 1/count)); a z at a position whose mean exceeds 1.25 times the steady one is
    divided by their ratio once more than 20 such visits began and more than 100 steady
    readings were learned. Unscored (0) and NaN z are passed through and not learned.
    """
    out = []
    last = None
    seen_slots: set[int] = set()
    first_visit = False
    k = visits = 0
    means = [0.0] * 7
    steady = 0.0
    steady_n = 0
    for b, z in zip(slots, z_season, strict=True):
        if b != last:
            last, k = b, 0
            first_visit = b not in seen_slots
            visits += 0 if first_visit else 1
        else:
            k += 1
        seen_slots.add(b)
        if z == 0.0 or math.isnan(z):
            out.append(z)
            continue
        a = min(abs(z), 3.0)
        if k >= 7:
            steady_n += 1
            steady += max(1.0 / 600.0, 1.0 / steady_n) * (a - steady)
            out.append(z)
            continue
        if first_visit:
            out.append(z)
            continue
        if visits > 20 and steady_n > 100 and means[k] > 1.25 * max(steady, 1e-9):
            z = z / (means[k] / max(steady, 1e-9))
        out.append(z)
        means[k] += max(0.02, 1.0 / visits) * (a - means[k])
    return out
