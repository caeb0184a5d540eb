"""Config validation: bad keys and values become one-line messages naming the key."""

import pytest

from wartune.engine.config import TrainConfig, validate
from wartune.errors import ConfigError
from wartune.tune.spaces import SearchSpace, load_space, shipped_spaces


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
        ({"objective": "mart"}, "objective: Input should be 'trades' or 'madry' (got 'mart')"),
        ({"model": "resnet50"}, "unknown model 'resnet50'; known families: wrn"),
        ({"dataset": "mnist"}, "unknown dataset 'mnist'; known: digits, cifar10"),
        ({"lamda": [6]}, "unknown key 'lamda'; allowed keys:"),
        ({"strategy": "grid", "lambda": None}, "strategy 'grid' needs 'lambda' as a non-empty list"),
        ({"resources": {"gpu": -1}}, "resources.gpu: Input should be greater than or equal to 0"),
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
        ({"foo": 1}, "allowed keys: attack, batch_size, compile, data_dir, dataset, device, epochs, eval, lam, lr, model, momentum, objective, precision, schedule, seed, threads, weight_decay"),
        ({"attack": {"foo": 1}}, "unknown key 'attack.foo'; allowed keys: eps, step, steps"),
        ({"eval": {"foo": 1}}, "unknown key 'eval.foo'; allowed keys: eps, max_examples, step, steps"),
        ({"lam": {"kind": "war", "zeta": 3, "beta": 1}}, "allowed keys: alpha, kind, lambda0, zeta"),
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
