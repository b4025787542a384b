"""Continual-learning agents, one file each, found by name through the registry."""
from agents.registry import AGENTS, agent_class, make_agent, register  # noqa: F401
from agents import base, er, der, derpp  # noqa: F401  (each registers its names)
