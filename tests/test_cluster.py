"""The cluster path: cluster.yaml is a valid launcher file, and a search joins a running
Ray cluster of two nodes (both on this machine) with shared checkpoint storage."""

import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import write_space
from tests.test_cli import _run

REPO = Path(__file__).resolve().parents[1]


def test_cluster_yaml_is_a_valid_ray_launcher_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((REPO / "cluster.yaml").read_text()))
    validate_config(config)
    assert config["provider"]["type"] == "aws"
    assert any("pip install" in cmd and "wartune" in cmd for cmd in config["setup_commands"])
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["max_workers"] >= 1


def _ray(*args: str) -> subprocess.CompletedProcess:
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    return subprocess.run([ray, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.e2e
def test_search_joins_a_two_node_cluster_and_uses_both_nodes(tmp_path, capsys):
    port = "6391"
    head = _ray("start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats")
    assert head.returncode == 0, head.stderr
    try:
        worker = _ray("start", f"--address=127.0.0.1:{port}", "--num-cpus=1")
        assert worker.returncode == 0, worker.stderr
        space = write_space(tmp_path, epochs=2, **{"lambda": [1, 6]})
        storage = tmp_path / "shared"  # what NFS or s3:// is on a real cluster
        code, _, err = _run(["search", "--space", str(space), "--out", str(tmp_path / "runs"),
                             "--address", f"127.0.0.1:{port}", "--storage", str(storage), "--no-mlflow"], capsys)  # fmt: skip
        assert code == 0, err
        trials = pq.read_table(tmp_path / "runs" / "tiny" / "trials.parquet").to_pylist()
        assert all(t["status"] == "finished" for t in trials)
        assert len({t["node"] for t in trials}) == 2  # one CPU per node: one trial each
        assert (storage / "tiny" / "tune").is_dir()
        assert all((tmp_path / "runs" / "tiny" / t["checkpoint"] / "model.safetensors").is_file() for t in trials)
    finally:
        _ray("stop", "--force")
