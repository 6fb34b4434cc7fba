"""Data: sources, ingest, the dataset store, splits and the per-size image cache.

The dataset store (:mod:`core.data.store`) is the only owner of a dataset folder and its
manifest. Nothing here imports Keras or TensorFlow.
"""
