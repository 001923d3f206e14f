"""The command line: prices and the demo."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from burnmap.cli import main


def test_prices_shows_known_models_and_explains_unknown_ones() -> None:
    result = CliRunner().invoke(main, ["prices", "claude-sonnet-4-5", "gpt-4o-mini-2024-07-18"])
    assert result.exit_code == 0, result.output
    for text in ("$3", "$6 above 200k input", "$0.15", "gpt-4o-mini"):
        assert text in result.output
    result = CliRunner().invoke(main, ["prices", "acme-9000"])
    assert result.exit_code == 1
    assert "burnmap.prices.register" in result.output
    assert "was not sent" not in result.output  # no call was made
    typo = CliRunner().invoke(main, ["prices", "claude-sonet-4-6"])
    assert "Did you mean claude-sonnet-4-6" in typo.output


def test_demo_stops_the_agent_before_its_budget() -> None:
    result = CliRunner().invoke(main, ["demo", "--budget", "0.10"])
    assert result.exit_code == 0, result.output
    assert "was not sent" in result.output
    assert "stopped early" in result.output


def test_report_reads_a_saved_run_report(tmp_path: Path) -> None:
    import burnmap

    with burnmap.run("saved", budget=1) as r:
        pass
    path = tmp_path / "r.json"
    path.write_text(r.report.to_json())
    result = CliRunner().invoke(main, ["report", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output == r.report.summary() + "\n"
    for text in ("{}", "[]", '{"job_name": "x", "total_cost": "a lot", "cost_by_call": []}'):
        path.write_text(text)
        result = CliRunner().invoke(main, ["report", str(path)])
        assert result.exit_code == 1
        assert "not a burnmap run report" in result.output
