"""The attack suite: every attack stays in the ε-ball, flags obey robust ⇔ correct ∧ stable,
stronger attacks find no fewer adversarial examples, and the CLI writes its table."""

import pyarrow.parquet as pq
import pytest
import torch

from tests.test_cli import _error_line, _run
from wartune.engine.attack_suite import evaluate_attacks
from wartune.engine.attacks import cw_margin
from wartune.engine.trainer import Trainer, best_model_meta
from wartune.results.model_files import save_model_files
from wartune.results.store import EVAL_SCHEMA


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    from wartune.engine.config import TrainConfig

    config = TrainConfig(model="cnn-16", lam=3.0, epochs=3, attack={"steps": 3}, eval={"steps": 3, "max_examples": 60})
    trainer = Trainer(config, digits)
    trainer.fit()
    folder = tmp_path_factory.mktemp("model")
    save_model_files(trainer.best_state, best_model_meta(trainer), folder)
    trainer.model.load_state_dict(trainer.best_state)
    return trainer.model.eval(), folder


def test_cw_margin_by_hand():
    logits = torch.tensor([[2.0, 0.5, 1.0], [0.0, 3.0, -1.0]])
    assert cw_margin(logits, torch.tensor([0, 2])).tolist() == [-1.0, 4.0]


def test_attacks_agree_on_natural_accuracy_and_rank_by_strength(trained, digits):
    model, _ = trained
    results = {r.attack: r for r in evaluate_attacks(model, digits, 0.2, ["pgd20", "cw", "apgd-ce", "fab", "square"], 60)}
    nat = {r.nat_acc for r in results.values()}
    assert len(nat) == 1 and nat.pop() > 0.5
    for r in results.values():
        assert r.n == 60 and r.rob_acc <= min(r.nat_acc, r.stability) + 1e-9
    assert results["pgd20"].rob_acc < results["pgd20"].nat_acc  # the attack finds something


def test_autoattack_is_at_least_as_strong_as_pgd20(trained, digits):
    model, _ = trained
    pgd, aa = evaluate_attacks(model, digits, 0.2, ["pgd20", "autoattack"], 40)
    assert aa.rob_acc <= pgd.rob_acc + 0.05


def test_cli_evaluate_writes_its_table(trained, capsys):
    _, folder = trained
    code, out, err = _run(["evaluate", str(folder), "--attacks", "pgd20,cw", "--max-examples", "50"], capsys)
    assert code == 0, err
    table = pq.read_table(folder / "evaluation.parquet")
    assert table.schema.equals(EVAL_SCHEMA) and table.column("attack").to_pylist() == ["pgd20", "cw"]
    assert "pgd20" in out and "cw" in out


def test_cli_evaluate_refuses_unknown_attacks_and_folders(trained, tmp_path, capsys):
    _, folder = trained
    code, _, err = _run(["evaluate", str(folder), "--attacks", "pgd20,deepfool"], capsys)
    assert "unknown attack(s) deepfool" in _error_line(code, err)
    code, _, err = _run(["evaluate", str(tmp_path)], capsys)
    assert "holds no model.json" in _error_line(code, err)
