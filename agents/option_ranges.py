"""What each numeric agent option is, and the one rule that checks it.

Every agent declares, beside its `defaults`, the range of each numeric option (`ranges`: option
-> one of the kinds below); every other option has a closed set of `choices`. The registry refuses
a class with an option that has neither, so an option cannot be added unchecked. The check runs
in `Agent.check_options`, which main.py calls before any engine starts or file is written, and
says one line: `--agent-config KEY for agent NAME is <kind>, got VALUE`.

A kind is named for what the option means to the user (a loss weight, a probability), so the
same meaning gets the same range in every agent: a negative loss weight would train the model to
*increase* that loss; a probability or an EMA weight outside [0, 1] is not one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

from common.errors import UserError


@dataclass(frozen=True)
class Range:
    """An interval [low, high] (either end open or absent) of reals, or of whole numbers."""
    what: str                    # the option's meaning: "a loss weight"
    low: float | None = None
    high: float | None = None
    low_open: bool = False       # low itself is outside
    integer: bool = False        # whole numbers only (bools are not numbers here)

    def holds(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.integer else Real):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def __str__(self) -> str:
        """'a probability in [0, 1]', 'a loss weight (>= 0)', 'a whole number (>= 1)'."""
        if self.high is None:
            return f"{self.what} ({'>' if self.low_open else '>='} {self.low:g})"
        return f"{self.what} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"


LOSS_WEIGHT = Range("a loss weight", low=0)                  # 0 turns the term off
PROBABILITY = Range("a probability", low=0, high=1)
EMA_WEIGHT = Range("a weight", low=0, high=1)                # kept share of the old value per update
SHRINK_FACTOR = Range("a factor", low=0, high=1)             # shrink-and-perturb's weight multiplier
STD = Range("a standard deviation", low=0)
POSITIVE = Range("a positive number", low=0, low_open=True)  # divisors, dampings
COUNT = Range("a whole number", low=1, integer=True)         # samples, slots
PERCENTAGE = Range("a percentage", low=0, high=100, low_open=True)


def checked_value(agent: str, key: str, value, default, kind: Range):
    """`value` of option `key` of `agent`, as the option's type (an int given for a float default
    becomes a float); UserError, one line, when it is not in `kind`. An option whose default is
    None ("derived") also takes None."""
    if value is None and default is None:
        return None
    given = value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind.holds(value):
        return value
    number = isinstance(value, Real) and not isinstance(value, bool)
    if default is not None and not number:
        raise UserError(f"--agent-config {key} for agent {agent} must be {type(default).__name__}, got {given!r}")
    if number and not math.isfinite(value):
        raise UserError(f"--agent-config {key} for agent {agent} must be a finite number, got {given!r}")
    raise UserError(f"--agent-config {key} for agent {agent} is {kind}, got {given!r}")


def unchecked_options(cls) -> list[str]:
    """Options of an agent class with neither a range nor choices (must be none), and ranges or
    choices of options it does not have (stale)."""
    declared = set(cls.ranges) | set(cls.choices)
    return sorted((set(cls.defaults) - declared) | (declared - set(cls.defaults)))
