"""Agent options: one rule for their ranges, the same for the same option in every agent, every
option checked before anything starts, and the agent named as the user named it (aliases too)."""
import subprocess
import sys

import pytest

from agents import AGENTS, register
from agents.er import ERAgent
from agents.option_ranges import COUNT, EMA_WEIGHT, LOSS_WEIGHT, PERCENTAGE, POSITIVE, PROBABILITY, SHRINK_FACTOR, STD
from common.errors import UserError
from conftest import REPO, mpi_env

# What each option is, whichever agent has it: loss weights are never negative, probabilities and
# EMA weights in [0, 1], and so on (the probes that found the bugs: cls_er alpha -1 trained with a
# negative loss, super_er took a shrink factor of 2, der/derpp/pod_er took negative weights).
MEANING = {
    "alpha": LOSS_WEIGHT, "beta": LOSS_WEIGHT, "cls_alpha": LOSS_WEIGHT, "pod_alpha": LOSS_WEIGHT,
    "gamma": EMA_WEIGHT, "sp_shrink_factor": SHRINK_FACTOR, "sp_sigma": STD, "xi": POSITIVE,
    "rehearsal_ratio": PERCENTAGE, "buffer_size": COUNT, "slots_per_class": COUNT, "num_candidates": COUNT,
    "num_representatives": COUNT,
    **{f"{prefix}{copy}_model_update_{what}": kind for prefix in ("", "cls_") for copy in ("plastic", "stable")
       for what, kind in (("weight", EMA_WEIGHT), ("probability", PROBABILITY))},
}
RANGED = [(name, key) for name, (cls, fixed) in sorted(AGENTS.items()) for key in cls.defaults
          if key in MEANING and key not in fixed]


def edges(kind):
    """(values just outside `kind`, values on its edges inside it)."""
    step = 1 if kind.integer else 1e-3
    outside = [kind.low if kind.low_open else kind.low - step]
    inside = [kind.low + step if kind.low_open else kind.low]
    if kind.high is not None:
        outside.append(kind.high + step)
        inside.append(kind.high)
    if kind.integer:
        outside.append(kind.low + 0.5)
    return outside, inside


def check(name, options):
    cls, fixed = AGENTS[name]
    return cls.check_options({**options, **fixed})


def test_every_option_of_every_agent_has_a_range_or_choices_and_the_same_meaning_everywhere():
    for name, (cls, _) in AGENTS.items():
        for key in cls.defaults:
            assert key in cls.ranges or key in cls.choices, (name, key)
            assert cls.ranges.get(key) == MEANING.get(key), (name, key)  # numbers: the meaning's range


@pytest.mark.parametrize("name, key", RANGED, ids=[f"{n}-{k}" for n, k in RANGED])
def test_a_value_just_outside_the_range_is_refused_and_its_edge_accepted(name, key):
    kind = MEANING[key]
    outside, inside = edges(kind)
    for value in outside:
        with pytest.raises(UserError) as refused:
            check(name, {key: value})
        assert str(refused.value) == f"--agent-config {key} for agent {name} is {kind}, got {value!r}"
    for value in inside:
        assert check(name, {key: value})[key] == value


def test_flags_are_true_or_false_not_numbers():
    with pytest.raises(UserError, match=r"normalize=1 for agent pod_er; valid values: True, False"):
        check("pod_er", {"normalize": 1})
    with pytest.raises(UserError, match=r"reset_state_dict=0 for agent base; valid values: True, False"):
        check("base", {"reset_state_dict": 0})


def test_an_option_without_a_range_cannot_be_registered():
    class WithTemperature(ERAgent):
        defaults = {**ERAgent.defaults, "temperature": 2.0}

    with pytest.raises(TypeError, match="temperature"):
        register("test_unranged")(WithTemperature)
    assert "test_unranged" not in AGENTS


@pytest.mark.parametrize("alias", ["nil", "nil_local", "nil_cpp", "nil_cpp_cat"])
def test_an_alias_is_named_as_the_user_named_it(alias):
    for options, said in (({"num_reps": 8}, f"unknown --agent-config key 'num_reps' for agent {alias};"),
                          ({"offer": "twice"}, f"--agent-config offer='twice' for agent {alias}; valid values"),
                          ({"num_representatives": 0}, f"num_representatives for agent {alias} is a whole number")):
        with pytest.raises(UserError) as refused:
            check(alias, options)
        assert said in str(refused.value) and "agent er" not in str(refused.value)
    cls, fixed = AGENTS[alias]
    assert cls.name == alias and issubclass(cls, ERAgent) and cls.alias_of == "er"
    assert AGENTS["er"][0] is ERAgent and ERAgent.name == "er"


@pytest.mark.parametrize("agent, config, message", [
    ("derpp", "{'beta': -5}", "main.py: error: --agent-config beta for agent derpp is a loss weight (>= 0), got -5"),
    ("nil_cpp", "{'num_representatives': 0}",
     "main.py: error: --agent-config num_representatives for agent nil_cpp is a whole number (>= 1), got 0"),
])
def test_out_of_range_from_the_command_line_is_one_line_exit_2_nothing_written(tmp_path, agent, config, message):
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "main.py", "--agent", agent, "--agent-config", config,
                           "--results-dir", str(results)], cwd=REPO, env=mpi_env(), capture_output=True,
                          text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and lines == [message], proc.stderr
    assert not results.exists()
