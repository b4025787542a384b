"""The rehearsal agents' buffer options: policy, buffer_size, num_candidates, and the buffer
fill that metrics.json reports after every task."""
import subprocess
import sys

import pytest
import torch

from agents import make_agent
from agents.agent import AgentContext
from conftest import REPO, OneRank, mpi_env
from trainer_runs import metrics, run_main


def make_er(options, batch_size=16, classes=4):
    ctx = AgentContext(model=None, module=None, engine=OneRank(), device=torch.device("cpu"), preprocess=None,
                       num_classes=classes, sample_shape=(3,), train_size=400, batch_size=batch_size, seed=1,
                       reset_model=None)
    agent = make_agent("er", ctx, {"async": False, **options})
    agent.before_training()
    return agent


def batch(step, size=16):
    """Samples whose first byte is their index in the stream, so a stored one names itself."""
    ids = torch.arange(step * size, (step + 1) * size)
    return torch.stack([ids % 256, ids // 256, ids % 7], 1).to(torch.uint8), ids % 4


@pytest.mark.parametrize("buffer", ["python", "native"])
def test_num_candidates_changes_what_is_offered_not_the_draws(buffer):
    """c of the B new samples, a different random subset each step, reach the buffer; the
    draws still return min(R, filled) distinct stored samples."""
    agent = make_er({"buffer": buffer, "num_candidates": 5, "buffer_size": 1000, "num_representatives": 8})
    offered = []
    for step in range(6):
        x, y = batch(step)
        before = sum(agent.memory.buffer.stats()["seen_per_class"])
        agent.memory.insert(x, y, None)
        state = agent.memory.buffer.state()
        assert sum(agent.memory.buffer.stats()["seen_per_class"]) - before == 5
        stored = state["samples"][: agent.memory.buffer.stats()["filled"]]
        ids = stored[:, 0].astype(int) + 256 * stored[:, 1].astype(int)
        new = sorted(set(ids[ids >= step * 16].tolist()))
        assert len(new) == 5 and all(step * 16 <= i < (step + 1) * 16 for i in new)
        offered.append([i - step * 16 for i in new])
        agent.memory.batches.collect()
        assert agent.memory.batches.ready == min(8, 5 * (step + 1))
        reps = agent.memory.batches._reps(agent.memory.batches.cur, agent.memory.batches.ready)[0].numpy()
        drawn = reps[:, 0].astype(int) + 256 * reps[:, 1].astype(int)
        assert len(set(drawn.tolist())) == len(drawn) and set(drawn.tolist()) <= set(ids.tolist())
    assert len({tuple(o) for o in offered}) > 1, "the same positions were offered every step"
    agent.close()

    full = make_er({"buffer": buffer, "buffer_size": 1000})
    x, y = batch(0)
    full.memory.insert(x, y, None)
    assert sum(full.memory.buffer.stats()["seen_per_class"]) == 16  # default: all B offered
    full.close()


def test_policies_and_fill_in_stats():
    adaptive = make_er({"buffer": "python"})  # 10% of 400 samples, one rank: 40 slots
    fixed = make_er({"buffer": "python", "policy": "fixed"})  # 40 / 4 classes = 10 per class
    for agent in (adaptive, fixed):
        x, y = batch(0)
        agent.memory.insert(x[y < 2], y[y < 2], None)  # the first task: classes 0 and 1, 8 samples
        agent.memory.batches.collect()
    a, f = adaptive.stats(), fixed.stats()
    assert a["policy"] == "adaptive" and a["capacity"] == 40 and a["fill"] == 8 / 40
    assert f["policy"] == "fixed" and f["capacity"] == 40 and f["slots_per_class"] == 10
    for agent in (adaptive, fixed):
        for step in range(1, 8):
            x, y = batch(step)
            agent.memory.insert(x[y < 2], y[y < 2], None)
            agent.memory.batches.collect()
    a, f = adaptive.stats(), fixed.stats()
    assert a["fill"] == 1.0 and f["fill"] == 0.5  # fixed: classes 2 and 3 have not come yet
    assert a["filled_per_class_per_rank"] == [[20, 20, 0, 0]]
    adaptive.close()
    fixed.close()


@pytest.mark.parametrize("config, message", [
    ("{'num_candidates': 33}", "num_candidates must be an integer in [1, batch_size=32], got 33"),
    ("{'num_candidates': 0}", "--agent-config num_candidates for agent nil_cpp is a whole number (>= 1), got 0"),
    ("{'buffer_size': 0}", "--agent-config buffer_size for agent nil_cpp is a whole number (>= 1), got 0"),
    ("{'policy': 'lifo'}", "valid values: 'adaptive', 'fixed'"),
    ("{'policy': 'fixed', 'buffer_size': 10}", "buffer_size is for policy 'adaptive'"),
    ("{'slots_per_class': 3}", "slots_per_class is for policy 'fixed'"),
])
def test_bad_options_one_line_exit_2_nothing_written(tmp_path, config, message):
    proc = subprocess.run([sys.executable, "main.py", "--agent", "nil_cpp", "--agent-config", config,
                           "--results-dir", str(tmp_path / "results")], cwd=REPO, env=mpi_env(),
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "osc_ucx" not in line]
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_fill_after_every_task_in_metrics(tmp_path):
    """metrics.json: the adaptive buffer is full from the first task on; the fixed one is not."""
    fills = {}
    for policy in ("adaptive", "fixed"):
        _, run = run_main(["--agent", "nil_cpp", "--epochs", "1", "--agent-config", f"{{'policy': '{policy}'}}",
                           "--plots", "false", "--tensorboard", "false"], tmp_path, policy)
        fills[policy] = [s["fill"] for s in metrics(run)["task_stats"]]
    assert fills["adaptive"] == [1.0] * 5, fills
    assert fills["fixed"][0] <= 0.2 + 1e-9 and fills["fixed"][-1] == 1.0, fills
