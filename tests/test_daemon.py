"""The running daemon under faults: a full disk, bad input, a refused subscription.

kill -9 while writing has its own file, tests/test_sigkill.py.

Real processes throughout: mosquitto from the ``broker`` fixture, the daemon as
``python -m edge_ml run``; counts are read back from the SQLite counters (``edge-ml status``).
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from daemon_helpers import DaemonProcess, Observer, counters, status, wait_for, write_config

from edge_ml.localbroker import LocalBroker


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_full_disk_keeps_scoring_and_recovers(tmp_path: Path, broker: LocalBroker,
                                              daemon_env: tuple[Path, Path]) -> None:
    """RLIMIT_FSIZE stands in for a full file system (writes past the limit fail with EFBIG).

    Mounting a tiny tmpfs would need root and a mount namespace the test runner may not allow;
    the daemon sees the same error path (``sqlite3.OperationalError``) either way.
    """
    config, db = daemon_env
    # Create the database first, at its normal size.
    first = DaemonProcess(config, tmp_path / "daemon-0.log")
    # The file is created before the daemon handles SIGTERM (it would die of it): wait for the
    # "starting" line too, logged once its signal handlers are in place.
    wait_for(lambda: db.exists() and "starting" in first.log(), 30, "database created")
    assert first.stop() == 0, first.log()
    limit = db.stat().st_size + 4096

    def limit_writes() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    log = (tmp_path / "daemon-1.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "edge_ml", "run", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit_writes)
    watch = Observer(broker, ["edge-ml/status/health", "edge-ml/alerts/#"],
                     client_id="fault-watch")
    try:
        wait_for(lambda: watch.on("edge-ml/status/health"), 30, "health")
        rng = np.random.default_rng(1)
        for i in range(3000):
            value = 40.0 if i > 1000 and i % 250 == 0 else float(rng.normal())
            watch.client.publish("sensors/disk/a", str(value), qos=1)
            if i % 500 == 0:
                time.sleep(0.05)

        def faulted() -> bool:
            health = [json.loads(p) for p in watch.on("edge-ml/status/health")]
            return any(h.get("storage_faults", 0) > 0 and h.get("storage_error") for h in health)

        wait_for(faulted, 30, "a storage fault in the health")
        wait_for(lambda: json.loads(watch.on("edge-ml/status/health")[-1])["readings_total"]
                 >= 3000, 30, "all readings scored despite the full disk")
        assert proc.poll() is None
        alerts = [a for a in watch.json_under("edge-ml/alerts/") if a["state"] == "open"]
        assert alerts, "alerts are still published while storage fails"
        # Space returns.
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE,
                         (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        wait_for(lambda: json.loads(watch.on("edge-ml/status/health")[-1])["storage_error"]
                 is None, 30, "storage recovered")
    finally:
        watch.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
    assert counters(db)["readings_total"] == 3000


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bad_input_at_the_daemon_is_counted_exactly(
    tmp_path: Path, broker: LocalBroker, daemon_env: tuple[Path, Path],
) -> None:
    config, db = daemon_env
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    pub = Observer(broker, ["edge-ml/status"], client_id="fault-publisher")
    bad = [b"", b"hello", b"nan", b"inf", b"1e999", b'{"value": NaN}', b"{" * 5000,
           b'{"value": "x"}', b'{"value": true}', b'{"value": 1' + b"0" * 400 + b"}",
           b"\xff\xfe\x00", b"[" * 100_000, b"1" * (1 << 20), b'{"a": {"b": {"c": {"d": 1}}}}',
           b'{"ts": "yesterday", "value": 1}', b'{"ts": 1e300, "value": 1}']
    try:
        wait_for(lambda: b"online" in pub.on("edge-ml/status"), 30, "daemon online")
        good = 0
        for i in range(40):
            for payload in bad:
                pub.client.publish("sensors/fuzz/a", payload, qos=1)
            pub.client.publish("sensors/fuzz/a", str(float(i)), qos=1)
            pub.client.publish("sensors/fuzz/\u00e9t\u00e9", json.dumps({"value": i}), qos=1)
            good += 2
        pub.client.publish("sensors/fuzz/ok", "1.0", qos=1).wait_for_publish(10)
        good += 1
        n_bad = 40 * len(bad)
        wait_for(lambda: counters(db).get("readings_total", 0) >= good
                 and counters(db).get("rejects_total", 0) >= n_bad, 60, "all counted")
        time.sleep(0.5)
        stored = counters(db)
        assert stored["readings_total"] == good
        assert stored["rejects_total"] == n_bad
        assert daemon.proc.poll() is None
    finally:
        pub.close()
        assert daemon.stop() == 0, daemon.log()


# -- a subscription the broker refuses ------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_refused_subscription_is_in_the_health_and_the_daemon_runs_on(tmp_path: Path) -> None:
    # The broker lets clients subscribe to other/# only, as an ACL would: sensors/# (the
    # daemon's default filter) gets SUBACK 0x80 and no reading would ever arrive.
    with LocalBroker(workdir=tmp_path / "broker", subscribe_only=("other/#",)) as broker:
        db = tmp_path / "state" / "edge-ml.db"
        config = write_config(tmp_path / "edge-ml.toml", broker, db)
        daemon = DaemonProcess(config, tmp_path / "daemon.log")
        try:
            def refused() -> dict[str, Any] | None:
                health = status(db).get("health") if db.exists() else None
                return health if health and health.get("mqtt_subscribe_refused") else None

            health = wait_for(refused, 60, "the refusal in the health record")
            # $SYS (refused too) is optional: no error, and no drop count to report.
            assert health["mqtt_subscribe_refused"] == ["sensors/#"]
            assert health["broker_dropped"] is None
            assert "sensors/#" in health["mqtt_error"]
            assert health["connected"] is True
            assert "refused the subscription to sensors/#" in daemon.log()
            time.sleep(1.0)
            assert daemon.proc.poll() is None, daemon.log()
        finally:
            assert daemon.stop() == 0, daemon.log()
