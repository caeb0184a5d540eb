"""Search spaces: YAML files shipped with wartune (or any path), validated into `SearchSpace`.

`--space lambda_grid` finds `search_spaces/lambda_grid.yaml` inside the installed package;
a value ending in .yaml/.yml, or naming an existing file, is read as a path. CLI flags are
merged in before validation, so a bad flag is reported exactly like a bad YAML key.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from wartune.config import SearchSpace, read_yaml, validate
from wartune.errors import ConfigError


def spaces_dir() -> Path:
    """The folder of shipped search spaces inside the installed package."""
    return Path(str(resources.files("wartune") / "search_spaces"))


def shipped_spaces() -> list[str]:
    return sorted(p.stem for p in spaces_dir().glob("*.yaml"))


def space_path(ref: str) -> Path:
    """Resolve a space name or path to a file, or fail naming the shipped spaces."""
    candidate = Path(ref)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        if not candidate.is_file():
            raise ConfigError(f"search space file {ref!r} does not exist")
        return candidate
    path = spaces_dir() / f"{ref}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown search space {ref!r}; shipped: {', '.join(shipped_spaces())} (or a path to a .yaml file)")
    return path


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides win; nested mappings (resources, attack, eval) merge key by key."""
    merged = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_space(ref: str, overrides: dict[str, Any] | None = None) -> SearchSpace:
    """Read, merge CLI overrides into, and validate one search space."""
    path = space_path(ref)
    data = read_yaml(path)
    data.setdefault("name", path.stem)
    return validate(SearchSpace, _merge(data, overrides or {}), source=path.name)
