"""Ignores SIGTERM and keeps calling after refusals: only SIGKILL stops it."""

import os
import signal
import time

import anthropic

signal.signal(signal.SIGTERM, signal.SIG_IGN)
client = anthropic.Anthropic(api_key="test", base_url=os.environ["STANDIN_URL"])
while True:
    try:
        client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=1024,
            messages=[{"role": "user", "content": f"task {os.getpid()} {time.monotonic_ns()}"}],
        )
    except Exception:
        time.sleep(0.05)
