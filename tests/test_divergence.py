"""A diverged run is a result of its own: exit 3, metrics.json and run.json say 'diverged' and
where, no accuracy is reported, every rank stops at the same step, and resuming it refuses."""
import json
import math
from types import SimpleNamespace

import pytest
import torch

from trainer.divergence import EXIT_DIVERGED, Diverged, DivergenceWatch
from trainer.precision import Precision
from trainer_runs import metrics, run_main

FAST = ["--epochs", "1", "--plots", "false", "--tensorboard", "false"]


def test_the_watch_stops_at_patience_steps_in_a_row():
    watch = DivergenceWatch(SimpleNamespace(world_size=1), patience=3)
    losses = [1.0, math.nan, math.inf, 0.5, math.nan, math.nan]  # never 3 in a row: no stop
    for step, loss in enumerate(losses):
        watch.after_step(loss, task=1, epoch=0, step=step)
    with pytest.raises(Diverged) as caught:
        watch.after_step(-math.inf, task=1, epoch=0, step=len(losses))
    assert caught.value.where == {"task": 2, "epoch": 1, "step": 7, "nonfinite_steps_in_a_row": 3,
                                  "ranks_with_nonfinite_loss": 1, "loss": "-inf"}


def test_fp16_skipped_steps_are_counted_not_taken_for_divergence():
    precision = Precision("off", torch.device("cpu"))
    precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)  # fp16's scaler, on the CPU
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    for scale_by, skipped in ((1.0, 0), (float("inf"), 1), (1.0, 1)):  # an overflowing step is skipped
        optimizer.zero_grad()
        precision.backward_step((weight * scale_by).sum(), optimizer)
        assert precision.skipped_steps == skipped
    assert torch.isfinite(weight).all()
    restored = Precision("off", torch.device("cpu"))
    restored.scaler = torch.amp.GradScaler("cpu")
    restored.load_state_dict(precision.state_dict())
    assert restored.skipped_steps == 1 and restored.scaler.get_scale() == precision.scaler.get_scale()


@pytest.mark.parametrize("ranks", [1, 2])
def test_a_diverged_run_says_where_and_reports_no_accuracy(tmp_path, ranks):
    proc, run = run_main([*FAST, "--lr", "1e6"], tmp_path, "nan", ranks=ranks, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == EXIT_DIVERGED, out[-3000:]
    said = [line for line in out.splitlines() if "main.py: diverged" in line]
    assert len(said) == 1 and "task 1, epoch 1, step " in said[0], out[-3000:]  # once, for the whole job
    assert "final average accuracy" not in out and "of the way from naive to joint" not in out
    result = metrics(run)
    assert result["status"] == "diverged" and not result["finished"]
    assert result["final_average_accuracy"] is None and result["forgetting"] is None
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "diverged" and status["diverged"] == result["diverged"]
    if ranks == 2:  # every rank stopped at the same step
        logs = [(run / f"log_rank{r}.txt").read_text() for r in range(2)]
        where = f"step {result['diverged']['step']} "
        assert all(where in log and "non-finite on 2 rank(s)" in log for log in logs)
    again, _ = run_main(["--resume", str(run), *FAST], tmp_path, "unused", check=False)
    assert again.returncode == EXIT_DIVERGED and "diverged" in again.stderr and "not resumed" in again.stderr
    assert metrics(run) == result  # nothing touched


def test_patience_out_of_range_is_one_line(tmp_path):
    proc, run = run_main([*FAST, "--divergence-patience", "0"], tmp_path, "x", check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == \
        "main.py: error: divergence_patience must be at least 1, got 0"
    assert not run.exists()
