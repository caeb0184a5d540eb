"""A last good copy of Ray's experiment state, so a full disk cannot make a search unresumable.

Ray rewrites its experiment state (`experiment_state-*.json`, the variant generator's and
the searcher's state) in place, about once a second. On a disk that fills up, that write
is cut short and the file no longer parses; `Tuner.restore` then rebuilds trials without
their parameters. So the driver keeps a copy of each state file whenever it reads back
whole (`backup`), and `--resume` puts the copy back over a torn file (`repair`). The copy
may be a few epochs old: each trial then continues from its own newest checkpoint anyway
(`resume.py`), so nothing is trained twice or lost. Local experiment folders only; on
remote storage (`--storage s3://...`) Ray's state lives where this driver cannot vouch for it.
"""

from __future__ import annotations

import json
import pickletools
import shutil
from pathlib import Path

BACKUP_DIR = ".wartune-last-good"
STATE_GLOBS = ("experiment_state-*.json", "basic-variant-state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl")


def _whole(path: Path) -> bool:
    """A state file that reads back: JSON, or a pickle (Ray's generator states are, whatever
    their names say) whose opcodes run to its end. The pickle is walked, not loaded: nothing
    in it runs, and the searcher's state does not reopen its study every epoch."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    try:
        json.loads(data)
        return True
    except ValueError:
        pass
    try:
        for _ in pickletools.genops(data):
            pass
        return True
    except ValueError:  # torn: "pickle exhausted before seeing STOP", or a garbled opcode
        return False


def _state_files(experiment: Path) -> list[Path]:
    return [p for pattern in STATE_GLOBS for p in sorted(experiment.glob(pattern))]


def backup(experiment: Path) -> None:
    """Copy every state file that reads back whole (temp file + rename); best effort."""
    target = experiment / BACKUP_DIR
    for path in _state_files(experiment):
        if not _whole(path):
            continue
        try:
            target.mkdir(exist_ok=True)
            tmp = target / f".{path.name}.tmp"
            shutil.copyfile(path, tmp)
            tmp.replace(target / path.name)
        except OSError:
            return  # the disk is full or read-only: keep the last good copy as it is


def repair(experiment: Path) -> list[str]:
    """Put the last good copy back over each torn state file; the names repaired."""
    repaired = []
    for path in _state_files(experiment):
        good = experiment / BACKUP_DIR / path.name
        if not _whole(path) and good.is_file() and _whole(good):
            shutil.copyfile(good, path)
            repaired.append(path.name)
    return repaired
