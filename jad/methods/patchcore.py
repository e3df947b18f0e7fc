"""PatchCore (Roth et al., CVPR 2022) as pure functions over arrays, plus the method object.

Fit: patch features of every normal training image -> approximate greedy coreset -> memory bank.
Score: squared L2 distance of each test patch to its nearest bank row (faiss ``IndexFlatL2``
semantics of the official code), image score = max over patches, anomaly map = bilinear upsample
(align_corners=False) of the patch-score grid to the input size + Gaussian blur sigma=4 (scipy
``reflect``). Spec: ``shared/specs/patchcore.md``; parity with the official code is tested against
``shared/golden/patchcore.npz``.

Options beyond code parity: Euclidean instead of squared distances, k > 1 neighbours (mean of
their distances, as the official ``anomaly_scorer_num_nn``), and the paper's Eq. 7 image-score
reweighting (not implemented by the official code; anomalib's form with b neighbours).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jad import ops
from jad.methods.common import (
    FitContext,
    FitResult,
    Predictions,
    State,
    configured_backbone,
    pad_batch,
)
from jad.utils import distributed
from jad.utils.errors import UserError
from jad.utils.progress import Progress

# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------


def default_mesh() -> jax.sharding.Mesh | None:
    """A 1-D ``data`` mesh over this process's devices (scoring), or None on a single device."""
    devices = jax.local_devices()
    if len(devices) < 2:
        return None
    return jax.sharding.Mesh(np.array(devices), ("data",))


def global_mesh() -> jax.sharding.Mesh | None:
    """A 1-D ``data`` mesh over every device of every process (the coreset of a fit), or None."""
    devices = jax.devices()
    if len(devices) < 2:
        return None
    return jax.sharding.Mesh(np.array(devices), ("data",))


def select_coreset(
    features: np.ndarray | jax.Array,
    *,
    ratio: float,
    key: jax.Array,
    method: str = "approximate",
    projection_dim: int = 128,
    num_starts: int = 10,
    mesh: jax.sharding.Mesh | None = None,
    projection: np.ndarray | None = None,
    start_indices: np.ndarray | None = None,
    progress=None,
) -> np.ndarray:
    """Indices [M] (int32, pick order) of the coreset of ``features`` [N, D], M = int(N * ratio).

    ``ratio >= 1`` keeps every row (no sampling), like a 100 % bank.
    """
    n = int(features.shape[0])
    if ratio >= 1.0:
        return np.arange(n, dtype=np.int32)
    if mesh is not None and jax.process_count() > 1:  # the same rows on every host -> global
        if isinstance(features, jax.Array) and features.is_fully_addressable:
            features = np.asarray(features)  # a per-process device array (e.g. ProxyCore's)
        if isinstance(features, np.ndarray):  # zero rows pad it to the device count
            features = distributed.global_rows(features, mesh, pad=True)
    idx = ops.greedy_coreset(
        features,
        num_rows=n,
        ratio=ratio,
        key=key,
        method=method,
        projection_dim=projection_dim,
        num_starts=num_starts,
        projection=projection,
        start_indices=start_indices,
        mesh=mesh,
        progress=progress,
    )
    return distributed.to_host(idx)


def nearest_bank_distances(
    features: jax.Array,
    bank: jax.Array,
    *,
    k: int = 1,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Squared distances [B, P, k] (ascending) and bank indices [B, P, k] of each patch's k-NN."""
    b, p, d = features.shape
    sq, idx = ops.knn(features.reshape(b * p, d), bank, k=k, mesh=mesh)
    return sq.reshape(b, p, k), idx.reshape(b, p, k)


def patch_scores_from_distances(sq_dists: jax.Array, *, distance: str = "squared") -> jax.Array:
    """[B, P, k] squared distances -> [B, P] patch scores (mean over the k neighbours)."""
    if distance == "squared":
        d = sq_dists
    elif distance == "euclidean":
        d = jnp.sqrt(sq_dists)
    else:
        raise ValueError(f"distance must be 'squared' or 'euclidean', got {distance!r}")
    return jnp.mean(d, axis=-1)


def reweighted_image_scores(
    features: jax.Array,
    patch_scores: jax.Array,
    nn_indices: jax.Array,
    bank: jax.Array,
    *,
    num_support: int = 9,
    mesh: jax.sharding.Mesh | None = None,
) -> jax.Array:
    """The paper's Eq. 7: s = (1 - exp(d*) / sum_{m in N_b(m*)} exp(||m_test* - m||)) * s*.

    s* = max patch score, m_test* = that patch's feature, m* its nearest bank row, N_b(m*) the
    ``num_support`` nearest bank rows of m* (m* included, as in anomalib). Distances inside the
    softmax are Euclidean. features [B, P, D], patch_scores [B, P], nn_indices [B, P, k] -> [B].
    """
    b = features.shape[0]
    star = jnp.argmax(patch_scores, axis=1)  # [B]
    s_star = patch_scores[jnp.arange(b), star]
    m_test = features[jnp.arange(b), star]  # [B, D]
    m_star = bank[nn_indices[jnp.arange(b), star, 0]]  # [B, D]
    n_support = min(num_support, int(bank.shape[0]))
    _, support = ops.knn(m_star, bank, k=n_support, mesh=mesh)  # [B, b]
    diffs = m_test[:, None, :] - bank[support]  # [B, b, D]
    d = jnp.sqrt(jnp.sum(diffs * diffs, axis=-1))
    d_star = jnp.sqrt(jnp.sum((m_test - m_star) ** 2, axis=-1))
    # the support set's first element is m* itself (distance 0 to m*), so put d* first
    d = d.at[:, 0].set(d_star)
    weight = 1.0 - jax.nn.softmax(d, axis=-1)[:, 0]
    return weight * s_star


@functools.partial(jax.jit, static_argnames=("grid", "out_hw", "sigma"))
def anomaly_maps(
    patch_scores: jax.Array, *, grid: tuple[int, int], out_hw: tuple[int, int], sigma: float = 4.0
):
    """[B, h*w] patch scores -> [B, H, W] maps: bilinear (align_corners=False) + Gaussian blur."""
    b = patch_scores.shape[0]
    s = patch_scores.reshape(b, *grid).astype(jnp.float32)
    up = ops.resize_bilinear(s, out_hw)
    if sigma > 0:
        up = ops.gaussian_blur(up, sigma=sigma)
    return up


# The coreset loop reports through jax.debug.callback; one module-level function (stable hash,
# so no recompilation per category) forwards to whichever bar is open.
_OPEN_BARS: list[Progress] = []


def _coreset_progress(done) -> None:
    if _OPEN_BARS:
        _OPEN_BARS[-1].set(int(done))


def bank_options(section) -> dict[str, Any]:
    """Coreset options from a config section with PatchCore's key names (defaults as PatchCore)."""
    return {
        "ratio": float(section.get("coreset_ratio", 0.1)),
        "method": str(section.get("coreset_method", "approximate")),
        "projection_dim": int(section.get("projection_dim", 128)),
        "num_starts": int(section.get("num_starts", 10)),
    }


def score_options(section) -> dict[str, Any]:
    """Scoring options from a config section with PatchCore's key names."""
    return {
        "num_neighbors": int(section.get("num_neighbors", 1)),
        "distance": str(section.get("distance", "squared")),
        "reweight": bool(section.get("reweight", False)),
        "reweight_neighbors": int(section.get("reweight_neighbors", 9)),
        "sigma": float(section.get("sigma", 4.0)),
    }


def build_bank(
    features: np.ndarray | jax.Array,
    *,
    key: jax.Array,
    ratio: float = 0.1,
    method: str = "approximate",
    projection_dim: int = 128,
    num_starts: int = 10,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = True,
) -> State:
    """PatchCore's memory bank from patch features [N, D] of normal images (any method's space).

    Returns ``{"bank": [M, D] float32 (rows in pick order), "coreset_indices": [M] int32}``.
    """
    n = int(features.shape[0])
    if n == 0:
        raise UserError("the training split has no images; nothing to build a memory bank from")
    m = int(n * float(ratio)) if ratio < 1 else n
    with Progress("coreset", m, unit="pick", enabled=progress) as bar:
        _OPEN_BARS.append(bar)
        try:
            idx = select_coreset(
                features,
                ratio=float(ratio),
                key=key,
                method=method,
                projection_dim=projection_dim,
                num_starts=num_starts,
                mesh=mesh,
                progress=_coreset_progress if progress else None,
            )
            bar.set(len(idx))
        finally:
            _OPEN_BARS.remove(bar)
    bank = np.asarray(
        features[idx] if isinstance(features, np.ndarray) else jnp.take(features, idx, 0)
    )
    return {"bank": bank.astype(np.float32), "coreset_indices": idx.astype(np.int32)}


def build_bank_stream(
    rows,
    *,
    key: jax.Array,
    ratio: float = 0.1,
    method: str = "approximate",
    projection_dim: int = 128,
    num_starts: int = 10,
    tmp_dir=None,
    progress: bool | Callable[[int], None] = True,
) -> State:
    """``build_bank`` over patch features on disk (a :class:`jad.utils.rowfile.RowFile` [N, D]):
    the streaming coreset, then the picked rows read from the store. Same bank as ``build_bank``.
    ``progress``: a bar, or a function called with the picks done (about every 1 %)."""
    n = len(rows)
    if method != "approximate":
        raise UserError(
            f"patchcore.coreset_method={method!r} needs the features in memory; the on-disk fit "
            "supports 'approximate' (raise patchcore.feature_cache_gb)"
        )
    if ratio >= 1:
        idx = np.arange(n, dtype=np.int32)
    else:
        m = int(n * float(ratio))
        # Streamed block width: the two in-flight [P, block] buffers stay about 1/8 of the bank
        # (4096..16384 columns), so memory is the bank plus 8 bytes per patch, whatever the ratio.
        bank_bytes = m * int(np.prod(rows.row_shape)) * 4
        fit = max(bank_bytes // (16 * projection_dim * 4), 1)
        block = int(np.clip(2 ** int(np.log2(fit)), 4096, 16384))
        with Progress("coreset (streaming)", m, unit="pick", enabled=progress is True) as bar:
            idx = ops.greedy_coreset_stream(
                rows,
                ratio=float(ratio),
                key=key,
                projection_dim=projection_dim,
                num_starts=num_starts,
                tmp_dir=tmp_dir,
                block=block,
                progress=progress if callable(progress) else bar.set if progress else None,
            )
    return {"bank": rows.take(idx).astype(np.float32, copy=False), "coreset_indices": idx}


def score(
    features: jax.Array,
    bank: jax.Array,
    *,
    grid: tuple[int, int],
    out_hw: tuple[int, int],
    num_neighbors: int = 1,
    distance: str = "squared",
    reweight: bool = False,
    reweight_neighbors: int = 9,
    sigma: float = 4.0,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[jax.Array, jax.Array]:
    """PatchCore scoring of patch features [B, P, D] against ``bank`` [M, D] (any feature space).

    Returns (image scores [B], anomaly maps [B, *out_hw]) as float32 jax arrays.
    """
    k = min(int(num_neighbors), int(bank.shape[0]))
    sq, nn_idx = nearest_bank_distances(features, bank, k=k, mesh=mesh)
    scores = patch_scores_from_distances(sq, distance=distance)
    if reweight:
        img = reweighted_image_scores(
            features, scores, nn_idx, bank, num_support=reweight_neighbors, mesh=mesh
        )
    else:
        img = jnp.max(scores, axis=1)
    return img, anomaly_maps(scores, grid=grid, out_hw=out_hw, sigma=sigma)


def score_per_image(
    features: jax.Array, bank: jax.Array, *, mesh: jax.sharding.Mesh | None = None, **kw: Any
) -> tuple[jax.Array, jax.Array]:
    """:func:`score` one image at a time (``lax.map``): every kNN has the same [P, D] query shape
    whatever the batch size, so a score does not depend on the batch it came in (bit for bit, on
    any number of devices), the function exports with a symbolic batch size (``jad.export``) and
    the kNN stays blocked (bounded memory) inside the artifact."""

    def one(f):
        img, maps = score(f[None], bank, mesh=mesh, **kw)
        return img[0], maps[0]

    return jax.lax.map(one, features)


class DeviceBank:
    """Keeps the device copy of the last bank a predict call used (one upload per state)."""

    def __init__(self):
        self._cache: tuple[Any, jax.Array] | None = None

    def __call__(self, bank) -> jax.Array:
        if self._cache is not None and self._cache[0] is bank:
            return self._cache[1]
        dev = jnp.asarray(bank, jnp.float32)
        self._cache = (bank, dev)
        return dev


# ---------------------------------------------------------------------------------------------
# The method object
# ---------------------------------------------------------------------------------------------


class PatchCore:
    """PatchCore over a frozen backbone. State: ``{"bank": [M, D] f32, "coreset_indices": [M] i32}``."""

    name = "patchcore"

    def __init__(self, config, *, backbone: tuple[Any, Any] | None = None, mesh=None):
        from jad.models.features import feature_grid, make_feature_fn

        self.config = config
        pc = config.patchcore
        self.layers = tuple(config.backbone.layers)
        if backbone is None:
            backbone = configured_backbone(config)
        self.module, self.variables = backbone
        self.image_hw = (int(config.data.crop), int(config.data.crop))
        self.grid = tuple(int(g) for g in feature_grid(self.image_hw, self.layers))
        self.batch_size = int(config.data.batch_size)
        self.mesh = default_mesh() if mesh is None else (mesh or None)
        self.fit_mesh = global_mesh() if mesh is None else (mesh or None)
        self._features = make_feature_fn(
            self.module,
            kind="patchcore",
            layers=self.layers,
            pretrain_embed_dim=int(pc.pretrain_embed_dim),
            target_embed_dim=int(pc.target_embed_dim),
        )
        self._bank = DeviceBank()

    def features(self, images: np.ndarray) -> jax.Array:
        """float32 NHWC images [B, H, W, 3] -> patch features [B, P, D] (batch padded internally)."""
        padded, n = pad_batch(np.asarray(images, np.float32), self.batch_size)
        return self._features(self.variables, padded)[:n]

    def feature_key(self) -> dict[str, Any]:
        """What determines the patch features (the feature cache's key, with the dataset id)."""
        bb, pc = self.config.backbone, self.config.patchcore
        return {
            "extractor": "patchcore",
            "layers": list(self.layers),
            "pretrain_embed_dim": int(pc.pretrain_embed_dim),
            "target_embed_dim": int(pc.target_embed_dim),
            "weights": str(bb.weights),
            "arch": str(bb.arch),
            "dtype": str(bb.get("dtype", "float32")),
            "seed": int(self.config.seed),
        }

    def fit(
        self, train: Iterable[Mapping[str, np.ndarray]], *, key: jax.Array, ctx: FitContext
    ) -> FitResult:
        """Patch features of every training image, then the coreset.

        Features up to ``patchcore.feature_cache_gb`` stay in memory; beyond, they go to a
        feature store on disk (``<workdir>/<category>/feature_cache``, the trainers' cache) and
        the coreset streams over it (:func:`jad.ops.coreset.greedy_coreset_stream`, the same
        picks): the fit then needs memory for the bank, not for the features.
        """
        from jad.train_lib.feature_cache import cache_location, compute_features

        t0 = time.perf_counter()
        n = int(getattr(train, "num_examples", 0))
        if n == 0:
            raise UserError("the training split has no images; nothing to build a memory bank from")
        budget = float(self.config.patchcore.get("feature_cache_gb", 8.0))
        tag, folder = cache_location(
            dict(self.feature_key(), dataset=ctx.dataset_id, n=n), ctx.workdir
        )
        feats, cache = compute_features(
            train,
            self.features,
            num_examples=n,
            num_batches=len(train),
            key=tag,
            folder=folder,
            budget_gb=budget,
            progress=ctx.progress,
        )
        valid = cache.pop("valid")
        on_disk = cache.get("path") is not None
        if on_disk and jax.process_count() > 1:
            raise UserError(
                f"the patch features ({cache['gb']:.1f} GiB) exceed patchcore.feature_cache_gb="
                f"{budget:g}, and the on-disk (streaming) fit runs in one process; raise the "
                "budget or run on one host"
            )
        t_features = time.perf_counter() - t0
        t1 = time.perf_counter()
        if on_disk:
            if not valid.all():
                raise AssertionError("padding rows in a single-process feature store")
            from jad.utils.rowfile import RowFile

            store = RowFile.open_npy(cache["path"])
            n_images = store.shape[0]
            rows = store.reshape_rows(store.shape[-1])
            state = build_bank_stream(
                rows,
                key=key,
                progress=ctx.progress,
                tmp_dir=folder,
                **bank_options(self.config.patchcore),
            )
            n_patches = len(rows)
        else:
            # every host's images (one host: all of them), host order = the single-host order
            feats = distributed.gather_rows(feats, valid)
            n_images = len(feats)
            feats = feats.reshape(-1, feats.shape[-1])
            state = build_bank(
                feats,
                key=key,
                mesh=self.fit_mesh,
                progress=ctx.progress,
                **bank_options(self.config.patchcore),
            )
            n_patches = int(feats.shape[0])
        t_coreset = time.perf_counter() - t1
        info = {
            "features_s": t_features,
            "coreset_s": t_coreset,
            "fit_s": t_features + t_coreset,
            "train_images": int(n_images),
            "train_patches": n_patches,
            "bank_size": int(state["bank"].shape[0]),
            "features_in": "disk (streaming coreset)" if on_disk else "memory",
        }
        return FitResult(state=state, info=info)

    def scoring_function(self, state: State):
        """A pure ``images [B, H, W, 3] -> (image scores [B], maps [B, H, W])`` with the backbone
        and the bank as constants: what ``jad.export`` serialises (per-image kNN)."""
        from jad.models.features import patchcore_features

        pc = self.config.patchcore
        bank = jnp.asarray(state["bank"], jnp.float32)
        module, variables = self.module, self.variables

        def fn(images):
            feats = patchcore_features(
                module,
                variables,
                images,
                layers=self.layers,
                pretrain_embed_dim=int(pc.pretrain_embed_dim),
                target_embed_dim=int(pc.target_embed_dim),
            )
            return score_per_image(
                feats, bank, grid=self.grid, out_hw=self.image_hw, **score_options(pc)
            )

        return fn

    def predict(self, state: State, images: np.ndarray) -> Predictions:
        n = images.shape[0]
        padded, _ = pad_batch(np.asarray(images, np.float32), self.batch_size)
        feats = self._features(self.variables, padded)
        img, maps = score_per_image(
            feats,
            self._bank(state["bank"]),
            grid=self.grid,
            out_hw=self.image_hw,
            mesh=self.mesh,
            **score_options(self.config.patchcore),
        )
        return Predictions(
            image_scores=np.asarray(img[:n], np.float32),
            anomaly_maps=np.asarray(maps[:n], np.float32),
        )


def from_config(config) -> PatchCore:
    return PatchCore(config)
