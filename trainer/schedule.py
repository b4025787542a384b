"""Learning-rate regimes: a linear warm-up, then constant, step or cosine, restarted at every task.

The LR of optimizer step s of a task (s = 0, 1, ...; S steps per epoch, E epochs per task):

    peak   = lr x scale,  scale = min(world size, lr_scale_cap)        (Goyal et al., 2017)
    warm-up (s < W = int(warmup_epochs x S)):
           lr(s) = peak x (1/scale + (1 - 1/scale) x s / W)           from lr up to peak
    then   constant: peak
           step:     peak x factor_i, i the last milestone with s >= int(milestone_i x S)
                     (factors relative to the peak, not compounded: 0.5, 0.05, 0.01)
           cosine:   lr_min + (peak - lr_min) x (1 + cos(pi x (s - W) / (E x S - W))) / 2

Every task starts again at s = 0 (re-warm, re-decay), as continual pre-training does. The
regime is a pure function of s, so a checkpoint holds only s; it is applied through torch's
``LambdaLR``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR

from common.errors import UserError


def lr_scale(world_size: int, cap: int | None) -> int:
    """The world-size multiplier of the LR: the world size, stopped at ``cap`` ranks."""
    return world_size if cap is None else min(world_size, cap)


def peak_lr(cfg: dict, world_size: int) -> float:
    return cfg["lr"] * lr_scale(world_size, cfg.get("lr_scale_cap"))


@dataclass(frozen=True)
class Regime:
    """One task's LR as a multiple of the peak LR, per optimizer step (see the module docstring)."""

    schedule: str
    steps_per_epoch: int
    epochs: int
    warmup_epochs: float = 0.0
    scale: int = 1                 # warm-up starts at peak / scale (= the one-rank lr)
    milestones: tuple = ()         # epochs from the task's start (step schedule)
    factors: tuple = ()            # LR / peak from each milestone on
    min_ratio: float = 0.0         # lr_min / peak (cosine)

    @classmethod
    def from_config(cls, cfg: dict, steps_per_epoch: int, world_size: int) -> "Regime":
        scale = lr_scale(world_size, cfg.get("lr_scale_cap"))
        return cls(schedule=cfg.get("lr_schedule", "constant"), steps_per_epoch=steps_per_epoch,
                   epochs=cfg["epochs"], warmup_epochs=cfg["warmup_epochs"], scale=scale,
                   milestones=tuple(cfg.get("lr_milestones") or ()), factors=tuple(cfg.get("lr_factors") or ()),
                   min_ratio=cfg.get("lr_min", 0.0) / (cfg["lr"] * scale))

    @property
    def warmup_steps(self) -> int:
        return int(self.warmup_epochs * self.steps_per_epoch)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def __call__(self, step: int) -> float:
        warm = self.warmup_steps
        if step < warm:
            start = 1.0 / self.scale
            return start + (1.0 - start) * step / warm
        if self.schedule == "step":
            factor = 1.0
            for milestone, f in zip(self.milestones, self.factors):
                if step >= int(milestone * self.steps_per_epoch):
                    factor = f
            return factor
        if self.schedule == "cosine":
            progress = min(1.0, (step - warm) / max(1, self.total_steps - warm))
            return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0


class TaskLR(LambdaLR):
    """``LambdaLR`` over a ``Regime``, from the peak LR. Its state is the step within the task
    (and the steps per epoch it counted in), so a resumed run continues at the same LR, and a run
    resumed on another world size at the same point of its epochs."""

    def __init__(self, optimizer: torch.optim.Optimizer, regime: Regime, peak: float):
        for group in optimizer.param_groups:
            group["initial_lr"] = peak  # LambdaLR's base LR; a new task restarts from it
        self.regime = regime
        super().__init__(optimizer, regime)

    def state_dict(self) -> dict:
        return {"step": self.last_epoch, "steps_per_epoch": self.regime.steps_per_epoch}

    def load_state_dict(self, state: dict) -> None:
        step = state["step"] if "step" in state else state["last_epoch"]  # or a plain LambdaLR's state
        saved_spe = state.get("steps_per_epoch", self.regime.steps_per_epoch)
        if saved_spe != self.regime.steps_per_epoch:
            step = round(step * self.regime.steps_per_epoch / saved_spe)
        self.last_epoch = step
        values = [base * self.regime(step) for base in self.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = values


def make_scheduler(cfg: dict, optimizer, steps_per_epoch: int, world_size: int) -> TaskLR:
    """The LR scheduler of one task (stepped once per optimizer step)."""
    regime = Regime.from_config(cfg, steps_per_epoch, world_size)
    return TaskLR(optimizer, regime, peak_lr(cfg, world_size))


def check_options(cfg: dict) -> None:
    """The schedule's options agree with each other and with --epochs; one-line UserErrors."""
    schedule, epochs = cfg["lr_schedule"], cfg["epochs"]
    milestones, factors = list(cfg["lr_milestones"]), list(cfg["lr_factors"])
    if cfg["lr_scale_cap"] is not None and cfg["lr_scale_cap"] < 1:
        raise UserError(f"lr_scale_cap must be at least 1 (ranks), got {cfg['lr_scale_cap']}")
    if cfg["lr_min"] < 0 or cfg["lr_min"] >= cfg["lr"]:
        raise UserError(f"lr_min must be in [0, lr={cfg['lr']}), got {cfg['lr_min']}")
    if cfg["warmup_epochs"] > epochs:
        raise UserError(f"warmup_epochs {cfg['warmup_epochs']} is beyond --epochs {epochs}")
    if schedule != "step":
        if milestones or factors:
            raise UserError(f"--lr-milestones/--lr-factors apply to --lr-schedule step only, and the schedule "
                            f"is {schedule}; drop them (--lr-milestones '' --lr-factors '') or use step")
        if schedule != "cosine" and cfg["lr_min"] != 0:
            raise UserError(f"--lr-min applies to --lr-schedule cosine only, and the schedule is {schedule}")
        return
    if not milestones:
        raise UserError("--lr-schedule step needs --lr-milestones (epochs, e.g. 21,26,28) and --lr-factors "
                        "(LR / peak from each milestone on, e.g. 0.5,0.05,0.01)")
    if len(milestones) != len(factors):
        raise UserError(f"--lr-milestones has {len(milestones)} value(s) ({_join(milestones)}) and --lr-factors "
                        f"{len(factors)} ({_join(factors)}); give one factor per milestone")
    for m in milestones:
        if not cfg["warmup_epochs"] <= m < epochs:
            where = f"beyond --epochs {epochs}" if m >= epochs else "inside the warm-up"
            raise UserError(f"--lr-milestones {_join(milestones)}: milestone {m:g} is {where}; valid "
                            f"milestones: warmup_epochs {cfg['warmup_epochs']:g} <= milestone < epochs {epochs}")
    if any(b <= a for a, b in zip(milestones, milestones[1:])):
        raise UserError(f"--lr-milestones must increase, got {_join(milestones)}")
    if any(f <= 0 for f in factors):
        raise UserError(f"--lr-factors must be positive, got {_join(factors)}")


def _join(values) -> str:
    return ",".join(f"{v:g}" for v in values)
