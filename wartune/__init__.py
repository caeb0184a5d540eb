"""wartune: tuning adversarial training at scale.

The plain-Python API mirrors the CLI:

    from wartune import TrainConfig, train
    result = train(TrainConfig(model="wrn10-1", lam=6.0, epochs=5))
    result.best.val_rob_acc, result.best.val_stability    # the best epoch, chosen on the validation split

    # λ-trials of one model trained as one grouped network, each member its lone run
    results = train_stack([TrainConfig(model="wrn10-0.5", lam=lam, epochs=5) for lam in (3, 6, 9)])
"""

from wartune.engine import (
    WAR,
    EpochRecord,
    Fixed,
    FixedLambda,
    TrainConfig,
    Trainer,
    TrainResult,
    WARLambda,
    create_model,
    load_dataset,
    train,
    train_stack,
)
from wartune.engine.models import register_model
from wartune.errors import WartuneError
from wartune.results.model_files import load_model
from wartune.tune.spaces import SearchSpace, load_space
from wartune.version import __version__

__all__ = [
    "__version__",
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
    "load_model",
    "load_space",
    "load_dataset",
    "register_model",
    "train",
    "train_stack",
]
