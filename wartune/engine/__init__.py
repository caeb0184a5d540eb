"""The engine: adversarial training of one model under one λ controller, in pure PyTorch.

Nothing here imports Ray, MLflow or the results layer; a notebook needs only this package.
"""

from wartune.engine.config import FixedLambda, TrainConfig, TrainingSettings, WARLambda
from wartune.engine.data import load_dataset
from wartune.engine.evaluation import evaluate_model
from wartune.engine.lambdas import WAR, Fixed
from wartune.engine.models import create_model
from wartune.engine.stacked_trainer import StackedTrainer, train_stack
from wartune.engine.trainer import EpochRecord, Trainer, TrainResult, train

__all__ = [
    "WAR",
    "EpochRecord",
    "Fixed",
    "FixedLambda",
    "StackedTrainer",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingSettings",
    "WARLambda",
    "create_model",
    "evaluate_model",
    "load_dataset",
    "train",
    "train_stack",
]
