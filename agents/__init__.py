"""Continual-learning agents, one file each, found by name through the registry."""
from agents import agem, base, cls_er, der, derpp, er, pod_er, si, super_er  # noqa: F401  (each registers its names)
from agents.registry import AGENTS, agent_class, make_agent, register  # noqa: F401
