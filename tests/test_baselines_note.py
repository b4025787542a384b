"""The end of a default-experiment run quotes the README's naive and joint baselines."""
import json

from trainer import config
from trainer.baselines import TABLE, comparison


def test_default_experiment_is_placed_between_naive_and_joint():
    bench = json.loads(TABLE.read_text())["methods"]
    naive, joint = bench["naive"]["final_average_accuracy_mean"], bench["joint"]["final_average_accuracy_mean"]
    cfg = {**config.defaults(), "agent": "nil_cpp"}
    lines = comparison(cfg, (naive + joint) / 2)
    assert len(lines) == 2
    assert f"naive fine-tuning {100 * naive:.1f}%" in lines[0] and f"joint retraining {100 * joint:.1f}%" in lines[0]
    assert "this run (nil_cpp)" in lines[1] and "50% of the way from naive to joint" in lines[1]


def test_other_experiments_and_a_missing_table_say_nothing(tmp_path):
    cfg = config.defaults()
    assert comparison({**cfg, "epochs": 3}, 0.9) == []
    assert comparison({**cfg, "dataset": "cifar10"}, 0.9) == []
    assert comparison(cfg, 0.9, tmp_path / "missing.json") == []
