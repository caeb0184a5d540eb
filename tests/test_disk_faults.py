"""The output folder fills up or turns read-only in the middle of a search: one line, exit 2,
every table written before intact and readable, no torn file; after the fault, --resume
finishes the search.

The folder is a real small tmpfs (mounted by the test, so it needs root; skipped elsewhere).
"Read-only" is the search folder made immutable (`chattr +i`: refused even to root, where a
`remount,ro` is refused while Ray's logs are open for writing).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, wait_for, write_space
from tests.test_cli import _run

pytestmark = pytest.mark.e2e


def _mount(point: Path, *options: str) -> bool:
    return subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(point)],
                          capture_output=True).returncode == 0  # fmt: skip


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs: room for a tiny search, and quick to fill."""
    point = tmp_path / "disk"
    point.mkdir()
    if not _mount(point, "size=64m"):
        pytest.skip("cannot mount a tmpfs here (needs root and a kernel that allows it)")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _fill(disk: Path) -> Path:
    """Write zeros until the disk is full; the file, to delete later."""
    filler = disk / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * (1 << 20))
                out.flush()
        except OSError:
            pass
    return filler


def _search(space: Path, out: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "wartune.cli", "search", "--space", str(space), "--out", str(out),
            "--num-cpus", "2", "--no-mlflow"]  # fmt: skip
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _tables_intact(folder: Path) -> int:
    """Every table reads back; no temporary file is left anywhere in the folder. Epoch rows."""
    assert not [p for p in folder.rglob("*.tmp") if "ray" not in p.relative_to(folder).parts]
    pq.read_table(folder / "trials.parquet")
    pq.read_table(folder / "steps.parquet")
    return pq.read_table(folder / "epochs.parquet").num_rows


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_search_stops_with_one_line_and_resumes_after_the_fault(small_disk, tmp_path, capsys, fault):
    space = write_space(tmp_path, epochs=3, max_concurrent=1, model="wrn10-0.5", **{"lambda": [1, 6]})
    out = small_disk / "runs"
    folder = out / "tiny"
    proc = _search(space, out)
    try:
        wait_for(lambda: pq.read_table(folder / "epochs.parquet").num_rows >= 2)
        if fault == "full":
            filler = _fill(small_disk)
        else:
            subprocess.run(["chattr", "+i", str(folder)], check=True)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [ln for ln in err.splitlines() if ln.startswith("wartune: error:")]
    assert proc.returncode == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    reason = "No space left on device" if fault == "full" else "Operation not permitted"
    assert lines[0].startswith("wartune: error: search 'tiny' stopped: cannot write") and reason in lines[0]
    rows_before = _tables_intact(folder)
    assert rows_before >= 2

    if fault == "full":
        filler.unlink()
    else:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    code, _, err = _run(["search", "--space", str(space), "--out", str(out), "--no-mlflow", "--resume"], capsys)
    assert code == 0, err
    assert _tables_intact(folder) == 6
    trials = pq.read_table(folder / "trials.parquet").to_pylist()
    assert len(trials) == 2 and all(t["status"] == "finished" and t["epochs"] == 3 for t in trials)
