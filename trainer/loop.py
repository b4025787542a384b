"""The task loop: for each task, train the agent for some epochs, then evaluate every task seen.

This is the orchestration (tasks, epochs, optimizers, evaluation, results, checkpoints);
how a minibatch is learned from is the agent's business (agents/).
"""
from __future__ import annotations

import logging
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from agents import make_agent
from agents.agent import Agent, AgentContext
from common.seeding import MAX_SEED, stream_seed
from data.loader import make_loader
from data.scenarios import build_tasks
from data.sharding import shard_epoch
from models import build_model
from trainer import checkpoint, results
from trainer.divergence import Diverged, DivergenceWatch
from trainer.evaluation import evaluate
from trainer.precision import ChannelsLast, Precision
from trainer.preprocess import Normalize, RandomCropFlip
from trainer.schedule import make_scheduler, peak_lr
from trainer.telemetry import Telemetry

log = logging.getLogger("trainer")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (MAX_SEED + 1))
    torch.manual_seed(seed)


def make_optimizer(cfg: dict, model: torch.nn.Module, world_size: int) -> torch.optim.Optimizer:
    """At the peak LR, lr x min(world size, --lr-scale-cap); the task's scheduler sets each step's LR."""
    lr = peak_lr(cfg, world_size)
    params = model.parameters()
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg["weight_decay"])
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg["weight_decay"])


class TaskLoop:
    """Built (model, agent, buffers) before the run's folder exists, so a setting that cannot
    work is refused with nothing written; `run(run_dir, checkpoints)` then trains."""

    def __init__(self, cfg: dict, engine, dataset, tasks):
        self.cfg, self.engine, self.run_dir = cfg, engine, None
        self.rank, self.world = engine.rank, engine.world_size
        seed_everything(cfg["seed"])
        self.dataset, self.tasks = dataset, tasks
        self.precision = Precision(cfg["amp"], engine.device, cfg["clip_grad_norm"])
        self.module = self._new_model(seed=cfg["seed"]).to(engine.device)
        if cfg["channels_last"]:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.model = engine.wrap_model(self.module)
        self.preprocess = Normalize(self.dataset.mean, self.dataset.std, engine.device)
        if cfg["channels_last"]:
            self.preprocess = torch.nn.Sequential(self.preprocess, ChannelsLast())
        train_preprocess = self.preprocess
        if cfg["augment"]:
            padding = max(1, self.dataset.sample_shape[-1] // 8)  # 4 pixels for 32x32 images
            train_preprocess = torch.nn.Sequential(RandomCropFlip(padding), self.preprocess)
        train_targets = self.dataset.train.targets
        self.ctx = AgentContext(
            model=self.model, module=self.module, engine=engine, device=engine.device,
            preprocess=train_preprocess, eval_preprocess=self.preprocess, task_batches=self._task_batches,
            num_classes=self.dataset.num_classes,
            sample_shape=tuple(self.dataset.sample_shape),
            train_size=int(sum(len(t.train_indices) for t in self._distinct_train_tasks())),
            batch_size=cfg["batch_size"], seed=cfg["seed"], reset_model=self.reset_model,
            class_counts=np.bincount(train_targets, minlength=self.dataset.num_classes),
            precision=self.precision,
        )
        self.agent = make_agent(cfg["agent"], self.ctx, cfg["agent_config"])
        self.recorder = results.Recorder(len(self.tasks), self.world)
        self.watch = DivergenceWatch(engine, cfg["divergence_patience"])
        self.run_id = None  # the run's identity in every checkpoint file; set by run()
        self.telemetry = None
        self._loaded = None  # (folder, shared state, this rank's state) of the checkpoint to resume
        self.optimizer = self.scheduler = None
        self.start_task, self.start_epoch = 0, 0
        try:
            self.agent.before_training()  # buffers are sized and allocated here
        except BaseException:
            self.agent.close()
            raise

    def close(self) -> None:
        """Release the agent's buffers, the event writer and the divergence watch's communicator, on
        every rank (idempotent)."""
        self.agent.close()
        self.watch.close()
        if self.telemetry is not None:
            self.telemetry.close()

    def _distinct_train_tasks(self):
        """Tasks as they would be without concatenation (the training set's true size)."""
        if not self.cfg["tasksets_config"].get("concatenate_tasksets"):
            return self.tasks
        config = {**self.cfg["tasksets_config"], "concatenate_tasksets": False}
        return build_tasks(self.dataset, config, self.cfg["seed"])

    def _new_model(self, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return build_model(self.cfg["model"], self.dataset.num_classes,
                           tuple(self.dataset.sample_shape), self.cfg["model_config"])

    def reset_model(self, task_index: int) -> None:
        """Fresh random weights, identical on every rank (seeded), for the from-scratch baseline."""
        fresh = self._new_model(seed=self.cfg["seed"] + 7919 * (task_index + 1))
        self.module.load_state_dict(fresh.state_dict())
        self.engine.broadcast_parameters(self.module)

    def _begin_task(self, task) -> None:
        cfg = self.cfg
        steps_per_epoch = self._steps_per_epoch(task)
        if self.optimizer is None:  # one optimizer per run: Horovod hooks the gradients once
            self.optimizer = self.engine.wrap_optimizer(make_optimizer(cfg, self.module, self.world), self.module)
        self.optimizer.state.clear()  # each task starts without momentum from the last one
        self.scheduler = make_scheduler(cfg, self.optimizer, steps_per_epoch, self.world)
        self.ctx.optimizer = self.optimizer

    def _task_batches(self, task):
        """This rank's share of a task's training data, once, in the first epoch's order (uint8
        batches in host memory): for agents that look at a task again at its end."""
        cfg = self.cfg
        indices = shard_epoch(task.train_indices, self.rank, self.world, seed=stream_seed(cfg["seed"], task.index),
                              epoch=0)
        return make_loader(self.dataset.train, indices, cfg["batch_size"], cfg["workers"], False)

    def _steps_per_epoch(self, task) -> int:
        per_rank = len(task.train_indices) // self.world
        return max(1, -(-per_rank // self.cfg["batch_size"]))

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self, task_index: int, epochs_done: int) -> None:
        shared = {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "precision": self.precision.state_dict(),
            "config": self.cfg,
        }
        per_rank = {"agent": self.agent.state_dict(), "recorder": self.recorder.state_dict()}
        folder = checkpoint.save(self.run_dir, self.run_id, self.engine, task_index, epochs_done, shared, per_rank)
        log.info("checkpoint written: %s", folder)

    def load_checkpoint(self, checkpoints: list[Path], run_id: str | None) -> list[str]:
        """Read the newest of `checkpoints` (newest first) that loads on every rank and belongs to
        run `run_id`, before the run's folder is touched; returns a note for each one skipped."""
        folder, shared, own, notes = checkpoint.load_usable(checkpoints, self.engine, run_id, self.check_progress)
        self._loaded = (folder, shared, own)
        return notes

    def resume_from(self, folder: Path, shared: dict, own: dict) -> None:
        """Continue from a loaded checkpoint."""
        task, epoch = shared["task"], shared["epoch"]
        self.module.load_state_dict(shared["model"])
        self.engine.broadcast_parameters(self.module)
        self.precision.load_state_dict(shared.get("precision", {}))
        self.recorder.load_state_dict(own["recorder"])
        self.agent.load_state_dict(own["agent"])
        old_world = own.get("resharded_from", self.world)
        lr_scale = peak_lr(self.cfg, self.world) / peak_lr(self.cfg, old_world)
        if epoch >= self.cfg["epochs"]:  # the task was finished (and evaluated)
            self.start_task, self.start_epoch = task + 1, 0
        else:
            self.start_task, self.start_epoch = task, epoch
            self.agent.before_task(self.tasks[task], resumed=True)
            self._begin_task(self.tasks[task])
            self.optimizer.load_state_dict(shared["optimizer"])
            self.scheduler.load_state_dict(shared["scheduler"])  # its LRs: from the new world size's peak
        checkpoint.set_rng_state(own["rng"])
        if old_world != self.world:
            summary = getattr(self.agent, "reshard_summary", None)
            buffer = ("buffer re-sharded ({held_after} of {held_before} samples kept, capacity {capacity_before} -> "
                      "{capacity_after})".format(**summary) if summary else "no buffer")
            log.info("resumed %d-rank checkpoint on %d ranks: %s, data sharded over %d ranks, learning rate "
                     "scaled x%.3g", old_world, self.world, buffer, self.world, lr_scale)
        log.info("resumed from %s: continuing at task %d, epoch %d", folder, self.start_task + 1,
                 self.start_epoch + 1)

    # ---------------------------------------------------------------- the run
    def check_progress(self, shared: dict) -> None:
        """Checks a checkpoint's shared state against this run: progress that its task count allows."""
        if not 0 <= shared["task"] < len(self.tasks):
            raise ValueError(f"shared.pt is at task {shared['task'] + 1} of a run with {len(self.tasks)} tasks")

    def run(self, run_dir: Path, run_id: str) -> dict:
        """Train every task not done yet (from the checkpoint load_checkpoint read, if any). A
        diverged run writes metrics.json marked 'diverged' and raises Diverged on every rank."""
        cfg = self.cfg
        self.run_dir, self.run_id = run_dir, run_id
        self.telemetry = Telemetry(run_dir, enabled=self.rank == 0 and cfg["tensorboard"])
        if self._loaded is not None:
            self.resume_from(*self._loaded)
            self._loaded = None
        log.info("%d tasks, %s on %s, agent %s, %d rank(s), engine %s, device %s",
                 len(self.tasks), cfg["model"], cfg["dataset"], cfg["agent"], self.world,
                 self.engine.name, self.engine.device)
        if self.agent.evaluated_with != Agent.evaluated_with:
            log.info("agent %s is evaluated with its %s", cfg["agent"], self.agent.evaluated_with)
        try:
            for task in self.tasks[self.start_task:]:
                first_epoch = self.start_epoch if task.index == self.start_task else 0
                if first_epoch == 0:
                    self.agent.before_task(task)
                    self._begin_task(task)
                self._train_task(task, first_epoch)
                self.agent.after_task(task)
                self._evaluate(task)
                self.save_checkpoint(task.index, cfg["epochs"])
            return self.finish()
        except Diverged as exc:
            self._write(final=False, diverged=exc.where)
            raise
        finally:
            self.close()

    def _train_task(self, task, first_epoch: int) -> None:
        cfg, engine = self.cfg, self.engine
        pin = engine.device.type == "cuda"
        bar = _progress(self.rank, self._steps_per_epoch(task) * (cfg["epochs"] - first_epoch),
                        f"task {task.index + 1}/{len(self.tasks)}")
        for epoch in range(first_epoch, cfg["epochs"]):
            indices = shard_epoch(task.train_indices, self.rank, self.world,
                                  seed=stream_seed(cfg["seed"], task.index), epoch=epoch)
            losses, epoch_start = [], time.perf_counter()
            self.agent.before_epoch(task, epoch)
            loader_iter = iter(make_loader(self.dataset.train, indices, cfg["batch_size"], cfg["workers"], pin))
            step = 0
            while True:
                t0 = time.perf_counter()
                batch = next(loader_iter, None)
                if batch is None:
                    break
                x, y = batch  # host tensors (pinned on a GPU run); the agent moves them
                t1 = time.perf_counter()
                lr = self.scheduler.get_last_lr()[0]  # the LR this step trains with
                result = self.agent.train_step(x, y)
                self.watch.after_step(result.loss, task.index, epoch, step)
                self.scheduler.step()
                t2 = time.perf_counter()
                row = results.StepRecord(task.index, epoch, step, result.samples, load_s=t1 - t0,
                                         wait_s=result.wait_s, train_s=t2 - t1 - result.wait_s, loss=result.loss)
                self.recorder.add_step(row)
                self.telemetry.step(row, result.losses, lr)
                losses.append(result.loss)
                step += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{result.loss:.3f}")
            if bar is None:
                log.info("task %d/%d epoch %d/%d: loss %.4f, %d steps in %.2fs", task.index + 1,
                         len(self.tasks), epoch + 1, cfg["epochs"], float(np.mean(losses)) if losses else
                         float("nan"), step, time.perf_counter() - epoch_start)
            done = epoch + 1
            if cfg["checkpoint_every"] and done % cfg["checkpoint_every"] == 0 and done < cfg["epochs"]:
                self.save_checkpoint(task.index, done)
        if bar is not None:
            bar.close()

    def _evaluate(self, task) -> None:
        seen = self.tasks[: task.index + 1]
        with self.precision.autocast():
            evals = evaluate(self.agent.eval_module(), self.dataset, seen, self.engine, self.preprocess,
                             self.cfg["eval_batch_size"], self.cfg["workers"])
        stats = self.agent.stats()
        self.recorder.add_evaluation(task.index, evals, stats)
        row = self.recorder.top1[-1]
        log.info("after task %d: accuracy per task %s, average %.4f", task.index + 1,
                 " ".join(f"{a:.3f}" for a in row), float(np.mean(row)))
        self.telemetry.evaluation(task.index, evals, stats)
        self._write(final=False)

    def _throughput_total(self) -> float:
        rate = torch.tensor([self.recorder.timing_summary().get("samples_per_s_rank", 0.0)], dtype=torch.float64)
        return float(self.engine.allreduce_sum(rate).item())

    def _write(self, final: bool, diverged: dict | None = None) -> dict:
        """metrics.json (rank 0) and this rank's step records. `status` is running, finished or
        diverged; a diverged run keeps the accuracy rows of the tasks it finished, but no summary
        number (final average accuracy, forgetting, ...) is reported for it."""
        result = self.recorder.metrics(self._throughput_total())
        status = "diverged" if diverged else "finished" if final else "running"
        result.update(agent=self.cfg["agent"], preset=self.cfg.get("preset"), engine=self.engine.name,
                      launcher=self.engine.launch.launcher, device=str(self.engine.device), finished=final,
                      status=status, evaluated_with=self.agent.evaluated_with,
                      fp16_skipped_steps=self.precision.skipped_steps, results_dir=str(self.run_dir))
        if diverged:
            result["diverged"] = diverged
            for key in results.SUMMARY_KEYS:
                result[key] = None
        if self.rank == 0:
            results.write_metrics(self.run_dir, result)
        results.write_steps(self.run_dir, self.rank, self.recorder.steps)
        return result

    def finish(self) -> dict:
        if len(self.recorder.top1) != len(self.tasks):  # never `finished` with tasks missing
            raise RuntimeError(f"the run reached its end with {len(self.recorder.top1)} evaluated task(s) of "
                               f"{len(self.tasks)}: its checkpointed results do not match its tasks")
        result = self._write(final=True)
        log.info("final average accuracy %.4f, forgetting %.4f, backward transfer %.4f, "
                 "%.0f samples/s over %d rank(s), %.1fs", result["final_average_accuracy"],
                 result["forgetting"], result["backward_transfer"],
                 result["timing"].get("samples_per_s_total", 0.0), self.world, result["wall_time_s"])
        if self.rank == 0 and self.cfg["plots"]:
            from trainer.plots import plot_run

            plot_run(self.run_dir)
        if self.rank == 0:  # the default experiment: where this run stands between naive and joint
            from trainer.baselines import comparison

            for line in comparison(self.cfg, result["final_average_accuracy"]):
                log.info("%s", line)
        return result


def _progress(rank: int, total: int, desc: str):
    """A tqdm bar on rank 0 at an interactive terminal; plain log lines otherwise."""
    if rank != 0 or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
