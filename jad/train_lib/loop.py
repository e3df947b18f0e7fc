"""The one training loop: every trainer (PBAS, ProxyCore, APC) runs through :func:`fit_trainer`.

Per category, a trainer (protocol in ``jad.methods.common``) supplies pure pieces and this module
does the rest:

1. **Data.** The training images in the loader's fixed order; a seeded fraction is held out when
   ``train.select=val`` (never trained on). A trainer with ``embed`` trains on its frozen
   features, computed once (:mod:`jad.train_lib.feature_cache`); otherwise the preprocessed images
   are kept in memory.
2. **Order.** Step ``s`` is batch ``s % S`` of epoch ``s // S`` (S = ceil(n / batch_size)); epoch
   ``e`` visits ``default_rng([seed, 1, e]).permutation(n)``. The order is a pure function of
   (seed, epoch), so the loop can start at any step, and per-step randomness is
   ``fold_in(state.rng, state.step)`` inside the step.
3. **Devices.** :class:`jad.train_lib.parallel.DataParallel`: jit with the batch sharded over the
   ``data`` axis (default) or the same step under pmap (``train.parallel=pmap``). Every batch is
   padded to one shape and carries ``mask``.
4. **Checkpoints.** ``<workdir>/train/<step>`` every ``train.checkpoint_every`` steps (0 = every
   epoch) and at the end; the latest ``train.keep`` are kept, plus the best under a selection
   criterion. A run killed at any moment and started again resumes from the latest checkpoint
   and ends bit-identical (CPU) to an uninterrupted run. A checkpoint made with a config that
   changes the trained model is refused (``jad.train_lib.runner.fit_signature``).
5. **Selection** (``train.select``): ``last`` (default) = the final step; ``val`` = the lowest
   ``trainer.eval_loss`` on the held-out normal images, evaluated every ``train.eval_every``
   epochs (normal data only); ``test_official`` = the official code's rule on the TEST set, for
   reproduction only, labelled "test-selected (not a valid protocol)".
6. **Logging.** A progress bar (epoch, loss, ETA) and TensorBoard files under ``<workdir>/tb``:
   per-step metrics, learning rates, images/s, and heatmaps of a few images at each evaluation.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jad.methods.common import FitContext, FitResult, TrainData, Trainer
from jad.train_lib import heatmaps
from jad.train_lib.checkpoint import Checkpoints
from jad.train_lib.feature_cache import cache_location, compute_features
from jad.train_lib.parallel import DataParallel, data_mesh, pad_to, padded_batch_size
from jad.train_lib.tblog import MetricWriter
from jad.utils import distributed
from jad.utils.errors import UserError
from jad.utils.progress import Progress

SELECT = ("last", "val", "test_official")
PROTOCOLS = {
    "last": "last step (fixed budget; no model selection)",
    "val": "selected on held-out normal training images (normal-only criterion)",
    "test_official": "test-selected (not a valid protocol)",
}


@dataclasses.dataclass(frozen=True)
class LoopOptions:
    """``config.train`` read once, validated with one-line errors."""

    epochs: int
    steps: int
    batch_size: int
    checkpoint_every: int
    keep: int
    select: str
    val_fraction: float
    eval_every: int
    log_every: int
    feature_cache_gb: float
    parallel: str
    tensorboard: bool
    num_tb_heatmaps: int
    divergence_factor: float
    seed: int

    @classmethod
    def from_config(cls, config) -> LoopOptions:
        t = config.train
        o = cls(
            epochs=int(t.epochs),
            steps=int(t.get("steps", 0)),
            batch_size=int(t.batch_size),
            checkpoint_every=int(t.checkpoint_every),
            keep=int(t.keep),
            select=str(t.select),
            val_fraction=float(t.val_fraction),
            eval_every=int(t.eval_every),
            log_every=int(t.log_every),
            feature_cache_gb=float(t.feature_cache_gb),
            parallel=str(t.parallel),
            tensorboard=bool(t.tensorboard),
            num_tb_heatmaps=int(t.num_tb_heatmaps),
            divergence_factor=float(t.get("divergence_factor", 1e3)),
            seed=int(config.seed),
        )
        if o.select not in SELECT:
            raise UserError(f"train.select={o.select!r} is unknown; use one of {', '.join(SELECT)}")
        for name in ("batch_size", "keep", "eval_every", "log_every"):
            if getattr(o, name) < 1:
                raise UserError(f"train.{name}={getattr(o, name)} must be >= 1")
        if o.epochs < 1 and o.steps < 1:
            raise UserError("set train.epochs or train.steps to a positive number")
        if o.checkpoint_every < 0:
            raise UserError("train.checkpoint_every must be >= 0 (0 = once per epoch)")
        if o.select == "val" and not 0.0 < o.val_fraction < 1.0:
            raise UserError(f"train.val_fraction={o.val_fraction} must be in (0, 1) for select=val")
        return o


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The visiting order of ``n`` examples in ``epoch`` (a pure function of seed and epoch)."""
    return np.random.default_rng([int(seed), 1, int(epoch)]).permutation(n)


def init_order(seed: int, n: int) -> np.ndarray:
    """The order of the data-dependent initialisation pass (PBAS centres): its own stream."""
    return np.random.default_rng([int(seed), 2]).permutation(n)


def holdout_split(seed: int, n: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices), both sorted; at least one image on each side."""
    if fraction <= 0:
        return np.arange(n), np.zeros((0,), np.int64)
    k = min(max(1, int(round(n * fraction))), n - 1)
    if k < 1:
        raise UserError(f"{n} training image(s) are too few to hold out a validation split")
    perm = np.random.default_rng([int(seed), 3]).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, -(-n // batch_size))


def batch_indices(seed: int, step: int, n: int, batch_size: int) -> tuple[np.ndarray, int]:
    """(example positions of ``step``'s batch, its epoch); the last batch of an epoch may be short."""
    spe = steps_per_epoch(n, batch_size)
    epoch, b = divmod(int(step), spe)
    return epoch_order(seed, epoch, n)[b * batch_size : (b + 1) * batch_size], epoch


def gather(data: TrainData, positions: np.ndarray) -> dict:
    """The examples at ``positions`` (into ``data.indices``) plus their ``index``."""
    rows = data.indices[positions]
    batch = {k: np.asarray(v[rows]) for k, v in data.arrays.items()}
    batch["index"] = rows.astype(np.int32)
    return batch


def make_batch(trainer: Trainer, data: TrainData, positions: np.ndarray, step: int) -> dict:
    """The host training batch of ``step``; trainers may build their own (e.g. APC's balanced
    normal + anomalous batches), always as a pure function of (data, positions, step)."""
    custom = getattr(trainer, "make_batch", None)
    return custom(data, positions, step) if custom is not None else gather(data, positions)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def _load_arrays(trainer, loader, opts: LoopOptions, ctx: FitContext) -> tuple[dict, dict]:
    """All training examples in the loader's order: {"features"} or {"image", "mask"}."""
    n = int(loader.num_examples)
    embed = getattr(trainer, "embed", None)
    t0 = time.perf_counter()
    preview: list[np.ndarray] = []

    def batches():
        for batch in loader.epoch(0):
            if len(preview) < opts.num_tb_heatmaps:
                preview.extend(batch["image"][: opts.num_tb_heatmaps - len(preview)])
            yield batch

    if embed is not None:
        key_parts = dict(getattr(trainer, "feature_key", lambda: {})(), dataset=ctx.dataset_id, n=n)
        key, folder = cache_location(key_parts, ctx.workdir)
        feats, info = compute_features(
            batches(),
            embed,
            num_examples=n,
            num_batches=len(loader),
            key=key,
            folder=folder,
            budget_gb=opts.feature_cache_gb,
            progress=ctx.progress,
        )
        feats = distributed.gather_rows(feats, info.pop("valid"))
        if not preview and opts.num_tb_heatmaps:  # reused from disk: read a few images
            for batch in loader.epoch(0):
                preview.extend(batch["image"][: opts.num_tb_heatmaps - len(preview)])
                if len(preview) >= opts.num_tb_heatmaps:
                    break
        arrays = {"features": feats}
    else:
        images, masks, labels, valid = [], [], [], []
        with Progress("images", len(loader), unit="batch", enabled=ctx.progress) as bar:
            for batch in batches():
                images.append(batch["image"])
                masks.append(batch["mask"])
                labels.append(batch["label"])
                valid.append(batch.get("valid", np.ones(len(batch["label"]), bool)))
                bar.update(1)
        v = np.concatenate(valid)
        arrays = {  # "mask" is the row mask of a batch; ground-truth masks are "gt_mask"
            "image": distributed.gather_rows(np.concatenate(images), v),
            "gt_mask": distributed.gather_rows(np.concatenate(masks), v),
            "label": distributed.gather_rows(np.concatenate(labels), v),
        }
        info = {"where": "memory", "gb": arrays["image"].nbytes / 2**30}
    aux = {}
    if getattr(trainer, "uses_anomalies", False):
        if ctx.anomalous is None:
            raise UserError(
                f"{trainer.name} trains with labelled anomalies: set data.labelled_anomalies > 0"
            )
        batches_a = list(ctx.anomalous.epoch(0))
        va = np.concatenate([b.get("valid", np.ones(len(b["label"]), bool)) for b in batches_a])
        aux = {
            "anomalous_image": distributed.gather_rows(
                np.concatenate([b["image"] for b in batches_a]), va
            ),
            "anomalous_mask": distributed.gather_rows(
                np.concatenate([b["mask"] for b in batches_a]), va
            ),
        }
    info["seconds"] = time.perf_counter() - t0
    return arrays, aux, info | {"preview": preview[: opts.num_tb_heatmaps]}


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def _to_host(tree):
    return distributed.to_host(tree)


def _local(state):
    """The state as this process's own values: in a multi-host run, host copies of the global
    arrays, so that a trainer's per-process work after (or between) steps (``finalize``,
    ``export``: feature passes, coreset inputs) never mixes global and local arrays in one
    computation. A single process keeps its device arrays."""
    return _to_host(state) if jax.process_count() > 1 else state


def _unhealthy(metrics: dict[str, float], lowest: float, factor: float) -> str | None:
    """Why training must stop, or None. NaN / Inf in any metric; or (``factor`` > 0) a loss above
    ``factor`` times the lowest epoch-mean loss so far (divergence; defined after the first
    epoch, and only for positive losses)."""
    bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    if bad:
        return f"non-finite {', '.join(bad)} ({', '.join(f'{k}={metrics[k]}' for k in bad)})"
    loss = metrics.get("loss")
    if factor > 0 and loss is not None and math.isfinite(lowest) and lowest > 0:
        if loss > factor * lowest:
            return (
                f"the loss diverged ({loss:.4g} > train.divergence_factor={factor:g} x the lowest "
                f"epoch-mean loss {lowest:.4g})"
            )
    return None


_EVAL_FNS: dict[int, Any] = {}


def _evaluate_val(trainer, state, data: TrainData, opts: LoopOptions) -> float:
    """Mean of ``trainer.eval_loss`` over the held-out examples (example-weighted)."""
    if id(trainer) not in _EVAL_FNS:
        _EVAL_FNS.clear()
        _EVAL_FNS[id(trainer)] = jax.jit(trainer.eval_loss)
    fn = _EVAL_FNS[id(trainer)]
    total, count = 0.0, 0
    n = data.num_examples
    for s in range(0, n, opts.batch_size):
        pos = np.arange(s, min(n, s + opts.batch_size))
        batch = pad_to(gather(data, pos), opts.batch_size)  # plain held-out examples
        real = len(pos)
        total += float(fn(state, batch)) * real
        count += real
    return total / max(count, 1)


def fit_trainer(
    trainer: Trainer, loader, *, config, key: jax.Array, ctx: FitContext, signature
) -> FitResult:
    """Trains ``trainer`` on ``loader``'s images (one category) and returns its exported state."""
    opts = LoopOptions.from_config(config)
    if opts.select == "val" and not hasattr(trainer, "eval_loss"):
        raise UserError(f"train.select=val: {trainer.name} has no normal-only validation criterion")
    if opts.select == "test_official" and ctx.evaluate_test is None:
        raise UserError("train.select=test_official needs the test set (run through jad.train)")
    if opts.select == "test_official" and not getattr(trainer, "official_selection", None):
        raise UserError(
            f"train.select=test_official: {trainer.name} has no official code whose selection rule "
            f"could be reproduced; use train.select=last or val"
        )
    workdir = Path(ctx.workdir) if ctx.workdir is not None else None
    timings: dict[str, float] = {}
    if hasattr(trainer, "begin_category"):
        trainer.begin_category(ctx.category)

    # -- data ------------------------------------------------------------------------------
    arrays, aux, data_info = _load_arrays(trainer, loader, opts, ctx)
    preview = data_info.pop("preview")
    n_all = len(next(iter(arrays.values())))
    frac = opts.val_fraction if opts.select == "val" else 0.0
    train_idx, val_idx = holdout_split(opts.seed, n_all, frac)
    data = TrainData(arrays, train_idx, aux)
    val = TrainData(arrays, val_idx, aux)
    if hasattr(trainer, "examples"):  # e.g. ProxyCore trains on patches, not images
        data, val = trainer.examples(data), trainer.examples(val)
    timings["features_s"] = data_info.pop("seconds")
    n = data.num_examples
    spe = steps_per_epoch(n, opts.batch_size)
    total = opts.steps if opts.steps > 0 else opts.epochs * spe
    ckpt_every = opts.checkpoint_every or spe

    # -- devices, state --------------------------------------------------------------------
    mesh = data_mesh()
    step_examples = int(getattr(trainer, "step_batch_size", opts.batch_size))
    batch_shape = padded_batch_size(step_examples, int(mesh.devices.size))
    sample = pad_to(make_batch(trainer, data, np.arange(min(n, opts.batch_size)), 0), batch_shape)
    shapes = jax.eval_shape(trainer.init, key, sample)
    specs = None
    if hasattr(trainer, "state_specs"):  # state too big for one device: the trainer shards it
        specs = trainer.state_specs(shapes, int(mesh.devices.size))
    dp = DataParallel(trainer.train_step, mesh=mesh, mode=opts.parallel, state_specs=specs)
    abstract = dp.abstract_state(shapes)
    best_mode = {"last": None, "val": "min", "test_official": "max"}[opts.select]
    ckpts = Checkpoints(workdir / "train", keep=opts.keep, best_mode=best_mode) if workdir else None
    meta = {"fit_signature": signature, "method": trainer.name}
    start = 0
    best: dict[str, Any] | None = None  # {"step", "criterion"}: strictly better replaces
    if ckpts is not None and ckpts.latest_step() is not None:
        saved = ckpts.read_meta()
        best = saved.get("best")
        if saved.get("fit_signature") != signature:
            raise UserError(
                f"{workdir / 'train'} holds a run with a different config; use a new --workdir "
                f"(nothing was overwritten)"
            )
        state, _ = ckpts.restore(target=abstract)
        start = int(state.step)
        print(f"[{trainer.name}] resuming from step {start} of {total}", flush=True)
    else:
        state = trainer.init(key, sample)
        if hasattr(trainer, "init_from_data"):
            t0 = time.perf_counter()
            state = trainer.init_from_data(state, data, init_order(opts.seed, n))
            timings["init_from_data_s"] = time.perf_counter() - t0
    state = dp.put_state(state)

    primary = distributed.is_primary()
    writer = MetricWriter(workdir / "tb" if (workdir and opts.tensorboard and primary) else None)
    lrs = getattr(trainer, "learning_rates", lambda step: {})
    history: list[dict[str, Any]] = []
    evaluations: list[dict[str, Any]] = []
    t_train = time.perf_counter()
    t_log, steps_since_log = time.perf_counter(), 0
    last: dict[str, float] = {}
    epoch_sums: dict[str, float] = {}
    epoch_steps = 0
    lowest = math.inf  # the lowest epoch-mean loss so far (divergence rule)
    last_saved = start
    try:
        with Progress(
            "train", total, unit="step", enabled=ctx.progress and primary, initial=start
        ) as bar:
            for step in range(start, total):
                positions, epoch = batch_indices(opts.seed, step, n, opts.batch_size)
                batch = pad_to(make_batch(trainer, data, positions, step), batch_shape)
                state, metrics = dp(state, batch)
                steps_since_log += 1
                done = step + 1
                last = {k: float(v) for k, v in distributed.to_host(metrics).items()}
                problem = _unhealthy(last, lowest, opts.divergence_factor)
                if problem:
                    where = (
                        f"the last good checkpoint (step {last_saved}) is kept in "
                        f"{workdir / 'train'}; running the same command resumes from it"
                        if ckpts is not None and last_saved
                        else "no checkpoint was written yet"
                    )
                    raise UserError(f"training stopped at step {done}: {problem}; {where}")
                for k, v in last.items():
                    epoch_sums[k] = epoch_sums.get(k, 0.0) + v
                epoch_steps += 1
                if done % opts.log_every == 0 or done == total:
                    dt = time.perf_counter() - t_log
                    rate = steps_since_log * opts.batch_size / dt if dt > 0 else 0.0
                    t_log, steps_since_log = time.perf_counter(), 0
                    writer.scalars(done, {f"train/{k}": v for k, v in last.items()})
                    writer.scalars(done, {f"lr/{k}": v for k, v in lrs(done).items()})
                    writer.scalars(done, {"perf/examples_per_s": rate, "train/epoch": epoch})
                if done % spe == 0 or done == total:  # epoch means: the smoothed learning curve
                    means = {k: v / epoch_steps for k, v in epoch_sums.items()}
                    if "loss" in means:
                        lowest = min(lowest, means["loss"])
                    rates = {f"lr/{k}": float(v) for k, v in lrs(done).items()}
                    history.append({"epoch": epoch, "step": done, **means, **rates})
                    writer.scalars(done, {f"epoch/{k}": v for k, v in means.items()})
                    epoch_sums, epoch_steps = {}, 0
                bar.update(1, epoch=epoch, loss=last.get("loss", float("nan")))
                end_of_epoch = done % spe == 0 or done == total
                evaluate = end_of_epoch and ((done // spe) % opts.eval_every == 0 or done == total)
                criterion = None
                if evaluate:
                    criterion = _evaluation(
                        trainer, state, val, opts, ctx, writer, done, preview, evaluations
                    )
                if criterion is not None and (
                    best is None
                    or (
                        criterion < best["criterion"]
                        if best_mode == "min"
                        else criterion > best["criterion"]
                    )
                ):
                    best = {"step": done, "criterion": criterion}
                if ckpts is not None and (done % ckpt_every == 0 or done == total or evaluate):
                    ckpts.save(
                        done,
                        state,
                        meta | {"step": done, "epoch": epoch, "best": best},
                        criterion=criterion,
                    )
                    last_saved = done
    finally:
        writer.close()
        if ckpts is not None:
            ckpts.wait()
    timings["train_s"] = time.perf_counter() - t_train

    # -- selection, finalize, export -------------------------------------------------------
    selected = total
    if opts.select != "last" and best is not None:
        if ckpts is None:
            raise UserError("model selection needs a workdir to keep the best checkpoint")
        selected = int(best["step"])
        if selected != total:
            state, _ = ckpts.restore(selected, target=abstract)
    if ckpts is not None:
        ckpts.close()
    if hasattr(trainer, "finalize"):
        t0 = time.perf_counter()
        state = trainer.finalize(_local(state), data)
        timings["finalize_s"] = time.perf_counter() - t0
    exported = _to_host(trainer.export(state))
    steps_run = total - start
    info = {
        **{k: v for k, v in timings.items()},
        "fit_s": sum(timings.values()),
        "train_images": int(n),
        "heldout_images": int(len(val_idx)),
        "steps": int(total),
        "steps_this_run": int(steps_run),
        "resumed_from_step": int(start),
        "epochs": total / spe,
        "selected_step": int(selected),
        "select": opts.select,
        "protocol": PROTOCOLS[opts.select],
        "parallel": f"{opts.parallel} on {dp.num_devices} device(s)",
        "feature_cache": {k: v for k, v in data_info.items() if k != "key"},
        "final_metrics": last,
        "history": history,
        "evaluations": evaluations,
        "step_s": timings["train_s"] / steps_run if steps_run else None,
    }
    return FitResult(state=exported, info=info)


def _evaluation(trainer, state, val, opts, ctx, writer, step, preview, evaluations) -> float | None:
    """One evaluation at an epoch end: the selection criterion (if any) and TensorBoard heatmaps."""
    record: dict[str, Any] = {"step": step}
    criterion = None
    host_state = None  # exported to host numpy: predictions below run per process, locally
    if opts.select == "val":
        criterion = _evaluate_val(trainer, state, val, opts)
        record["val_loss"] = criterion
        writer.scalars(step, {"val/loss": criterion})
    elif opts.select == "test_official":
        host_state = _to_host(trainer.export(_local(state)))
        metrics = ctx.evaluate_test(host_state)
        keys = trainer.official_selection
        criterion = float(sum(metrics[k] or 0.0 for k in keys))
        record.update(test_metrics=metrics, criterion=criterion)
        writer.scalars(step, {f"test/{k}": v for k, v in metrics.items()})
    # Exporting may take collectives (gathering a sharded state; ProxyCore builds its bank with
    # a coreset over every process's devices), so every process exports when any writes previews:
    # decided from settings all processes share, not from writer.enabled (process 0 only).
    previews = opts.tensorboard and opts.num_tb_heatmaps > 0 and ctx.workdir is not None
    if previews and host_state is None:
        host_state = _to_host(trainer.export(_local(state)))
    if writer.enabled and preview:
        pred = trainer.predict(host_state, np.stack(preview))
        lo, hi = heatmaps.colour_range(pred.anomaly_maps)
        for i, (img, m) in enumerate(zip(preview, pred.anomaly_maps, strict=True)):
            panel = heatmaps.panel(heatmaps.denormalize(img), m, vmin=lo, vmax=hi)
            writer.image(step, f"heatmaps/{i}", panel)
        writer.flush()
    evaluations.append(record)
    return criterion
