"""Base configs shared by the files in ``configs/`` (each of those is a small override).

Keys every config has (users and scripts rely on them): ``method``, ``seed``, ``data.name``
(mvtec|visa|mpdd|btad|folder|synthetic), ``data.root``, ``data.categories`` (comma-separated or
``all``), ``backbone.weights`` (converted-weights folder or ``random``).
"""

from __future__ import annotations

import ml_collections


def base(method: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = method
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "synthetic"
    c.data.root = ""  # synthetic: empty = generate under $JAD_DATA_DIR or ~/.cache/jad
    c.data.categories = "all"
    c.data.resize = 256
    c.data.crop = 224
    # "nearest": binarise != 0 at full size then torch-legacy nearest (jad default, anomalib parity);
    # "bilinear_eq1": official PatchCore/PBAS MVTec path (bilinear, only pixels == 1.0 positive).
    c.data.mask_mode = "nearest"
    c.data.batch_size = 8
    c.data.data_dir = (
        ""  # where prepared TFDS copies live; empty = $JAD_DATA_DIR or ~/.cache/jad/tfds
    )
    c.data.use_tfds = True
    c.data.synthetic_seed = 0
    c.data.synthetic_mode = "easy"  # easy | hard (subtle defects; used by the trainers' demos)
    c.data.category_resize = ""  # per-category resize, e.g. "toothbrush:329,wood:329"
    # Labelled anomalies (any method): move N defective test images per category, with masks, into
    # a train_anomalous split (seeded, round-robin over defect types) and out of the evaluation.
    c.data.labelled_anomalies = 0
    c.data.split_seed = 0

    c.backbone = ml_collections.ConfigDict()
    c.backbone.arch = "wide_resnet50_2"
    c.backbone.weights = "random"  # or a folder written by `python -m jad.convert`
    c.backbone.layers = ("layer2", "layer3")
    c.backbone.dtype = "float32"
    # Official code quirk: loading runs one train-mode forward of an all-ones image, moving every
    # BatchNorm's running stats one momentum-0.1 step. Baked into published numbers.
    c.backbone.replay_load_bn_update = False
    c.backbone.replay_image_size = 0  # 0 = data.crop

    c.eval = ml_collections.ConfigDict()
    c.eval.num_heatmaps = -1  # -1 = every test image, 0 = none
    c.eval.aupro_limit = 0.3

    # Decisions from normal data only (jad.metrics.calibration): a seeded fraction of the normal
    # training images never fits the model; its scores give thresholds and normalised scores.
    c.calibration = ml_collections.ConfigDict()
    c.calibration.holdout = 0.1  # 0 = no holdout, no thresholds
    c.calibration.image_fpr = 0.01  # requested false-alarm rate of the image threshold
    c.calibration.pixel_fpr = 0.01
    c.calibration.use_anomalies = True  # labelled anomalies refine the image threshold (max F1)
    return c


def patchcore(dataset: str = "synthetic") -> ml_collections.ConfigDict:
    c = base("patchcore")
    c.data.name = dataset
    c.patchcore = ml_collections.ConfigDict()
    c.patchcore.pretrain_embed_dim = 1024
    c.patchcore.target_embed_dim = 1024
    c.patchcore.coreset_ratio = 0.1
    c.patchcore.coreset_method = "approximate"  # approximate | exact | random
    c.patchcore.projection_dim = 128
    c.patchcore.num_starts = 10
    c.patchcore.num_neighbors = 1
    c.patchcore.distance = "squared"  # official code: faiss squared L2; "euclidean" = paper
    c.patchcore.reweight = False  # paper Eq. 7 image-score reweighting (not in the official code)
    c.patchcore.reweight_neighbors = 9
    c.patchcore.sigma = 4.0
    # patch features kept in memory up to this; beyond: on disk, and the coreset streams over them
    c.patchcore.feature_cache_gb = 8.0
    return c


def train() -> ml_collections.ConfigDict:
    """``config.train``: the training loop of every trainer (``jad.train_lib.loop``)."""
    t = ml_collections.ConfigDict()
    t.epochs = 1
    t.steps = 0  # > 0: a fixed step budget instead of epochs
    t.batch_size = 8  # examples per step (images for PBAS / APC, patches for ProxyCore)
    t.parallel = "jit"  # jit: batch sharded over a `data` mesh axis; pmap: the same step, pmapped
    t.select = "last"  # last | val (held-out normal images) | test_official (NOT a valid protocol)
    t.val_fraction = 0.1  # held-out normal training images for select=val
    t.eval_every = 1  # epochs between evaluations (selection criterion, TensorBoard heatmaps)
    t.checkpoint_every = 0  # steps; 0 = once per epoch (and always at the end)
    t.keep = 2  # latest checkpoints kept (+ the best under a selection criterion)
    t.log_every = 1  # steps between metric logs
    t.tensorboard = True  # event files under <workdir>/<category>/tb
    t.num_tb_heatmaps = 4
    t.feature_cache_gb = 8.0  # frozen-backbone features kept in memory up to this; beyond: disk
    # Fail safe: stop on NaN/Inf, or when a step's loss exceeds this x the lowest epoch-mean loss
    # so far (0 = only NaN/Inf); the last good checkpoint stays, rerunning resumes from it.
    t.divergence_factor = 1000.0
    return t


def pbas(dataset: str = "synthetic") -> ml_collections.ConfigDict:
    """PBAS with the official code's values (spec pbas.md): 288 px, k = 0.25, 640 epochs.

    Paper values where they differ: ``--config.pbas.k=0.3 --config.train.epochs=400
    --config.data.resize=256 --config.data.crop=256``.
    """
    c = base("pbas")
    c.data.name = dataset
    c.data.resize = 288
    c.data.crop = 288
    c.data.batch_size = 8  # feature extraction / evaluation batches
    c.pbas = ml_collections.ConfigDict()
    c.pbas.pretrain_embed_dim = 1536
    c.pbas.target_embed_dim = 1536
    c.pbas.pre_proj = 1
    c.pbas.dsc_layers = 2
    c.pbas.dsc_hidden = 1024
    c.pbas.k = 0.25  # anomaly degree (paper: 0.3)
    c.pbas.margin = 0.5  # only for the logged p_true / p_fake
    c.pbas.centre_momentum = 0.9
    c.pbas.lr = 1e-4  # projector: Adam + coupled L2
    c.pbas.proj_weight_decay = 1e-5
    c.pbas.dsc_lr = 2e-4  # discriminator: AdamW
    c.pbas.dsc_weight_decay = 0.01
    c.pbas.sigma = 4.0
    c.pbas.precision = "highest"  # matmul precision of the heads: highest | default (TF32 on GPU)
    c.train = train()
    c.train.epochs = 640  # paper: 400
    c.train.batch_size = 8
    return c


def apc(dataset: str = "synthetic") -> ml_collections.ConfigDict:
    """AnomalousPatchCore with the spec's proposed defaults (shared/specs/apc.md; no public code).

    Every value here is jad's choice where the paper is silent; all are recorded in results.json.
    """
    c = patchcore(dataset)  # stage 2 is PatchCore: its keys (coreset, scoring) apply unchanged
    c.method = "apc"
    c.data.labelled_anomalies = 10  # per category, moved out of the test set (manifest written)
    c.apc = ml_collections.ConfigDict()
    c.apc.train_from = "layer2"  # stem | layer1 | layer2 | layer3 | layer4: first trainable stage
    c.apc.decoder_width = 1.0  # 1.0 = the spec's channels (1024/512, 256, 128, 64, 32)
    c.apc.w_cls = 10.0  # L = 10 L_cls + L_segm + L_recon
    c.apc.w_segm = 1.0
    c.apc.w_recon = 1.0
    c.apc.focal_gamma = 2.0
    c.apc.recon_on = "normal"  # normal | all
    c.apc.anomalous_batch = 8  # + train.batch_size normal images per step
    c.apc.augment = "auto"  # auto (the spec's per-category table) | none | hflip | rot | flip_rot
    c.apc.augment_normals = False  # the spec augments the labelled anomalies
    c.apc.jitter = 0.1  # brightness / contrast factors in [0.9, 1.1] ...
    c.apc.jitter_p = 0.5  # ... with this probability
    c.apc.lr_encoder = 1e-5
    c.apc.lr_head = 1e-4
    c.apc.weight_decay = 1e-4
    c.apc.warmup_steps = 100
    c.apc.clip_norm = 1.0
    # Recompute the bottleneck activations in the backward pass. Off: on XLA:CPU it saves nothing
    # (the compiled step drops the remat barriers; same temp memory, up to 19 % slower, measured
    # by `python -m jad.benchmark apc`); for accelerators, where activation memory binds.
    c.apc.remat = False
    c.train = train()
    c.train.steps = 2000
    c.train.epochs = 0
    c.train.batch_size = 8  # normal images per step
    c.train.checkpoint_every = 100
    return c


def proxycore(dataset: str = "synthetic") -> ml_collections.ConfigDict:
    """ProxyCore with the spec's defaults (shared/specs/proxycore.md §12): 256 -> 224 px,
    pseudo-label and bank coresets at 10 %, T = 0.05, focal loss, noise std 1.0, AdamP lr 1e-5,
    200 epochs of 512-patch batches, last epoch reported.

    ``proxycore.variant``: ``fixed`` (default: aligned labels, coreset-initialised proxies,
    per-sample focal loss) or ``faithful`` (the official defects B1-B3 that produced the logged
    numbers). The three toggles ``shuffle_labels_bug``, ``proxy_init`` (coreset | uniform) and
    ``focal_on_batch_mean`` follow the variant unless set.

    Masks: ``bilinear_gt0`` is the official ProxyCore rule (bilinear resize, > 0: slightly
    dilated borders, spec B8); jad's standard rule is ``nearest``:
    ``--config.data.mask_mode=nearest``. Backbone: the official code used timm 0.6.5's RACM
    ``wide_resnet50_2`` weights (spec B11); to match, convert that weights file yourself with
    ``python -m jad.convert`` and pass its folder as ``backbone.weights`` (the default README
    command converts torchvision's checkpoint).
    """
    c = base("proxycore")
    c.data.name = dataset
    c.data.resize = 256
    c.data.crop = 224
    c.data.mask_mode = "bilinear_gt0"
    c.data.batch_size = 32  # feature extraction / evaluation batches (official loaders: 32)
    c.proxycore = ml_collections.ConfigDict()
    c.proxycore.variant = "fixed"  # fixed | faithful (official bugs B1-B3)
    placeholder = ml_collections.config_dict.placeholder
    c.proxycore.shuffle_labels_bug = placeholder(bool)  # B1; None = from the variant
    c.proxycore.proxy_init = placeholder(str)  # B2: coreset | uniform; None = from the variant
    c.proxycore.focal_on_batch_mean = placeholder(bool)  # B3; None = from the variant
    c.proxycore.pretrain_embed_dim = 1024
    c.proxycore.target_embed_dim = 1024
    c.proxycore.pslabel_ratio = 0.1  # proxies = coreset of the raw training patches
    c.proxycore.bank_ratio = 0.1  # memory bank = coreset of the embedded training patches
    c.proxycore.projection_dim = 128  # both coresets: random projection ...
    c.proxycore.num_starts = 10  # ... and start points of the approximate sampler
    c.proxycore.label_rule = "cosine"  # cosine (official normalize_coreset) | dot (coreset)
    c.proxycore.hidden = 4096
    c.proxycore.out = 1024
    c.proxycore.temperature = 0.05
    c.proxycore.loss = "focal"  # focal | ce (= focal with gamma 0)
    c.proxycore.gamma = 2.0
    c.proxycore.alpha = 1.0
    c.proxycore.noise_std = 1.0  # absolute std of the Gaussian feature noise per step
    c.proxycore.lr = 1e-5  # AdamP (package defaults otherwise; the YAML betas were ignored, B5)
    c.proxycore.weight_decay = 1e-2
    c.proxycore.b1 = 0.9
    c.proxycore.b2 = 0.999
    c.proxycore.eps = 1e-8
    c.proxycore.delta = 0.1
    c.proxycore.wd_ratio = 0.1
    c.proxycore.proxy_shard_gb = 4.0  # proxies + 2 moments above this: shard them over devices
    c.proxycore.sigma = 4.0
    c.proxycore.precision = "highest"  # matmuls of the heads: highest | default (TF32 on GPU)
    c.train = train()
    c.train.epochs = 200
    c.train.batch_size = 512  # patches per step
    c.train.eval_every = 24  # official evaluation cadence (also TensorBoard heatmaps: a bank each)
    c.train.checkpoint_every = 0
    return c


# The "tiny" variant of each synthetic config (``get_config("tiny")``, big_vision style): the
# smallest settings that still run every stage of a method, for tests and smoke runs
# (``--config=configs/<method>_synthetic.py:tiny``). Random weights; the numbers mean nothing.
def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``c`` (a method's base config) shrunk in place to its tiny test size; returns ``c``.

    The backbone is ``resnet_tiny`` (the ResNet-50 structure with one bottleneck per stage and
    1/8 of the widths): every stage, layer name and shape rule of the real backbones at a small
    fraction of their compile and run time. WRN50-2's numerics are the golden tests' business.
    """
    c.backbone.weights = "random"
    c.backbone.arch = "resnet_tiny"
    c.data.use_tfds = False
    c.data.batch_size = 4
    c.eval.num_heatmaps = 0
    if c.method in ("patchcore", "apc"):
        c.patchcore.pretrain_embed_dim = c.patchcore.target_embed_dim = 64
    if c.method == "patchcore":  # 96 px: a 12 x 12 patch grid
        c.data.resize = c.data.crop = 96
        c.patchcore.coreset_ratio = 0.25
        c.eval.num_heatmaps = 4
        return c
    c.data.resize = c.data.crop = 64  # 8 x 8 patches
    c.train.num_tb_heatmaps = 2
    # Learning rates above the methods' own, and PBAS's features at 256-d: with the tiny
    # backbone's small random features, what the training tests assert (the loss falls) shows
    # within a few dozen steps.
    if c.method == "pbas":
        c.pbas.pretrain_embed_dim = c.pbas.target_embed_dim = 256
        c.pbas.dsc_hidden = 32
        c.pbas.lr = 3e-3
        c.pbas.dsc_lr = 2e-3
        c.train.epochs = 4
        c.train.batch_size = 2
    elif c.method == "proxycore":
        c.proxycore.pretrain_embed_dim = c.proxycore.target_embed_dim = 64
        c.proxycore.hidden = 64
        c.proxycore.out = 64
        c.proxycore.noise_std = 0.05  # ~ the tiny features' spread (the spec's 1.0 drowns them)
        c.proxycore.lr = 1e-4
        c.train.epochs = 4
        c.train.batch_size = 64  # patches
        c.train.eval_every = 2
    elif c.method == "apc":
        c.data.batch_size = 8
        c.data.labelled_anomalies = 4
        c.apc.decoder_width = 0.25
        c.apc.anomalous_batch = 2
        c.apc.warmup_steps = 2
        c.train.batch_size = 2
        c.train.steps = 6
        c.train.checkpoint_every = 3
    else:
        raise ValueError(f"no tiny variant for method {c.method!r}")
    return c


def variant(c: ml_collections.ConfigDict, arg: str | None, demo) -> ml_collections.ConfigDict:
    """A config file's ``get_config(arg)``: ``None`` / "" = ``demo(c)``, "tiny" = :func:`tiny`."""
    if arg in (None, ""):
        return demo(c)
    if arg == "tiny":
        return tiny(c)
    raise ValueError(f"unknown config variant {arg!r} (known: tiny; none = the demo)")
