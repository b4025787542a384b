"""Rehearsal agents as users run them: every agent x buffer, accuracy against the baselines,
seed-compatible variants, provenance of the representatives, and bad options."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO, mpi_env, run_mpi
from trainer_runs import metrics, run_many_in_parallel

BUFFERS = ("native", "native_cat", "python", "local")
FAMILY = ("agem", "si", "pod_er", "cls_er", "super_er")  # issue 12: native on 1 and 2 ranks, others on 1
AGENT_BUFFERS = [(a, b) for a in ("er", "der", "derpp", *FAMILY) for b in BUFFERS]
AGENT_BUFFERS_TWO_RANKS = [(a, b) for a in ("er", "der", "derpp") for b in BUFFERS] + [(a, "native") for a in FAMILY]
ALIASES = ["nil", "nil_local", "nil_cpp", "nil_cpp_cat"]


def matrix_specs(results, name_prefix, extra, pairs):
    specs = []
    for agent, buffer in pairs:
        specs.append(["--agent", agent, "--agent-config", f"{{'buffer': '{buffer}'}}",
                      "--run-name", f"{name_prefix}-{agent}-{buffer}"])
    specs += [["--agent", a, "--run-name", f"{name_prefix}-{a}"] for a in ALIASES]
    specs.append(["--agent", "si", "--run-name", f"{name_prefix}-si-no-buffer"])
    common = ["--epochs", "1", "--results-dir", str(results), "--plots", "false", "--tensorboard", "false", *extra]
    return [json.dumps(s + common) for s in specs]


def check_matrix(results, name_prefix, world_size, pairs):
    names = [f"{name_prefix}-{a}-{b}" for a, b in pairs] + [f"{name_prefix}-{a}" for a in ALIASES]
    for name in names:
        m = metrics(results / name)
        assert m["finished"] and m["world_size"] == world_size, name
        stats = m["task_stats"][-1]
        assert stats["global_filled"] > 0 and len(stats["filled_per_rank"]) == world_size, name
        assert len(stats["filled_per_class_per_rank"][0]) == 10, name
        assert m["timing"]["mean_wait_s"] >= 0.0
    no_buffer = metrics(results / f"{name_prefix}-si-no-buffer")
    assert no_buffer["finished"] and no_buffer["task_stats"][-1] == {"task": 4}  # no buffer counters


def test_every_agent_and_buffer_one_process(tmp_path):
    run_many_in_parallel(matrix_specs(tmp_path, "p1", [], AGENT_BUFFERS))
    check_matrix(tmp_path, "p1", 1, AGENT_BUFFERS)
    assert metrics(tmp_path / "p1-cls_er-native")["evaluated_with"] == "stable model"
    assert metrics(tmp_path / "p1-er-native")["evaluated_with"] == "trained model"


def test_every_agent_and_buffer_two_ranks(tmp_path):
    script = str(REPO / "benchmarks/run_main_many.py")
    specs = matrix_specs(tmp_path, "p2", ["--backend", "torch"], AGENT_BUFFERS_TWO_RANKS)
    run_mpi(2, [sys.executable, script, *specs], timeout=900)
    check_matrix(tmp_path, "p2", 2, AGENT_BUFFERS_TWO_RANKS)
    # SI's importances, previous weights and path integrals: accumulated identically on both ranks
    last = sorted((tmp_path / "p2-si-native/checkpoints").iterdir())[-1]
    ranks = [torch.load(last / f"rank{r}.pt", weights_only=False)["agent"]["si"] for r in (0, 1)]
    for key in ("importance", "anchor", "integral"):
        for name, tensor in ranks[0][key].items():
            assert torch.equal(tensor, ranks[1][key][name]), (key, name)
    assert sum(t.sum().item() for t in ranks[0]["importance"].values()) > 0


@pytest.fixture(scope="module")
def accuracies(tmp_path_factory):
    """Final average accuracy of naive, er (10% buffer), der, derpp and the nil variants,
    default experiment, seed 0, one process."""
    results = tmp_path_factory.mktemp("accuracy")
    runs = {"naive": ["--agent", "base"], "er": ["--agent", "er", "--agent-config", "{'rehearsal_ratio': 10}"],
            "der": ["--agent", "der"], "derpp": ["--agent", "derpp"],
            "nil": ["--agent", "nil"], "nil_cpp": ["--agent", "nil_cpp"], "nil_cpp_cat": ["--agent", "nil_cpp_cat"],
            "agem": ["--agent", "agem"], "si": ["--agent", "si", "--agent-config", "{'buffer': 'native'}"],
            "pod_er": ["--agent", "pod_er"], "cls_er": ["--agent", "cls_er"], "super_er": ["--agent", "super_er"]}
    specs = [json.dumps([*flags, "--run-name", name, "--results-dir", str(results), "--plots", "false",
                         "--tensorboard", "false"]) for name, flags in runs.items()]
    run_many_in_parallel(specs)
    return {name: metrics(results / name)["final_average_accuracy"] for name in runs}


@pytest.mark.parametrize("agent", ["er", "der", "derpp"])
def test_rehearsal_beats_naive_by_40_points(accuracies, agent):
    assert accuracies[agent] >= accuracies["naive"] + 0.40, accuracies


@pytest.mark.parametrize("agent", ["agem", "si", "pod_er", "cls_er", "super_er"])
def test_rehearsal_family_beats_naive_by_30_points(accuracies, agent):
    assert accuracies[agent] >= accuracies["naive"] + 0.30, accuracies


def test_seed_compatible_variants_agree_within_5_points(accuracies):
    values = [accuracies[a] for a in ("nil", "nil_cpp", "nil_cpp_cat")]
    assert max(values) - min(values) <= 0.05, accuracies


@pytest.mark.parametrize("agent", ["nil_cpp", "nil", "nil_local"])
def test_global_sampling_rehearses_the_other_ranks_samples(tmp_path, agent):
    proc = run_mpi(2, [sys.executable, str(REPO / "tests/mpi_jobs/agent_provenance.py"), agent, str(tmp_path)],
                   timeout=300)
    assert proc.stdout.count("inserted only by another rank") == 2


@pytest.mark.parametrize("flags, message", [
    (["--agent", "er", "--agent-config", "{'num_reps': 8}"],
     "unknown --agent-config key 'num_reps' for agent er; valid keys: async, buffer, buffer_size, mix, "
     "num_candidates, num_representatives, offer, policy, rehearsal_ratio, slots_per_class"),
    (["--agent", "er", "--agent-config", "{'mix': 'interleave'}"],
     "--agent-config mix='interleave' for agent er; valid values: 'in_place', 'concat'"),
    (["--agent", "er", "--agent-config", "{'buffer': 'gpu'}"],
     "--agent-config buffer='gpu' for agent er; valid values: 'native', 'native_cat', 'python', 'local'"),
    (["--agent", "der", "--agent-config", "{'alpha': 'high'}"], "alpha for agent der must be float"),
    (["--agent", "nil_cpp", "--agent-config", "{'buffer': 'python'}"], "agent nil_cpp fixes buffer='native'"),
    (["--agent", "er", "--agent-config", "{'rehearsal_ratio': 0}"],
     "--agent-config rehearsal_ratio for agent er is a percentage in (0, 100], got 0"),
])
def test_bad_agent_config_is_one_clear_line(tmp_path, flags, message):
    proc = subprocess.run([sys.executable, "main.py", *flags, "--results-dir", str(tmp_path)], cwd=REPO,
                          env=mpi_env(), capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "osc_ucx" not in line]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and message in lines[0], proc.stderr
