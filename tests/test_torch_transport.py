"""Global rehearsal over torch.distributed (buffers/torch_global.py, the 'torch' kind) and
main.py under torchrun with a global buffer.

In this process: a one-rank gloo group, the buffer contract (test_buffer_contract.py's checks,
run for 'torch'), the same draws and state as PythonGlobalBuffer, the same errors. Then real
2-rank jobs: tests/mpi_jobs/torch_global_checks.py under torchrun (and under mpirun, for the
same draws as PythonGlobalBuffer), and main.py under torchrun (provenance of the
representatives, accuracy against the same run under mpirun)."""
import inspect
import itertools
import json
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import test_buffer_contract as contract
from buffer_patterns import check, make_samples, outputs
from buffers import ALL_KINDS, KINDS, TRANSPORT_KINDS, RehearsalBuffer, make_buffer
from conftest import REPO, mpi_env, run_mpi
from conftest import run_torchrun as torchrun
from trainer_runs import metrics

torch = pytest.importorskip("torch")
dist = torch.distributed
JOBS = REPO / "tests" / "mpi_jobs"


@pytest.fixture(scope="module", autouse=True)
def one_rank_group():
    """A one-rank gloo job in this process (file rendezvous), left as it was found."""
    if dist.is_initialized():
        yield
        return
    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()


# ------------------------------------------------------------------ kinds

def test_torch_is_a_transport_kind_outside_the_contract_kinds():
    assert "torch" in ALL_KINDS and "torch" in TRANSPORT_KINDS and "torch" not in KINDS
    with pytest.raises(ValueError, match="valid kinds: native, python, local, torch"):
        make_buffer("nil", sample_shape=(2,), capacity=4)


def test_without_torch_distributed_the_torch_kind_says_what_it_needs():
    code = ("from buffers import make_buffer\n"
            "make_buffer('torch', sample_shape=(2,), capacity=4)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=mpi_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    assert "RuntimeError: the torch.distributed buffer needs torch.distributed initialised" in proc.stderr


# ------------------------------------------------------------------ the contract, one rank

def contract_cases():
    """(test name, kwargs) for every check of test_buffer_contract.py that takes a kind, with
    its other parametrisations expanded; the kind is 'torch'."""
    for name, fn in vars(contract).items():
        if not name.startswith("test_") or "kind" not in inspect.signature(fn).parameters:
            continue
        grids = []
        for mark in getattr(fn, "pytestmark", []):
            if mark.name != "parametrize" or mark.args[0] == "kind":
                continue
            names = [n.strip() for n in mark.args[0].split(",")]
            grids.append([dict(zip(names, v if len(names) > 1 else (v,))) for v in mark.args[1]])
        for combo in itertools.product(*grids):
            kwargs = {k: v for part in combo for k, v in part.items()}
            yield pytest.param(name, kwargs, id=f"{name}-{'-'.join(map(str, kwargs.values()))}".rstrip("-"))


@pytest.mark.parametrize("name, kwargs", list(contract_cases()))
def test_contract_holds_for_the_torch_kind(name, kwargs):
    getattr(contract, name)(kind="torch", **kwargs)


def test_same_surface_and_state_keys_as_the_python_kind():
    a, b = (make_buffer(kind, num_classes=3, slots_per_class=4, sample_shape=(2, 3), num_extras=1)
            for kind in ("python", "torch"))
    assert isinstance(b, RehearsalBuffer)
    public = {kind: {m for m in dir(buf) if not m.startswith("_")} for kind, buf in (("python", a), ("torch", b))}
    assert public["python"] <= public["torch"], public["python"] - public["torch"]
    assert set(a.state()) == set(b.state()) and set(a.stats()) == set(b.stats())
    assert (b.rank, b.world_size) == (0, 1)
    a.close()
    b.close()


# ------------------------------------------------------------------ the same draws as PythonGlobalBuffer

@pytest.mark.parametrize("policy", ["fixed", "adaptive"])
@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32"])
def test_same_seed_same_draws_as_the_python_kind(policy, dtype):
    layout = dict(num_classes=3, slots_per_class=4) if policy == "fixed" else dict(capacity=12)
    bufs = [make_buffer(kind, sample_shape=(2, 3), dtype=dtype, num_extras=2, seed=5, **layout)
            for kind in ("python", "torch")]
    for step in range(5):
        labels = np.random.default_rng(step).integers(0, 3, size=11)
        x, y, e, _ = make_samples(0, labels, 11 * step, (2, 3), dtype, 2)
        taken = [buf.add(x, y, e) for buf in bufs]
        assert np.array_equal(*taken)
        got = []
        for buf in bufs:
            ox, oy, oe = outputs(buf, 9)
            where = np.full((9, 2), -1, np.int64)
            n = buf.sample(7, ox, oy, oe, where)
            for i in range(n):
                check(ox[i], oy[i], oe[i], 2)
            got.append((n, ox, oy, oe, where))
        for mine, theirs in zip(*got):
            assert np.array_equal(mine, theirs)
    python, torch_kind = bufs
    assert python.stats() | {"last_draw_seconds": 0} == torch_kind.stats() | {"last_draw_seconds": 0}
    # A python state continues identically in the torch buffer (and its own state round-trips).
    other = make_buffer("torch", sample_shape=(2, 3), dtype=dtype, num_extras=2, seed=9, **layout)
    other.load_state(python.state())
    again = make_buffer("torch", sample_shape=(2, 3), dtype=dtype, num_extras=2, seed=9, **layout)
    again.load_state(torch_kind.state())
    draws = []
    for buf in (python, other, again):
        ox, oy, oe = outputs(buf, 6)
        buf.sample(6, ox, oy, oe)
        draws.append((ox, oy, oe))
    for a, b in itertools.combinations(draws, 2):
        assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert torch_kind.state()["kind"] == "buffers.TorchGlobalBuffer/1"
    for buf in (*bufs, other, again):
        buf.close()


def test_the_torch_state_does_not_load_into_the_python_kind():
    state = make_buffer("torch", sample_shape=(2,), capacity=4).state()
    with pytest.raises(ValueError, match="state is of kind 'buffers.TorchGlobalBuffer/1'"):
        make_buffer("python", sample_shape=(2,), capacity=4).load_state(state)


@pytest.mark.parametrize("kwargs", [dict(num_classes=0), dict(seed=-1), dict(dtype="int16"), dict(capacity=5)])
def test_bad_arguments_same_message_as_the_python_kind(kwargs):
    args = {**dict(num_classes=3, slots_per_class=4, sample_shape=(2, 3)), **kwargs}
    messages = []
    for kind in ("python", "torch"):
        with pytest.raises(ValueError) as caught:
            make_buffer(kind, **args)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]


# ------------------------------------------------------------------ two ranks

def test_two_ranks_under_torchrun_and_the_same_draws_as_python_under_mpirun(tmp_path):
    proc = torchrun(2, [JOBS / "torch_global_checks.py", tmp_path], timeout=180)
    for name in ("representatives", "uniform over ranks", "state and mismatch"):
        assert f"ok {name}" in proc.stdout, proc.stdout
    assert "all ok" in proc.stdout
    run_mpi(2, [sys.executable, str(JOBS / "torch_global_checks.py"), str(tmp_path)], timeout=120)
    for rank in range(2):
        python, torch_kind = (np.load(tmp_path / f"draws_{kind}_rank{rank}.npz") for kind in ("python", "torch"))
        assert sorted(python.files) == sorted(torch_kind.files) and len(python.files) == 48
        for key in python.files:
            assert np.array_equal(python[key], torch_kind[key]), (rank, key)
        owners = np.concatenate([python[k][:, 0] for k in python.files if k.endswith("_where")])
        assert set(owners.tolist()) == {0, 1}


@pytest.mark.parametrize("agent", ["er", "derpp"])
def test_torchrun_trains_with_global_sampling_from_the_other_rank(tmp_path, agent):
    torchrun(2, [JOBS / "torch_provenance.py", agent, tmp_path, "run"], timeout=240)
    seen = [json.loads((tmp_path / f"run-provenance-rank{r}.json").read_text()) for r in range(2)]
    inserted = [set(s["inserted"]) for s in seen]
    for rank, s in enumerate(seen):
        assert s["buffer"] == "TorchGlobalBuffer", s["buffer"]
        drawn = s["drawn"]
        assert drawn, f"rank {rank} drew no representatives"
        unknown = [d for d in drawn if d not in inserted[0] | inserted[1]]
        assert not unknown, f"rank {rank}: {len(unknown)} representatives were never inserted"
        from_other = sum(d in inserted[1 - rank] - inserted[rank] for d in drawn)
        assert from_other > 0.25 * len(drawn), f"rank {rank}: {from_other} of {len(drawn)} from the other rank"
    m = metrics(tmp_path / "run")
    assert m["finished"] and m["world_size"] == 2 and m["launcher"] == "torchrun" and m["engine"] == "torch"
    stats = m["task_stats"][-1]
    assert stats["global_filled"] > 0 and stats["bytes_read_remote"] > 0
    log = (tmp_path / "run" / "log_rank0.txt").read_text()
    assert log.count("the representatives travel over torch.distributed (gloo collectives)") == 1


@pytest.mark.parametrize("agent", ["er", "derpp"])
def test_torchrun_accuracy_within_5_points_of_mpirun(tmp_path, agent):
    """The default experiment (one epoch is too few steps: two valid draw sequences differ by
    15 points there), under torchrun (the 'torch' kind) and mpirun (the native buffer)."""
    flags = ["main.py", "--agent", agent, "--backend", "torch", "--results-dir", tmp_path, "--plots", "false",
             "--tensorboard", "false"]
    torchrun(2, [*flags, "--run-name", "torchrun"], timeout=240)
    run_mpi(2, [sys.executable, *map(str, flags), "--run-name", "mpirun"], timeout=240)
    accuracy = {name: metrics(tmp_path / name)["final_average_accuracy"] for name in ("torchrun", "mpirun")}
    print(agent, accuracy)
    assert abs(accuracy["torchrun"] - accuracy["mpirun"]) <= 0.05, accuracy
