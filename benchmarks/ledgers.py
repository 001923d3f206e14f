"""Throughput of the spend ledgers: reserve + settle operations per second.

Run with ``.venv/bin/python benchmarks/ledgers.py`` (``make bench`` runs it after
``benchmarks/run.py``); never run by the tests. One operation is one ``reserve`` on three
scopes that all have a limit (``global``, ``user:uN``, ``job:jN``; limits far above what
the run spends, so nothing is refused) followed by one ``settle`` of part of the hold.

- **memory://**, one process, one thread: on one ledger for ``SECONDS`` (the goal's row),
  then the same on a fresh ledger every 1,000 holds, with lifetime and with per-day limits
  (diagnostic rows: what an operation costs before the ledger holds many settled holds).
- **sqlite:///** on a file in a temporary directory (WAL, ``synchronous=FULL``, as the
  ledger sets them): 1 process (diagnostic), then 4 processes (the goal's row).
- **redis://** on a ``redis-server`` this script starts on a free loopback port, without
  persistence (``--save "" --appendonly no``): 1 client process (diagnostic), then 4 and 8
  client processes of one thread and one connection each (the goal is judged on the best).

Client processes are spawned, open their own ledger, and start together at a set moment.
Wall time is measured, plus the CPU time the clients used (``time.process_time`` in each)
and, for Redis, the server's (``INFO cpu``), per operation: where the time goes. Prints a
table and PASS/FAIL per goal; always exits 0.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _table import format_table

import burnmap
from burnmap.ledgers import Ledger, LimitDef, open_ledger

SECONDS = 3.0  # measured time per row
MEMORY_GOAL = 200_000.0
SQLITE_GOAL = 2_000.0
REDIS_GOAL = 5_000.0
SQLITE_PROCESSES = 4
REDIS_PROCESSES = (4, 8)
HIGH_LIMIT = 10**15  # micro-dollars: never reached
AMOUNT = 50_000
ACTUAL = 12_345
USERS = 4
JOBS = 16
NOTES: list[str] = []


@dataclass(frozen=True)
class Result:
    name: str
    ops: int
    seconds: float
    client_cpu: float
    server_cpu: float | None
    goal: float | None
    slowest: float
    """Seconds of the slowest single operation."""

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def verdict(self) -> str:
        if self.goal is None:
            return "-"
        return "PASS" if self.rate >= self.goal else "FAIL"


def set_limits(ledger: Ledger, per: str | None = None) -> None:
    tz = "Europe/Paris" if per else "UTC"
    ledger.set_limit(LimitDef("global", HIGH_LIMIT, per, tz))
    for i in range(USERS):
        ledger.set_limit(LimitDef(f"user:u{i}", HIGH_LIMIT, per, tz))
    for i in range(JOBS):
        ledger.set_limit(LimitDef(f"job:j{i}", HIGH_LIMIT, per, tz))


def scope_sets(seed: int) -> list[list[str]]:
    return [
        ["global", f"user:u{(seed + i) % USERS}", f"job:j{(seed * 7 + i) % JOBS}"]
        for i in range(64)
    ]


def operations(
    ledger: Ledger, tag: str, seed: int, stop_at: float, limit: int = 0
) -> tuple[int, float]:
    """Reserve + settle until ``time.time()`` passes ``stop_at`` or ``limit`` ops are done.

    Returns how many were done and the slowest one's seconds.
    """
    sets = scope_sets(seed)
    n = 0
    slowest = 0.0
    clock = time.time
    now = clock()
    while now < stop_at and not (limit and n >= limit):
        hold_id = f"{tag}-{n}"
        if ledger.reserve(hold_id, sets[n % len(sets)], AMOUNT) is not None:
            raise RuntimeError(f"refused: {hold_id}")
        ledger.settle(hold_id, ACTUAL)
        n += 1
        before, now = now, clock()
        slowest = max(slowest, now - before)
    return n, slowest


# -- memory -----------------------------------------------------------------------------
def bench_memory() -> list[Result]:
    results = []
    ledger = open_ledger("memory://")
    set_limits(ledger)
    operations(ledger, "warm", 0, time.time() + 1, limit=500)  # first-use caches
    ledger = open_ledger("memory://")
    set_limits(ledger)
    cpu, start = time.process_time(), time.time()
    ops, slowest = operations(ledger, "m", 0, start + SECONDS)
    results.append(
        Result(
            "memory, one ledger",
            ops,
            time.time() - start,
            time.process_time() - cpu,
            None,
            MEMORY_GOAL,
            slowest,
        )
    )
    for label, per in (("lifetime", None), ("per-day", "day")):
        ops = 0
        slowest = 0.0
        cpu, start = time.process_time(), time.time()
        stop_at = start + SECONDS / 2
        while time.time() < stop_at:
            ledger = open_ledger("memory://")
            set_limits(ledger, per)
            done, slow = operations(ledger, f"f{ops}", ops, stop_at, limit=1000)
            ops += done
            slowest = max(slowest, slow)
        results.append(
            Result(
                f"memory, fresh every 1k holds, {label} (diag.)",
                ops,
                time.time() - start,
                time.process_time() - cpu,
                None,
                None,
                slowest,
            )
        )
    return results


# -- processes --------------------------------------------------------------------------
@dataclass(frozen=True)
class ClientJob:
    url: str
    tag: str
    seed: int
    start_at: float
    """Wall-clock moment every client starts together."""
    stop_at: float


def client(job: ClientJob, out: Any) -> None:
    """One client process: its own ledger, operations between two wall-clock moments."""
    try:
        ledger = open_ledger(job.url)
        # Connect and load the scripts first.
        operations(ledger, f"{job.tag}-warm", job.seed, job.start_at, limit=64)
        while time.time() < job.start_at:
            time.sleep(0.001)
        cpu = time.process_time()
        ops, slowest = operations(ledger, job.tag, job.seed, job.stop_at)
        out.put((ops, time.process_time() - cpu, time.time() - job.start_at, slowest, ""))
        ledger.close()
    except Exception:
        out.put((0, 0.0, 0.0, 0.0, traceback.format_exc()))


def run_clients(
    url: str,
    label: str,
    processes: int,
    goal: float | None,
    server_cpu: Callable[[], float] | None = None,
) -> Result:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    # Spawning takes ~0.5 s a process on a busy 2-core machine: start together, later.
    start_at = time.time() + 1.5 + 0.4 * processes
    stop_at = start_at + SECONDS
    procs = [
        ctx.Process(
            target=client,
            args=(ClientJob(url, f"{label}-{i}-{time.time_ns()}", i, start_at, stop_at), out),
            daemon=True,
        )
        for i in range(processes)
    ]
    for proc in procs:
        proc.start()
    try:
        while time.time() < start_at:
            time.sleep(0.001)
        server_before = server_cpu() if server_cpu else 0.0
        answers = [out.get(timeout=SECONDS + 60) for _ in procs]
        server_after = server_cpu() if server_cpu else 0.0
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    errors = [err for *_, err in answers if err]
    if errors:
        raise RuntimeError(errors[0])
    return Result(
        label,
        sum(ops for ops, *_ in answers),
        max(answer[2] for answer in answers),  # the last one to finish its last op
        sum(answer[1] for answer in answers),
        server_after - server_before if server_cpu else None,
        goal,
        max(answer[3] for answer in answers),
    )


def fsync_seconds(directory: str, rounds: int = 100) -> float:
    """Median time of one 4 KiB write + fsync in ``directory`` (what a durable commit waits)."""
    path = Path(directory) / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    times = []
    try:
        for i in range(rounds):
            os.pwrite(fd, b"x" * 4096, (i % 16) * 4096)
            start = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times)


def bench_sqlite() -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="burnmap-bench-") as directory:
        fsync = fsync_seconds(directory)
        NOTES.append(
            f"sqlite: a 4 KiB write + fsync in {tempfile.gettempdir()} took {1e3 * fsync:.2f} ms "
            "(median of 100, just before the sqlite rows); each op commits twice (two WAL "
            "fsyncs), one writer at a time"
        )
        url = f"sqlite:///{Path(directory) / 'spend.db'}"
        ledger = open_ledger(url)
        set_limits(ledger)
        ledger.close()
        return [
            run_clients(url, "sqlite, 1 process (diag.)", 1, None),
            run_clients(
                url, f"sqlite, {SQLITE_PROCESSES} processes", SQLITE_PROCESSES, SQLITE_GOAL
            ),
        ]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bench_redis() -> list[Result]:
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is not installed")
    import redis

    with tempfile.TemporaryDirectory(prefix="burnmap-bench-redis-") as directory:
        port = free_port()
        proc = subprocess.Popen(
            [
                server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        admin = redis.Redis(port=port)
        try:
            for _ in range(500):
                try:
                    admin.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.01)

            def server_cpu() -> float:
                info = admin.info("cpu")
                return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

            url = f"redis://127.0.0.1:{port}/0"
            ledger = open_ledger(url)
            set_limits(ledger)
            ledger.close()
            results = [run_clients(url, "redis, 1 process (diag.)", 1, None, server_cpu)]
            results += [
                run_clients(url, f"redis, {n} processes", n, REDIS_GOAL, server_cpu)
                for n in REDIS_PROCESSES
            ]
            best = max(results[1:], key=lambda r: r.rate)
            return [
                r if r is best or r.goal is None else dataclasses.replace(r, goal=None)
                for r in results
            ]
        finally:
            admin.close()
            proc.kill()
            proc.wait(10)


# -- report -----------------------------------------------------------------------------
def table(results: list[Result]) -> str:
    header = (
        "ledger",
        "ops",
        "ops/s",
        "client CPU µs/op",
        "server CPU µs/op",
        "slowest op ms",
        "goal",
        "",
    )
    rows = [
        (
            r.name,
            f"{r.ops:,}",
            f"{r.rate:,.0f}",
            f"{1e6 * r.client_cpu / max(r.ops, 1):,.1f}",
            "" if r.server_cpu is None else f"{1e6 * r.server_cpu / max(r.ops, 1):,.1f}",
            f"{1e3 * r.slowest:,.1f}",
            "" if r.goal is None else f">= {r.goal:,.0f}/s",
            r.verdict,
        )
        for r in results
    ]
    return format_table(header, rows, left=(6,))


def main() -> int:
    started = time.perf_counter()
    print(
        f"burnmap ledger benchmarks ({os.cpu_count()} cores, {platform.machine()}; "
        f"python {platform.python_version()}, burnmap {burnmap.__version__})"
    )
    print("one op = reserve on 3 limited scopes + settle; wall-clock throughput")
    results: list[Result] = []
    for name, bench in (("memory", bench_memory), ("sqlite", bench_sqlite), ("redis", bench_redis)):
        try:
            results += bench()
        except Exception as exc:  # report and go on: the script always exits 0
            print(f"{name}: not measured ({type(exc).__name__}: {exc})")
    print()
    print(table(results))
    print()
    for note in NOTES:
        print(note)
    for r in results:
        if r.goal is not None:
            print(f"{r.verdict}  {r.name}: {r.rate:,.0f} ops/s (goal >= {r.goal:,.0f}/s)")
    print(f"\n({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
