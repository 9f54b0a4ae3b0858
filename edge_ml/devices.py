"""Devices: the fields that arrive together, and their joint view (:mod:`edge_ml.kernels.joint`).

A device is named after the topic whose JSON/msgpack map or firmware frame carried two or more
fields (``sensors/pump1`` for ``sensors/pump1/current``, ``sensors/pump1/flow``, ...), or after
a ``[devices] patterns`` filter that groups streams of several topics (``"sensors/+/+"``: the
levels before its last wildcard name the device).
Its joint level is alerted on a stream of its own, ``<device>/joint``, beside the fields' own
streams; an alert there has view ``"joint"``.
Each scored row also gets the device's ranking score (``JointOutput.score``, the raw score of
the device's own forest): replay writes it as ``device_score``; the daemon does not publish or
store it (its alerts come from the level).

A device holds at most ``MAX_DEVICE_FIELDS`` fields, in the order they were first seen; a
field beyond that stays a stream of its own, outside the joint view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_ml.kernels.device_forest import JOINT_HEIGHT, JOINT_TREES, device_trees
from edge_ml.kernels.heap_deltas import arrays_with_deltas, arrays_with_masses
from edge_ml.kernels.joint import MAX_DEVICE_FIELDS, joint_batch
from edge_ml.slots import SlotArrays, SlotField, place_rows

JOINT_SUFFIX = "/joint"
# Seconds a field's last value may be old and still complete a row (fields at other rates).
DEFAULT_STALE_S = 3600.0


def pattern_device(pattern: str, stream: str) -> str | None:
    """The device ``stream`` belongs to by an MQTT filter: its levels before the filter's last
    wildcard (``+`` one level, ``#`` the rest), or None when it does not match.

    Examples
    --------
    >>> pattern_device("sensors/pump1/+", "sensors/pump1/flow")
    'sensors/pump1'
    >>> pattern_device("sensors/+/+", "sensors/pump2/current")
    'sensors/pump2'
    >>> pattern_device("sensors/+/flow", "sensors/pump1/current") is None
    True
    >>> pattern_device("plant/+/#", "plant/line1/pump/flow")
    'plant/line1'
    """
    want, have = pattern.split("/"), stream.split("/")
    last = max(i for i, part in enumerate(want) if part in ("+", "#"))
    for i, part in enumerate(want):
        if part == "#":
            break
        if i >= len(have) or (part != "+" and part != have[i]):
            return None
    else:
        if len(want) != len(have):
            return None
    return "/".join(have[:last]) or None


@dataclass(frozen=True)
class JointOutput:
    """Per reading of a micro-batch: the device scored on it (-1: none) and why."""

    device: np.ndarray  # int64[B]
    level: np.ndarray  # float64[B]
    score: np.ndarray  # float64[B], the device forest's raw score (ranks rows; no alerts)
    resid: np.ndarray  # float64[B, MAX_DEVICE_FIELDS], conditional residuals in deviations
    worst: np.ndarray  # int64[B], the field with the largest scaled residual
    expected: np.ndarray  # float64[B, 2], that field's range as the others predict it
    warming: np.ndarray  # uint8[B], 1 while the device is still learning its first rows


class Devices:
    """Every device's fields and joint-view state; stream slots mapped to (device, field)."""

    def __init__(self, patterns: list[str] | None = None,
                 stale_s: float = DEFAULT_STALE_S, capacity: int = 4) -> None:
        self.patterns = list(patterns or [])  # [devices] patterns, MQTT filters
        self.stale_s = stale_s
        self.names: list[str] = []
        self.fields: list[list[str]] = []  # per device, its field streams in order
        self.index: dict[str, int] = {}
        self.state = _device_arrays(capacity)
        self.slot_device = np.full(16, -1, dtype=np.int64)
        self.slot_field = np.zeros(16, dtype=np.int64)
        self.joint_slot: list[int] = []  # per device, the slot of its "<device>/joint" stream
        # Devices with one field held so far (by pattern): slot -> stream, until a second comes.
        self.waiting: dict[str, dict[int, str]] = {}
        # The device forests' structures, one per field count in use (built when first needed,
        # shared by every device of that many fields): tree_of_k[k] indexes them.
        self.tree_of_k = np.full(MAX_DEVICE_FIELDS + 1, -1, dtype=np.int64)
        self.tree_feature = np.zeros((0, JOINT_TREES, 2**JOINT_HEIGHT - 1), dtype=np.uint8)
        self.tree_threshold = np.zeros((0, JOINT_TREES, 2**JOINT_HEIGHT - 1))

    def __len__(self) -> int:
        return len(self.names)

    def device_of(self, stream: str, message_device: str | None) -> str | None:
        """The device ``stream`` belongs to: a matching pattern first, else its message's."""
        for pattern in self.patterns:
            device = pattern_device(pattern, stream)
            if device is not None:
                return device
        return message_device

    def assign(self, names: list[str], slots: np.ndarray, message_devices: dict[str, str],
               registry_names: list[str], room: int = 1 << 62) -> list[str]:
        """Put new streams of a batch into their devices; the joint streams of new devices.

        ``message_devices`` maps a stream to the topic whose map carried it with others
        (``edge_ml.decode``). A device is created once two of its fields are held, and only
        while there is ``room`` for its joint stream (``[daemon] max_streams``). Returns the
        ``<device>/joint`` stream names of devices created now, for the caller to give slots
        (:meth:`bind_joint`).
        """
        created: list[str] = []
        if len(self.slot_device) < len(registry_names):
            grow = max(len(registry_names), 2 * len(self.slot_device))
            self.slot_device = np.concatenate(
                [self.slot_device, np.full(grow - len(self.slot_device), -1, np.int64)])
            self.slot_field = np.concatenate(
                [self.slot_field, np.zeros(grow - len(self.slot_field), np.int64)])
        if not (message_devices or self.patterns):
            return created
        pending: dict[str, dict[int, str]] = {}  # device -> its new fields, slot -> stream
        for name, slot in zip(names, slots.tolist(), strict=True):
            if self.slot_device[slot] >= 0 or name.endswith(JOINT_SUFFIX):
                continue
            device = self.device_of(name, message_devices.get(name))
            if device is not None:
                pending.setdefault(device, dict(self.waiting.get(device, {})))[slot] = name
        for device, members in pending.items():
            d = self.index.get(device)
            if d is None:
                if len(members) < 2 or len(created) >= room \
                        or device + JOINT_SUFFIX in registry_names:
                    # One field is no relationship yet (a pattern's other topics may come
                    # later); or there is no room for the joint stream, or its name is taken.
                    self.waiting[device] = members
                    continue
                self.waiting.pop(device, None)
                d = self._add(device)
                created.append(device + JOINT_SUFFIX)
            for slot, name in members.items():
                self._join(d, name, slot)
        return created

    def _join(self, d: int, name: str, slot: int) -> None:
        """Field ``name`` (stream slot ``slot``) joins device ``d`` if it has room."""
        if len(self.fields[d]) >= MAX_DEVICE_FIELDS:
            return
        self.slot_device[slot] = d
        self.slot_field[slot] = len(self.fields[d])
        self.fields[d].append(name)
        self.state.n_fields[d] = len(self.fields[d])
        self._trees_for(len(self.fields[d]))

    def _trees_for(self, k: int) -> None:
        """Build the forest structure of ``k`` fields if no device has needed it yet."""
        if k < 2 or self.tree_of_k[k] >= 0:
            return
        feature, threshold = device_trees(k)
        self.tree_of_k[k] = len(self.tree_feature)
        self.tree_feature = np.concatenate([self.tree_feature, feature[None]])
        self.tree_threshold = np.concatenate([self.tree_threshold, threshold[None]])

    def _add(self, device: str) -> int:
        d = len(self.names)
        if d >= self.state.capacity:
            self.state.grow(2 * self.state.capacity)
        self.names.append(device)
        self.fields.append([])
        self.index[device] = d
        self.joint_slot.append(-1)
        return d

    def bind_joint(self, joint_names: list[str], slots: np.ndarray) -> None:
        """Record the stream slots of the joint streams :meth:`assign` asked for."""
        for name, slot in zip(joint_names, slots.tolist(), strict=True):
            self.joint_slot[self.index[name.removesuffix(JOINT_SUFFIX)]] = slot

    def process(self, slots: np.ndarray, values: np.ndarray, ts: np.ndarray) -> JointOutput:
        s = self.state
        device, level, score, resid, worst, expected, warming = joint_batch(
            self.slot_device, self.slot_field, slots, values, ts, self.stale_s,
            s.n_fields, s.last, s.last_ts, s.fresh, s.mean, s.cov, s.rows, s.rdev,
            self.tree_of_k, self.tree_feature, self.tree_threshold, s.mass, s.ref, s.count,
            s.first_window, s.forest_k, s.smean, s.sdev, s.srows, s.evidence, s.d2q90,
            s.chronic, s.unfit)
        return JointOutput(device, level, score, resid, worst, expected, warming)

    def explanation(self, d: int, resid: np.ndarray, worst: int,
                    expected: np.ndarray) -> tuple[str, dict[str, float], tuple[float, float]]:
        """``("joint", {field: share}, expected range of the worst field)`` of one scored row.

        Shares are the squared residuals' shares: the worst field (largest residual for its
        own scale) first, then largest first, down to the fields that make up 90% of the total
        (at most three).
        """
        k = len(self.fields[d])
        sq = resid[:k] ** 2
        total = float(sq.sum()) or 1.0
        # The worst field first: the expected range is its range.
        order = [worst] + [j for j in np.argsort(-sq, kind="stable").tolist() if j != worst]
        shares: dict[str, float] = {}
        covered = 0.0
        for j in order[:3]:
            shares[self.fields[d][j]] = round(float(sq[j]) / total, 3)
            covered += float(sq[j]) / total
            if covered >= 0.9:
                break
        return "joint", shares, (float(expected[0]), float(expected[1]))

    # -- checkpoints ------------------------------------------------------------------------
    def export(self) -> dict[str, object]:
        used = len(self.names)
        arrays = {f"devices.{name}": np.array(getattr(self.state, name)[:used])
                  for name in _FIELD_NAMES}
        # As the streams' forests, masses leave as deltas: mostly zeros.
        arrays_with_deltas(arrays, "devices.mass")
        return {"names": list(self.names), "fields": [list(f) for f in self.fields],
                "arrays": arrays}

    def restore(self, data: dict[str, object], slot_of: dict[str, int]) -> None:
        """Put exported devices back, with their streams at the slots ``slot_of`` names."""
        names = list(data["names"])  # type: ignore[call-overload]
        fields = [list(f) for f in data["fields"]]  # type: ignore[attr-defined]
        arrays = arrays_with_masses(data["arrays"], "devices.mass")  # type: ignore[arg-type]
        self.names, self.fields, self.index = [], [], {}
        self.joint_slot = []
        self.state = _device_arrays(max(4, len(names)))
        size = max(16, max(slot_of.values(), default=0) + 1)
        self.slot_device = np.full(size, -1, dtype=np.int64)
        self.slot_field = np.zeros(size, dtype=np.int64)
        for name, members in zip(names, fields, strict=True):
            d = self._add(name)
            self.fields[d] = members
            self.joint_slot[d] = slot_of.get(name + JOINT_SUFFIX, -1)
            for j, stream in enumerate(members):
                slot = slot_of.get(stream)
                if slot is not None and slot < len(self.slot_device):
                    self.slot_device[slot] = d
                    self.slot_field[slot] = j
        for members in fields:
            self._trees_for(len(members))
        for name in _FIELD_NAMES:
            key = f"devices.{name}"
            if key not in arrays:
                continue  # a checkpoint from before the device forest: it grows anew
            restored = np.asarray(arrays[key])
            target = getattr(self.state, name)[:len(names)]
            # Checkpoints from before MAX_DEVICE_FIELDS grew (8) hold smaller field axes.
            target[tuple(slice(0, n) for n in restored.shape)] = restored


def merge_exports(base: dict[str, object] | None,
                  other: dict[str, object] | None) -> dict[str, object] | None:
    """The devices of two :meth:`Devices.export` documents: ``other``'s replace ``base``'s of
    the same name, the rest of both are kept (how ``edge-ml train`` grafts a device learned from
    history onto a fleet). Devices are matched by name and their fields by stream name, so
    the stream slots of either side do not matter here.
    """
    if not other or not other.get("names"):
        return base
    if not base or not base.get("names"):
        return other
    names = list(base["names"])  # type: ignore[call-overload]
    fields = [list(f) for f in base["fields"]]  # type: ignore[attr-defined]
    index = {name: d for d, name in enumerate(names)}
    rows = []  # for each of other's devices, its row in the merged arrays
    for name, members in zip(other["names"], other["fields"], strict=True):  # type: ignore[call-overload]
        if name not in index:
            index[name] = len(names)
            names.append(name)
            fields.append([])
        fields[index[name]] = list(members)
        rows.append(index[name])
    arrays: dict[str, np.ndarray] = {}
    theirs = other["arrays"]
    for key, mine in base["arrays"].items():  # type: ignore[attr-defined]
        try:
            arrays[key] = place_rows(mine, np.asarray(theirs[key]),  # type: ignore[index]
                                     rows, len(names))
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    return {"names": names, "fields": fields, "arrays": arrays}


_FIELD_NAMES = ("n_fields", "last", "last_ts", "fresh", "mean", "cov", "rows", "rdev",
                "mass", "ref", "count", "first_window", "forest_k", "smean", "sdev", "srows",
                "evidence", "d2q90", "chronic", "unfit")


def _device_arrays(capacity: int) -> SlotArrays:
    f = MAX_DEVICE_FIELDS
    return SlotArrays(
        [
            SlotField("n_fields", np.int64),
            SlotField("last", np.float64, 0.0, (f,)),
            SlotField("last_ts", np.float64, 0.0, (f,)),
            SlotField("fresh", np.uint8, 0, (f,)),
            SlotField("mean", np.float64, 0.0, (f,)),
            SlotField("cov", np.float64, 0.0, (f, f)),
            SlotField("rows", np.int64),
            SlotField("rdev", np.float64, 0.0, (f,)),
            # The device forest (kernels.joint): 20 KB of masses per device.
            SlotField("mass", np.uint8, 0, (JOINT_TREES, 2**(JOINT_HEIGHT + 1) - 1, 2)),
            SlotField("ref", np.uint8),
            SlotField("count", np.int32),
            SlotField("first_window", np.uint8, 1),
            SlotField("forest_k", np.int64),
            SlotField("smean", np.float64, 0.0, (f,)),
            SlotField("sdev", np.float64, 0.0, (f,)),
            SlotField("srows", np.int64),
            SlotField("evidence", np.float64),  # the joint view's sustained evidence
            # log of its rows' running 90th percentile squared Mahalanobis distance
            SlotField("d2q90", np.float64),
            SlotField("chronic", np.float64),  # share of its rows held (EWMA)
            SlotField("unfit", np.uint8),  # 1: evidence set aside (held too often)
        ],
        capacity,
    )
