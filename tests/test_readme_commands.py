"""Every command the README shows is run as a user types it: in a fresh `bash` with nothing but
the README's set-up done (`. .venv/bin/activate` where the README says so), no PYTHONPATH, no
test helper, from the repository's root. Runs are shrunk only with flags the README itself shows
(`--epochs 1`, `--n-trials N`, `-- --epochs 1`) and pointed at a temporary folder with
`--results-dir`/`--run-name`/`--study-dir`; the README's `results/<run>`-style placeholders get a
real folder. Every command found in the README (its ```bash blocks, and inline `...` spans that
start a program on a script) must be listed in COMMANDS below, run or with the reason it is not
run here (and where it is tested instead), so a command added to the README is never untested
by accident. The one environment variable given is Open MPI's root permission (this machine's CI
runs as root; the README says root needs it).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from conftest import REPO

README = REPO / "README.md"
SHELL_PROGRAMS = r"(?:[A-Z_]+=\S+ )*(?:bash|python|mpirun|torchrun|horovodrun|sbatch|srun|eval|spack) "
ACTIVATE = ". .venv/bin/activate"


@dataclass
class Run:
    """How a documented command is run: `replace` (documented text -> text), then `append`;
    `code` the exit status a user gets here; `check(out, tmp)` what else must hold."""
    append: str = ""
    replace: dict = field(default_factory=dict)
    code: int = 0
    check: object = None
    activate: bool = False  # after `. .venv/bin/activate` (the README's block starts with it)
    reads_others: bool = False  # reads what other commands wrote: run after them


@dataclass
class NotRun:
    why: str  # and where it is tested instead


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def finished(name, launcher=None, world=None, engine=None, tasks=5):
    """The run `name` under the results folder finished all its tasks (on that launcher, ...)."""
    def check(out, tmp):
        found = sorted((tmp / "results").glob(name))
        assert found, f"no run {name} in {tmp / 'results'}:\n{out[-3000:]}"
        m = metrics(found[-1])
        assert m["finished"] and m["status"] == "finished" and m["tasks_done"] == m["num_tasks"] == tasks, m
        for key, want in (("launcher", launcher), ("world_size", world), ("engine", engine)):
            assert want is None or m[key] == want, (key, m[key], want)
    return check


def said(*texts):
    def check(out, tmp):
        for text in texts:
            assert text in out, f"{text!r} not in:\n{out[-3000:]}"
    return check


def study_done(folder, trials):
    def check(out, tmp):
        rows = json.loads((tmp / folder / "trials.json").read_text())
        assert len(rows) == trials and all(r["state"] in ("complete", "pruned") for r in rows), rows
        assert any(r["state"] == "complete" for r in rows), rows
        assert (tmp / folder / "best.yaml").is_file()
    return check


def plots_redrawn(out, tmp):
    assert (tmp / "results/naive/plots/accuracy_matrix.png").stat().st_size > 0


def compared(out, tmp):
    assert (tmp / "results/comparison").is_dir() and any((tmp / "results/comparison").iterdir()), out


EPOCH = "--epochs 1 --plots false --results-dir {tmp}/results"
MPI_EPOCH = "--epochs 1 --results-dir {tmp}/results"
BENCHMARK = NotRun("a measurement of minutes on 2 cores; its numbers are in benchmarks/*.json and the README")
COMMANDS = {
    # --- Two commands
    "bash scripts/setup.sh && bash scripts/launch/mpirun.sh":
        Run(append=MPI_EPOCH + " --run-name main", check=finished("main", "mpi", 2)),
    "bash scripts/run_tests.sh": NotRun("this test suite itself: .ci/run runs it as typed"),
    "WITH_HOROVOD=0 bash scripts/setup.sh": Run(check=said("set-up done")),
    "python main.py": Run(activate=True, append=EPOCH + " --run-name naive", check=finished("naive")),
    # --- Running experiments
    "python main.py --config joint": Run(activate=True, append=EPOCH + " --run-name joint", check=finished("joint")),
    "python main.py --agent nil_cpp --agent-config \"{'rehearsal_ratio': 10, 'num_representatives': 32}\"":
        Run(activate=True, append=EPOCH + " --run-name er", check=finished("er")),
    "python main.py --agent der --tasksets-config \"{'scenario': 'class', 'initial_increment': 4, 'increment': 3}\"":
        Run(activate=True, append=EPOCH + " --run-name der", code=0, check=finished("der", tasks=3)),
    "mpirun -np 2 python main.py --agent super_er --agent-config \"{'pod_alpha': 0.5}\"":
        Run(activate=True, append=EPOCH + " --run-name super_er", check=finished("super_er", "mpi", 2)),
    "python main.py --model resnet18 --dataset cifar10 --dataset-dir /data/cifar --epochs 30 --batch-size 128":
        Run(activate=True, append="--results-dir {tmp}/results", code=2, check=said("main.py: error: ", "/data/cifar")),
    # --- Results
    "python scripts/plot_results.py results/<run>":
        Run(activate=True, replace={"results/<run>": "{tmp}/results/naive"}, check=plots_redrawn, reads_others=True),
    "python scripts/compare_results.py results/naive results/er results/joint --out comparison":
        Run(activate=True, replace={"results/": "{tmp}/results/", "--out comparison": "--out {tmp}/results/comparison"},
            check=compared, reads_others=True),
    # --- Hyperparameter search
    "python scripts/hpo.py --space scripts/hpo_spaces/nil_cpp.yaml --study-dir hpo/nil_cpp --n-trials 20 --seed 0":
        Run(activate=True, replace={"hpo/nil_cpp": "{tmp}/hpo/nil_cpp", "--n-trials 20": "--n-trials 2"},
            append="-- --epochs 1", check=study_done("hpo/nil_cpp", 2)),
    "python scripts/hpo.py --space my_space.yaml --study-dir /scratch/$USER/hpo/s1 --n-trials 40 "
    "--launcher \"mpirun -np 2\" -- --epochs 5 --seed 1":
        Run(activate=True, replace={"my_space.yaml": "{tmp}/my_space.yaml", "/scratch/$USER": "{tmp}",
                                    "--n-trials 40": "--n-trials 1", "--epochs 5": "--epochs 1"},
            check=study_done("hpo/s1", 1)),
    "python main.py --yaml-config <study-dir>/best.yaml --config best":
        Run(activate=True, replace={"<study-dir>": "{tmp}/hpo/nil_cpp"},
            append=EPOCH + " --run-name best", check=finished("best"), reads_others=True),
    "sbatch scripts/launch/hpo_array.sbatch": NotRun("needs Slurm: tests/test_hpo.py runs the script's worker lines"),
    # --- Launchers
    "bash scripts/launch/mpirun.sh [main.py flags]":
        Run(replace={" [main.py flags]": ""}, append=MPI_EPOCH + " --run-name mpirun",
            check=finished("mpirun", "mpi", 2)),
    "NP=4 bash scripts/launch/mpirun.sh --backend torch --agent nil_cpp":
        Run(append=MPI_EPOCH + " --run-name np4", check=finished("np4", "mpi", 4, "torch")),
    "bash scripts/launch/horovodrun.sh [main.py flags]":
        Run(replace={" [main.py flags]": ""}, append=MPI_EPOCH + " --run-name hvd",
            check=finished("hvd", "mpi", 2, "horovod")),
    "bash scripts/launch/torchrun.sh [main.py flags]":
        Run(replace={" [main.py flags]": ""}, append=MPI_EPOCH + " --run-name tr",
            check=finished("tr", "torchrun", 2, "torch")),
    "horovodrun -np $NP python main.py --backend horovod": NotRun("what horovodrun.sh runs (run above)"),
    "torchrun --standalone --nproc-per-node $NP main.py --backend torch": NotRun("what torchrun.sh runs (run above)"),
    "mpirun \"$PYTHON\" main.py ...": NotRun("a replacement line for slurm.sbatch, described in prose"),
    "sbatch scripts/launch/slurm.sbatch [main.py flags]": NotRun("needs Slurm: tests/test_slurm.py submits it"),
    "sbatch -N1 --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-task=0 scripts/launch/slurm.sbatch":
        NotRun("needs Slurm: tests/test_slurm.py submits it with these options"),
    "bash scripts/slurm_local.sh start": NotRun("installs and starts Slurm: tests/test_slurm.py does"),
    "eval \"$(bash scripts/slurm_local.sh env)\"": NotRun("tests/test_slurm.py does"),
    "bash scripts/slurm_local.sh stop": NotRun("tests/test_slurm.py does"),
    "spack env activate . && spack install && pip install --no-build-isolation ./cpp_loader":
        NotRun("needs a Spack with network access; spack.yaml is checked by tests/test_launch_and_plots.py"),
    # --- Your own loop
    "mpirun -np 2 python examples/own_loop.py --method M": NotRun("tests/test_own_loop.py runs it for every M"),
    "torchrun --nproc-per-node 2 examples/own_loop.py --method M": NotRun("tests/test_own_loop.py runs it"),
    "mpirun -np 2 python examples/own_loop.py --method er --horovod": NotRun("tests/test_own_loop.py runs it"),
    # --- Benchmarks
    "python benchmarks/bench_accuracy.py --suite baselines": BENCHMARK,
    "python benchmarks/bench_accuracy.py --suite rehearsal --seeds 0,1,2": BENCHMARK,
    "python benchmarks/bench_buffer.py --ranks 1,2,4": BENCHMARK,
    "python benchmarks/bench_overhead.py --ranks 1,2": BENCHMARK,
    "python benchmarks/bench_scaling.py --ranks 1,2,4": BENCHMARK,
    "python benchmarks/bench_throughput.py": BENCHMARK,
    "python benchmarks/bench_accuracy.py --suite der_logits --seeds 0,1,2 --json benchmarks/accuracy_der_logits.json "
    "-- --epochs 5 --batch-size 32 --momentum 0.9": BENCHMARK,
    "python benchmarks/bench_accuracy.py --suite policy --seeds 0,1,2 --json benchmarks/accuracy_policy.json -- "
    "--epochs 5 --batch-size 32": BENCHMARK,
    "python benchmarks/bench_buffer.py --ranks 1,2 --quick --policy fixed|adaptive": BENCHMARK,
    "python benchmarks/bench_throughput.py --batch-size 16 --reps 2 --steps 2 --warmup-steps 1": BENCHMARK,
}


def documented_commands(text: str) -> list[tuple[str, bool | None]]:
    """(command, after its block's `. .venv/bin/activate`; None: inline in prose) for every command
    of the README, in order."""
    found = []
    for block in re.finditer(r"```bash\n(.*?)```", text, re.S):
        lines = block.group(1).replace("\\\n", " ").splitlines()
        activate = False
        for line in lines:
            command = re.sub(r"\s+#.*$", "", line.split("  #")[0]).strip()
            command = re.sub(r"\s+", " ", command)
            if not command or command.startswith("#"):
                continue
            if command == ACTIVATE:
                activate = True
                continue
            found.append((command, activate))
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.finditer(r"`([^`]+)`", prose):
        command = re.sub(r"\s+", " ", span.group(1)).strip()
        runs_a_script = re.search(r"\.(py|sh|sbatch)\b|main\.py|\$\(", command) or command.startswith("spack ")
        if re.match(SHELL_PROGRAMS, command + " ") and runs_a_script:
            found.append((command, None))  # in prose: the venv is the reader's, as the README's blocks set it
    seen, out = set(), []
    for command, activate in found:
        if command not in seen:
            seen.add(command)
            out.append((command, activate))
    return out


def test_every_readme_command_is_listed_here():
    documented = [c for c, _ in documented_commands(README.read_text())]
    missing = [c for c in documented if c not in COMMANDS]
    stale = [c for c in COMMANDS if c not in documented]
    assert not missing, f"README commands not covered by this test: {missing}"
    assert not stale, f"commands listed here that the README no longer shows: {stale}"


def fresh_env() -> dict:
    env = {"HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8", "USER": os.environ.get("USER", "root"),
           "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


def as_run(command: str, how: Run, tmp: Path) -> str:
    line = command
    for old, new in how.replace.items():
        assert old in line, f"{old!r} is no longer in the README's {command!r}"
        line = line.replace(old, new.format(tmp=tmp))
    if how.append:
        line = f"{line} {how.append.format(tmp=tmp)}"
    return f"{ACTIVATE} && {line}" if how.activate else line


def test_every_readme_command_runs_as_typed(tmp_path):
    text = README.read_text()
    space = re.search(r"```yaml\n(fixed:.*?)```", text, re.S).group(1)  # the README's my_space.yaml
    (tmp_path / "my_space.yaml").write_text(space)
    yaml.safe_load(space)
    runs = []
    for command, activate in documented_commands(text):
        how = COMMANDS[command]
        if isinstance(how, NotRun):
            continue
        if activate is not None:
            assert how.activate == activate, f"{command!r}: the README {'does' if activate else 'does not'} activate"
        runs.append((as_run(command, how, tmp_path), how))

    def attempt(line_and_how) -> str | None:
        line, how = line_and_how
        proc = subprocess.run(["bash", "-c", line], cwd=REPO, env=fresh_env(), capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL)
        out = proc.stdout + proc.stderr
        try:
            assert proc.returncode == how.code, f"exit {proc.returncode}, expected {how.code}:\n{out[-3000:]}"
            if how.check is not None:
                how.check(out, tmp_path)
        except AssertionError as exc:
            return f"{line}\n  -> {exc}"
        return None

    setup = [r for r in runs if "setup.sh" in r[0]]  # reinstalls into .venv: alone, first
    failures = [f for f in map(attempt, setup) if f]
    rest = [r for r in runs if r not in setup]
    with ThreadPoolExecutor(max_workers=2) as pool:  # two at a time: the commands are independent ...
        for wave in ([r for r in rest if not r[1].reads_others], [r for r in rest if r[1].reads_others]):
            failures += [f for f in pool.map(attempt, wave) if f]  # ... but for those reading the others'
    assert not failures, "README commands that do not work as typed:\n" + "\n".join(failures)


@pytest.mark.parametrize("command", ["python main.py", "python scripts/hpo.py --help"])
def test_no_command_needs_pythonpath_or_the_repository_as_working_folder(tmp_path, command):
    """The installed project imports from any folder: scripts need no path tricks."""
    script = command.replace("main.py", str(REPO / "main.py")).replace("scripts/", f"{REPO}/scripts/")
    flags = "" if "--help" in command else " --epochs 1 --plots false --tensorboard false --results-dir r"
    proc = subprocess.run(["bash", "-c", f". {REPO}/.venv/bin/activate && {script}{flags}"], cwd=tmp_path,
                          env=fresh_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
