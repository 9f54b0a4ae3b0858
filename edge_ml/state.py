"""A pipeline's state as a document: export, restore, graft, and the alerts after a restore.

:class:`~edge_ml.pipeline.Pipeline` processes and flushes; this module, one layer above it,
takes every piece of its per-stream state out as plain arrays (``{"header", "state"}``, what
:mod:`edge_ml.checkpoint_format` encodes), puts such a document back in, grafts the streams of
one pipeline into another (``edge-ml train``), and after a restore brings the alerts table and
MQTT in line with the alert state that came back. Each function takes the pipeline it works on
and runs on that pipeline's owner thread.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from edge_ml import __version__
from edge_ml.alerts import AlertTracker, stored_explanation
from edge_ml.checkpoint_format import (
    SCHEMA_VERSION,
    detector_arrays_added_since,
    drift_arrays_added_since,
)
from edge_ml.devices import Devices, merge_exports
from edge_ml.drift import DriftMonitor
from edge_ml.errors import CheckpointError, StorageError
from edge_ml.features import FeatureState
from edge_ml.model.detector import describe, make_detector
from edge_ml.pipeline import Pipeline, drift_params
from edge_ml.records import AlertEvent
from edge_ml.scales import ValueScales
from edge_ml.slots import SnapshotPool, place_rows
from edge_ml.streams import StreamRegistry

log = logging.getLogger(__name__)


def compatibility(pipeline: Pipeline) -> dict[str, Any]:
    """Header entries a checkpoint must match to be restored into ``pipeline``."""
    return {
        "params": describe(pipeline.params),
        "features": pipeline.features.describe(),
    }


def export_state(pipeline: Pipeline, pool: SnapshotPool | None = None) -> dict[str, Any]:
    """Every piece of per-stream state as copies (``{"header", "state"}``), for a checkpoint.

    Cheap enough for the worker thread (array copies only); encoding is done elsewhere.
    With a ``pool`` the copies reuse the previous snapshot's buffers: the caller must be
    done with that snapshot (encoded) before asking for the next.
    """
    used = len(pipeline.streams)
    header = {
        "schema_version": SCHEMA_VERSION,
        "package_version": __version__,
        **compatibility(pipeline),
        "seed": pipeline.params.seed,
        "created_at": time.time(),
        "readings_total": pipeline.readings_total,
        "rejects_total": pipeline.rejects_total,
        "streams": used,
    }
    state = {
        "names": list(pipeline.streams.names),
        "stats": pipeline.streams.stats.export(used, pool, "stats."),
        "features": pipeline.features.arrays.export(used, pool, "features."),
        "scales": pipeline.scales.arrays.export(used, pool, "scales."),
        "detector": pipeline.detector.export(used, pool),
        "alerts": pipeline.alerts.state.export(used, pool, "alerts."),
        "open_alerts": [[slot, alert_id, opened_at]
                        for slot, (alert_id, opened_at) in pipeline.alerts.open_alerts.items()],
        "drift": pipeline.drift.state.export(used, pool, "drift."),
        # Devices and their joint view (issue 14). Optional on load: a checkpoint from before
        # devices existed loads with none, and its devices form again as messages arrive.
        "devices": pipeline.devices.export(),
    }
    return {"header": header, "state": state}


def restore_state(pipeline: Pipeline, document: dict[str, Any]) -> None:
    """Load a decoded checkpoint; on any mismatch raise CheckpointError, leaving state as is.

    The stages are rebuilt aside and swapped in only when every one of them loaded.
    """
    config = pipeline.config
    header, state = document["header"], document["state"]
    try:
        names = [str(n) for n in state["names"]]
        capacity = max(len(names), 16)
        streams = StreamRegistry(capacity)
        streams.restore(names, state["stats"])
        features = FeatureState(config.features.season_s, config.features.season_bins, capacity)
        features.arrays.restore(state["features"])
        scales = ValueScales(capacity)
        if int(header["schema_version"]) >= 10:
            scales.restore(state["scales"], int(header["schema_version"]))
        else:  # before scales: every stream learned raw values and stays raw
            scales.settle(len(names))
        detector = make_detector(pipeline.params, capacity)
        if names:  # an empty forest cannot be restored (nor needs to be)
            # An older schema's checkpoint lacks state added since: it starts neutral.
            added = detector_arrays_added_since(int(header["schema_version"]))
            detector.restore(state["detector"], added)
            if "first_ts" in added:
                # A stream's age decides how far its young profile slots are trusted
                # (kernels.window.slot_covered): the stream statistics have its first reading.
                detector.state.first_ts[:len(names)] = streams.stats.first_ts[:len(names)]
            if "age_readings" in added:
                # With first_ts, the stream's sampling interval (kernels.window.slot_alpha):
                # the stream statistics have its readings since.
                detector.state.age_readings[:len(names)] = streams.stats.readings[:len(names)]
        alerts = AlertTracker(config.alerts, capacity)
        alerts.state.restore(state["alerts"])
        alerts.open_alerts = {int(slot): (str(alert_id), float(opened_at))
                              for slot, alert_id, opened_at in state["open_alerts"]}
        drift = DriftMonitor(drift_params(config), capacity)
        drift.state.restore(state["drift"],
                            drift_arrays_added_since(int(header["schema_version"])))
        devices = Devices(pipeline.devices.patterns, pipeline.devices.stale_s)
        if state.get("devices"):
            devices.restore(state["devices"], {name: i for i, name in enumerate(names)})
        for part in (features.arrays, scales.arrays, alerts.state, drift.state):
            part.grow(streams.capacity)
        detector.grow(streams.capacity)
        readings_total = int(header["readings_total"])
        if any(len(a) != len(names) for a in state["stats"].values()):
            raise ValueError("stream statistics disagree with the stream names")
    except (KeyError, TypeError, ValueError, NotImplementedError) as exc:
        raise CheckpointError(f"state does not fit this pipeline: {exc}") from exc
    pipeline.streams, pipeline.features, pipeline.detector = streams, features, detector
    pipeline.scales = scales
    pipeline.alerts, pipeline.drift, pipeline.devices = alerts, drift, devices
    pipeline.readings_total = readings_total
    pipeline.rejects_total = int(header.get("rejects_total", 0))
    # What the checkpoint counted was already written to the streams table (or, for a
    # trained checkpoint, is history that must not be counted as live readings).
    streams.stats.flushed_readings[:] = streams.stats.readings


def graft(pipeline: Pipeline, document: dict[str, Any]) -> list[str]:
    """Put every stream of another pipeline's :func:`export_state` into ``pipeline``.

    A stream ``pipeline`` does not have is added; one it has is replaced whole (model,
    features, statistics, alert and drift state). Every other stream, and the counters, stay
    as they are: this is how ``edge-ml train`` adds a warm-started stream to a fleet. Devices
    are merged by name the same way (a device learned from a multi-column history file joins
    or replaces the fleet's device of that name, with its joint model). The
    grafted streams' alerts are dropped (history alerts are not live ones). Returns the
    grafted stream names.
    """
    own = export_state(pipeline)
    base, other = own["state"], document["state"]
    names = list(base["names"])
    slot_of = {name: i for i, name in enumerate(names)}
    grafted = [str(n) for n in other["names"]]
    targets = []
    for name in grafted:
        if name not in slot_of:
            slot_of[name] = len(names)
            names.append(name)
        targets.append(slot_of[name])
    merged: dict[str, Any] = {"names": names}
    try:
        for section in ("stats", "features", "scales", "detector", "alerts", "drift"):
            arrays = {}
            for key, array in base[section].items():
                try:
                    arrays[key] = place_rows(array, other[section][key], targets, len(names))
                except ValueError as exc:
                    raise ValueError(f"{section}.{key}: {exc}") from None
            merged[section] = arrays
        # Devices by name, their fields by stream name: the slots may move.
        merged["devices"] = merge_exports(base.get("devices"), other.get("devices"))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot graft streams: {exc}") from exc
    replaced = set(targets)
    merged["open_alerts"] = [entry for entry in base["open_alerts"]
                             if entry[0] not in replaced]
    own["header"]["streams"] = len(names)
    restore_state(pipeline, {"header": own["header"], "state": merged})
    for slot in targets:
        pipeline.alerts.close(slot)
    return grafted


def reconcile_alerts(pipeline: Pipeline, reason: str) -> list[AlertEvent]:
    """Make the alerts table, MQTT and the restored alert state agree; after a restore.

    The database (with any unwritten events) is the record of what was announced:

    - an alert open there but not in this state (an unclean stop lost it, or the state
      came from an older checkpoint) is resolved: stored with ``reason`` and published
      with state "resolved", so subscribers leave the alarm and pruning can delete it;
    - an alert open in this state but not open there (resolved after the checkpoint was
      taken, or never announced: trained or imported state) is closed in the state, with
      nothing published; a level still high opens a new alert after debounce and cooldown.

    Returns the resolve events.
    """
    if pipeline.storage is None:
        return []
    try:
        rows = pipeline.storage.alerts(open_only=True, limit=None)
    except StorageError as exc:  # the next restart or reload tries again
        log.error("cannot read open alerts to reconcile them (%s): %s", reason, exc)
        return []
    announced = {row["alert_id"]: row for row in rows}
    for event in pipeline.pending.alerts:  # a failed flush: not in the database yet
        if event.state == "open":
            announced[event.alert_id] = event.to_dict()
        else:
            announced.pop(event.alert_id, None)
    held = {alert_id: slot for slot, (alert_id, _) in pipeline.alerts.open_alerts.items()}
    for alert_id, slot in held.items():
        if alert_id in announced:  # its resolve will say why it opened, as the open did
            why = stored_explanation(announced[alert_id])
            if why is not None:
                pipeline.alerts.explanations[slot] = why
        else:
            pipeline.alerts.close(slot)
            log.info("alert %s on %s is open in the restored state but not in the "
                     "database: closed", alert_id, pipeline.streams.names[slot])
    now = time.time()
    events = [
        AlertEvent(alert_id, row["stream"], "resolved", row["score"], math.nan, now,
                   row["opened_at"], now, row["severity"], reason,
                   *(stored_explanation(row) or (None,) * 3))
        for alert_id, row in announced.items() if alert_id not in held
    ]
    for event in events:
        log.info("alert %s on %s resolved (%s): the restored state does not hold it",
                 event.alert_id, event.stream, reason)
    if events:
        pipeline.pending.alerts.extend(events)
        if pipeline.publisher is not None:
            pipeline.publisher.alerts(events)
        pipeline.flush()
    return events
