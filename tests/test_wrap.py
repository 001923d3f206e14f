"""burnmap wrap over real subprocesses: Python agents with no burnmap code, against a
loopback stand-in server, stopped before the call that would pass their budget."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

import burnmap
from burnmap.cli import main as cli_main
from burnmap.standin import Script, StandIn
from tests.conftest import billed

pytestmark = [pytest.mark.wrap, pytest.mark.sdk]  # also run with the httpx-generation SDKs

AGENTS = Path(__file__).parent / "agents"


@pytest.fixture
def standin(standin: StandIn) -> StandIn:
    standin.script = Script(output_tokens=400)
    return standin


def wrap(
    standin: StandIn,
    *args: str,
    report: Path | None = None,
    timeout: float = 90,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "burnmap.cli", "wrap"]
    if report is not None:
        command += ["--report-json", str(report)]
    env = {**os.environ, "STANDIN_URL": standin.url, **(env or {})}
    return subprocess.run(
        [*command, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def shell(command: str, *, check: bool = False) -> subprocess.CompletedProcess[str]:
    """``command`` run by ``sh`` (pipelines, redirections), its output captured."""
    return subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, timeout=60, check=check
    )


def test_python_agent_is_refused_before_the_call_that_would_overspend(
    standin: StandIn, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    result = wrap(
        standin,
        "--budget",
        "0.05",
        "--job",
        "auth-refactor",
        "--",
        sys.executable,
        str(AGENTS / "loop_sync.py"),
        report=report,
    )
    assert result.returncode == 80, result.stderr
    data = json.loads(report.read_text())
    assert data["job_name"] == "auth-refactor"
    assert data["stopped_early"]
    assert data["exit_status"] == 80
    total = Decimal(data["total_cost"])
    # Overshoot: 0 calls. Reported total: what the stand-in billed, to the micro-dollar.
    assert total <= Decimal("0.05")
    assert total == billed(standin.calls)
    assert data["call_count"] == len(standin.calls) == len(standin.requests)
    assert "burnmap run 'auth-refactor'" in result.stderr  # the summary goes to stderr
    assert result.stdout == ""


def test_python_agent_runs_on_while_its_next_call_fits(standin: StandIn, tmp_path: Path) -> None:
    """A budgeted Python child is refused exactly, before the call: it is not stopped just
    because one more call like its last would not fit, when its next call does."""
    standin.script = Script(reply_text="word " * 3000)  # every reply runs to max_tokens
    report = tmp_path / "report.json"
    # Two calls of ~$0.030 (bound $0.031), then one of $0.0003: $0.0605 of $0.07.
    result = wrap(
        standin,
        "--budget",
        "0.07",
        "--",
        sys.executable,
        str(AGENTS / "big_then_small.py"),
        report=report,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "finished"
    data = json.loads(report.read_text())
    assert not data["stopped_early"]
    assert data["call_count"] == len(standin.calls) == 3
    assert Decimal(data["total_cost"]) == billed(standin.calls) <= Decimal("0.07")


def test_async_streams_are_exact(standin: StandIn, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = wrap(
        standin,
        "--budget",
        "0.10",
        "--",
        sys.executable,
        str(AGENTS / "loop_async_stream.py"),
        report=report,
    )
    assert result.returncode == 80, result.stderr
    data = json.loads(report.read_text())
    assert Decimal(data["total_cost"]) == billed(standin.calls) <= Decimal("0.10")
    assert data["call_count"] == len(standin.calls)
    assert not any(row["estimated"] for row in data["cost_by_call"])
    # OpenAI streams had usage added for metering and were counted exactly.
    assert {row["endpoint"] for row in data["cost_by_call"]} == {"messages", "chat"}


def test_spawn_children_and_grandchildren_share_the_budget(
    standin: StandIn, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    result = wrap(
        standin, "--budget", "0.06", "--", sys.executable, str(AGENTS / "family.py"), report=report
    )
    data = json.loads(report.read_text())
    assert Decimal(data["total_cost"]) == billed(standin.calls) <= Decimal("0.06")
    assert data["call_count"] == len(standin.calls) >= 4  # 3 from the spawn child
    assert result.returncode == 80, result.stderr


def test_a_program_that_ignores_sigterm_is_killed_after_the_grace(
    standin: StandIn, tmp_path: Path
) -> None:
    started = time.monotonic()
    result = wrap(
        standin,
        "--budget",
        "0.03",
        "--grace",
        "0.5",
        "--",
        sys.executable,
        str(AGENTS / "stubborn.py"),
    )
    assert result.returncode == 80, result.stderr
    assert time.monotonic() - started < 30
    assert billed(standin.calls) <= Decimal("0.03")


def test_exit_status_is_the_programs_own(standin: StandIn) -> None:
    ok = wrap(standin, "--budget", "1", "--", sys.executable, "-c", "import sys; sys.exit(3)")
    assert ok.returncode == 3
    killed = wrap(
        standin,
        "--",
        sys.executable,
        "-c",
        "import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
    )
    assert killed.returncode == 128 + 15
    missing = wrap(standin, "--budget", "1", "--", "no-such-agent-binary")
    assert missing.returncode == 127
    assert "command not found: no-such-agent-binary" in missing.stderr
    bad = wrap(standin, "--budget", "five", "--", "true")
    assert bad.returncode == 2
    assert "is not an amount of dollars" in bad.stderr


def test_existing_sitecustomize_still_runs(standin: StandIn, tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text("import os\nos.environ['THEIRS'] = 'ran'\n")
    env_path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "burnmap.cli",
            "wrap",
            "--",
            sys.executable,
            "-c",
            "import os; print(os.environ.get('THEIRS'))",
        ],
        env={**os.environ, "PYTHONPATH": env_path, "STANDIN_URL": standin.url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.strip() == "ran", result.stderr


def test_injection_never_breaks_a_program_without_httpx(standin: StandIn) -> None:
    result = wrap(standin, "--budget", "1", "--", sys.executable, "-c", "print('plain')")
    assert result.returncode == 0
    assert result.stdout == "plain\n"


def read_until(fd: int, marker: bytes, timeout: float = 30) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
    return seen


def test_interactive_use_gives_the_program_the_terminal(standin: StandIn) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: burnmap wrap on a terminal
        os.environ["STANDIN_URL"] = standin.url
        os.execv(
            sys.executable,
            [
                sys.executable,
                "-m",
                "burnmap.cli",
                "wrap",
                "--no-meter",
                "--",
                sys.executable,
                str(AGENTS / "tty_child.py"),
            ],
        )
    try:
        seen = read_until(fd, b"foreground")
        seen += read_until(fd, b"\n", timeout=5)
        assert b"foreground True" in seen, seen
        os.write(fd, b"\x03")  # Ctrl-C, as typed
        seen = read_until(fd, b"got SIGINT")
        assert b"got SIGINT" in seen, seen
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0


def test_report_json_has_the_run_report_shape(standin: StandIn, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    wrap(standin, "--budget", "1", "--", sys.executable, "-c", "pass", report=report)
    data = json.loads(report.read_text())
    with burnmap.run("shape") as r:
        pass
    assert set(r.report.to_dict()) <= set(data)
    assert data["total_cost"] == "0"
    shown = CliRunner().invoke(cli_main, ["report", str(report)])
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("burnmap run ")
    assert shown.output.endswith("\n  exit status 0\n")


def test_the_console_command_takes_the_fast_path(standin: StandIn, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    env = {**os.environ, "STANDIN_URL": standin.url}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "burnmap",
            "wrap",
            "--budget=0.05",
            "--report-json",
            str(report),
            "--",
            sys.executable,
            str(AGENTS / "loop_sync.py"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 80, result.stderr
    assert Decimal(json.loads(report.read_text())["total_cost"]) == billed(standin.calls)
    typo = subprocess.run(
        [sys.executable, "-m", "burnmap", "wrap", "--budgte", "1", "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # What the fast parser does not know goes to click, which takes it as the command.
    assert typo.returncode == 127
    assert "command not found: --budgte" in typo.stderr


@pytest.mark.parametrize(
    ("option", "value"),
    [("--grace", "abc"), ("--repeat-limit", "x"), ("--context-growth-limit", "fast")],
)
def test_a_bad_number_names_its_option(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from burnmap.wrap import launch

    status = launch.execute(launch.parse([option, value, "--", "true"]))
    assert status == 2
    assert f"Invalid value for '{option}': not a number" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--repeat-limit", "-3", "must be at least 1 (0 turns it off)"),
        ("--call-rate-limit", "-1", "must be at least 1 (0 turns it off)"),
        ("--context-growth-limit", "0.5", "must be more than 1 (0 turns it off)"),
    ],
)
def test_a_loop_limit_that_would_refuse_every_call_is_rejected(
    option: str, value: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from burnmap.wrap import launch

    status = launch.execute(launch.parse([option, value, "--", "true"]))
    assert status == 2
    assert f"Invalid value for '{option}': {says}" in capsys.readouterr().err


def test_the_program_starts_before_burnmap_loads_its_runs() -> None:
    """wrap starts a plain program first and loads itself while it runs: checking the
    options (loop limits included) must not import the heavy modules before the start."""
    probe = (
        "import sys\n"
        "from burnmap.wrap import launch\n"
        "def started(command):\n"
        "    print(sorted(m for m in ('burnmap.runs', 'burnmap.transport', 'httpx2')"
        " if m in sys.modules))\n"
        "    raise SystemExit(0)\n"
        "launch.prestart = started\n"
        "launch.execute(launch.parse(['--budget', '1', '--repeat-limit', '3',"
        " '--context-growth-limit', '2', '--', 'true']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_programs_own_scopes_are_kept_beside_the_wraps() -> None:
    """A program given BURNMAP_SCOPES (a tenant's budget) still counts against it under
    wrap, and against the wrap's own budget too."""
    from burnmap.wrap.launch import inject

    env = {"BURNMAP_SCOPES": "tenant:acme"}
    inject(env, ledger="memory://", scope="wrap:abc", events="/dev/null")
    assert env["BURNMAP_SCOPES"] == "tenant:acme,wrap:abc"
    bare: dict[str, str] = {}
    inject(bare, ledger="memory://", scope="wrap:abc", events="/dev/null")
    assert bare["BURNMAP_SCOPES"] == "wrap:abc"


def test_under_proxy_a_program_that_prints_its_responses_is_counted_once(
    standin: StandIn, tmp_path: Path
) -> None:
    """Under --proxy every call is metered at the proxy: the usage a program prints (an
    SDK response dumped as JSON) must not be counted again from its output."""
    script = tmp_path / "prints.py"
    script.write_text(
        "import os, httpx\n"
        "base = os.environ['OPENAI_BASE_URL'].rstrip('/')\n"
        "for _ in range(3):\n"
        "    r = httpx.post(base + '/chat/completions', headers={'authorization': 'Bearer x'},\n"
        "        json={'model': 'gpt-4o-mini', 'max_tokens': 50,\n"
        "              'messages': [{'role': 'user', 'content': 'hi'}]})\n"
        "    print(r.text, flush=True)\n"
    )
    report = tmp_path / "report.json"
    upstream = {"OPENAI_BASE_URL": standin.openai_base_url}  # where the proxy forwards
    args = ["--proxy", "--budget", "1", "--", sys.executable, str(script)]
    result = wrap(standin, *args, report=report, env=upstream)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count('"usage"') == 3  # the usage it printed, three times
    data = json.loads(report.read_text())
    assert data["call_count"] == len(standin.calls) == 3
    assert Decimal(data["total_cost"]) == billed(standin.calls)


def test_a_call_burnmap_cannot_budget_stops_the_program_with_its_own_status(
    standin: StandIn, tmp_path: Path
) -> None:
    """A refusal that is not the budget (no price is known for the model) is named as
    such, with exit status 82, not reported as 'budget None reached'."""
    script = tmp_path / "unknown.py"
    script.write_text(
        "import os, anthropic\n"
        "client = anthropic.Anthropic(api_key='x', base_url=os.environ['STANDIN_URL'],"
        " max_retries=0)\n"
        "client.messages.create(model='llama-9-acme', max_tokens=5,"
        " messages=[{'role': 'user', 'content': 'hi'}])\n"
    )
    report = tmp_path / "report.json"
    result = wrap(standin, "--", sys.executable, str(script), report=report)
    assert result.returncode == 82, result.stderr
    assert "no price is known for model 'llama-9-acme'" in result.stderr
    assert "budget None" not in result.stderr
    assert json.loads(report.read_text())["stopped_by_burnmap"] == "refused"
    assert standin.requests == []


def test_a_report_path_in_no_folder_is_refused_before_the_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from burnmap.wrap import launch

    status = launch.execute(launch.parse(["--report-json", "/nonexistent/r.json", "--", "true"]))
    assert status == 2
    assert "Invalid value for '--report-json': /nonexistent is no folder" in capsys.readouterr().err


def test_a_pipeline_reader_that_quits_ends_the_program_as_without_wrap() -> None:
    """`burnmap wrap -- yes | head -1` ends (the program's writes fail once the reader is
    gone), and the program starts with SIGPIPE at its default, as shells give it."""
    wrap_cmd = f"{sys.executable} -m burnmap.cli wrap"
    done = shell(f"{wrap_cmd} -- yes | head -1; {wrap_cmd} -- sh -c 'yes | head -1'")
    assert done.stdout == "y\ny\n"
    assert "Broken pipe" not in done.stderr


def test_another_python_runs_unbudgeted_with_a_warning_not_a_crash(tmp_path: Path) -> None:
    """A child on another Python than wrap's cannot load wrap's packages (compiled for
    its own Python): it is told so and runs on, rather than crashing on a foreign
    pydantic_core in the middle of a call."""
    events = tmp_path / "events.jsonl"
    probe = (
        "import sys\n"
        "sys.modules['burnmap'] = None  # as if burnmap were not installed for this Python\n"
        "before = list(sys.path)\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import sitecustomize\n"
        "assert sitecustomize._burnmap() is None\n"
        "assert sys.path[1:] == before\n"
    )
    inject_dir = Path(__file__).parent.parent / "burnmap" / "wrap" / "inject"
    env = {
        **os.environ,
        "BURNMAP_WRAP_PYTHON": "cpython-999",
        "BURNMAP_WRAP_PATHS": "/nonexistent/site-packages",
        "BURNMAP_WRAP_EVENTS": str(events),
    }
    env.pop("BURNMAP_WRAP_READY", None)
    subprocess.run(
        [sys.executable, "-S", "-c", probe, str(inject_dir)], env=env, check=True, timeout=60
    )
    failed = json.loads(events.read_text().splitlines()[-1])
    assert failed["kind"] == "inject-failed"
    assert "not installed for this Python" in failed["error"]


def test_a_program_that_cannot_run_gets_a_shells_answer_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A script without a #! line cannot be executed: wrap says so and exits 126, as a
    shell does, and removes the folder it had made for the run."""
    from burnmap.wrap import launch

    script = tmp_path / "no_shebang.sh"
    script.write_text("echo hi\n")
    script.chmod(0o755)
    before = set(Path(os.environ.get("TMPDIR") or "/tmp").glob("burnmap-wrap-*"))
    status = launch.execute(launch.parse(["--", str(script)]))
    assert status == 126
    assert "Exec format error (a script needs a #! line)" in capsys.readouterr().err
    assert set(Path(os.environ.get("TMPDIR") or "/tmp").glob("burnmap-wrap-*")) == before


def test_a_proxy_upstream_that_is_no_url_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from burnmap.wrap import launch

    monkeypatch.setenv("ANTHROPIC_BASE_URL", "not a url")
    status = launch.execute(launch.parse(["--proxy", "--", "true"]))
    assert status == 2
    err = capsys.readouterr().err
    assert "ANTHROPIC_BASE_URL='not a url' is not an http(s) URL with a host" in err


def test_a_program_that_ignores_the_signal_wrap_passes_on_is_killed_after_the_grace(
    tmp_path: Path,
) -> None:
    """SIGTERM sent to wrap goes to the program; one that ignores it is killed --grace
    seconds later, so that wrap never ends leaving it running unsupervised."""
    script = tmp_path / "deaf.py"
    script.write_text(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    command = [sys.executable, "-m", "burnmap.cli", "wrap", "--grace", "0.5", "--"]
    with subprocess.Popen(
        [*command, sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # (wrap may still be starting: it keeps it)
        proc.wait(timeout=30)
    assert proc.returncode == 128 + signal.SIGKILL
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("mode", [[], ["--proxy"]])
def test_output_merged_with_2_and_1_keeps_its_order(mode: list[str], tmp_path: Path) -> None:
    """With stdout and stderr one file (2>&1), the program gets one pipe for both, so its
    lines come out in the order it wrote them; apart, each keeps its own."""
    script = tmp_path / "both.py"
    script.write_text(
        "import sys\n"
        "for i in range(400):\n"
        "    stream = sys.stdout if i % 2 == 0 else sys.stderr\n"
        "    stream.write(f'line {i}\\n')\n"
        "    stream.flush()\n"
    )
    wrapped = f"{sys.executable} -m burnmap.cli wrap --no-meter {' '.join(mode)} --"
    merged = shell(f"{wrapped} {sys.executable} {script} 2>&1", check=True)
    lines = [line for line in merged.stdout.splitlines() if line.startswith("line ")]
    assert lines == [f"line {i}" for i in range(400)]
    apart = shell(f"{wrapped} {sys.executable} {script}", check=True)
    assert apart.stdout.count("line ") == 200 and apart.stderr.count("line ") == 200
