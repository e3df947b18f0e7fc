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
    return c
