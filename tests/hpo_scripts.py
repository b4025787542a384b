"""The hyperparameter search's scripts for the tests: run as a user runs them (the project's
Python, the venv on PATH, no PYTHONPATH), or loaded in process as `python scripts/hpo.py` would
load them (its sibling modules by their own names, as its folder on sys.path gives them)."""
import importlib.util
import os
import sys
from pathlib import Path

import yaml

from conftest import PYTHON, REPO, mpi_env

SCRIPTS = REPO / "scripts"
HPO = SCRIPTS / "hpo.py"


def hpo_env() -> dict:
    """Open MPI's settings for the trials' jobs, and nothing that makes the project importable."""
    env = mpi_env()
    env.pop("PYTHONPATH", None)
    env["PATH"] = os.pathsep.join([str(Path(PYTHON).parent), env.get("PATH", "")])
    return env


def _load(name: str, file: str | None = None):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / (file or f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_hpo():
    """scripts/hpo.py as a module (a fresh one: its module state is not shared between tests)."""
    for sibling in ("hpo_journal", "hpo_study"):
        _load(sibling)
    return _load("hpo_script", "hpo.py")


def write_space(path, space, fixed=None):
    path.write_text(yaml.safe_dump({"space": space, **({"fixed": fixed} if fixed else {})}))
    return path
