"""The metering proxy of ``burnmap wrap --proxy``, driven by the real SDKs.

The SDK clients here are plain ones (no burnmap client): they stand for an agent in another
process that only got ``ANTHROPIC_BASE_URL`` / ``OPENAI_BASE_URL``. The proxy's upstream is
a loopback stand-in, and every figure is checked against what the stand-in billed.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import anthropic
import httpx2
import openai
import pytest

import burnmap
from burnmap.standin import Script, StandIn
from burnmap.wrap.proxy import MeteringProxy, _accept_encoding
from tests.conftest import billed, eventually, free_port

pytestmark = pytest.mark.sdk  # the proxy must serve both SDK generations alike

CLAUDE = "claude-sonnet-4-6"
GPT = "gpt-4o-mini"
HELLO: list[Any] = [{"role": "user", "content": "Say hello."}]

MakeProxy = Callable[..., MeteringProxy]


@pytest.fixture
def make_proxy(standin: StandIn) -> Iterator[MakeProxy]:
    started: list[MeteringProxy] = []

    def make(budget: str | None = "1", **kwargs: Any) -> MeteringProxy:
        kwargs.setdefault("anthropic_upstream", standin.anthropic_base_url)
        kwargs.setdefault("openai_upstream", standin.openai_base_url)
        proxy = MeteringProxy(burnmap.run("proxied", budget=budget), **kwargs).start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()


@pytest.fixture
def proxy(make_proxy: MakeProxy) -> MeteringProxy:
    return make_proxy()


def claude_for(proxy: MeteringProxy, retries: int = 2) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="test", base_url=proxy.anthropic_base_url, max_retries=retries
    )


def gpt_for(proxy: MeteringProxy, retries: int = 2) -> openai.OpenAI:
    return openai.OpenAI(api_key="test", base_url=proxy.openai_base_url, max_retries=retries)


# -- passing through -----------------------------------------------------------------------


def test_anthropic_calls_pass_through_and_are_billed_exactly(
    proxy: MeteringProxy, standin: StandIn
) -> None:
    standin.script = Script(reply_text="streamed " * 20, cache_read_tokens=100)
    with claude_for(proxy) as claude:
        message = claude.messages.create(model=CLAUDE, max_tokens=256, messages=HELLO)
        events = list(
            claude.messages.create(model=CLAUDE, max_tokens=256, messages=HELLO, stream=True)
        )
        with claude.messages.stream(model=CLAUDE, max_tokens=256, messages=HELLO) as stream:
            text = stream.get_final_text()
        # As Claude Code sends it.
        beta = claude.beta.messages.create(
            model=CLAUDE, max_tokens=256, messages=HELLO, extra_query={"beta": "true"}
        )
    assert message.usage.cache_read_input_tokens == 100
    assert events[-1].type == "message_stop"
    assert text == "streamed " * 20
    assert beta.usage.output_tokens > 0
    # Claude Code's `POST /v1/messages?beta=true` keeps its query; headers go through.
    assert [(r.path, r.query) for r in standin.requests] == [
        ("/v1/messages", ""),
        ("/v1/messages", ""),
        ("/v1/messages", ""),
        ("/v1/messages", "beta=true"),
    ]
    assert all(r.headers["anthropic-version"] for r in standin.requests)
    assert all(r.headers["host"] == standin.url.removeprefix("http://") for r in standin.requests)
    run = proxy.run
    assert run.call_count == 4
    assert run.spent == billed(standin.calls) > 0
    assert run.reserved == 0
    assert [c["streamed"] for c in run.report.cost_by_call] == [False, True, True, False]


def test_openai_calls_pass_through_and_are_billed_exactly(
    proxy: MeteringProxy, standin: StandIn
) -> None:
    standin.script = Script(reply_text="tokens " * 10)
    with gpt_for(proxy) as gpt:
        completion = gpt.chat.completions.create(model=GPT, messages=HELLO)
        chunks = list(gpt.chat.completions.create(model=GPT, messages=HELLO, stream=True))
        response = gpt.responses.create(model=GPT, input="hello")
        models = gpt.models.list()
    assert completion.choices[0].message.content == "tokens " * 10
    # The transport asked upstream for usage and hid it from the agent again.
    assert standin.requests[1].body["stream_options"] == {"include_usage": True}
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    assert response.usage is not None
    assert models.data  # free requests pass untouched
    run = proxy.run
    assert run.call_count == 3
    assert run.spent == billed(standin.calls) > 0
    assert not any(c.estimated for c in run.report.calls)


def test_gzip_bodies_pass_through_compressed(proxy: MeteringProxy, standin: StandIn) -> None:
    standin.script = Script(gzip=True, reply_text="zipped " * 40)
    with claude_for(proxy) as claude:
        claude.messages.create(model=CLAUDE, max_tokens=512, messages=HELLO)
        with claude.messages.stream(model=CLAUDE, max_tokens=512, messages=HELLO) as stream:
            assert stream.get_final_text().startswith("zipped")
    assert proxy.run.spent == billed(standin.calls)
    assert not any(c.estimated for c in proxy.run.report.calls)


def test_upstream_errors_pass_through_and_retries_are_free(
    proxy: MeteringProxy, standin: StandIn
) -> None:
    standin.script = Script(fail_first=1)
    with claude_for(proxy, retries=1) as claude:
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
    assert len(standin.requests) == 2  # the agent's SDK saw the 529 and retried
    assert proxy.run.call_count == 1
    assert proxy.run.report.failed_attempts == 1
    assert proxy.run.spent == billed(standin.calls)


def test_streams_are_not_buffered(make_proxy: MakeProxy, standin: StandIn) -> None:
    standin.script = Script(stream_chunk_delay=0.05, events=20)
    proxy = make_proxy()
    arrivals: list[float] = []
    with claude_for(proxy) as claude:
        start = time.perf_counter()
        with claude.messages.create(
            model=CLAUDE, max_tokens=256, messages=HELLO, stream=True
        ) as stream:
            for _ in stream:
                arrivals.append(time.perf_counter() - start)
    # 26 events 50 ms apart: the first one arrives long before the stream ends, and the
    # rest keep the stand-in's pace instead of arriving in one burst at the end.
    total = arrivals[-1]
    assert total > 1.2
    assert arrivals[0] < total / 4, arrivals
    assert arrivals[13] - arrivals[0] > 0.5, arrivals
    assert proxy.run.spent == billed(standin.calls)


def test_an_agent_leaving_mid_stream_is_charged_what_passed(
    make_proxy: MakeProxy, standin: StandIn
) -> None:
    standin.script = Script(stream_chunk_delay=0.02, events=40)
    proxy = make_proxy()
    with claude_for(proxy) as claude:
        with claude.messages.create(
            model=CLAUDE, max_tokens=256, messages=HELLO, stream=True
        ) as stream:
            for event in stream:
                if event.type == "content_block_delta":
                    break  # like an agent killed mid-answer: the connection drops
    assert eventually(lambda: proxy.run.call_count == 1)
    call = proxy.run.report.calls[0]
    assert call.estimated
    assert proxy.run.reserved == 0
    # The proxy closed its upstream stream too: the stand-in saw the cut.
    assert eventually(lambda: standin.calls)
    assert not standin.calls[0].completed
    assert call.usage.input_tokens == standin.calls[0].input_tokens


def test_an_upstream_cut_mid_stream_reaches_the_agent(
    proxy: MeteringProxy, standin: StandIn
) -> None:
    standin.script = Script(reply_text="word " * 100, truncate_stream_after_events=6)
    with claude_for(proxy, retries=0) as claude, pytest.raises(Exception):  # noqa: B017
        with claude.messages.stream(model=CLAUDE, max_tokens=1024, messages=HELLO) as stream:
            stream.get_final_message()
    assert eventually(lambda: proxy.run.call_count == 1)
    call = proxy.run.report.calls[0]
    assert call.estimated
    assert call.usage.output_tokens >= standin.calls[0].output_tokens
    assert proxy.run.reserved == 0


# -- refusing --------------------------------------------------------------------------------


def test_over_budget_anthropic_call_gets_402_unsent_and_unretried(
    make_proxy: MakeProxy, standin: StandIn
) -> None:
    proxy = make_proxy(budget="0.001")
    refusals: list[burnmap.RefusalError] = []
    proxy.on_refusal = refusals.append
    with claude_for(proxy, retries=2) as claude, pytest.raises(anthropic.APIStatusError) as info:
        claude.messages.create(model=CLAUDE, max_tokens=4096, messages=HELLO)
    assert info.value.status_code == 402
    assert proxy.refused == 1  # counted before the agent got its 402: never retried
    assert eventually(lambda: refusals)  # called once the agent has its answer
    assert info.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": str(refusals[0])},
    }
    assert "burnmap: budget 'run:proxied' would be exceeded" in info.value.message
    assert standin.requests == []  # never forwarded
    assert isinstance(refusals[0], burnmap.BudgetExceededError)
    assert refusals[0].scope == "run:proxied"
    assert proxy.run.report.refused_calls == 1
    assert proxy.run.reserved == 0


def test_over_budget_openai_call_gets_402_unsent_and_unretried(
    make_proxy: MakeProxy, standin: StandIn
) -> None:
    proxy = make_proxy(budget="0.0001")
    with gpt_for(proxy, retries=2) as gpt, pytest.raises(openai.APIStatusError) as info:
        gpt.chat.completions.create(model=GPT, messages=HELLO)
    assert info.value.status_code == 402
    assert info.value.code == "burnmap_budget_exceeded"
    assert info.value.type == "insufficient_quota"
    assert "burnmap: budget" in info.value.message
    assert standin.requests == []
    assert proxy.refused == 1


def test_budget_stops_an_agent_loop_before_it_is_exceeded(
    make_proxy: MakeProxy, standin: StandIn
) -> None:
    budget = Decimal("0.03")
    proxy = make_proxy(budget=budget)

    def agent(claude: anthropic.Anthropic) -> None:
        for step in range(100):
            prompt: list[Any] = [{"role": "user", "content": f"Step {step}."}]
            claude.messages.create(model=CLAUDE, max_tokens=1024, messages=prompt)

    with claude_for(proxy) as claude, pytest.raises(anthropic.APIStatusError):
        agent(claude)
    assert 0 < proxy.run.spent <= budget
    assert proxy.run.spent == billed(standin.calls)
    assert len(standin.requests) == proxy.run.call_count
    assert proxy.refused == 1


# -- failures and plumbing -------------------------------------------------------------------


def test_upstream_down_is_a_502(make_proxy: MakeProxy) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    proxy = make_proxy(anthropic_upstream=down, openai_upstream=down + "/v1")
    with claude_for(proxy, retries=0) as claude, pytest.raises(anthropic.APIStatusError) as info:
        claude.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
    assert info.value.status_code == 502
    assert "cannot reach the upstream API" in info.value.message
    with gpt_for(proxy, retries=0) as gpt, pytest.raises(openai.APIStatusError) as oinfo:
        gpt.chat.completions.create(model=GPT, messages=HELLO)
    assert oinfo.value.status_code == 502
    assert oinfo.value.code == "burnmap_upstream_unreachable"
    assert proxy.run.spent == proxy.run.reserved == 0
    assert proxy.refused == 0


def test_paths_outside_the_prefixes_get_404(proxy: MeteringProxy, standin: StandIn) -> None:
    with httpx2.Client() as http:
        reply = http.post(proxy.url + "/v1/messages", json={})
    assert reply.status_code == 404
    assert proxy.anthropic_base_url in reply.json()["error"]["message"]
    assert standin.requests == []


@pytest.mark.parametrize(
    "head",
    [
        b"Content-Length: banana\r\n",
        b"Content-Length: -1\r\n",  # int() would take it, and read to the end of the socket
        b"Transfer-Encoding: chunked\r\n",  # followed by a chunk size that is not hex
    ],
)
def test_an_unreadable_request_body_gets_400_and_is_not_forwarded(
    proxy: MeteringProxy, standin: StandIn, head: bytes
) -> None:
    url = urlsplit(proxy.anthropic_base_url)
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(
            b"POST " + url.path.encode() + b"/v1/messages HTTP/1.1\r\nHost: x\r\n"
            b"anthropic-version: 2023-06-01\r\n" + head + b"\r\nzz\r\n{}\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status, _, rest = answer.partition(b"\r\n")
    assert status.split()[1] == b"400"
    assert b"not forwarded" in rest and b'"type":"error"' in rest.replace(b" ", b"")
    assert standin.requests == []


def test_hop_by_hop_headers_are_not_forwarded(proxy: MeteringProxy, standin: StandIn) -> None:
    with httpx2.Client() as http:
        reply = http.get(
            proxy.openai_base_url + "/models?limit=2",
            headers={"connection": "keep-alive, x-private", "x-private": "1", "x-kept": "2"},
        )
    assert reply.status_code == 200
    assert "transfer-encoding" not in reply.headers or reply.headers["content-length"] is None
    seen = standin.requests[0]
    assert (seen.path, seen.query) == ("/v1/models", "limit=2")
    assert seen.headers["x-kept"] == "2"
    assert "x-private" not in seen.headers


def test_accept_encoding_is_narrowed_to_what_burnmap_can_meter() -> None:
    assert _accept_encoding("gzip, compress, deflate;q=0.5") == "gzip, deflate;q=0.5"
    assert _accept_encoding("compress") is None


def test_stop_is_fast_with_keep_alive_connections_open(make_proxy: MakeProxy) -> None:
    proxy = make_proxy()
    claude = claude_for(proxy)
    claude.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)  # leaves one idle
    start = time.perf_counter()
    proxy.stop()
    elapsed = time.perf_counter() - start
    claude.close()
    assert elapsed < 0.5
    with pytest.raises(RuntimeError, match="not running"):
        _ = proxy.url
    proxy.stop()  # twice is harmless


def test_bad_upstream_urls_are_rejected() -> None:
    with pytest.raises(ValueError, match="http"):
        MeteringProxy(burnmap.run("x"), anthropic_upstream="api.anthropic.com")
