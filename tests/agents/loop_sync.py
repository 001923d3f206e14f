"""A runaway agent on the anthropic SDK, with no burnmap code at all."""

import os

import anthropic

client = anthropic.Anthropic(api_key="test", base_url=os.environ["STANDIN_URL"])
history = [{"role": "user", "content": "refactor auth " * 20}]
turn = 0
while True:
    reply = client.messages.create(model="claude-sonnet-4-6", max_tokens=1024, messages=history)
    history.append({"role": "assistant", "content": reply.content})
    turn += 1
    history.append({"role": "user", "content": f"next step {turn}"})
