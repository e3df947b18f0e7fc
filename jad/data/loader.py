"""Input pipeline: deterministic, host-sharded batches of preprocessed numpy arrays.

``load(name, root, category, split, pre=...)`` scans the tree, prepares the tfds copy (once per
fingerprint, see :mod:`jad.data.builders`) and returns a :class:`Loader`. Each batch is::

    image     float32 [B, crop, crop, 3]   ImageNet-normalised (NHWC)
    mask      float32 [B, crop, crop]      {0, 1}; zeros for normal images
    label     int32   [B]                  0 normal, 1 anomalous
    path      str     [B]                  the image file on disk
    defect    str     [B]                  "good" or the defect folder name
    has_mask  bool    [B]                  False only for anomalous images without ground truth

Order: epoch ``e`` visits ``np.random.default_rng([seed, e]).permutation(n)`` when shuffling,
else the official order; host ``shard_index`` of ``num_shards`` takes a contiguous block of
``ceil(n / num_shards)`` examples of that order, the last block padded to the same size by
repeating its last example (so the hosts together cover every example exactly once per epoch,
all hosts agree on the order without talking, and host blocks concatenated in host order are the
single-host order). Every batch carries ``valid`` [B] (False for padding, which must never reach a
metric). The last, smaller batch is kept unless ``drop_remainder``.

Execution: the per-example decode (Pillow decode + resize + crop + normalise) runs in a grain
``MapDataset -> to_iter_dataset(ReadOptions(num_threads=num_workers))`` pipeline, i.e. a thread pool
that keeps up to ``2 * batch_size`` examples in flight in order. Threads suffice because Pillow's
decoders and resampling release the GIL; ``backend="threads"`` is a plain
``concurrent.futures`` implementation of the same thing (kept as the reference and fallback; see
``python -m jad.benchmark data`` for the measured speeds of both).
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from jad.data.errors import DatasetError
from jad.data.layouts import Record, scan
from jad.data.preprocess import Preprocess, preprocess_example
from jad.data.splits import SPLITS, split_positions

Batch = dict[str, np.ndarray]
BACKENDS = ("grain", "threads")


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


# --------------------------------------------------------------------------------------------
# Per-example decoding.
# --------------------------------------------------------------------------------------------
def decode_record(rec: Record, pre: Preprocess) -> dict[str, Any]:
    """A :class:`Record` (files on disk) -> one example dict (see module docstring)."""
    image, mask = preprocess_example(
        rec.path, rec.mask_path, pre, name=rec.path, mask_name=rec.mask_path
    )
    return {
        "image": image,
        "mask": mask,
        "label": rec.label,
        "path": rec.path,
        "defect": rec.defect,
        "has_mask": rec.label == 0 or rec.mask_path is not None,
    }


def _text(v: bytes | str) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def decode_tfds(example: dict[str, Any], pre: Preprocess) -> dict[str, Any]:
    """A tfds example of :mod:`jad.data.builders` (encoded bytes) -> one example dict."""
    path, mask_path = _text(example["path"]), _text(example["mask_path"])
    mask = example["mask"] or None
    image, mask_arr = preprocess_example(
        example["image"], mask, pre, name=path, mask_name=mask_path or None
    )
    label = int(example["label"])
    return {
        "image": image,
        "mask": mask_arr,
        "label": label,
        "path": path,
        "defect": _text(example["defect"]),
        "has_mask": label == 0 or mask is not None,
    }


def collate(items: Sequence[dict[str, Any]]) -> Batch:
    """Stacks example dicts into a batch (strings become numpy ``str`` arrays)."""
    return {
        "image": np.stack([it["image"] for it in items]),
        "mask": np.stack([it["mask"] for it in items]),
        "label": np.asarray([it["label"] for it in items], dtype=np.int32),
        "path": np.asarray([it["path"] for it in items], dtype=str),
        "defect": np.asarray([it["defect"] for it in items], dtype=str),
        "has_mask": np.asarray([it["has_mask"] for it in items], dtype=bool),
    }


def _check_args(
    batch_size: int, num_shards: int, shard_index: int, num_workers: int | None, backend: str
) -> int:
    """Validates the batching arguments; returns the number of workers to use."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DatasetError(f"batch_size={batch_size!r} must be a positive integer.")
    if not isinstance(num_shards, int) or num_shards < 1:
        raise DatasetError(f"num_shards={num_shards!r} must be a positive integer.")
    if not isinstance(shard_index, int) or not 0 <= shard_index < num_shards:
        raise DatasetError(f"shard_index={shard_index!r} must be in [0, {num_shards}).")
    if backend not in BACKENDS:
        raise DatasetError(f"backend={backend!r} is unknown; use one of {', '.join(BACKENDS)}.")
    workers = _default_workers() if num_workers is None else int(num_workers)
    if workers < 0:
        raise DatasetError(f"num_workers={num_workers!r} must be >= 0.")
    return workers


class _Subset(Sequence):
    """``source[indices[i]]`` as a random-access sequence (what grain's ``source`` wants)."""

    def __init__(self, source: Sequence, indices: np.ndarray):
        self._source, self._indices = source, indices

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i):
        return self._source[int(self._indices[i])]


# --------------------------------------------------------------------------------------------
# Loader.
# --------------------------------------------------------------------------------------------
class Loader:
    """Iterable of numpy batches over a random-access ``source``.

    ``len(loader)`` is the number of batches per epoch, ``loader.num_examples`` the number of
    examples of this shard. ``iter(loader)`` runs epoch 0, then 1, ... on successive calls (like a
    torch DataLoader reshuffling per pass); ``loader.epoch(e)`` runs a given epoch.
    """

    def __init__(
        self,
        source: Sequence,
        decode: Callable[[Any], dict[str, Any]],
        *,
        batch_size: int = 8,
        shuffle: bool = False,
        seed: int = 0,
        drop_remainder: bool = False,
        num_shards: int = 1,
        shard_index: int = 0,
        num_workers: int | None = None,
        backend: str = "grain",
    ):
        workers = _check_args(batch_size, num_shards, shard_index, num_workers, backend)
        self.source, self.decode = source, decode
        self.batch_size, self.shuffle, self.seed = batch_size, bool(shuffle), int(seed)
        self.drop_remainder = bool(drop_remainder)
        self.num_shards, self.shard_index = num_shards, shard_index
        self.num_workers, self.backend = workers, backend
        self._next_epoch = 0

    @property
    def shard_size(self) -> int:
        """Examples per shard: ``ceil(n / num_shards)`` (padding included)."""
        return -(-len(self.source) // self.num_shards)

    @property
    def num_examples(self) -> int:
        """Examples per epoch seen by this shard, padding included (= all of them unsharded)."""
        return self.shard_size if self.num_shards > 1 else len(self.source)

    @property
    def num_valid(self) -> int:
        """Real (non-padding) examples of this shard."""
        n, s = len(self.source), self.shard_size
        return max(0, min(n, (self.shard_index + 1) * s) - self.shard_index * s)

    def __len__(self) -> int:
        n, b = self.num_examples, self.batch_size
        return n // b if self.drop_remainder else -(-n // b)

    def indices(self, epoch: int = 0) -> np.ndarray:
        """int64 positions in ``source`` visited by this shard in ``epoch``, in order (padding
        repeats the shard's last example; see :meth:`valid`)."""
        n = len(self.source)
        if self.shuffle:
            order = np.random.default_rng([self.seed, int(epoch)]).permutation(n)
        else:
            order = np.arange(n)
        if self.num_shards == 1:
            return order.astype(np.int64)
        s = self.shard_size
        block = order[self.shard_index * s : (self.shard_index + 1) * s]
        if len(block) < s:  # pad with the last example (or the first overall for empty shards)
            filler = block[-1] if len(block) else order[0]
            block = np.concatenate([block, np.full(s - len(block), filler, order.dtype)])
        return block.astype(np.int64)

    def valid(self) -> np.ndarray:
        """bool [num_examples]: False for the padding at the end of this shard."""
        v = np.zeros(self.num_examples, bool)
        v[: self.num_valid if self.num_shards > 1 else len(v)] = True
        return v

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """Batches of ``epoch`` (deterministic in ``seed``, ``epoch`` and the shard)."""
        idx = self.indices(epoch)
        valid = self.valid()
        if self.drop_remainder:
            keep = len(idx) - len(idx) % self.batch_size
            idx, valid = idx[:keep], valid[:keep]
        if len(idx) == 0:
            return iter(())
        batches = self._grain(idx) if self.backend == "grain" else self._threads(idx)
        return _with_valid(batches, valid)

    iter_epoch = epoch

    def __iter__(self) -> Iterator[Batch]:
        e, self._next_epoch = self._next_epoch, self._next_epoch + 1
        return self.epoch(e)

    def _grain(self, idx: np.ndarray) -> Iterator[Batch]:
        import grain

        ds = grain.MapDataset.source(_Subset(self.source, idx)).map(self.decode)
        opts = grain.ReadOptions(
            num_threads=self.num_workers,
            prefetch_buffer_size=0 if self.num_workers == 0 else 2 * self.batch_size,
        )
        ds = ds.to_iter_dataset(opts).batch(self.batch_size, batch_fn=collate)
        return iter(ds)

    def _threads(self, idx: np.ndarray) -> Iterator[Batch]:
        def fetch(i: int) -> dict[str, Any]:
            return self.decode(self.source[int(idx[i])])

        def gen() -> Iterator[Batch]:
            if self.num_workers == 0:
                for s in range(0, len(idx), self.batch_size):
                    yield collate([fetch(i) for i in range(s, min(s + self.batch_size, len(idx)))])
                return
            window = 2 * self.batch_size
            with concurrent.futures.ThreadPoolExecutor(self.num_workers) as pool:
                pending: collections.deque = collections.deque()
                nxt, items = 0, []
                while nxt < len(idx) or pending:
                    while nxt < len(idx) and len(pending) < window:
                        pending.append(pool.submit(fetch, nxt))
                        nxt += 1
                    items.append(pending.popleft().result())
                    if len(items) == self.batch_size or (not pending and nxt >= len(idx)):
                        yield collate(items)
                        items = []

        return gen()


def _with_valid(batches: Iterator[Batch], valid: np.ndarray) -> Iterator[Batch]:
    """Adds ``valid`` [B] to each batch (batches arrive in order)."""
    off = 0
    for batch in batches:
        b = len(batch["label"])
        batch["valid"] = valid[off : off + b]
        off += b
        yield batch


def load(
    name: str,
    root: str | os.PathLike,
    category: str | None,
    split: str,
    *,
    pre: Preprocess,
    batch_size: int = 8,
    shuffle: bool = False,
    seed: int = 0,
    drop_remainder: bool = False,
    data_dir: str | os.PathLike | None = None,
    use_tfds: bool = True,
    num_shards: int = 1,
    shard_index: int = 0,
    num_workers: int | None = None,
    backend: str = "grain",
    labelled_anomalies: int = 0,
    split_seed: int = 0,
    calibration_holdout: float = 0.0,
) -> Loader:
    """Loader over one split of one category.

    Args:
      name: dataset name (``mvtec``, ``visa``, ``mpdd``, ``btad``, ``folder``, ``synthetic``).
      root: the dataset root on disk.
      category: category name (``folder``: may be None when ``root`` is the tree).
      split: ``"train"``, ``"test"`` or ``"train_anomalous"`` (the labelled anomalies).
      pre: preprocessing settings (e.g. ``preprocess_for("patchcore", "mvtec", category)``).
      batch_size, shuffle, seed, drop_remainder: batching and per-epoch shuffling.
      data_dir: where tfds copies are prepared (default ``$JAD_DATA_DIR`` or ``~/.cache/jad/tfds``).
      use_tfds: read the prepared tfds copy (True) or the files directly (False); same batches.
      num_shards, shard_index: host sharding (e.g. ``jax.process_count()``, ``jax.process_index()``).
      num_workers: decode threads (default ``min(4, cpu_count)``; 0 = in the calling thread).
      backend: ``"grain"`` (default) or ``"threads"``.
      labelled_anomalies, split_seed: move this many defective test images (with masks) into
        ``"train_anomalous"`` and out of ``"test"`` (:mod:`jad.data.splits`).
      calibration_holdout: reserve this fraction of the training images as ``"calibration"``
        (and remove them from ``"train"``).

    Returns:
      A :class:`Loader`.
    """
    if split not in SPLITS:
        raise DatasetError(f"split={split!r} is unknown; use one of {', '.join(SPLITS)}.")
    if not isinstance(pre, Preprocess):
        raise DatasetError(f"pre={pre!r} must be a jad.data.Preprocess.")
    _check_args(batch_size, num_shards, shard_index, num_workers, backend)
    records = scan(name, root, category)
    kwargs = dict(
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        drop_remainder=drop_remainder,
        num_shards=num_shards,
        shard_index=shard_index,
        num_workers=num_workers,
        backend=backend,
    )
    base = "train" if split in ("train", "calibration") else "test"
    cat = records[base][0].category if records[base] else str(category)
    positions = split_positions(
        split,
        records["test"],
        labelled_anomalies,
        seed=split_seed,
        category=cat,
        n_train=len(records["train"]),
        holdout=calibration_holdout,
    )
    if not use_tfds:
        source, decode = records[base], (lambda r: decode_record(r, pre))
    else:
        from jad.data.builders import prepare

        prepared = prepare(name, root, category, data_dir=data_dir, records=records)
        source, decode = prepared.data_source(base), (lambda e: decode_tfds(e, pre))
    if positions is not None:
        source = _Subset(source, np.asarray(positions, np.int64))
    return Loader(source, decode, **kwargs)
