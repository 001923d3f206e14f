"""The docs' examples run, and print what the docs show; every name they use exists.

Every ```python block in ``docs/`` that is followed at once by an output block is run as
a script (in a temporary directory, with no API keys: the examples use the stand-in
server on loopback) and must exit 0 and print that output. The docs wrap long lines by
hand and print today's dates, so both sides are compared with runs of whitespace made
one space and dates and times masked. An output block followed by the line
``<!-- output varies -->`` (invisible on the rendered page) is only required to run.

Every other ```python block (most call the real APIs) must at least compile, and every
``burnmap.…`` name the pages mention, in code or prose, must resolve.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md", ROOT / "benchmarks" / "README.md"]
VARIES = "<!-- output varies -->"
_DATE = re.compile(r"\b\d{4}-\d{2}(-\d{2})?\b")
_TIME = re.compile(r"\b\d{2}:\d{2}(:\d{2})?\b")


@dataclass(frozen=True)
class Example:
    page: str
    line: int
    code: str
    output: str
    varies: bool


def examples() -> list[Example]:
    found = []
    for page in sorted(DOCS.glob("*.md")):
        lines = page.read_text().split("\n")
        index = 0
        while index < len(lines):
            if lines[index] != "```python":
                index += 1
                continue
            start = index + 1
            end = lines.index("```", start)
            index = end + 1
            if index < len(lines) and lines[index] in ("```", "```text"):
                out_end = lines.index("```", index + 1)
                varies = out_end + 1 < len(lines) and lines[out_end + 1] == VARIES
                found.append(
                    Example(
                        page.name,
                        start,
                        "\n".join(lines[start:end]) + "\n",
                        "\n".join(lines[index + 1 : out_end]),
                        varies,
                    )
                )
                index = out_end + 1
    return found


def normalised(text: str) -> str:
    return " ".join(_TIME.sub("HH:MM", _DATE.sub("YYYY-MM-DD", text)).split())


@pytest.mark.parametrize("example", examples(), ids=lambda e: f"{e.page}:{e.line}")
def test_doc_example_prints_what_the_doc_shows(example: Example, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(example.code)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANTHROPIC_", "OPENAI_", "BURNMAP_"))
    }
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{example.page}:{example.line} failed:\n{result.stderr}"
    if not example.varies:
        assert normalised(result.stdout) == normalised(example.output), (
            f"{example.page}:{example.line} printed:\n{result.stdout}"
        )


def test_the_docs_have_examples_to_run() -> None:
    assert len(examples()) >= 8


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_python_block_compiles(page: Path) -> None:
    text = page.read_text()
    for block in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        line = text[: block.start()].count("\n") + 2
        compile(block.group(1), f"{page.name}:{line}", "exec")


def _resolves(ref: str) -> bool:
    parts = ref.split(".")
    obj: object = importlib.import_module("burnmap")
    for index, part in enumerate(parts[1:], start=2):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            try:
                obj = importlib.import_module(".".join(parts[:index]))
            except ImportError:
                return False
    return True


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_burnmap_name_the_page_mentions_exists(page: Path) -> None:
    refs = set(re.findall(r"\bburnmap(?:\.[A-Za-z_]\w*)+", page.read_text()))
    files = (".md", ".py", ".db", ".lua", ".json")
    missing = sorted(ref for ref in refs if not ref.endswith(files) and not _resolves(ref))
    assert not missing, f"{page.name} names what burnmap does not have: {missing}"
