"""PBAS (Chen et al., TCSVT 2025): Progressive Boundary guided Anomaly Synthesis.

Frozen WRN50-2 layer2+3 patch features (1536-d, 36 x 36 at 288 px) -> a Linear projector P ->
per-patch nearest "sample centre" by cosine similarity -> the mean Euclidean distance r to those
centres is the ABL loss, and every patch is pushed outward along its centre -> feature ray by
k * r to synthesise an anomaly -> one MLP discriminator D with BatchNorm over [normal; synthetic]
is trained with BCE (normal -> 0, synthetic -> 1). Loss = r + BCE_n + BCE_a. Inference: patch
score = sigmoid(D(P(f))), image score = max, map = bilinear upsample + Gaussian blur (sigma 4).

Everything follows the official code (spec ``shared/specs/pbas.md`` §4-§8; parity with
``shared/golden/pbas.npz`` is tested): xavier-normal weights and torch-default biases, Adam with
coupled L2 (1e-5) for P and AdamW (wd 0.01) for D, the sequential EMA merge of the sample centres
(a vectorised scatter is wrong by 1e-2), BatchNorm1d in train mode over the 2N rows with the
unbiased running variance, BCE with log clamped at -100. Where jad differs on purpose: a tiny
epsilon guards the direction u / d when a feature equals its centre (the official code produces
NaN), and the honest protocol (``train.select``, ``jad.train_lib``) replaces test-set selection.

The pure pieces (``init_heads``, ``sample_centres``, ``loss_and_grads``, ``patch_scores``) are
module functions so the golden test drives them directly; :class:`PBAS` is the trainer.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jad.methods.common import (
    Batch,
    Predictions,
    State,
    TrainData,
    TrainState,
    configured_backbone,
    pad_batch,
    parse_precision,
)
from jad.models.heads import PBASDiscriminator, PBASProjector
from jad.ops import reduce as R
from jad.utils.errors import UserError

HIGHEST = lax.Precision.HIGHEST


# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------


def modules(dim: int = 1536, hidden: int = 1024, precision=HIGHEST):
    return PBASProjector(dim=dim, precision=precision), PBASDiscriminator(
        hidden=hidden, precision=precision
    )


def init_heads(key: jax.Array, dim: int = 1536, hidden: int = 1024) -> tuple[dict, dict]:
    """(params, batch_stats) of a fresh projector + discriminator (official initialisers)."""
    proj, dsc = modules(dim, hidden)
    kp, kd = jax.random.split(key)
    x = jnp.zeros((2, dim), jnp.float32)
    vp = proj.init(kp, x)
    vd = dsc.init(kd, x, train=False)
    return (
        {"projector": vp["params"], "discriminator": vd["params"]},
        {"discriminator": vd["batch_stats"]},
    )


def heads_from_torch(pre_projection: dict, discriminator: dict) -> tuple[dict, dict]:
    """(params, batch_stats) in jad's layout from the official torch state dicts of
    ``Projection(1536, 1536, 1)`` and ``Discriminator(1536, n_layers=2, hidden=1024)`` (torch
    Linear weights [out, in] become Flax kernels [in, out]); e.g. an official checkpoint's heads
    or ``make_inputs.pbas_head_params(0)`` of the golden files."""
    p, d = pre_projection, discriminator
    a = lambda x: jnp.asarray(np.asarray(x, np.float32))
    params = {
        "projector": {
            "fc": {
                "dense": {"kernel": a(p["layers.0fc.weight"]).T, "bias": a(p["layers.0fc.bias"])}
            }
        },
        "discriminator": {
            "fc1": {
                "dense": {
                    "kernel": a(d["body.block1.0.weight"]).T,
                    "bias": a(d["body.block1.0.bias"]),
                }
            },
            "bn": {"scale": a(d["body.block1.1.weight"]), "bias": a(d["body.block1.1.bias"])},
            "tail": {"dense": {"kernel": a(d["tail.0.weight"]).T}},
        },
    }
    stats = {
        "discriminator": {
            "bn": {
                "mean": a(d["body.block1.1.running_mean"]),
                "var": a(d["body.block1.1.running_var"]),
            }
        }
    }
    return params, stats


def project(params: dict, features: jax.Array, precision=HIGHEST) -> jax.Array:
    """[..., D] patch features -> [..., D] projected features."""
    proj, _ = modules(features.shape[-1], precision=precision)
    return proj.apply({"params": params["projector"]}, features)


def _normalize(x: jax.Array) -> jax.Array:
    """torch ``F.normalize``: x / max(||x||, 1e-12) over the last axis."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def nearest_centre(z: jax.Array, centres: jax.Array, precision=HIGHEST) -> jax.Array:
    """Index [N] of each row's most cosine-similar centre (first index on ties); z [N, D]."""
    sim = jnp.matmul(_normalize(z), _normalize(centres).T, precision=precision)
    return jnp.argmax(sim, axis=1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("momentum",))
def merge_centres(centres: jax.Array, batch_mean: jax.Array, momentum: float = 0.9) -> jax.Array:
    """One centre-refinement step of the official ``trainer`` (spec §5).

    Each row j of ``batch_mean`` [HW, D] is matched (cosine, against the centres before this
    batch) to a centre a[j]; then, sequentially in j, ``C[a[j]] = m * C[a[j]] + (1 - m) * M[j]``,
    so rows hit several times compound (a scatter would keep one write and is wrong by 1e-2).
    """
    a = nearest_centre(batch_mean, centres)

    def body(c, j):
        row = momentum * c[a[j]] + (1.0 - momentum) * batch_mean[j]
        return lax.dynamic_update_index_in_dim(c, row, a[j], axis=0), None

    centres, _ = lax.scan(body, centres, jnp.arange(batch_mean.shape[0]))
    return centres


@jax.jit
def _projected_batch_mean(params: dict, features: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over the real images of a batch of projected features: [B, HW, D] -> [HW, D]."""
    z = project(params, features)
    m = mask.astype(z.dtype)[:, None, None]
    return jnp.sum(z * m, axis=0) / jnp.sum(mask.astype(z.dtype))


def sample_centres(params: dict, batches, momentum: float = 0.9) -> jax.Array:
    """The sample centres C [HW, D] from one pass over batches of (features [B, HW, D], mask [B]).

    Batch 0's per-position mean initialises C; every later batch is merged with
    :func:`merge_centres`. The projector is at its initial weights (official behaviour).
    """
    centres = None
    for features, mask in batches:
        mean = _projected_batch_mean(params, jnp.asarray(features), jnp.asarray(mask))
        centres = mean if centres is None else merge_centres(centres, mean, momentum=momentum)
    if centres is None:
        raise UserError("the training split has no images; nothing to build PBAS centres from")
    return centres


def _log_probs(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(log p, log(1 - p)) of sigmoid(logits), each clamped at -100 like torch ``BCELoss``."""
    return (
        jnp.maximum(jax.nn.log_sigmoid(logits), -100.0),
        jnp.maximum(jax.nn.log_sigmoid(-logits), -100.0),
    )


def loss_fn(
    params: dict,
    batch_stats: dict,
    centres: jax.Array,
    features: jax.Array,
    mask: jax.Array | None,
    *,
    k: float = 0.25,
    margin: float = 0.5,
    train: bool = True,
    axis_name: str | None = None,
    precision=HIGHEST,
) -> tuple[jax.Array, tuple[dict, dict]]:
    """The official ``_train_discriminator`` loss on one batch (spec §6).

    Args:
      features: [B, HW, D] (or [N, D]) backbone patch features; mask: [B] (or [N]) 1 = real
        example, 0 = padding (excluded from r, the BCE means and the BatchNorm statistics).
      train: BatchNorm with batch statistics (training) or running statistics (validation).

    Returns:
      (this device's loss contribution, (updated batch_stats, metrics)). Metrics are global.
    """
    d_in = features.shape[-1]
    rows = features.reshape(-1, d_in)
    row_mask = None
    if mask is not None:
        row_mask = jnp.repeat(mask.astype(jnp.float32), rows.shape[0] // mask.shape[0])
    z = project(params, rows, precision)
    a = nearest_centre(lax.stop_gradient(z), centres, precision)
    c = centres[a]
    u = z - c
    d = jnp.sqrt(jnp.maximum(jnp.sum(u * u, axis=-1), 1e-24))  # guarded: d = 0 would give NaN
    r = R.masked_mean(d, row_mask, axis_name)  # global mean distance (the ABL term's value)
    fake = z + lax.stop_gradient(k * r * u / d[:, None])
    _, dsc = modules(d_in, params["discriminator"]["fc1"]["dense"]["kernel"].shape[1], precision)
    both_mask = None if row_mask is None else jnp.concatenate([row_mask, row_mask])
    variables = {"params": params["discriminator"], "batch_stats": batch_stats["discriminator"]}
    if train:
        logits, upd = dsc.apply(
            variables,
            jnp.concatenate([z, fake]),
            train=True,
            mask=both_mask,
            axis_name=axis_name,
            mutable=["batch_stats"],
        )
        new_stats = {"discriminator": upd["batch_stats"]}
    else:
        logits = dsc.apply(variables, jnp.concatenate([z, fake]), train=False)
        new_stats = batch_stats
    n = rows.shape[0]
    log_p, log_1mp = _log_probs(logits)
    bce_true = R.loss_contribution(-log_1mp[:n], row_mask, axis_name)  # normal -> 0
    bce_fake = R.loss_contribution(-log_p[n:], row_mask, axis_name)  # synthetic -> 1
    svdd = R.loss_contribution(d, row_mask, axis_name)
    loss = svdd + bce_true + bce_fake
    p = jax.nn.sigmoid(logits)
    d_fake = jnp.linalg.norm(fake - c, axis=-1)
    g = functools.partial(R.global_value, axis_name=axis_name)
    metrics = {
        "loss": g(loss),
        "svdd": g(svdd),
        "bce_true": g(bce_true),
        "bce_fake": g(bce_fake),
        "p_true": R.masked_mean((p[:n] < margin).astype(jnp.float32), row_mask, axis_name),
        "p_fake": R.masked_mean((p[n:] >= margin).astype(jnp.float32), row_mask, axis_name),
        "r_fake": R.masked_mean(d_fake, row_mask, axis_name),
    }
    return loss, (new_stats, metrics)


def loss_and_grads(params, batch_stats, centres, features, mask, **kw):
    """(loss contribution, grads, new batch_stats, metrics); grads synced over ``axis_name``."""
    (loss, (stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, centres, features, mask, **kw
    )
    return loss, R.sync_grads(grads, kw.get("axis_name")), stats, metrics


def optimizer(
    lr: float = 1e-4,
    dsc_lr: float = 2e-4,
    proj_weight_decay: float = 1e-5,
    dsc_weight_decay: float = 0.01,
) -> optax.GradientTransformation:
    """Projector: torch ``Adam(lr, weight_decay)`` (coupled L2, added to the gradient before the
    moments); discriminator: torch ``AdamW(dsc_lr)`` with its default decoupled decay 0.01."""
    return optax.multi_transform(
        {
            "projector": optax.chain(optax.add_decayed_weights(proj_weight_decay), optax.adam(lr)),
            "discriminator": optax.adamw(dsc_lr, weight_decay=dsc_weight_decay),
        },
        {"projector": "projector", "discriminator": "discriminator"},
    )


def patch_scores(
    params: dict, batch_stats: dict, features: jax.Array, precision=HIGHEST
) -> jax.Array:
    """Inference (eval-mode BN): features [B, HW, D] -> sigmoid scores [B, HW]."""
    b, hw, d_in = features.shape
    z = project(params, features.reshape(b * hw, d_in), precision)
    _, dsc = modules(d_in, params["discriminator"]["fc1"]["dense"]["kernel"].shape[1], precision)
    logits = dsc.apply(
        {"params": params["discriminator"], "batch_stats": batch_stats["discriminator"]},
        z,
        train=False,
    )
    return jax.nn.sigmoid(logits).reshape(b, hw)


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


class PBAS:
    """PBAS trainer on cached frozen-backbone features (see the module docstring)."""

    name = "pbas"
    official_selection = ("image_auroc", "pixel_auroc")  # best test I-AUROC + P-AUROC per epoch

    def __init__(self, config, *, backbone: tuple[Any, Any] | None = None):
        from jad.models.features import feature_grid, make_feature_fn

        self.config = config
        cfg = config.pbas
        self.k = float(cfg.k)
        self.margin = float(cfg.margin)
        self.momentum = float(cfg.centre_momentum)
        self.hidden = int(cfg.dsc_hidden)
        self.dim = int(cfg.target_embed_dim)
        self.precision = parse_precision(cfg.precision, "pbas.precision")
        for key in ("k", "lr", "dsc_lr"):
            if not float(cfg[key]) > 0:
                raise UserError(f"pbas.{key}={cfg[key]!r} must be a positive number")
        if int(cfg.dsc_layers) != 2 or int(cfg.pre_proj) != 1:
            raise UserError(
                "pbas.dsc_layers must be 2 and pbas.pre_proj 1 (the official configuration; "
                "other depths are not implemented)"
            )
        self.layers = tuple(config.backbone.layers)
        self.image_hw = (int(config.data.crop), int(config.data.crop))
        self.grid = tuple(int(g) for g in feature_grid(self.image_hw, self.layers))
        self.batch_size = int(config.train.batch_size)
        self.eval_batch_size = int(config.data.batch_size)
        self.tx = optimizer(
            float(cfg.lr),
            float(cfg.dsc_lr),
            float(cfg.proj_weight_decay),
            float(cfg.dsc_weight_decay),
        )
        self._backbone = backbone
        self._feature_fn = None
        self._make_feature_fn = functools.partial(
            make_feature_fn,
            kind="patchcore",
            layers=self.layers,
            pretrain_embed_dim=int(cfg.pretrain_embed_dim),
            target_embed_dim=self.dim,
        )
        self._scores = jax.jit(functools.partial(patch_scores, precision=self.precision))
        self._maps = None

    # -- frozen features --------------------------------------------------------------------
    @property
    def backbone(self):
        if self._backbone is None:
            self._backbone = configured_backbone(self.config)
        return self._backbone

    def embed(self, images: np.ndarray) -> jax.Array:
        """float32 NHWC images [B, H, W, 3] -> patch features [B, HW, D] (frozen backbone)."""
        module, variables = self.backbone
        if self._feature_fn is None:
            self._feature_fn = self._make_feature_fn(module)
        padded, n = pad_batch(np.asarray(images, np.float32), self.eval_batch_size)
        return self._feature_fn(variables, padded)[:n]

    # -- training ---------------------------------------------------------------------------
    def init(self, key: jax.Array, sample_batch: Batch) -> TrainState:
        hw = int(np.prod(self.grid))
        params, batch_stats = init_heads(key, self.dim, self.hidden)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=self.tx.init(params),
            rng=jax.random.fold_in(key, 1),
            extras={"centres": jnp.zeros((hw, self.dim), jnp.float32)},
        )

    def init_from_data(self, state: TrainState, data: TrainData, order: np.ndarray) -> TrainState:
        """The sample centres: one pass over the training features in ``order`` (a seeded
        permutation, as the official pass consumes one shuffle of the loader)."""
        feats = data.arrays["features"]
        bs = self.batch_size

        def batches():
            for s in range(0, len(order), bs):
                idx = order[s : s + bs]
                x = np.asarray(feats[idx], np.float32)
                yield x, np.ones((len(idx),), np.float32)

        centres = sample_centres(state.params, batches(), self.momentum)
        return state.replace(extras={"centres": centres})

    def train_step(
        self, state: TrainState, batch: Batch, axis_name: str | None = None
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        _, grads, stats, metrics = loss_and_grads(
            state.params,
            state.batch_stats,
            state.extras["centres"],
            batch["features"],
            batch.get("mask"),
            k=self.k,
            margin=self.margin,
            axis_name=axis_name,
            precision=self.precision,
        )
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = state.replace(
            step=state.step + 1, params=params, batch_stats=stats, opt_state=opt_state
        )
        return new, metrics

    def eval_loss(self, state: TrainState, batch: Batch) -> jax.Array:
        """Normal-only validation criterion: the training loss on held-out normal images (eval-mode
        BatchNorm, their own synthetic anomalies, the fixed centres). Lower is better."""
        loss, (_, metrics) = loss_fn(
            state.params,
            state.batch_stats,
            state.extras["centres"],
            batch["features"],
            batch.get("mask"),
            k=self.k,
            margin=self.margin,
            train=False,
            precision=self.precision,
        )
        return metrics["loss"]

    def export(self, state: TrainState) -> State:
        return {"params": state.params, "batch_stats": state.batch_stats}

    # -- inference --------------------------------------------------------------------------
    def predict_features(self, state: State, features: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(image scores [B], maps [B, H, W]) from backbone features [B, HW, D]."""
        from jad.methods.patchcore import anomaly_maps

        scores = self._scores(state["params"], state["batch_stats"], features)
        maps = anomaly_maps(
            scores, grid=self.grid, out_hw=self.image_hw, sigma=float(self.config.pbas.sigma)
        )
        return jnp.max(scores, axis=1), maps

    def scoring_function(self, state: State):
        """Pure ``images -> (image scores, maps)`` with backbone and heads as constants (export)."""
        from jad.models.features import patchcore_features

        module, variables = self.backbone
        cfg = self.config.pbas

        def fn(images):
            feats = patchcore_features(
                module,
                variables,
                images,
                layers=self.layers,
                pretrain_embed_dim=int(cfg.pretrain_embed_dim),
                target_embed_dim=self.dim,
            )
            return self.predict_features(state, feats)

        return fn

    def predict(self, state: State, images: np.ndarray) -> Predictions:
        n = images.shape[0]
        img, maps = self.predict_features(state, self.embed(images))
        return Predictions(
            image_scores=np.asarray(img[:n], np.float32),
            anomaly_maps=np.asarray(maps[:n], np.float32),
        )


def from_config(config) -> PBAS:
    return PBAS(config)
