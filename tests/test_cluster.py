"""The cluster path: cluster.yaml is a valid launcher file, and a search joins a running
Ray cluster of two nodes (both on this machine) with shared checkpoint storage, its data
reaching every node through Ray's object store."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import free_port, learned_above, unpack_mnist, write_space
from tests.test_cli import _run
from wartune.engine.data import load_dataset
from wartune.tune.spaces import load_space
from wartune.tune.strategies import run_search

REPO = Path(__file__).resolve().parents[1]


def test_cluster_yaml_is_a_valid_ray_launcher_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((REPO / "cluster.yaml").read_text()))
    validate_config(config)
    assert config["provider"]["type"] == "aws"
    assert any("pip install" in cmd and "wartune" in cmd for cmd in config["setup_commands"])
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["max_workers"] >= 1


RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"


def _start_node(args: list[str], temp_dir: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    """`ray start --block ...`, returned once its node is up (it says it now blocks)."""
    node = subprocess.Popen([RAY, "start", *args, f"--temp-dir={temp_dir}", "--block"], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 120
    while "block forever" not in log.read_text():
        assert node.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.5)
    return node


@pytest.fixture
def two_nodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local Ray cluster of two nodes with one CPU each, built with `ray start` as on real machines.

    It keeps to its own temp dir (a plain `ray.init()` elsewhere on this machine does not join
    it) and ends by its own processes' ids: `ray start --block` stops its node on SIGTERM,
    where `ray stop` would end every Ray on the machine.
    """
    # Ray turns token auth on for a head when ~/.ray/auth_token exists, but not for a joining
    # node nor a driver given an address; and a process that ran a local ray.init() keeps
    # RAY_AUTH_MODE=token in its environment from then on. Nodes and driver must agree: the
    # mode this process already has, else none.
    mode = os.environ.get("RAY_AUTH_MODE") or "disabled"
    monkeypatch.setenv("RAY_AUTH_MODE", mode)
    env = {**os.environ, "RAY_AUTH_MODE": mode}
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="wt-ray-")  # short: Ray's socket paths live under it
    nodes = [_start_node(["--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                          "--disable-usage-stats"], temp_dir, env, Path(temp_dir) / "head.log")]  # fmt: skip
    try:
        nodes.append(_start_node([f"--address=127.0.0.1:{port}", "--num-cpus=1"], temp_dir, env, Path(temp_dir) / "worker.log"))
        yield f"127.0.0.1:{port}"
    finally:
        for node in reversed(nodes):
            node.terminate()
            node.wait(timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.e2e
def test_search_joins_a_two_node_cluster_and_uses_both_nodes(two_nodes, tmp_path, capsys):
    space = write_space(tmp_path, epochs=2, **{"lambda": [1, 6]})
    storage = tmp_path / "shared"  # what NFS or s3:// is on a real cluster
    code, _, err = _run(["search", "--space", str(space), "--out", str(tmp_path / "runs"),
                         "--address", two_nodes, "--storage", str(storage), "--no-mlflow"], capsys)  # fmt: skip
    assert code == 0, err
    trials = pq.read_table(tmp_path / "runs" / "tiny" / "trials.parquet").to_pylist()
    assert all(t["status"] == "finished" for t in trials)
    assert len({t["node"] for t in trials}) == 2  # one CPU per node: one trial each
    assert (storage / "tiny" / "tune").is_dir()
    assert all((tmp_path / "runs" / "tiny" / t["checkpoint"] / "model.safetensors").is_file() for t in trials)


class DataDirWatch:
    """A sink factory (pickled with the run config, built on the driver) that writes, at every
    trial epoch, whether the data folder exists."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.data_dir, self.log = data_dir, log

    def __call__(self, folder: Path) -> "DataDirWatch":
        return self

    def on_epoch(self, meta, result) -> None:
        with self.log.open("a") as f:
            f.write(f"{'present' if self.data_dir.exists() else 'gone'}\n")

    def on_trial_end(self, meta, status, error) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.e2e
def test_mnist_reaches_both_nodes_through_the_object_store_with_its_folder_gone(two_nodes, tmp_path):
    data_dir = unpack_mnist(tmp_path / "data")
    spec = write_space(tmp_path, dataset="mnist", data_dir=str(data_dir), model="mlp-16", epochs=1,
                       attack={"steps": 2}, eval={"steps": 5, "max_examples": 200})  # fmt: skip
    space = load_space(str(spec))
    data = load_dataset(space.dataset, space.data_dir)  # the driver's one read, as `wartune search` does
    shutil.rmtree(data_dir)  # as on a worker the autoscaler just added: no copy anywhere on disk
    watch = tmp_path / "watch.txt"
    outcome = run_search(space, tmp_path / "runs", address=two_nodes, storage=str(tmp_path / "shared"), data=data,
                         extra_sinks=[DataDirWatch(data_dir, watch)])  # fmt: skip
    trials = outcome.trials
    assert [t["status"] for t in trials] == ["finished", "finished"], [t.get("error") for t in trials]
    assert len({t["node"] for t in trials}) == 2  # one CPU per node: one trial each
    assert all(t["dataset"] == "mnist" and t["eps"] == pytest.approx(0.3) for t in trials)  # MNIST's default ε
    # it learned from the real images: accuracy on the whole test split, read once at the end
    assert all(t["test_examples"] == len(data.test_y) == 10_000 for t in trials)
    assert all(t["test_nat_acc"] > learned_above(data.test_y) for t in trials)
    assert watch.read_text().split() == ["gone", "gone"] and not data_dir.exists()
