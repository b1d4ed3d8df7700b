"""Generated blocks in docs/: a Markdown table between two marker comments, checked by a test and
rewritten by running the test file as a script."""
from __future__ import annotations

from typing import Iterable, Sequence

__all__ = ["md_table", "doc_block", "rewrite_block"]


def md_table(titles: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table (cells' ``|`` escaped), ending in a newline."""
    def cell(c: str) -> str:
        return c.replace("|", "\\|")
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def doc_block(path: str, begin: str, end: str) -> str:
    """The text between the markers ``begin`` and ``end`` of the file ``path`` (both must be there)."""
    with open(path) as fh:
        text = fh.read()
    assert begin in text and end in text, f"{path}: markers missing"
    return text.split(begin, 1)[1].split(end, 1)[0].strip("\n") + "\n"


def rewrite_block(path: str, begin: str, end: str, body: str) -> None:
    """Replace the text between the markers with ``body``."""
    with open(path) as fh:
        doc = fh.read()
    head, rest = doc.split(begin, 1)
    tail = rest.split(end, 1)[1]
    with open(path, "w") as fh:
        fh.write(head + begin + "\n" + body + end + tail)
