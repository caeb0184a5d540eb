"""A trained model on disk: `model.safetensors` plus `model.json` describing it.

Loadable with `create_model` alone (no pickle, no wartune trainer state): the JSON names
the registry model and the input shape, the safetensors file holds the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from wartune.engine.models import create_model

WEIGHTS_FILE, META_FILE = "model.safetensors", "model.json"


def save_model_files(state: dict[str, Any], meta: dict[str, Any], folder: Path) -> None:
    """Write weights and their description into `folder` (created if needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / WEIGHTS_FILE))
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))


def load_model(folder: Path | str) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network named in `model.json` and load its safetensors weights."""
    folder = Path(folder)
    meta = json.loads((folder / META_FILE).read_text())
    model = create_model(meta["model"], meta["num_classes"], meta["in_channels"], meta["image_size"])
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    model.eval()
    return model, meta
