"""A-GEM, SI, POD-ER, CLS-ER and Super-ER: each one's distinctive mechanism checked directly (agents
driven in-process as the task loop drives them), exact resume after a kill, and bad options."""
import json

import numpy as np
import pytest
import torch

from agents import make_agent
from agents.agem import project
from agents.agent import AgentContext
from agents.consistency import ConsistencyTeachers
from agents.pod import DISTILLATION_TYPES, PreviousModelDistiller, pod_loss
from agents.super_er import shrink_perturb
from common.errors import UserError
from conftest import OneRank
from models import build_model
from trainer_runs import check_resumes_bit_identical, metrics, run_main, run_many_in_parallel

B, CLASSES, SHAPE = 8, 4, (1, 8, 8)


def make(name, seed=0, **options):
    torch.manual_seed(seed)
    model = build_model("mnistnet", CLASSES, SHAPE, {"hidden": 16})
    ctx = AgentContext(model=model, module=model, engine=OneRank(), device=torch.device("cpu"),
                       preprocess=lambda x: x.float() / 255.0, num_classes=CLASSES, sample_shape=SHAPE,
                       train_size=400, batch_size=B, seed=seed, reset_model=None)
    ctx.optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    agent = make_agent(name, ctx, {"buffer_size": 40, "num_representatives": 6, **options})
    agent.before_training()
    return agent


def batches(steps, classes, seed=0):
    """Random uint8 images whose mean brightness depends on the class (a learnable toy task)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        y = torch.tensor(classes)[torch.randint(len(classes), (B,), generator=g)]
        x = (torch.rand((B, *SHAPE), generator=g) * 60 + y.view(-1, 1, 1, 1) * 50).to(torch.uint8)
        yield x, y


def train_task(agent, index, classes, steps=20):
    task = type("Task", (), {"index": index})()
    agent.before_task(task)
    agent.before_epoch(task, 0)
    for x, y in batches(steps, classes, seed=index):
        agent.train_step(x, y)
    agent.after_task(task)


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


# ------------------------------------------------------------------ A-GEM
def test_projection_never_conflicts_with_the_reference():
    g = torch.Generator().manual_seed(0)
    conflicts = 0
    for _ in range(200):
        grad, ref = torch.randn(50, generator=g), torch.randn(50, generator=g)
        out = project(grad, ref)
        assert torch.dot(out, ref) >= -1e-5
        if torch.dot(grad, ref) >= 0:
            assert out is grad  # no conflict: untouched
        else:
            conflicts += 1
            assert torch.dot(out, ref).abs() < 1e-4  # projected onto the boundary
    assert conflicts > 50


def test_agem_steps_on_a_gradient_that_agrees_with_the_representatives():
    """Through the agent: the gradient each step applies has a non-negative dot product with the
    representatives' gradient at the weights the step started from, and some steps needed it."""
    agent = make("agem", offer="every_epoch")  # the guarantee holds whatever the memory holds
    train_task(agent, 0, [0, 1])
    module, params = agent.ctx.module, agent.params
    seen = {}
    next_batch = agent.memory.next_batch

    def spy(x, y):
        seen["weights"] = {k: v.clone() for k, v in module.state_dict().items()}
        wait, seen["batch"] = next_batch(x, y)
        return wait, seen["batch"]

    def gradient_at(weights, x, y):
        copy = build_model("mnistnet", CLASSES, SHAPE, {"hidden": 16})
        copy.load_state_dict(weights)
        loss = torch.nn.functional.cross_entropy(copy(x.float() / 255.0), y)
        return flat(torch.autograd.grad(loss, list(copy.parameters())))

    agent.memory.next_batch = spy
    task = type("Task", (), {"index": 1})()
    agent.before_task(task)
    agent.before_epoch(task, 0)
    conflicts = 0
    for x, y in batches(15, [2, 3], seed=5):
        agent.train_step(x, y)
        batch = seen["batch"]
        b, n = batch.b, batch.n
        assert n > 0
        reference = gradient_at(seen["weights"], batch.x[b:b + n], batch.y[b:b + n])
        new = gradient_at(seen["weights"], batch.x[:b], batch.y[:b])
        stepped = flat([p.grad for p in params])
        conflicts += bool(torch.dot(new, reference) < 0)
        assert torch.dot(stepped, reference) >= -1e-4 * reference.norm() * stepped.norm()
    assert conflicts > 0  # the projection was exercised
    agent.close()


# ------------------------------------------------------------------ SI
def test_si_importances_are_non_negative_and_the_penalty_pulls_to_the_previous_weights():
    agent = make("si")
    assert agent.memory.kind is None  # no buffer by default
    train_task(agent, 0, [0, 1])
    importance = flat(agent.importance.values())
    assert (importance >= 0).all() and importance.sum() > 0
    anchor = flat(agent.anchor.values())
    assert torch.equal(anchor, flat([p.detach() for p in agent.params.values()]))
    assert agent.penalty().item() == 0.0  # at the previous task's weights
    with torch.no_grad():
        for p in agent.params.values():
            p.add_(torch.randn_like(p) * 0.1)
    away = (flat([p.detach() for p in agent.params.values()]) - anchor).norm()
    optimizer = torch.optim.SGD(agent.params.values(), lr=0.01)
    for _ in range(20):
        optimizer.zero_grad()
        agent.penalty().backward()
        optimizer.step()
    after = (flat([p.detach() for p in agent.params.values()]) - anchor).norm()
    assert after < away
    agent.close()


# ------------------------------------------------------------------ POD
@pytest.mark.parametrize("kind", DISTILLATION_TYPES)
@pytest.mark.parametrize("normalize", [True, False])
def test_pod_loss_is_zero_against_itself_and_positive_otherwise(kind, normalize):
    g = torch.Generator().manual_seed(1)
    maps = [torch.rand(5, 3, 4, 4, generator=g), torch.rand(5, 6, 2, 2, generator=g)]
    assert pod_loss(maps, [m.clone() for m in maps], kind, normalize).item() == 0.0
    other = [m + torch.rand(m.shape, generator=g) for m in maps]
    assert pod_loss(maps, other, kind, normalize).item() > 0.0


def test_pod_against_the_model_it_was_copied_from_is_zero():
    model = build_model("mnistnet", CLASSES, SHAPE, {"hidden": 16})
    distiller = PreviousModelDistiller(model, "spatial", True)
    x = torch.rand(6, *SHAPE)
    distiller.forward(model, x)
    assert distiller.loss(x, 2, 6) is None  # no previous task yet
    distiller.end_task(model)
    distiller.forward(model, x)
    assert len(distiller.maps) == 2 and distiller.loss(x, 2, 6).item() == 0.0
    with torch.no_grad():
        model.features[0].weight.add_(0.5)
    distiller.forward(model, x)
    assert distiller.loss(x, 2, 6).item() > 0.0


# ------------------------------------------------------------------ CLS-ER
def test_consistency_teachers_follow_the_ema_rule():
    model = torch.nn.Linear(3, 2)
    teachers = ConsistencyTeachers(model, seed=0, plastic_weight=0.9, plastic_probability=1.0,
                                   stable_weight=0.5, stable_probability=1.0)
    for step in range(1, 6):
        before = {name: flat(getattr(teachers, name).parameters()).clone() for name in ("plastic", "stable")}
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        used = teachers.update(model)
        current = flat(model.parameters()).detach()
        for name, weight in (("plastic", 0.9), ("stable", 0.5)):
            expected_weight = min(1 - 1 / (step + 1), weight)
            assert used[name] == pytest.approx(expected_weight)
            expected = expected_weight * before[name] + (1 - expected_weight) * current
            assert torch.allclose(flat(getattr(teachers, name).parameters()), expected)


def test_consistency_teachers_update_with_their_probabilities():
    model = torch.nn.Linear(3, 2)
    teachers = ConsistencyTeachers(model, seed=1, plastic_weight=0.9, plastic_probability=0.8,
                                   stable_weight=0.9, stable_probability=0.2)
    updates = np.array([[w is not None for w in teachers.update(model).values()] for _ in range(4000)])
    rates = updates.mean(axis=0)
    assert abs(rates[0] - 0.8) < 0.03 and abs(rates[1] - 0.2) < 0.03, rates  # ~5 standard deviations
    never = ConsistencyTeachers(model, seed=1, plastic_weight=0.9, plastic_probability=0.0,
                                stable_weight=0.9, stable_probability=0.0)
    assert all(w is None for _ in range(100) for w in never.update(model).values())


def test_consistency_targets_come_from_the_more_confident_copy():
    model = torch.nn.Linear(2, 2, bias=False)
    teachers = ConsistencyTeachers(model, 0, 0.9, 1.0, 0.9, 1.0)
    with torch.no_grad():
        teachers.plastic.weight.copy_(torch.tensor([[5.0, 0.0], [0.0, 0.0]]))  # confident in class 0 on x=(1,0)
        teachers.stable.weight.copy_(torch.tensor([[0.0, 0.0], [0.0, 5.0]]))   # confident in class 1 on x=(0,1)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    targets = teachers.targets(x, torch.tensor([0, 1]))
    assert torch.equal(targets[0], teachers.plastic(x[:1])[0]) and torch.equal(targets[1], teachers.stable(x[1:])[0])


def test_cls_er_is_evaluated_with_its_stable_model():
    agent = make("cls_er")
    assert agent.eval_module() is agent.teachers.stable and agent.evaluated_with == "stable model"
    agent.close()


# ------------------------------------------------------------------ Super-ER
def losses_of(agent, x, y):
    """The loss terms of one step on (x, y), the buffer already holding representatives."""
    _, batch = agent.memory.next_batch(x, y)
    inputs = agent.ctx.preprocess(batch.x)
    logits = agent.forward(inputs)
    loss, terms = agent.loss(logits, batch, inputs)
    agent.memory.insert(x, y, agent.extras_of(logits[:batch.b]))
    return loss, terms


@pytest.mark.parametrize("weight, term", [("alpha", "mse_loss"), ("beta", "replay_ce_loss"),
                                          ("cls_alpha", "consistency_loss"), ("pod_alpha", "pod_loss")])
def test_super_er_weight_zero_removes_its_term(weight, term):
    full, without = make("super_er"), make("super_er", **{weight: 0.0})
    for agent in (full, without):
        train_task(agent, 0, [0, 1])
    x, y = next(batches(1, [2, 3], seed=9))
    _, terms_full = losses_of(full, x, y)
    _, terms_without = losses_of(without, x, y)
    assert term in terms_full and term not in terms_without
    assert set(terms_full) - set(terms_without) == {term}
    for agent in (full, without):
        agent.close()


def test_shrink_perturb_shrinks_and_perturbs_the_same_way_for_the_same_seed():
    a, b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    b.load_state_dict(a.state_dict())
    before = flat(a.parameters()).detach().clone()
    shrink_perturb(a, 0.5, 0.0, seed=3)
    assert torch.allclose(flat(a.parameters()), before * 0.5)
    shrink_perturb(b, 0.5, 0.01, seed=3)
    c = torch.nn.Linear(4, 4)
    c.load_state_dict(a.state_dict())
    with torch.no_grad():
        for p in c.parameters():
            p.mul_(2.0)
    shrink_perturb(c, 0.5, 0.01, seed=3)
    assert torch.equal(flat(b.parameters()), flat(c.parameters()))  # same seed, same noise
    assert not torch.equal(flat(b.parameters()), before * 0.5)


def test_super_er_with_its_own_terms_off_is_derpp(tmp_path):
    common = ["--epochs", "2", "--lr", "0.05", "--momentum", "0.9", "--plots", "false", "--tensorboard", "false",
              "--results-dir", str(tmp_path)]
    run_many_in_parallel([
        json.dumps(["--agent", "derpp", "--agent-config", "{'alpha': 1.0, 'beta': 1.0}", "--run-name", "derpp",
                    *common]),
        json.dumps(["--agent", "super_er", "--agent-config",
                    "{'cls_alpha': 0.0, 'pod_alpha': 0.0, 'sp_shrink_factor': 1.0, 'sp_sigma': 0.0}",
                    "--run-name", "super_er", *common])])
    assert metrics(tmp_path / "derpp")["accuracy_matrix"] == metrics(tmp_path / "super_er")["accuracy_matrix"]


# ------------------------------------------------------------------ runs
@pytest.mark.parametrize("agent, options", [("agem", "{}"), ("si", "{'buffer': 'native'}"), ("pod_er", "{}"),
                                            ("cls_er", "{}"), ("super_er", "{}")])
def test_killed_run_resumes_bit_identical(tmp_path, agent, options):
    run = ["--agent", agent, "--agent-config", options, "--epochs", "3", "--checkpoint-every", "1",
           "--seed", "3", "--plots", "false", "--tensorboard", "false"]
    check_resumes_bit_identical(run, tmp_path)


BAD_OPTIONS = [
    ("pod_er", {"distillation_type": "pixel"},
     "--agent-config distillation_type='pixel' for agent pod_er; "
     "valid values: 'spatial', 'channel', 'width', 'height', 'gap', 'flat'"),
    ("super_er", {"pod_distillation_type": "pixel"}, "valid values: 'spatial', 'channel'"),
    ("cls_er", {"stable_model_update_probability": 1.5},
     "--agent-config stable_model_update_probability for agent cls_er is a probability in [0, 1], got 1.5"),
    ("super_er", {"cls_plastic_model_update_probability": -0.1}, "is a probability in [0, 1], got -0.1"),
    ("cls_er", {"plastic_model_update_weight": 2.0}, "is a weight in [0, 1], got 2.0"),
    ("si", {"xi": 0}, "--agent-config xi for agent si is a positive number (> 0), got 0"),
    ("si", {"alpha": -1.0}, "--agent-config alpha for agent si is a loss weight (>= 0), got -1.0"),
]


@pytest.mark.parametrize("agent, options, message", BAD_OPTIONS)
def test_bad_options_are_refused_with_the_valid_range(agent, options, message):
    with pytest.raises(UserError) as refused:
        make(agent, **options)
    assert message in str(refused.value)


@pytest.mark.parametrize("agent, options, message", [BAD_OPTIONS[0], BAD_OPTIONS[2], BAD_OPTIONS[5]])
def test_bad_options_one_line_exit_2(tmp_path, agent, options, message):
    proc, _ = run_main(["--agent", agent, "--agent-config", repr(options)], tmp_path, "bad", check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "bad").exists()
