"""Ray's pickled experiment state, edited so that a moved or older search resumes.

`Tuner.restore` rebuilds a search from pickles in its experiment folder (`<folder>/ray/tune/`:
`tuner.pkl`, the search algorithm's and searcher's state). Two things in them can stop a
resume, and both are fixed here before `Tuner.restore` reads them:

- **Paths.** Ray keeps absolute paths there: the storage of the trials still to be created
  (inside the search algorithm's state), the checkpoint a PBT trial took from another one
  (in the experiment state) and, in a search wartune 0.1.0 started, the Optuna study's sqlite
  URL. Ray re-roots each trial's own storage and checkpoints, not these: in a moved folder a
  new trial would write its checkpoints under the old place (and fail where that is gone),
  an exploited PBT trial would look for its checkpoint there, and the old study would not
  open. `mend` rewrites every path under the folder's old place to the same path under its
  new one.
- **Classes.** A search wartune 0.1.0 started holds Ray's own PBT scheduler, which hangs on
  resume (`pbt.ResumablePBT`), and one started under Optuna 4 holds Optuna's NSGA-II sampler,
  which has no lock to restore under Optuna 5 (`study.NSGAIISampler`), and Ray's Optuna
  searcher, which stops when the study is ahead of it (`study.FolderOptunaSearch`); `mend`
  names wartune's class in their place.

The pickles are edited opcode by opcode and never loaded: nothing in them runs, nothing
connects to the old study. A file that needs no change is not written.
"""

from __future__ import annotations

import json
import os
import pickletools
import re
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

# Ray's pickles that name paths or classes (the search algorithm's are pickles whatever their
# suffix), and its experiment state: JSON holding each trial's state as JSON text, with
# pickles inside, hex-encoded (Ray re-roots a trial's own checkpoints, not one PBT gave it
# from another trial).
PICKLES = (
    "tuner.pkl",
    "search_gen_state-*.json",
    "basic-variant-state-*.json",
    "searcher-state-*.pkl",
)
EXPERIMENT_STATE = "experiment_state-*.json"
HEX_PICKLE = "CLOUDPICKLE_FALLBACK"
ROOT_KEY = "storage_fs_path"  # the field of Ray's StorageContext that holds the storage root
# Classes a search started by an older wartune holds, and wartune's class in their place: Ray's
# PBT (hangs on resume) and ASHA (their metric was renamed: scheduler_metrics.py), Optuna's NSGA-II sampler (unpicklable since Optuna 5) and Ray's Optuna
# searcher (stops a resume whose study is ahead of Ray's snapshot of it).
ADOPTED = {
    ("ray.tune.schedulers.pbt", "PopulationBasedTraining"): ("wartune.tune.pbt", "ResumablePBT"),
    ("ray.tune.schedulers.async_hyperband", "AsyncHyperBandScheduler"): ("wartune.tune.scheduler_metrics", "ResumableASHA"),
    ("optuna.samplers.nsgaii._sampler", "NSGAIISampler"): ("wartune.tune.study", "NSGAIISampler"),
    ("ray.tune.search.optuna.optuna_search", "OptunaSearch"): ("wartune.tune.study", "FolderOptunaSearch"),
}

STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"})
GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})
NOT_PUSHED = object()  # an opcode that pushes nothing onto the unpickler's stack


def _ops(data: bytes) -> Iterator[tuple[str, object, bytes, object]]:
    """Each opcode: its name, argument, bytes, and what it pushes as far as strings go (the
    string, None for anything else, NOT_PUSHED for none). Follows the memo, so a string
    pickled once and referenced again later is seen each time. Raises ValueError if torn."""
    ops = list(pickletools.genops(data))
    memo: dict[int, object] = {}
    last: object = None
    for (op, arg, pos), end in zip(ops, [p for _, _, p in ops[1:]] + [len(data)], strict=True):
        pushed: object = NOT_PUSHED
        if op.name in PUT_OPS:
            memo[len(memo) if op.name == "MEMOIZE" else int(str(arg))] = last
        elif op.name in STRING_OPS:
            pushed = last = str(arg)
        elif op.name in GET_OPS:
            pushed = last = memo.get(int(str(arg)))
        elif op.name != "FRAME":
            pushed = last = None
        yield op.name, arg, data[pos:end], pushed


def stored_root(data: bytes) -> str | None:
    """The storage root a pickle of Ray's names (its StorageContext's `storage_fs_path`), if any."""
    previous: object = None
    for _, _, _, pushed in _ops(data):
        if pushed is NOT_PUSHED:
            continue
        if previous == ROOT_KEY and isinstance(pushed, str):
            return pushed
        previous = pushed
    return None


def _unicode(text: str) -> bytes:
    """BINUNICODE (valid from protocol 1), whatever opcode held the string before."""
    encoded = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(encoded)) + encoded


def _same(text: str) -> str:
    return text


Classes = Mapping[tuple[str, str], tuple[str, str]]


def _swap(op: str, arg: object, names: list[object], classes: Classes) -> tuple[str, str] | None:
    """The class that replaces the one this opcode looks up, if `classes` names it."""
    if op == "GLOBAL":  # protocols 0 to 3: "module name" in the opcode itself
        module, _, qualname = str(arg).partition(" ")
        return classes.get((module, qualname))
    if (
        op == "STACK_GLOBAL"
        and len(names) == 2
        and isinstance(names[0], str)
        and isinstance(names[1], str)
    ):
        return classes.get((names[0], names[1]))
    return None


def edit(data: bytes, path: Callable[[str], str] = _same, classes: Classes = ADOPTED) -> bytes:
    """`data` with each string replaced by `path(string)` and each class of `classes` by its
    replacement. Frames are dropped (they are optional); every other opcode is kept as it is,
    so the memo stays as it was: a class is swapped by popping the two names just pushed for
    it and pushing the new ones."""
    out = bytearray()
    names: list[object] = []  # the last two strings pushed: a STACK_GLOBAL's module and name
    for op, arg, raw, pushed in _ops(data):
        swap = _swap(op, arg, names, classes)
        if pushed is not NOT_PUSHED:
            names = [*names[-1:], pushed]
        if op == "FRAME":
            continue
        if op in STRING_OPS and isinstance(arg, str) and path(arg) != arg:
            out += _unicode(path(arg))
        elif swap and op == "STACK_GLOBAL":  # POP, POP, the new names, STACK_GLOBAL
            out += b"00" + _unicode(swap[0]) + _unicode(swap[1]) + raw
        elif swap:
            out += b"c" + f"{swap[0]}\n{swap[1]}\n".encode()
        else:
            out += raw
    return bytes(out)


def edit_json(value: Any, path: Callable[[str], str]) -> Any:
    """Ray's experiment state with `path` applied to every string, to the JSON text it holds
    and to the pickles inside it (`edit`)."""
    if isinstance(value, dict):
        if value.get("_type") == HEX_PICKLE and isinstance(value.get("value"), str):
            return {**value, "value": edit(bytes.fromhex(value["value"]), path).hex()}
        return {k: edit_json(v, path) for k, v in value.items()}
    if isinstance(value, list):
        return [edit_json(v, path) for v in value]
    if isinstance(value, str) and value.lstrip().startswith(("{", "[")):
        try:
            inner = json.loads(value)
        except ValueError:
            return path(value)
        edited = edit_json(inner, path)  # JSON text (a trial's state) stays text
        return value if edited == inner else json.dumps(edited)
    return path(value) if isinstance(value, str) else value


def _files(experiment: Path, patterns: tuple[str, ...]) -> list[Path]:
    folders = [
        experiment,
        *(p for p in experiment.iterdir() if p.is_dir() and p.name.startswith(".")),
    ]
    return [p for folder in folders for pattern in patterns for p in sorted(folder.glob(pattern))]


def _pickles(experiment: Path) -> list[Path]:
    return _files(experiment, PICKLES)


def _rewrite(experiment: Path, path: Callable[[str], str] | None = None) -> list[str]:
    """Edit every pickle of `experiment` (and of its backups), and with `path` its experiment
    state too; the names of the files rewritten, each replaced atomically. A torn file is left
    to Ray (`ray_state.repair` has put back what it could)."""
    edits: list[tuple[Path, Callable[[bytes], bytes]]] = [
        (f, lambda d: edit(d, path or _same)) for f in _pickles(experiment)
    ]
    if path is not None:
        edits += [
            (f, lambda d: json.dumps(edit_json(json.loads(d), path)).encode())
            for f in _files(experiment, (EXPERIMENT_STATE,))
        ]
    rewritten = []
    for file, change in edits:
        data = file.read_bytes()
        try:
            edited = change(data)
        except ValueError:
            continue
        if edited != data:
            tmp = file.with_name(f".{file.name}.{os.getpid()}.edit")
            tmp.write_bytes(edited)
            tmp.replace(file)
            rewritten.append(file.name)
    return rewritten


def mend(experiment: Path, folder: Path) -> list[str]:
    """Make the pickled state of `experiment` (`<folder>/ray/tune`, a local search's) fit this
    driver: paths re-rooted from the search folder it was written in to `folder`, where it is
    now, and `ADOPTED` classes swapped; the files rewritten."""
    return _rewrite(experiment, _rerooting(experiment, folder))


def _rerooting(experiment: Path, folder: Path) -> Callable[[str], str] | None:
    """The string edit that moves paths under the folder's old place to `folder` (None if it did not move)."""
    root = next((r for f in _pickles(experiment) if (r := _root_of(f)) is not None), None)
    if (
        root is None
        or PurePosixPath(root).name != "ray"
        or str(PurePosixPath(root).parent) == str(folder)
    ):
        return None  # not wartune's local layout, or in place
    # the old folder itself, a path below it, also inside a URL; not a sibling whose name starts alike
    pattern = re.compile(re.escape(str(PurePosixPath(root).parent)) + r"(?=/|$)")
    return lambda s: pattern.sub(str(folder), s)


def _root_of(path: Path) -> str | None:
    try:
        return stored_root(path.read_bytes())
    except (OSError, ValueError):
        return None
