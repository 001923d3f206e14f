"""Agent output parsers: every capture in fixtures/agents, garbage, and scanning properties.

The expected figures are worked out by hand from the captures (see each test's comment).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from burnmap._core.usage import MAX_COUNT
from burnmap.wrap.parsers import (
    AgentCall,
    AiderStdout,
    ClaudeTranscript,
    CodexRollout,
    Dedup,
    JsonScanner,
    LatestUsage,
    aider_analytics_line,
    aider_line,
    claude_json_result,
    claude_otel_events,
    claude_stream_line,
    claude_transcript_line,
    codex_line,
    codex_otel_events,
    codex_rollout_line,
    gemini_json,
    gemini_session,
    gemini_stream_line,
)

AGENTS = Path(__file__).parent / "fixtures" / "agents"
SONNET = "claude-sonnet-4-5-20250929"


def text(name: str) -> str:
    return (AGENTS / name).read_text(encoding="utf-8")


def lines(name: str) -> list[str]:
    return text(name).splitlines()


def each(parse: Callable[[str], list[AgentCall]], name: str) -> list[AgentCall]:
    return [call for line in lines(name) for call in parse(line)]


def tokens(call: AgentCall) -> tuple[int, int, int, int]:
    """(uncached input, output, cache read, cache write)."""
    return (call.input_tokens, call.output_tokens, call.cache_read_tokens, call.cache_write_tokens)


def total(calls: list[AgentCall]) -> tuple[int, int, int, int]:
    return (
        sum(c.input_tokens for c in calls),
        sum(c.output_tokens for c in calls),
        sum(c.cache_read_tokens for c in calls),
        sum(c.cache_write_tokens for c in calls),
    )


def otlp_export(*records: dict[str, Any]) -> dict[str, Any]:
    return {"resourceLogs": [{"resource": {}, "scopeLogs": [{"logRecords": list(records)}]}]}


# --- Claude Code ---------------------------------------------------------------------------


def test_claude_otel_api_request_in_an_export_and_bare() -> None:
    record = json.loads(text("claude_otel_api_request.json"))
    for payload in (otlp_export(record), record, {"logRecords": [record]}):
        (call,) = claude_otel_events(payload)
        assert call.source == "claude-otel"
        assert call.request_id == "req_01Mock0013"
        assert call.model == SONNET
        assert tokens(call) == (4, 57, 14500, 2100)
        assert call.cost_usd == Decimal("0.013092")
        assert (call.estimated, call.final) == (False, False)


def test_claude_otel_skips_other_events_and_reads_string_numbers() -> None:
    record = json.loads(text("claude_otel_api_request.json"))
    other = {
        "body": {"stringValue": "claude_code.tool_result"},
        "attributes": [{"key": "input_tokens", "value": {"intValue": 5}}],
    }
    stringly = {
        "body": {"stringValue": "claude_code.api_request"},
        "attributes": [
            {"key": "model", "value": {"stringValue": "claude-haiku-4-5"}},
            {"key": "input_tokens", "value": {"stringValue": "10"}},
            {"key": "output_tokens", "value": {"intValue": "20"}},
            {"key": "cost_usd_micros", "value": {"intValue": "1234"}},
        ],
    }
    calls = claude_otel_events(otlp_export(other, record, stringly))
    assert [c.request_id for c in calls] == ["req_01Mock0013", None]
    assert tokens(calls[1]) == (10, 20, 0, 0)
    assert calls[1].cost_usd == Decimal("0.001234")


def test_claude_stream_json_repeats_one_messages_usage() -> None:
    # The pitfall: three `assistant` events, two of them for msg_…0001, each with the same
    # input/cache figures and a placeholder output_tokens of 1. Summing them would count
    # msg_…0001 twice (input 12, cache reads 43,500) and the output as 3, not 69.
    calls = each(claude_stream_line, "claude_stream.jsonl")
    snapshots, (result,) = calls[:-1], calls[-1:]
    assert [c.request_id for c in snapshots] == [
        "msg_01MockMessage0001",
        "msg_01MockMessage0001",
        "msg_01MockMessage0002",
    ]
    assert all(tokens(c) == (4, 1, 14500, 2100) and c.estimated for c in snapshots)
    assert total(snapshots) == (12, 3, 43500, 6300)  # what a naive sum would say

    latest = LatestUsage()
    for call in snapshots:
        latest.update(call)
    merged = latest.calls()
    assert len(merged) == 2
    assert total(merged) == (8, 2, 29000, 4200)

    # Only the result has the true totals: 4+4 input, 2 x 14500 reads, 2 x 2100 writes, 69 out.
    assert result.final and not result.estimated
    assert (result.source, result.request_id, result.model) == ("claude-stream", None, SONNET)
    assert tokens(result) == (8, 69, 29000, 4200)
    assert result.cost_usd == Decimal("0.025509")
    # The inputs of the merged snapshots agree with the result; the output cannot.
    assert total(merged)[0::2] == tokens(result)[0::2]


def test_claude_stream_partial_messages_merge_to_the_result() -> None:
    # With --include-partial-messages, message_delta brings each message's final output:
    # msg_…0007 57 tokens (tool_use), msg_…0008 12 tokens (end_turn): 57 + 12 = 69.
    calls = each(claude_stream_line, "claude_stream_partial.jsonl")
    latest = LatestUsage()
    growths = [g for c in calls if not c.final and (g := latest.update(c)) is not None]
    merged = latest.calls()
    assert [(c.request_id, tokens(c), c.estimated) for c in merged] == [
        ("msg_01MockMessage0007", (4, 57, 14500, 2100), False),
        ("msg_01MockMessage0008", (4, 12, 14500, 2100), False),
    ]
    assert all(c.model == SONNET for c in merged)
    assert total(growths) == total(merged) == (8, 69, 29000, 4200)
    (result,) = [c for c in calls if c.final]
    assert tokens(result) == (8, 69, 29000, 4200)
    assert result.cost_usd == Decimal("0.025509")


def test_claude_stream_max_budget_result_has_zero_usage_but_model_usage() -> None:
    # error_max_budget_usd: `usage` is all zeros; modelUsage holds the one call's figures
    # and $0.013092 — more than the $0.01 budget, which Claude Code enforces after the fact.
    calls = each(claude_stream_line, "claude_stream_max_budget.jsonl")
    assert [c.request_id for c in calls[:-1]] == ["msg_01MockMessage0009"] * 2
    result = calls[-1]
    assert result.final
    assert result.model == SONNET
    assert tokens(result) == (4, 57, 14500, 2100)
    assert result.cost_usd == Decimal("0.013092")


def test_claude_json_result() -> None:
    (result,) = claude_json_result(text("claude_json.json"))
    assert (result.source, result.model, result.final) == ("claude-stream", SONNET, True)
    assert tokens(result) == (8, 69, 29000, 4200)
    assert result.cost_usd == Decimal("0.025509")
    # --verbose prints every event as one JSON array; the result is the last element.
    events = [json.loads(line) for line in lines("claude_stream.jsonl")]
    (verbose,) = claude_json_result(json.dumps(events))
    assert tokens(verbose) == (8, 69, 29000, 4200)


def test_claude_result_with_several_models_and_no_model_usage() -> None:
    result = {
        "type": "result",
        "total_cost_usd": 0.03,
        "modelUsage": {
            "claude-sonnet-4-5": {"inputTokens": 10, "outputTokens": 5, "costUSD": 0.02},
            "claude-haiku-4-5": {"inputTokens": 7, "outputTokens": 3, "costUSD": 0.01},
        },
    }
    calls = claude_stream_line(json.dumps(result))
    assert [(c.model, tokens(c), c.cost_usd) for c in calls] == [
        ("claude-sonnet-4-5", (10, 5, 0, 0), Decimal("0.02")),
        ("claude-haiku-4-5", (7, 3, 0, 0), Decimal("0.01")),
    ]
    bare = {"type": "result", "total_cost_usd": 0.5, "usage": {"input_tokens": 3}}
    (call,) = claude_stream_line(json.dumps(bare))
    assert (call.model, tokens(call), call.cost_usd) == (None, (3, 0, 0, 0), Decimal("0.5"))


def test_claude_transcript_dedups_per_content_block_lines() -> None:
    # msg_…0007 is written twice (text block, tool_use block) with its final usage; the
    # key is the request id, which Claude Code's OpenTelemetry events carry too.
    calls = each(claude_transcript_line, "claude_transcript.jsonl")
    messages, (cost_state,) = calls[:-1], calls[-1:]
    assert [c.request_id for c in messages] == [
        "req_01Mock0007",
        "req_01Mock0007",
        "req_01Mock0008",
    ]
    seen = Dedup()
    unique = [c for c in messages if seen.add(c)]
    assert [tokens(c) for c in unique] == [(4, 57, 14500, 2100), (4, 12, 14500, 2100)]
    assert not any(c.estimated for c in unique)
    assert cost_state.final and cost_state.source == "claude-transcript"
    assert tokens(cost_state) == total(unique) == (8, 69, 29000, 4200)
    assert cost_state.cost_usd == Decimal("0.025509")


def test_claude_synthetic_messages_and_missing_ids() -> None:
    synthetic = {
        "type": "assistant",
        "message": {"model": "<synthetic>", "usage": {"input_tokens": 0, "output_tokens": 0}},
    }
    assert claude_transcript_line(json.dumps(synthetic)) == []
    no_message_id = {
        "type": "assistant",
        "requestId": "req_9",
        "message": {"model": "m", "stop_reason": "end_turn", "usage": {"output_tokens": 2}},
    }
    (call,) = claude_transcript_line(json.dumps(no_message_id))
    assert (call.request_id, tokens(call)) == ("req_9", (0, 2, 0, 0))
    delta_without_id = {"type": "stream_event", "event": {"type": "message_delta", "usage": {}}}
    assert claude_stream_line(json.dumps(delta_without_id)) == []


def test_claude_one_hour_cache_writes_are_kept_apart() -> None:
    """1-hour cache writes cost more than 5-minute ones: they reach the price separately."""
    reply = {
        "type": "assistant",
        "requestId": "req_1h",
        "message": {
            "id": "msg_1h",
            "model": "claude-sonnet-4-5",
            "stop_reason": "end_turn",
            "usage": {
                "input_tokens": 4,
                "output_tokens": 10,
                "cache_creation_input_tokens": 3000,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 1000,
                    "ephemeral_1h_input_tokens": 2000,
                },
            },
        },
    }
    (call,) = claude_transcript_line(json.dumps(reply))
    assert (call.cache_write_tokens, call.cache_write_1h_tokens) == (1000, 2000)


# --- Codex ---------------------------------------------------------------------------------


def test_codex_exec_turn_completed() -> None:
    # input 10,801 includes 9,344 cached → 1,457 uncached; output 110 includes reasoning 64.
    (call,) = each(codex_line, "codex_exec.jsonl")
    assert (call.source, call.request_id, call.model) == ("codex", None, None)
    assert tokens(call) == (1457, 110, 9344, 0)
    assert call.cost_usd is None
    assert call.final  # cumulative for the thread


def test_codex_rollout_one_call_per_response() -> None:
    # resp_mock0001: 5,321 in (4,096 cached) → 1,225, 87 out; resp_mock0002: 5,480 (5,248
    # cached) → 232, 23 out. Together they are codex exec's turn total.
    rollout = CodexRollout()
    calls = each(rollout.feed, "codex_rollout.jsonl")
    assert [(c.request_id, c.model, tokens(c)) for c in calls] == [
        ("resp_mock0001", "gpt-5.1-codex", (1225, 87, 4096, 0)),
        ("resp_mock0002", "gpt-5.1-codex", (232, 23, 5248, 0)),
    ]
    (turn,) = each(codex_line, "codex_exec.jsonl")
    assert total(calls) == tokens(turn)


def test_codex_rollout_lines_without_context_repeat_each_response() -> None:
    readings = each(codex_rollout_line, "codex_rollout.jsonl")
    assert [(c.request_id, tokens(c)) for c in readings] == [
        ("resp_mock0001", (1225, 87, 4096, 0)),
        (None, (1225, 87, 4096, 0)),  # token_count's last_token_usage: the same response
        ("resp_mock0002", (232, 23, 5248, 0)),
        (None, (232, 23, 5248, 0)),
    ]


def test_codex_rollout_from_token_counts_skips_re_emits() -> None:
    # Older rollouts have no token_usage_record; Codex re-emits token_count with unchanged
    # totals (rate-limit refreshes) and the re-emit must not count again.
    kept = [line for line in lines("codex_rollout.jsonl") if "token_usage_record" not in line]
    again = [line for line in kept for _ in range(2 if '"token_count"' in line else 1)]
    assert len(again) == len(kept) + 2
    rollout = CodexRollout()
    calls = [c for line in again for c in rollout.feed(line)]
    assert [(c.request_id, c.model, tokens(c)) for c in calls] == [
        (None, "gpt-5.1-codex", (1225, 87, 4096, 0)),
        (None, "gpt-5.1-codex", (232, 23, 5248, 0)),
    ]


def test_codex_rollout_totals_delta_and_reset() -> None:
    def count(total: tuple[int, int, int], last: tuple[int, int, int]) -> str:
        def usage(v: tuple[int, int, int]) -> dict[str, int]:
            return {"input_tokens": v[0], "cached_input_tokens": v[1], "output_tokens": v[2]}

        info = {"total_token_usage": usage(total), "last_token_usage": usage(last)}
        return json.dumps({"type": "event_msg", "payload": {"type": "token_count", "info": info}})

    rollout = CodexRollout()
    assert tokens(rollout.feed(count((100, 0, 10), (100, 0, 10)))[0]) == (100, 10, 0, 0)
    # An event was missed: the totals moved by two responses, the delta counts both.
    assert tokens(rollout.feed(count((350, 100, 40), (130, 50, 15)))[0]) == (150, 30, 100, 0)
    # The totals dropped (resumed session): only the last response counts.
    assert tokens(rollout.feed(count((20, 0, 2), (20, 0, 2)))[0]) == (20, 2, 0, 0)
    null_info = {"type": "event_msg", "payload": {"type": "token_count", "info": None}}
    assert rollout.feed(json.dumps(null_info)) == []


def test_codex_otel_response_completed() -> None:
    # Counts arrive as stringValue and as string intValue: 5,321 - 4,096 cached = 1,225.
    record = json.loads(text("codex_otel_sse_event.json"))
    for payload in (otlp_export(record), record):
        (call,) = codex_otel_events(payload)
        assert (call.source, call.model) == ("codex", "gpt-5.1-codex")
        assert tokens(call) == (1225, 87, 4096, 0)
    assert claude_otel_events(otlp_export(record)) == []


# --- Gemini CLI ----------------------------------------------------------------------------


def test_gemini_session_file() -> None:
    # 8,123 prompt - 4,096 cached = 4,027; 18 out + 89 thoughts = 107.
    # 8,190 - 8,064 = 126; 7 out. The first message is written twice (again with toolCalls).
    calls = each(gemini_session, "gemini_chat_session.jsonl")
    assert [(c.request_id, tokens(c)) for c in calls] == [
        ("72d80de0-167d-4c2e-ba8d-f843f06e9d0d", (4027, 107, 4096, 0)),
        ("72d80de0-167d-4c2e-ba8d-f843f06e9d0d", (4027, 107, 4096, 0)),
        ("61a5bb4a-174b-4fb3-a7da-930915519987", (126, 7, 8064, 0)),
    ]
    assert all(c.model == "gemini-2.5-pro" and c.source == "gemini" for c in calls)
    seen = Dedup()
    unique = [c for c in calls if seen.add(c)]
    assert total(unique) == (4153, 114, 12160, 0)
    # The same messages as an older whole-file session, or as parsed dicts.
    records = [json.loads(line) for line in lines("gemini_chat_session.jsonl")]
    assert gemini_session({"messages": records}) == calls
    assert [c for r in records for c in gemini_session(r)] == calls


def test_gemini_json_output() -> None:
    # prompt 16,313 - cached 12,160 = 4,153 (its "input" field); 25 candidates + 89 thoughts.
    (call,) = gemini_json(text("gemini_json.json"))
    assert (call.model, call.final, call.estimated) == ("gemini-2.5-pro", True, False)
    assert tokens(call) == (4153, 114, 12160, 0)


def test_gemini_stream_json_result_recovers_thought_tokens() -> None:
    # output_tokens 25 leaves out the 89 thought tokens: 16,427 - 16,313 - 25 = 89.
    (call,) = each(gemini_stream_line, "gemini_stream.jsonl")
    assert (call.model, call.final) == ("gemini-2.5-pro", True)
    assert tokens(call) == (4153, 114, 12160, 0)
    (json_call,) = gemini_json(text("gemini_json.json"))
    assert tokens(call) == tokens(json_call)


# --- aider ---------------------------------------------------------------------------------


def aider_stdout(name: str) -> list[AgentCall]:
    reader = AiderStdout()
    return [*each(reader.feed, name), *reader.flush()]


def test_aider_stdout_captures() -> None:
    (openai,) = aider_stdout("aider_stdout.txt")
    assert (tokens(openai), openai.cost_usd, openai.estimated) == (
        (2400, 4, 0, 0),
        Decimal("0.0060"),
        True,
    )
    (anthropic,) = aider_stdout("aider_stdout_stream_anthropic.txt")
    assert (tokens(anthropic), anthropic.cost_usd, anthropic.estimated) == (
        (2300, 1, 0, 0),
        Decimal("0.0070"),
        True,
    )
    assert openai.source == anthropic.source == "aider"


def test_aider_usage_lines() -> None:
    # 4) "19k sent, 2.1k cache write, 14k cache hit": aider 0.86 counts the 2,100 written
    # tokens twice in "sent" (4 + 2,100 + 14,500 + 2,100 = 18,704 → "19k"), so the uncached
    # input is 19,000 - 14,000 - 2 * 2,100 = 800 (truly 4: rounding). Its cost, $0.01, is
    # rounded to the cent (list price $0.012417), so it is estimated too.
    calls = aider_stdout("aider_usage_lines.txt")
    assert [(tokens(c), c.cost_usd, c.estimated) for c in calls] == [
        ((2400, 4, 0, 0), Decimal("0.0060"), True),
        ((812, 41, 0, 0), Decimal("0.0024"), False),
        ((120, 12, 0, 0), Decimal("0.00054"), False),
        ((800, 12, 14000, 2100), Decimal("0.01"), True),
    ]
    two_lines = "\n".join(lines("aider_usage_lines.txt")[-2:])
    assert aider_line(two_lines) == calls[-1:]
    tokens_only = aider_line(lines("aider_usage_lines.txt")[-2])
    assert [(tokens(c), c.cost_usd) for c in tokens_only] == [((800, 12, 14000, 2100), None)]


def test_aider_stdout_pending_tokens_line() -> None:
    reader = AiderStdout()
    assert reader.feed("\x1b[1mTokens: 1.2k sent, 5 received.\x1b[0m") == []
    assert reader.feed("") == []
    (call,) = reader.feed("Cost: $0.12 message, $0.50 session.")
    assert (tokens(call), call.cost_usd, call.estimated) == ((1200, 5, 0, 0), Decimal("0.12"), True)
    assert reader.feed("Tokens: 10 sent, 5 received.") == []
    (uncosted,) = reader.feed("Applied edit to hello.py")  # no price known for the model
    assert (tokens(uncosted), uncosted.cost_usd, uncosted.estimated) == ((10, 5, 0, 0), None, False)
    assert reader.feed("Tokens: 7 sent, 1 received.") == []
    assert [tokens(c) for c in reader.flush()] == [(7, 1, 0, 0)]
    assert reader.flush() == []


def test_aider_analytics_log() -> None:
    # prompt 2,386 (aider's own count: the stream had no usage), cost 0.006005000000000001.
    (call,) = each(aider_analytics_line, "aider_analytics.jsonl")
    assert (call.source, call.model) == ("aider", "openai/REDACTED")
    assert tokens(call) == (2386, 4, 0, 0)
    assert call.cost_usd == Decimal("0.006005")


# --- generic scanning ----------------------------------------------------------------------


def scan(name: str) -> list[AgentCall]:
    scanner = JsonScanner()
    return each(scanner.feed, name)


def test_an_implausible_anthropic_count_is_counted_at_its_limit_not_dropped() -> None:
    line = json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "model": "claude-sonnet-4-6",
            "usage": {"input_tokens": 4, "output_tokens": 10**19, "cache_read_input_tokens": 9},
        }
    )
    (call,) = JsonScanner().feed(line + "\n")
    assert tokens(call)[:3] == (4, MAX_COUNT, 9)  # the budget errs high, as for huge counts


def test_scan_langchain_debug_counts_the_call_once() -> None:
    # One call appears as llm_output.token_usage, response_metadata.token_usage and
    # usage_metadata (and again as a Python repr on the last line): counted once.
    (call,) = scan("langchain_debug.txt")
    assert (call.source, call.request_id, call.model) == ("scan", "chatcmpl-mock7", "gpt-4o")
    assert tokens(call) == (812, 41, 0, 0)
    assert call.estimated


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # message_start (4 in, 1 out, 14,500 read, 2,100 written), then message_delta's
        # cumulative 12 output adds 11.
        (
            "anthropic_messages.sse.txt",
            [
                ("msg_01MockMessage0035", SONNET, (4, 1, 14500, 2100)),
                (None, SONNET, (0, 11, 0, 0)),
            ],
        ),
        ("openai_chat_include_usage.sse.txt", [("chatcmpl-mock16", "gpt-4o", (812, 41, 0, 0))]),
        # 5,480 input includes 5,248 cached.
        ("openai_responses.sse.txt", [("resp_mock0017", "gpt-5.1", (232, 23, 5248, 0))]),
        # 8,190 prompt includes 8,064 cached.
        (
            "gemini_streamGenerateContent.sse.txt",
            [("mockresp0007", "gemini-2.5-pro", (126, 7, 8064, 0))],
        ),
        ("openai_agents_verbose.txt", []),  # its usage is a Usage(...) repr, not JSON
        ("sdk_debug_logging.txt", []),  # Python dict reprs and headers, no bodies
        ("claude_text.stdout.txt", []),
        ("claude_text.stderr.txt", []),
        ("gemini_text.stdout.txt", []),
    ],
)
def test_scan_captures(name: str, expected: list[tuple[str | None, str, tuple[int, ...]]]) -> None:
    calls = scan(name)
    assert [(c.request_id, c.model, tokens(c)) for c in calls] == expected
    assert all(c.estimated and c.source == "scan" for c in calls)


def test_scan_dedups_ids_and_recovers_after_a_stray_brace() -> None:
    scanner = JsonScanner()
    body = '{"id": "r1", "usage": {"prompt_tokens": 5, "completion_tokens": 2}}'
    assert len(scanner.feed(body)) == 1
    assert scanner.feed("data: " + body) == []
    stray = ["Running with config {", "{", '  "id": "r2",', '  "usage": {"input_tokens": 3}', "}"]
    assert [c for line in stray for c in scanner.feed(line)] == []
    (late,) = scanner.feed("Step 2")  # the stray candidate ends; the JSON is found
    assert (late.request_id, tokens(late)) == ("r2", (3, 0, 0, 0))


def test_scan_gives_up_on_huge_candidates() -> None:
    scanner = JsonScanner(max_chars=10_000, max_lines=50)
    scanner.feed("{")
    for _ in range(100):
        scanner.feed('  "a": [1, 2, 3],')
        assert scanner.buffered_chars <= 10_000
    assert scanner.buffered_chars < 2_000  # gave up after 50 lines
    scanner.feed("{")
    scanner.feed('  "pad": "' + "x" * 20_000 + '",')
    assert scanner.buffered_chars == 0
    one_line = '{"id": "big", "pad": "' + "y" * 20_000 + '", "usage": {"input_tokens": 1}}'
    assert scanner.feed(one_line) == []
    (call,) = scanner.feed('{"usage": {"input_tokens": 9, "output_tokens": 1}}')
    assert tokens(call) == (9, 1, 0, 0)


# --- combining -------------------------------------------------------------------------------


def test_dedup_across_sources_and_bounded() -> None:
    seen = Dedup(max_ids=2)
    a = AgentCall("claude-transcript", "a", None, 1, 1)
    assert seen.add(a)
    assert not seen.add(AgentCall("scan", "a", None, 9, 9, estimated=True))
    assert seen.add(AgentCall("aider", None, None, 1, 1))
    assert seen.add(AgentCall("aider", None, None, 1, 1))
    assert seen.add(AgentCall("scan", "b", None, 1, 1))
    assert seen.add(AgentCall("scan", "c", None, 1, 1))  # forgets "a"
    assert seen.add(a)


def test_latest_usage_passes_final_and_id_less_calls() -> None:
    latest = LatestUsage()
    final = AgentCall("claude-stream", None, None, 8, 69, final=True)
    assert latest.update(final) is final
    costed = AgentCall("x", "r", "m", 1, 1, cost_usd=Decimal("0.01"))
    assert latest.update(costed) == costed
    grown = latest.update(AgentCall("x", "r", None, 1, 3, cost_usd=Decimal("0.03")))
    assert grown is not None
    assert (tokens(grown), grown.cost_usd, grown.model) == ((0, 2, 0, 0), Decimal("0.02"), "m")
    assert latest.update(AgentCall("x", "r", None, 1, 2)) is None


# --- malformed input -------------------------------------------------------------------------

LINE_PARSERS: list[Callable[[str], list[AgentCall]]] = [
    claude_stream_line,
    claude_json_result,
    claude_transcript_line,
    codex_line,
    codex_rollout_line,
    gemini_session,
    gemini_json,
    gemini_stream_line,
    aider_line,
    aider_analytics_line,
    CodexRollout().feed,
    AiderStdout().feed,
    JsonScanner().feed,
]

GARBAGE = [
    "",
    "   ",
    "not json at all",
    "{",
    "}",
    "[]",
    "null",
    "1e999",
    '"just a string"',
    "{'single': 'quotes'}",
    '{"type": "result"}',
    '{"type": "result", "usage": "lots", "modelUsage": [1, 2]}',
    '{"type": "assistant", "message": "hi"}',
    '{"type": "assistant", "message": {"usage": {"input_tokens": "many"}}}',
    '{"type": "assistant", "message": {"usage": {"input_tokens": -5, "output_tokens": true}}}',
    '{"type": "stream_event", "event": null}',
    '{"type": "turn.completed", "usage": [1]}',
    '{"type": "event_msg", "payload": {"type": "token_count", "info": "x"}}',
    '{"type": "token_usage_record", "payload": {"usage": {"input_tokens": NaN}}}',
    '{"type": "gemini", "tokens": {"input": "a lot"}}',
    '{"stats": {"models": {"m": {"tokens": null}}}}',
    '{"event": "message_send", "properties": {"cost": "free"}}',
    "Tokens: lots sent, 4 received.",
    "Cost: $0.01 message, $0.01 session.",
    "[" * 100_000,
    '{"a":' * 100_000,
    "\x00\xff\ufffd{\u2028}",
]


@pytest.mark.parametrize("parse", LINE_PARSERS)
@pytest.mark.parametrize("line", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_yields_nothing(parse: Callable[[str], list[AgentCall]], line: str) -> None:
    assert parse(line) == []


@pytest.mark.parametrize("payload", [{}, {"resourceLogs": "x"}, {"resourceLogs": [None, 1]}, []])
def test_otel_garbage_yields_nothing(payload: Any) -> None:
    assert claude_otel_events(payload) == []
    assert codex_otel_events(payload) == []


# --- properties --------------------------------------------------------------------------------

KEYS = st.sampled_from(
    [
        "type",
        "message",
        "usage",
        "event",
        "payload",
        "info",
        "id",
        "model",
        "stats",
        "models",
        "tokens",
        "modelUsage",
        "input_tokens",
        "output_tokens",
        "prompt_tokens",
        "completion_tokens",
        "cached_input_tokens",
        "cache_read_input_tokens",
        "last_token_usage",
        "total_token_usage",
        "properties",
        "attributes",
        "resourceLogs",
        "scopeLogs",
        "logRecords",
    ]
)
TYPES = st.sampled_from(
    [
        "assistant",
        "result",
        "stream_event",
        "message_start",
        "message_delta",
        "turn.completed",
        "event_msg",
        "token_count",
        "token_usage_record",
        "turn_context",
        "gemini",
        "cost-state",
        "message_send",
    ]
)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | TYPES
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(KEYS | st.text(max_size=6), children, max_size=6)
    ),
    max_leaves=40,
)


@given(JSON_VALUES)
def test_no_parser_raises_on_arbitrary_json(value: object) -> None:
    line = json.dumps(value)
    for parse in [*LINE_PARSERS, CodexRollout().feed, AiderStdout().feed, JsonScanner().feed]:
        parse(line)
    if isinstance(value, dict):
        claude_otel_events(value)
        codex_otel_events(value)
        gemini_session(value)


@given(st.lists(st.text(), max_size=30))
def test_scanner_never_raises_on_arbitrary_text(chunks: list[str]) -> None:
    scanner = JsonScanner(max_chars=500, max_lines=5)
    for chunk in chunks:
        for call in scanner.feed(chunk):
            assert call.estimated
            assert min(tokens(call)) >= 0
        assert scanner.buffered_chars <= 500
    aider = AiderStdout()
    for chunk in chunks:
        aider.feed(chunk)
        aider_line(chunk)
    aider.flush()


COUNTS = st.integers(min_value=0, max_value=10**7)
USAGE_BLOCKS = st.one_of(
    st.builds(
        lambda p, c, k: {
            "prompt_tokens": p + k,
            "completion_tokens": c,
            "prompt_tokens_details": {"cached_tokens": k},
        },
        COUNTS,
        COUNTS,
        COUNTS,
    ),
    st.builds(
        lambda i, o, r, w: {
            "input_tokens": i,
            "output_tokens": o,
            "cache_read_input_tokens": r,
            "cache_creation_input_tokens": w,
        },
        COUNTS,
        COUNTS,
        COUNTS,
        COUNTS,
    ),
    st.builds(
        lambda p, c, k, t: {
            "promptTokenCount": p + k,
            "candidatesTokenCount": c,
            "cachedContentTokenCount": k,
            "thoughtsTokenCount": t,
        },
        COUNTS,
        COUNTS,
        COUNTS,
        COUNTS,
    ),
)


def expected_tokens(usage: dict[str, Any]) -> tuple[int, int, int, int]:
    if "prompt_tokens" in usage:
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        return (usage["prompt_tokens"] - cached, usage["completion_tokens"], cached, 0)
    if "promptTokenCount" in usage:
        cached = usage["cachedContentTokenCount"]
        output = usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
        return (usage["promptTokenCount"] - cached, output, cached, 0)
    return (
        usage["input_tokens"],
        usage["output_tokens"],
        usage["cache_read_input_tokens"],
        usage["cache_creation_input_tokens"],
    )


def line_breaks(document: str) -> list[int]:
    """Positions where a newline is JSON whitespace: next to structure, outside strings."""
    structural = [False] * len(document)
    in_string = escaped = False
    for index, char in enumerate(document):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{}[],:":
            structural[index] = True
    return [i for i in range(1, len(document)) if structural[i - 1] or structural[i]]


@given(
    usage=USAGE_BLOCKS,
    request_id=st.text(max_size=12),
    note=st.text(max_size=20),
    data=st.data(),
)
def test_scanner_any_line_splitting_gives_the_same_calls(
    usage: dict[str, Any], request_id: str, note: str, data: st.DataObject
) -> None:
    document = json.dumps(
        {"note": note, "response": {"id": request_id, "model": "m", "usage": usage}},
        separators=(",", ":"),
    )
    cuts = sorted(data.draw(st.sets(st.sampled_from(line_breaks(document)))))
    indent = data.draw(st.sampled_from(["", "  ", "\t"]))
    pieces = [document[a:b] for a, b in zip([0, *cuts], [*cuts, len(document)], strict=True)]
    split = ["[llm/end] output: " + pieces[0], *(indent + piece for piece in pieces[1:])]

    whole = JsonScanner().feed("[llm/end] output: " + document)
    scanner = JsonScanner()
    calls = [c for line in ["starting", *split, "done"] for c in scanner.feed(line)]
    assert calls == whole
    (call,) = calls
    assert tokens(call) == expected_tokens(usage)
    assert call.request_id == (request_id or None)
    assert scanner.buffered_chars == 0


def test_claude_transcript_fingerprints_the_tool_loop_behind_each_reply() -> None:
    def turn(n: int, command: str, output: str) -> list[str]:
        assistant = {
            "type": "assistant",
            "requestId": f"req_{n}",
            "message": {
                "id": f"msg_{n}",
                "model": "claude-sonnet-4-6",
                "stop_reason": "tool_use",
                "content": [
                    {
                        "type": "tool_use",
                        "id": f"toolu_{n}",
                        "name": "Bash",
                        "input": {"command": command},
                    }
                ],
                "usage": {"input_tokens": 10 + n, "output_tokens": 5},
            },
        }
        user = {
            "type": "user",
            "message": {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": f"toolu_{n}", "content": output}
                ],
            },
        }
        return [json.dumps(assistant), json.dumps(user)]

    reader = ClaudeTranscript()
    stuck = [
        c.fingerprint for n in range(4) for line in turn(n, "ls", "a.py") for c in reader.feed(line)
    ]
    assert stuck[0] is None  # the first reply answers the user's prompt
    assert stuck[1] is not None
    assert len(set(stuck[1:])) == 1  # same call, same result, every turn

    busy_reader = ClaudeTranscript()
    busy = [
        c.fingerprint
        for n in range(4)
        for line in turn(n, f"pytest test_{n}.py", "ok")
        for c in busy_reader.feed(line)
    ]
    assert len(set(busy[1:])) == 3  # a different command each turn
