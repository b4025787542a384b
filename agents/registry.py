"""Agents by name: `@register("er")` on the class, `make_agent(name, ctx, options)` to build one."""
from __future__ import annotations

from common.errors import UserError

AGENTS: dict = {}


def register(*names: str, **preset_options):
    """Register a class under one or more names; `preset_options` fix options for an alias
    (e.g. `nil_local` = `er` with buffer='local')."""

    def wrap(cls):
        for name in names:
            AGENTS[name] = (cls, dict(preset_options))
        if "name" not in vars(cls):  # a subclass gets its own name, not its parent's
            cls.name = names[0]
        return cls

    return wrap


def agent_class(name: str):
    if name not in AGENTS:
        raise UserError(f"unknown agent {name!r}; valid agents: {', '.join(sorted(AGENTS))}")
    return AGENTS[name]


def make_agent(name: str, ctx, options: dict):
    cls, fixed = agent_class(name)
    clash = {k for k in fixed if k in options and options[k] != fixed[k]}
    if clash:
        key = sorted(clash)[0]
        raise UserError(f"agent {name} fixes {key}={fixed[key]!r}; leave it out of --agent-config "
                        f"or use --agent {cls.name}")
    return cls(ctx, {**options, **fixed})
