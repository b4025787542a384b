"""Continual-learning agents, one file each, found by name through the registry."""
from agents import base, der, derpp, er  # noqa: F401  (each registers its names)
from agents.registry import AGENTS, agent_class, make_agent, register  # noqa: F401
