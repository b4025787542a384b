"""scripts/hpo.py and its journal: a damaged journal is refused in one line naming the line, and
left as it is; --repair drops the damaged end (keeping a copy and moving aside the trial folders
it no longer knows) once no worker runs. In process; no trial runs."""
import json
import os

import pytest

from hpo_scripts import load_hpo, write_space

LR = {"lr": {"type": "loguniform", "low": 0.01, "high": 0.1}}


@pytest.fixture
def hpo():
    return load_hpo()


def argv(tmp_path, *more):
    space = write_space(tmp_path / "space.yaml", LR)
    return ["--space", str(space), "--study-dir", str(tmp_path / "study"), "--n-trials", "1", "--seed", "0", *more,
            "--", "--agent", "nil_cpp", "--epochs", "1"]


def journal_lines(tmp_path) -> list[bytes]:
    return (tmp_path / "study" / "journal.log").read_bytes().splitlines(keepends=True)


DAMAGE = {  # what a line became -> the reason given
    "cut short": (b'{"op_code":4,"worker_id":"x","study_id":0,"datetime_st', "a record cut short"),
    "not json": (b'{"op_code":4,"worker_id":"x",,}\n', "not a JSON record"),
    "not utf-8": (b'{"op_code":5,"worker_id":"\xff\xfe"}\n', "not UTF-8 text"),
    "unknown operation": (b'{"op_code":99,"worker_id":"x"}\n', "an unknown operation (op_code 99)"),
    "missing field": (b'{"op_code":4,"worker_id":"x"}\n', "a record Optuna cannot apply (KeyError: 'study_id')"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_journal_is_one_line_naming_the_line(hpo, tmp_path, capsys, case):
    hpo.prepare(argv(tmp_path))
    journal = tmp_path / "study" / "journal.log"
    damaged = journal.read_bytes() + DAMAGE[case][0]
    journal.write_bytes(damaged)
    line = len(journal_lines(tmp_path))
    capsys.readouterr()
    assert hpo.main(argv(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("hpo.py: error: ") and err.count("\n") == 1, err
    assert f"journal {journal} is damaged at line {line} of {line} ({DAMAGE[case][1]}" in err, err
    assert "run again with --repair" in err
    assert journal.read_bytes() == damaged  # refused, untouched


def test_repair_drops_the_damaged_end_keeps_a_copy_and_moves_unknown_trials_aside(hpo, tmp_path, capsys):
    study = tmp_path / "study"
    hpo.prepare(argv(tmp_path))
    good = journal_lines(tmp_path)
    second = hpo.prepare(argv(tmp_path))
    trial = second.next_trial()  # trial 0, as if its worker were running it
    (study / "trials" / "0").mkdir()
    hpo.hpo_study.write_record(study / "trials" / "0", "study", second.uid, 0, trial.params)
    lines = journal_lines(tmp_path)
    damaged = b"".join([*good, b"\x00garbage\n", *lines[len(good):]])  # a bad line before trial 0's records
    (study / "journal.log").write_bytes(damaged)
    capsys.readouterr()

    assert hpo.main(argv(tmp_path, "--repair")) == 2  # trial 0's worker (this process) is alive
    assert "--repair needs every worker of the study stopped; still running: trial 0 (pid " in capsys.readouterr().err
    assert (study / "journal.log").read_bytes() == damaged

    os.unlink(study / "heartbeats" / "0.json")  # its worker has stopped
    worker = hpo.prepare(argv(tmp_path, "--repair"))
    out = capsys.readouterr().out
    first, total = len(good) + 1, len(lines) + 1
    assert f"dropped lines {first}-{total} of {total} (line {first}: not a JSON record)" in out, out
    backups = list(study.glob("journal.log.damaged-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == damaged
    assert (study / "journal.log").read_bytes().startswith(b"".join(good))
    assert "moved 1 trial folder(s) the journal does not know (0)" in out
    assert json.loads(next(study.glob("unmatched-*/0/hpo_trial.json")).read_text())["number"] == 0
    assert worker.study.trials == [] and worker.number == 1  # the first worker's record was kept
    hpo.prepare(argv(tmp_path))  # and the repaired journal opens as it is
