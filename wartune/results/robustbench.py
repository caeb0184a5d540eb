"""An evaluation in RobustBench's format: the fields of a model-zoo entry (`model_info/<dataset>/Linf/<name>.json`).

RobustBench ranks L∞ models by AutoAttack's robust accuracy; writing the same fields lets
a wartune model sit beside its leaderboard. Accuracies are percentages with two decimals
in strings, and ε is "k/255" where it is one, as the leaderboard's own entries write them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from re import Match
from typing import Any

from wartune.engine.attack_suite import AttackResult
from wartune.engine.models import FAMILIES
from wartune.errors import WartuneError

AUTOATTACK = "autoattack"  # the attack RobustBench's robust accuracy comes from
THREAT_MODEL = "Linf"

# How RobustBench spells each registry family (e.g. wrn34-10 → WideResNet-34-10).
_ARCHITECTURES: dict[str, Callable[[Match[str]], str]] = {
    "wrn": lambda m: f"WideResNet-{m[1]}-{m[2]}",
    "densenet": lambda m: f"DenseNet-BC-{m[1]} (k={m[2]})",
    "resnet18": lambda m: "ResNet-18" + ("" if float(m[1]) == 1 else f" (width {m[1]})"),
    "preactresnet18": lambda m: "PreActResNet-18" + ("" if float(m[1]) == 1 else f" (width {m[1]})"),
    "cnn": lambda m: f"CNN-{m[1]}",
    "mlp": lambda m: f"MLP-{m[1]}",
    "smallcnn": lambda m: "SmallCNN (TRADES)",
}


def architecture(model: str) -> str:
    """The architecture's name as RobustBench writes it; the registry name if no family matches."""
    for key, family in FAMILIES.items():
        m = family.pattern.fullmatch(model)
        if m is not None and key in _ARCHITECTURES:
            return _ARCHITECTURES[key](m)
    return model


def eps_field(eps: float) -> str | float:
    """"8/255" when ε is a whole number of 255ths (the leaderboard's form), else ε itself."""
    k = round(eps * 255)
    return f"{k}/255" if k > 0 and abs(k / 255 - eps) < 1e-9 else eps


def lambda_text(lam: Any) -> str:
    """The trial's λ from `train_config`: a fixed value, or WAR with its target ζ."""
    if isinstance(lam, dict) and lam.get("kind") == "war":
        return f"WAR (ζ = {lam['zeta']:.4g})"
    if isinstance(lam, dict) and "value" in lam:
        return f"λ = {lam['value']:g}"
    return f"λ = {lam}"


def percent(accuracy: float) -> str:
    return f"{100 * accuracy:.2f}"


def robustbench_entry(meta: dict[str, Any], results: Sequence[AttackResult]) -> dict[str, Any]:
    """The model-zoo entry of an evaluation; `results` must include AutoAttack's.

    `reported` is the robust accuracy wartune measured during training (the best epoch's
    PGD-20), as a paper reports its own PGD number beside RobustBench's AutoAttack one.
    """
    aa = next((r for r in results if r.attack == AUTOATTACK), None)
    if aa is None:
        raise WartuneError(f"a RobustBench entry needs the {AUTOATTACK} attack in --attacks")
    config = meta.get("train_config", {})
    objective = str(config.get("objective", "")).upper() or "adversarial training"
    name = f"wartune: {objective}, {lambda_text(config.get('lam'))}, {meta['model']} on {meta['dataset']}"
    if meta.get("weights"):  # another codebase's checkpoint (`foreign_weights.py`): its training is not known here
        name = f"{meta['model']} on {meta['dataset']}, weights {Path(meta['weights']).name}, evaluated by wartune"
    return {
        "link": "",
        "name": name,
        "authors": "",
        "additional_data": False,
        "number_forward_passes": 1,
        "dataset": meta["dataset"],
        "venue": "",
        "architecture": architecture(meta["model"]),
        "eps": eps_field(aa.eps) if meta.get("train_config", {}).get("threat", {}).get("norm") != "l2" else aa.eps,
        "clean_acc": percent(aa.nat_acc),
        "reported": percent(meta["val_rob_acc"]) if meta.get("val_rob_acc") is not None else "",
        "autoattack_acc": percent(aa.rob_acc),
        "footnote": f"Evaluated by wartune on {aa.n} test examples"
        + ("; reported: PGD-20 on the validation split at the best epoch." if meta.get("val_rob_acc") is not None else "."),
        "threat_model": "L2" if meta.get("train_config", {}).get("threat", {}).get("norm") == "l2" else THREAT_MODEL,
        # beyond RobustBench's fields: every attack run, its figure and what it spent per example
        "wartune_attacks": [
            {"attack": r.attack, "robust_acc": percent(r.rob_acc), "examples": r.n, "budget": r.budget} for r in results
        ],
    }


def write_robustbench_json(path: Path, meta: dict[str, Any], results: Sequence[AttackResult]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(robustbench_entry(meta, results), indent=2, ensure_ascii=False) + "\n")
    return path
