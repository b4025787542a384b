"""Checkpoints know whose they are: a shared.pt or rank file copied in from another run, or from
another checkpoint of the same run, is refused by name and the previous checkpoint is used;
a run never ends `finished` with an accuracy matrix short of its tasks."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from trainer_runs import metrics, run_main

RUN = ["--agent", "nil_cpp", "--epochs", "1", "--plots", "false", "--tensorboard", "false",
       "--agent-config", "{'buffer_size': 40}"]


def interrupted(run):
    """The run as a job killed after its last checkpoint but before it marked itself finished."""
    status = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**status, "status": "running"}))
    return status["run_id"]


def two_runs(tmp_path, ranks):
    """Two finished runs of 5 tasks (checkpoints t003 and t004 kept), the second with another seed."""
    _, ours = run_main(RUN, tmp_path, "ours", ranks=ranks)
    _, theirs = run_main([*RUN, "--seed", "1"], tmp_path, "theirs", ranks=ranks)
    return ours, theirs


@pytest.fixture(scope="module")
def one_rank_runs(tmp_path_factory):
    return two_runs(tmp_path_factory.mktemp("runs"), ranks=1)


def copied(run, tmp_path):
    return Path(shutil.copytree(run, tmp_path / run.name))


def test_a_foreign_shared_pt_is_refused_by_name_and_the_previous_checkpoint_used(tmp_path, one_rank_runs):
    ours, theirs = copied(one_rank_runs[0], tmp_path), one_rank_runs[1]
    their_id = json.loads((theirs / "run.json").read_text())["run_id"]
    our_id = interrupted(ours)
    newest = ours / "checkpoints/t004-e0001"
    shutil.copy(theirs / "checkpoints/t003-e0001/shared.pt", newest / "shared.pt")
    proc, _ = run_main(["--resume", str(ours), "--plots", "false"], tmp_path, "unused")
    log = (ours / "log_rank0.txt").read_text()
    assert (f"shared.pt belongs to run {their_id} / checkpoint t003-e0001 / 1 rank(s), not to run {our_id} / "
            f"checkpoint t004-e0001") in log, log[-3000:]
    assert "continuing at task 5, epoch 1" in log  # from t003-e0001, ours: task 5 trained again
    final = metrics(ours)
    assert final["finished"] and len(final["accuracy_matrix"]) == 5


def test_foreign_and_stale_rank_files_are_refused_on_two_ranks(tmp_path):
    ours, theirs = two_runs(tmp_path, ranks=2)
    interrupted(ours)
    newest, older = ours / "checkpoints/t004-e0001", ours / "checkpoints/t003-e0001"
    shutil.copy(older / "rank1.pt", ours / "saved_rank1.pt")
    shutil.copy(theirs / "checkpoints/t004-e0001/rank1.pt", newest / "rank1.pt")  # another run's
    shutil.copy(ours / "checkpoints/t004-e0001/rank0.pt", older / "rank1.pt")     # a stale rank's
    proc, _ = run_main(["--resume", str(ours)], tmp_path, "unused", ranks=2, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("main.py: error:")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert "rank1.pt belongs to run " in lines[0] and "/ checkpoint t004-e0001 / rank 1 of 2, not to run" in lines[0]
    assert "rank1.pt belongs to run " in lines[0] and "checkpoint t004-e0001 / rank 0 of 2, not to run" in lines[0]
    assert "no usable checkpoint" in lines[0]
    assert metrics(ours)["status"] == "finished"  # a refused resume rewrote nothing
    shutil.copy(ours / "saved_rank1.pt", older / "rank1.pt")  # its own file back: t003 is usable again
    run_main(["--resume", str(ours)], tmp_path, "unused", ranks=2)
    assert metrics(ours)["finished"] and len(metrics(ours)["accuracy_matrix"]) == 5


def test_a_checkpoint_from_an_older_version_carries_no_identity(tmp_path, one_rank_runs):
    ours = copied(one_rank_runs[1], tmp_path)
    interrupted(ours)
    for folder in (ours / "checkpoints").iterdir():
        state = torch.load(folder / "shared.pt", weights_only=False)
        del state["identity"]
        torch.save(state, folder / "shared.pt")
    proc, _ = run_main(["--resume", str(ours)], tmp_path, "unused", check=False)
    assert proc.returncode == 2 and "carries no identity" in proc.stderr.strip().splitlines()[-1]
