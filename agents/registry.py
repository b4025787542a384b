"""Agents by name: `@register("er")` on the class, `make_agent(name, ctx, options)` to build one.

An alias (`nil_cpp` = `er` with buffer='native') is registered as a subclass that only renames
its class, so every message about the agent (its options, its launch, its run) names it as the
user did on `--agent`, and `alias_of` says which agent it fixes the options of.
"""
from __future__ import annotations

from agents.option_ranges import unchecked_options
from common.errors import UserError

AGENTS: dict = {}


def register(*names: str, **preset_options):
    """Register a class under one or more names; `preset_options` fix options for an alias
    (e.g. `nil_local` = `er` with buffer='local'). Refuses (TypeError, at import) a class with an
    option that has neither a range nor choices: every option a user can set is checked."""

    def wrap(cls):
        if "name" not in vars(cls):  # a subclass gets its own name, not its parent's
            cls.name = names[0]
        unchecked = unchecked_options(cls)
        if unchecked:
            raise TypeError(f"agent {cls.name}: give option(s) {', '.join(unchecked)} a range (ranges) or "
                            f"choices, and no range or choices to options it does not have")
        for name in names:
            AGENTS[name] = (cls if name == cls.name else _renamed(cls, name), dict(preset_options))
        return cls

    return wrap


def _renamed(cls, name: str):
    """`cls` as agent `name`: the same algorithm, options and state, another name in messages."""
    return type(cls.__name__, (cls,), {"name": name, "alias_of": cls.name, "__doc__": cls.__doc__,
                                       "__module__": cls.__module__, "__qualname__": cls.__qualname__})


def agent_class(name: str):
    """(the class of agent `name`, the options it fixes)."""
    if name not in AGENTS:
        raise UserError(f"unknown agent {name!r}; valid agents: {', '.join(sorted(AGENTS))}")
    return AGENTS[name]


def make_agent(name: str, ctx, options: dict):
    cls, fixed = agent_class(name)
    clash = {k for k in fixed if k in options and options[k] != fixed[k]}
    if clash:
        key = sorted(clash)[0]
        raise UserError(f"agent {name} fixes {key}={fixed[key]!r}; leave it out of --agent-config "
                        f"or use --agent {getattr(cls, 'alias_of', cls.name)}")
    return cls(ctx, {**options, **fixed})
