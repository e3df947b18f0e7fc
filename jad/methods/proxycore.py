"""ProxyCore: patch-level proxy metric learning with coreset pseudo-labels (crimama/ProxyCore).

Frozen WRN50-2 PatchCore patch features (layer2+3, 1024-d, 784 patches per image at 224 px) are
the training examples, one per patch. A greedy coreset of the raw training patches (ratio
``pslabel_ratio``) gives K proxies; each patch's pseudo-label is its cosine-nearest proxy. Two MLPs
(embedding, then projection: Linear 1024->4096, BatchNorm1d, ReLU, Linear 4096->1024) and a
trainable proxy matrix W [K, 1024] are trained with a normalised-softmax loss
``s_k = <z, W_k / ||W_k||> / T`` (z not normalised), focal (gamma 2) or cross-entropy, on features
with Gaussian noise N(0, noise_std) added every step, with AdamP. Inference is PatchCore in the
space of the embedding MLP: a fresh coreset bank (``bank_ratio``) of the embedded training
patches, squared-L2 1-NN patch scores, max for the image, bilinear + Gaussian blur for the map,
all through :func:`jad.methods.patchcore.build_bank` / :func:`jad.methods.patchcore.score`.

Spec: ``shared/specs/proxycore.md``. Two variants (``proxycore.variant``):

- ``fixed`` (default): pseudo-labels aligned with their patches, proxies initialised with the
  row-normalised coreset features, focal loss per sample then mean.
- ``faithful``: the defects that produced the logged results (spec §11): B1 labels randomly
  permuted over the training patches (frequencies kept; ``shuffle_labels_bug``), B2 proxies
  overwritten by U(-1/sqrt(D), 1/sqrt(D)) = U(-1/32, 1/32) (``proxy_init="uniform"``), B3 focal
  loss of the batch-mean cross-entropy (``focal_on_batch_mean``; the code before 2024-07-27).

Each toggle can be set on its own; unset (None) it follows the variant. Not reproduced on purpose:
B4 test-set selection (``train.select=test_official`` reproduces it, labelled invalid), B5 (the
optimiser is AdamP with the package defaults in both variants, as the official code ran).

Pure pieces (``init_params``, ``loss_fn``, ``proxy_logits``, ``pseudo_labels``, ``embed_patches``)
are module functions that the tests drive; :class:`ProxyCore` is the trainer of
``jad.train_lib.loop`` (protocol in ``jad.methods.common``).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import PartitionSpec as P

from jad.methods import patchcore
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
from jad.models.heads import ProxyMLP
from jad.ops import reduce as R
from jad.optim.adamp import adamp
from jad.utils import distributed
from jad.utils.errors import UserError

HIGHEST = lax.Precision.HIGHEST
VARIANTS = ("fixed", "faithful")
LOSSES = ("focal", "ce")
PROXY_INITS = ("coreset", "uniform")
LABEL_RULES = ("cosine", "dot")
# Keys that are not per-step: fold_in(fold_in(state.rng, AUX), tag); steps never reach AUX.
AUX = 2**31 - 1
TAG_PSLABEL, TAG_SHUFFLE, TAG_BANK = 1, 2, 3
LABEL_BLOCK_ROWS = 1024  # rows per device per label block (fixed: bits independent of devices)
LABEL_BLOCK_PROXIES = 4096
CHUNK_ROWS = 8192  # host -> device upload / embedding chunk


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Options:
    """``config.proxycore`` read once; every bad value is a one-line :class:`UserError`."""

    variant: str
    shuffle_labels_bug: bool
    proxy_init: str
    focal_on_batch_mean: bool
    pslabel_ratio: float
    bank_ratio: float
    projection_dim: int
    num_starts: int
    label_rule: str
    hidden: int
    out: int
    temperature: float
    loss: str
    gamma: float
    alpha: float
    noise_std: float
    lr: float
    weight_decay: float
    b1: float
    b2: float
    eps: float
    delta: float
    wd_ratio: float
    proxy_shard_gb: float
    sigma: float
    precision: Any

    @classmethod
    def from_config(cls, config) -> Options:
        c = config.proxycore

        def choice(key, allowed, value=None):
            v = str(c[key] if value is None else value)
            if v not in allowed:
                raise UserError(
                    f"proxycore.{key}={v!r} is unknown; use one of {', '.join(allowed)}"
                )
            return v

        variant = choice("variant", VARIANTS)
        faithful = variant == "faithful"

        def toggle(key, default):
            v = c.get(key, None)
            return default if v is None else v

        for key in ("pslabel_ratio", "bank_ratio"):
            if not 0.0 < float(c[key]) <= 1.0:
                raise UserError(f"proxycore.{key}={c[key]!r} must be in (0, 1]")
        for key in ("temperature", "lr", "hidden", "out", "projection_dim", "num_starts"):
            if not float(c[key]) > 0:
                raise UserError(f"proxycore.{key}={c[key]!r} must be a positive number")
        for key in ("gamma", "alpha", "noise_std", "weight_decay", "proxy_shard_gb", "sigma"):
            if not float(c[key]) >= 0:
                raise UserError(f"proxycore.{key}={c[key]!r} must be >= 0")
        for key in ("b1", "b2"):
            if not 0.0 <= float(c[key]) < 1.0:
                raise UserError(f"proxycore.{key}={c[key]!r} must be in [0, 1)")
        precision = parse_precision(c.precision, "proxycore.precision")
        loss = choice("loss", LOSSES)
        o = cls(
            variant=variant,
            shuffle_labels_bug=bool(toggle("shuffle_labels_bug", faithful)),
            proxy_init=choice(
                "proxy_init",
                PROXY_INITS,
                toggle("proxy_init", "uniform" if faithful else "coreset"),
            ),
            focal_on_batch_mean=bool(toggle("focal_on_batch_mean", faithful)),
            pslabel_ratio=float(c.pslabel_ratio),
            bank_ratio=float(c.bank_ratio),
            projection_dim=int(c.projection_dim),
            num_starts=int(c.num_starts),
            label_rule=choice("label_rule", LABEL_RULES),
            hidden=int(c.hidden),
            out=int(c.out),
            temperature=float(c.temperature),
            loss=loss,
            gamma=0.0 if loss == "ce" else float(c.gamma),
            alpha=float(c.alpha),
            noise_std=float(c.noise_std),
            lr=float(c.lr),
            weight_decay=float(c.weight_decay),
            b1=float(c.b1),
            b2=float(c.b2),
            eps=float(c.eps),
            delta=float(c.delta),
            wd_ratio=float(c.wd_ratio),
            proxy_shard_gb=float(c.proxy_shard_gb),
            sigma=float(c.sigma),
            precision=precision,
        )
        dim = int(config.proxycore.target_embed_dim)
        if o.proxy_init == "coreset" and o.out != dim:
            raise UserError(
                f"proxycore.proxy_init='coreset' needs proxycore.out ({o.out}) equal to the "
                f"feature dimension proxycore.target_embed_dim ({dim}); or use proxy_init='uniform'"
            )
        return o


# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------


def modules(hidden: int = 4096, out: int = 1024, precision=HIGHEST) -> tuple[ProxyMLP, ProxyMLP]:
    """(embedding MLP, projection MLP)."""
    return (
        ProxyMLP(hidden=hidden, out=out, precision=precision),
        ProxyMLP(hidden=hidden, out=out, precision=precision),
    )


@functools.partial(jax.jit, static_argnames=("dim", "hidden", "out", "num_proxies", "num_padded"))
def init_params(
    key: jax.Array,
    dim: int,
    *,
    hidden: int = 4096,
    out: int = 1024,
    num_proxies: int,
    num_padded: int | None = None,
) -> tuple[dict, dict]:
    """(params, batch_stats) with torch-default initialisers.

    params: ``embedding`` / ``projection`` (ProxyMLP) and ``proxies`` [num_padded, out] float32:
    rows < num_proxies ~ U(-1/sqrt(out), 1/sqrt(out)) (the official overwrite, B2), pad rows 0
    (masked out of the logits; they never move). batch_stats: the two BatchNorms. Jitted: one
    compile, where Flax's eager ``init`` compiles each initialiser per shape.
    """
    emb, proj = modules(hidden, out)
    ke, kp, kw = jax.random.split(key, 3)
    ve = emb.init(ke, jnp.zeros((2, dim), jnp.float32), train=False)
    vp = proj.init(kp, jnp.zeros((2, out), jnp.float32), train=False)
    bound = 1.0 / float(out) ** 0.5
    w = jax.random.uniform(kw, (num_proxies, out), jnp.float32, -bound, bound)
    num_padded = num_proxies if num_padded is None else int(num_padded)
    if num_padded < num_proxies:
        raise AssertionError(f"num_padded {num_padded} < num_proxies {num_proxies}")
    w = jnp.pad(w, ((0, num_padded - num_proxies), (0, 0)))
    params = {"embedding": ve["params"], "projection": vp["params"], "proxies": w}
    return params, {"embedding": ve["batch_stats"], "projection": vp["batch_stats"]}


def normalize_rows(w: jax.Array) -> jax.Array:
    """torch ``F.normalize(w, dim=-1)`` (w / max(||w||, 1e-12)) with a finite gradient at 0."""
    return w * lax.rsqrt(jnp.maximum(jnp.sum(w * w, axis=-1, keepdims=True), 1e-24))


def proxy_logits(
    z: jax.Array,
    proxies: jax.Array,
    temperature: float,
    num_valid: int | None = None,
    precision=HIGHEST,
) -> jax.Array:
    """``s = z @ normalize(W).T / T``: z [N, D] (not normalised), W [Kp, D] -> [N, Kp] float32.
    Columns >= ``num_valid`` (padding of the proxy axis) are -inf."""
    s = jnp.matmul(z, normalize_rows(proxies).T, precision=precision) / temperature
    kp = proxies.shape[0]
    if num_valid is not None and num_valid < kp:
        s = jnp.where(jnp.arange(kp) < num_valid, s, -jnp.inf)
    return s


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-row ``-log softmax(logits)[label]``: [N, K], [N] int -> [N]."""
    picked = jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=1)[:, 0]
    return jax.nn.logsumexp(logits, axis=-1) - picked


def focal(ce: jax.Array, gamma: float = 2.0, alpha: float = 1.0) -> jax.Array:
    """``alpha (1 - p)^gamma CE`` with ``p = exp(-CE)`` (gamma 0 = cross-entropy)."""
    if gamma == 0:
        return alpha * ce
    return alpha * jnp.power(-jnp.expm1(-ce), gamma) * ce


def _noise(key: jax.Array, shape: tuple[int, ...], axis_name: str | None) -> jax.Array:
    """N(0, 1) noise of the global batch; under pmap this device's rows of the same draw."""
    if axis_name is None:
        return jax.random.normal(key, shape, jnp.float32)
    ndev = lax.axis_size(axis_name)
    full = jax.random.normal(key, (shape[0] * ndev, *shape[1:]), jnp.float32)
    return lax.dynamic_slice_in_dim(full, lax.axis_index(axis_name) * shape[0], shape[0], 0)


def embed_patches(
    params: dict, batch_stats: dict, features: jax.Array, precision=HIGHEST
) -> jax.Array:
    """Embedding MLP in eval mode (running BatchNorm statistics): [..., D] -> [..., out]."""
    lead, d = features.shape[:-1], features.shape[-1]
    kernel = params["embedding"]["fc2"]["dense"]["kernel"]
    hidden, out = params["embedding"]["fc1"]["dense"]["kernel"].shape[1], kernel.shape[1]
    emb, _ = modules(hidden, out, precision)
    z = emb.apply(
        {"params": params["embedding"], "batch_stats": batch_stats["embedding"]},
        features.reshape(-1, d),
        train=False,
    )
    return z.reshape(*lead, out)


def loss_fn(
    params: dict,
    batch_stats: dict,
    features: jax.Array,
    labels: jax.Array,
    mask: jax.Array | None,
    noise_key: jax.Array | None,
    *,
    temperature: float = 0.05,
    gamma: float = 2.0,
    alpha: float = 1.0,
    focal_on_batch_mean: bool = False,
    noise_std: float = 1.0,
    num_valid: int | None = None,
    train: bool = True,
    axis_name: str | None = None,
    precision=HIGHEST,
) -> tuple[jax.Array, tuple[dict, dict]]:
    """The ProxyCore loss of one batch of patches (spec §5-§6).

    Args:
      features: [N, D] raw patch features; labels: [N] int pseudo-labels; mask: [N] (1 = real
        row, 0 = padding: excluded from BatchNorm statistics and means) or None.
      noise_key: the step's key (``fold_in(rng, step)``); None or ``noise_std == 0``: no noise.
      focal_on_batch_mean: B3 (official logged runs): focal of the batch-mean CE; else the mean
        of the per-sample focal losses.
      num_valid: real proxies (the rest of W's rows are padding, masked to -inf).
      train: BatchNorm in train mode (batch statistics, running stats updated) or eval mode.

    Returns:
      (this device's loss contribution, (new batch_stats, metrics)); metrics are global.
    """
    x = features.astype(jnp.float32)
    if noise_key is not None and noise_std > 0:
        x = x + noise_std * _noise(noise_key, x.shape, axis_name)
    hidden = params["embedding"]["fc1"]["dense"]["kernel"].shape[1]
    out = params["embedding"]["fc2"]["dense"]["kernel"].shape[1]
    emb, proj = modules(hidden, out, precision)

    def run(name, module, h):
        variables = {"params": params[name], "batch_stats": batch_stats[name]}
        if not train:
            return module.apply(variables, h, train=False), batch_stats[name]
        y, upd = module.apply(
            variables, h, train=True, mask=mask, axis_name=axis_name, mutable=["batch_stats"]
        )
        return y, upd["batch_stats"]

    h, stats_e = run("embedding", emb, x)
    z, stats_p = run("projection", proj, h)
    logits = proxy_logits(z, params["proxies"], temperature, num_valid, precision)
    ce = cross_entropy(logits, labels)
    if focal_on_batch_mean:
        # focal(global mean CE): each device differentiates 1/ndev of it (the psum in the mean
        # sums the devices' cotangents), so pmap computes the jit gradient.
        ce_mean = R.masked_mean(ce, mask, axis_name)
        ndev = lax.axis_size(axis_name) if axis_name else 1
        loss = focal(ce_mean, gamma, alpha) / ndev
    else:
        loss = R.loss_contribution(focal(ce, gamma, alpha), mask, axis_name)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    metrics = {
        "loss": R.global_value(loss, axis_name),
        "ce": R.masked_mean(ce, mask, axis_name),
        "accuracy": R.masked_mean(correct, mask, axis_name),
        "z_norm": R.masked_mean(jnp.linalg.norm(z, axis=-1), mask, axis_name),
    }
    return loss, ({"embedding": stats_e, "projection": stats_p}, metrics)


def loss_and_grads(params, batch_stats, features, labels, mask, noise_key, **kw):
    """(loss contribution, grads synced over ``axis_name``, new batch_stats, metrics)."""
    (loss, (stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, features, labels, mask, noise_key, **kw
    )
    return loss, R.sync_grads(grads, kw.get("axis_name")), stats, metrics


def _is_proxy(path) -> bool:
    return any(getattr(k, "key", None) == "proxies" for k in path)


def optimizer(
    lr: float = 1e-5,
    weight_decay: float = 1e-2,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
) -> optax.GradientTransformation:
    """AdamP over every parameter (official: ``adamp.AdamP(model.parameters(), lr, wd)``).

    Channel axis: -1 for Flax Dense kernels [in, out]; 0 for the proxy matrix [K, D] (one proxy
    per row, the torch layout's output axis), whose rows are scale invariant in the loss.
    """
    return adamp(
        lr,
        b1=b1,
        b2=b2,
        eps=eps,
        weight_decay=weight_decay,
        delta=delta,
        wd_ratio=wd_ratio,
        channel_axis=lambda path, leaf: 0 if _is_proxy(path) else -1,
    )


# -- pseudo-labels ------------------------------------------------------------------------------


def _block_argmax(x: jax.Array, w: jax.Array, *, kb: int, num_valid: int) -> jax.Array:
    """First index of the max of ``x @ w.T`` per row, over proxy blocks of ``kb`` rows.

    x [B, D], w [Kp, D] (Kp a multiple of kb; rows >= num_valid never win) -> [B] int32.
    """
    iota = jnp.arange(kb, dtype=jnp.int32)

    def body(j, carry):
        best, arg = carry
        blk = lax.dynamic_slice_in_dim(w, j * kb, kb, axis=0)
        s = lax.dot_general(
            x, blk, (((1,), (1,)), ((), ())), precision=HIGHEST, preferred_element_type=jnp.float32
        )
        s = jnp.where((j * kb + iota < num_valid)[None, :], s, -jnp.inf)
        m = jnp.max(s, axis=1)
        a = jnp.argmax(s, axis=1).astype(jnp.int32) + j * kb
        better = m > best  # strict: the earlier block keeps ties (first index overall)
        return jnp.where(better, m, best), jnp.where(better, a, arg)

    init = (jnp.full((x.shape[0],), -jnp.inf, jnp.float32), jnp.zeros((x.shape[0],), jnp.int32))
    return lax.fori_loop(0, w.shape[0] // kb, body, init)[1]


@functools.partial(jax.jit, static_argnames=("kb", "num_valid", "mesh"))
def _labels_step(x, w, *, kb, num_valid, mesh):
    fn = functools.partial(_block_argmax, kb=kb, num_valid=num_valid)
    if mesh is None:
        return fn(x, w)
    # Each device runs the same [rows, D] x [kb, D] blocks as one device would: identical bits.
    return jax.shard_map(
        fn, mesh=mesh, in_specs=(P("data"), P()), out_specs=P("data"), check_vma=False
    )(x, w)


def pseudo_labels(
    features,
    proxies,
    *,
    rule: str = "cosine",
    mesh: jax.sharding.Mesh | None = None,
    block_rows: int = LABEL_BLOCK_ROWS,
    block_proxies: int = LABEL_BLOCK_PROXIES,
) -> np.ndarray:
    """Index of each feature row's nearest proxy: [N] int32 (first index on ties).

    ``rule="cosine"`` (official ``normalize_coreset``): argmax_k <f, p_k / ||p_k||>, the
    cosine-nearest proxy; ``"dot"`` (official ``coreset``): argmax of the raw dot product.
    features [N, D] (numpy or memory-mapped; read in blocks, never an [N, K] matrix), proxies
    [K, D]. Rows are split over ``mesh``'s ``data`` axis in fixed per-device blocks, so the
    labels are bit-identical for any device count.
    """
    if rule not in LABEL_RULES:
        raise ValueError(f"rule must be one of {LABEL_RULES}, got {rule!r}")
    w = jnp.asarray(proxies, jnp.float32)
    if rule == "cosine":
        w = normalize_rows(w)
    k = int(w.shape[0])
    kb = min(int(block_proxies), k)
    kp = -(-k // kb) * kb
    w = jnp.pad(w, ((0, kp - k), (0, 0)))
    ndev = 1 if mesh is None else int(mesh.devices.size)
    step = int(block_rows) * ndev
    n, d = int(features.shape[0]), int(features.shape[1])
    out = np.empty((n,), np.int32)
    for s in range(0, n, step):
        blk = np.asarray(features[s : s + step], np.float32)
        m = len(blk)
        if m < step:
            blk = np.concatenate([blk, np.zeros((step - m, d), np.float32)])
        lab = _labels_step(blk, w, kb=kb, num_valid=k, mesh=mesh)
        out[s : s + m] = np.asarray(lab)[:m]
    return out


# -- host arrays -> device arrays, chunk by chunk ----------------------------------------------


@functools.partial(jax.jit, donate_argnums=0)
def _write_rows(buf: jax.Array, chunk: jax.Array, start: jax.Array) -> jax.Array:
    return lax.dynamic_update_slice_in_dim(buf, chunk, start, axis=0)


def gather_rows(source, rows: np.ndarray, fn=None, *, dim: int | None = None) -> jax.Array:
    """``fn(source[rows])`` as one device array [len(rows), dim], built chunk by chunk into a
    donated buffer: host memory peaks at the source + the result + one chunk (``jnp.asarray`` of
    a whole host array would add a transient copy). ``fn`` maps a [C, D] chunk to [C, dim]."""
    n = len(rows)
    c = min(CHUNK_ROWS, n)
    d = int(source.shape[1]) if dim is None else int(dim)
    buf = jnp.zeros((n, d), jnp.float32)
    for s in range(0, n, c):
        start = min(s, n - c)  # fixed chunk shape: the last chunk is shifted back
        chunk = jnp.asarray(np.asarray(source[rows[start : start + c]], np.float32))
        buf = _write_rows(buf, chunk if fn is None else fn(chunk), jnp.int32(start))
    return buf


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layout:
    """Sizes of one category's patch examples (fixed before ``init``, from ``examples``)."""

    patches: int  # per image
    rows: int  # all patch rows of the feature array (training + held-out)
    train: int  # training patches
    proxies: int  # K = int(train * pslabel_ratio)
    padded: int  # K rounded up to the device count when the proxy axis is sharded


class ProxyCore:
    """ProxyCore trainer on cached frozen-backbone patch features (see the module docstring).

    ``examples`` must see a category's training split first (``jad.train_lib.loop`` calls it on
    the training split, then on the held-out one): the state's shapes (K proxies, labels of all
    rows) depend on it, and evaluations during training build their bank from it.
    """

    name = "proxycore"
    official_selection = ("image_auroc",)  # official: best test I-AUROC, every 24 epochs

    def __init__(self, config, *, backbone: tuple[Any, Any] | None = None, mesh=None):
        from jad.models.features import feature_grid, make_feature_fn

        self.config = config
        self.opts = Options.from_config(config)
        cfg = config.proxycore
        self.layers = tuple(config.backbone.layers)
        self.dim = int(cfg.target_embed_dim)
        self.image_hw = (int(config.data.crop), int(config.data.crop))
        self.grid = tuple(int(g) for g in feature_grid(self.image_hw, self.layers))
        self.batch_size = int(config.train.batch_size)
        self.eval_batch_size = int(config.data.batch_size)
        self.seed = int(config.seed)
        self.mesh = patchcore.default_mesh() if mesh is None else (mesh or None)
        # the coresets (pseudo-labels, bank) of a fit run over every device of every process,
        # like PatchCore's; scoring and labelling stay per process (``self.mesh``)
        self.fit_mesh = patchcore.global_mesh() if mesh is None else (mesh or None)
        # coreset progress bars: on a terminal only (the loop's ``ctx.progress`` does not reach
        # init_from_data / finalize); set False to silence them.
        self.progress = sys.stderr.isatty() and distributed.is_primary()
        o = self.opts
        self.tx = optimizer(o.lr, o.weight_decay, o.b1, o.b2, o.eps, o.delta, o.wd_ratio)
        self._backbone = backbone
        self._feature_fn = None
        self._make_feature_fn = functools.partial(
            make_feature_fn,
            kind="patchcore",
            layers=self.layers,
            pretrain_embed_dim=int(cfg.pretrain_embed_dim),
            target_embed_dim=self.dim,
        )
        self._embed = jax.jit(functools.partial(embed_patches, precision=o.precision))
        self._bank_cache = patchcore.DeviceBank()
        self._source = None  # the per-image arrays dict of the current category
        self._train: TrainData | None = None
        self._flat = None  # its [rows, D] view
        self.layout: Layout | None = None
        self._export_memo: tuple[Any, State] | None = None

    # -- frozen features --------------------------------------------------------------------
    @property
    def backbone(self):
        if self._backbone is None:
            self._backbone = configured_backbone(self.config)
        return self._backbone

    def feature_key(self) -> dict[str, Any]:
        bb = self.config.backbone
        return {
            "extractor": "patchcore",
            "layers": list(self.layers),
            "pretrain_embed_dim": int(self.config.proxycore.pretrain_embed_dim),
            "target_embed_dim": self.dim,
            "weights": str(bb.weights),
            "arch": str(bb.arch),
            "dtype": str(bb.get("dtype", "float32")),
            "seed": self.seed,
        }

    def _features_padded(self, images: np.ndarray) -> tuple[jax.Array, int]:
        module, variables = self.backbone
        if self._feature_fn is None:
            self._feature_fn = self._make_feature_fn(module)
        padded, n = pad_batch(np.asarray(images, np.float32), self.eval_batch_size)
        return self._feature_fn(variables, padded), n

    def embed(self, images: np.ndarray) -> jax.Array:
        """float32 NHWC images [B, H, W, 3] -> patch features [B, P, D] (frozen backbone)."""
        feats, n = self._features_padded(images)
        return feats[:n]

    # -- examples: one per patch ------------------------------------------------------------
    def examples(self, data: TrainData) -> TrainData:
        """Per-image features [N_img, P, D] -> per-patch examples.

        ``arrays["features"]`` becomes a [N_img * P, D] *view* of the cached array (no copy, also
        for a memory-mapped cache); ``indices`` lists the patch rows of ``data``'s images, so a
        batch's ``index`` is a patch row (the key of its pseudo-label).
        """
        feats = data.arrays["features"]
        if feats.ndim != 3:
            raise AssertionError(f"expected per-image features [N, P, D], got {feats.shape}")
        n_img, p, d = (int(s) for s in feats.shape)
        if d != self.dim:
            raise AssertionError(f"features have {d} dims, config says {self.dim}")
        idx = np.asarray(data.indices, np.int64)
        rows = (idx[:, None] * p + np.arange(p, dtype=np.int64)[None, :]).reshape(-1)
        if (
            data.arrays is not self._source
        ):  # a new category: the loop passes its training split first
            self._source = data.arrays
            self._flat = feats.reshape(n_img * p, d)
            self.layout = self._make_layout(p, n_img * p, len(rows))
            out = TrainData({"features": self._flat}, rows)
            self._train = out
            return out
        return TrainData({"features": self._flat}, rows)

    def _shard_proxies(self, k: int) -> bool:
        nbytes = 3 * k * self.opts.out * 4  # proxies + two AdamP moments, float32
        return jax.device_count() > 1 and nbytes > self.opts.proxy_shard_gb * 2**30

    def _make_layout(self, patches: int, rows: int, train: int) -> Layout:
        k = int(train * self.opts.pslabel_ratio)
        if k < 1:
            raise UserError(
                f"proxycore.pslabel_ratio={self.opts.pslabel_ratio} of {train} training patches "
                f"gives no proxy; use a larger ratio"
            )
        ndev = jax.device_count()
        padded = -(-k // ndev) * ndev if self._shard_proxies(k) else k
        return Layout(patches, rows, train, k, padded)

    # -- training ---------------------------------------------------------------------------
    def init(self, key: jax.Array, sample_batch: Batch) -> TrainState:
        lay = self.layout
        if lay is None:
            raise AssertionError("ProxyCore.examples(training data) must run before init")
        o = self.opts
        k_params, k_rng = jax.random.split(key)
        params, batch_stats = init_params(
            k_params,
            self.dim,
            hidden=o.hidden,
            out=o.out,
            num_proxies=lay.proxies,
            num_padded=lay.padded,
        )
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=self.tx.init(params),
            rng=k_rng,
            extras={"labels": jnp.zeros((lay.rows,), jnp.int32)},
        )

    def _aux_key(self, state: TrainState, tag: int) -> jax.Array:
        return jax.random.fold_in(jax.random.fold_in(state.rng, AUX), tag)

    def state_specs(self, abstract_state: Any, num_devices: int) -> Any:
        """Proxy matrix and its AdamP moments split over ``data`` (rows) when they exceed
        ``proxycore.proxy_shard_gb``; everything else replicated. None = all replicated."""
        kp = int(abstract_state.params["proxies"].shape[0])
        if not (num_devices > 1 and self._shard_proxies(kp) and kp % num_devices == 0):
            return None
        return jax.tree_util.tree_map_with_path(
            lambda path, leaf: P("data", None) if _is_proxy(path) and leaf.ndim == 2 else P(),
            abstract_state,
        )

    def _check_train(self, data: TrainData) -> None:
        if self._train is None or data.num_examples != self._train.num_examples:
            raise AssertionError("ProxyCore got training data that examples() did not see first")

    def init_from_data(self, state: TrainState, data: TrainData, order: np.ndarray) -> TrainState:
        """Pseudo-labels (spec §4) and the proxies' initial values, from the raw features.

        Coreset of the training patches (``patchcore.build_bank`` at ``pslabel_ratio``) -> K
        proxies; the label of every patch row (training and held-out) is its nearest proxy
        (``label_rule``), computed once on noise-free features. B1 permutes the training rows'
        labels; ``proxy_init="coreset"`` puts the row-normalised coreset features in W.
        """
        self._check_train(data)
        o, lay = self.opts, self.layout
        feats = data.arrays["features"]
        dev = gather_rows(feats, data.indices)
        bank = patchcore.build_bank(
            dev,
            key=self._aux_key(state, TAG_PSLABEL),
            ratio=o.pslabel_ratio,
            projection_dim=o.projection_dim,
            num_starts=o.num_starts,
            mesh=self.fit_mesh,
            progress=self.progress,
        )["bank"]
        del dev
        if bank.shape[0] != lay.proxies:
            raise AssertionError(f"coreset gave {bank.shape[0]} proxies, expected {lay.proxies}")
        labels = pseudo_labels(feats, bank, rule=o.label_rule, mesh=self.mesh)
        if o.shuffle_labels_bug:  # B1: the official labels belong to a random other patch
            train_rows = np.asarray(data.indices)
            perm = np.asarray(
                jax.random.permutation(self._aux_key(state, TAG_SHUFFLE), len(train_rows))
            )
            labels[train_rows] = labels[train_rows][perm]
        params = state.params
        if o.proxy_init == "coreset":
            w = normalize_rows(jnp.asarray(bank, jnp.float32))
            w = jnp.pad(w, ((0, lay.padded - lay.proxies), (0, 0)))
            params = {**params, "proxies": w}
        train_labels = labels[np.asarray(data.indices)]
        counts = np.bincount(train_labels, minlength=lay.proxies)
        std = float(np.mean(np.std(np.asarray(feats[data.indices[: min(4096, lay.train)]]), 0)))
        if distributed.is_primary():  # one console in a multi-host run
            print(
                f"[proxycore] {lay.train} training patches, K={lay.proxies} proxies "
                f"({np.count_nonzero(counts)} used, largest {counts.max()} patches); "
                f"feature std {std:.3g} per dim vs noise_std {o.noise_std}",
                file=sys.stderr,
                flush=True,
            )
        return state.replace(params=params, extras={"labels": jnp.asarray(labels)})

    def _loss_kw(self) -> dict[str, Any]:
        o = self.opts
        return dict(
            temperature=o.temperature,
            gamma=o.gamma,
            alpha=o.alpha,
            focal_on_batch_mean=o.focal_on_batch_mean,
            noise_std=o.noise_std,
            num_valid=None if self.layout is None else self.layout.proxies,
            precision=o.precision,
        )

    def train_step(
        self, state: TrainState, batch: Batch, axis_name: str | None = None
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        labels = state.extras["labels"][batch["index"]]
        key = jax.random.fold_in(state.rng, state.step)
        _, grads, stats, metrics = loss_and_grads(
            state.params,
            state.batch_stats,
            batch["features"],
            labels,
            batch.get("mask"),
            key,
            axis_name=axis_name,
            **self._loss_kw(),
        )
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = state.replace(
            step=state.step + 1, params=params, batch_stats=stats, opt_state=opt_state
        )
        return new, metrics

    def eval_loss(self, state: TrainState, batch: Batch) -> jax.Array:
        """Normal-only validation criterion: the proxy loss of held-out normal patches (their own
        pseudo-labels, eval-mode BatchNorm, no noise). Lower is better."""
        _, (_, metrics) = loss_fn(
            state.params,
            state.batch_stats,
            batch["features"],
            state.extras["labels"][batch["index"]],
            batch.get("mask"),
            None,
            train=False,
            **self._loss_kw(),
        )
        return metrics["loss"]

    def learning_rates(self, step: int) -> dict[str, float]:
        return {"adamp": self.opts.lr}

    # -- bank, export -----------------------------------------------------------------------
    def memory_bank(self, state: TrainState, data: TrainData) -> np.ndarray:
        """Spec §8: the embedding MLP (eval mode, no noise) of every training patch -> coreset at
        ``bank_ratio`` (fresh projection and starts from the state's key) -> [M, out] float32."""
        o = self.opts
        params = {"embedding": state.params["embedding"]}
        stats = {"embedding": state.batch_stats["embedding"]}
        z = gather_rows(
            data.arrays["features"],
            data.indices,
            lambda chunk: self._embed(params, stats, chunk),
            dim=o.out,
        )
        key = jax.random.fold_in(self._aux_key(state, TAG_BANK), state.step)
        return patchcore.build_bank(
            z,
            key=key,
            ratio=o.bank_ratio,
            projection_dim=o.projection_dim,
            num_starts=o.num_starts,
            mesh=self.fit_mesh,
            progress=self.progress,
        )["bank"]

    def finalize(self, state: TrainState, data: TrainData) -> TrainState:
        self._check_train(data)
        bank = self.memory_bank(state, data)
        self._source = self._train = self._flat = None  # release the category's features
        self._export_memo = None
        return state.replace(extras={**state.extras, "bank": bank})

    def export(self, state: TrainState) -> State:
        """``{"params": {"embedding"}, "batch_stats": {"embedding"}, "bank": [M, out]}``; during
        training (evaluations) the bank is built from the training patches."""
        if self._export_memo is not None and self._export_memo[0] is state:
            return self._export_memo[1]
        bank = state.extras.get("bank")
        if bank is None:
            if self._train is None:
                raise AssertionError("export before finalize needs the training data (examples)")
            bank = self.memory_bank(state, self._train)
        out = {
            "params": {"embedding": state.params["embedding"]},
            "batch_stats": {"embedding": state.batch_stats["embedding"]},
            "bank": bank,
        }
        self._export_memo = (state, out)
        return out

    # -- inference --------------------------------------------------------------------------
    def predict_features(self, state: State, features: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(image scores [B], maps [B, H, W]) from backbone features [B, P, D]."""
        z = self._embed(state["params"], state["batch_stats"], features)
        return patchcore.score_per_image(
            z,
            self._bank_cache(state["bank"]),
            grid=self.grid,
            out_hw=self.image_hw,
            num_neighbors=1,
            distance="squared",
            sigma=self.opts.sigma,
            mesh=self.mesh,
        )

    def scoring_function(self, state: State):
        """Pure ``images -> (image scores, maps)``: backbone, embedding MLP and bank as constants,
        per-image kNN (``jad.export``)."""
        from jad.models.features import patchcore_features

        module, variables = self.backbone
        bank = jnp.asarray(state["bank"], jnp.float32)

        def fn(images):
            feats = patchcore_features(
                module,
                variables,
                images,
                layers=self.layers,
                pretrain_embed_dim=int(self.config.proxycore.pretrain_embed_dim),
                target_embed_dim=self.dim,
            )
            z = self._embed(state["params"], state["batch_stats"], feats)
            return patchcore.score_per_image(
                z,
                bank,
                grid=self.grid,
                out_hw=self.image_hw,
                num_neighbors=1,
                distance="squared",
                sigma=self.opts.sigma,
            )

        return fn

    def predict(self, state: State, images: np.ndarray) -> Predictions:
        feats, n = self._features_padded(images)
        img, maps = self.predict_features(state, feats)
        return Predictions(
            image_scores=np.asarray(img[:n], np.float32),
            anomaly_maps=np.asarray(maps[:n], np.float32),
        )


def from_config(config) -> ProxyCore:
    return ProxyCore(config)
