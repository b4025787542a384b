"""The command line of `main.py`: train a continual-learning agent on a sequence of tasks, on one
rank or as a distributed job. It lives in the installed package (not in main.py) so scripts and
tests import it from any folder: `from trainer.cli import main`.

    python main.py                                   # the default experiment, one process
    mpirun -np 2 python main.py --backend torch      # the same on two ranks
    python main.py --config joint                    # a named preset from config.yaml

See README.md for every option, the presets, and how to launch with srun, torchrun or horovodrun.
"""
from __future__ import annotations

import logging
import sys
import traceback

from common.errors import AgreedError, UserError, one_line
from trainer import config
from trainer.divergence import EXIT_DIVERGED, Diverged
from trainer.launch import detect


def check_choices(cfg: dict) -> None:
    """Names and options checked before anything is started or written."""
    from data import DATASETS
    from models import MODELS

    for kind, name, valid in (("model", cfg["model"], MODELS), ("dataset", cfg["dataset"], DATASETS)):
        if name not in valid:
            raise UserError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(sorted(valid))}")
    agent_options(cfg)
    from trainer.precision import check_device

    check_device(cfg["amp"], cfg["device"])  # fp16 without a GPU: refused before any engine starts


def agent_options(cfg: dict):
    """(agent class, its validated options: --agent-config merged with what an alias fixes)."""
    from agents import agent_class

    cls, fixed = agent_class(cfg["agent"])
    return cls, cls.check_options({**cfg["agent_config"], **fixed})


def checked_data(cfg: dict, engine):
    """(dataset, tasks), the same on every rank, every task with training and test samples, every
    image file readable."""
    from data import build_tasks, load_dataset
    from data.checks import check_tasks, unreadable_images
    from trainer import agreement

    dataset = load_dataset(cfg["dataset"], cfg["dataset_dir"], cfg["dataset_config"])
    tasks = build_tasks(dataset, cfg["tasksets_config"], cfg["seed"])
    check_tasks(dataset, tasks)
    agreement.check(engine, "data", agreement.data_fingerprint(dataset, tasks))
    bad = unreadable_images(dataset, engine.rank, engine.world_size, cfg["verify_data"], max(1, cfg["workers"]))
    bad = [p for rank_bad in engine.allgather_object(bad) for p in rank_bad]
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise AgreedError(f"unreadable image files in dataset {cfg['dataset']!r}: {'; '.join(bad[:3])}{more} "
                          f"(--verify-data off skips this check)")
    return dataset, tasks


def run(cfg: dict, explicit: set, engine) -> dict | None:
    """Everything is checked, built and agreed on by every rank before the results folder is
    made: a refused start writes nothing."""
    from trainer import agreement, resume, run_folder
    from trainer.loop import TaskLoop

    agreement.check(engine, "options", cfg)
    plan = engine.decide(lambda: resume.plan(cfg, explicit))
    if plan.action in ("finished", "diverged"):
        if engine.rank == 0:
            print(f"main.py: {plan.note}", file=sys.stderr)
        if plan.action == "diverged":
            raise AlreadyDiverged(plan.note)
        return None
    cfg = plan.cfg
    cls, options = agent_options(cfg)  # again: a resumed run's saved config may differ
    cls.check_launch(options, engine)
    loop = TaskLoop(cfg, engine, *checked_data(cfg, engine))  # model, agent, buffers: errors surface here
    try:
        notes = loop.load_checkpoint(plan.checkpoints, plan.run_id) if plan.checkpoints else []
        run_dir = engine.decide(lambda: run_folder.claim(plan.action, plan.run_dir, cfg, cfg["overwrite"]))
        run_id = plan.run_id or engine.decide(run_folder.new_run_id)
    except BaseException:
        loop.close()
        raise
    try:
        return _train(loop, plan, notes, {**cfg, "run_name": run_dir.name}, run_dir, run_id, engine)
    finally:
        run_folder.release(run_dir)


class AlreadyDiverged(Exception):
    """--resume of a run that diverged: said once, exit EXIT_DIVERGED on every rank."""


def _train(loop, plan, notes: list, cfg: dict, run_dir, run_id: str, engine) -> dict:
    """The run, in its own (claimed) folder: logs, identity, training, the finished mark."""
    from trainer import results, resume, run_folder

    results.setup_logging(run_dir, engine.rank, cfg["log_level"])
    log = logging.getLogger("trainer")
    log.debug("configuration: %s", cfg)
    log.debug("all %d rank(s) agree on their options and data: %d tasks, %d training and %d test samples",
              engine.world_size, len(loop.tasks), len(loop.dataset.train), len(loop.dataset.test))
    if plan.note:
        log.info("%s", plan.note)
    for note in notes:
        log.warning("%s", note)
    identity = resume.fingerprint(cfg)
    if engine.rank == 0:
        results.write_config(run_dir, cfg)
        run_folder.write_identity(run_dir, run_id, identity, engine.world_size, "running")
    try:
        result = loop.run(run_dir, run_id)
    except Diverged as exc:  # rank 0's line is the one the console shows; the others' go to their logs
        (log.error if engine.rank == 0 else log.warning)("main.py: %s", exc)
        if engine.rank == 0:
            run_folder.write_identity(run_dir, run_id, identity, engine.world_size, "diverged", diverged=exc.where)
        raise
    if engine.rank == 0:
        run_folder.write_identity(run_dir, run_id, identity, engine.world_size, "finished")
    return result


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, explicit = config.resolve_with_sources(argv)
        from trainer.resume import saved_agent

        resumed_agent = saved_agent(cfg, explicit)
        check_choices(cfg if resumed_agent is None else {**cfg, "agent": resumed_agent})
        from trainer import agreement
        from trainer.engine import start_engine

        agreement.check_options_early(cfg)
        engine = start_engine(cfg["backend"], cfg["device"])
    except UserError as exc:
        if not isinstance(exc, AgreedError) or detect().rank == 0:  # said once when every rank says it
            print(f"main.py: error: {one_line(exc)}", file=sys.stderr)
        return 2
    try:
        run(cfg, explicit, engine)
    except (Diverged, AlreadyDiverged):  # every rank stopped at the same step, said once (rank 0's log)
        engine.shutdown()
        return EXIT_DIVERGED
    except AgreedError as exc:  # every rank raised it: end cleanly, say it once
        if engine.rank == 0:
            print(f"main.py: error: {one_line(exc)}", file=sys.stderr)
        engine.shutdown()
        return 2
    except UserError as exc:
        print(f"main.py: error: {one_line(exc)}", file=sys.stderr)
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
