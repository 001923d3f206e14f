"""``burnmap wrap``: run an agent program, follow its LLM spend, stop it at its budget.

The supervisor starts the program in its own process group and follows its spend from:

1. **Python children, exact and before the call**: ``inject/sitecustomize.py`` budgets
   every httpx/httpx2 client of every Python process in the tree against a ledger file
   this supervisor owns (one SQLite file in a private temp folder, one standing budget for
   this wrap), and reports each call and refusal to an events file.
2. **Known agent CLIs** (parsers in ``burnmap.wrap.parsers``): Claude Code's OpenTelemetry
   events, Codex / Gemini / aider output.
3. **Generic scanning** of the program's output (estimated).
4. **--proxy**: a loopback metering forwarder (exact and before the call, any language).

When the budget is reached (or a call was refused, or a loop detected) it stops the
program: SIGTERM to its process group and to descendants that left it, a grace period,
then SIGKILL. Its exit status is the program's own (128+n for a signal), or
:data:`EXIT_BUDGET` / :data:`EXIT_LOOP` when burnmap stopped it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import burnmap
from burnmap._core.money import to_micros
from burnmap.ledgers import LimitDef
from burnmap.ledgers.sqlite import SQLiteLedger

# Only what preparing the program's start needs is imported here: burnmap wrap starts the
# program first, and loads the rest (runs, parsers, servers) while it runs.
from burnmap.wrap.launch import (
    PENDING_SIGNALS,
    Prepared,
    agent_kind,
    foreground_preexec,
    inject,
    isatty,
    not_proxied,
    one_output,
    terminal,
)

if TYPE_CHECKING:
    from burnmap.errors import RefusalError
    from burnmap.runs import CallRecord, Run
    from burnmap.wrap import parsers
    from burnmap.wrap.proxy import MeteringProxy

__all__ = [
    "EXIT_BUDGET",
    "EXIT_LOOP",
    "EXIT_NOT_FOUND",
    "EXIT_REFUSED",
    "Supervisor",
    "WrapOptions",
    "descendants",
]

log = logging.getLogger("burnmap.wrap")

EXIT_BUDGET = 80
"""Exit status when burnmap stopped the program at its budget."""
EXIT_LOOP = 81
"""Exit status when burnmap stopped the program for a runaway loop."""
EXIT_REFUSED = 82
"""Exit status when burnmap stopped the program after refusing a call it cannot budget
(no price known for its model, an undeclared paid endpoint, the ledger unavailable)."""
EXIT_NOT_FOUND = 127


@dataclass
class WrapOptions:
    command: list[str]
    budget: Decimal | None
    job: str = "wrap"
    grace: float = 5.0
    report_json: Path | None = None
    proxy: bool = False
    loop_limits: dict[str, Any] = field(default_factory=dict)
    """``burnmap.run()`` loop limits to override (``None`` switches one off)."""
    meter: bool | None = None
    """Live meter on stderr: ``None`` = when stderr is a terminal."""


@dataclass
class _Outcome:
    stopped_for: str | None = None
    reason: str | None = None


def descendants(root: int) -> list[int]:
    """Every live descendant of ``root`` (Linux ``/proc``), whatever its process group."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: fields follow the last ")".
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


_NANO = Decimal("0.000000001")
# What makes a line of a program's output worth parsing: a usage word, or a brace that
# may open a JSON object.
_WORTH_READING = re.compile(rb'token|usage|Usage|Tokens|cost|"type"|\{')


def _listed(root: Path, pattern: str) -> list[Path]:
    return list(root.glob(pattern)) if root.is_dir() else []


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _default_model(agent: str | None, command: list[str]) -> str:
    """The model an agent runs when its report does not name one (Codex never does). Only
    a known agent's ``--model`` / ``-m`` names one (``python -m tool`` names a module)."""
    for flag in ("--model", "-m") if agent is not None else ():
        if flag in command[:-1]:
            return command[command.index(flag) + 1]
    return {"codex": "gpt-5-codex", "gemini": "gemini-2.5-pro", "aider": "gpt-4o"}.get(
        agent or "", "claude-sonnet-4-6"
    )


def _agent_args(agent: str | None, command: list[str], supervisor: Supervisor) -> list[str]:
    """Options added to a known agent's command line (never ones the user set)."""
    extra: list[str] = []
    proxy = supervisor._proxy
    if (
        agent == "codex"
        and proxy is not None
        and not any("openai_base_url" in word for word in command)
    ):
        extra += ["-c", f"openai_base_url={proxy.openai_base_url}"]
    return extra


class Supervisor:
    def __init__(
        self,
        options: WrapOptions,
        *,
        stderr: IO[str] | None = None,
        prepared: Prepared | None = None,
    ) -> None:
        self.options = options
        self.stderr = stderr or sys.stderr
        self._run: Run | None = None
        self.outcome = _Outcome()
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._prepared = prepared
        if prepared is not None:  # the program was started already (burnmap.wrap.launch)
            self._tmp = Path(prepared.tmp)
            self._scope = prepared.scope
            self._proc = prepared.proc
        else:
            self._tmp = Path(tempfile.mkdtemp(prefix="burnmap-wrap-"))
            self._scope = f"wrap:{uuid.uuid4().hex[:12]}"
        self._events = self._tmp / "events.jsonl"
        self._ledger = SQLiteLedger(self._tmp / "ledger.db")
        self._threads: list[threading.Thread] = []
        self._cleanups: list[Callable[[], None]] = []
        self.agent = agent_kind(options.command)
        self._dedup: parsers.Dedup | None = None
        self._exact_calls = 0
        """Calls counted from exact sources (injection, proxy, agent telemetry)."""
        self._finals: dict[str, dict[str, CallRecord]] = {}
        """The latest stated run total of each source, per model."""
        self._proxy: MeteringProxy | None = None

    @property
    def run(self) -> Run:
        """The run the program's calls are counted in (made on first use)."""
        if self._run is None:
            options = self.options
            self._run = burnmap.run(options.job, budget=options.budget, **options.loop_limits)
        return self._run

    # -- the child's environment --------------------------------------------------------
    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        not_proxied(env)
        if self.options.proxy:
            from burnmap.wrap.proxy import MeteringProxy

            proxy = MeteringProxy(
                self.run,
                anthropic_upstream=env.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com",
                openai_upstream=env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1",
            )
            proxy.on_refusal = self._proxy_refused
            proxy.start()
            self._cleanups.append(proxy.stop)
            self._proxy = proxy
            env["ANTHROPIC_BASE_URL"] = proxy.anthropic_base_url
            env["OPENAI_BASE_URL"] = proxy.openai_base_url
        if self.agent == "claude":
            from burnmap.wrap.otlp import OTLPReceiver, otel_env

            receiver = OTLPReceiver(self._on_otlp)
            receiver.start()
            self._cleanups.append(receiver.stop)
            extra = otel_env(receiver.endpoint, env)
            if not extra:
                receiver.stop()
                log.info("burnmap wrap: your OTEL settings are kept; following output instead")
            env.update(extra)
        sessions = self._session_files(env)
        if sessions is not None:
            root, pattern, make_reader = sessions
            # Files that exist before the program starts are read from where they end: the
            # sizes are taken now, before the agent can write its new session.
            start = {path: path.stat().st_size for path in _listed(root, pattern)}
            self._thread(lambda: self._tail_sessions(root, pattern, make_reader, start))
        self._set_limit()
        if not self.options.proxy:
            ledger = f"{self._ledger.url}?create=false"  # gone with wrap: refuse, not restart
            inject(env, ledger=ledger, scope=self._scope, events=str(self._events))
        return env

    def _set_limit(self) -> None:
        if self.options.budget is not None:
            self._ledger.set_limit(
                LimitDef(self._scope, to_micros(self.options.budget), None, "UTC")
            )

    # -- following spend ----------------------------------------------------------------
    def record(self, record: CallRecord, *, refused_in_advance: bool = False) -> None:
        """Count one call (from any source); stop the program if it is over budget or
        looks like a runaway loop. ``refused_in_advance``: the call came from a budgeted
        Python child, whose next call the ledger refuses exactly if it cannot fit."""
        if not record.estimated:
            self._exact_calls += 1
        verdict = self.run.record(record)
        if verdict is not None:
            self.stop("loop", f"loop detected ({verdict.trigger}): {verdict.message}")
        self._check_budget(None if refused_in_advance else record.cost)

    def _check_budget(self, last_cost: Decimal | None) -> None:
        budget = self.options.budget
        if budget is None:
            return
        spent = self.run.spent
        # Stop when the budget is reached, or, for programs burnmap cannot refuse in
        # advance, when one more call like the last would pass it: this keeps the
        # overshoot to the calls already in flight.
        if spent >= budget or (last_cost and spent + last_cost > budget):
            self.stop("budget", f"spent ${spent:.6f} of ${budget:.2f}")

    # -- agents that are not Python --------------------------------------------------------
    def _proxy_refused(self, exc: RefusalError) -> None:
        trigger = getattr(exc, "trigger", None)
        if trigger:
            self.stop("loop", f"loop detected ({trigger}): a call was refused by the proxy")
        elif getattr(exc, "scope", None):
            self.stop("budget", "a call was refused by the proxy: budget reached")
        else:
            self.stop("refused", f"a call was refused by the proxy: {_first_line(str(exc))}")

    def _session_files(
        self, env: dict[str, str]
    ) -> tuple[Path, str, Callable[[], Callable[[str], list[parsers.AgentCall]]]] | None:
        """Where a known agent writes its session as it runs, and how to read it."""
        from burnmap.wrap import parsers

        home = Path(env.get("HOME") or "~").expanduser()
        if self.agent == "claude":
            root = Path(env.get("CLAUDE_CONFIG_DIR") or home / ".claude").expanduser()
            return root / "projects", "*/*.jsonl", lambda: parsers.ClaudeTranscript().feed
        if self.agent == "codex":
            root = Path(env.get("CODEX_HOME") or home / ".codex").expanduser()
            return root / "sessions", "**/rollout-*.jsonl", lambda: parsers.CodexRollout().feed
        if self.agent == "gemini":
            return home / ".gemini" / "tmp", "*/chats/*.jsonl", lambda: parsers.gemini_session
        return None

    def _tail_sessions(
        self,
        root: Path,
        pattern: str,
        make_reader: Callable[[], Callable[[str], list[parsers.AgentCall]]],
        start: dict[Path, int],
    ) -> None:
        """Read new lines from every session file the agent writes while it runs (files
        in ``start`` are read from the size they had then)."""
        positions: dict[Path, int] = {}
        partial: dict[Path, bytes] = {}
        readers: dict[Path, Callable[[str], list[parsers.AgentCall]]] = {}
        known: list[Path] = []
        next_glob = 0.0
        while True:
            done = self._stop_event.is_set()
            now = time.monotonic()
            if done or now >= next_glob:
                # Session folders hold the agent's whole history: listed twice a second.
                known = _listed(root, pattern)
                next_glob = now + 0.5
            for path in known:
                position = positions.get(path, start.get(path, 0))
                try:
                    if path.stat().st_size == position:
                        continue  # nothing new: no open, no read
                    with open(path, "rb") as handle:
                        handle.seek(position)
                        data = handle.read()
                except OSError:
                    continue
                if not data:
                    continue
                positions[path] = position + len(data)
                read = readers.setdefault(path, make_reader())
                lines = (partial.get(path, b"") + data).split(b"\n")
                partial[path] = lines.pop()
                for line in lines:
                    for call in read(line.decode("utf-8", "replace")):
                        if not call.estimated:  # provisional snapshots wait for the final one
                            self.agent_call(call)
            if done:
                return
            time.sleep(0.05)

    def _on_otlp(self, payload: dict[str, Any]) -> None:
        from burnmap.wrap import parsers

        for call in parsers.claude_otel_events(payload):
            self.agent_call(call)

    def agent_call(self, call: parsers.AgentCall) -> None:
        """A call an agent reported (telemetry, its output): priced and counted once."""
        if self.options.proxy:
            # Every call through the proxy is metered exactly there: an agent's reports
            # and the output scan would count them twice (docs/wrap.md, --proxy).
            return
        if self._dedup is None:
            from burnmap.wrap import parsers

            self._dedup = parsers.Dedup()
        if not self._dedup.add(call):
            # Reported twice (telemetry, then the transcript): the later report may carry
            # the request's fingerprint the first lacked.
            if call.fingerprint is not None:
                verdict = self.run.note_repeat(call.fingerprint)
                if verdict is not None:
                    self.stop("loop", f"loop detected ({verdict.trigger}): {verdict.message}")
            return
        if call.source == "scan" and self._exact_calls:
            return  # exact sources are counting: scanning is only a last resort
        record = self._price(call)
        if call.final:
            # A run total (Claude's `result`, one per model; Codex's running total): used
            # at the end if nothing more precise was seen.
            self._finals.setdefault(call.source, {})[record.model] = record
            return
        self.record(record)

    def _price(self, call: parsers.AgentCall) -> CallRecord:
        from burnmap._core.usage import Usage
        from burnmap.errors import UnknownModelError
        from burnmap.runs import CallRecord

        usage = Usage(
            input_tokens=call.input_tokens,
            output_tokens=call.output_tokens,
            cache_read_tokens=call.cache_read_tokens,
            cache_write_tokens=call.cache_write_tokens,
            cache_write_1h_tokens=call.cache_write_1h_tokens,
        )
        model = call.model or _default_model(self.agent, self.options.command)
        estimated = call.estimated or (call.cost_usd is None and call.model is None)
        if call.cost_usd is not None:
            cost = call.cost_usd
        else:
            try:
                cost = burnmap.prices.cost(model, usage)
            except UnknownModelError:
                # Never $0: price an unknown model like the dearest common one, flagged.
                cost = burnmap.prices.cost("claude-opus-4-6", usage)
                estimated = True
        return CallRecord(
            fingerprint=call.fingerprint,
            model=model,
            provider=self.agent or "agent",
            endpoint=call.source,
            usage=usage,
            cost=cost,
            reserved=Decimal(0),
            estimated=estimated,
            streamed=False,
            started_at=time.time(),
            duration_seconds=0.0,
        )

    def _pump(self, source: int, sink: int) -> None:
        """Copy the program's output to ours as it comes, and read usage from a copy."""
        feed, scanner = self._line_parser()
        partial = b""
        while True:
            try:
                data = os.read(source, 1 << 16)
            except OSError:
                break
            if not data:
                break
            try:
                _write_all(sink, data)
            except BrokenPipeError:
                # Our reader is gone (`burnmap wrap -- yes | head -1`): stop reading, so
                # that the program's next write fails as it would without burnmap.
                break
            except OSError:
                pass
            block = partial + data
            end = block.rfind(b"\n") + 1
            partial = block[end:]
            if len(partial) > 1 << 20:
                partial = b""  # a line this long carries no usage report
            # Lines without a usage word are skipped, unless a JSON object may open on them
            # or one spanning lines (pretty-printed) is open: whole blocks of plain text at
            # once, by C-level searches.
            if not end or (not scanner.buffered_chars and not _WORTH_READING.search(block, 0, end)):
                continue
            for line in block[: end - 1].split(b"\n"):
                if scanner.buffered_chars or _WORTH_READING.search(line):
                    for call in feed(line.decode("utf-8", "replace")):
                        self.agent_call(call)
        os.close(source)

    def _line_parser(
        self,
    ) -> tuple[Callable[[str], list[parsers.AgentCall]], parsers.JsonScanner]:
        """How to read the program's output: the agent's own format first, then generic
        JSON scanning; and the scanner, whose open candidate needs every line."""
        from burnmap.wrap import parsers

        scanner = parsers.JsonScanner()
        if self.agent == "aider":
            aider = parsers.AiderStdout()
            return (lambda line: aider.feed(line) or scanner.feed(line)), scanner
        if self.agent == "claude":

            def claude(line: str) -> list[parsers.AgentCall]:
                calls = parsers.claude_stream_line(line)
                if not calls:
                    return scanner.feed(line)
                # stream-json repeats each reply's usage keyed by message id; its calls
                # are counted from telemetry and the transcript (keyed by request id),
                # which are always followed. Only the run's stated totals are kept.
                return [call for call in calls if call.final]

            return claude, scanner
        if self.agent == "codex":
            return (lambda line: parsers.codex_line(line) or scanner.feed(line)), scanner
        if self.agent == "gemini":
            return (lambda line: parsers.gemini_stream_line(line) or scanner.feed(line)), scanner
        return scanner.feed, scanner

    def _settle_finals(self) -> None:
        """At exit: an agent's stated total counts when per-call reports fell short."""
        from burnmap._core.usage import Usage
        from burnmap.runs import CallRecord

        if self._exact_calls:
            return
        for totals in self._finals.values():
            records = list(totals.values())
            stated = sum((record.cost for record in records), Decimal(0))
            missing = stated - self.run.spent
            if missing <= 0:
                continue
            # What the per-call reports missed, shared among the models in proportion to
            # their stated costs (the last takes the remainder, so the shares add up).
            left = missing
            for index, record in enumerate(records):
                if missing == stated:
                    share = record.cost  # nothing was counted: each model's own total
                elif index == len(records) - 1:
                    share = left
                else:
                    share = (missing * record.cost / stated).quantize(_NANO)
                left -= share
                self.run.record(
                    CallRecord(
                        model=record.model,
                        provider=record.provider,
                        endpoint=record.endpoint + " (total)",
                        usage=Usage(),
                        cost=share,
                        reserved=Decimal(0),
                        estimated=record.estimated,
                        streamed=False,
                        started_at=record.started_at,
                        duration_seconds=0.0,
                    )
                )

    def refused(self, fields: dict[str, Any]) -> None:
        """A Python child's call was refused before it was sent. The budget is safe, so
        the program gets ``grace`` seconds to wind down by itself (its calls in flight
        finish and are counted) before it is stopped."""
        trigger = fields.get("trigger")
        scope = fields.get("scope")
        cannot = _first_line(str(fields.get("message") or fields.get("error") or "unknown"))
        self.run.stop(f"a call was refused: {scope or trigger or cannot}", refused=True)
        if trigger:
            self.stop("loop", f"loop detected ({trigger})", patient=True)
        elif scope:
            self.stop("budget", f"a call was refused: budget {scope} reached", patient=True)
        else:
            # Not the budget: a call burnmap cannot budget (its model's price is unknown,
            # a paid endpoint is undeclared, the ledger is down).
            self.stop("refused", f"a call was refused: {cannot}", patient=True)

    def _on_event(self, event: dict[str, Any]) -> None:
        from burnmap.runs import record_from_fields

        kind = event.get("kind")
        if kind == "call":
            self.record(record_from_fields(event), refused_in_advance=True)
        elif kind == "refused":
            self.refused(event)
        elif kind == "inject-failed":
            log.warning("burnmap wrap: budgeting a Python child failed: %s", event.get("error"))

    def _tail_events(self) -> None:
        position = 0
        partial = b""
        while True:
            done = self._stop_event.is_set() or (
                self._proc is not None and self._proc.poll() is not None
            )
            try:
                with open(self._events, "rb") as handle:
                    handle.seek(position)
                    data = handle.read()
            except FileNotFoundError:
                data = b""
            if data:
                position += len(data)
                lines = (partial + data).split(b"\n")
                partial = lines.pop()
                for line in lines:
                    try:
                        self._on_event(json.loads(line))
                    except (ValueError, TypeError):
                        continue
            if done and not data:
                return
            time.sleep(0.02)

    # -- stopping ---------------------------------------------------------------------
    def stop(self, why: str, reason: str, *, patient: bool = False) -> None:
        with self._lock:
            if self.outcome.stopped_for is not None:
                return
            self.outcome.stopped_for = why
            self.outcome.reason = reason
        self.run.stop(f"burnmap wrap stopped the program: {reason}")
        threading.Thread(target=self._terminate, args=(patient,), daemon=True).start()

    def _terminate(self, patient: bool = False) -> None:
        proc = self._proc
        if proc is None:
            return
        if patient:
            deadline = time.monotonic() + self.options.grace
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
        if proc.poll() is not None:
            return
        self._signal_tree(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.options.grace
        while time.monotonic() < deadline:
            if proc.poll() is not None and not descendants(proc.pid):
                return
            time.sleep(0.05)
        self._signal_tree(proc.pid, signal.SIGKILL)

    def _signal_tree(self, pid: int, sig: signal.Signals) -> None:
        family = descendants(pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        for child in family:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, sig)

    # -- running ----------------------------------------------------------------------
    def _thread(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self._threads.append(thread)

    @contextlib.contextmanager
    def _foreground(self, pgid: int) -> Iterator[None]:
        """With a terminal, give the program the foreground (Ctrl-C reaches it)."""
        tty = terminal()
        if tty is None:
            yield
            return
        previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            with contextlib.suppress(OSError):
                os.tcsetpgrp(tty, pgid)
            yield
        finally:
            with contextlib.suppress(OSError):
                os.tcsetpgrp(tty, os.getpgrp())
            signal.signal(signal.SIGTTOU, previous)

    def start(self) -> subprocess.Popen[bytes]:
        command = self.options.command
        executable = shutil.which(command[0])
        if executable is None:
            raise FileNotFoundError(command[0])
        env = self.child_env()
        # Added options go first: they are global flags, never part of a prompt.
        argv = [executable, *_agent_args(self.agent, command, self), *command[1:]]
        # Output is read for usage only when it is not a terminal: an interactive program
        # keeps its terminal (no pipes, no pty).
        capture = not any(isatty(stream) for stream in (sys.stdout, sys.stderr))
        self._proc = subprocess.Popen(
            argv,
            env=env,
            process_group=0,
            stdout=subprocess.PIPE if capture else None,
            # One pipe for both when ours are one file (2>&1): lines keep their order.
            stderr=(subprocess.STDOUT if one_output() else subprocess.PIPE) if capture else None,
            # It only calls os functions between fork and exec (loopback server threads
            # may be running for --proxy or Claude Code).
            preexec_fn=foreground_preexec(terminal()),  # noqa: PLW1509
        )
        self._start_pumps(self._proc)
        self._thread(self._tail_events)
        return self._proc

    def _start_pumps(self, proc: subprocess.Popen[bytes]) -> None:
        """Copy captured output through (when it was captured) and read usage from it."""
        if proc.stdout is None:
            return
        sources = [(proc.stdout, sys.stdout.fileno())]
        if proc.stderr is not None:  # (None: both go to stdout's pipe, as ours are one)
            sources.append((proc.stderr, sys.stderr.fileno()))
        self._pumps = [
            threading.Thread(target=self._pump, args=(os.dup(source.fileno()), sink))
            for source, sink in sources
        ]
        for source, _ in sources:
            source.close()
        for pump in self._pumps:
            pump.daemon = True
            pump.start()

    def _follow_prepared(self) -> None:
        """The program runs already: set its budget, let its first call through, follow it."""
        assert self._proc is not None
        self._set_limit()
        (self._tmp / "ready").touch()
        self._start_pumps(self._proc)
        self._thread(self._tail_events)

    def wait(self) -> int:
        proc = self._proc
        assert proc is not None
        forward = self._forward_signals(proc.pid)
        meter = self._meter_enabled()
        try:
            with self._foreground(proc.pid):
                while True:
                    try:
                        status = proc.wait(timeout=0.25)
                        break
                    except subprocess.TimeoutExpired:
                        if meter:
                            self._draw_meter()
        finally:
            forward()
            if meter:
                self.stderr.write("\r\033[K")
        # Descendants still running after the program exited are stopped too.
        if self.outcome.stopped_for is not None:
            for child in descendants(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
        for pump in getattr(self, "_pumps", []):
            pump.join(timeout=10)
        self._stop_event.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._reconcile()
        self._settle_finals()
        return status

    def _reconcile(self) -> None:
        """Holds a killed child never settled: charged at their bound, marked estimated
        (the provider may have billed those calls)."""
        if self.options.proxy:
            return
        from burnmap._core.money import from_micros
        from burnmap._core.usage import Usage
        from burnmap.runs import CallRecord

        with contextlib.suppress(Exception):
            held = self._ledger.status([self._scope])[0].reserved  # status reaps first
            if held:
                cost = from_micros(held)
                self.run.record(
                    CallRecord(
                        model="(unsettled: the program was stopped mid-call)",
                        provider="-",
                        endpoint="-",
                        usage=Usage(),
                        cost=cost,
                        reserved=cost,
                        estimated=True,
                        streamed=False,
                        started_at=time.time(),
                        duration_seconds=0.0,
                    )
                )

    def _forward_signals(self, pgid: int) -> Callable[[], None]:
        """Without a terminal, SIGINT/SIGTERM/SIGHUP sent to burnmap go to the program. A
        program still running ``grace`` seconds after the first, or when a second one
        comes, is killed: wrap must not end and leave it running unsupervised."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        saved: dict[int, Any] = {}
        received = [0]

        def kill_if_running() -> None:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)

        def forward(signum: int, frame: Any) -> None:
            received[0] += 1
            if received[0] > 1:
                kill_if_running()
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signum)
            timer = threading.Timer(self.options.grace, kill_if_running)
            timer.daemon = True
            timer.start()

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) is not signal.SIG_IGN:  # (nohup: stays ignored)
                saved[sig] = signal.signal(sig, forward)
        while PENDING_SIGNALS:  # those that came while wrap was starting
            forward(PENDING_SIGNALS.pop(0), None)

        def restore() -> None:
            for sig, handler in saved.items():
                signal.signal(sig, handler)

        return restore

    def _meter_enabled(self) -> bool:
        if self.options.meter is not None:
            return self.options.meter
        if terminal() is not None:
            return False  # an interactive program owns the terminal: no bar over its prompts
        try:
            return self.stderr.isatty()
        except (AttributeError, ValueError):
            return False

    def _draw_meter(self) -> None:
        spent = self.run.spent
        budget = self.options.budget
        if budget:
            share = spent / budget
            bar = "#" * min(20, int(share * 20))
            warn = "  WARNING: over 80%" if share >= Decimal("0.8") else ""
            line = (
                f"burnmap [{bar:<20}] ${spent:.4f} / ${budget:.2f} "
                f"({self.run.call_count} calls){warn}"
            )
        else:
            line = f"burnmap ${spent:.4f} ({self.run.call_count} calls)"
        self.stderr.write("\r\033[K" + line)
        self.stderr.flush()

    def exit_status(self, status: int) -> int:
        if self.outcome.stopped_for == "budget":
            return EXIT_BUDGET
        if self.outcome.stopped_for == "loop":
            return EXIT_LOOP
        if self.outcome.stopped_for == "refused":
            return EXIT_REFUSED
        return 128 + (-status) if status < 0 else status

    def finish(self, status: int) -> int:
        code = self.exit_status(status)
        self.run.__exit__(None, None, None)
        report = self.run.report
        self.stderr.write(report.summary() + "\n")
        if self.outcome.stopped_for is not None:
            self.stderr.write(
                f"burnmap wrap: stopped the program ({self.outcome.reason}); exit status {code}\n"
            )
        if self.options.report_json is not None:
            data = report.to_dict()
            data["exit_status"] = code
            data["stopped_by_burnmap"] = self.outcome.stopped_for
            self.options.report_json.write_text(json.dumps(data, indent=2) + "\n")
        self.stderr.flush()
        return code

    def close(self) -> None:
        for cleanup in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        self._ledger.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def execute(self) -> int:
        """Start, follow, stop if needed, report; returns the exit status to use."""
        try:
            if self._prepared is not None:
                self._follow_prepared()
            else:
                self.start()  # the program first: the rest loads while it starts
            self.run.__enter__()
            return self.finish(self.wait())
        finally:
            self.close()


def _first_line(text: str) -> str:
    """The first line of a refusal's message (the rest says how to fix it in code)."""
    return text.strip().split("\n", 1)[0].removeprefix("burnmap: ")
