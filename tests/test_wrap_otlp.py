"""The OTLP/HTTP JSON receiver for Claude Code's telemetry, and the environment it needs."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from burnmap.wrap.otlp import OTLPReceiver, otel_env
from tests.conftest import FIXTURES

# One `claude_code.api_request` record, as Claude Code 2.1 exported it.
RECORD = json.loads((FIXTURES / "agents" / "claude_otel_api_request.json").read_text())
EXPORT: dict[str, Any] = {
    "resourceLogs": [
        {
            "resource": {
                "attributes": [{"key": "service.name", "value": {"stringValue": "claude-code"}}]
            },
            "scopeLogs": [
                {
                    "scope": {"name": "com.anthropic.claude_code.events", "version": "2.1.332"},
                    "logRecords": [RECORD],
                }
            ],
        }
    ]
}


@pytest.fixture
def received() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def receiver(received: list[dict[str, Any]]) -> Iterator[OTLPReceiver]:
    with OTLPReceiver(on_logs=received.append) as server:
        yield server


@pytest.fixture
def http() -> Iterator[httpx2.Client]:
    with httpx2.Client() as client:
        yield client


def test_a_json_logs_export_is_delivered(
    receiver: OTLPReceiver, received: list[dict[str, Any]], http: httpx2.Client
) -> None:
    reply = http.post(receiver.endpoint + "/v1/logs", json=EXPORT)
    assert reply.status_code == 200
    assert reply.json() == {"partialSuccess": {}}
    assert received == [EXPORT]
    record = received[0]["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert record["body"]["stringValue"] == "claude_code.api_request"


def test_a_gzipped_export_is_delivered(
    receiver: OTLPReceiver, received: list[dict[str, Any]], http: httpx2.Client
) -> None:
    reply = http.post(
        receiver.endpoint + "/v1/logs",
        content=gzip.compress(json.dumps(EXPORT).encode()),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert reply.status_code == 200
    assert received == [EXPORT]


def test_protobuf_is_refused_with_a_hint(
    receiver: OTLPReceiver, received: list[dict[str, Any]], http: httpx2.Client
) -> None:
    reply = http.post(
        receiver.endpoint + "/v1/logs",
        content=b"\x0a\x02\x08\x01",
        headers={"content-type": "application/x-protobuf"},
    )
    assert reply.status_code == 415
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=http/json" in reply.json()["message"]
    assert received == []


def test_metrics_and_traces_are_accepted_and_dropped(
    receiver: OTLPReceiver, received: list[dict[str, Any]], http: httpx2.Client
) -> None:
    for signal in ("metrics", "traces"):
        reply = http.post(f"{receiver.endpoint}/v1/{signal}", json={"resourceMetrics": []})
        assert reply.status_code == 200
        assert reply.json() == {}
    assert received == []


def test_bad_requests(receiver: OTLPReceiver, http: httpx2.Client) -> None:
    assert http.post(receiver.endpoint + "/v1/logs", content=b"{not json").status_code == 400
    assert http.post(receiver.endpoint + "/v1/logs", json=[1]).status_code == 400
    bad_gzip = {"content-encoding": "gzip"}
    assert (
        http.post(receiver.endpoint + "/v1/logs", content=b"xx", headers=bad_gzip).status_code
        == 400
    )
    assert http.post(receiver.endpoint + "/v1/other", json={}).status_code == 404
    assert http.get(receiver.endpoint + "/v1/logs").status_code == 405


def test_a_failing_callback_answers_500_and_the_receiver_carries_on(
    http: httpx2.Client,
) -> None:
    calls: list[dict[str, Any]] = []

    def on_logs(payload: dict[str, Any]) -> None:
        calls.append(payload)
        if len(calls) == 1:
            raise ValueError("parser bug")

    with OTLPReceiver(on_logs) as receiver:
        assert http.post(receiver.endpoint + "/v1/logs", json=EXPORT).status_code == 500
        assert http.post(receiver.endpoint + "/v1/logs", json=EXPORT).status_code == 200
    assert len(calls) == 2


def test_stop_is_fast_with_a_keep_alive_connection_open(http: httpx2.Client) -> None:
    receiver = OTLPReceiver(lambda payload: None).start()
    assert receiver.endpoint.startswith("http://127.0.0.1:")
    http.post(receiver.endpoint + "/v1/logs", json=EXPORT)
    start = time.perf_counter()
    receiver.stop()
    assert time.perf_counter() - start < 0.5
    with pytest.raises(RuntimeError, match="not running"):
        _ = receiver.endpoint
    receiver.stop()


def test_otel_env_points_claude_code_at_the_receiver() -> None:
    env = otel_env("http://127.0.0.1:4318/", {"PATH": "/usr/bin", "HOME": "/root"})
    assert env == {
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/json",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://127.0.0.1:4318/v1/logs",
        "OTEL_LOGS_EXPORT_INTERVAL": "250",
    }


@pytest.mark.parametrize(
    "user_setting",
    [
        {"CLAUDE_CODE_ENABLE_TELEMETRY": "0"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example:4318"},
        {"OTEL_METRICS_EXPORTER": "prometheus"},
        {"OTEL_LOGS_EXPORTER": ""},
    ],
)
def test_otel_env_never_overrides_the_users_telemetry(user_setting: dict[str, str]) -> None:
    assert otel_env("http://127.0.0.1:4318", {"PATH": "/usr/bin", **user_setting}) == {}
