"""A user's own network, defined in a module outside the package: searched, calibrated and
transferred end to end by `module.path:factory-W` (real Ray trials import it by the name),
registered with `wartune.register_model` for the Python API, and refused in one line when its
name, module or factory is wrong."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from torch import nn

import wartune
from tests.conftest import write_space
from tests.test_cli import _run
from wartune.engine.models import FAMILIES, create_model, model_width
from wartune.results.zeta import ZetaRegistry

THIN, WIDE = "tests.own_models:tiny_conv-1", "tests.own_models:tiny_conv-2"


@pytest.mark.e2e
def test_an_own_model_is_searched_calibrated_and_transferred_by_its_module_path(tmp_path, capsys):
    runs = tmp_path / "runs"
    space = write_space(tmp_path, model=THIN, stack=2, **{"lambda": [1, 6]})
    code, _, err = _run(["calibrate", "--model", THIN, "--space", str(space), "--out", str(runs), "--no-mlflow"], capsys)
    assert code == 0, err
    folder = runs / "calibrate-tests.own_models_tiny_conv-1"  # its folder: the name made a folder's
    trials = pq.read_table(folder / "trials.parquet").to_pylist()
    assert {(t["model"], t["width"], t["status"]) for t in trials} == {(THIN, 1.0, "finished")} and len(trials) == 2
    assert all(t["stack"] for t in trials)  # plain PyTorch layers: the two λ-trials trained as one stack
    [entry] = [e for e in ZetaRegistry(runs / "zeta.parquet").entries() if e.model == THIN]
    assert entry.model == THIN and entry.best_lambda in (1.0, 6.0)  # ζ keyed by the name, width included
    wide = write_space(tmp_path, model=WIDE, epochs=1)
    code, out, err = _run(["transfer", "--zeta-from", THIN, "--model", WIDE, "--space", str(wide), "--out", str(runs), "--no-mlflow"], capsys)
    assert code == 0, err
    [war] = pq.read_table(runs / "transfer-tests.own_models_tiny_conv-1-to-tests.own_models_tiny_conv-2" / "trials.parquet").to_pylist()
    assert (war["model"], war["width"], war["zeta_used"], war["status"]) == (WIDE, 2.0, entry.zeta, "finished")


def test_register_model_names_a_family_for_the_python_api():
    @wartune.register_model("ownnet")
    def build(num_classes: int, in_channels: int, width: float) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, round(8 * width)), nn.ReLU(), nn.Linear(round(8 * width), num_classes))

    try:
        model = create_model("ownnet-2", 10, 1, 8)
        assert model[1].out_features == 16 and model_width("ownnet-2") == 2.0
        result = wartune.train(wartune.TrainConfig(model="ownnet-0.5", lam=3.0, epochs=1, attack={"steps": 1}, eval={"steps": 1, "max_examples": 20}))
        assert result.config.model == "ownnet-0.5" and len(result.history) == 1
        with pytest.raises(wartune.WartuneError, match="cannot register model family 'wrn'"):
            wartune.register_model("wrn")
    finally:
        FAMILIES.pop("ownnet", None)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("tests.no_such_module:f-2", "cannot import 'tests.no_such_module' (ModuleNotFoundError"),
        ("tests.own_models:nothing-2", "'tests.own_models' has no function 'nothing'"),
        ("tests.own_models:not_a_network-1", "its factory returned str, not a torch nn.Module"),
        ("os.path:join-1", "its factory failed (TypeError"),
    ],
)
def test_a_bad_own_model_is_refused_in_one_line(tmp_path, capsys, model, message):
    space = write_space(tmp_path, model=model)
    code, _, err = _run(["search", "--space", str(space), "--out", str(tmp_path / "runs"), "--no-mlflow"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists()
