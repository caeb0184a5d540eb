"""The attack suite: every attack stays in the ε-ball, flags obey robust ⇔ correct ∧ stable,
stronger attacks find no fewer adversarial examples, PGD-20 is the per-epoch evaluation's
own attack, and the CLI writes its table."""

import dataclasses

import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import learned_above
from tests.test_cli import _error_line, _run
from wartune.engine.attack_suite import ATTACKS, evaluate_attacks
from wartune.engine.attacks import PGDConfig, cw_margin, pgd_linf
from wartune.engine.config import TrainConfig, TrainingSettings
from wartune.engine.evaluation import eval_seed
from wartune.engine.models import create_model
from wartune.engine.trainer import Trainer, best_model_meta
from wartune.results.model_files import load_model, save_model_files

# digits' evaluation PGD-20: ε = 0.2, step 0.05, 20 steps, CE from a uniform start
PGD20 = TrainingSettings(dataset="digits").eval_pgd()


@pytest.fixture(scope="module")
def trainer(digits):
    config = TrainConfig(model="cnn-16", lam=3.0, epochs=3, attack={"steps": 3}, eval={"steps": 3, "max_examples": 60})
    trainer = Trainer(config, digits)
    trainer.fit()
    return trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory, trainer):
    """The trainer's best model, saved as `wartune search` saves it and loaded back."""
    folder = tmp_path_factory.mktemp("model")
    save_model_files(trainer.best_state, best_model_meta(trainer), folder)
    model, _ = load_model(folder)
    return model, folder


def test_cw_margin_by_hand():
    logits = torch.tensor([[2.0, 0.5, 1.0], [0.0, 3.0, -1.0]])
    assert cw_margin(logits, torch.tensor([0, 2])).tolist() == [-1.0, 4.0]


def test_eval_pgd_on_cifar_uses_the_datasets_step_and_keeps_its_ratio_to_eps():
    settings = TrainingSettings(dataset="cifar10")
    assert settings.eval_pgd() == PGDConfig(eps=8 / 255, step_size=0.007, steps=20, loss="ce", start="uniform")
    assert settings.eval_pgd(8 / 255) == settings.eval_pgd()
    wider = settings.eval_pgd(16 / 255)
    assert wider.eps == 16 / 255 and wider.step_size == pytest.approx(0.014) and wider.steps == 20
    assert PGD20 == PGDConfig(eps=0.2, step_size=0.05, steps=20, loss="ce", start="uniform")


def _best_model(trainer: Trainer):
    model = create_model(trainer.config.model, 10, 1, 8)
    model.load_state_dict(trainer.best_state)
    return model


def test_suite_pgd20_repeats_the_per_epoch_evaluation_exactly(trainer):
    # the per-epoch evaluation reads the validation split: all 216 of its images, the suite's
    # (test-split) PGD-20 run on the same images by handing it the validation split as its test split
    per_epoch = trainer.evaluate(max_examples=360)
    config = trainer.config
    as_test = dataclasses.replace(trainer.data, test_x=trainer.data.val_x, test_y=trainer.data.val_y)
    [suite] = evaluate_attacks(trainer.model, as_test, config.eval_pgd(), ["pgd20"], 360, seed=eval_seed(config.seed, trainer.epoch))
    assert (suite.nat_acc, suite.rob_acc, suite.stability, suite.n) == (
        per_epoch.nat_acc, per_epoch.rob_acc, per_epoch.stability, per_epoch.n
    )  # fmt: skip
    assert per_epoch.n == 216
    assert suite.rob_acc < suite.nat_acc  # the attack changes predictions, so its random starts matter


def test_suite_pgd20_repeats_the_test_evaluation_exactly(trainer, digits):
    # all 360 test examples: two batches, so the generator carries over between them as in training
    test = trainer.evaluate_test().metrics
    seed = eval_seed(trainer.config.seed, trainer.best_epoch)
    [suite] = evaluate_attacks(_best_model(trainer), digits, trainer.config.eval_pgd(), ["pgd20"], seed=seed)
    assert (suite.nat_acc, suite.rob_acc, suite.stability, suite.n) == (test.nat_acc, test.rob_acc, test.stability, test.n)
    assert test.n == 360 and suite.rob_acc < suite.nat_acc


def test_cw_is_the_same_pgd_on_the_margin_loss(trained, digits):
    model, _ = trained
    x, y = digits.test_x[:32], digits.test_y[:32]
    cw_pgd = PGDConfig(eps=0.2, step_size=0.05, steps=20, loss="cw", start="uniform")
    expected = pgd_linf(model, x, y, cw_pgd, torch.Generator().manual_seed(5)).x_adv
    assert torch.equal(ATTACKS["cw"](model, x, y, PGD20, torch.Generator().manual_seed(5)), expected)


def test_attacks_agree_on_natural_accuracy_and_stay_within_it(trained, digits):
    model, _ = trained
    results = {r.attack: r for r in evaluate_attacks(model, digits, PGD20, ["pgd20", "cw", "apgd-ce", "fab", "square"], 60)}
    nat = {r.nat_acc for r in results.values()}
    assert len(nat) == 1 and nat.pop() > learned_above(digits.test_y[:60])
    for r in results.values():
        assert r.n == 60 and r.eps == 0.2 and r.rob_acc <= min(r.nat_acc, r.stability) + 1e-9
    assert results["pgd20"].rob_acc < results["pgd20"].nat_acc  # the attack finds something


def _two_class_linear_model(digits):
    """A nearest-class-mean linear model telling digit 0 from 1 (every other logit far below),
    and the digits test images of those two classes."""
    from torch import nn

    from wartune.engine.data import TensorDataset

    x, y = digits.train_x.flatten(1).float(), digits.train_y
    means = torch.stack([x[y == c].mean(0) for c in (0, 1)])
    model = nn.Sequential(nn.Flatten(), nn.Linear(x.shape[1], 10))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.fill_(-1e4)
        model[1].weight[:2] = means
        model[1].bias[:2] = -0.5 * (means**2).sum(1)
    keep = (digits.test_y == 0) | (digits.test_y == 1)
    return model.eval(), TensorDataset(digits.info, digits.train_x, digits.train_y, digits.test_x[keep], digits.test_y[keep])


def test_attacks_rank_against_the_exact_worst_case_of_a_linear_two_class_model(digits):
    # For a linear model of two classes the worst perturbation in the ε-ball ∩ [0, 1] is known
    # per example: each pixel moves to whichever end of its interval lowers the margin most. No
    # attack can find less robustness than that optimum; PGD on CE and on the margin (CW) follow
    # the sign of w_other − w_true at every step, so 20 steps of ε/4 reach it exactly.
    model, data = _two_class_linear_model(digits)
    x, y = data.test_x.flatten(1).float(), data.test_y
    w, b = model[1].weight[:2].detach(), model[1].bias[:2].detach()
    c = w[1 - y] - w[y]  # how each pixel moves the other class's logit against the true one
    lo, hi = torch.clamp(-x, min=-PGD20.eps), torch.clamp(1 - x, max=PGD20.eps)
    gain = torch.maximum(c * lo, c * hi).sum(1)
    margin = (x * (w[y] - w[1 - y])).sum(1) + b[y] - b[1 - y]
    exact = ((margin > 0) & (margin - gain > 0)).float().mean().item()
    results = {r.attack: r for r in evaluate_attacks(model, data, PGD20, ["pgd20", "cw", "apgd-ce", "fab", "square"])}
    n = len(y)
    assert 0 < exact < results["pgd20"].nat_acc  # some examples stand, some fall: a ranking to make
    for r in results.values():
        assert r.rob_acc >= exact - 1e-9, r.attack  # nothing beats the optimum
    assert results["pgd20"].rob_acc == pytest.approx(exact, abs=1 / n) and results["cw"].rob_acc == pytest.approx(exact, abs=1 / n)


def test_autoattack_is_at_least_as_strong_as_pgd20(robust_net, digits):
    """Example by example on the whole test split, with a net some 21 % robust under PGD-20: every
    image AutoAttack leaves robust, PGD-20 left robust too, and AutoAttack breaks some that PGD-20
    left standing. An AutoAttack missing a part, or at another ε, leaves robust an image PGD-20 broke."""
    pgd, aa = (robust_net["results"][name] for name in ("pgd20", "autoattack"))
    pgd_flags, aa_flags = (robust_net["flags"][name] for name in ("pgd20", "autoattack"))
    assert pgd.n == aa.n == aa_flags.robust.numel() == len(digits.test_y) == 360 and aa.eps == pgd.eps == PGD20.eps
    assert (pgd.rob_acc, aa.rob_acc) == (pgd_flags.robust.float().mean().item(), aa_flags.robust.float().mean().item())
    assert torch.equal(aa_flags.correct, pgd_flags.correct)  # one net, one natural prediction per image
    assert pgd.rob_acc > learned_above(digits.test_y)  # robust well beyond what a constant guess keeps
    survivors = torch.nonzero(aa_flags.robust & ~pgd_flags.robust).flatten().tolist()
    assert survivors == [], f"test images robust under AutoAttack that PGD-20 broke: {survivors}"
    assert aa_flags.robust.sum() < pgd_flags.robust.sum()


def test_cli_evaluate_repeats_the_best_epochs_test_figure_by_default_and_appends_each_run(trainer, trained, capsys):
    # model.json's train_config gives the same PGD and its best epoch the same random starts:
    # with no --seed, PGD-20 on the whole test split repeats the trial's test figure (the best
    # epoch's weights, `evaluate_test`; issue 28: seed 0 did not). A second run with another
    # seed is appended beside the first, each row naming its seed.
    _, folder = trained
    seed = eval_seed(trainer.config.seed, trainer.best_epoch)
    code, out, err = _run(["evaluate", str(folder), "--attacks", "pgd20,cw"], capsys)
    assert code == 0, err
    assert f"attack seed {seed}: the best epoch's (epoch {trainer.best_epoch})" in out
    table = pq.read_table(folder / "evaluation.parquet").to_pylist()
    assert [row["attack"] for row in table] == ["pgd20", "cw"] and "pgd20" in out and "cw" in out
    test = trainer.evaluate_test().metrics
    assert (table[0]["nat_acc"], table[0]["rob_acc"], table[0]["stability"], table[0]["examples"]) == (
        test.nat_acc, test.rob_acc, test.stability, 360
    )  # fmt: skip
    assert table[0]["eps"] == trainer.eps == 0.2 and {r["attack_seed"] for r in table} == {seed}
    assert (table[0]["pgd_steps"], table[0]["pgd_step"]) == (trainer.eval_attack.steps, trainer.eval_attack.step_size)
    code, out, err = _run(["evaluate", str(folder), "--attacks", "pgd20", "--max-examples", "60", "--seed", str(seed + 1)], capsys)
    assert code == 0, err
    assert "another draw of the random starts" in out
    again = pq.read_table(folder / "evaluation.parquet").to_pylist()
    assert again[:2] == table and [(r["attack"], r["attack_seed"], r["examples"]) for r in again[2:]] == [("pgd20", seed + 1, 60)]


def test_cli_evaluate_refuses_unknown_attacks_and_folders(trained, tmp_path, capsys):
    _, folder = trained
    code, _, err = _run(["evaluate", str(folder), "--attacks", "pgd20,deepfool"], capsys)
    assert "unknown attack(s) deepfool" in _error_line(code, err)
    code, _, err = _run(["evaluate", str(tmp_path)], capsys)
    assert "holds no model.json" in _error_line(code, err)


@pytest.mark.parametrize("n_classes", [10, 100])
def test_autoattack_is_the_standard_version_with_the_reference_budget(n_classes):
    # fra31/auto-attack's set_version("standard"): torchattacks' own AutoAttack leaves its parts at 10 iterations
    import torchattacks

    from wartune.engine.attack_suite import standard_autoattack

    attack = standard_autoattack(create_model("cnn-4", n_classes, 1, 8), 0.2, n_classes, seed=0)
    apgd, apgd_t, fab_t, square = attack.attacks
    assert isinstance(apgd, torchattacks.APGD) and (apgd.loss, apgd.steps, apgd.n_restarts, apgd.norm) == ("ce", 100, 1, "Linf")
    assert isinstance(apgd_t, torchattacks.APGDT) and (apgd_t.steps, apgd_t.n_target_classes, apgd_t.n_restarts) == (100, 9, 1)
    assert isinstance(fab_t, torchattacks.FAB) and (fab_t.steps, fab_t.n_target_classes, fab_t.multi_targeted) == (100, 9, True)
    assert isinstance(square, torchattacks.Square) and (square.n_queries, square.rescale_schedule) == (5000, False)
    assert {a.eps for a in attack.attacks} == {0.2}
