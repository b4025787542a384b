"""Continual-learning agents, one file each, found by name through the registry."""
from agents.registry import AGENTS, agent_class, make_agent, register  # noqa: F401
from agents import base  # noqa: F401  (registers `base`)
