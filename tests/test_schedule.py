"""Learning-rate regimes: every schedule's LR at chosen steps against the formula (warm-up,
per-task restart, world-size cap), checkpoint round trips, bad input, and one real run's LR."""
import math

import pytest
import torch

from common.errors import UserError
from trainer import config
from trainer.schedule import make_scheduler, peak_lr

S = 10  # steps per epoch in the unit tests


def cfg_of(*argv):
    return config.resolve(list(argv))


def lrs(cfg, world, steps, optimizer=None):
    """LR used by each of the first `steps` optimizer steps of one task."""
    optimizer = optimizer or torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=peak_lr(cfg, world))
    scheduler = make_scheduler(cfg, optimizer, S, world)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out, optimizer


def test_constant_with_warmup_ramps_from_lr_to_world_times_lr():
    cfg = cfg_of("--lr", "0.1", "--epochs", "3", "--warmup-epochs", "2")
    got, _ = lrs(cfg, world=4, steps=3 * S)
    warm = 2 * S
    for s in (0, 1, 7, 19):
        assert got[s] == pytest.approx(0.1 * 4 * (0.25 + 0.75 * s / warm))
    assert got[0] == pytest.approx(0.1) and got[20] == pytest.approx(0.4) and got[29] == pytest.approx(0.4)


def test_step_schedule_factors_are_relative_to_the_peak_and_restart_each_task():
    cfg = cfg_of("--lr", "0.05", "--epochs", "6", "--warmup-epochs", "1", "--lr-schedule", "step",
                 "--lr-milestones", "3,4,5", "--lr-factors", "0.5,0.05,0.01")
    peak = 0.05 * 2
    first, optimizer = lrs(cfg, world=2, steps=6 * S)
    expected = {0: 0.05, 5: 0.05 + 0.05 * 5 / S, 10: peak, 29: peak, 30: peak * 0.5, 39: peak * 0.5,
                40: peak * 0.05, 50: peak * 0.01, 59: peak * 0.01}
    for s, value in expected.items():
        assert first[s] == pytest.approx(value), s
    second, _ = lrs(cfg, world=2, steps=6 * S, optimizer=optimizer)  # the next task, same optimizer
    assert second == pytest.approx(first)  # re-warm and re-decay from the peak, not from the last LR


def test_cosine_decays_from_peak_to_lr_min_after_the_warmup():
    cfg = cfg_of("--lr", "0.1", "--epochs", "5", "--warmup-epochs", "1", "--lr-schedule", "cosine",
                 "--lr-min", "0.01")
    got, _ = lrs(cfg, world=1, steps=5 * S)
    span = 5 * S - S
    for s in (10, 20, 30, 49):
        assert got[s] == pytest.approx(0.01 + (0.1 - 0.01) * (1 + math.cos(math.pi * (s - S) / span)) / 2)
    assert got[0] == got[9] == pytest.approx(0.1)  # one rank: the warm-up stays at lr
    assert got[30] == pytest.approx(0.055)          # half way: the middle of [lr_min, peak]


def test_lr_scale_cap_stops_the_world_size_multiplier():
    cfg = cfg_of("--lr", "0.0125", "--epochs", "2", "--warmup-epochs", "1", "--lr-scale-cap", "64")
    assert peak_lr(cfg, 16) == pytest.approx(0.2) and peak_lr(cfg, 128) == pytest.approx(0.8)
    got, _ = lrs(cfg, world=128, steps=2 * S)
    assert got[0] == pytest.approx(0.0125)                                  # warm-up starts at lr
    assert got[5] == pytest.approx(0.0125 * 64 * (1 / 64 + (1 - 1 / 64) * 0.5))
    assert got[10] == pytest.approx(0.8)                                    # lr x 64, not x 128
    assert peak_lr(cfg_of("--lr", "0.0125"), 128) == pytest.approx(1.6)    # default: no cap


def test_checkpointed_scheduler_resumes_at_the_same_lr():
    cfg = cfg_of("--lr", "0.1", "--epochs", "4", "--warmup-epochs", "1", "--lr-schedule", "cosine")
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=peak_lr(cfg, 2))
    scheduler = make_scheduler(cfg, optimizer, S, 2)
    for _ in range(23):
        optimizer.step()
        scheduler.step()
    state, lr_now = scheduler.state_dict(), optimizer.param_groups[0]["lr"]
    fresh = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=peak_lr(cfg, 2))
    resumed = make_scheduler(cfg, fresh, S, 2)
    resumed.load_state_dict(state)
    assert fresh.param_groups[0]["lr"] == pytest.approx(lr_now)
    for _ in range(5):
        optimizer.step(), scheduler.step(), fresh.step(), resumed.step()
        assert fresh.param_groups[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])
    # on another world size (other steps per epoch, other peak): the same point of the task
    other = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=peak_lr(cfg, 4))
    elastic = make_scheduler(cfg, other, S // 2, 4)
    elastic.load_state_dict({"step": 20, "steps_per_epoch": S})
    assert elastic.last_epoch == 10
    assert other.param_groups[0]["lr"] == pytest.approx(0.4 * (1 + math.cos(math.pi * 5 / 15)) / 2)


def test_list_flags_from_the_command_line_and_from_yaml(tmp_path):
    presets = tmp_path / "p.yaml"
    presets.write_text("p: {epochs: 30, warmup_epochs: 5, lr_schedule: step, lr_milestones: [21, 26, 28],\n"
                       "    lr_factors: [0.5, 0.05, 0.01], amp: off}\n")
    from_yaml = cfg_of("--yaml-config", str(presets), "--config", "p")
    from_cli = cfg_of("--epochs", "30", "--warmup-epochs", "5", "--lr-schedule", "step",
                      "--lr-milestones", "21,26,28", "--lr-factors", "0.5, 0.05, 0.01")
    for cfg in (from_yaml, from_cli):
        assert cfg["lr_milestones"] == [21, 26, 28] and cfg["lr_factors"] == [0.5, 0.05, 0.01]
    assert from_yaml["amp"] == "off"  # YAML's bare `off` is false: still the mode off
    cleared = cfg_of("--yaml-config", str(presets), "--config", "p", "--lr-schedule", "cosine",
                     "--lr-milestones", "", "--lr-factors", "")
    assert cleared["lr_milestones"] == [] and cleared["lr_schedule"] == "cosine"


@pytest.mark.parametrize("argv, message", [
    (["--lr-schedule", "step", "--lr-milestones", "21,26,31", "--lr-factors", "0.5,0.05,0.01", "--epochs", "30"],
     "milestone 31 is beyond --epochs 30"),
    (["--lr-schedule", "step", "--lr-milestones", "21,26", "--lr-factors", "0.5,0.05,0.01", "--epochs", "30"],
     "--lr-milestones has 2 value(s) (21,26) and --lr-factors 3"),
    (["--lr-schedule", "step", "--lr-milestones", "2", "--lr-factors", "0.5", "--warmup-epochs", "3"],
     "milestone 2 is inside the warm-up"),
    (["--lr-schedule", "step", "--lr-milestones", "5,3", "--lr-factors", "0.5,0.1"], "must increase"),
    (["--lr-schedule", "step"], "--lr-schedule step needs --lr-milestones"),
    (["--lr-milestones", "3", "--lr-factors", "0.1"], "apply to --lr-schedule step only"),
    (["--lr-schedule", "step", "--lr-milestones", "3", "--lr-factors", "0"], "--lr-factors must be positive"),
    (["--lr-milestones", "3,x"], "expected numbers separated by commas"),
    (["--lr-schedule", "linear"], "valid choices: constant, step, cosine"),
    (["--lr-schedule", "cosine", "--lr-min", "0.5"], "lr_min must be in [0, lr=0.02)"),
    (["--lr-scale-cap", "0"], "lr_scale_cap must be at least 1"),
    (["--amp", "fp32"], "valid choices: off, bf16, fp16"),
])
def test_bad_schedule_input_is_one_clear_error(argv, message):
    with pytest.raises(UserError) as err:
        config.resolve(argv)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_run_logs_the_formula_lr_at_every_step(tmp_path):
    """Real run, 1 rank: the LR TensorBoard shows at each step of two tasks is the formula's."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from trainer_runs import run_main

    args = ["--tasksets-config", "{'scenario': 'class', 'initial_increment': 5, 'increment': 5}",
            "--epochs", "3", "--warmup-epochs", "1", "--lr", "0.05", "--lr-schedule", "step",
            "--lr-milestones", "2", "--lr-factors", "0.1", "--batch-size", "128", "--plots", "false"]
    _, run = run_main(args, tmp_path, "lr")
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    logged = [e.value for e in events.Scalars("train/lr")]
    # digits: 1347 training samples, ~675 per task -> 6 steps of 128 per epoch
    steps = len(logged) // 2
    assert steps == 3 * 6, len(logged)
    per_epoch = steps // 3
    # the LR each step trained with; 1 rank, so the warm-up is flat at lr
    expected = [0.05 if s < 2 * per_epoch else 0.005 for s in range(steps)]
    assert logged[:steps] == pytest.approx(expected)
    assert logged[steps:] == pytest.approx(expected)  # the second task restarts the regime


@pytest.mark.parametrize("schedule", [
    ["--lr-schedule", "step", "--lr-milestones", "2,3", "--lr-factors", "0.3,0.05"],
    ["--lr-schedule", "cosine", "--lr-min", "0.001"],
], ids=["step", "cosine"])
def test_killed_run_resumes_mid_schedule_exactly(tmp_path, schedule):
    """Killed after epoch 2 of task 2 (past the warm-up, between milestones): the resumed run
    trains every later step with the same LR, so losses and accuracies are bit-identical."""
    import csv

    from test_resilience import RUN
    from trainer_runs import check_resumes_bit_identical

    args = [*RUN, "--backend", "torch", "--warmup-epochs", "1", *schedule]
    check_resumes_bit_identical(args, tmp_path, marker="t001-e0002")
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    assert "resumed from" in (killed / "log_rank0.txt").read_text()

    def losses(run):
        with (run / "steps_rank0.csv").open() as f:
            return [row["loss"] for row in csv.DictReader(f)]

    assert losses(killed) == losses(reference)
