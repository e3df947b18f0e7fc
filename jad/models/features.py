"""PatchCore / PBAS locally aggregated patch features, identical to the official extractors.

Official pipeline (patchcore-inspection ``PatchCore._embed``, PBAS ``_embed``) per layer l:
``Unfold(3, stride 1, padding 1)`` -> per position a (c, ky, kx)-ordered vector of length
L_l = C_l * 9 (zero padded) -> layers after the first are bilinearly resized (align_corners=False)
to the first layer's grid -> ``MeanMapper``: ``adaptive_avg_pool1d(L_l -> pretrain_embed_dim)``
-> stack layers [N, n_layers, Dp] -> ``Aggregator``: flatten and ``adaptive_avg_pool1d(n_layers*Dp ->
target_embed_dim)``. Torch's adaptive bin i over length L covers [floor(i L / O), ceil((i+1) L / O)).

Everything after the backbone is linear, so per layer the two poolings compose into one fixed
window over the unfolded vector for every output dimension; pooling first (at the layer's own
grid) and resizing the pooled map afterwards gives the same result with C*9/Dp times less work.
Three implementations of a layer's composed map, chosen from the window plan (numpy, at trace time):

- ``depthwise``: windows tile whole channels with one shared 3x3 weight pattern -> fixed-kernel
  depthwise 3x3 sums of shifted slices + a group sum (PatchCore 1024/1024: layer2 kernel
  [[.1,.1,.1],[.1,.2,.1],[.1,.1,.1]], layer3 3x3 mean + channel-pair mean). No unfold.
- ``tiled``: windows tile the unfolded vector with one shared weight vector -> unfold + reshape
  + weighted sum (PBAS 1536/1536: windows of 6 resp. 12).
- ``general``: any dims (overlapping / unequal windows, outputs mixing layers) -> unfold + gather
  of each output's window + weighted sum. Tested against a literal unfold + adaptive pooling.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jad import ops
from jad.models.wide_resnet import ResNet, stage_hw

HIGHEST = jax.lax.Precision.HIGHEST
# XLA:CPU in jaxlib 0.10.2 wraps every conv in a YNNPACK fusion that is 16-20 % slower than XLA's
# own conv thunks on the 2-core AVX-512 dev box (shared/notes/jax_stack.md; re-measured by
# ``python -m jad.benchmark backbone``). Applied per function, CPU only.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


# ---------------------------------------------------------------------------------------------
# Window plan (numpy, float64)
# ---------------------------------------------------------------------------------------------
def adaptive_bins(length: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """torch ``adaptive_avg_pool1d`` bins: starts, ends (exclusive), int64 [out]."""
    i = np.arange(out, dtype=np.int64)
    return (i * length) // out, ((i + 1) * length + out - 1) // out


@dataclass(frozen=True)
class LayerPlan:
    """Composed pooling of one layer: output dims ``t_idx`` [T_l] each average a window of the
    unfolded vector: ``out[t_idx[j]] = sum_k w[j, k] * flat[start[j] + k]`` (w zero past the window).

    ``mode`` is ``depthwise`` / ``tiled`` / ``general``; ``kernel`` the shared pattern for the
    first two ([g, 3, 3] resp. [K]).
    """

    t_idx: np.ndarray
    start: np.ndarray
    w: np.ndarray
    mode: str
    kernel: np.ndarray | None


def plan_layers(channels: Sequence[int], pretrain_dim: int, target_dim: int) -> list[LayerPlan]:
    """Window plans for layers with ``channels`` (unfold 3x3 -> MeanMapper -> Aggregator)."""
    return list(_plan_layers(tuple(int(c) for c in channels), int(pretrain_dim), int(target_dim)))


@functools.lru_cache(maxsize=32)
def _plan_layers(
    channels: tuple[int, ...], pretrain_dim: int, target_dim: int
) -> tuple[LayerPlan, ...]:
    n = len(channels)
    s2, e2 = adaptive_bins(n * pretrain_dim, target_dim)
    plans = []
    for li, c in enumerate(channels):
        length = c * 9
        s1, e1 = adaptive_bins(length, pretrain_dim)
        rows: list[tuple[int, int, np.ndarray]] = []
        for t in range(target_dim):
            f = np.arange(s2[t], e2[t])
            f = f[(f >= li * pretrain_dim) & (f < (li + 1) * pretrain_dim)] - li * pretrain_dim
            if f.size == 0:
                continue
            lo, hi = int(s1[f].min()), int(e1[f].max())
            w = np.zeros(hi - lo)
            for o in f:
                w[s1[o] - lo : e1[o] - lo] += 1.0 / ((e1[o] - s1[o]) * (e2[t] - s2[t]))
            rows.append((t, lo, w))
        k = max(len(r[2]) for r in rows)
        t_idx = np.array([r[0] for r in rows], np.int64)
        start = np.array([r[1] for r in rows], np.int64)
        wmat = np.zeros((len(rows), k))
        for j, r in enumerate(rows):
            wmat[j, : len(r[2])] = r[2]
        tiled = (
            all(len(r[2]) == k for r in rows)
            and np.array_equal(start, np.arange(len(rows)) * k)
            and len(rows) * k == length
            and np.allclose(wmat, wmat[:1], rtol=0, atol=1e-15)
        )
        mode, kernel = "general", None
        if tiled:
            mode, kernel = "tiled", wmat[0]
            g = k // 9
            if k % 9 == 0 and np.allclose(kernel.reshape(g, 9), kernel[:9], rtol=0, atol=1e-15):
                mode, kernel = "depthwise", kernel.reshape(g, 3, 3)
        plans.append(LayerPlan(t_idx, start, wmat, mode, kernel))
    return tuple(plans)


# ---------------------------------------------------------------------------------------------
# jnp pieces
# ---------------------------------------------------------------------------------------------
def _shifts(x: jax.Array) -> list[jax.Array]:
    """The 9 zero-padded 3x3 neighbour maps of x [B,h,w,C], in (ky, kx) order."""
    h, w = x.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return [xp[:, ky : ky + h, kx : kx + w, :] for ky in range(3) for kx in range(3)]


def unfold3x3(x: jax.Array) -> jax.Array:
    """torch ``Unfold(3, padding=1)`` in NHWC: [B,h,w,C] -> [B,h,w,C*9], (c, ky, kx) order."""
    b, h, w, c = x.shape
    return jnp.stack(_shifts(x), axis=-1).reshape(b, h, w, c * 9)


def _apply_plan(x: jax.Array, plan: LayerPlan) -> jax.Array:
    """[B,h,w,C] float32 -> [B,h,w,T_l]."""
    b, h, w, c = x.shape
    if plan.mode == "depthwise":
        g = plan.kernel.shape[0]
        k = plan.kernel[0].reshape(9)
        y = sum(float(k[i]) * s for i, s in enumerate(_shifts(x)) if k[i] != 0.0)
        return y.reshape(b, h, w, c // g, g).sum(-1) if g > 1 else y
    flat = unfold3x3(x)
    if plan.mode == "tiled":
        kk = plan.kernel.shape[0]
        win = flat.reshape(b, h, w, c * 9 // kk, kk)
        if np.allclose(plan.kernel, plan.kernel[0], rtol=0, atol=1e-15):
            return jnp.mean(win, axis=-1) * float(plan.kernel[0] * kk)
        return jnp.einsum("...k,k->...", win, jnp.asarray(plan.kernel, x.dtype), precision=HIGHEST)
    idx = np.minimum(plan.start[:, None] + np.arange(plan.w.shape[1]), c * 9 - 1)
    win = jnp.take(flat, jnp.asarray(idx), axis=-1)  # [B,h,w,T_l,K]
    return jnp.sum(win * jnp.asarray(plan.w, x.dtype), axis=-1)


def resize_bilinear(x: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """torch bilinear resize (align_corners=False, no antialias) of [B,h,w,C] to [B,H,W,C]
    (``jad.ops.resize_bilinear``; identity when the size already matches)."""
    if tuple(x.shape[1:3]) == tuple(hw):
        return x
    return ops.resize_bilinear(x, tuple(hw)).astype(x.dtype)


def aggregate_patch_features(
    feature_maps: Sequence[jax.Array],
    pretrain_embed_dim: int = 1024,
    target_embed_dim: int = 1024,
    *,
    method: str = "auto",
) -> jax.Array:
    """Official patch aggregation of backbone maps (first map's grid is the output grid).

    Args:
      feature_maps: list of [B, h_l, w_l, C_l] maps (any float dtype; computed in float32).
      pretrain_embed_dim: MeanMapper output size per layer.
      target_embed_dim: Aggregator output size.
      method: ``"auto"`` (fastest exact form per layer) or ``"general"`` (always gather).

    Returns:
      [B, h_0 * w_0, target_embed_dim] float32, patches row-major over the first map's grid.
    """
    if method not in ("auto", "general"):
        raise ValueError(f"method must be 'auto' or 'general', got {method!r}.")
    maps = [jnp.asarray(f, jnp.float32) for f in feature_maps]
    b, h0, w0 = maps[0].shape[:3]
    plans = plan_layers(tuple(m.shape[-1] for m in maps), pretrain_embed_dim, target_embed_dim)
    parts = []
    for m, plan in zip(maps, plans, strict=True):
        if method == "general" and plan.mode != "general":
            plan = LayerPlan(plan.t_idx, plan.start, plan.w, "general", None)
        parts.append(resize_bilinear(_apply_plan(m, plan), (h0, w0)))
    order = np.concatenate([p.t_idx for p in plans])
    if np.array_equal(order, np.arange(target_embed_dim)):
        out = jnp.concatenate(parts, axis=-1)
    else:  # some output dims mix layers
        out = jnp.zeros((b, h0, w0, target_embed_dim), jnp.float32)
        for part, plan in zip(parts, plans, strict=True):
            out = out.at[..., plan.t_idx].add(part)
    return out.reshape(b, h0 * w0, target_embed_dim)


# ---------------------------------------------------------------------------------------------
# Extractors
# ---------------------------------------------------------------------------------------------
def patchcore_features(
    module: ResNet,
    variables: Any,
    images: jax.Array,
    *,
    layers: Sequence[str] = ("layer2", "layer3"),
    pretrain_embed_dim: int = 1024,
    target_embed_dim: int = 1024,
) -> jax.Array:
    """PatchCore ``_embed``: images [B, H, W, 3] float32 (normalised) -> [B, P, D] float32.

    P = h * w of ``layers[0]``'s grid (28 * 28 at 224), D = ``target_embed_dim``. Pure; jit it
    (or use ``make_feature_fn``). Eval-mode BN.
    """
    layers = tuple(layers)
    outs = module.apply(variables, images, train=False, stages=layers)
    return aggregate_patch_features(
        [outs[name] for name in layers], pretrain_embed_dim, target_embed_dim
    )


def pbas_features(module: ResNet, variables: Any, images: jax.Array) -> jax.Array:
    """PBAS ``_embed``: layer2 + layer3, 1536 / 1536. [B, 288, 288, 3] -> [B, 1296, 1536] float32."""
    return patchcore_features(
        module, variables, images, pretrain_embed_dim=1536, target_embed_dim=1536
    )


def feature_grid(
    image_hw: tuple[int, int], layers: Sequence[str] = ("layer2", "layer3")
) -> tuple[int, int]:
    """Patch grid (h, w) of the features for an input of ``image_hw`` (the first layer's grid)."""
    return stage_hw(tuple(image_hw), tuple(layers)[0])


def _default_compiler_options() -> dict[str, str]:
    return dict(CPU_COMPILER_OPTIONS) if jax.default_backend() == "cpu" else {}


def _dtype(x: Any) -> np.dtype:
    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.result_type(x)


class CompiledFn:
    """``fn(variables, images)`` compiled ahead of time with XLA options, one executable per
    (variables structure, shapes, dtypes, images sharding)."""

    def __init__(
        self, fn: Callable[..., jax.Array], compiler_options: dict[str, Any] | None = None
    ):
        self._jit = jax.jit(fn)
        self.compiler_options = (
            _default_compiler_options() if compiler_options is None else compiler_options
        )
        self._cache: dict[Any, Any] = {}

    def _key(self, variables: Any, images: jax.Array) -> Any:
        leaves, tree = jax.tree.flatten(variables)
        return (
            tree,
            tuple((np.shape(x), _dtype(x)) for x in leaves),
            np.shape(images),
            _dtype(images),
            getattr(images, "sharding", None),
        )

    def compile(self, variables: Any, images: jax.Array) -> Any:
        key = self._key(variables, images)
        if key not in self._cache:
            lowered = self._jit.lower(variables, images)
            self._cache[key] = lowered.compile(compiler_options=self.compiler_options or None)
        return self._cache[key]

    def __call__(self, variables: Any, images: jax.Array) -> jax.Array:
        return self.compile(variables, images)(variables, images)


def make_feature_fn(
    module: ResNet,
    kind: str = "patchcore",
    *,
    compiler_options: dict[str, Any] | None = None,
    **opts: Any,
) -> CompiledFn:
    """Jitted ``fn(variables, images) -> [B, P, D]`` with the fastest measured compile options.

    Args:
      module: the backbone (``load_backbone``).
      kind: ``"patchcore"`` (``opts``: layers, pretrain_embed_dim, target_embed_dim), ``"pbas"``
        or ``"stages"`` (returns the backbone dict; ``opts``: stages).
      compiler_options: XLA options; default disables YNNPACK conv fusion on CPU, none elsewhere.
    """
    if kind == "patchcore":
        fn = functools.partial(patchcore_features, module, **opts)
    elif kind == "pbas":
        if opts:
            raise ValueError(f"kind='pbas' takes no options, got {sorted(opts)}.")
        fn = functools.partial(pbas_features, module)
    elif kind == "stages":
        stages = tuple(opts.pop("stages", ("layer2", "layer3")))
        if opts:
            raise ValueError(f"kind='stages' takes only 'stages', got {sorted(opts)}.")
        fn = lambda variables, images: module.apply(variables, images, train=False, stages=stages)
    else:
        raise ValueError(f"unknown kind {kind!r}; choose 'patchcore', 'pbas' or 'stages'.")
    return CompiledFn(lambda variables, images: fn(variables, images), compiler_options)


def replay_load_bn_update(
    module: ResNet, variables: Any, image_size: int, deepest_stage: str
) -> dict[str, Any]:
    """Replays the official ``load()`` BN side effect (golden README, behaviour 1).

    Both official repos call ``backbone(torch.ones([1, 3, S, S]))`` while the torchvision model is
    still in train mode, so every BN on the way updates ``running = 0.9 running + 0.1 batch_stat``
    (unbiased batch variance) and normalises with batch statistics in that pass. PatchCore stops
    after ``layer3`` at S = 224; PBAS runs everything (``"layer4"``) at S = 288. Off by default in
    jad; paper-reproduction configs turn it on.

    Returns:
      a copy of ``variables`` with updated ``batch_stats`` (BNs past ``deepest_stage`` unchanged).
    """
    x = jnp.ones((1, image_size, image_size, 3), jnp.float32)

    @jax.jit
    def run(v):
        _, upd = module.apply(v, x, train=True, stages=(deepest_stage,), mutable=["batch_stats"])
        return upd["batch_stats"]

    return {**variables, "batch_stats": run(variables)}
