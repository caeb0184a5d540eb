"""The results layer: Parquet tables and sinks, MLflow, reports, plots, the ζ registry, model files.

It reads the engine's records and knows nothing of Ray: the tune layer feeds it plain
per-trial metadata (`TrialMeta`) and per-epoch results.
"""
