"""wartune: tuning adversarial training at scale.

The plain-Python API mirrors the CLI:

    from wartune import TrainConfig, train
    result = train(TrainConfig(model="wrn10-1", lam=6.0, epochs=5))
    result.best.rob_acc, result.best.stability
"""

from wartune.config import FixedLambda, SearchSpace, TrainConfig, WARLambda
from wartune.data import load_dataset
from wartune.engine import EpochRecord, Trainer, TrainResult, train
from wartune.errors import WartuneError
from wartune.lambdas import WAR, Fixed
from wartune.models import create_model

__all__ = [
    "WAR",
    "EpochRecord",
    "Fixed",
    "FixedLambda",
    "SearchSpace",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "WARLambda",
    "WartuneError",
    "create_model",
    "load_dataset",
    "train",
]
