"""burnmap wrap follows known agent CLIs from the session files they write as they run.

Each "agent" here is a stand-in executable with the real CLI's name that replays a real
capture (tests/fixtures/agents) into the place the real CLI writes it.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

import burnmap

pytestmark = pytest.mark.wrap

AGENTS = Path(__file__).parent / "fixtures" / "agents"

REPLAY = """#!{python}
import os, pathlib, sys, time
target = pathlib.Path(os.path.expanduser(os.environ["REPLAY_TO"]))
target.parent.mkdir(parents=True, exist_ok=True)
if os.environ.get("REPLAY_STDOUT"):
    sys.stdout.write(open(os.environ["REPLAY_STDOUT"]).read())
    sys.stdout.flush()
with open(target, "a") as out:
    for line in open(os.environ["REPLAY_FROM"]):
        out.write(line)
        out.flush()
        time.sleep(0.01)
time.sleep(0.3)
"""


def fake_agent(tmp_path: Path, name: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(REPLAY.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def wrap(
    tmp_path: Path, name: str, capture: str, target: str, *, stdout: str = ""
) -> dict[str, object]:
    """Wrap a stand-in ``name`` that replays ``capture`` into ``target`` (and ``stdout``,
    a capture of what the CLI prints, to its standard output)."""
    agent = fake_agent(tmp_path, name)
    home = tmp_path / "home"
    report = tmp_path / "report.json"
    env = {
        **os.environ,
        "HOME": str(home),
        "REPLAY_FROM": str(AGENTS / capture),
        "REPLAY_TO": str(home / target),
        "REPLAY_STDOUT": str(AGENTS / stdout) if stdout else "",
        "PATH": f"{agent.parent}{os.pathsep}{os.environ['PATH']}",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "burnmap.cli",
            "wrap",
            "--report-json",
            str(report),
            "--",
            name,
            "--model",
            "gpt-5",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(report.read_text())
    return data


def tokens(data: dict[str, object]) -> tuple[int, int, int]:
    rows = data["cost_by_call"]
    assert isinstance(rows, list)
    return (
        sum(r["input_tokens"] for r in rows),
        sum(r["output_tokens"] for r in rows),
        sum(r["cache_read_tokens"] for r in rows),
    )


def test_claude_code_transcript(tmp_path: Path) -> None:
    data = wrap(
        tmp_path,
        "claude",
        "claude_transcript.jsonl",
        ".claude/projects/-home-dev-project/session.jsonl",
    )
    # Two replies, each written once per content block: counted once each.
    assert data["call_count"] == 2
    assert tokens(data) == (8, 69, 29000)
    assert Decimal(str(data["total_cost"])) > 0


def test_claude_code_stream_json_output_is_not_counted_again(tmp_path: Path) -> None:
    """``claude -p --output-format stream-json`` repeats each reply's usage on stdout,
    keyed by message id, while the transcript keys calls by request id: the calls are
    counted once, from the transcript."""
    data = wrap(
        tmp_path,
        "claude",
        "claude_transcript.jsonl",
        ".claude/projects/-home-dev-project/session.jsonl",
        stdout="claude_stream.jsonl",
    )
    assert data["call_count"] == 2
    assert tokens(data) == (8, 69, 29000)


def test_claude_code_run_total_counts_every_model(tmp_path: Path) -> None:
    """With no per-call report, the run total Claude Code prints counts, for every model it
    names (Claude Code runs a small model beside the main one)."""
    result = json.loads((AGENTS / "claude_json.json").read_text())
    usage = result["modelUsage"]["claude-sonnet-4-5-20250929"]
    result["modelUsage"] = {
        "claude-sonnet-4-5-20250929": {**usage, "costUSD": 0.25},
        "claude-haiku-4-5-20251001": {**usage, "costUSD": 0.05},
    }
    result["total_cost_usd"] = 0.30
    printed = tmp_path / "result.jsonl"
    printed.write_text(json.dumps(result) + "\n")
    nothing = tmp_path / "empty.jsonl"
    nothing.write_text("")
    data = wrap(
        tmp_path,
        "claude",
        str(nothing),
        ".claude/projects/-home-dev-project/session.jsonl",
        stdout=str(printed),
    )
    assert Decimal(str(data["total_cost"])) == Decimal("0.30")
    rows = data["cost_by_call"]
    assert isinstance(rows, list)
    assert {row["model"]: row["cost"] for row in rows} == {
        "claude-sonnet-4-5-20250929": "0.25",
        "claude-haiku-4-5-20251001": "0.05",
    }


def test_pretty_printed_usage_in_a_programs_output_is_read(tmp_path: Path) -> None:
    """A program that logs its calls as pretty-printed JSON (LangChain's debug output): the
    usage object spans lines that name no usage field, and is still found, once."""
    nothing = tmp_path / "empty.jsonl"
    nothing.write_text("")
    data = wrap(tmp_path, "langchain-app", str(nothing), "log.jsonl", stdout="langchain_debug.txt")
    assert data["call_count"] == 1
    assert tokens(data) == (812, 41, 0)


def test_codex_rollout(tmp_path: Path) -> None:
    data = wrap(
        tmp_path,
        "codex",
        "codex_rollout.jsonl",
        ".codex/sessions/2026/11/28/rollout-2026-11-28T13-00-00-abc.jsonl",
    )
    assert data["call_count"] == 2
    assert tokens(data) == (1225 + 232, 87 + 23, 4096 + 5248)


def test_gemini_session(tmp_path: Path) -> None:
    data = wrap(
        tmp_path,
        "gemini",
        "gemini_chat_session.jsonl",
        ".gemini/tmp/fe79ce19/chats/session-2026-11-28T13-35-1d2343b5.jsonl",
    )
    assert data["call_count"] >= 1
    in_tokens, out_tokens, cached = tokens(data)
    assert cached == 12160
    assert (in_tokens, out_tokens) == (4153, 114)


def test_costs_use_prices_for_the_named_or_flagged_model(tmp_path: Path) -> None:
    data = wrap(
        tmp_path, "codex", "codex_rollout.jsonl", ".codex/sessions/2026/11/28/rollout-x.jsonl"
    )
    rows = data["cost_by_call"]
    assert isinstance(rows, list)
    for row in rows:
        usage = burnmap.Usage(
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            cache_read_tokens=row["cache_read_tokens"],
        )
        assert Decimal(row["cost"]) == burnmap.prices.cost(row["model"], usage)


def test_only_a_known_agents_model_flag_names_its_model() -> None:
    from burnmap.wrap.supervisor import _default_model

    assert _default_model("codex", ["codex", "exec", "-m", "gpt-5", "fix it"]) == "gpt-5"
    # `python -m tool` names a module, not a model.
    assert _default_model(None, ["python", "-m", "tool", "run"]) == "claude-sonnet-4-6"
