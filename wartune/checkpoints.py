"""The old home of the model-file helpers: deprecated, to be removed in 0.3.

`load_model` and `save_model_files` live in `wartune.results.model_files`; `load_model` is also
`wartune.load_model`. Importing this module still works and says where they went.
"""

import warnings

from wartune.results.model_files import META_FILE, WEIGHTS_FILE, load_model, save_model_files

warnings.warn(
    "wartune.checkpoints is deprecated and goes in wartune 0.3: use wartune.load_model "
    "(or wartune.results.model_files)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["META_FILE", "WEIGHTS_FILE", "load_model", "save_model_files"]
