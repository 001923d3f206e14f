"""Calls from a multiprocessing spawn child and from a subprocess grandchild."""

import multiprocessing
import os
import subprocess
import sys
import time

import anthropic


def work(n: int) -> None:
    client = anthropic.Anthropic(api_key="test", base_url=os.environ["STANDIN_URL"])
    for _ in range(n):
        try:
            client.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=1024,
                messages=[{"role": "user", "content": f"task {os.getpid()} {time.monotonic_ns()}"}],
            )
        except Exception as exc:  # the budget refusal: stop working
            print("refused", type(exc).__name__, flush=True)
            return


if __name__ == "__main__":
    if sys.argv[1:] == ["grandchild"]:
        work(100)
        sys.exit(0)
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=work, args=(3,))
    proc.start()
    proc.join()
    subprocess.run([sys.executable, __file__, "grandchild"], check=False)
