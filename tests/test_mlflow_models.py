"""The best models of a search in MLflow: logged in their trial runs, the best registered.

One real CLI search (two widths, two λ, the default sqlite store under runs/) with
`--register-model`; the model is then loaded back the way a user would: the snippet in
docs/results.md, `mlflow.pytorch.load_model("models:/digits-best/1")` then `model.eval()`, run as
written, must give the natural accuracy trials.parquet reports, on the same test split, and
the model fine-tunes like any torch module.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import mlflow.pytorch
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import free_port, wartune_lines, write_space
from tests.test_cli import _error_line, _run
from wartune.cli import main
from wartune.engine.data import to_float
from wartune.results.mlflow_models import (
    models_to_log,
    publish_compare_models,
    publish_search_models,
    tracking_at,
)
from wartune.results.model_files import load_model
from wartune.results.tracking import default_tracking_uri, log_search
from wartune.results.trials import best_trial

NAME = "digits-best"


def _trial(trial_id: str, width: float, rob_acc: float | None, status: str = "finished") -> dict[str, Any]:
    """Validation robust accuracy `rob_acc` (what chooses); the test one reversed (1 − it), never read to choose."""
    test = None if rob_acc is None else 1 - rob_acc
    return {"trial_id": trial_id, "width": width, "val_rob_acc": rob_acc, "test_rob_acc": test, "status": status}


def test_models_to_log_are_the_best_then_each_other_widths_best():
    trials = [_trial("a", 4, 0.50), _trial("b", 4, 0.60), _trial("c", 8, 0.55), _trial("d", 8, 0.58),
              _trial("e", 16, 0.90, status="failed"), _trial("f", 16, 0.30)]  # fmt: skip
    assert [(t["trial_id"], why) for t, why in models_to_log(trials)] == [
        ("b", "search"), ("d", "width 8"), ("f", "width 16")
    ]  # fmt: skip
    assert [t["trial_id"] for t, _ in models_to_log(trials[:2])] == ["b"]  # one width: the best only
    assert models_to_log([_trial("x", 4, None, status="failed")]) == []


@pytest.mark.parametrize("command", ["search", "calibrate", "compare"])
def test_register_model_without_mlflow_is_a_one_line_error(command, tmp_path, capsys):
    argv = [command, "--register-model", NAME, "--no-mlflow", "--out", str(tmp_path / "runs")]
    code, _, err = _run(argv + (["--model", "cnn-4"] if command == "calibrate" else []), capsys)
    assert "--register-model registers in MLflow's Model Registry: it cannot go with --no-mlflow" in _error_line(code, err)
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> dict[str, Any]:
    """`wartune search` of cnn-4 and cnn-8 × λ ∈ {1, 6}, one epoch, with `--register-model` (~40 s),
    logging to the default store, runs/mlflow.db, as the snippet in docs/results.md reads it."""
    root = tmp_path_factory.mktemp("registered")
    uri = default_tracking_uri(root / "runs")
    argv = ["search", "--space", str(write_space(root)), "--model", "cnn-4", "--model", "cnn-8", "--epochs", "1",
            "--out", str(root / "runs"), "--num-cpus", "2", "--register-model", NAME]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)
    assert (exit_info.value.code or 0) == 0
    folder = root / "runs" / "tiny"
    return {"uri": uri, "root": root, "folder": folder, "trials": pq.read_table(folder / "trials.parquet").to_pylist()}


def readme_snippet() -> str:
    """The MLflow snippet of docs/results.md (it was the README's), the Python block that loads the registered model."""
    readme = (Path(__file__).resolve().parents[1] / "docs" / "results.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    (snippet,) = [b for b in blocks if "mlflow.pytorch.load_model(" in b]
    return snippet


@pytest.mark.e2e
def test_the_readme_snippet_runs_as_written_with_eval(registered, monkeypatch):
    snippet = readme_snippet()
    assert f'load_model("models:/{NAME}/1")' in snippet and "model.eval()" in snippet
    monkeypatch.chdir(registered["root"])  # where `runs/` is, as after the README's search
    namespace: dict[str, Any] = {}
    try:
        exec(compile(snippet, "docs/results.md", "exec"), namespace)
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # the snippet sets the process's store
    best = best_trial(registered["trials"])
    # the snippet reads the whole test split: the trial's one test reading
    assert best is not None and namespace["nat_acc"].item() == pytest.approx(best["test_nat_acc"], abs=1e-6)
    assert namespace["model"].training is False


@pytest.mark.e2e
def test_registered_model_gives_the_reported_natural_accuracy(registered, digits):
    best = best_trial(registered["trials"])
    assert best is not None and best["selected_on"] == "validation" and best["test_examples"] == len(digits.test_y)
    with tracking_at(registered["uri"]):
        model = mlflow.pytorch.load_model(f"models:/{NAME}/1")
    assert isinstance(model, torch.jit.ScriptModule) and not type(model).__module__.startswith("wartune")  # no wartune code
    model.eval()
    with torch.no_grad():
        logits = model(digits.test_x)
    nat_acc = (logits.argmax(dim=1) == digits.test_y).double().mean().item()
    assert nat_acc == pytest.approx(best["test_nat_acc"], abs=1e-6)
    engine_model, _ = load_model(registered["folder"] / best["checkpoint"])
    with torch.no_grad():
        assert torch.allclose(logits, engine_model(digits.test_x), atol=1e-5)
    # fine-tuning: train mode (batch statistics), gradients, an optimizer step that changes the weights
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(to_float(digits.train_x[:64])), digits.train_y[:64])
    loss.backward()
    optimizer.step()
    assert model.training and any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.e2e
def test_registered_version_is_tagged_with_its_setting_and_figures(registered):
    best = best_trial(registered["trials"])
    assert best is not None
    version = MlflowClient(registered["uri"]).get_model_version(NAME, "1")
    ours = {
        "search": "tiny", "trial_id": best["trial_id"], "model": best["model"], "dataset": "digits",
        "lambda": str(best["lambda_setting"]), "eps": str(best["eps"]), "val_rob_acc": str(best["val_rob_acc"]),
        "test_rob_acc": str(best["test_rob_acc"]), "test_nat_acc": str(best["test_nat_acc"]),
    }  # fmt: skip
    assert version.tags.items() >= ours.items()  # MLflow may add tags of its own
    assert not {"rob_acc", "nat_acc"} & set(version.tags)  # schema 3's names: gone


@pytest.mark.e2e
def test_best_and_best_per_width_are_models_of_their_trial_runs(registered):
    client = MlflowClient(registered["uri"])
    exp = client.get_experiment_by_name("tiny")
    runs = {r.data.params["trial_id"]: r.info.run_id for r in client.search_runs([exp.experiment_id]) if "trial_id" in r.data.params}
    # the models wartune logged, by its tags: MLflow may keep models of its own in the experiment
    logged = client.search_logged_models([exp.experiment_id])
    models = [m for m in logged if m.tags.get("search") == "tiny" and "trial_id" in m.tags]
    expected = {t["trial_id"] for t, _ in models_to_log(registered["trials"])}
    assert len(expected) == 2  # the best of cnn-4 and of cnn-8, one of them the search's best
    assert sorted((m.tags["trial_id"], m.source_run_id) for m in models) == sorted((t, runs[t]) for t in expected)
    assert all(client.get_run(runs[t]).info.status == "FINISHED" for t in expected)  # logging kept the run's status
    for m in models:
        assert m.name == "model"
        with tracking_at(registered["uri"]):
            info = mlflow.models.get_model_info(m.model_uri)
        (spec,) = info.signature.inputs.inputs  # float images (N, C, H, W) in, logits (N, classes) out
        (logits,) = info.signature.outputs.inputs
        assert (str(spec.type), spec.shape, logits.shape) == ("float32", (-1, 1, 8, 8), (-1, 10))


@pytest.mark.e2e
def test_compare_registers_the_best_of_its_rows_trials(registered, digits, tmp_path):
    """A compare folder built from the search: one part, compare.parquet naming the cnn-4 trials only."""
    root = tmp_path / "cmp"
    part = root / "grid-untuned-war"
    shutil.copytree(registered["folder"], part, ignore=shutil.ignore_patterns("ray", "plots"))
    named = [t["trial_id"] for t in registered["trials"] if t["model"] == "cnn-4"]
    pq.write_table(pa.table({"best_trial": named}), root / "compare.parquet")
    uri = default_tracking_uri(tmp_path)
    log_search(part, uri, experiment="cmp/grid-untuned-war")
    version = publish_compare_models(root, uri, "cmp", digits, register_as="cmp-best")
    best = best_trial([t for t in registered["trials"] if t["trial_id"] in named])
    assert version is not None and best is not None
    assert version.tags["trial_id"] == best["trial_id"] and version.tags["search"] == "cmp/grid-untuned-war"


@pytest.mark.e2e
def test_unreachable_store_at_the_end_warns_in_one_line(registered, digits, capsys):
    uri = f"http://127.0.0.1:{free_port()}"
    assert publish_search_models(registered["folder"], uri, "tiny", digits, register_as=NAME) is None
    err = capsys.readouterr().err
    lines = wartune_lines(err)  # wartune's own: MLflow may log beside them
    assert len(lines) == 1 and lines[0].startswith(f"wartune: warning: MLflow model not registered as {NAME!r}"), err

