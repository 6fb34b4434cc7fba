"""Keras batches from arrays: rows of the image cache or embeddings, or augmented views.

- :class:`ArrayFeeder`: rows of one array (the image cache, or embeddings).
- :class:`ViewFeeder`: cached augmented views, one view of each image drawn per epoch.
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
