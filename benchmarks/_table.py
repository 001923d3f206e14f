"""The plain-text tables the benchmark scripts print."""

from __future__ import annotations

from collections.abc import Collection, Sequence


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], left: Collection[int] = ()
) -> str:
    """Columns padded to their widest cell: the first and last, and ``left``, flush left;
    the others (figures) flush right. A rule under the header."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    flush_left = {0, len(header) - 1, *left}
    lines = []
    for index, row in enumerate([header, *rows]):
        cells = [
            cell.ljust(widths[i]) if i in flush_left else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)
