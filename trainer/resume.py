"""Which results folder and checkpoint `--resume` continues from, and with which config."""
from __future__ import annotations

from pathlib import Path

import yaml

from trainer import checkpoint
from trainer.config import RESUME_LATEST
from trainer.errors import UserError

# Options that may change between the interrupted run and its continuation; the rest
# (data, model, agent, seed, schedule) define the experiment and come from the saved config.
RUNTIME_OPTIONS = ("backend", "device", "workers", "log_level", "plots", "tensorboard",
                   "checkpoint_every", "resume", "results_dir", "eval_batch_size")


def _newest_with_checkpoint(results_dir: Path) -> Path | None:
    if not results_dir.is_dir():
        return None
    runs = [p for p in results_dir.iterdir() if p.is_dir() and checkpoint.latest(p) is not None]
    return max(runs, key=lambda p: checkpoint.latest(p).stat().st_mtime) if runs else None


def locate(cfg: dict) -> tuple[Path | None, Path | None]:
    """(run folder, checkpoint folder) to resume from, or (None, None) to start afresh.

    `--resume PATH` must hold a complete checkpoint. `--resume` alone resumes the
    --run-name folder, or the newest run in --results-dir, when it holds one, and starts
    afresh otherwise (so a requeued batch job can always pass it)."""
    value = cfg.get("resume")
    if value is None:
        return None, None
    if value == RESUME_LATEST:
        if cfg.get("run_name"):
            run_dir = Path(cfg["results_dir"]) / cfg["run_name"]
        else:
            run_dir = _newest_with_checkpoint(Path(cfg["results_dir"]))
        found = checkpoint.latest(run_dir) if run_dir is not None else None
        return (run_dir, found) if found is not None else (None, None)
    path = Path(value)
    if (path / "COMPLETE").is_file():
        return path.parent.parent, path
    if not path.is_dir():
        raise UserError(f"--resume {value}: no such results folder")
    found = checkpoint.latest(path)
    if found is None:
        raise UserError(f"--resume {value}: no complete checkpoint under {checkpoint.checkpoint_dir(path)}")
    return path, found


def saved_config(run_dir: Path, cfg: dict) -> dict:
    """The interrupted run's config, with this launch's runtime options on top."""
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    merged = {**saved, **{k: cfg[k] for k in RUNTIME_OPTIONS if k in cfg}}
    merged["run_name"] = run_dir.name
    merged["results_dir"] = str(run_dir.parent)
    return merged
