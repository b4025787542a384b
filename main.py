"""Train a continual-learning agent on a sequence of tasks, on one rank or as a distributed job.

    python main.py                                   # the default experiment, one process
    mpirun -np 2 python main.py --backend torch      # the same on two ranks
    python main.py --config joint                    # a named preset from config.yaml

See README.md for every option, the presets, and how to launch with srun, torchrun or horovodrun.
"""
from __future__ import annotations

import logging
import sys
import traceback

from trainer import config
from trainer.errors import UserError


def check_choices(cfg: dict) -> None:
    """Names and options checked before anything is started or written."""
    from models import MODELS
    from data import DATASETS

    for kind, name, valid in (("model", cfg["model"], MODELS), ("dataset", cfg["dataset"], DATASETS)):
        if name not in valid:
            raise UserError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(sorted(valid))}")
    agent_options(cfg)


def agent_options(cfg: dict):
    """(agent class, its validated options: --agent-config merged with what an alias fixes)."""
    from agents import agent_class

    cls, fixed = agent_class(cfg["agent"])
    return cls, cls.check_options({**cfg["agent_config"], **fixed})


def run(cfg: dict, engine) -> dict:
    from data import load_dataset
    from trainer import results, resume
    from trainer.loop import TaskLoop

    run_dir, checkpoint_dir = resume.locate(cfg)
    if run_dir is not None:
        cfg = resume.saved_config(run_dir, cfg)
    cls, options = agent_options(cfg)  # again: a resumed run's saved config may differ
    cls.check_launch(options, engine)
    dataset = load_dataset(cfg["dataset"], cfg["dataset_dir"], cfg["dataset_config"])
    if run_dir is None:
        run_dir = results.make_run_dir(cfg, engine)
    results.setup_logging(run_dir, engine.rank, cfg["log_level"])
    if engine.rank == 0:
        results.write_config(run_dir, cfg)
    return TaskLoop(cfg, engine, run_dir, dataset).run(resume=checkpoint_dir)


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = config.resolve(argv)
        check_choices(cfg)
        from trainer.engine import start_engine

        engine = start_engine(cfg["backend"], cfg["device"])
    except UserError as exc:
        print(f"main.py: error: {exc}", file=sys.stderr)
        return 2
    try:
        run(cfg, engine)
    except UserError as exc:
        print(f"main.py: error: {exc}", file=sys.stderr)
        return _fail(engine, 2)
    except BaseException as exc:  # noqa: BLE001 - any failure must end every rank, never hang them
        logging.getLogger("trainer").error("rank %d failed:\n%s", engine.rank, traceback.format_exc())
        print(f"main.py: rank {engine.rank} of {engine.world_size} failed: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return _fail(engine, 130 if isinstance(exc, KeyboardInterrupt) else 1)
    engine.shutdown()
    return 0


def _fail(engine, code: int) -> int:
    """One rank failing ends the job: the others may be waiting for it in a collective."""
    if engine.world_size > 1:
        engine.abort(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
