"""Training: the worker process, its run context, the trainer, callbacks and the job queue.

The worker (``python -m core.training RUN_DIR``) is the only writer of its run
folder. :mod:`core.training.jobs` launches, cancels and resumes workers.
"""
