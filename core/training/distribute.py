"""Training on more than one device: TensorFlow's ``tf.distribute`` (and Keras' JAX API).

One function, :func:`setup_distribution`, picks the strategy when a worker starts, before the
backend creates its devices:

- ``TF_CONFIG`` naming two or more workers: ``MultiWorkerMirroredStrategy`` (one process per
  machine; worker 0 is the chief, the only one that writes the run folder);
- more than one GPU: ``MirroredStrategy`` over all of them;
- ``cpu_replicas`` > 1 (``--cpu-replicas N`` or ``TRANSFER_STUDIO_CPU_REPLICAS``): the CPU split
  into N logical devices and ``MirroredStrategy`` over them, so the distributed path runs for
  real on a machine without GPUs (it is not faster on CPU: the same cores do the work);
- on the JAX backend with more than one device: ``keras.distribution.DataParallel``;
- otherwise the default strategy (one device), exactly as before.

The batch size a user sets is the global batch (split over the replicas); the learning rate is
not rescaled. Keras 3.15 on TensorFlow trips over two places of ``MultiWorkerMirroredStrategy``
(its symbolic build reduces a nested batch and its metric reduction uses ``axis=0`` on
scalars); :func:`_patch_keras_for_multi_worker` replaces those two code paths, and
``tests/training/test_distribute.py`` pins the Keras version they follow.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

CPU_REPLICAS_ENV = "TRANSFER_STUDIO_CPU_REPLICAS"
TF_CONFIG_ENV = "TF_CONFIG"
#: A collective that waits longer than this for another worker fails the run (a dead worker
#: must not hang the others forever); ``TRANSFER_STUDIO_COLLECTIVE_TIMEOUT`` changes it.
COLLECTIVE_TIMEOUT_ENV = "TRANSFER_STUDIO_COLLECTIVE_TIMEOUT"
COLLECTIVE_TIMEOUT_S = 300


def collective_timeout() -> float:
    """Seconds a worker waits for the others at a step before the run fails."""
    raw = os.environ.get(COLLECTIVE_TIMEOUT_ENV, "").strip()
    if not raw:
        return float(COLLECTIVE_TIMEOUT_S)
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise ValueError(f"{COLLECTIVE_TIMEOUT_ENV} must be a positive number. Received: {raw!r}")
    return value


#: The Keras release whose TensorFlow trainer the multi-worker patches follow.
KERAS_VERSION = "3.15.1"


class ClusterConfigError(ValueError):
    """``TF_CONFIG`` is set but does not describe a usable cluster."""


@dataclass(frozen=True)
class Cluster:
    """The multi-worker cluster of ``TF_CONFIG``.

    Attributes:
        workers: ``host:port`` of every worker, in order (worker 0 is the chief).
        index: This process's position in ``workers``.
    """

    workers: tuple[str, ...]
    index: int

    @property
    def is_chief(self) -> bool:
        """Worker 0 writes the run folder; the others write nothing into it."""
        return self.index == 0


def read_cluster(environ: dict[str, str] | None = None) -> Cluster | None:
    """Parses ``TF_CONFIG``; None when it is unset or names a single worker.

    Raises:
        ClusterConfigError: If ``TF_CONFIG`` is not JSON of the documented shape.
    """
    raw = (environ if environ is not None else os.environ).get(TF_CONFIG_ENV, "").strip()
    if not raw:
        return None
    try:
        spec = json.loads(raw)
        workers = spec["cluster"]["worker"]
        task = spec["task"]
        kind, index = task["type"], task["index"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ClusterConfigError(
            'TF_CONFIG must be JSON like {"cluster": {"worker": ["host:port", ...]}, '
            f'"task": {{"type": "worker", "index": 0}}}}. Received: {raw[:200]!r}'
        ) from error
    if not isinstance(workers, list) or not all(isinstance(w, str) for w in workers):
        raise ClusterConfigError(
            f"TF_CONFIG cluster.worker must be a list of 'host:port'. Received: {workers!r}"
        )
    if kind != "worker":
        raise ClusterConfigError(
            f"TF_CONFIG task.type must be 'worker' (worker 0 is the chief). Received: {kind!r}"
        )
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(workers):
        raise ClusterConfigError(
            f"TF_CONFIG task.index must be 0..{len(workers) - 1}. Received: {index!r}"
        )
    if len(workers) < 2:
        return None
    return Cluster(tuple(workers), index)


def cpu_replicas_from_env(environ: dict[str, str] | None = None) -> int:
    """The number of logical CPU devices asked for with ``TRANSFER_STUDIO_CPU_REPLICAS``."""
    raw = (environ if environ is not None else os.environ).get(CPU_REPLICAS_ENV, "").strip()
    if not raw:
        return 1
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= 64:
        raise ValueError(f"{CPU_REPLICAS_ENV} must be an integer from 1 to 64. Received: {raw!r}")
    return value


@dataclass
class Distribution:
    """The strategy a run trains with.

    Attributes:
        strategy_name: ``"default"``, ``"MirroredStrategy"``, ``"MultiWorkerMirroredStrategy"``
            or ``"DataParallel"``.
        replicas: Devices that each take a share of every global batch (all workers).
        workers: Processes (machines) taking part.
        worker_index: This process's index (0 = chief).
        strategy: The ``tf.distribute`` strategy, or None.
        devices: What the replicas run on, for people (e.g. ``["CPU:0", "CPU:1"]``).
    """

    strategy_name: str = "default"
    replicas: int = 1
    workers: int = 1
    worker_index: int = 0
    strategy: Any = None
    devices: list[str] = field(default_factory=list)

    @property
    def is_chief(self) -> bool:
        """True for the process that writes the run folder."""
        return self.worker_index == 0

    @property
    def distributed(self) -> bool:
        """True when more than one replica shares each batch."""
        return self.replicas > 1

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """The strategy's scope (variables and optimizers made inside are distributed)."""
        if self.strategy is None:
            yield
        else:
            with self.strategy.scope():
                yield

    def per_worker_batch(self, global_batch: int) -> int:
        """Rows each worker feeds per step so that a step covers ``global_batch`` rows."""
        return max(1, global_batch // self.workers)

    def summary(self) -> dict[str, Any]:
        """What the run summary records (so runs can be compared)."""
        return {
            "strategy": self.strategy_name,
            "replicas": self.replicas,
            "workers": self.workers,
        }

    def describe(self, global_batch: int) -> str:
        """One sentence for the run's notes and the Train page."""
        if not self.distributed:
            return "Training on one device."
        per_device = max(1, global_batch // self.replicas)
        where = f"{self.workers} machines" if self.workers > 1 else ", ".join(self.devices)
        return (
            f"{self.strategy_name}: {self.replicas} replicas ({where}); the batch of "
            f"{global_batch} is split into {per_device} per device; the learning rate is "
            "not rescaled."
        )


def setup_distribution(cpu_replicas: int | None = None) -> Distribution:
    """Chooses and creates the strategy for this process; call it once, before any model.

    Args:
        cpu_replicas: Logical CPU devices to split the CPU into (default: the
            ``TRANSFER_STUDIO_CPU_REPLICAS`` variable, else 1).

    Returns:
        The :class:`Distribution`.

    Raises:
        ClusterConfigError: If ``TF_CONFIG`` is malformed.
        ValueError: If ``cpu_replicas`` is out of range, or the backend cannot do what was
            asked (multi-worker training needs the TensorFlow backend).
    """
    import keras

    replicas = cpu_replicas_from_env() if cpu_replicas is None else int(cpu_replicas)
    if not 1 <= replicas <= 64:
        raise ValueError(f"cpu_replicas must be 1 to 64. Received: cpu_replicas={cpu_replicas!r}")
    cluster = read_cluster()
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow_distribution(replicas, cluster)
    if cluster is not None:
        raise ValueError(
            f"Multi-worker training (TF_CONFIG) needs the TensorFlow backend; the active "
            f"backend is {backend!r}. Unset TF_CONFIG or set KERAS_BACKEND=tensorflow."
        )
    if backend == "jax":
        return _jax_distribution()
    return Distribution()


def _tensorflow_distribution(replicas: int, cluster: Cluster | None) -> Distribution:
    import tensorflow as tf

    if cluster is not None:
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=collective_timeout()
        )
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        _patch_keras_for_multi_worker()
        return Distribution(
            strategy_name="MultiWorkerMirroredStrategy",
            replicas=int(strategy.num_replicas_in_sync),
            workers=len(cluster.workers),
            worker_index=cluster.index,
            strategy=strategy,
            devices=list(cluster.workers),
        )
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        _patch_keras_for_multi_worker()
        return Distribution(
            strategy_name="MirroredStrategy",
            replicas=int(strategy.num_replicas_in_sync),
            strategy=strategy,
            devices=[g.name.replace("/physical_device:", "") for g in gpus],
        )
    if replicas > 1 and not gpus:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
            )
        except RuntimeError as error:  # devices already made: only at process start
            raise RuntimeError(
                "cpu_replicas must be set before TensorFlow creates its devices (at the start "
                f"of the training process): {error}"
            ) from error
        names = [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(names)
        _patch_keras_for_multi_worker()
        return Distribution(
            strategy_name="MirroredStrategy",
            replicas=int(strategy.num_replicas_in_sync),
            strategy=strategy,
            devices=[n.rsplit("device:", 1)[-1] for n in names],
        )
    return Distribution()


def _jax_distribution() -> Distribution:
    import jax
    import keras

    devices = jax.devices()
    if len(devices) < 2:
        return Distribution()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return Distribution(
        strategy_name="DataParallel",
        replicas=len(devices),
        devices=[f"{d.platform}:{d.id}" for d in devices],
    )


def _patch_keras_for_multi_worker() -> None:
    """Makes Keras' TensorFlow trainer work under multi-device strategies.

    Two code paths of Keras 3.15 fail there (Keras issue 20585): the symbolic build before
    ``fit`` and ``evaluate`` reduces the first batch (a nest of ``PerReplica``) with one
    ``strategy.reduce`` call (under ``MultiWorkerMirroredStrategy`` it cannot take a nest;
    under ``MirroredStrategy`` it fails when the replicas got batches of unequal size, as with
    a short last validation batch), and under ``MultiWorkerMirroredStrategy`` the per-step
    metric reduction calls ``strategy.reduce("MEAN", v, axis=0)`` on scalar metrics. The build
    only needs shapes, so it takes this process's first local value; the metrics are means
    over all replicas, so they reduce with ``axis=None``.
    """
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer, "_transfer_studio_patched", False):
        return
    import tensorflow as tf

    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("mean", "auto") and tf_trainer._collective_all_reduce_multi_worker(
            strategy
        ):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, batches in iterator:
                batch = next(batches)
                data_batch = tree.map_structure(
                    lambda v: (
                        self.distribute_strategy.experimental_local_results(v)[0]
                        if isinstance(v, tf.distribute.DistributedValues)
                        else v
                    ),
                    batch,
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer._transfer_studio_patched = True


def embedding_method(dist: Distribution) -> str:
    """How :func:`core.training.embeddings.compute_embeddings` runs under ``dist``.

    One device: a compiled predict step per batch (fastest on a CPU). Several local devices:
    ``predict``, which splits each batch over the replicas (``predict_on_batch`` returns one
    copy per replica under ``MirroredStrategy`` in Keras 3.15). Several workers: a plain call
    per batch on this worker's own copy of the weights.
    """
    if dist.workers > 1:
        return "call"
    if dist.strategy_name == "DataParallel":
        # JAX shards every batch evenly; the batch pass pads the last batch to full size.
        return "batches"
    return "predict" if dist.distributed else "batches"


def even_batch(dist: Distribution, batch: int) -> int:
    """``batch`` rounded up to a multiple of the replicas where every batch must split evenly
    (JAX's ``DataParallel``); unchanged elsewhere."""
    if dist.strategy_name != "DataParallel" or not dist.distributed:
        return batch
    return -(-batch // dist.replicas) * dist.replicas


def pad_for_replicas(dist: Distribution, rows: Any, targets: Any, weights: Any = None):
    """Rows, targets and sample weights padded so every batch splits evenly over replicas.

    Only for ``DataParallel`` (JAX), which refuses a batch it cannot split evenly (a short
    last batch, a small validation set). The padding repeats the first row with weight 0, so
    losses and metrics are exactly those of the real rows.

    Returns:
        ``(rows, targets, weights)``; ``weights`` is None when nothing was padded and none
        were given.
    """
    import numpy as np

    if dist.strategy_name != "DataParallel" or not dist.distributed:
        return rows, targets, weights
    rows = np.asarray(rows)
    extra = (-len(rows)) % dist.replicas
    if extra == 0:
        return rows, targets, weights
    base = np.ones(len(rows), "float32") if weights is None else np.asarray(weights, "float32")
    rows = np.concatenate([rows, np.repeat(rows[:1], extra)])
    targets = np.concatenate([np.asarray(targets), np.repeat(np.asarray(targets)[:1], extra, 0)])
    weights = np.concatenate([base, np.zeros(extra, "float32")])
    return rows, targets, weights


def worker_inputs(
    dist: Distribution,
    source: Any,
    train_rows: Any,
    train_targets: Any,
    val_rows: Any,
    val_targets: Any,
    *,
    global_batch: int,
    seed: int,
    sample_weights: Any = None,
) -> tuple[dict[str, Any], int]:
    """``fit`` inputs of one worker of a multi-worker run, and the steps per epoch.

    Each worker feeds its own share of the training rows (every ``workers``-th row), cut to
    the same number of full batches on every worker so no worker waits for a step another
    never takes; a step covers ``global_batch`` rows in all. Every worker validates on all of
    the validation rows (the metrics are averaged over workers, so they are exact).
    TensorFlow's own sharding is off: the rows are already shared out.
    """
    import numpy as np

    from core.training.feeder import ArrayFeeder

    batch = dist.per_worker_batch(global_batch)
    mine = np.asarray(train_rows)[dist.worker_index :: dist.workers]
    shortest = len(train_rows) // dist.workers
    steps = max(1, shortest // batch)
    keep = min(len(mine), steps * batch)
    weights = None
    if sample_weights is not None:
        weights = np.asarray(sample_weights)[dist.worker_index :: dist.workers][:keep]
    targets = np.asarray(train_targets)[dist.worker_index :: dist.workers][:keep]
    train = ArrayFeeder(
        source, mine[:keep], targets, batch, shuffle=True, seed=seed, sample_weights=weights
    )
    val = ArrayFeeder(source, np.asarray(val_rows), np.asarray(val_targets), batch)
    return {
        "x": _as_dataset(train, reshuffle=True),
        "validation_data": _as_dataset(val, reshuffle=False),
        "steps_per_epoch": steps,
    }, steps


def _as_dataset(feeder: Any, *, reshuffle: bool) -> Any:
    """A ``tf.data.Dataset`` of the feeder's batches, with TensorFlow's auto-sharding off."""
    import tensorflow as tf

    first = feeder[0]
    signature = tuple(
        tf.TensorSpec(shape=(None, *part.shape[1:]), dtype=part.dtype) for part in first
    )

    def batches():
        for index in range(len(feeder)):
            yield feeder[index]
        if reshuffle:
            feeder.on_epoch_end()

    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


def weights_digest(model: Any) -> str:
    """A hash of every weight's value (equal on every worker of a synchronous run)."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]


def is_worker_lost(error: BaseException) -> bool:
    """True when ``error`` means another worker stopped answering (timed out collective)."""
    names = {type(e).__name__ for e in _chain(error)}
    text = " ".join(str(e) for e in _chain(error))
    return bool(names & {"DeadlineExceededError", "UnavailableError"}) or (
        "Collective ops is aborted" in text or "failed to connect" in text.lower()
    )


def _chain(error: BaseException) -> list[BaseException]:
    seen, out, current = set(), [], error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


__all__ = [
    "CPU_REPLICAS_ENV",
    "Cluster",
    "ClusterConfigError",
    "Distribution",
    "is_worker_lost",
    "read_cluster",
    "setup_distribution",
    "weights_digest",
]
