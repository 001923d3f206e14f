"""``burnmap wrap``'s overhead: start-up and output pass-through, against a baseline.

Run with ``.venv/bin/python benchmarks/wrap.py`` (``make bench``); never run by the tests.
Nothing touches the network. Every figure is wall-clock time of real subprocesses, and
every comparison is with the same program run without burnmap, in the same run:

1. **Added start-up** (goal <= 50 ms): how much later a program starts under
   ``burnmap wrap`` (it prints ``time.time()`` first thing; launched directly, then
   wrapped), interleaved over ``STARTUP_ROUNDS`` rounds after a warm-up; the figure is the
   median of the per-round differences. A diagnostic row times the whole run of
   ``burnmap wrap -- python -c pass`` (the supervisor loads while the program runs, and
   reports after it exits).
2. **What every Python child pays** (goal <= 50 ms): ``python -c "import httpx"`` with the
   environment ``burnmap wrap`` gives a child (its ``sitecustomize`` first on
   ``PYTHONPATH``, ``BURNMAP_LEDGER`` and the rest, from ``Supervisor.child_env()``)
   against the same command without it. A diagnostic row adds ``httpx.Client()``: the first
   client imports burnmap in the child and opens the shared ledger.
3. **Output pass-through** (goal >= 100 MB/s): a child writes 500 MiB to stdout (a 1 MiB
   buffer of 64-byte text lines, 500 times); this script reads it from a pipe, directly
   and through ``burnmap wrap``. Throughput is bytes over the time from the first byte to
   the last (start-up is (1)); median of ``OUTPUT_ROUNDS`` interleaved rounds. Diagnostic
   rows: the same bytes with no newline at all, and JSON lines that mention ``tokens`` (the
   supervisor parses each such line for usage), with less data.

When ``PYTHONDONTWRITEBYTECODE`` is set (no ``__pycache__`` is written, so every start
compiles burnmap from source), start-up is measured again with bytecode cached in a
temporary ``PYTHONPYCACHEPREFIX``, as most installs have it. Prints a table and PASS/FAIL
per goal; always exits 0.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from pathlib import Path

from _table import format_table

import burnmap
from burnmap.wrap.supervisor import Supervisor, WrapOptions

PY = sys.executable
STARTUP_ROUNDS = 15
CHILD_ROUNDS = 15
WARMUP = 2
OUTPUT_ROUNDS = 3
OUTPUT_MIB = 500
MARKER_MIB = 10
STARTUP_GOAL_MS = 50.0
CHILD_GOAL_MS = 50.0
OUTPUT_GOAL_MBS = 100.0
MIB = 1 << 20

_WRITER = """\
import sys
line = {line!r}
buf = (line * ({mib} // len(line) + 1))[:{mib}]
write = sys.stdout.buffer.write
for _ in range({count}):
    write(buf)
sys.stdout.buffer.flush()
"""
TEXT_LINE = b"build: compiling module 0042 of 0117, all checks green so far..\n"
NO_NEWLINE = b"x" * 64
JSON_LINE = b'{"type": "log", "step": 42, "tokens": 5, "msg": "reading src/auth.py"}\n'


@dataclass
class Result:
    name: str
    bare: str
    wrapped: str
    ratio: str
    figure: str
    goal: str
    passed: bool | None
    """None: a diagnostic row, not judged."""


def writer(line: bytes, total_mib: int) -> list[str]:
    source = _WRITER.format(line=line, mib=MIB, count=total_mib)
    return [PY, "-c", source]


def burnmap_command() -> list[str]:
    """``burnmap`` as installed (the console script), else ``python -m burnmap.cli``."""
    script = Path(PY).with_name("burnmap")
    if script.is_file():
        return [str(script)]
    return [PY, "-m", "burnmap.cli"]


def wall(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - start


def paired(
    bare: Callable[[], float], wrapped: Callable[[], float], rounds: int
) -> tuple[float, float, float]:
    """Median seconds of each, and the median per-round difference (wrapped - bare)."""
    for _ in range(WARMUP):
        bare()
        wrapped()
    times: dict[str, list[float]] = {"bare": [], "wrapped": []}
    variants = (("bare", bare), ("wrapped", wrapped))
    for index in range(rounds):
        for name, run in variants if index % 2 == 0 else variants[::-1]:
            times[name].append(run())
    added = [w - b for b, w in zip(times["bare"], times["wrapped"], strict=True)]
    return (
        statistics.median(times["bare"]),
        statistics.median(times["wrapped"]),
        statistics.median(added),
    )


def timed_row(
    name: str,
    commands: tuple[list[str], list[str]],
    envs: tuple[dict[str, str], dict[str, str]],
    goal_ms: float | None,
    rounds: int,
) -> Result:
    """Wall time of (without, with burnmap) commands in their environments, paired."""
    bare = partial(wall, commands[0], envs[0])
    wrapped = partial(wall, commands[1], envs[1])
    b, w, added = paired(bare, wrapped, rounds)
    return Result(
        name,
        f"{b * 1000:.1f} ms",
        f"{w * 1000:.1f} ms",
        f"{w / b:.2f}x",
        f"+{added * 1000:.1f} ms",
        f"<= +{goal_ms:.0f} ms" if goal_ms is not None else "(diag.)",
        added * 1000 <= goal_ms if goal_ms is not None else None,
    )


def cached_bytecode(env: dict[str, str], prefix: str) -> dict[str, str]:
    cached = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = prefix
    return cached


_STAMP = "import time; print(time.time())"


def started_after(command: list[str], env: dict[str, str]) -> float:
    """Seconds from launching ``command`` to the program it runs printing its first line."""
    launched = time.time()
    done = subprocess.run(
        command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True
    )
    return float(done.stdout.split()[0]) - launched


def bench_program_start(env: dict[str, str]) -> list[Result]:
    """The start-up burnmap wrap adds: how much later the program starts."""
    bare = [PY, "-c", _STAMP]
    wrapped = [*burnmap_command(), "wrap", "--", *bare]
    b, w, added = paired(
        partial(started_after, bare, env), partial(started_after, wrapped, env), STARTUP_ROUNDS
    )
    return [
        Result(
            "program starts after",
            f"{b * 1000:.1f} ms",
            f"{w * 1000:.1f} ms",
            f"{w / b:.2f}x",
            f"+{added * 1000:.1f} ms",
            f"<= +{STARTUP_GOAL_MS:.0f} ms",
            added * 1000 <= STARTUP_GOAL_MS,
        )
    ]


def bench_startup(env: dict[str, str], cache_dir: str) -> list[Result]:
    bare = [PY, "-c", "pass"]
    wrapped = [*burnmap_command(), "wrap", "--", *bare]
    name = "whole run: wrap -- python -c pass (diag.)"
    rows = [timed_row(name, (bare, wrapped), (env, env), None, STARTUP_ROUNDS)]
    if env.get("PYTHONDONTWRITEBYTECODE"):
        cached = cached_bytecode(env, cache_dir)
        name = "start-up, bytecode cached"
        rows.append(timed_row(name, (bare, wrapped), (cached, cached), None, STARTUP_ROUNDS))
    return rows


def bench_child(env: dict[str, str], cache_dir: str) -> list[Result]:
    supervisor = Supervisor(WrapOptions(command=[PY], budget=Decimal(1000)))
    try:
        injected = supervisor.child_env()
        imports = [PY, "-c", "import httpx"]
        client = [PY, "-c", "import httpx; httpx.Client()"]
        rows = [
            timed_row(
                'child: python -c "import httpx"',
                (imports, imports),
                (env, injected),
                CHILD_GOAL_MS,
                CHILD_ROUNDS,
            ),
            timed_row(
                "child: + httpx.Client() (imports burnmap)",
                (client, client),
                (env, injected),
                None,
                CHILD_ROUNDS,
            ),
        ]
        if env.get("PYTHONDONTWRITEBYTECODE"):
            rows.append(
                timed_row(
                    "child: + httpx.Client(), bytecode cached",
                    (client, client),
                    (cached_bytecode(env, cache_dir), cached_bytecode(injected, cache_dir)),
                    None,
                    CHILD_ROUNDS,
                )
            )
        return rows
    finally:
        supervisor.close()


def throughput(command: list[str], env: dict[str, str], expected: int) -> float:
    """MB/s read from the command's stdout, from its first byte to its last."""
    proc = subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    received = 0
    first = last = time.perf_counter()
    while data := os.read(fd, MIB):
        if not received:
            first = time.perf_counter()
        received += len(data)
    last = time.perf_counter()
    proc.stdout.close()
    proc.wait()
    if received != expected:
        print(f"WARNING: {command[:3]} passed {received} bytes of {expected}")
    return received / (last - first) / 1e6


def output_row(name: str, line: bytes, mib: int, rounds: int, goal: bool) -> Result:
    env = dict(os.environ)
    child = writer(line, mib)
    wrapped = [*burnmap_command(), "wrap", "--", *child]
    rates: dict[str, list[float]] = {"bare": [], "wrapped": []}
    variants = (("bare", child), ("wrapped", wrapped))
    for index in range(rounds):
        for key, command in variants if index % 2 == 0 else variants[::-1]:
            rates[key].append(throughput(command, env, mib * MIB))
    ratios = [w / b for b, w in zip(rates["bare"], rates["wrapped"], strict=True)]
    bare, wrapped_rate = statistics.median(rates["bare"]), statistics.median(rates["wrapped"])
    return Result(
        name,
        f"{bare:,.0f} MB/s",
        f"{wrapped_rate:,.1f} MB/s",
        f"{statistics.median(ratios):.3f}x",
        f"{wrapped_rate:,.1f} MB/s",
        f">= {OUTPUT_GOAL_MBS:.0f} MB/s" if goal else "(diag.)",
        wrapped_rate >= OUTPUT_GOAL_MBS if goal else None,
    )


def bench_output() -> list[Result]:
    return [
        output_row(
            f"output: {OUTPUT_MIB} MiB of text lines", TEXT_LINE, OUTPUT_MIB, OUTPUT_ROUNDS, True
        ),
        output_row(f"output: {OUTPUT_MIB} MiB, no newline", NO_NEWLINE, OUTPUT_MIB, 1, False),
        output_row(
            f"output: {MARKER_MIB} MiB of JSON lines with 'tokens'", JSON_LINE, MARKER_MIB, 1, False
        ),
    ]


def table(results: list[Result]) -> str:
    header = ("measurement", "without", "burnmap wrap", "ratio", "figure", "goal")
    rows = [(r.name, r.bare, r.wrapped, r.ratio, r.figure, r.goal) for r in results]
    return format_table(header, rows)


def environment() -> str:
    bytecode = "off" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "on"
    return (
        f"{os.cpu_count()} cores, {platform.machine()}; python {platform.python_version()}, "
        f"burnmap {burnmap.__version__}; bytecode writing {bytecode}"
    )


def main() -> int:
    started = time.perf_counter()
    print(f"burnmap wrap benchmarks ({environment()})")
    print("without = the same command run directly, measured in the same rounds")
    env = dict(os.environ)
    cache_dir = tempfile.mkdtemp(prefix="burnmap-bench-pycache-")
    try:
        results = bench_program_start(env) + bench_startup(env, cache_dir)
        results += bench_child(env, cache_dir) + bench_output()
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    print()
    print(table(results))
    print()
    for r in results:
        if r.passed is not None:
            print(f"{'PASS' if r.passed else 'FAIL'}  {r.name}: {r.figure} (goal {r.goal})")
    print(f"\n({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
