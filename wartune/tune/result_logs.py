"""Ray Tune's own result logs (result.json, progress.csv, TensorBoard), without the step trace.

They let Ray's tools read a search (`ExperimentAnalysis("runs/<name>/ray/tune")`,
`Tuner.restore(...).get_results()`, `tensorboard --logdir`). Each epoch's result also
carries `steps`, the per-step l_nat, l_rob and λ_t lists that steps.parquet keeps: the CSV
would hold them as text cells and TensorBoard as histograms, one per epoch, so these
loggers leave them out. Ray pickles these callbacks with the run config for `Tuner.restore`,
so they are plain module-level classes.
"""

from __future__ import annotations

from typing import Any

from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, LoggerCallback, TBXLoggerCallback

TRACE_KEYS = frozenset({"steps"})  # result keys kept out of Ray's logs (steps.parquet holds them)


class _WithoutTrace(LoggerCallback):
    """Passes every result on to Ray's logger without the per-step trace."""

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        super().log_trial_result(iteration, trial, {k: v for k, v in result.items() if k not in TRACE_KEYS})


class JsonLog(_WithoutTrace, JsonLoggerCallback):
    """result.json: one JSON line per epoch (what ExperimentAnalysis reads first)."""


class CsvLog(_WithoutTrace, CSVLoggerCallback):
    """progress.csv: one row per epoch."""


class TensorBoardLog(_WithoutTrace, TBXLoggerCallback):
    """TensorBoard event files (tensorboardX comes with ray[tune])."""


def result_loggers() -> list[LoggerCallback]:
    """Ray's three result loggers, TensorBoard's only where tensorboardX imports.

    Passing them in the run config (with TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1) keeps Ray
    from adding its own, unfiltered ones.
    """
    loggers: list[LoggerCallback] = [JsonLog(), CsvLog()]
    try:
        loggers.append(TensorBoardLog())
    except ImportError:
        pass
    return loggers
