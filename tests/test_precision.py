"""Mixed precision and channels-last: bf16 runs on 1 and 2 ranks with both engines, fp16's
GradScaler order with Horovod's optimizer, float32 DER logits, fp16 refused without a GPU,
and the ccgrid24_smoke preset end to end on 2 ranks."""
import contextlib
import csv
import math

import pytest
import torch

from agents.der import DERAgent
from common.errors import UserError
from models import build_model
from trainer.precision import ChannelsLast, Precision, check_device
from trainer_runs import metrics, reported_lines, run_main

CPU = torch.device("cpu")


def losses_of(run, ranks):
    out = []
    for rank in range(ranks):
        with (run / f"steps_rank{rank}.csv").open() as f:
            out += [float(row["loss"]) for row in csv.DictReader(f)]
    return out


class FakeHorovodOptimizer(torch.optim.SGD):
    """SGD with Horovod's DistributedOptimizer surface: `synchronize` stands for the allreduce
    (here: halving every gradient, as averaging with a rank holding zeros would)."""

    def __init__(self, params, calls):
        super().__init__(params, lr=0.1)
        self.calls, self.skipping = calls, False

    def synchronize(self):
        self.calls.append("synchronize")
        for group in self.param_groups:
            for p in group["params"]:
                p.grad.mul_(0.5)

    @contextlib.contextmanager
    def skip_synchronize(self):
        self.skipping = True
        yield
        self.skipping = False

    def step(self, closure=None):
        self.calls.append("step without synchronize" if self.skipping else "step")
        return super().step(closure)


def fp16_on_cpu() -> Precision:
    """The fp16 code path with a CPU GradScaler (the real one only exists where CUDA does)."""
    precision = Precision("off", CPU)
    precision.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    return precision


@pytest.mark.parametrize("horovod", [True, False])
@pytest.mark.parametrize("fp16", [False, True])
def test_clip_grad_norm_clips_the_averaged_unscaled_gradient(horovod, fp16):
    """--clip-grad-norm 1: the step moves by lr x the gradient scaled to norm 1, whatever the
    loss scale, after Horovod's averaging (gradient (3, 4), averaged over 2 ranks: (1.5, 2))."""
    weight = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    calls = []
    optimizer = FakeHorovodOptimizer([weight], calls) if horovod else torch.optim.SGD([weight], lr=0.1)
    precision = fp16_on_cpu() if fp16 else Precision("off", CPU)
    precision.clip_grad_norm = 1.0
    precision.backward_step((weight * torch.tensor([3.0, 4.0])).sum(), optimizer)
    assert torch.allclose(weight.detach(), torch.tensor([1.0, 2.0]) - 0.1 * torch.tensor([0.6, 0.8]))
    if horovod:
        assert calls == ["synchronize", "step without synchronize"]
    small = Precision("off", CPU, clip_grad_norm=10.0)  # a norm below the limit is left alone
    weight.grad = None
    small.backward_step((weight * torch.tensor([3.0, 4.0])).sum(), torch.optim.SGD([weight], lr=0.1))
    assert torch.allclose(weight.grad, torch.tensor([3.0, 4.0]))


@pytest.mark.parametrize("horovod", [True, False])
def test_fp16_scaler_steps_on_averaged_unscaled_gradients(horovod):
    weight = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    calls = []
    optimizer = FakeHorovodOptimizer([weight], calls) if horovod else torch.optim.SGD([weight], lr=0.1)
    precision = fp16_on_cpu()
    loss = (weight * torch.tensor([3.0, 4.0])).sum()  # gradient (3, 4)
    precision.backward_step(loss, optimizer)
    averaged = 0.5 if horovod else 1.0
    assert torch.allclose(weight.detach(), torch.tensor([1.0, 2.0]) - 0.1 * averaged * torch.tensor([3.0, 4.0]))
    if horovod:
        assert calls == ["synchronize", "step without synchronize"]
    # an overflow: every rank sees the inf after averaging, skips the step and halves the scale
    before = weight.detach().clone()
    optimizer.zero_grad()
    precision.backward_step((weight * torch.tensor([float("inf"), 1.0])).sum(), optimizer)
    assert torch.equal(weight.detach(), before)
    assert precision.scaler.get_scale() == 512.0
    assert precision.state_dict()["scaler"]["scale"] == 512.0
    assert precision.skipped_steps == precision.state_dict()["skipped_steps"] == 1  # counted, not divergence


def test_fp16_is_refused_without_a_gpu():
    with pytest.raises(UserError, match="--amp fp16 needs a CUDA GPU and --device cpu was asked for"):
        check_device("fp16", "cpu")
    with pytest.raises(UserError, match="fp16"):
        Precision("fp16", CPU)
    if torch.cuda.is_available():
        check_device("fp16", "auto")  # allowed where there is a GPU
    else:
        with pytest.raises(UserError, match="torch sees none; valid choices here: off, bf16"):
            check_device("fp16", "auto")
    check_device("bf16", "cpu")


def test_bf16_autocast_with_channels_last_and_float32_der_logits():
    model = build_model("resnet18", 5, (3, 32, 32)).to(memory_format=torch.channels_last)
    precision = Precision("bf16", CPU)
    x = ChannelsLast()(torch.randn(4, 3, 32, 32))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    with precision.autocast():
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(4))
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32 and math.isfinite(loss.item())
    stored = DERAgent.extras_of(None, logits)
    assert stored.dtype == torch.float32 and stored.device.type == "cpu"
    loss.backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)


RUN = ["--amp", "bf16", "--epochs", "2", "--lr", "0.1", "--plots", "false", "--tensorboard", "false",
       "--tasksets-config", "{'scenario': 'class', 'initial_increment': 4, 'increment': 3}"]


@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("backend", ["torch", "horovod"])
def test_bf16_trains_with_finite_losses(tmp_path, backend, ranks):
    agent = ["--agent", "der" if ranks == 1 else "nil_cpp", "--channels-last", "true"]
    _, run = run_main([*RUN, *agent, "--backend", backend], tmp_path, f"{backend}{ranks}", ranks=ranks)
    m = metrics(run)
    assert m["finished"] and m["engine"] == backend and m["world_size"] == ranks
    losses = losses_of(run, ranks)
    assert losses and all(math.isfinite(v) for v in losses)
    # it learns: tasks, right after training on them, are recognised well above chance (about 0.3)
    diagonal = [row[-1] for row in m["accuracy_matrix"]]
    assert sum(diagonal) / len(diagonal) > 0.5, m["accuracy_matrix"]
    if ranks == 2:
        assert reported_lines(run, 0) == reported_lines(run, 1)


def test_ccgrid24_smoke_preset_end_to_end_on_two_ranks(tmp_path):
    _, run = run_main(["--config", "ccgrid24_smoke", "--backend", "torch", "--plots", "false"], tmp_path,
                      "smoke", ranks=2, timeout=400)
    m = metrics(run)
    assert m["finished"] and m["world_size"] == 2 and m["num_tasks"] == 4 and m["preset"] == "ccgrid24_smoke"
    assert all(math.isfinite(v) for v in losses_of(run, 2))
    assert m["task_stats"][-1]["global_filled"] > 0  # rehearsal buffer in use
