"""AnomalousPatchCore (APC; Koshil et al., ECCV 2024 VISION workshop): fine-tune PatchCore's
feature extractor with a few real anomalies, then run ordinary PatchCore with the tuned encoder.

There is no public code: every choice below is jad's, taken from the spec's proposals
(``shared/specs/apc.md``), explicit in the config and recorded in ``results.json``.

Fine-tuning (``train_step``): the backbone (WRN50-2 or ResNet-50) feeds a U-Net-style decoder
(:class:`jad.models.heads.APCDecoder`: transposed-conv up-blocks with skips from ``layer3`` ..
``layer1`` and the stem before the max-pool) with three heads, trained jointly with
``L = 10 L_cls + L_segm + L_recon``:

- ``L_cls``: BCE with logits of the image label (global-average-pooled ``layer4`` -> Dense);
- ``L_segm``: per-pixel focal BCE (gamma 2, no alpha) over all pixels of the batch + soft Dice
  ``1 - (2 sum(p m) + 1) / (sum p + sum m + 1)`` over the anomalous images (skipped without any);
- ``L_recon``: MSE of the reconstruction against the (augmented) input, normal images only.

Encoder BatchNorm runs on its running statistics (frozen; affine parameters of trainable stages
train), stages from ``apc.train_from`` (``layer2``) are trainable, the rest frozen (no gradient
computed). Balanced batches: ``train.batch_size`` normal images (each once per epoch, seeded) +
``apc.anomalous_batch`` labelled anomalies drawn with replacement and augmented with the spec's
per-category table (flips / 90-degree rotations, brightness and contrast jitter +-0.1 with
probability 0.5), from ``fold_in(rng, step)`` on device. AdamW (wd 1e-4), learning rates 1e-5
(encoder) and 1e-4 (decoder, heads) with 100 warm-up steps and cosine decay to 0 (optax
``multi_transform``), gradient clipping at global norm 1.0, 2 000 steps. ``apc.remat`` recomputes
the backbone's bottleneck activations in the backward pass (``jax.checkpoint``); off by default
because on XLA:CPU it saves no memory (measured: the compiled step is the same; see
``python -m jad.benchmark apc``), it is meant for accelerators.

Then (``finalize``) the decoder is dropped and PatchCore's own bank builder runs on the tuned
encoder's layer2 + layer3 features of the normal training images; ``predict`` is PatchCore's
scoring (``jad.methods.patchcore.score``).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jad.methods import patchcore
from jad.methods.common import (
    Batch,
    Predictions,
    State,
    TrainData,
    TrainState,
    configured_backbone,
    pad_batch,
)
from jad.models.heads import APCDecoder
from jad.models.wide_resnet import PREPOOL
from jad.ops import reduce as R
from jad.utils.errors import UserError

STAGE_ORDER = ("stem", "layer1", "layer2", "layer3", "layer4")
ENCODER_STAGES = (PREPOOL, "layer1", "layer2", "layer3", "layer4")
EXPORT_PREFIXES = ("conv1", "bn1", "layer1_", "layer2_", "layer3_")  # what PatchCore needs
PAPER_KEYS = {  # the paper's four numbers = four of jad's seven keys (F1 = F1-max)
    "AUROC_im": "image_auroc",
    "F1_im": "image_f1_max",
    "AUROC_px": "pixel_auroc",
    "F1_px": "pixel_f1_max",
}

# The spec's per-category augmentation (geometric ops; jitter applies to every category).
AUGMENTATIONS = {
    "none": (),
    "hflip": ("hflip",),
    "rot": ("rot90",),
    "flip_rot": ("hflip", "vflip", "rot90"),
}
CATEGORY_AUGMENTATION = {
    **dict.fromkeys(("carpet", "grid", "leather", "tile", "wood", "weave"), "flip_rot"),
    **dict.fromkeys(("bottle", "hazelnut", "screw", "disc"), "flip_rot"),
    "metal_nut": "rot",  # a flip is itself a defect type
    **dict.fromkeys(("toothbrush", "zipper"), "hflip"),
    **dict.fromkeys(("cable", "capsule", "pill", "transistor"), "none"),
}
IMAGENET_MEAN = jnp.asarray((0.485, 0.456, 0.406), jnp.float32)
IMAGENET_STD = jnp.asarray((0.229, 0.224, 0.225), jnp.float32)


def stage_of(param_name: str) -> str:
    """Backbone parameter group -> its stage (``conv1``/``bn1`` -> ``stem``, ``layer2_0`` -> ``layer2``)."""
    return "stem" if param_name in ("conv1", "bn1") else param_name.split("_")[0]


def is_trainable(param_name: str, train_from: str) -> bool:
    return STAGE_ORDER.index(stage_of(param_name)) >= STAGE_ORDER.index(train_from)


# ---------------------------------------------------------------------------------------------
# Augmentation (pure jnp, per example)
# ---------------------------------------------------------------------------------------------


def augment(
    key: jax.Array,
    image: jax.Array,
    mask: jax.Array,
    ops: tuple[str, ...],
    jitter: float = 0.1,
    jitter_p: float = 0.5,
) -> tuple[jax.Array, jax.Array]:
    """One random draw of ``ops`` (same geometry for image [H, W, 3] and mask [H, W]) plus
    brightness / contrast jitter (factors in [1 - jitter, 1 + jitter], applied with probability
    ``jitter_p``) in pixel space; the image stays ImageNet-normalised."""
    k_h, k_v, k_r, k_j, k_b, k_c = jax.random.split(key, 6)
    both = jnp.concatenate([image, mask[..., None]], axis=-1)
    if "hflip" in ops:
        both = jnp.where(jax.random.bernoulli(k_h), both[:, ::-1], both)
    if "vflip" in ops:
        both = jnp.where(jax.random.bernoulli(k_v), both[::-1], both)
    if "rot90" in ops:
        k = jax.random.randint(k_r, (), 0, 4)
        both = lax.switch(k, [functools.partial(jnp.rot90, k=i) for i in range(4)], both)
    image, mask = both[..., :3], both[..., 3]
    if jitter > 0 and jitter_p > 0:
        pix = image * IMAGENET_STD + IMAGENET_MEAN
        b = jax.random.uniform(k_b, (), minval=1 - jitter, maxval=1 + jitter)
        c = jax.random.uniform(k_c, (), minval=1 - jitter, maxval=1 + jitter)
        grey = jnp.mean(pix @ jnp.asarray([0.299, 0.587, 0.114]))
        jittered = jnp.clip((jnp.clip(pix * b, 0, 1) - grey) * c + grey, 0, 1)
        pix = jnp.where(jax.random.bernoulli(k_j, jitter_p), jittered, pix)
        image = (pix - IMAGENET_MEAN) / IMAGENET_STD
    return image, mask


# ---------------------------------------------------------------------------------------------
# Losses (pure; numpy references in tests/methods/test_apc.py)
# ---------------------------------------------------------------------------------------------


def cls_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-image BCE with logits [B] (targets 0 normal / 1 anomalous)."""
    return optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32))


def focal_per_image(logits: jax.Array, masks: jax.Array, gamma: float = 2.0) -> jax.Array:
    """Per-image mean over pixels of the focal BCE -(1 - p_t)^gamma log p_t: [B, H, W] -> [B]."""
    m = masks.astype(jnp.float32)
    log_p = jax.nn.log_sigmoid(logits)
    log_q = jax.nn.log_sigmoid(-logits)
    log_pt = m * log_p + (1 - m) * log_q
    pt = jnp.exp(log_pt)
    return jnp.mean(-((1 - pt) ** gamma) * log_pt, axis=(1, 2))


def dice_sums(logits: jax.Array, masks: jax.Array, weight: jax.Array) -> jax.Array:
    """(sum p m, sum p, sum m) over the images with ``weight`` 1 (the anomalous ones): [3]."""
    p = jax.nn.sigmoid(logits) * weight[:, None, None]
    m = masks.astype(jnp.float32) * weight[:, None, None]
    return jnp.stack([jnp.sum(p * m), jnp.sum(p), jnp.sum(m)])


def dice_from_sums(sums: jax.Array) -> jax.Array:
    return 1.0 - (2.0 * sums[0] + 1.0) / (sums[1] + sums[2] + 1.0)


def recon_per_image(recon: jax.Array, images: jax.Array) -> jax.Array:
    """Per-image MSE over pixels and channels: [B, H, W, 3] -> [B]."""
    return jnp.mean(jnp.square(recon - images), axis=(1, 2, 3))


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


class APC:
    """AnomalousPatchCore trainer (see the module docstring)."""

    name = "apc"
    uses_anomalies = True
    official_selection = None  # no official code: test-set selection has nothing to reproduce
    paper_keys = PAPER_KEYS

    def __init__(self, config, *, backbone: tuple[Any, Any] | None = None):
        from jad.models.features import feature_grid, make_feature_fn

        self.config = config
        a = config.apc
        self.seed = int(config.seed)
        if str(a.train_from) not in STAGE_ORDER:
            raise UserError(
                f"apc.train_from={a.train_from!r} is unknown; use one of {', '.join(STAGE_ORDER)}"
            )
        self.train_from = str(a.train_from)
        if str(a.recon_on) not in ("normal", "all"):
            raise UserError(f"apc.recon_on={a.recon_on!r} is unknown; use normal or all")
        for key in ("lr_encoder", "lr_head", "decoder_width"):
            if not float(a[key]) > 0:
                raise UserError(f"apc.{key}={a[key]!r} must be a positive number")
        if int(a.anomalous_batch) < 1:
            raise UserError(f"apc.anomalous_batch={a.anomalous_batch} must be >= 1")
        self.weights = (float(a.w_cls), float(a.w_segm), float(a.w_recon))
        self.gamma = float(a.focal_gamma)
        self.batch_size = int(config.train.batch_size)
        self.anomalous_batch = int(a.anomalous_batch)
        self.step_batch_size = self.batch_size + self.anomalous_batch
        self.eval_batch_size = int(config.data.batch_size)
        self.layers = tuple(config.backbone.layers)
        self.image_hw = (int(config.data.crop), int(config.data.crop))
        self.grid = tuple(int(g) for g in feature_grid(self.image_hw, self.layers))
        self.decoder = APCDecoder(width=float(a.decoder_width))
        self._backbone = backbone
        self._feature_fn = None
        self._make_feature_fn = functools.partial(
            make_feature_fn,
            kind="patchcore",
            layers=self.layers,
            pretrain_embed_dim=int(config.patchcore.pretrain_embed_dim),
            target_embed_dim=int(config.patchcore.target_embed_dim),
        )
        self.total_steps = int(config.train.steps) or None
        self.schedules = self._schedules(a, self.total_steps or 1)
        self.tx = self.optimizer()
        self._bank = patchcore.DeviceBank()
        self.category = ""

    def begin_category(self, category: str) -> None:
        """The augmentation table is per category (``apc.augment=auto``)."""
        self.category = category
        self._augment_ops()  # validate now, before any training
        _ = self.backbone  # load the weights outside any tracing (init runs under eval_shape)

    # -- pieces ------------------------------------------------------------------------------
    @property
    def backbone(self):
        if self._backbone is None:
            module, variables = configured_backbone(self.config)
            if self.config.apc.remat:
                module = module.clone(remat=True)
            self._backbone = (module, variables)
        return self._backbone

    @staticmethod
    def _schedules(a, total: int) -> dict[str, optax.Schedule]:
        warm = int(a.warmup_steps)

        def sched(peak):
            return optax.warmup_cosine_decay_schedule(
                0.0, peak, warmup_steps=min(warm, max(total - 1, 0)), decay_steps=max(total, 1)
            )

        return {"encoder": sched(float(a.lr_encoder)), "head": sched(float(a.lr_head))}

    def param_labels(self, params) -> Any:
        """optax labels: trainable encoder stages -> "encoder", frozen ones -> "frozen", decoder
        and heads -> "head"."""

        def label(path, _):
            top, name = path[0].key, path[1].key
            if top == "decoder":
                return "head"
            return "encoder" if is_trainable(name, self.train_from) else "frozen"

        return jax.tree_util.tree_map_with_path(label, params)

    def optimizer(self) -> optax.GradientTransformation:
        """AdamW per group (warm-up + cosine), frozen stages untouched, global-norm clipping."""
        a = self.config.apc
        adamw = lambda lr: optax.adamw(lr, b1=0.9, b2=0.999, weight_decay=float(a.weight_decay))
        return optax.chain(
            optax.clip_by_global_norm(float(a.clip_norm)),
            optax.multi_transform(
                {
                    "encoder": adamw(self.schedules["encoder"]),
                    "head": adamw(self.schedules["head"]),
                    "frozen": optax.set_to_zero(),
                },
                self.param_labels,
            ),
        )

    def learning_rates(self, step: int) -> dict[str, float]:
        return {k: float(s(step)) for k, s in self.schedules.items()}

    def _augment_ops(self) -> tuple[str, ...]:
        mode = str(self.config.apc.augment)
        if mode == "auto":
            mode = CATEGORY_AUGMENTATION.get(self.category, "none")
        if mode not in AUGMENTATIONS:
            raise UserError(
                f"apc.augment={mode!r} is unknown; use auto or one of {', '.join(AUGMENTATIONS)}"
            )
        if "rot90" in AUGMENTATIONS[mode] and self.image_hw[0] != self.image_hw[1]:
            raise UserError("90-degree rotations need square crops")
        return AUGMENTATIONS[mode]

    # -- training ------------------------------------------------------------------------------
    def init(self, key: jax.Array, sample_batch: Batch) -> TrainState:
        if self.total_steps is None:
            raise UserError("APC trains for a fixed budget: set train.steps (e.g. 2000)")
        module, variables = self.backbone
        x = jnp.asarray(sample_batch["image"][:1])
        stages = module.apply(variables, x, stages=ENCODER_STAGES)
        dec = self.decoder.init(jax.random.fold_in(key, 0), stages, train=False)
        encoder = {k: v for k, v in variables["params"].items() if k != "fc"}  # no classifier
        params = {"encoder": encoder, "decoder": dec["params"]}
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats={"encoder": variables["batch_stats"], "decoder": dec["batch_stats"]},
            opt_state=self.tx.init(params),
            rng=jax.random.fold_in(key, 1),
        )

    def make_batch(self, data: TrainData, positions: np.ndarray, step: int) -> Batch:
        """``train.batch_size`` normal images (a stream of seeded epoch permutations, so every
        normal image is used once per epoch and no batch is short) + ``apc.anomalous_batch``
        labelled anomalies drawn with replacement; a pure function of (seed, step)."""
        n = data.num_examples
        nb = self.batch_size
        start = int(step) * nb
        pos = []
        epoch = start // n
        while len(pos) < nb:
            perm = np.random.default_rng([self.seed, 1, epoch]).permutation(n)
            lo = start - epoch * n if not pos else 0
            pos.extend(perm[lo : lo + nb - len(pos)])
            epoch += 1
        rows = data.indices[np.asarray(pos)]
        n_anom = len(data.aux["anomalous_image"])
        pick = np.random.default_rng([self.seed, 5, int(step)]).integers(
            0, n_anom, self.anomalous_batch
        )
        return {
            "image": np.concatenate(
                [data.arrays["image"][rows], data.aux["anomalous_image"][pick]]
            ),
            "gt_mask": np.concatenate(
                [data.arrays["gt_mask"][rows], data.aux["anomalous_mask"][pick]]
            ),
            "label": np.concatenate(
                [np.zeros(nb, np.int32), np.ones(self.anomalous_batch, np.int32)]
            ),
            "index": np.concatenate([rows, -1 - pick]).astype(np.int32),
        }

    def losses(
        self,
        params,
        batch_stats,
        images,
        gt_masks,
        labels,
        row_mask,
        *,
        train: bool,
        axis_name: str | None = None,
    ):
        """(this device's loss contribution, (new decoder batch_stats, metrics))."""
        module, _ = self.backbone
        enc = {
            k: (v if is_trainable(k, self.train_from) else lax.stop_gradient(v))
            for k, v in params["encoder"].items()
        }
        stages = module.apply(
            {"params": enc, "batch_stats": batch_stats["encoder"]},
            images,
            train=False,  # encoder BatchNorm frozen: running statistics
            stages=ENCODER_STAGES,
        )
        variables = {"params": params["decoder"], "batch_stats": batch_stats["decoder"]}
        if train:
            (seg, recon, cls), upd = self.decoder.apply(
                variables, stages, train=True, axis_name=axis_name, mutable=["batch_stats"]
            )
            new_dec = upd["batch_stats"]
        else:
            seg, recon, cls = self.decoder.apply(variables, stages, train=False)
            new_dec = batch_stats["decoder"]
        y = labels.astype(jnp.float32)
        normal = (1.0 - y) * row_mask
        anomalous = y * row_mask
        l_cls = R.loss_contribution(cls_loss(cls, labels), row_mask, axis_name)
        l_focal = R.loss_contribution(
            focal_per_image(seg, gt_masks, self.gamma), row_mask, axis_name
        )
        sums = dice_sums(seg, gt_masks, anomalous)
        sums = lax.psum(sums, axis_name) if axis_name else sums
        n_dev = R.count(None, 1, axis_name)
        l_dice = jnp.where(sums[2] > 0, dice_from_sums(sums), 0.0) / n_dev
        recon_w = normal if str(self.config.apc.recon_on) == "normal" else row_mask
        l_recon = R.loss_contribution(recon_per_image(recon, images), recon_w, axis_name)
        w_cls, w_segm, w_recon = self.weights
        loss = w_cls * l_cls + w_segm * (l_focal + l_dice) + w_recon * l_recon
        g = functools.partial(R.global_value, axis_name=axis_name)
        metrics = {
            "loss": g(loss),
            "cls": g(l_cls),
            "segm": g(l_focal + l_dice),
            "dice": g(l_dice),
            "recon": g(l_recon),
            "cls_acc": R.masked_mean(
                ((cls > 0) == (y > 0.5)).astype(jnp.float32), row_mask, axis_name
            ),
        }
        return loss, ({"encoder": batch_stats["encoder"], "decoder": new_dec}, metrics)

    def train_step(
        self, state: TrainState, batch: Batch, axis_name: str | None = None
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        key = jax.random.fold_in(state.rng, state.step)
        images, masks = batch["image"], batch["gt_mask"]
        ops = self._augment_ops()
        keys = jax.random.split(key, images.shape[0])
        aug_i, aug_m = jax.vmap(
            functools.partial(
                augment,
                ops=ops,
                jitter=float(self.config.apc.jitter),
                jitter_p=float(self.config.apc.jitter_p),
            )
        )(keys, images, masks)
        is_anom = batch["label"] > 0
        if not self.config.apc.augment_normals:  # the spec: augmented anomalies, plain normals
            aug_i = jnp.where(is_anom[:, None, None, None], aug_i, images)
            aug_m = jnp.where(is_anom[:, None, None], aug_m, masks)
        (_, (stats, metrics)), grads = jax.value_and_grad(self.losses, has_aux=True)(
            state.params,
            state.batch_stats,
            aug_i,
            aug_m,
            batch["label"],
            batch["mask"],
            train=True,
            axis_name=axis_name,
        )
        grads = R.sync_grads(grads, axis_name)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return (
            state.replace(
                step=state.step + 1, params=params, batch_stats=stats, opt_state=opt_state
            ),
            metrics,
        )

    def eval_loss(self, state: TrainState, batch: Batch) -> jax.Array:
        """Normal-only validation criterion (spec §6): L_recon + L_segm on held-out normal
        images (eval-mode decoder BatchNorm, no augmentation). Lower is better."""
        _, (_, m) = self.losses(
            state.params,
            state.batch_stats,
            batch["image"],
            batch["gt_mask"],
            batch["label"],
            batch["mask"],
            train=False,
        )
        return m["recon"] + m["segm"]

    # -- PatchCore on the tuned encoder --------------------------------------------------------
    def _encoder_variables(self, state: TrainState) -> dict:
        keep = lambda tree: {k: v for k, v in tree.items() if k.startswith(EXPORT_PREFIXES)}
        return {
            "params": keep(state.params["encoder"]),
            "batch_stats": keep(state.batch_stats["encoder"]),
        }

    def features(self, encoder_variables: dict, images: np.ndarray) -> jax.Array:
        """PatchCore features [B, P, D] of images with the (tuned) encoder."""
        module, _ = self.backbone
        if self._feature_fn is None:
            self._feature_fn = self._make_feature_fn(module.clone(remat=False))
        padded, n = pad_batch(np.asarray(images, np.float32), self.eval_batch_size)
        return self._feature_fn(encoder_variables, padded)[:n]

    def finalize(self, state: TrainState, data: TrainData) -> TrainState:
        """Drop the decoder; build PatchCore's bank from the tuned encoder's normal features."""
        enc = self._encoder_variables(state)
        imgs = data.arrays["image"][data.indices]
        bs = self.eval_batch_size
        feats = np.concatenate(
            [
                np.asarray(self.features(enc, imgs[s : s + bs])).reshape(-1, self.features_dim)
                for s in range(0, len(imgs), bs)
            ]
        )
        bank = patchcore.build_bank(
            feats,
            key=jax.random.fold_in(state.rng, 2**30),
            mesh=patchcore.global_mesh(),
            progress=False,
            **patchcore.bank_options(self.config.patchcore),
        )
        return state.replace(extras={"encoder": enc, **bank})

    @property
    def features_dim(self) -> int:
        return int(self.config.patchcore.target_embed_dim)

    def export(self, state: TrainState) -> State:
        if not state.extras:  # during training (TensorBoard previews): the fine-tuning heads
            return {"training": {"params": state.params, "batch_stats": state.batch_stats}}
        return dict(state.extras)

    def scoring_function(self, state: State):
        """Pure ``images -> (image scores, maps)``: the tuned encoder and the bank as constants,
        per-image kNN (``jad.export``)."""
        from jad.models.features import patchcore_features

        module, _ = self.backbone
        module = module.clone(remat=False)
        enc = state["encoder"]
        bank = jnp.asarray(state["bank"], jnp.float32)
        pc = self.config.patchcore

        def fn(images):
            feats = patchcore_features(
                module,
                enc,
                images,
                layers=self.layers,
                pretrain_embed_dim=int(pc.pretrain_embed_dim),
                target_embed_dim=int(pc.target_embed_dim),
            )
            return patchcore.score_per_image(
                feats, bank, grid=self.grid, out_hw=self.image_hw, **patchcore.score_options(pc)
            )

        return fn

    def predict(self, state: State, images: np.ndarray) -> Predictions:
        n = images.shape[0]
        if "training" in state:  # preview during training: the segmentation / class heads
            t = state["training"]
            module, _ = self.backbone
            stages = module.apply(
                {"params": t["params"]["encoder"], "batch_stats": t["batch_stats"]["encoder"]},
                jnp.asarray(images),
                stages=ENCODER_STAGES,
            )
            seg, _, cls = self.decoder.apply(
                {"params": t["params"]["decoder"], "batch_stats": t["batch_stats"]["decoder"]},
                stages,
                train=False,
            )
            return Predictions(
                np.asarray(jax.nn.sigmoid(cls), np.float32),
                np.asarray(jax.nn.sigmoid(seg), np.float32),
            )
        feats = self.features(state["encoder"], images)
        img, maps = patchcore.score_per_image(
            feats,
            self._bank(state["bank"]),
            grid=self.grid,
            out_hw=self.image_hw,
            mesh=patchcore.default_mesh(),
            **patchcore.score_options(self.config.patchcore),
        )
        return Predictions(np.asarray(img[:n], np.float32), np.asarray(maps[:n], np.float32))


def from_config(config) -> APC:
    return APC(config)
