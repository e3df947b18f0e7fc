"""The loop behind the CLIs: per category fit -> checkpoint -> evaluate -> results.

Method-agnostic: it only uses the protocol in ``jad.methods.common`` and the loaders of
``jad.data``. Layout of a workdir::

    <workdir>/config.json                 the run config
    <workdir>/results.json                metrics per category + mean, timings, provenance
    <workdir>/metrics.{json,csv}          the metrics table
    <workdir>/<category>/checkpoint/0/    Orbax: {state, meta}
    <workdir>/<category>/heatmaps/*.png   image | heatmap | overlay | mask
    <workdir>/<category>/report_data.npz  scores, curves, gallery panels (jad.train_lib.report_data)
    <workdir>/report.html                 the report (jad.report), unless --report=false
"""

from __future__ import annotations

import json
import platform
import sys
import time
import zlib
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from jad.methods.common import FitContext, Method, Trainer, build_method, is_trainer
from jad.metrics import KEYS
from jad.train_lib import checkpoint, heatmaps, report_data
from jad.utils import distributed
from jad.utils.atomic import write_json
from jad.utils.distributed import is_primary
from jad.utils.errors import UserError
from jad.utils.lock import workdir_lock
from jad.utils.progress import Progress

METRIC_KEYS = KEYS  # the seven metric keys of results.json, defined by jad.metrics


def log(msg: str) -> None:
    """A progress line on stderr (process 0 only in a multi-host run)."""
    if is_primary():
        print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Config helpers
# ---------------------------------------------------------------------------------------------


def config_to_dict(config) -> dict[str, Any]:
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return json.loads(json.dumps(d, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


# Keys that never change a fitted model: where things are, what is logged, how often it is saved.
# Everything else (the method's section, backbone, data preprocessing and batch sizes, seed,
# train.*) is part of the model's identity and a mismatch is refused.
IO_ONLY_KEYS = {
    "data": ("root", "categories", "data_dir", "use_tfds", "num_workers"),
    "train": (
        "checkpoint_every",
        "keep",
        "log_every",
        "tensorboard",
        "num_tb_heatmaps",
        "feature_cache_gb",
        "divergence_factor",
    ),
    # where the patch features live while fitting (memory or disk): the same bank either way
    "patchcore": ("feature_cache_gb",),
}


def fit_signature(config) -> dict[str, Any]:
    """The part of the config that determines a fitted state (everything but evaluation/IO knobs).

    ``eval.*`` and :data:`IO_ONLY_KEYS` may change between runs on one workdir; any other change
    (including ``train.epochs``: a finished run is not extended) is refused.
    """
    d = config_to_dict(config)
    d.pop("eval", None)
    for section, keys in IO_ONLY_KEYS.items():
        if section in d:
            d[section] = {k: v for k, v in d[section].items() if k not in keys}
    return d


def dataset_root(config) -> Path:
    """``config.data.root``; for the synthetic dataset an empty root means the generated default."""
    name = str(config.data.name)
    root = str(config.data.get("root", "") or "")
    if name == "synthetic" and not root:
        from jad import data as jdata
        from jad.data import synthetic

        seed = int(config.data.get("synthetic_seed", 0))
        mode = str(config.data.get("synthetic_mode", "easy"))
        return Path(
            synthetic.ensure(
                synthetic.default_root(jdata.cache_dir(), seed, mode), seed=seed, mode=mode
            )
        )
    if not root:
        raise UserError(
            f"config.data.root is empty: point it at your {name} folder (--config.data.root=/path)"
        )
    return Path(root).expanduser()


def resolve_categories(config, root: Path) -> list[str]:
    from jad import data as jdata

    spec = str(config.data.categories).strip()
    available = jdata.list_categories(str(config.data.name), str(root))
    if spec in ("", "all"):
        return list(available)
    wanted = [c.strip() for c in spec.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in available]
    if unknown:
        raise UserError(
            f"unknown category '{unknown[0]}' for dataset {config.data.name} at {root}; "
            f"available: {', '.join(available)}"
        )
    return wanted


def category_resize(config, category: str | None) -> int:
    """``data.resize``, or the per-category value of ``data.category_resize`` ("wood:329,...")."""
    spec = str(config.data.get("category_resize", "") or "")
    for item in filter(None, (x.strip() for x in spec.split(","))):
        name, sep, value = item.partition(":")
        if not sep or not value.strip().isdigit():
            raise UserError(
                f"data.category_resize={spec!r}: expected comma-separated category:size pairs, "
                f"e.g. 'toothbrush:329,wood:329'"
            )
        if name.strip() == category:
            return int(value)
    return int(config.data.resize)


def preprocess(config, category: str | None = None):
    from jad.data import Preprocess

    return Preprocess(
        resize=category_resize(config, category),
        crop=int(config.data.crop),
        mask_mode=str(config.data.mask_mode),
    )


def make_loader(config, root: Path, category: str, split: str):
    from jad import data as jdata

    kwargs = {}
    if config.data.get("data_dir"):
        kwargs["data_dir"] = str(config.data.data_dir)
    if "use_tfds" in config.data:
        kwargs["use_tfds"] = bool(config.data.use_tfds)
    return jdata.load(
        str(config.data.name),
        str(root),
        category,
        split,
        pre=preprocess(config, category),
        batch_size=int(config.data.batch_size),
        shuffle=False,
        seed=int(config.seed),
        labelled_anomalies=int(config.data.get("labelled_anomalies", 0)),
        split_seed=int(config.data.get("split_seed", 0)),
        calibration_holdout=calibration_fraction(config),
        num_shards=jax.process_count(),  # multi-host: each host reads its block of images
        shard_index=jax.process_index(),
        **kwargs,
    )


def calibration_fraction(config) -> float:
    """``calibration.holdout``: the fraction of normal training images held out for thresholds."""
    cal = config.get("calibration")
    return float(cal.holdout) if cal is not None else 0.0


def predict_split(method, state, loader) -> tuple[np.ndarray, np.ndarray]:
    """(image scores [N], anomaly maps [N, H, W]) of every image of ``loader`` (float32; every
    host's block in a multi-host run)."""
    scores, maps, valid = [], [], []
    for batch in loader.epoch(0):
        pred = method.predict(state, batch["image"])
        scores.append(np.asarray(pred.image_scores, np.float32))
        maps.append(np.asarray(pred.anomaly_maps, np.float32))
        valid.append(np.asarray(batch.get("valid", np.ones(len(batch["label"]), bool))))
    v = np.concatenate(valid)
    return (
        distributed.gather_rows(np.concatenate(scores), v),
        distributed.gather_rows(np.concatenate(maps), v),
    )


def calibrate_model(method, state, config, root: Path, category: str) -> dict[str, Any] | None:
    """Thresholds and normalisation from the held-out normal training images (and, with
    ``calibration.use_anomalies``, the labelled training anomalies); None without a holdout."""
    from jad import metrics as jm

    if calibration_fraction(config) == 0.0:
        return None
    cal = config.calibration
    scores, maps = predict_split(method, state, make_loader(config, root, category, "calibration"))
    anomalies = None
    if int(config.data.get("labelled_anomalies", 0)) > 0 and bool(cal.use_anomalies):
        anomalies, _ = predict_split(
            method, state, make_loader(config, root, category, "train_anomalous")
        )
    return jm.calibrate(
        scores,
        maps,
        image_fpr=float(cal.image_fpr),
        pixel_fpr=float(cal.pixel_fpr),
        anomaly_scores=anomalies,
    )


def anomaly_manifest(config, root: Path, category: str) -> dict[str, Any] | None:
    """The labelled-anomalies split of ``category`` (None when ``data.labelled_anomalies`` is 0)."""
    from jad import data as jdata

    n = int(config.data.get("labelled_anomalies", 0))
    if n == 0:
        return None
    test = jdata.scan(str(config.data.name), str(root), category)["test"]
    seed = int(config.data.get("split_seed", 0))
    picked = jdata.labelled_anomalies(test, n, seed=seed, category=category)
    return {
        "category": category,
        "n": n,
        "split_seed": seed,
        "rule": "seeded, round-robin over defect types (sorted); removed from the test set",
        "files": [
            {"path": test[i].path, "defect": test[i].defect, "mask": test[i].mask_path}
            for i in picked
        ],
        "test_images_remaining": len(test) - n,
    }


def category_key(seed: int, category: str) -> jax.Array:
    """Per-category PRNG key: independent of which other categories are in the run."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(category.encode()) & 0x7FFFFFFF)


def weights_provenance(config) -> dict[str, Any]:
    from jad.models.pretrained import weights_info

    info = dict(weights_info(str(config.backbone.weights), str(config.backbone.arch)))
    info["replay_load_bn_update"] = bool(config.backbone.get("replay_load_bn_update", False))
    return info


# ---------------------------------------------------------------------------------------------
# Fit and evaluate one category
# ---------------------------------------------------------------------------------------------


def check_workdir(config, workdir: Path, categories: list[str]) -> None:
    """Refuses (before anything is written) a workdir whose fitted or in-progress categories used
    another config: a finished model (``<category>/checkpoint``) or a training run
    (``<category>/train``)."""
    signature = fit_signature(config)
    for category in categories:
        for sub, what in (("checkpoint", "a model fitted"), ("train", "a training run")):
            ckpt_dir = Path(workdir) / category / sub
            if checkpoint.latest_step(ckpt_dir) is None:
                continue
            if checkpoint.read_meta(ckpt_dir).get("fit_signature") != signature:
                raise UserError(
                    f"{ckpt_dir} holds {what} with a different config; use a new --workdir "
                    f"(nothing was overwritten)"
                )


def dataset_id(config, root: Path, category: str) -> str:
    """A hash of the category's training files (path, size, mtime) and their preprocessing."""
    from jad import data as jdata
    from jad.train_lib.feature_cache import cache_key, files_fingerprint

    records = jdata.scan(str(config.data.name), str(root), category)["train"]
    pre = preprocess(config, category)
    return cache_key(
        {
            "files": files_fingerprint(r.path for r in records),
            "resize": pre.resize,
            "crop": pre.crop,
            "batch_size": int(config.data.batch_size),
            "calibration_holdout": calibration_fraction(config),  # which images train
            "split_seed": int(config.data.get("split_seed", 0)),
        }
    )


PATCHCORE_PROTOCOL = "fit on all normal training images (no training, no model selection)"


def fit_or_restore(
    method: Method | Trainer,
    config,
    root: Path,
    category: str,
    workdir: Path,
    *,
    progress: bool = True,
):
    """Fit (or train) ``method`` on ``category`` and save the model, or restore one made with the
    same config. A trainer resumes an interrupted run from ``<category>/train``."""
    ckpt_dir = workdir / category / "checkpoint"
    signature = fit_signature(config)
    if checkpoint.latest_step(ckpt_dir) is not None:
        check_workdir(config, workdir, [category])
        state, meta = checkpoint.restore(ckpt_dir)
        log(f"[{category}] restored fitted state from {ckpt_dir}")
        return state, meta["fit_info"], meta.get("calibration")
    train = make_loader(config, root, category, "train")
    log(f"[{category}] fit on {train.num_examples} training images")
    key = category_key(int(config.seed), category)
    if is_trainer(method):
        from jad.train_lib.loop import fit_trainer

        def evaluate_test(state):
            metrics, _, _ = evaluate_category(
                method, state, config, root, category, heatmap_dir=None, progress=False
            )
            return metrics

        anomalous = None
        if int(config.data.get("labelled_anomalies", 0)) > 0:
            anomalous = make_loader(config, root, category, "train_anomalous")
        ctx = FitContext(
            workdir / category,
            progress,
            evaluate_test=evaluate_test,
            dataset_id=dataset_id(config, root, category),
            anomalous=anomalous,
            category=category,
        )
        result = fit_trainer(method, train, config=config, key=key, ctx=ctx, signature=signature)
    else:
        ctx = FitContext(
            workdir / category,
            progress,
            dataset_id=dataset_id(config, root, category),  # the feature store's key
            category=category,
        )
        result = method.fit(train, key=key, ctx=ctx)
        result.info.setdefault("protocol", PATCHCORE_PROTOCOL)
    calibration = calibrate_model(method, result.state, config, root, category)
    meta = {
        "method": method.name,
        "category": category,
        "config": config_to_dict(config),
        "fit_signature": signature,
        "fit_info": result.info,
        "calibration": calibration,
        "backbone": weights_provenance(config),
        "jad_version": _version(),
    }
    if is_primary():  # written once; every host holds the same state
        checkpoint.save(ckpt_dir, result.state, meta, step=int(result.info.get("steps", 0)))
    return result.state, result.info, calibration


def evaluate_category(
    method: Method,
    state: dict,
    config,
    root: Path,
    category: str,
    *,
    heatmap_dir: Path | None,
    progress: bool = True,
    calibration: dict[str, Any] | None = None,
    report_path: Path | None = None,
) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """Score the test split; returns (metrics, timings, extra) for one category.

    With ``report_path``, the scores, the metrics' curves and the gallery panels the report shows
    are written there (``jad.train_lib.report_data``).

    With a ``calibration`` record, ``extra["calibrated"]`` holds the decisions' quality at the
    thresholds calibrated on normal training data only (image F1, precision, recall, false-alarm
    rate on the test set; pixel F1 likewise).
    """
    from jad import metrics as jm

    test = make_loader(config, root, category, "test")
    crop = int(config.data.crop)
    want_heatmaps = heatmap_dir is not None and int(config.eval.get("num_heatmaps", -1)) != 0
    limit = int(config.eval.get("num_heatmaps", -1))
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("score", "map", "mask", "label", "path", "valid", "image", "thumb")
    }
    t0 = time.perf_counter()
    with Progress("score", len(test), unit="batch", enabled=progress and is_primary()) as bar:
        for batch in test.epoch(0):
            pred = method.predict(state, batch["image"])
            parts["score"].append(np.asarray(pred.image_scores, np.float32))
            parts["map"].append(np.asarray(pred.anomaly_maps, np.float32))
            parts["mask"].append((batch["mask"] != 0).astype(np.uint8))
            parts["label"].append(np.asarray(batch["label"], np.int32))
            parts["path"].append(_encode_paths(batch["path"]))
            parts["valid"].append(
                np.asarray(batch.get("valid", np.ones(len(batch["label"]), bool)))
            )
            shown_batch = None
            if want_heatmaps or report_path is not None:
                shown_batch = np.stack([heatmaps.denormalize(x) for x in batch["image"]])
            if want_heatmaps:
                parts["image"].append(shown_batch)
            if report_path is not None:
                parts["thumb"].append(np.stack([report_data.thumbnail(x) for x in shown_batch]))
            bar.update(1)
    # every host scored its block of the test images: gather them (host order = single-host order)
    valid = np.concatenate(parts["valid"])
    scores, maps, masks, labels = (
        distributed.gather_rows(np.concatenate(parts[k]), valid)
        for k in ("score", "map", "mask", "label")
    )
    paths = _decode_paths(distributed.gather_rows(np.concatenate(parts["path"]), valid))
    shown: list[np.ndarray] = []
    if want_heatmaps:
        images = distributed.gather_rows(np.concatenate(parts["image"]), valid)
        shown = list(images if limit < 0 else images[:limit])
    n = len(scores)
    assert maps.shape == (n, crop, crop), maps.shape
    t_test = time.perf_counter() - t0
    t1 = time.perf_counter()
    has_masks = bool(masks.any())
    result = jm.evaluate_category(
        labels,
        scores,
        masks if has_masks else None,
        maps if has_masks else None,
        limit=float(config.eval.get("aupro_limit", 0.3)),
        return_curves=report_path is not None,  # not for the evaluations during training
    )
    result, curves = result if report_path is not None else (result, None)
    t_metrics = time.perf_counter() - t1
    metrics = {k: (None if result.get(k) is None else float(result[k])) for k in METRIC_KEYS}
    extra: dict[str, Any] = {"num_test_images": n, "num_anomalous": int(labels.sum())}
    if want_heatmaps and shown and is_primary():
        vmin, vmax = heatmaps.colour_range(maps)
        for j, img in enumerate(shown):
            heatmaps.save_png(
                heatmaps.panel(img, maps[j], vmin=vmin, vmax=vmax, mask=masks[j]),
                heatmap_dir / heatmaps.heatmap_name(paths[j], j),
            )
        extra["heatmaps"] = str(heatmap_dir)
    extra["image_scores"] = {p: float(s) for p, s in zip(paths, scores, strict=True)}
    if report_path is not None:
        thumbs = distributed.gather_rows(np.concatenate(parts["thumb"]), valid)
        if is_primary():
            t2 = time.perf_counter()
            report_data.save(
                report_path,
                paths=paths,
                labels=labels,
                scores=scores,
                curves=curves,
                thumbs=thumbs,
                maps=maps,
                masks=masks if has_masks else None,
                calibration=calibration,
            )
            extra["report_data_s"] = time.perf_counter() - t2
    if calibration is not None:
        extra["calibrated"] = calibrated_metrics(
            calibration, labels, scores, masks if has_masks else None, maps if has_masks else None
        )
    timings = {
        "test_s": t_test,
        "test_images_per_s": n / t_test if t_test > 0 else None,
        "metrics_s": t_metrics,
    }
    return metrics, timings, extra


CALIBRATED_PROTOCOL = "thresholds calibrated on held-out normal training images only"
_PATH_BYTES = 1024


def _encode_paths(paths) -> np.ndarray:
    """File paths as fixed-width uint8 rows (so that they can be gathered across hosts)."""
    out = np.zeros((len(paths), _PATH_BYTES), np.uint8)
    for i, p in enumerate(paths):
        b = str(p).encode()[:_PATH_BYTES]
        out[i, : len(b)] = np.frombuffer(b, np.uint8)
    return out


def _decode_paths(rows: np.ndarray) -> list[str]:
    return [bytes(r).rstrip(b"\0").decode() for r in rows]


def calibrated_metrics(calibration, labels, scores, masks=None, maps=None) -> dict[str, Any]:
    """Test-set quality of the calibrated decisions (image, and pixel when masks exist)."""
    from jad import metrics as jm

    out: dict[str, Any] = {
        "protocol": CALIBRATED_PROTOCOL
        + (" + labelled training anomalies" if "image_threshold_f1" in calibration else ""),
        "image": jm.threshold_metrics(labels, scores, calibration["image_threshold"]),
        "image_at_fpr_threshold": jm.threshold_metrics(
            labels, scores, calibration["image_threshold_fpr"]
        ),
        "image_fpr_requested": calibration["image_fpr_requested"],
        "image_fpr_guaranteed": calibration["image_fpr_guaranteed"],
    }
    if masks is not None and "pixel_threshold" in calibration:
        out["pixel"] = jm.threshold_metrics(masks, maps, calibration["pixel_threshold"])
    return out


def calibrated_table(extras: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """{category: {image_f1, image_precision, image_recall, image_false_alarm_rate, pixel_f1}}."""
    rows = {}
    for cat, d in extras.items():
        c = d.get("calibrated")
        if c is None:
            continue
        rows[cat] = {
            f"image_{k}": c["image"][k] for k in ("f1", "precision", "recall", "false_alarm_rate")
        }
        rows[cat]["pixel_f1"] = c["pixel"]["f1"] if "pixel" in c else None
    if rows:
        keys = next(iter(rows.values())).keys()
        rows["mean"] = {
            k: (
                None
                if any(r[k] is None for r in rows.values())
                else float(np.mean([r[k] for r in rows.values()]))
            )
            for k in keys
        }
    return rows


# ---------------------------------------------------------------------------------------------
# Whole runs
# ---------------------------------------------------------------------------------------------


def _version() -> str:
    from jad import __version__

    return __version__


def _summary(
    per_category: dict[str, dict[str, float | None]],
) -> dict[str, dict[str, float | None]]:
    """Per category + ``mean`` (None for a key that some category lacks: never a mean over a subset)."""
    from jad import metrics as jm

    return jm.summarize(per_category)


def _write_tables(
    workdir: Path, metrics: dict[str, dict[str, float | None]], stem: str = "metrics"
) -> list[Path]:
    from jad import metrics as jm

    return list(jm.write_results(metrics, workdir, stem=stem))


def format_table(metrics: dict[str, dict[str, float | None]]) -> str:
    from jad import metrics as jm

    return jm.format_table(metrics)


def format_results(results: dict[str, Any]) -> str:
    """The metrics table, then the calibrated decisions and the paper view when present."""
    parts = [format_table(results["metrics"])]
    if "calibrated" in results:
        parts.append(
            f"\nat the calibrated thresholds ({results['calibrated']['protocol']}):\n"
            + format_table(results["calibrated"]["metrics"])
        )
    if "paper_view" in results:
        parts.append("\npaper view:\n" + format_table(results["paper_view"]))
    return "\n".join(parts)


def run_info() -> dict[str, Any]:
    return {
        "jad_version": _version(),
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def preflight(config, command: str = "python -m jad.train --config=<config file>") -> None:
    """One sentence naming what is missing (dataset root, converted weights) and the command that
    fixes it; never falls back to synthetic data or random weights."""
    from jad.models.pretrained import read_metadata, resolve_weights_dir

    name = str(config.data.name)
    missing, fixes = [], []
    if name != "synthetic" and not str(config.data.get("root", "") or "").strip():
        missing.append(f"the {name} dataset folder (data.root)")
        fixes.append(f"--config.data.root=/path/to/{name}")
    weights = str(config.backbone.weights)
    if weights != "random":
        try:
            read_metadata(resolve_weights_dir(weights, str(config.backbone.arch)))
        except FileNotFoundError:
            missing.append("converted backbone weights (backbone.weights)")
            fixes.append("--config.backbone.weights=/path/to/converted_weights")
    if missing:
        convert = (
            " after converting torchvision's file once with `python -m jad.convert --src "
            "wide_resnet50_2-95faca4d.pth --out /path/to/converted_weights`"
            if any("weights" in f for f in fixes)
            else ""
        )
        raise UserError(
            f"missing {' and '.join(missing)}: run `{command} {' '.join(fixes)}`{convert}"
        )


def _evaluate_in_workdir(
    method,
    state,
    config,
    root,
    category: str,
    workdir: Path,
    *,
    heatmaps: bool,
    calibration: dict[str, Any] | None,
    progress: bool,
) -> tuple[dict[str, float | None], dict[str, float], dict[str, Any]]:
    """:func:`evaluate_category` with the workdir's layout: heat maps (``heatmaps`` and
    ``eval.num_heatmaps`` != 0) under ``<category>/heatmaps``, the report's data beside them."""
    hm_dir = (
        workdir / category / "heatmaps"
        if heatmaps and config.eval.get("num_heatmaps", -1) != 0
        else None
    )
    return evaluate_category(
        method, state, config, root, category,
        heatmap_dir=hm_dir, progress=progress, calibration=calibration,
        report_path=workdir / category / report_data.FILE,
    )  # fmt: skip


def _write_results(
    workdir: Path,
    results: dict[str, Any],
    extras: dict[str, Any],
    summary: dict[str, Any],
    name: str,
    stem: str,
    *,
    paper_view: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``results`` + the calibrated table (+ ``paper_view``), written by process 0 to
    ``<workdir>/<name>`` and the ``<stem>`` metric tables; returns it."""
    table = calibrated_table(extras)
    if table:
        results["calibrated"] = {"protocol": CALIBRATED_PROTOCOL, "metrics": table}
    if paper_view is not None:
        results["paper_view"] = paper_view
    if is_primary():
        write_json(workdir / name, results)
        _write_tables(workdir, summary, stem=stem)
    return results


def train_and_evaluate(
    config, workdir: Path, *, progress: bool = True, command: str | None = None
) -> dict[str, Any]:
    """Fit (or restore) and evaluate every requested category; write ``results.json``."""
    workdir = Path(workdir)
    t_start = time.perf_counter()
    if command is not None:
        preflight(config, command)
    root = dataset_root(config)
    categories = resolve_categories(config, root)
    check_workdir(config, workdir, categories)
    provenance = weights_provenance(config)
    if provenance.get("random"):
        log(
            "WARNING: backbone weights are RANDOM (backbone.weights=random): numbers are not comparable "
            "with published results. Convert real weights with `python -m jad.convert`."
        )
    method = build_method(config)  # validates the method's config before anything is written
    # one writer at a time (a second run on this workdir says who holds it and exits)
    with workdir_lock(workdir, command or "train") if is_primary() else nullcontext():
        if is_primary():
            write_json(workdir / "config.json", config_to_dict(config))
        per_cat: dict[str, dict[str, float | None]] = {}
        timings: dict[str, dict[str, float]] = {}
        extras: dict[str, Any] = {}
        for category in categories:
            manifest = anomaly_manifest(config, root, category)
            if manifest is not None:
                if is_primary():
                    write_json(workdir / category / "labelled_anomalies.json", manifest)
            state, fit_info, calibration = fit_or_restore(
                method, config, root, category, workdir, progress=progress
            )
            metrics, t_eval, extra = _evaluate_in_workdir(
                method, state, config, root, category, workdir,
                heatmaps=True, calibration=calibration, progress=progress,
            )  # fmt: skip
            per_cat[category] = metrics
            timings[category] = {
                k: float(v) for k, v in fit_info.items() if k.endswith("_s") and v is not None
            } | t_eval
            extras[category] = {k: v for k, v in fit_info.items() if not k.endswith("_s")} | extra
            if manifest is not None:
                extras[category]["labelled_anomalies"] = manifest
            if calibration is not None:
                extras[category]["calibration"] = calibration
            log(
                f"[{category}] "
                + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if v is not None)
            )
        summary = _summary(per_cat)
        protocols = {c: extras[c].get("protocol", PATCHCORE_PROTOCOL) for c in categories}
        results = {
            "method": method.name,
            "protocol": (
                next(iter(protocols.values())) if len(set(protocols.values())) == 1 else protocols
            ),
            "dataset": str(config.data.name),
            "data_root": str(root),
            "metrics": summary,
            "timings": timings | {"total_s": time.perf_counter() - t_start},
            "details": extras,
            "backbone": provenance,
            "config": config_to_dict(config),
            "run": run_info(),
        }
        paper_keys = getattr(method, "paper_keys", None)
        paper_view = (  # the paper's table: a view of jad's keys, no new metrics
            {
                cat: {name: row.get(key) for name, key in paper_keys.items()}
                for cat, row in summary.items()
            }
            if paper_keys
            else None
        )
        return _write_results(
            workdir, results, extras, summary, "results.json", "metrics", paper_view=paper_view
        )


def trained_categories(workdir: Path) -> list[str]:
    """Sorted names of the categories that have a checkpoint under ``workdir``."""
    return sorted(
        p.parent.name
        for p in Path(workdir).glob("*/checkpoint")
        if checkpoint.latest_step(p) is not None
    )


def evaluate_workdir(
    workdir: Path, *, categories: list[str] | None = None, progress: bool = True
) -> dict[str, Any]:
    """Re-evaluate the checkpoints in ``workdir`` (their saved config); writes ``eval_results.json``."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise UserError(
            f"workdir {workdir} does not exist (train first: python -m jad.train --workdir={workdir} ...)"
        )
    found = trained_categories(workdir)
    if not found:
        raise UserError(
            f"no checkpoints under {workdir}/<category>/checkpoint (train first with jad.train)"
        )
    if categories:
        missing = [c for c in categories if c not in found]
        if missing:
            raise UserError(
                f"no checkpoint for category '{missing[0]}' in {workdir}; found: {', '.join(found)}"
            )
        found = categories
    with workdir_lock(workdir, "evaluate") if is_primary() else nullcontext():
        per_cat: dict[str, dict[str, float | None]] = {}
        timings: dict[str, dict[str, float]] = {}
        extras: dict[str, Any] = {}
        method = None
        for category in found:
            state, meta = checkpoint.restore(workdir / category / "checkpoint")
            config = ml_collections.ConfigDict(meta["config"])
            if method is None or meta["fit_signature"] != fit_signature(method.config):
                method = build_method(config)
            root = dataset_root(config)
            metrics, t_eval, extra = _evaluate_in_workdir(
                method, state, config, root, category, workdir,
                heatmaps=False, calibration=meta.get("calibration"), progress=progress,
            )  # fmt: skip
            per_cat[category] = metrics
            timings[category] = t_eval
            extras[category] = extra
        summary = _summary(per_cat)
        out = {"metrics": summary, "timings": timings, "run": run_info()}
        return _write_results(workdir, out, extras, summary, "eval_results.json", "eval_metrics")


def write_report(workdir: Path) -> Path | None:
    """``<workdir>/report.html`` (``jad.train_lib.report_html``); process 0 writes it."""
    if not is_primary():
        return None
    from jad.train_lib import report_html

    return report_html.build(workdir)


def pick_category(workdir: Path, requested: str | None) -> str:
    """The trained category of ``workdir`` to use: ``requested``, or the only one there."""
    from jad.utils.errors import UserError

    found = trained_categories(workdir)
    if not found:
        raise UserError(
            f"no trained model under {workdir} (run jad.train with --workdir={workdir} first)"
        )
    if requested:
        if requested not in found:
            raise UserError(
                f"no model for category '{requested}' in {workdir}; found: {', '.join(found)}"
            )
        return requested
    if len(found) > 1:
        raise UserError(
            f"{workdir} holds models for several categories ({', '.join(found)}); pass --category"
        )
    return found[0]
