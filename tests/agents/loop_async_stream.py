"""Async clients, streams, and a caller who catches refusals and keeps trying."""

import asyncio
import os
import time

import anthropic
import openai


async def main() -> None:
    claude = anthropic.AsyncAnthropic(api_key="test", base_url=os.environ["STANDIN_URL"])
    gpt = openai.AsyncOpenAI(api_key="test", base_url=os.environ["STANDIN_URL"] + "/v1")
    refused = 0
    while refused < 20:

        async def one_claude() -> None:
            async with claude.messages.stream(
                model="claude-sonnet-4-6",
                max_tokens=1024,
                messages=[{"role": "user", "content": f"task {time.monotonic_ns()}"}],
            ) as stream:
                await stream.get_final_message()

        async def one_gpt() -> None:
            stream = await gpt.chat.completions.create(
                model="gpt-4o-mini",
                max_tokens=1024,
                stream=True,
                messages=[{"role": "user", "content": f"task {time.monotonic_ns()}"}],
            )
            async for _ in stream:
                pass

        results = await asyncio.gather(one_claude(), one_gpt(), return_exceptions=True)
        refused += sum(1 for r in results if isinstance(r, Exception))


asyncio.run(main())
