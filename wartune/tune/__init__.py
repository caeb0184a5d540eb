"""The Ray Tune layer: trainable, search spaces, strategies and the driver callback.

Nothing below `wartune/` except this package imports Ray; the engine runs without it.
"""
