"""Saying which ranks hold which value, in one line: "rank 0: 'native'; ranks 1,2: 'python'".

Every cross-rank check (the trainer's options and data, the own-loop API's calls and arguments)
reports a disagreement this way, so the user reads the same form whatever disagreed.
"""
from __future__ import annotations


def by_rank(values: list, sep: str = ": ") -> list[str]:
    """One 'rank(s) R,S<sep>value' per distinct value, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for rank, value in enumerate(values):
        groups.setdefault(str(value), []).append(rank)
    return [f"rank{'s' if len(r) > 1 else ''} {','.join(map(str, r))}{sep}{v}" for v, r in groups.items()]
