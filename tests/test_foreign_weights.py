"""`wartune evaluate --weights`: a checkpoint that plain PyTorch wrote (wrapped, `module.`-prefixed,
or safetensors) scores exactly as wartune's own folder of the same weights; one that does not
fit the network named is refused in one line."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file

from tests.test_cli import _run
from wartune.engine.config import TrainConfig
from wartune.engine.trainer import Trainer, best_model_meta
from wartune.results.model_files import save_model_files


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """An MLP trained enough that the attacks have something to take (≈ 87 % natural, 30 % robust
    here), saved as a search saves it; the evaluation PGD is the dataset's default."""
    trainer = Trainer(TrainConfig(model="mlp-64", lam=1.0, epochs=4, attack={"steps": 3}, eval={"max_examples": 60}), digits)
    trainer.fit()
    folder = tmp_path_factory.mktemp("model")
    save_model_files(trainer.best_state, best_model_meta(trainer), folder)
    return trainer, folder


def _figures(out_folder, file: str) -> list[tuple]:
    rows = pq.read_table(out_folder / file).to_pylist()
    return [(r["attack"], r["nat_acc"], r["rob_acc"], r["stability"], r["examples"], r["eps"], r["pgd_steps"], r["budget"])
            for r in rows]  # fmt: skip


@pytest.mark.parametrize("form", ["wrapped torch.save", "safetensors"])
def test_weights_written_by_plain_pytorch_score_as_wartunes_own_folder(trained, tmp_path, capsys, form):
    trainer, folder = trained
    state = {k: v.clone() for k, v in trainer.best_state.items()}
    if form == "safetensors":
        weights = tmp_path / "net.safetensors"
        save_file(state, str(weights))
    else:  # as a DataParallel training script saves it: wrapped, every key `module.`-prefixed
        weights = tmp_path / "net.pt"
        torch.save({"epoch": 4, "state_dict": {f"module.{k}": v for k, v in state.items()}, "optimizer": {}}, weights)
    attacks = ["--attacks", "pgd20,cw", "--seed", "7", "--max-examples", "120"]
    code, out, err = _run(["evaluate", "--weights", str(weights), "--model", "mlp-64", "--dataset", "digits", *attacks,
                           "--robustbench-json", str(tmp_path / "entry.json")], capsys)  # fmt: skip
    assert code == 0, err
    code, _, err = _run(["evaluate", str(folder), *attacks, "--robustbench-json", str(tmp_path / "own.json")], capsys)
    assert code == 0, err
    theirs, ours = _figures(tmp_path, weights.name + ".evaluation.parquet"), _figures(folder, "evaluation.parquet")[-3:]
    assert theirs == ours and len(theirs) == 3  # pgd20, cw, autoattack: the same figures, to the bit
    assert 0 < theirs[0][3] < 1 and theirs[0][2] < theirs[0][1]  # attacks that took something: the figures mean something
    assert "attack 3 of 3: autoattack: robust" in out  # each attack said as it ends
    # each attack's budget, stored with its figure and shown: digits' ε 0.2, PGD-20 at step 0.05
    assert [row[-1] for row in theirs] == [
        "L∞ ε 0.2: PGD on cross-entropy, 20 steps of 0.05, a random start",
        "L∞ ε 0.2: PGD on the C&W margin, 20 steps of 0.05, a random start",
        "L∞ ε 0.2: standard AutoAttack: APGD-CE, APGD-T and FAB-T (9 targets) at 100 steps, Square at 5,000 queries, 1 restart each",
    ]
    assert "20 steps of 0.05" in out
    entry = json.loads((tmp_path / "entry.json").read_text())
    assert entry["name"].startswith(f"mlp-64 on digits, weights {weights.name}") and entry["reported"] == ""
    assert entry["autoattack_acc"] == json.loads((tmp_path / "own.json").read_text())["autoattack_acc"]
    assert [(a["attack"], a["examples"], a["budget"]) for a in entry["wartune_attacks"]] == [(r[0], r[4], r[-1]) for r in theirs]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "mlp-128", "--dataset", "digits"], "does not fit mlp-128: net.1.weight has shape (64, 64), mlp-128 needs (128, 64)"),
        (["--model", "cnn-8", "--dataset", "digits"], "does not fit cnn-8: "),
        (["--model", "mlp-64"], "--weights needs --model and --dataset"),
        (["--model", "mlp-64", "--dataset", "imagenet"], "--model/--dataset: "),
    ],
)
def test_weights_that_do_not_fit_are_refused_in_one_line(trained, tmp_path, capsys, args, message):
    trainer, _ = trained
    weights = tmp_path / "net.pt"
    torch.save({"model": trainer.best_state}, weights)
    code, out, err = _run(["evaluate", "--weights", str(weights), *args], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err, err


def test_a_pickle_that_needs_more_than_weights_only_is_refused(tmp_path, capsys):
    weights = tmp_path / "net.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": print}, weights)  # a function: not weights-only data
    code, _, err = _run(["evaluate", "--weights", str(weights), "--model", "mlp-64", "--dataset", "digits"], capsys)
    assert code == 2 and "not a torch state_dict readable with weights_only=True" in err and len(err.strip().splitlines()) == 1


def test_a_misfit_names_each_way_the_weights_do_not_fit_and_leaves_out_the_rest():
    # A thinner net's file in a wider one: a key only the thin net has, and a shape that shows the width
    from wartune.results.model_files import StateMisfit

    wide = {"stem.weight": torch.zeros(16, 3), "block.weight": torch.zeros(16, 16), "head.weight": torch.zeros(10, 16)}
    thin = {"stem.weight": torch.zeros(16, 3), "block.weight": torch.zeros(8, 16), "extra.weight": torch.zeros(1)}
    misfit = StateMisfit.of(thin, wide)
    assert misfit.describe("wrn10-1", "key") == (
        "1 key missing (head.weight); 1 key unexpected (extra.weight); block.weight has shape (8, 16), wrn10-1 needs (16, 16)"
    )
    two_missing = StateMisfit.of({"stem.weight": torch.zeros(16, 3)}, wide)
    assert two_missing.describe("m", "tensor") == "2 tensors missing (block.weight, ...)"
    assert not StateMisfit.of(wide, wide) and misfit and two_missing
