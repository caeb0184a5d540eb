"""PBT over a stack (`engine/stack_pbt.py`, `tune/stacked_pbt.py`): Ray's synchronous rule on the
members (bottom quantile takes a random top member's state and its λ × 0.8 / × 1.2, or a fresh
draw), the state moved exactly, and a stacked PBT search, killed and resumed, whose rows name
the λ each epoch trained with."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import kill_when, rows_of, write_space
from tests.test_cli import _run
from wartune.engine.config import FixedLambda, TrainConfig
from wartune.engine.stack_pbt import Exploit, PbtRule, apply_exploits, exploits
from wartune.engine.trainer import Trainer

RULE = PbtRule(interval=2, quantile=0.25, resample=0.0, low=0.5, high=12.0, log=True, seed=0)


def test_the_bottom_quantile_takes_a_top_members_lambda_perturbed_at_each_interval_only():
    figures = {0: 0.30, 1: 0.10, 2: 0.50, 3: 0.20, 4: 0.40, 5: 0.05, 6: 0.35, 7: 0.45}
    lambdas = {i: float(i + 1) for i in figures}
    assert exploits(RULE, 3, figures, lambdas) == []  # not an interval's end
    moves = exploits(RULE, 4, figures, lambdas)
    assert [m.member for m in moves] == [5, 1]  # ceil(8 · 0.25) = 2 worst, worst first
    for move in moves:
        assert move.donor in (2, 7)  # the 2 best
        assert move.lam in (pytest.approx(lambdas[move.donor] * 0.8), pytest.approx(lambdas[move.donor] * 1.2))
    assert exploits(RULE, 4, figures, lambdas) == moves  # seeded by the search's seed and the epoch: a resume repeats them
    assert exploits(RULE, 4, {0: 0.1, 1: 0.2, 2: 0.3}, {0: 1.0, 1: 1.0, 2: 12.0})[0].donor == 2  # at most half: one of three
    high = exploits(PbtRule(1, 0.5, 0.0, 0.5, 12.0, True, 1), 1, {0: 0.1, 1: 0.9}, {0: 1.0, 1: 11.5})
    assert high[0].lam in (pytest.approx(9.2), 12.0)  # × 1.2 is clipped to the range's top
    fresh = exploits(PbtRule(1, 0.5, 1.0, 0.5, 12.0, True, 0), 1, {0: 0.1, 1: 0.9}, {0: 1.0, 1: 11.5})
    assert 0.5 <= fresh[0].lam <= 12.0 and fresh[0].lam not in (pytest.approx(9.2), pytest.approx(13.8))  # resampled


def test_an_exploit_moves_the_donors_whole_state_and_gives_the_member_its_new_lambda(digits):
    config = TrainConfig(model="cnn-4", lam=1.0, epochs=2, attack={"steps": 1}, eval={"steps": 1, "max_examples": 20})
    trainers = [Trainer(config.model_copy(update={"lam": FixedLambda(value=lam), "seed": seed}), digits)
                for lam, seed in ((1.0, 0), (6.0, 1))]  # fmt: skip
    for trainer in trainers:
        trainer.run_epoch()
    apply_exploits(trainers, [Exploit(member=0, donor=1, lam=4.8)])
    member, donor = trainers
    assert all(torch.equal(a, b) for a, b in zip(member.model.state_dict().values(), donor.model.state_dict().values(), strict=True))
    assert torch.equal(member.generator.get_state(), donor.generator.get_state())  # its batches from the donor's on
    assert member.history == donor.history and member.controller.value == 4.8 and member.config.lam == FixedLambda(value=4.8)
    assert donor.controller.value == 6.0
    next(member.model.parameters()).data.add_(1.0)  # copies, not shared tensors: the donor is untouched
    assert not torch.equal(next(member.model.parameters()), next(donor.model.parameters()))


@pytest.mark.e2e
def test_a_stacked_pbt_search_killed_and_resumed_exploits_inside_its_stack_and_its_rows_name_each_epochs_lambda(tmp_path, capsys):
    space = write_space(tmp_path, strategy="pbt", model="mlp-64", trials=4, epochs=4, stack=4, pbt={"interval": 1, "resample": 0},
                        **{"lambda": {"low": 0.5, "high": 12, "log": True}}, eval={"steps": 3, "max_examples": 200})  # fmt: skip
    out = tmp_path / "runs"
    # SIGKILL once the stack recorded two epochs (an exploit behind it), then --resume
    kill_when(space, out, lambda trials: len(trials) == 4 and all(t["epochs"] >= 2 for t in trials))
    recorded = rows_of(out / "tiny")
    code, _, err = _run(["search", "--space", str(space), "--out", str(out), "--no-mlflow", "--resume"], capsys)
    assert code == 0, err
    trials = {t["trial_id"]: t for t in pq.read_table(out / "tiny" / "trials.parquet").to_pylist()}
    epochs = rows_of(out / "tiny")
    assert all(e in epochs for e in recorded) and len(recorded) >= 8  # nothing recorded lost
    assert sorted((e["trial_id"], e["epoch"]) for e in epochs) == sorted((t, n) for t in trials for n in (1, 2, 3, 4))  # each once
    assert len(trials) == 4 and len({t["stack"] for t in trials.values()}) == 1 and {t["status"] for t in trials.values()} == {"finished"}
    lam = {(e["trial_id"], e["epoch"]): e["lambda_last"] for e in epochs}
    moved = 0
    for (trial_id, epoch), value in lam.items():
        if epoch > 1 and value != lam[trial_id, epoch - 1]:  # exploited after epoch - 1: a top member's λ, perturbed
            moved += 1
            others = [lam[o, epoch - 1] for o in trials if o != trial_id]
            assert any(value in (pytest.approx(v * 0.8), pytest.approx(v * 1.2), 0.5, 12) for v in others)
        assert 0.5 <= value <= 12
    assert moved >= 1
    assert all(t["lambda_setting"] == lam[i, 4] for i, t in trials.items())  # a trial row: the λ it ended with
    code, _, err = _run(["search", "--space", str(space), "--out", str(tmp_path / "more"), "--no-mlflow", "--stack", "2"], capsys)
    assert code == 2 and "PBT over a stack holds the whole population in one stack" in err
