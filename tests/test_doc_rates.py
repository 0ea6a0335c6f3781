"""Every success count in the hand-written docs carries an interval (issue 25, "statistics everywhere").

A count "x of n" or "x/n" in docs/*.md (the generated tables docs/benchmarks.md and
docs/memory-table.md are checked by their own generators) must have a Wilson (or other 95%)
interval in its block: its paragraph, or for a table the table and the paragraph after it.
Counts that are not rates of random starts (exhaustive enumerations, counts of problems, ratios
in column headers) are listed in ``NOT_RATES`` with the reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
GENERATED = {"benchmarks.md", "memory-table.md"}
COUNT = re.compile(r"(?<![\w.\-])(\d+) ?(?:of|/) ?(\d+)(?![\w.])")
INTERVAL = re.compile(r"Wilson|\bCI\b|interval", re.IGNORECASE)
#: (file, the count's text, why it is not a rate of random starts)
NOT_RATES = {
    ("memory.md", "3 of 6"): "problems of the benchmark set on which a goal is met: all six, not a sample",
    ("memory.md", "4 of 6"): "problems of the benchmark set on which a goal is met: all six, not a sample",
    ("memory.md", "3 of 10"): "which seed of the ten found a value ('seed 3 of 10'): an index, not a rate",
    ("memory.md", "7 of 10"): "which seeds of the ten found a value ('seeds 4 and 7 of 10'): an index, not a rate",
    ("performance.md", "2/1"): "a column header: the ratio of two timings",
}


def blocks(text: str) -> list[str]:
    """Paragraphs; a table is joined with the paragraph after it (where its intervals are said)."""
    paras = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    out, i = [], 0
    while i < len(paras):
        p = paras[i]
        if p.lstrip().startswith("|") and i + 1 < len(paras):
            p, i = p + "\n\n" + paras[i + 1], i + 1
        out.append(p)
        i += 1
    return out


def counts_without_interval(name: str, text: str) -> list[str]:
    bad = []
    for block in blocks(text):
        if block.lstrip().startswith("```"):
            continue  # code and program output
        for m in COUNT.finditer(block):
            x, n = int(m.group(1)), int(m.group(2))
            if x > n or n < 2 or (name, m.group(0)) in NOT_RATES:
                continue
            if not INTERVAL.search(block):
                bad.append(f"{name}: {m.group(0)!r} in: {block.strip()[:160]!r}")
    return bad


@pytest.mark.parametrize("path", sorted(p for p in DOCS.glob("*.md") if p.name not in GENERATED), ids=lambda p: p.name)
def test_every_count_in_the_docs_has_an_interval(path):
    assert counts_without_interval(path.name, path.read_text()) == []


def test_the_check_catches_a_bare_rate_and_accepts_an_interval():
    assert counts_without_interval("x.md", "Ascent reaches J* in 7 of 20 starts.\n")
    assert counts_without_interval("x.md", "| k | rate |\n|---|---|\n| 1 | 7/20 |\n\nMore text.\n")
    assert not counts_without_interval("x.md", "Ascent reaches J* in 7 of 20 starts (Wilson 95% 18-57%).\n")
    assert not counts_without_interval("x.md", "| k | rate |\n|---|---|\n| 1 | 7/20 |\n\nIntervals: Wilson 18-57%.\n")
    assert not counts_without_interval("x.md", "```\n7 of 20\n```\n")
