"""`wartune evaluate --robustbench-json`: a model-zoo entry in RobustBench's fields, whose
accuracies are the evaluation table's AutoAttack row."""

import json

import pyarrow.parquet as pq
import pytest

from tests.test_cli import _run
from wartune.engine.config import TrainConfig
from wartune.engine.trainer import Trainer, best_model_meta
from wartune.results.model_files import save_model_files
from wartune.results.robustbench import architecture, eps_field

# The keys of RobustBench's model_info/<dataset>/Linf/<name>.json entries.
ROBUSTBENCH_FIELDS = {
    "link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
    "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "footnote",
}  # fmt: skip


@pytest.mark.parametrize(
    "model,expected",
    [("wrn34-10", "WideResNet-34-10"), ("wrn10-0.5", "WideResNet-10-0.5"), ("cnn-4", "CNN-4"),
     ("densenet40-bc-k12", "DenseNet-BC-40 (k=12)"), ("mlp-256", "MLP-256")],
)  # fmt: skip
def test_architecture_is_spelled_as_robustbench_does(model, expected):
    assert architecture(model) == expected


@pytest.mark.parametrize("eps,expected", [(8 / 255, "8/255"), (2 / 255, "2/255"), (0.2, "51/255"), (0.031, 0.031), (0.3001, 0.3001)])
def test_eps_is_k_over_255_when_it_is_one(eps, expected):
    assert eps_field(eps) == expected


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, digits):
    """A cnn-4 trained one epoch on digits, saved as a search saves its best model."""
    trainer = Trainer(TrainConfig(model="cnn-4", lam=6.0, epochs=1, attack={"steps": 3}, eval={"steps": 3, "max_examples": 40}), digits)
    trainer.fit()
    folder = tmp_path_factory.mktemp("tiny_model")
    save_model_files(trainer.best_state, best_model_meta(trainer), folder)
    return folder


def test_evaluate_writes_a_robustbench_entry_with_autoattack_added(tiny_model, tmp_path, capsys):
    path = tmp_path / "entry" / "wartune_cnn4.json"
    argv = ["evaluate", str(tiny_model), "--attacks", "pgd20", "--max-examples", "40", "--robustbench-json", str(path)]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    assert "autoattack added" in out
    table = {row["attack"]: row for row in pq.read_table(tiny_model / "evaluation.parquet").to_pylist()}
    assert list(table) == ["pgd20", "autoattack"]
    aa = table["autoattack"]
    entry = json.loads(path.read_text())
    assert ROBUSTBENCH_FIELDS <= set(entry)
    assert entry["clean_acc"] == f"{100 * aa['nat_acc']:.2f}" and entry["autoattack_acc"] == f"{100 * aa['rob_acc']:.2f}"
    assert f"{entry['clean_acc']} " in out and f"{entry['autoattack_acc']} " in out  # as the printed table shows them
    assert (entry["architecture"], entry["dataset"], entry["eps"], entry["threat_model"]) == ("CNN-4", "digits", "51/255", "Linf")
    assert entry["additional_data"] is False and entry["number_forward_passes"] == 1
    meta = json.loads((tiny_model / "model.json").read_text())
    # reported: the best epoch's PGD figure on the validation split (model.json's), and said so
    assert entry["reported"] == f"{100 * meta['val_rob_acc']:.2f}" and "rob_acc" not in meta
    assert "validation split" in entry["footnote"] and f"on {aa['examples']} test examples" in entry["footnote"]
