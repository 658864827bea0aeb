"""Write a benchmark's table into benchmarks/README.md between its two markers."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).with_name("README.md")


def replace_block(start: str, end: str, block: str, readme: Path = README) -> None:
    """Put ``block`` between ``start`` and ``end`` (appended with both markers if absent)."""
    text = readme.read_text() if readme.exists() else "# Benchmarks\n\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + start + "\n" + block + "\n" + end + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + start + "\n" + block + "\n" + end + "\n"
    readme.write_text(text)
