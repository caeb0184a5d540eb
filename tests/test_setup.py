"""The set-up a new user runs: the README's two commands, `.ci/run`, and the lock they share."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / ".ci" / "requirements.lock"


def _readme_commands() -> list[str]:
    block = (ROOT / "README.md").read_text().split("## Set-up: two commands")[1].split("```bash")[1]
    return [line for line in block.split("```")[0].splitlines() if line.startswith("python3 ")]


def _locked() -> dict[str, str]:
    pins = (re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip()) for line in LOCK.read_text().splitlines())
    return {canonicalize_name(m[1]): m[2] for m in pins if m}


def test_ci_runs_exactly_the_readmes_second_command_and_both_install_the_lock():
    install, tests = _readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == tests
    assert all("-c .ci/requirements.lock" in command for command in (install, tests))


def test_the_lock_pins_every_dependency_within_what_pyproject_allows():
    """A lock out of step with pyproject.toml (a dependency added, a bound moved) fails here,
    before an install does; the torch pair is the one pinned."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked = _locked()
    for line in project["dependencies"] + project["optional-dependencies"]["test"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in the lock: run bash .ci/lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (name, locked[name])
    assert (locked["torch"], locked["torchvision"]) == ("2.14.1", "0.29.1")
