"""Config validation: bad keys and values become one-line messages naming the key."""

import dataclasses

import pytest
import torch

from wartune.cli.flags import SearchFlags
from wartune.engine.config import TrainConfig, WARLambda, validate
from wartune.engine.data import dataset_info
from wartune.engine.lambdas import WarRule, war_step
from wartune.engine.trainer import make_controller
from wartune.errors import ConfigError
from wartune.results.zeta import PAPER_ENTRY
from wartune.tune.params import TrialParams
from wartune.tune.spaces import SearchSpace, WarSettings, load_space, shipped_spaces
from wartune.tune.strategies import param_space


def _space(**changes):
    data = {"strategy": "grid", "lambda": [6, 9], "model": "cnn-8"}
    data.update(changes)
    return validate(SearchSpace, data, source="t.yaml")


@pytest.mark.parametrize(
    "changes,expected",
    [
        ({"lambda": [6, -1]}, "lambda.1: Input should be greater than or equal to 0 (got -1)"),
        ({"attack": {"eps": 0}}, "attack.eps: Input should be greater than 0 (got 0)"),
        ({"attack": {"eps": -0.1}}, "attack.eps: Input should be greater than 0"),
        ({"epochs": 0}, "epochs: Input should be greater than or equal to 1 (got 0)"),
        ({"objective": "awp"}, "objective: Input should be 'trades', 'madry', 'mart', 'fgsm-rs' or 'trades-awp' (got 'awp')"),
        ({"threat": {"norm": "l1", "eps": 1}}, "threat.norm: Input should be 'linf' or 'l2' (got 'l1')"),
        ({"model": "resnet50"}, "unknown model 'resnet50'; known families: wrn"),
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'; known: digits, mnist, cifar10"),
        ({"lamda": [6]}, "unknown key 'lamda'; allowed keys:"),
        ({"strategy": "grid", "lambda": None}, "strategy 'grid' needs 'lambda' as a non-empty list"),
        ({"resources": {"gpu": -1}}, "resources.gpu: Input should be greater than or equal to 0"),
        ({"alpha": 0.2}, "'alpha' moved into the war block: write war: {alpha: 0.2}"),
        ({"war": "wu2021"}, "war: give 'paper' (Algorithm 1), 'epoch' (the default) or a block of alpha, alpha_per, ema_beta, hold, lambda0, max_step, ratio, window (got 'wu2021')"),
        ({"war": {"lambda0": "thick"}}, "war.lambda0: give a number >= 0 or 'thin' (the thin net's best λ) (got 'thick')"),
        ({"war": {"lambda0": -1}}, "war.lambda0: Input should be greater than or equal to 0 (got -1)"),
        ({"war": {"ratio": "mean"}}, "war.ratio: Input should be 'step', 'ema' or 'window' (got 'mean')"),
        ({"war": {"alpha_per": "batch"}}, "war.alpha_per: Input should be 'step' or 'epoch' (got 'batch')"),
        ({"war": {"ratio": "window", "window": 0}}, "war.window: Input should be greater than or equal to 1 (got 0)"),
        ({"war": {"window": 12}}, "war.window: a window is the number of steps of ratio: window; set ratio: window or drop it (got 12)"),
        ({"war": {"hold": "maybe"}}, "war.hold: Input should be a valid boolean"),
        ({"war": {"max_step": -0.5}}, "war.max_step: Input should be greater than 0 (got -0.5)"),
        ({"train_examples": 0}, "train_examples: Input should be greater than or equal to 1 (got 0)"),
        ({"war": {"ema_beta": 1}}, "war.ema_beta: Input should be less than 1 (got 1)"),
        ({"war": {"alpha": 0}}, "war.alpha: Input should be greater than 0 (got 0)"),
        ({"war": {"beta": 0.9}}, "unknown key 'war.beta'; allowed keys: alpha, alpha_per, ema_beta, hold, lambda0, max_step, ratio, window"),
    ],
)
def test_bad_values_name_the_key(changes, expected):
    with pytest.raises(ConfigError) as err:
        _space(**changes)
    message = str(err.value)
    assert message.startswith("t.yaml: ") and expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "data,expected",
    [
        ({"foo": 1}, "allowed keys: attack, batch_size, compile, data_dir, dataset, device, epochs, eval, graphs, lam, lr, model, momentum, objective, precision, schedule, seed, threads, threat, train_examples, validation, weight_decay"),
        ({"attack": {"foo": 1}}, "unknown key 'attack.foo'; allowed keys: eps, step, steps"),
        ({"eval": {"foo": 1}}, "unknown key 'eval.foo'; allowed keys: eps, max_examples, step, steps"),
        ({"validation": {"foo": 1}}, "unknown key 'validation.foo'; allowed keys: examples, fraction, held_out, seed"),
        ({"lam": {"kind": "war", "zeta": 3, "beta": 1}}, "allowed keys: alpha, alpha_per, ema_beta, hold, kind, lambda0, max_step, ratio, window, zeta"),
        ({"lam": {"kind": "fixed", "value": 3, "beta": 1}}, "allowed keys: kind, value"),
    ],
)
def test_unknown_nested_key_lists_the_nested_models_keys(data, expected):
    with pytest.raises(ConfigError) as err:
        validate(TrainConfig, data, source="t.yaml")
    assert str(err.value).endswith(expected)


def test_unknown_key_in_a_search_spaces_nested_settings_lists_their_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'resources.tpu'; allowed keys: cpu, gpu$"):
        _space(resources={"tpu": 1})
    with pytest.raises(ConfigError, match=r"allowed keys: eps, step, steps$"):
        _space(attack={"foo": 1})


def test_every_shipped_space_validates():
    assert "lambda_grid" in shipped_spaces()
    for name in shipped_spaces():
        space = load_space(name)
        assert space.name == name


def test_lambda_grid_holds_the_paper_grid_plus_small_values():
    space = load_space("lambda_grid")
    assert {6, 9, 12, 15, 18, 21} <= set(space.lambdas) and min(space.lambdas) < 6
    assert space.dataset == "digits" and space.strategy == "grid"


def test_overrides_are_validated_like_file_keys():
    with pytest.raises(ConfigError, match="epochs"):
        load_space("lambda_grid", {"epochs": 0})
    assert load_space("lambda_grid", {"lambda": [2.5], "resources": {"gpu": 0.25}}).resources.gpu == 0.25


def test_unknown_space_lists_shipped_ones():
    with pytest.raises(ConfigError, match="lambda_grid"):
        load_space("no_such_space")


def test_train_config_accepts_a_number_as_fixed_lambda():
    assert TrainConfig(lam=9).lam.value == 9.0
    assert TrainConfig.model_validate({"lam": {"kind": "war", "zeta": 30}}).lam.alpha == 0.1


@pytest.mark.parametrize(
    "dataset,model,eps,step,steps",
    [
        ("mnist", "smallcnn", 0.3, 0.01, 40),  # Madry et al. / TRADES on MNIST
        ("digits", "cnn-8", 0.2, 0.05, 10),
        ("cifar10", "wrn10-1", 8 / 255, 0.007, 10),
        ("svhn", "wrn10-1", 8 / 255, 0.007, 10),
    ],
)
def test_the_training_attack_defaults_to_the_datasets_threat_model(dataset, model, eps, step, steps):
    pgd = TrainConfig(dataset=dataset, model=model).train_pgd()
    assert (pgd.eps, pgd.step_size, pgd.steps) == (pytest.approx(eps), pytest.approx(step), steps)
    assert TrainConfig(dataset=dataset, model=model, attack={"steps": 7}).train_pgd().steps == 7


def test_a_model_too_big_for_the_datasets_images_is_refused_at_the_edge():
    with pytest.raises(ConfigError, match="model 'smallcnn' needs images of at least 16 pixels; this dataset's are 8"):
        validate(TrainConfig, {"dataset": "digits", "model": "smallcnn"}, source="config")
    assert _space(dataset="mnist", model=["smallcnn", "cnn-8"]).models == ["smallcnn", "cnn-8"]
    with pytest.raises(ConfigError, match="model 'smallcnn' needs images of at least 16"):
        _space(strategy="compare", model="cnn-8", thin_model="smallcnn")


@pytest.mark.parametrize("dataset,default", [("digits", None), ("cifar10", 1000), ("cifar100", 1000), ("svhn", 1000)])
def test_per_epoch_evaluation_is_sized_by_the_dataset_unless_the_config_says(dataset, default):
    # the first N validation images each epoch. None: the whole validation split (digits' 216
    # cost nothing); CIFAR-size sets: the first 1,000 (their whole default validation split)
    assert dataset_info(dataset).eval_examples == default
    assert TrainConfig(dataset=dataset).eval_examples == default
    assert TrainConfig(dataset=dataset, eval={"max_examples": 250}).eval_examples == 250


# A calibration whose best λ is 3.0 (ζ 30).
THIN = dataclasses.replace(PAPER_ENTRY, best_lambda=3.0)


def _war_space(war=None):
    return _space(strategy="war", zeta_from="wrn34-0.5", **{"lambda": None}, **({} if war is None else {"war": war}))


def _trial_lambda(space):
    """The WAR spec a trial of strategy war runs, as the trainable parses it."""
    return TrialParams.parse(param_space(space, THIN)).config.lam


def test_a_space_without_war_runs_the_studys_default_alpha_per_epoch():
    # docs/war-study.md: α 0.3 per epoch beat Algorithm 1 on both data sets and both widths
    assert _war_space().war == _war_space("epoch").war == WarSettings(alpha=0.3, alpha_per="epoch")
    spec = _trial_lambda(_war_space())
    assert spec == WARLambda(zeta=30.0, alpha=0.3, alpha_per="epoch", lambda0=0.0, ratio="step")
    controller = make_controller(spec, steps_per_epoch=12)
    # λ_1 = 0 + 0.3/12 · (30 − 1.0/0.1) = 0.5; λ_2 = 0.5 + 0.025 · (30 − 0.8/0.02) = 0.25
    assert float(controller.update(torch.tensor(1.0), torch.tensor(0.1))) == pytest.approx(0.5)
    assert float(controller.update(torch.tensor(0.8), torch.tensor(0.02))) == pytest.approx(0.25)


def test_war_paper_runs_algorithm_1_exactly():
    assert _war_space("paper").war == WarSettings()  # the block's defaults are Algorithm 1
    spec = _trial_lambda(_war_space("paper"))
    assert spec == WARLambda(zeta=30.0, alpha=0.1, lambda0=0.0, ratio="step")
    controller, reference = make_controller(spec, steps_per_epoch=12), 0.0
    for l_nat, l_rob in [(1.0, 0.1), (0.8, 0.02), (2.3, 0.0), (0.6, 0.01), (0.7, float("nan")), (0.5, 0.05)]:
        a, b = torch.tensor(l_nat), torch.tensor(l_rob)
        reference = war_step(reference, float(a), float(b), zeta=30.0, alpha=0.1, min_l_rob=1e-6)
        assert float(controller.update(a, b)) == reference
    assert reference == pytest.approx(2.0)  # 2.0, 1.0, 1.0, 0.0, 0.0, 2.0 (see test_lambdas)


@pytest.mark.parametrize("lambda0,expected", [(0, 0.0), (2.5, 2.5), ("thin", 3.0)])
def test_war_lambda0_is_zero_a_number_or_the_thin_nets_best_lambda(lambda0, expected):
    spec = _trial_lambda(_war_space({"lambda0": lambda0}))
    assert (spec.zeta, spec.lambda0) == (30.0, expected)
    # the first update starts from λ_0: λ_1 = λ_0 + 0.1·(30 − 1.0 / 0.1)
    assert float(make_controller(spec, steps_per_epoch=12).update(torch.tensor(1.0), torch.tensor(0.1))) == pytest.approx(expected + 2.0)


def test_war_block_options_reach_the_trial_spec_and_the_controller():
    space = _war_space({"alpha": 0.2, "lambda0": "thin", "ratio": "ema", "ema_beta": 0.5})
    spec = _trial_lambda(space)
    assert spec == WARLambda(zeta=30.0, alpha=0.2, lambda0=3.0, ratio="ema", ema_beta=0.5)
    controller = make_controller(spec, steps_per_epoch=12)
    assert (controller.alpha, controller.ratio, controller.ema_beta, controller.value) == (0.2, "ema", 0.5, 3.0)


def test_war_settling_options_reach_the_trial_spec_and_the_controller():
    space = _war_space({"lambda0": "thin", "hold": True, "ratio": "window", "alpha_per": "epoch", "max_step": 0.5})
    spec = _trial_lambda(space)
    assert spec == WARLambda(zeta=30.0, lambda0=3.0, hold=True, ratio="window", alpha_per="epoch", max_step=0.5)
    controller = make_controller(spec, steps_per_epoch=12)  # the window: one epoch; α: 0.1 over its 12 steps
    assert controller.rule == WarRule(30.0, 0.1 / 12, "window", 0.9, window=12, hold=True, max_step=0.5)
    assert (controller.value, controller.holding) == (3.0, True)


@pytest.mark.parametrize(
    "war,expected",
    [
        ("paper", "paper (Algorithm 1: α 0.1 per step, λ_0 0, each step's l_nat/l_rob)"),
        (None, "epoch (α 0.3 per epoch, spread over its steps; λ_0 0, each step's l_nat/l_rob) (the default)"),
        ({"alpha": 0.3, "alpha_per": "epoch"}, "epoch (α 0.3 per epoch, spread over its steps; λ_0 0, each step's l_nat/l_rob) (the default)"),
        ({"lambda0": "thin", "hold": True}, "war: {hold: true, lambda0: thin}"),
        ({"ratio": "window", "alpha_per": "epoch"}, "war: {alpha_per: epoch, ratio: window, window: one epoch}"),
    ],
)
def test_a_war_block_describes_its_controller_in_one_line(war, expected):
    assert _war_space(war).war.describe() == expected


def test_transfers_alpha_flag_sets_war_alpha_within_the_named_controller():
    alpha = SearchFlags().space_overrides(**{"war.alpha": 0.5})  # as `transfer --alpha 0.5` does
    assert load_space("war").war == WarSettings.preset("epoch")  # war.yaml: war: epoch
    assert load_space("war", alpha).war == WarSettings(alpha=0.5, alpha_per="epoch")
    assert load_space("lambda_grid", alpha).war == WarSettings(alpha=0.5, alpha_per="epoch")  # no war: the default
    assert load_space("cifar10_paper", alpha).war == WarSettings(alpha=0.5)  # war: paper, α per step
