"""Shared fixtures: tiny configs that train in seconds on 2 CPU cores."""

from __future__ import annotations

import gzip
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from wartune.engine.config import TrainConfig
from wartune.engine.data import load_dataset

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


# The real MNIST files (gzip), beside the checkout in CI (../shared/datasets); absent in a fresh clone.
MNIST_GZ = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "MNIST" / "raw"


def unpack_mnist(root: Path) -> Path:
    """Decompress the shared MNIST files into `root` in torchvision's layout (`root/MNIST/raw/*-ubyte`)."""
    if not MNIST_GZ.is_dir():
        pytest.skip(f"the real MNIST files are not at {MNIST_GZ} (../shared/datasets beside the checkout)")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in MNIST_GZ.glob("*.gz"):
        with gzip.open(gz) as src, open(raw / gz.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return root


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    """A `--data-dir` holding the real MNIST, unpacked once per session (read-only by convention)."""
    return unpack_mnist(tmp_path_factory.mktemp("mnist"))


def learned_above(labels: torch.Tensor) -> float:
    """The accuracy on test examples with these `labels` above which a net has learned: chance,
    p0 = the most common label's share (what a constant guess scores), plus 3 standard errors
    of an accuracy on n = len(labels) examples at chance: p0 + 3 * sqrt(p0 * (1 - p0) / n).
    A net at chance passes it about once in 700 runs; a net that learned, by a wide margin."""
    n = len(labels)
    p0 = torch.bincount(labels).max().item() / n
    return p0 + 3 * math.sqrt(p0 * (1 - p0) / n)


@pytest.fixture
def tiny_config() -> TrainConfig:
    """A run that takes about a second: small CNN, 2 epochs, short attacks, 90 test images."""
    return TrainConfig(
        model="cnn-8",
        lam=6.0,
        epochs=2,
        batch_size=128,
        attack={"steps": 3},
        eval={"steps": 5, "max_examples": 90},
        seed=3,
        threads=1,
    )


def free_port() -> int:
    """A local port nothing listens on (bound and released), for a server or a Ray head."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def alive(p: psutil.Process) -> bool:
    """Running and not a zombie (a killed child its parent has not reaped yet)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_gone(family: list[psutil.Process], timeout: float = 15.0) -> None:
    """Every process of a killed driver's family ends within `timeout` (the watchdog's job)."""
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in family) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = [p for p in family if alive(p)]
    assert not left, [(p.pid, cmdline(p)) for p in left]


def wait_for(predicate: Callable[[], bool], timeout: float = 240.0, every: float = 0.5) -> None:
    """Until `predicate()` holds; a table being replaced, or not there yet, counts as not yet."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return
        except (OSError, ValueError):
            pass
        time.sleep(every)
    raise AssertionError("timed out waiting for the search")


def wartune_lines(err: str, kind: str = "") -> list[str]:
    """The lines of captured stderr that wartune printed itself, "wartune: ..." (with `kind`
    "warning", `warn`'s: "wartune: warning: ..."), so a library's log line never changes a count."""
    prefix = f"wartune: {kind}: " if kind else "wartune: "
    return [line for line in err.splitlines() if line.startswith(prefix)]


def search_in_background(space: Path, out: Path, *extra: str) -> subprocess.Popen:
    """`wartune search` as its own process group, so a test can kill it like a user would."""
    argv = [sys.executable, "-m", "wartune.cli", "search", "--space", str(space), "--out", str(out),
            "--num-cpus", "2", "--no-mlflow", *extra]  # fmt: skip
    return subprocess.Popen(argv, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_search(proc: subprocess.Popen) -> None:
    """SIGKILL a background search and every process it started (Ray's workers live in their
    own process groups), then wait until they are gone: none may write after the kill."""
    family = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    for p in family:
        try:
            p.kill()
        except psutil.Error:
            pass
    wait_gone(family)


def kill_when(space: Path, out: Path, condition: Callable[[list[dict]], bool], *extra: str) -> list[dict]:
    """Run a search in the background and kill it once `condition` holds on its trials.parquet
    rows (polled often: tiny searches move fast); the rows it held then."""
    import pyarrow.parquet as pq

    proc = search_in_background(space, out, *extra)
    seen: list[list[dict]] = []

    def reached() -> bool:
        assert proc.poll() is None, "the search ended before it could be killed"
        trials = pq.read_table(out / yaml.safe_load(space.read_text()).get("name", space.stem) / "trials.parquet").to_pylist()
        seen[:] = [trials]
        return condition(trials)

    try:
        wait_for(reached, every=0.1)
    finally:
        kill_search(proc)
    return seen[0]


def move_search(folder: Path, parent: Path) -> Path:
    """Move a search folder to another parent (another disk, another machine: the same to it);
    its lock stays beside the old place. The folder's new path."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.move(folder, parent / folder.name))


def rows_of(folder: Path, table: str = "epochs.parquet") -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(folder / table).to_pylist()


def write_space(folder: Path, **changes) -> Path:
    """A tiny grid search space file; `changes` replace or add keys."""
    space = {
        "strategy": "grid",
        "objective": "trades",
        "dataset": "digits",
        "model": "cnn-8",
        "lambda": [1, 6],
        "epochs": 2,
        "batch_size": 128,
        "attack": {"eps": 0.2, "step": 0.05, "steps": 3},
        "eval": {"steps": 5, "max_examples": 90},
        "resources": {"cpu": 1, "gpu": 0},
        "seed": 0,
    }
    space.update(changes)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


@pytest.fixture
def tiny_space(tmp_path: Path) -> Path:
    return write_space(tmp_path)


# The searches above are plumbing: they check files, rows, resumes and logs. Their nets (cnn-4/8,
# 2 epochs) reach ~14 % natural and 0-2 % robust accuracy, so which trial is best among them is
# decided by one or two examples. A test that judges a CHOICE (the best trial, a ranking, a star,
# the trial attacked at the end) runs this grid instead: λ = 0 (natural training) leaves cnn-16
# some 3 % robust on validation at ε 0.2, λ = 6 some 28 % (cnn-8: 6 % against 16 %), far apart
# on 216 validation images. Each trial costs about a second more than a plumbing one.
CHOICE_SPACE: dict = {"model": "cnn-16", "lambda": [0, 6], "epochs": 3, "batch_size": 32,
                      "eval": {"steps": 5, "max_examples": 216}}  # fmt: skip


def write_choice_space(folder: Path, **changes) -> Path:
    """`write_space` with `CHOICE_SPACE`: a grid whose trials differ by more than noise."""
    return write_space(folder, **{**CHOICE_SPACE, **changes})


def wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The 95 % Wilson score interval, written out here so a test does not trust the code under test."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def clearly_best(trials: list[dict]) -> dict:
    """The finished trial with the highest validation robust accuracy, asserting that its 95 %
    interval lies above every other finished trial's: a choice noise could not have made. A
    fixture whose nets stop learning fails here, not in the choice it was meant to decide."""
    done = [t for t in trials if t["status"] == "finished"]
    best = max(done, key=lambda t: t["val_rob_acc"])
    lo, _ = wilson(round(best["val_rob_acc"] * best["val_examples"]), best["val_examples"])
    for t in done:
        if t is not best:
            _, hi = wilson(round(t["val_rob_acc"] * t["val_examples"]), t["val_examples"])
            assert hi < lo, f"trial {t['trial_id']} is within noise of the best, {best['trial_id']}: {hi:.3f} >= {lo:.3f}"
    return best


@pytest.fixture(scope="session")
def robust_net(tmp_path_factory, digits) -> dict:
    """`CHOICE_SPACE`'s best trial (cnn-16, λ 6) trained in this process as its search trains it,
    and each of the 360 test images' flags under PGD-20 and under AutoAttack, seeded as `wartune
    evaluate` seeds them (~15 s, once per session). About 21 % of the images stay robust under
    PGD-20 and 5 % under AutoAttack: attacks compared example by example have examples to
    compare. Shared by the attack suite's test and the search's final verdict (training on a
    CPU is deterministic: the same weights), so AutoAttack's whole-split run is paid once.

    Returns {"state": the best weights, "results": {attack: AttackResult}, "flags": {attack: ExampleFlags}}.
    """
    from wartune.engine import attack_suite
    from wartune.engine.config import TrainingSettings
    from wartune.engine.metrics import ExampleFlags
    from wartune.engine.models import create_model
    from wartune.engine.trainer import Trainer
    from wartune.tune.final_verdict import AUTOATTACK_SEED
    from wartune.tune.spaces import load_space

    space = load_space(str(write_choice_space(tmp_path_factory.mktemp("robust_net"))))
    trainer = Trainer(space.train_config("cnn-16", 6.0, device="cpu"), digits)  # as the trials run here
    trainer.fit()
    info = digits.info
    model = create_model("cnn-16", info.num_classes, info.in_channels, info.image_size)
    model.load_state_dict(trainer.best_state)
    pgd20 = TrainingSettings(dataset="digits").eval_pgd()
    judged, seen = attack_suite.flags_under_attack, []
    attack_suite.flags_under_attack = lambda *args: seen.append(judged(*args)) or seen[-1]  # keep each batch's flags
    results, flags = {}, {}
    try:
        for name in ("pgd20", "autoattack"):
            seen.clear()
            [results[name]] = attack_suite.evaluate_attacks(model, digits, pgd20, [name], seed=AUTOATTACK_SEED)
            flags[name] = ExampleFlags.cat(seen)
    finally:
        attack_suite.flags_under_attack = judged
    return {"state": trainer.best_state, "results": results, "flags": flags}


@pytest.fixture(scope="session")
def war_search(tmp_path_factory) -> dict:
    """A finished search, run once per session for the MLflow and plot tests (~40 s).

    cnn-4 and cnn-8, each with λ = 1 fixed and with WAR (ζ = 400), 2 epochs: four trials
    that give every figure data (two widths, a fixed λ, a λ_t trace). The search also logs
    live to MLflow through the sink factory, as the CLI's searches do.
    Returns {"folder": the search folder, "live_uri": the sqlite store the sink wrote}.
    """
    from ray import tune

    from wartune.engine.config import WARLambda
    from wartune.results.tracking import MlflowSinkFactory, default_tracking_uri
    from wartune.tune.params import lambda_value
    from wartune.tune.spaces import load_space
    from wartune.tune.strategies import run_search

    root = tmp_path_factory.mktemp("war_search")
    space = load_space(str(write_space(root, model=["cnn-4", "cnn-8"], **{"lambda": [1.0]})))
    war = lambda_value(WARLambda(zeta=400.0), "war")
    out = root / "runs"
    uri = default_tracking_uri(out)
    tags = {"strategy": space.strategy, "dataset": space.dataset, "objective": space.objective}
    factory = MlflowSinkFactory(uri, space.name, space.model_dump(mode="json", by_alias=True), tags)
    outcome = run_search(space, out, lam=tune.grid_search([1.0, war]), num_cpus=2, extra_sinks=[factory])
    return {"folder": outcome.folder, "live_uri": uri}


# Fixtures that start Ray, a search or a server: a test that uses one is end-to-end.
E2E_FIXTURES = frozenset({"war_search", "mlflow_server", "calibrated"})


# The costly shared fixtures, each with the xdist group of the tests that use it (directly or
# through another fixture): `pytest -n 2 --dist loadgroup` runs a group on one worker, which
# then builds the fixture once. A session fixture's group is its own name; a module fixture's
# is its module, and only that module's tests join it (elsewhere the name is another fixture).
# A new costly session or module fixture belongs here; the cheap ones (`digits`, `mnist_dir`)
# are built once per worker instead, so their users may run anywhere.
SHARED_FIXTURE_GROUPS: dict[str, str] = {
    "war_search": "war_search",
    "trained_state": "tests.test_attacks",
    "optuna_search": "tests.test_ecosystem",
    "trainer": "tests.test_evaluate",
    "trained": "tests.test_evaluate",
    "registered": "tests.test_mlflow_models",
    "tiny_model": "tests.test_robustbench",
    "mlflow_server": "tests.test_tracking",
    "calibrated": "tests.test_transfer",
    "robust_net": "robust_net",
}


def _shared_fixture_group(item: pytest.Item) -> str | None:
    """The xdist group of a test that uses a costly shared fixture: a session fixture's name
    before a module's. None: the test may run on any worker."""
    module = item.module.__name__ if isinstance(item, pytest.Function) and item.module else None
    names = set(getattr(item, "fixturenames", ())) & SHARED_FIXTURE_GROUPS.keys()
    used = {(name, SHARED_FIXTURE_GROUPS[name]) for name in names}
    sessions = sorted(group for name, group in used if group == name)
    if sessions:
        return sessions[0]
    return module if any(group == module for _, group in used) else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs an `E2E_FIXTURES` fixture `e2e`, so `-m "not e2e"` is the fast
    tier; and group the users of each costly shared fixture for `pytest -n 2 --dist loadgroup`."""
    for item in items:
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
        if group := _shared_fixture_group(item):
            item.add_marker(pytest.mark.xdist_group(group))
