"""The shared search flags: declared once, on every search-like command, each reaching its key."""

import inspect
from dataclasses import fields
from pathlib import Path

import pytest
import typer
from pydantic import BaseModel

from tests.conftest import write_space
from tests.test_cli import _error_line, _run
from wartune.cli import app
from wartune.cli.flags import SearchFlags, fields_of, search_flags
from wartune.errors import ConfigError
from wartune.tune.compare import run_compare
from wartune.tune.spaces import SearchSpace, load_space
from wartune.tune.strategies import run_search

SEARCH_COMMANDS = ("search", "calibrate", "transfer", "compare")
OPTUNA_ONLY = {"objectives", "sampler"}  # an Optuna study's: calibrate, transfer and compare run none
NOT_APPLICABLE = {"transfer": {"lambdas", *OPTUNA_ONLY}, "calibrate": OPTUNA_ONLY, "compare": OPTUNA_ONLY}  # a WAR run has no λ grid


def _option_names(command: str) -> set[str]:
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {opt for param in click_command.params for opt in param.opts}


def _flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


@pytest.mark.parametrize("command", SEARCH_COMMANDS)
def test_every_search_command_takes_each_shared_flag(command):
    options = _option_names(command)
    for f in fields(SearchFlags):
        applies = f.name not in NOT_APPLICABLE.get(command, set())
        assert (_flag(f.name) in options) == applies, f"{command} {_flag(f.name)}"


def test_a_flag_that_does_not_apply_is_a_usage_error(tmp_path, capsys):
    code, _, err = _run(["transfer", "--zeta-from", "cnn-4", "--lambdas", "6", "--out", str(tmp_path)], capsys)
    assert "No such option: --lambdas" in _error_line(code, err)


def _model_at(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    """The field named (or aliased) `key` of `model`; its annotation when it is a model itself."""
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            annotation = info.annotation
            return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    raise AssertionError(f"{key!r} is not a field of {model.__name__}")


@pytest.mark.parametrize("field", fields_of("space"), ids=lambda f: f.name)
def test_each_space_flag_names_a_search_space_key(field):
    model: type[BaseModel] | None = SearchSpace
    *parents, leaf = field.metadata["key"].split(".")
    for parent in parents:
        assert model is not None
        model = _model_at(model, parent)
    assert model is not None
    _model_at(model, leaf)


def test_every_flag_has_one_role():
    roles = {f.metadata["role"] for f in fields(SearchFlags)}
    assert roles == {"space", "run", "output"}
    assert sum(len(fields_of(r)) for r in roles) == len(fields(SearchFlags))


@pytest.mark.parametrize("runner", [run_search, run_compare])
def test_run_flags_are_keywords_of_the_runners(runner):
    keywords = inspect.signature(runner).parameters
    assert set(SearchFlags().run_options()) <= set(keywords)


def test_space_overrides_convert_nest_and_leave_out_unset_flags():
    flags = SearchFlags(model=["cnn-8"], lambdas="1, 6", data_dir=Path("/data"), gpus_per_trial=0.25, seed=3)
    assert flags.space_overrides(strategy="war", **{"war.alpha": None}) == {
        "model": "cnn-8", "lambda": [1.0, 6.0], "data_dir": "/data", "seed": 3,
        "resources": {"gpu": 0.25}, "strategy": "war",
    }  # fmt: skip
    assert SearchFlags(model=["cnn-8", "cnn-16"]).space_overrides()["model"] == ["cnn-8", "cnn-16"]
    assert SearchFlags(model=[]).space_overrides() == {}


def test_precision_and_compile_flags_reach_the_space_and_are_validated_there():
    space = load_space("table3", SearchFlags(precision="bf16", compile=True).space_overrides())
    assert (space.precision, space.compile) == ("bf16", True)
    assert load_space("table3").precision == "auto" and SearchFlags(compile=False).space_overrides() == {"compile": False}
    with pytest.raises(ConfigError, match="precision: Input should be 'auto', 'fp32', 'bf16' or 'fp16'"):
        load_space("table3", SearchFlags(precision="fp8").space_overrides())


def test_the_graphs_flag_reaches_the_trials_config_and_is_validated():
    space = load_space("table3", SearchFlags(graphs="off").space_overrides())
    assert space.graphs == "off" and space.train_config("wrn10-2", 6.0).graphs == "off"
    assert load_space("table3").graphs == "auto"
    with pytest.raises(ConfigError, match="graphs: Input should be 'auto', 'on' or 'off'"):
        load_space("table3", SearchFlags(graphs="always").space_overrides())


def test_objectives_flag_names_columns_with_or_without_their_direction():
    flags = SearchFlags(objectives="rob_acc:max, stability", sampler="nsga2")
    space = load_space("optuna_front", flags.space_overrides())
    assert (space.objectives, space.sampler) == (["rob_acc", "stability"], "nsga2")
    with pytest.raises(ConfigError, match="objectives: stability is better when larger: write stability or stability:max"):
        load_space("optuna_front", SearchFlags(objectives="rob_acc,stability:min").space_overrides())


def test_compare_objective_reaches_the_space(tmp_path, capsys):
    assert load_space("table3", SearchFlags(objective="madry").space_overrides()).objective == "madry"
    space = write_space(tmp_path, strategy="compare", thin_model="cnn-4", model=["cnn-8"])
    out = tmp_path / "runs"
    code, _, err = _run(["compare", "--space", str(space), "--objective", "bogus", "--out", str(out)], capsys)
    assert "objective: Input should be 'trades', 'madry', 'mart', 'fgsm-rs' or 'trades-awp' (got 'bogus')" in _error_line(code, err)
    assert not out.exists()


def test_a_command_parameter_may_not_shadow_a_shared_flag():
    def command(*, flags: SearchFlags, epochs: int = 1) -> None: ...

    with pytest.raises(TypeError, match="epochs"):
        search_flags()(command)
