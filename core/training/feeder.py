"""Keras batches from arrays: rows of the image cache or embeddings, or augmented views.

- :class:`ArrayFeeder`: rows of one array (the image cache, or embeddings).
- :class:`ViewFeeder`: cached augmented views, one view of each image drawn per epoch.
- :func:`resident_dataset`: either of the last two, copied into memory and fed by an endless
  tf.data pipeline, so that ``fit`` does not start a new iterator every epoch;
  :func:`resident_fit_inputs` gives ``fit`` its training and validation pipelines.
"""

from __future__ import annotations

import keras
import numpy as np

from core.data.image_cache import release_pages


class ArrayFeeder(keras.utils.PyDataset):
    """Feeds Keras batches from rows of a (memory-mapped) array.

    Args:
        array: Source array, e.g. the image cache or an embedding matrix.
        rows: Which rows of ``array`` form this split.
        targets: One-hot targets, one row per entry of ``rows``.
        batch_size: Rows per batch.
        shuffle: Reshuffle the order every epoch.
        seed: Seed of the shuffling.
        sample_weights: Optional weight per entry of ``rows``.
        dtype: What the batch is converted to (images go in as float 0..255).
    """

    def __init__(
        self,
        array: np.ndarray,
        rows: np.ndarray,
        targets: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        sample_weights: np.ndarray | None = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        if len(rows) != len(targets):
            raise ValueError(f"rows and targets differ in length: {len(rows)} != {len(targets)}")
        self.array = array
        self.rows = np.asarray(rows, dtype=np.int64)
        self.targets = np.asarray(targets, dtype="float32")
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.sample_weights = sample_weights
        self.dtype = dtype
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(len(self.rows))
        if shuffle:
            self._rng.shuffle(self._order)

    def __len__(self) -> int:
        return max(1, -(-len(self.rows) // self.batch_size))

    def __getitem__(self, index: int):
        picks = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        # Reading a memmap in ascending row order touches the file sequentially.
        picks = np.sort(picks)
        x = np.asarray(self.array[self.rows[picks]], dtype=self.dtype)
        release_pages(self.array)
        y = self.targets[picks]
        if self.sample_weights is None:
            return x, y
        return x, y, np.asarray(self.sample_weights[picks], dtype="float32")

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._rng.shuffle(self._order)


class ViewFeeder(keras.utils.PyDataset):
    """Feeds batches of cached augmented views: one randomly drawn view per image per epoch.

    Args:
        views: ``(K, N, ...)`` array; ``views[k, i]`` is view ``k`` of image ``i`` (a feature
            vector, or an activation map; may be memory-mapped).
        targets: One-hot targets, one row per image.
        batch_size: Images per batch.
        seed: Seed of the view draws and the shuffling.
        sample_weights: Optional weight per image.
    """

    def __init__(
        self,
        views: np.ndarray,
        targets: np.ndarray,
        batch_size: int,
        *,
        seed: int = 0,
        sample_weights: np.ndarray | None = None,
    ) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        if views.ndim < 3 or views.shape[1] != len(targets):
            raise ValueError(
                "views must be (K, N, ...) with N equal to the number of targets. Received: "
                f"views of shape {views.shape} and {len(targets)} targets"
            )
        # Feature views are small and come in memory; activation views stay memory-mapped and
        # are converted a batch at a time.
        self.views = views
        self.targets = np.asarray(targets, dtype="float32")
        self.batch_size = int(batch_size)
        self.sample_weights = sample_weights
        self._rng = np.random.default_rng(seed)
        self._draw()

    def _draw(self) -> None:
        count = self.views.shape[1]
        self._order = self._rng.permutation(count)
        self._view = self._rng.integers(0, self.views.shape[0], size=count)

    def __len__(self) -> int:
        return max(1, -(-self.views.shape[1] // self.batch_size))

    def __getitem__(self, index: int):
        picks = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        x = np.asarray(self.views[self._view[picks], picks], dtype="float32")
        release_pages(self.views)
        y = self.targets[picks]
        if self.sample_weights is None:
            return x, y
        return x, y, np.asarray(self.sample_weights[picks], dtype="float32")

    def on_epoch_end(self) -> None:
        self._draw()


# Arrays up to this size are copied into TensorFlow's memory and fed by a tf.data pipeline.
RESIDENT_BYTES = 1 << 30


def resident_dataset(
    array: np.ndarray,
    targets: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    sample_weights: np.ndarray | None = None,
    views: bool = False,
    max_bytes: int = RESIDENT_BYTES,
    endless: bool = True,
):
    """A tf.data pipeline over an in-memory copy of ``array`` (endless by default), or None.

    ``fit`` makes a new tf.data iterator for every epoch of training and of validation when
    its input ends (arrays, a ``PyDataset``): about 20 ms each on a 2-core CPU, more than
    the whole epoch of a head on a few hundred embeddings. Given this endless pipeline and
    ``steps_per_epoch``, Keras keeps one training iterator for the whole fit (it remakes the
    validation iterator at every epoch, whatever the input).
    One repetition is one epoch: every image once, in a new order when ``shuffle``; the last
    batch may be shorter, as with arrays.

    Args:
        array: ``(N, ...)`` rows (embeddings or activations, possibly memory-mapped), or with
            ``views`` ``(K, N, ...)`` augmented views: each epoch draws one view per image.
        targets: One-hot targets, one row per image.
        batch_size: Images per batch.
        shuffle: A new order every epoch.
        seed: Seed of the order and of the view draws.
        sample_weights: Optional weight per image.
        views: Whether ``array`` holds ``K`` views of each image.
        max_bytes: Larger arrays are not copied (None is returned).
        endless: Repeat for ever (training). ``False`` gives one epoch: what validation
            needs, since Keras remakes the validation iterator at every epoch anyway.

    Returns:
        The dataset of ``(x, y)`` or ``(x, y, weight)`` batches, ``x`` as float32, or None
        when the backend is not TensorFlow or ``array`` is over ``max_bytes``.

    Raises:
        ValueError: If the targets do not match the images of ``array``.
    """
    if keras.backend.backend() != "tensorflow" or array.nbytes > max_bytes:
        return None
    import tensorflow as tf

    count = array.shape[1] if views else array.shape[0]
    if len(targets) != count or (views and array.ndim < 3):
        raise ValueError(
            f"array of shape {array.shape} (views={views}) does not match {len(targets)} targets"
        )
    values = tf.constant(np.asarray(array))  # float16 activations stay float16 until a batch
    labels = tf.constant(np.asarray(targets, dtype="float32"))
    weights = None
    if sample_weights is not None:
        weights = tf.constant(np.asarray(sample_weights, dtype="float32"))
    order = tf.data.Dataset.range(count)
    if shuffle:
        order = order.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    batches = order.batch(batch_size)
    if endless:
        batches = batches.repeat()
    batches = tf.data.Dataset.zip(batches, tf.data.Dataset.counter())
    draws = int(array.shape[0]) if views else 0

    def pick(index, step):
        if views:
            # One view per image, drawn anew each batch of each epoch (stateless: the same
            # seed draws the same views).
            view = tf.random.stateless_uniform(
                tf.shape(index),
                seed=tf.stack([tf.constant(seed, tf.int64), step]),
                minval=0,
                maxval=draws,
                dtype=tf.int64,
            )
            x = tf.gather_nd(values, tf.stack([view, index], axis=-1))
        else:
            x = tf.gather(values, index)
        batch = (tf.cast(x, "float32"), tf.gather(labels, index))
        if weights is not None:
            batch = (*batch, tf.gather(weights, index))
        return batch

    # Nothing is prepared ahead (a batch is a gather from memory, ~1 ms): dropping an
    # iterator with batches in flight stalled for ~0.6 s, which the validation iterator,
    # remade every epoch, paid in 1 to 4 epochs of 10. tf.data would otherwise add a
    # prefetch of its own. Nothing here runs in parallel, so there is nothing to autotune,
    # and with autotuning on, dropping the training iterator when fit returns stalled for
    # 2.5 to 3.5 s in 3 fits of 6 (none in 14 without).
    options = tf.data.Options()
    options.experimental_optimization.inject_prefetch = False
    options.autotune.enabled = False
    return batches.map(pick).with_options(options)


def steps_per_epoch(images: int, batch_size: int) -> int:
    """Batches in one epoch of ``images`` (the last one may be shorter)."""
    return max(1, -(-images // batch_size))


def resident_fit_inputs(
    train: np.ndarray,
    train_targets: np.ndarray,
    val: np.ndarray,
    val_targets: np.ndarray,
    batch_size: int,
    *,
    seed: int,
    views: bool = False,
    sample_weights: np.ndarray | None = None,
    val_batch_size: int | None = None,
) -> tuple[dict, int] | None:
    """``fit`` keyword arguments feeding small cached arrays from memory, and the steps.

    One tf.data iterator serves every epoch (see :func:`resident_dataset`), which takes
    about 40 ms off each epoch of a head or a cached top on a 2-core CPU.

    Args:
        train: The training rows, or with ``views`` their ``(K, N, ...)`` views.
        train_targets: One-hot targets of the training images.
        val: The validation rows (never augmented).
        val_targets: Their one-hot targets.
        batch_size: Training images per batch (validation batches hold at least 256).
        seed: Seed of the order and of the view draws.
        views: Whether ``train`` holds ``K`` views of each image.
        sample_weights: Optional weight per training image.
        val_batch_size: Images per validation batch (default: at least 256, for vectors and
            cached activations; images through a whole network want the training batch).

    Returns:
        ``(inputs, steps_per_epoch)``, or None when the arrays are too big (or the backend is
        not TensorFlow): the caller feeds them as before.
    """
    train_feed = resident_dataset(
        train,
        train_targets,
        batch_size,
        shuffle=True,
        seed=seed,
        sample_weights=sample_weights,
        views=views,
    )
    if train_feed is None:
        return None
    val_batch = val_batch_size or max(batch_size, 256)
    val_feed = resident_dataset(
        val,
        val_targets,
        val_batch,
        max_bytes=max(RESIDENT_BYTES - train.nbytes, 0),
        endless=False,  # its iterator is remade every epoch: see resident_dataset
    )
    if val_feed is None:
        return None
    steps = steps_per_epoch(len(train_targets), batch_size)
    inputs = {
        "x": train_feed,
        "shuffle": False,  # the pipeline shuffles (fit would warn that it cannot)
        "steps_per_epoch": steps,
        "validation_data": val_feed,
        "validation_steps": steps_per_epoch(len(val_targets), val_batch),
    }
    return inputs, steps
