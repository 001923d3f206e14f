"""Two large calls, then a small one that still fits the budget, then a clean exit."""

import os

import anthropic

client = anthropic.Anthropic(api_key="test", base_url=os.environ["STANDIN_URL"])
for max_tokens in (2000, 2000, 16):
    client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=max_tokens,
        messages=[{"role": "user", "content": "write the report"}],
    )
print("finished")
