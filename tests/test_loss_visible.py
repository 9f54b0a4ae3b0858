"""Loss made visible: what a stock broker drops, and gaps in firmware frames' sequence numbers.

A stock mosquitto keeps at most 1,000 queued messages per client (``max_queued_messages``) and
drops the rest; those never reach the daemon, so only the broker's ``$SYS`` counter can tell.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import msgpack
import paho.mqtt.client as mqtt
import pytest
from daemon_helpers import DaemonProcess, stored_health, wait_for, write_config
from pipeline_helpers import make_pipeline

from edge_ml.localbroker import LocalBroker
from edge_ml.metrics import exposition


def _frame(dev: str, seq: int, value: float) -> bytes:
    return msgpack.packb({"v": 1, "dev": dev, "seq": seq, "ts": 1.7e9 + seq,
                          "m": {"t": value}})


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_stock_broker_dropping_for_a_stopped_daemon_shows_in_health_and_status(
    tmp_path: Path,
) -> None:
    with LocalBroker(workdir=tmp_path / "broker", max_queued_messages=1000,
                     max_inflight_messages=20, sys_interval=1) as broker:
        db = tmp_path / "state" / "edge-ml.db"
        config = write_config(tmp_path / "edge-ml.toml", broker, db)
        daemon = DaemonProcess(config, tmp_path / "daemon.log")
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="loss-publisher")
        pub.max_inflight_messages_set(1000)
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        try:
            wait_for(lambda: stored_health(db).get("connected") is True
                     and stored_health(db).get("broker_dropped") == 0, 60,
                     "connected, the broker's drop counter heard")
            # Firmware frames with a gap of 2 (seq 3 and 4 lost) and a restart (no gap).
            for seq in (0, 1, 2, 5, 6, 0, 1):
                pub.publish("sensors/fw", _frame("node-7", seq, 20.0), qos=1).wait_for_publish(5)
            wait_for(lambda: stored_health(db).get("frames_missing") == 2, 30, "2 frames missing")

            daemon.proc.send_signal(signal.SIGSTOP)  # a slow/stuck consumer
            infos = [pub.publish("sensors/loss", str(20.0 + i % 5), qos=1)
                     for i in range(3000)]
            for info in infos:
                info.wait_for_publish(30)
            daemon.proc.send_signal(signal.SIGCONT)

            def dropped() -> int:
                return int(stored_health(db).get("broker_dropped") or 0)

            wait_for(lambda: dropped() >= 1500, 60, "the broker's drops in the health")
            # What arrived plus what the broker dropped is what was sent.
            wait_for(lambda: int(stored_health(db).get("readings_total") or 0) + dropped() >= 3007,
                     60, "every reading accounted for")
            health = stored_health(db)
            assert 1800 <= dropped() <= 2000, health
            assert int(health["readings_total"]) + dropped() == 3007, health
            out = subprocess.run([sys.executable, "-m", "edge_ml", "status", "--db", str(db)],
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert f"{dropped()} dropped by the broker since connected" in out.stdout, out.stdout
            assert "2 firmware frames missing" in out.stdout
            assert "dropped" in daemon.log() and "max_queued_messages" in daemon.log()
        finally:
            pub.loop_stop()
            pub.disconnect()
            if daemon.proc.poll() is None:
                daemon.proc.send_signal(signal.SIGCONT)
            daemon.stop()


def test_frame_gaps_wrap_and_restarts_at_the_pipeline() -> None:
    p = make_pipeline()
    seqs = [10, 11, 14, 2**32 - 1 - 100, 2**32 - 2, 2**32 - 1, 0, 3, 3, 0, 1]
    # 12, 13 lost; a jump back (restart); 2**32-2 after -101: 98 lost; wrap to 0: none;
    # 1, 2 lost; 3 again: a resend; back to 0: a restart.
    p.process_messages([("sensors/fw", _frame("node-1", s, 1.0), 1.7e9) for s in seqs])
    # node-2: 6 lost; a restart near the top of the range; 2**32 - 1 and 0 lost across the wrap.
    p.process_messages([("sensors/fw", _frame("node-2", s, 1.0), 1.7e9)
                        for s in (5, 7, 2**32 - 2, 1)])
    assert p.frames.by_device == {"node-1": 2 + 98 + 2, "node-2": 1 + 2}
    assert p.frames.missing == 105
    assert p.readings_total == len(seqs) + 4


def test_the_loss_counters_are_prometheus_counters() -> None:
    text = exposition({"broker_dropped": 1980, "frames_missing": 3})
    assert "# TYPE edge_ml_broker_dropped_total counter\nedge_ml_broker_dropped_total 1980" in text
    assert "# TYPE edge_ml_frames_missing_total counter\nedge_ml_frames_missing_total 3" in text
