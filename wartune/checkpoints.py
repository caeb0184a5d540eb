"""The old home of the model-file helpers, kept so `wartune.checkpoints.load_model` still works."""

from wartune.results.model_files import META_FILE, WEIGHTS_FILE, load_model, save_model_files

__all__ = ["META_FILE", "WEIGHTS_FILE", "load_model", "save_model_files"]
