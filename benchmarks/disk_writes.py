"""Bytes the daemon writes to disk at 100 and 1,000 streams x 1 Hz a day: flushes, checkpoints.

For each stream count the real daemon (``python -m edge_ml run --config ...``) runs against a
private mosquitto (:class:`edge_ml.localbroker.LocalBroker`, a free loopback port) with a
publisher process (``benchmarks/publisher.py``) sending one reading per stream per second (bare
numbers, QoS 1, round-robin, so the readings are spread evenly over each second). The config
is the shipped defaults except ``[mqtt] port``, ``[storage] db`` and, as the measuring devices
below, ``[storage] stats_interval_s`` and ``checkpoint_interval_s``.

What is counted
---------------
The daemon process's ``/proc/<pid>/io`` is read at the end of a warm-up and again at the end
of a measured interval; the difference over the interval is extrapolated to a day.

- ``write_bytes``: bytes the process caused to be sent to the storage layer. Linux charges
  them when the process dirties a page-cache page that was clean (writeback happens later, in
  kernel threads, but is attributed here), so a page rewritten before it is written back is
  counted once, as on the device. SQLite in WAL mode appends each transaction's pages to the
  ``-wal`` file and copies them into the database at each WAL checkpoint (every ~1,000 pages,
  then ``fsync``), so both the WAL write and the copy-back are counted. This is the figure
  that wears an SD card, and the headline.
- ``wchar``: bytes passed to ``write()``/``pwrite()`` (page cache or not); printed beside it.
  ``cancelled_write_bytes`` (dirty pages dropped by a truncate before writeback) is printed too
  and not subtracted.
- Not counted: the filesystem's own journal and metadata writes (ext4's jbd2 thread), the
  flash translation layer's write amplification inside the card, the broker's writes
  (mosquitto's persistence is a separate process; see its ``autosave_interval``), and anything
  written outside the measured interval (start-up, the checkpoint at a clean stop). A first,
  unmeasured run writes the bytecode and Numba cache of a fresh tree.
  ``write_bytes`` needs a filesystem with writeback: on tmpfs it reads 0.

Flushes and checkpoints
-----------------------
Three runs per stream count, all with ``stats_interval_s`` and ``checkpoint_interval_s`` set
so that exactly the writes of interest fall inside the measured interval:

1. **base**: statistics and timer checkpoints far beyond the run (a day): what is written
   anyway (alert, drift and reject events, the health record's first write, the log).
2. **stats**: statistics every ``--stats-interval`` seconds (10 quick, 60 full), no timer
   checkpoints. What it wrote beyond the base rate, divided by the statistics flushes in the
   interval (interval / stats interval: the timer keeps its period to within a worker loop,
   0.1 s), is the bytes of **one statistics flush** (every stream's row, the counters, the
   health record, and their share of SQLite's WAL copy-back). At 1 Hz every stream changes
   every second, so a flush writes every row whatever the interval: per day it is times
   ``86,400 / stats_interval_s`` at the shipped default. **flushes** = base + that.
3. **ckpt**: statistics at the shipped interval, checkpoints every ``--checkpoint-interval``
   seconds (10: ~60 in a full run's interval, several WAL copy-backs). What it wrote beyond
   the base rate, divided by the timer checkpoints it logged inside the interval, is the
   bytes of **one checkpoint** (its blob, its row, the statistics flush before it, their WAL
   copy-back); per day that is times
   ``86,400 / checkpoint_interval_s`` at the shipped default (each covers less time than at
   the default, but at 1 Hz every stream changes every second, so the blob is as large).

Bytes per checkpoint are approximate: a checkpoint written across an interval's edge, or a
WAL copy-back that falls in one run's interval and not the other's, moves the split by a
fraction of a checkpoint; the longer full run (600 s measured per run, ~35 minutes in all)
averages that out.

``--quick`` takes ~5 minutes and flatters: in its 40 s no stream leaves its warm-up (300
readings), so there are no alerts to write and the checkpoints are of warm-up state (about half
the size), and its few checkpoints fit in the WAL, whose copy-back into the database is then
not in the interval. For a day's figure use ``--seconds 600`` or more (past the warm-up, and
~60 checkpoints at 10 s: several WAL copy-backs). The last line is
``disk_mb_per_day_1000_streams=<x> flush_mb_per_day=<y> checkpoint_mb_per_day=<z>`` (the
flush and checkpoint figures at 1,000 streams; MB = 10^6 bytes).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_ml.config import StorageConfig
from edge_ml.localbroker import LocalBroker

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PUBLISHER = str(ROOT / "benchmarks" / "publisher.py")
DAY_S = 86_400.0
MB = 1e6
SHIPPED_CHECKPOINT_S = StorageConfig().checkpoint_interval_s
SHIPPED_STATS_S = StorageConfig().stats_interval_s
NEVER_S = 86_400.0  # the longest interval the config takes: nothing on that timer in a run
TIMER_CHECKPOINT = re.compile(r"checkpoint \d+ saved \(timer, (\d+) bytes")


def proc_io(pid: int) -> dict[str, int]:
    """The counters of ``/proc/<pid>/io``."""
    text = Path(f"/proc/{pid}/io").read_text()
    return {key: int(value) for key, value in re.findall(r"(\w+): (\d+)", text)}


@dataclass(frozen=True)
class Interval:
    """What the daemon wrote during one measured interval of one run."""

    streams: int
    stats_interval_s: float
    checkpoint_interval_s: float
    seconds: float
    write_bytes: int
    wchar: int
    cancelled_write_bytes: int
    readings: int  # published during the interval, approximately: streams x seconds
    checkpoints: int  # timer checkpoints the daemon logged inside the interval
    checkpoint_blob_bytes: int  # their blobs, as logged

    def per_day(self, value: float) -> float:
        return value / self.seconds * DAY_S


def write_config(path: Path, port: int, db: Path, stats_interval_s: float,
                 checkpoint_interval_s: float) -> Path:
    """Shipped defaults, except the broker's port, the database and the two intervals."""
    path.write_text(f'[mqtt]\nport = {port}\n\n[storage]\ndb = {json.dumps(str(db))}\n'
                    f"stats_interval_s = {stats_interval_s!r}\n"
                    f"checkpoint_interval_s = {checkpoint_interval_s!r}\n")
    return path


def wait_for_text(log: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, log.read_text(errors="replace")):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"daemon: no {pattern!r} in its log; see {log}")


def measure(workdir: Path, tag: str, streams: int, stats_interval_s: float,
            checkpoint_interval_s: float, warmup_s: float, seconds: float) -> Interval:
    """One run: broker, daemon, publisher at ``streams`` readings/s; the daemon's writes."""
    tag = f"{streams}-{tag}"
    run_dir = workdir / tag
    run_dir.mkdir()
    log = run_dir / "daemon.log"
    # A broker per run: the daemon's persistent session from one run must not queue readings
    # for the next. No autosave: the broker's writes are not the daemon's, and are not counted.
    with LocalBroker(workdir=run_dir / "broker", autosave_s=0) as broker:
        config = write_config(run_dir / "edge-ml.toml", broker.port, run_dir / "edge-ml.db",
                              stats_interval_s, checkpoint_interval_s)
        with log.open("wb") as err:
            daemon = subprocess.Popen([PY, "-m", "edge_ml", "run", "--config", str(config)],
                                      stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
        publisher = None
        try:
            wait_for_text(log, r"connected to ", daemon, 120)
            total_s = warmup_s + seconds + 5
            publisher = subprocess.Popen(
                [PY, PUBLISHER, "--port", str(broker.port), "--streams", str(streams),
                 "--rate", str(streams), "--count", str(int(streams * total_s)),
                 "--seconds", str(total_s), "--client-id", f"edge-ml-disk-{tag}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(warmup_s)
            if daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited; see {log}")
            start_io, start_log, started = proc_io(daemon.pid), log.stat().st_size, time.time()
            time.sleep(seconds)
            end_io, ended = proc_io(daemon.pid), time.time()
            with log.open("rb") as handle:
                handle.seek(start_log)
                logged = handle.read().decode(errors="replace")
        finally:
            if publisher is not None and publisher.poll() is None:
                publisher.terminate()
                publisher.wait(timeout=30)
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
    blobs = [int(size) for size in TIMER_CHECKPOINT.findall(logged)]
    return Interval(streams=streams, stats_interval_s=stats_interval_s,
                    checkpoint_interval_s=checkpoint_interval_s,
                    seconds=ended - started,
                    write_bytes=end_io["write_bytes"] - start_io["write_bytes"],
                    wchar=end_io["wchar"] - start_io["wchar"],
                    cancelled_write_bytes=(end_io["cancelled_write_bytes"]
                                           - start_io["cancelled_write_bytes"]),
                    readings=round(streams * (ended - started)), checkpoints=len(blobs),
                    checkpoint_blob_bytes=sum(blobs))


def split(off: Interval, stats: Interval, ckpt: Interval) -> dict[str, Any]:
    """Flush and checkpoint bytes per day from the base, statistics and checkpoint runs."""
    base_bps = off.write_bytes / off.seconds
    stats_flushes = round(stats.seconds / stats.stats_interval_s)
    per_stats = (stats.write_bytes - base_bps * stats.seconds) / max(stats_flushes, 1)
    extra = ckpt.write_bytes - base_bps * ckpt.seconds
    per_checkpoint = extra / ckpt.checkpoints if ckpt.checkpoints else float("nan")
    flush_day = base_bps * DAY_S + per_stats * DAY_S / SHIPPED_STATS_S
    checkpoint_day = per_checkpoint * DAY_S / SHIPPED_CHECKPOINT_S
    return {
        "streams": off.streams, "flush_mb_per_day": flush_day / MB,
        "base_mb_per_day": base_bps * DAY_S / MB, "per_stats_flush_mb": per_stats / MB,
        "checkpoint_mb_per_day": checkpoint_day / MB,
        "total_mb_per_day": (flush_day + checkpoint_day) / MB,
        "per_checkpoint_mb": per_checkpoint / MB,
        "blob_mb": (ckpt.checkpoint_blob_bytes / ckpt.checkpoints / MB
                    if ckpt.checkpoints else float("nan")),
        "flush_wchar_mb_per_day": off.per_day(off.wchar) / MB,
        "ckpt_run_wchar_mb_per_day": ckpt.per_day(ckpt.wchar) / MB,
        "runs": (off, stats, ckpt),
    }


def describe(run: Interval) -> str:
    def every(interval: float) -> str:
        return "off" if interval >= NEVER_S else f"every {interval:g} s"

    return (f"  run with statistics {every(run.stats_interval_s)}, checkpoints "
            f"{every(run.checkpoint_interval_s)}: {run.seconds:.1f} s measured, "
            f"write_bytes {run.write_bytes / MB:.2f} MB "
            f"({run.per_day(run.write_bytes) / MB:,.0f} MB/day), wchar {run.wchar / MB:.2f} MB "
            f"({run.per_day(run.wchar) / MB:,.0f} MB/day), cancelled "
            f"{run.cancelled_write_bytes / MB:.2f} MB, timer checkpoints {run.checkpoints}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="30 s measured per run, statistics and checkpoints every 10 s "
                             "(~5 minutes)")
    parser.add_argument("--streams", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="measured interval per run (default 30 quick, 600 full)")
    parser.add_argument("--warmup", type=float, default=0.0,
                        help="seconds of publishing before the interval (default 10 / 30)")
    parser.add_argument("--checkpoint-interval", type=float, default=0.0,
                        help="checkpoint_interval_s of the checkpoint run (default 10)")
    parser.add_argument("--stats-interval", type=float, default=0.0,
                        help="stats_interval_s of the statistics run (default 10 quick, 60 "
                             "full); a divisor of the measured interval")
    args = parser.parse_args(argv)
    seconds = args.seconds or (30.0 if args.quick else 600.0)
    warmup = args.warmup or (10.0 if args.quick else 30.0)
    interval = args.checkpoint_interval or 10.0
    stats_interval = args.stats_interval or (10.0 if args.quick else 60.0)
    if max(interval, stats_interval) >= seconds:
        parser.error("--checkpoint-interval and --stats-interval must be shorter than the "
                     "measured interval")

    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="edge-ml-disk-"))
    # Unmeasured: the first daemon of a fresh tree writes its bytecode and Numba's kernel cache
    # (~0.6 MB, which read as ~1.8 GB a day in the first measured run before this).
    measure(workdir, "prime", args.streams[0], NEVER_S, NEVER_S, warmup, 1.0)
    results = []
    for streams in args.streams:
        off = measure(workdir, "base", streams, NEVER_S, NEVER_S, warmup, seconds)
        stats = measure(workdir, "stats", streams, stats_interval, NEVER_S, warmup, seconds)
        ckpt = measure(workdir, "ckpt", streams, SHIPPED_STATS_S, interval, warmup, seconds)
        results.append(split(off, stats, ckpt))
    print_report(results, time.monotonic() - t0, args.quick, interval, stats_interval,
                 workdir)
    return 0


def print_report(results: list[dict[str, Any]], elapsed: float, quick: bool, interval: float,
                 stats_interval: float, workdir: Path) -> None:
    lines = [f"mode: {'quick' if quick else 'full'}, {elapsed:.0f} s; daemon write_bytes from "
             f"/proc/PID/io, per day = measured interval x {DAY_S:,.0f} s; statistics and "
             f"checkpoints per day at the shipped intervals of {SHIPPED_STATS_S:g} s and "
             f"{SHIPPED_CHECKPOINT_S:g} s (measured every {stats_interval:g} s and "
             f"{interval:g} s); MB = 10^6 bytes; work files in {workdir}",
             "",
             "| streams x 1 Hz | flushes MB/day (base + statistics) | checkpoints MB/day "
             "| total MB/day | one statistics flush MB | one checkpoint MB (blob) "
             "| wchar MB/day (base) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r['streams']:,} | {r['flush_mb_per_day']:,.1f} "
                     f"({r['base_mb_per_day']:,.1f} + "
                     f"{r['flush_mb_per_day'] - r['base_mb_per_day']:,.1f}) "
                     f"| {r['checkpoint_mb_per_day']:,.1f} | {r['total_mb_per_day']:,.1f} "
                     f"| {r['per_stats_flush_mb']:.3f} "
                     f"| {r['per_checkpoint_mb']:.2f} ({r['blob_mb']:.2f}) "
                     f"| {r['flush_wchar_mb_per_day']:,.1f} |")
    lines.append("")
    for r in results:
        lines.append(f"{r['streams']:,} streams:")
        lines.extend(describe(run) for run in r["runs"])
    last = next((r for r in results if r["streams"] == 1000), results[-1])
    lines.append(f"disk_mb_per_day_{last['streams']}_streams={last['total_mb_per_day']:.0f} "
                 f"flush_mb_per_day={last['flush_mb_per_day']:.0f} "
                 f"checkpoint_mb_per_day={last['checkpoint_mb_per_day']:.0f}")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
