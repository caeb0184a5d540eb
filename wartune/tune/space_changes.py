"""What `--resume` would silently ignore: settings that differ from those the search started with.

A resumed search continues the experiment Ray pickled when it started: its trials, their
configs, the searcher and scheduler. A flag or an edited space file that changes a setting
(`--epochs 4` on a 3-epoch search, another λ grid, `--stack 1`) would change nothing, and
the folder's `space.yaml` would go on describing what ran. So `--resume` compares the space
it is given with the folder's and refuses, in one line naming each difference, to go on
with another; the settings that this command does read anew are free to differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from wartune.errors import ConfigError, WartuneError
from wartune.results.store import SPACE_FILE
from wartune.tune.spaces import SearchSpace

# Read from the resuming command, so they may change: where the data is now (the folder may
# have moved machines), the description, and the end-of-search attack (run by this command).
FREE_ON_RESUME = frozenset({"data_dir", "description", "final_attack", "final_attack_top"})


def _text(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def resume_differences(folder: Path, space: SearchSpace) -> list[str]:
    """Each setting of `space` that differs from the search started in `folder`, as
    `key started → now`; none when the folder has no readable space (nothing to compare)."""
    try:
        started = SearchSpace.model_validate(yaml.safe_load((folder / SPACE_FILE).read_text()))
    except (OSError, yaml.YAMLError, ValueError, ConfigError):
        return []
    before = started.model_dump(mode="json", by_alias=True)
    now = space.model_dump(mode="json", by_alias=True)
    keys = sorted((before.keys() | now.keys()) - FREE_ON_RESUME)
    return [f"{key} {_text(before.get(key))} → {_text(now.get(key))}" for key in keys if before.get(key) != now.get(key)]


def check_resume_matches(folder: Path, space: SearchSpace) -> None:
    """Refuse to resume `folder` with settings other than those it started with."""
    if changes := resume_differences(folder, space):
        raise WartuneError(
            f"--resume continues {folder.name!r} with the settings it started with, and this command changes "
            f"{'; '.join(changes)}: drop those flags or edits, or start a new search (--name or --overwrite)"
        )
