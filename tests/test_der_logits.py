"""DER's stored logits (`logits`: insert / task_end / ema) and a reservoir over distinct samples
(`offer`: 'first_epoch'), driven through the agents as the task loop drives them, one rank."""

import numpy as np
import pytest
import torch

from agents import make_agent
from agents.agent import AgentContext
from buffer_patterns import inclusion_p_value
from conftest import OneRank
from trainer_runs import check_resumes_bit_identical, run_main

B, CLASSES, SHAPE = 8, 4, (1, 2, 2)


def make_der(buffer, seed=1, **options):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, CLASSES))
    ctx = AgentContext(model=model, module=model, engine=OneRank(), device=torch.device("cpu"),
                       preprocess=lambda x: x.float() / 255.0, num_classes=CLASSES, sample_shape=SHAPE,
                       train_size=400, batch_size=B, seed=seed, reset_model=None)
    ctx.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    agent = make_agent("der", ctx, {"buffer": buffer, "buffer_size": 12, "num_representatives": 6, **options})
    agent.before_training()
    return agent


def stream(step, classes=(0, 1)):
    """B samples whose first pixel is their id (mod 256): a stored sample names itself."""
    ids = torch.arange(step * B, (step + 1) * B)
    x = torch.stack([ids % 256, ids // 256, ids % 7, ids % 5], 1).to(torch.uint8).view(B, *SHAPE)
    return x, torch.tensor(classes)[ids % len(classes)]


def slice_of(agent):
    agent.memory.batches.collect()  # the native buffer keeps its state while a draw is in flight
    return agent.memory.buffer.state()


@pytest.mark.parametrize("buffer", ["native", "python", "local"])
def test_task_end_rewrites_the_logits_of_this_tasks_samples_only(buffer):
    agent = make_der(buffer, logits="task_end")
    agent.before_task(None)
    for step in range(4):  # task 1: classes 0 and 1
        agent.train_step(*stream(step))
    agent.after_task(None)
    first = slice_of(agent)
    agent.before_task(None)
    for step in range(4, 7):  # task 2: classes 2 and 3 take some of the slots
        agent.train_step(*stream(step, classes=(2, 3)))
    taken = agent.memory.taken.copy()
    before = slice_of(agent)
    agent.after_task(None)
    after = slice_of(agent)
    model = agent.ctx.module
    held = np.flatnonzero(after["labels"] >= 0)
    assert len(taken) and set(taken) <= set(held)
    with torch.no_grad():
        expected = model(torch.from_numpy(after["samples"][taken]).float() / 255.0).numpy()
    np.testing.assert_allclose(after["extras"][taken], expected, rtol=1e-5, atol=1e-6)
    others = np.setdiff1d(held, taken)
    assert len(others), "some samples of task 1 should still be held"
    assert np.array_equal(after["extras"][others], before["extras"][others])  # untouched
    assert np.array_equal(before["extras"][others], first["extras"][others])
    assert not np.allclose(before["extras"][taken], after["extras"][taken])  # they did change
    agent.close()


@pytest.mark.parametrize("buffer", ["native", "python"])
def test_ema_moves_replayed_logits_by_its_formula(buffer):
    gamma = 0.25
    agent = make_der(buffer, logits="ema", gamma=gamma)
    agent.before_task(None)
    seen, updated = [], 0
    original = agent.replayed

    def spy(logits, batch):
        stored = slice_of(agent)["extras"].copy()
        original(logits, batch)
        after = slice_of(agent)["extras"].copy()  # before this step's insert reuses any slot
        seen.append((logits[batch.b:batch.b + batch.n].detach().clone(), batch, stored, after))

    agent.replayed = spy
    for step in range(5):
        agent.train_step(*stream(step))
        current, batch, before, after = seen[-1]
        if batch.n == 0:
            continue
        slots = batch.where[:batch.n, 1]
        assert (batch.where[:batch.n, 0] == 0).all()
        np.testing.assert_array_equal(batch.extras.numpy(), before[slots])  # drawn = stored
        want = gamma * batch.extras.numpy() + (1 - gamma) * current.numpy()
        np.testing.assert_allclose(after[slots], want, rtol=1e-5, atol=1e-6)
        untouched = np.setdiff1d(np.arange(len(after)), slots)
        np.testing.assert_array_equal(after[untouched], before[untouched])
        updated += batch.n
    assert updated > 10
    agent.close()


@pytest.mark.parametrize("buffer", ["python", "native"])
def test_first_epoch_holds_no_sample_twice_and_counts_distinct_samples(buffer):
    distinct = 5 * B
    for offer in ("first_epoch", "every_epoch"):
        agent = make_der(buffer, offer=offer, logits="insert")
        agent.before_task(None)
        for epoch in range(3):
            agent.before_epoch(None, epoch)
            for step in range(5):
                agent.train_step(*stream(step))
        state = slice_of(agent)
        ids = state["samples"][state["labels"] >= 0].reshape(-1, 4)[:, 0].tolist()
        seen = int(np.sum(state["seen_per_class"]))
        assert seen == (distinct if offer == "first_epoch" else 3 * distinct)  # every_epoch counts instances
        if offer == "first_epoch":
            assert len(set(ids)) == len(ids) == 12
        agent.close()


@pytest.mark.parametrize("buffer", ["native", "python"])
def test_task_end_offer_stores_each_sample_once_with_the_trained_models_logits(buffer):
    """offer 'task_end': nothing enters the buffer during a task (its representatives all come
    from earlier tasks); at the task's end each of the rank's samples is offered once, with the
    logits of the model as trained."""
    agent = make_der(buffer, offer="task_end", buffer_size=64)
    tasks = {0: [stream(s) for s in range(3)], 1: [stream(s, classes=(2, 3)) for s in range(3, 6)]}
    agent.ctx.task_batches = lambda task: iter(tasks[task])
    for task in (0, 1):
        agent.before_task(task)
        for epoch in range(2):
            agent.before_epoch(task, epoch)
            for x, y in tasks[task]:
                before = slice_of(agent)
                agent.train_step(x, y)
                assert np.array_equal(slice_of(agent)["seen_per_class"], before["seen_per_class"])
                drawn = agent.memory.batches._reps(agent.memory.batches.cur, agent.memory.batches.ready)[1]
                assert set(drawn.tolist()) <= {0, 1} if task == 1 else not len(drawn)  # past tasks only
        agent.after_task(task)
        state = slice_of(agent)
        assert int(np.sum(state["seen_per_class"])) == 3 * B * (task + 1)  # once each, not once per epoch
    held = np.flatnonzero(state["labels"] >= 0)
    with torch.no_grad():
        logits = agent.ctx.module(torch.from_numpy(state["samples"][held]).float() / 255.0).numpy()
    task2 = np.isin(state["labels"][held], [2, 3])
    np.testing.assert_allclose(state["extras"][held][task2], logits[task2], rtol=1e-5, atol=1e-6)
    agent.close()


def test_first_epoch_inclusion_is_uniform_over_distinct_samples():
    """Over many seeds, each distinct sample is held with probability capacity / distinct."""
    hits = np.zeros(5 * B, np.int64)
    trials = 150
    for seed in range(trials):
        agent = make_der("local", seed=seed, offer="first_epoch", logits="insert")
        agent.before_task(None)
        for epoch in range(2):
            agent.before_epoch(None, epoch)
            for step in range(5):
                x, y = stream(step)
                agent.memory.insert(x, torch.zeros_like(y), torch.zeros(B, CLASSES))
                agent.memory.batches.collect()
        state = slice_of(agent)
        hits[state["samples"].reshape(-1, 4)[:, 0]] += 1
        agent.close()
    assert hits.sum() == trials * 12
    assert inclusion_p_value(hits, 12 / (5 * B)) > 1e-3, hits


@pytest.mark.parametrize("options", ["{'logits': 'insert'}", "{'logits': 'task_end'}",
                                     "{'logits': 'ema', 'gamma': 0.5}", "{'offer': 'first_epoch'}",
                                     "{'offer': 'task_end'}"])
def test_killed_run_resumes_bit_identical(tmp_path, options):
    run = ["--agent", "derpp", "--agent-config", options, "--epochs", "3", "--checkpoint-every", "1",
           "--seed", "3", "--plots", "false", "--tensorboard", "false"]
    check_resumes_bit_identical(run, tmp_path)


@pytest.mark.parametrize("config, message", [
    ("{'logits': 'soon'}", "--agent-config logits='soon' for agent der; valid values: 'insert', 'task_end', 'ema'"),
    ("{'gamma': 1.5}", "--agent-config gamma for agent der is a weight in [0, 1], got 1.5"),
    ("{'offer': 'twice'}", "valid values: 'every_epoch', 'first_epoch', 'task_end'"),
])
def test_bad_logits_options_one_line_exit_2(tmp_path, config, message):
    proc, _ = run_main(["--agent", "der", "--agent-config", config], tmp_path, "bad", check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "bad").exists()
