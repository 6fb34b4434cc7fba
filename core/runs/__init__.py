"""Runs: the run-folder store and what is done with a finished run.

:mod:`core.runs.store` is the only owner of the run-folder layout (config, status, metrics,
summary, labels, checkpoints, model). Evaluate, Grad-CAM, predict, export and the plain-Keras
recipe read run folders through it.
"""
