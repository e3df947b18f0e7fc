"""ProxyCore (``jad.methods.proxycore``): the loss and one full step against a float64 numpy
reference, pseudo-labels on 1 vs 8 devices, each official defect B1-B3 as a toggle, the sharded
proxy axis, exact resume through the training library, the synthetic demo, one-line config errors.

Tolerances: float32 vs the float64 reference: losses rtol 1e-5, gradients 1e-5 of each array's
max; AdamP's first step moves every parameter by about lr * sign(g), so updates are compared (rtol
1e-3) where |g| is above 1e-3 of the array's max (a rounding-size gradient may flip its sign), and
the biases whose gradient is mathematically zero (a BatchNorm follows them: both fc1 biases and the
embedding's fc2 bias) are checked to be ~0 instead. The tiny trainers use lr 1e-3 (not 1e-5).
Runs whose reduction order differs (sharded vs replicated proxies, pmap vs jit): losses rtol 1e-5,
parameters rtol 1e-4, except those zero-gradient biases and the BatchNorm running means they
shift: atol 2 * lr * steps (Adam turns their rounding-size gradients into +-lr steps).
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from jadtest import tiny_config
from jax.sharding import PartitionSpec as P

from jad.methods import proxycore as PC
from jad.methods.common import TrainData
from jad.train_lib import checkpoint, loop, runner
from jad.train_lib.parallel import DataParallel, data_mesh, pad_to
from jad.utils.errors import UserError


def small_config(root=None, **overrides):
    """ProxyCore's tiny config: 64 px (8 x 8 patches per image), 64-d features, hidden 64, out 64,
    batches of 64 patches, 4 epochs."""
    return tiny_config("proxycore", root, **overrides)


def tiny_trainer(mesh=None, **overrides) -> PC.ProxyCore:
    """A trainer without a backbone over [N_img, P, 16] features: hidden 32, out 16, the spec's
    N(0, 1) feature noise."""
    kw = {
        "proxycore.target_embed_dim": 16,
        "proxycore.out": 16,
        "proxycore.hidden": 32,
        "proxycore.lr": 1e-3,
        "proxycore.noise_std": 1.0,
    }
    t = PC.ProxyCore(small_config(**(kw | overrides)), backbone=(None, None), mesh=mesh)
    t.progress = False
    return t


def prepared(trainer, feats, train_images=None, key=0):
    """examples -> init -> init_from_data, as the loop does; returns (state, train TrainData)."""
    n = feats.shape[0]
    idx = np.arange(n) if train_images is None else np.asarray(train_images)
    data = trainer.examples(TrainData({"features": feats}, idx))
    sample = pad_to(loop.make_batch(trainer, data, np.arange(8), 0), 8)
    state = trainer.init(jax.random.PRNGKey(key), sample)
    state = trainer.init_from_data(state, data, np.arange(data.num_examples))
    return state, data


def features(n_img=4, p=8, d=16, seed=0):
    return np.random.default_rng(seed).standard_normal((n_img, p, d)).astype(np.float32)


def test_examples_are_patches_viewing_the_cache(tmp_path):
    """Per-image features [N_img, P, D] become per-patch examples without a copy (also for a
    memory-mapped cache); the training split's patch rows are the examples."""
    mm = np.lib.format.open_memmap(tmp_path / "f.npy", "w+", np.float32, (5, 8, 16))
    mm[:] = features(n_img=5)
    cache = np.load(tmp_path / "f.npy", mmap_mode="r")
    t = tiny_trainer(**{"proxycore.pslabel_ratio": 0.25})
    arrays = {"features": cache}  # one dict for both splits, as in the loop
    train = t.examples(TrainData(arrays, np.array([0, 2, 3, 4])))
    val = t.examples(TrainData(arrays, np.array([1])))
    flat = train.arrays["features"]
    assert flat.shape == (40, 16) and np.shares_memory(flat, cache)
    np.testing.assert_array_equal(train.indices, np.r_[0:8, 16:40])
    assert t.layout == PC.Layout(patches=8, rows=40, train=32, proxies=8, padded=8)
    np.testing.assert_array_equal(flat[train.indices[9]], cache[2, 1])
    np.testing.assert_array_equal(val.indices, np.r_[8:16])
    assert t.layout.train == 32  # the held-out split does not change the training layout


# ---------------------------------------------------------------------------------------------
# float64 numpy reference (forward, backward, AdamP step 1)
# ---------------------------------------------------------------------------------------------


def _np(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def _mlp_fwd(p, x, eps=1e-5):
    a = x @ p["fc1"]["dense"]["kernel"] + p["fc1"]["dense"]["bias"]
    mu, var = a.mean(0), a.var(0)
    xhat = (a - mu) / np.sqrt(var + eps)
    y = p["bn"]["scale"] * xhat + p["bn"]["bias"]
    r = np.maximum(y, 0.0)
    return r @ p["fc2"]["dense"]["kernel"] + p["fc2"]["dense"]["bias"], (x, mu, var, xhat, y, r)


def _mlp_bwd(p, cache, dout, eps=1e-5):
    x, _, var, xhat, y, r = cache
    n = x.shape[0]
    dy = (dout @ p["fc2"]["dense"]["kernel"].T) * (y > 0)
    dxhat = dy * p["bn"]["scale"]
    da = (n * dxhat - dxhat.sum(0) - xhat * (dxhat * xhat).sum(0)) / (n * np.sqrt(var + eps))
    grads = {
        "fc1": {"dense": {"kernel": x.T @ da, "bias": da.sum(0)}},
        "bn": {"scale": (dy * xhat).sum(0), "bias": dy.sum(0)},
        "fc2": {"dense": {"kernel": r.T @ dout, "bias": dout.sum(0)}},
    }
    return grads, da @ p["fc1"]["dense"]["kernel"].T


def reference_loss_and_grads(params, x, labels, *, temperature, gamma, alpha, batch_mean):
    """(loss, per-sample CE, grads, (embedding, projection) batch moments) in float64."""
    params = _np(params)
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    h, ce_e = _mlp_fwd(params["embedding"], x)
    z, ce_p = _mlp_fwd(params["projection"], h)
    w = params["proxies"]
    norm = np.linalg.norm(w, axis=1, keepdims=True)
    wn = w / norm
    s = z @ wn.T / temperature
    e = np.exp(s - s.max(1, keepdims=True))
    soft = e / e.sum(1, keepdims=True)
    ce = np.log(e.sum(1)) + s.max(1) - s[np.arange(n), labels]

    def focal_and_slope(c):  # f(c) = alpha (1 - exp(-c))^gamma c and f'(c)
        q = 1.0 - np.exp(-c)
        if gamma == 0:
            return alpha * c, alpha * np.ones_like(c)
        return alpha * q**gamma * c, alpha * (q**gamma + gamma * q ** (gamma - 1) * (1 - q) * c)

    if batch_mean:
        loss, slope = focal_and_slope(ce.mean())
        dce = np.full(n, slope / n)
    else:
        f, slope = focal_and_slope(ce)
        loss, dce = f.mean(), slope / n
    onehot = np.eye(w.shape[0])[labels]
    ds = dce[:, None] * (soft - onehot) / temperature
    dwn = ds.T @ z
    grads = {
        "proxies": (dwn - wn * (dwn * wn).sum(1, keepdims=True)) / norm,
    }
    grads["projection"], dh = _mlp_bwd(params["projection"], ce_p, ds @ wn)
    grads["embedding"], _ = _mlp_bwd(params["embedding"], ce_e, dh)
    return loss, ce, grads, ((ce_e[1], ce_e[2]), (ce_p[1], ce_p[2]))


def reference_adamp_first_step(p, g, channel_axis, lr, wd, delta=0.1, wd_ratio=0.1, eps=1e-8):
    """One AdamP step from zero moments (package defaults b1 0.9, b2 0.999)."""
    b1, b2 = 0.9, 0.999
    m, v = (1 - b1) * g, (1 - b2) * g * g
    perturb = m / (np.sqrt(v) / np.sqrt(1 - b2) + eps)
    factor = 1.0
    if p.ndim > 1:
        channel_axis %= p.ndim
        for axes in (tuple(a for a in range(p.ndim) if a != channel_axis), tuple(range(p.ndim))):
            size = math.prod(p.shape[a] for a in axes)
            gn = np.maximum(np.sqrt((g * g).sum(axes, keepdims=True)), eps)
            pn = np.maximum(np.sqrt((p * p).sum(axes, keepdims=True)), eps)
            if np.abs((g / gn * p / pn).sum(axes)).max() < delta / np.sqrt(size):
                unit = p / (np.sqrt((p * p).sum(axes, keepdims=True)) + eps)
                perturb = perturb - unit * (unit * perturb).sum(axes, keepdims=True)
                factor = wd_ratio
                break
    return p * (1 - lr * wd * factor) - lr / (1 - b1) * perturb


# Biases whose gradient is mathematically zero: a BatchNorm follows them (the fc1 biases, and the
# embedding's fc2 bias, which only shifts the projection MLP's BatchNorm input).
ZERO_GRADIENT = {
    "['embedding']['fc1']['dense']['bias']",
    "['projection']['fc1']['dense']['bias']",
    "['embedding']['fc2']['dense']['bias']",
}

LOSS_MODES = {
    "focal": dict(gamma=2.0, batch_mean=False),
    "focal_on_batch_mean": dict(gamma=2.0, batch_mean=True),
    "ce": dict(gamma=0.0, batch_mean=False),
}


@pytest.mark.parametrize("mode", list(LOSS_MODES))
def test_loss_and_gradients_match_numpy_reference(mode):
    """Pure ``loss_fn``: 19 real rows + 5 pad rows (mask 0), 7 proxies padded to 8 (-inf logit)."""
    gamma, batch_mean = LOSS_MODES[mode]["gamma"], LOSS_MODES[mode]["batch_mean"]
    params, stats = PC.init_params(
        jax.random.PRNGKey(1), 16, hidden=32, out=16, num_proxies=7, num_padded=8
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 16)).astype(np.float32)
    labels = rng.integers(0, 7, 24).astype(np.int32)
    mask = (np.arange(24) < 19).astype(np.float32)
    kw = dict(temperature=0.5, gamma=gamma, alpha=1.0, focal_on_batch_mean=batch_mean)
    loss, grads, new_stats, metrics = PC.loss_and_grads(
        params, stats, x, labels, mask, None, num_valid=7, **kw
    )
    unpadded = {**params, "proxies": params["proxies"][:7]}
    ref_loss, ref_ce, ref_grads, moments = reference_loss_and_grads(
        unpadded,
        x[:19],
        labels[:19],
        temperature=0.5,
        gamma=gamma,
        alpha=1.0,
        batch_mean=batch_mean,
    )
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss"]), ref_loss, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["ce"]), ref_ce.mean(), rtol=1e-5)
    g = jax.tree.map(np.asarray, grads)
    np.testing.assert_array_equal(g["proxies"][7], 0.0)  # the pad proxy gets no gradient
    g["proxies"] = g["proxies"][:7]
    top = max(np.abs(x).max() for x in jax.tree.leaves(ref_grads))
    for path, a in jax.tree_util.tree_leaves_with_path(g):
        b = ref_grads
        for k in path:
            b = b[k.key]
        name = jax.tree_util.keystr(path)
        if name in ZERO_GRADIENT:
            assert np.abs(b).max() < 1e-12 * top and np.abs(a).max() < 1e-6 * top, name
            continue
        np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(b).max(), rtol=0, err_msg=name)
    for part, (mu, var) in zip(("embedding", "projection"), moments, strict=True):
        bn = new_stats[part]["bn"]  # torch: momentum 0.1, unbiased running variance
        np.testing.assert_allclose(bn["mean"], 0.1 * mu, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(bn["var"], 0.9 + 0.1 * var * 19 / 18, rtol=1e-5)


@pytest.mark.parametrize(  # CE: gamma 0 of the same step
    "mode", ["focal", pytest.param("focal_on_batch_mean", marks=pytest.mark.slow)]
)
def test_one_train_step_matches_numpy_reference(mode):
    """The trainer's full step: labels gathered by ``index``, noise ``N(0, 1)`` from
    ``fold_in(rng, step)``, both MLPs in train mode, the loss, AdamP over every parameter."""
    spec = LOSS_MODES[mode]
    over = {"proxycore.pslabel_ratio": 0.3, "proxycore.temperature": 0.5}
    over["proxycore.focal_on_batch_mean"] = spec["batch_mean"]
    t = tiny_trainer(**over)
    state, data = prepared(t, features(), train_images=[0, 1, 3])
    assert t.layout.proxies == 7 and t.layout.train == 24 and t.layout.rows == 32
    rows = np.array([3, 17, 0, 9, 30, 5, 11, 23, 2, 29, 14, 8])  # 17 / 23: held-out image 2
    positions = np.searchsorted(data.indices, rows[np.isin(rows, data.indices)])
    batch = pad_to(loop.make_batch(t, data, positions, 0), 12)  # 10 real rows, 2 pad rows
    new, metrics = jax.jit(t.train_step)(state, batch)

    real = batch["mask"] > 0
    noise = np.asarray(jax.random.normal(jax.random.fold_in(state.rng, 0), (12, 16)))
    x = (batch["features"] + noise)[real]
    labels = np.asarray(state.extras["labels"])[batch["index"][real]]
    ref_loss, _, ref_grads, _ = reference_loss_and_grads(
        state.params,
        x,
        labels,
        temperature=0.5,
        gamma=spec["gamma"],
        alpha=1.0,
        batch_mean=spec["batch_mean"],
    )
    np.testing.assert_allclose(float(metrics["loss"]), ref_loss, rtol=1e-5)
    assert int(new.step) == 1
    old = _np(state.params)
    for path, p_new in jax.tree_util.tree_leaves_with_path(new.params):
        p_old, g = old, ref_grads
        for k in path:
            p_old, g = p_old[k.key], g[k.key]
        name = jax.tree_util.keystr(path)
        axis = 0 if "proxies" in name else -1
        ref = reference_adamp_first_step(p_old, g, axis, lr=1e-3, wd=1e-2)
        upd, ref_upd = np.asarray(p_new, np.float64) - p_old, ref - p_old
        if name in ZERO_GRADIENT:
            assert np.abs(g).max() < 1e-12, name
            continue
        sig = np.abs(g) > 1e-3 * np.abs(g).max()
        assert sig.mean() > 0.5, name
        np.testing.assert_allclose(
            upd[sig], ref_upd[sig], rtol=1e-3, atol=1e-3 * 1e-3, err_msg=name
        )
        np.testing.assert_allclose(upd, ref_upd, atol=2e-3, rtol=0, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Pseudo-labels and the official defects
# ---------------------------------------------------------------------------------------------


def _cosine_labels(feats, proxies):
    """numpy reference: argmax_k cos(f, p_k) and the margin to the runner-up."""
    wn = proxies / np.linalg.norm(proxies, axis=1, keepdims=True)
    s = feats.astype(np.float64) @ wn.T.astype(np.float64)
    top2 = np.sort(s, axis=1)[:, -2:]
    return s.argmax(1), top2[:, 1] - top2[:, 0]


@pytest.mark.slow  # fast tier: the numpy-reference step and pmap tests stay
def test_labels_identical_on_one_and_eight_devices():
    """Coreset (jad.ops, sharded over 8 devices) and the blocked cosine argmax (fixed per-device
    blocks) give the same proxies and labels bit for bit; labels = numpy cosine argmax."""
    assert jax.device_count() == 8
    feats = features(n_img=9, p=64, d=16, seed=3)  # 576 rows: not a multiple of 8 x blocks
    over = {"proxycore.pslabel_ratio": 0.05}
    s1, d1 = prepared(tiny_trainer(mesh=False, **over), feats, train_images=np.arange(8))
    t8 = tiny_trainer(**over)
    assert t8.mesh is not None and t8.mesh.devices.size == 8
    s8, _ = prepared(t8, feats, train_images=np.arange(8))
    np.testing.assert_array_equal(
        np.asarray(s1.params["proxies"]), np.asarray(s8.params["proxies"])
    )
    np.testing.assert_array_equal(np.asarray(s1.extras["labels"]), np.asarray(s8.extras["labels"]))
    # blocks of 5 proxies (several blocks + a padded one) and 7 rows give the same labels
    flat = feats.reshape(-1, 16)
    proxies = np.asarray(s1.params["proxies"])
    blocked = PC.pseudo_labels(flat, proxies, block_rows=7, block_proxies=5)
    np.testing.assert_array_equal(blocked, np.asarray(s1.extras["labels"]))
    ref, margin = _cosine_labels(flat, proxies)
    safe = margin >= 1e-5
    assert safe.mean() > 0.95
    np.testing.assert_array_equal(blocked[safe], ref[safe])  # held-out rows are labelled too
    assert d1.num_examples == 8 * 64 and s1.extras["labels"].shape == (9 * 64,)


def test_variant_sets_the_defaults_of_the_three_toggles():
    o = tiny_trainer().opts
    assert (o.shuffle_labels_bug, o.proxy_init, o.focal_on_batch_mean) == (False, "coreset", False)
    o = tiny_trainer(**{"proxycore.variant": "faithful"}).opts
    assert (o.shuffle_labels_bug, o.proxy_init, o.focal_on_batch_mean) == (True, "uniform", True)
    o = tiny_trainer(**{"proxycore.variant": "faithful", "proxycore.proxy_init": "coreset"}).opts
    assert (o.shuffle_labels_bug, o.proxy_init, o.focal_on_batch_mean) == (True, "coreset", True)


@pytest.mark.slow  # fast tier: B3's test stays
def test_b1_shuffle_labels_bug_permutes_training_labels():
    feats = features(n_img=6, p=32, d=16, seed=1)
    train = np.array([0, 1, 2, 4, 5])  # image 3 held out
    over = {"proxycore.pslabel_ratio": 0.1}
    fixed, data = prepared(tiny_trainer(**over), feats, train)
    bug, _ = prepared(tiny_trainer(**over, **{"proxycore.shuffle_labels_bug": True}), feats, train)
    a, b = np.asarray(fixed.extras["labels"]), np.asarray(bug.extras["labels"])
    rows = data.indices
    np.testing.assert_array_equal(np.sort(a[rows]), np.sort(b[rows]))  # frequencies preserved
    assert (a[rows] != b[rows]).mean() > 0.5  # most training patches get another patch's label
    held = np.setdiff1d(np.arange(len(a)), rows)
    np.testing.assert_array_equal(a[held], b[held])  # held-out labels stay aligned
    # aligned labels: each coreset patch (proxy row = its normalised feature) is its own label
    w = np.asarray(fixed.params["proxies"])
    flat = feats.reshape(-1, 16)
    cos = (flat / np.linalg.norm(flat, axis=1, keepdims=True)) @ w.T
    own = cos.argmax(0)  # the patch each proxy came from
    np.testing.assert_allclose(cos[own, np.arange(len(w))], 1.0, rtol=1e-5)
    np.testing.assert_array_equal(a[own], np.arange(len(w)))
    assert (b[own] == np.arange(len(w))).mean() < 0.5


@pytest.mark.slow  # fast tier: the numpy-reference step and pmap tests stay
def test_b2_proxy_init_coreset_vs_uniform_overwrite():
    feats = features(n_img=4, p=32, d=16, seed=2)
    over = {"proxycore.pslabel_ratio": 0.1}
    fixed, _ = prepared(tiny_trainer(**over), feats)
    uni_t = tiny_trainer(**over, **{"proxycore.proxy_init": "uniform"})
    uni, _ = prepared(uni_t, feats)
    wf, wu = np.asarray(fixed.params["proxies"]), np.asarray(uni.params["proxies"])
    np.testing.assert_allclose(np.linalg.norm(wf, axis=1), 1.0, rtol=1e-6)  # normalised coreset
    flat = feats.reshape(-1, 16)
    unit = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    assert np.abs(unit @ wf.T).max(0).min() > 1 - 1e-6  # every row is a training patch
    bound = 1 / np.sqrt(16)  # official overwrite: U(-1/sqrt(D), 1/sqrt(D)) (1/32 at D = 1024)
    assert np.abs(wu).max() <= bound and np.abs(wu).max() > 0.9 * bound
    assert np.abs(unit @ wu.T / np.linalg.norm(wu, axis=1)).max() < 0.99  # unrelated to patches
    fresh = uni_t.init(jax.random.PRNGKey(0), {})
    np.testing.assert_array_equal(wu, np.asarray(fresh.params["proxies"]))  # as initialised
    # the labels come from the coreset either way (only W's start differs)
    np.testing.assert_array_equal(np.asarray(fixed.extras["labels"]), uni.extras["labels"])


def test_b3_focal_on_batch_mean_vs_per_sample():
    """The toggle reaches the loss: focal of the batch-mean CE (the logged runs) instead of the
    mean of per-sample focal losses; same model, batch and CE, a different loss."""
    params, stats = PC.init_params(jax.random.PRNGKey(2), 16, hidden=32, out=16, num_proxies=7)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 16)).astype(np.float32)
    labels = rng.integers(0, 7, 64).astype(np.int32)
    out = {}
    for flag in (False, True):
        t = tiny_trainer(**{"proxycore.focal_on_batch_mean": flag, "proxycore.temperature": 0.5})
        kw = t._loss_kw()
        _, (_, m) = PC.loss_fn(params, stats, x, labels, None, None, **kw)
        out[flag] = {k: float(v) for k, v in m.items()}
    per, mean = out[False], out[True]
    assert per["ce"] == pytest.approx(mean["ce"], rel=1e-6)
    focal = lambda c: (1 - np.exp(-c)) ** 2 * c  # noqa: E731
    assert mean["loss"] == pytest.approx(focal(mean["ce"]), rel=1e-5)  # B3: focal(mean CE)
    _, ce, _, _ = reference_loss_and_grads(
        params, x, labels, temperature=0.5, gamma=2.0, alpha=1.0, batch_mean=False
    )
    assert per["loss"] == pytest.approx(focal(ce).mean(), rel=1e-5)  # fixed: mean of focal(CE_i)
    assert abs(per["loss"] - mean["loss"]) > 1e-3 * mean["loss"]


# ---------------------------------------------------------------------------------------------
# Devices: sharded proxy axis, pmap
# ---------------------------------------------------------------------------------------------


def _run(trainer, state, batches, dp):
    s = dp.put_state(state)
    out = []
    for b in batches:
        s, m = dp(s, b)
        out.append({k: float(v) for k, v in m.items()})
    return jax.device_get(s), out


def _assert_close(a, b, steps, lr=1e-3, k=None):
    (sa, ma), (sb, mb) = a, b
    for x, y in zip(ma, mb, strict=True):
        for key in ("loss", "ce", "z_norm"):
            np.testing.assert_allclose(x[key], y[key], rtol=1e-5, err_msg=key)
    pa, pb = dict(sa.params), dict(sb.params)
    if k is not None:  # compare the real proxies; padding rows stay exactly zero
        np.testing.assert_array_equal(np.asarray(pa["proxies"])[k:], 0.0)
        pa["proxies"], pb["proxies"] = pa["proxies"][:k], pb["proxies"][:k]
    noise = 2 * lr * steps  # what Adam makes of a rounding-size gradient
    for (path, u), v in zip(
        jax.tree_util.tree_leaves_with_path(pa), jax.tree.leaves(pb), strict=True
    ):
        name = jax.tree_util.keystr(path)
        tol = dict(atol=noise, rtol=0) if name in ZERO_GRADIENT else dict(atol=1e-6, rtol=1e-4)
        np.testing.assert_allclose(u, v, err_msg=name, **tol)
    for (path, u), v in zip(
        jax.tree_util.tree_leaves_with_path(sa.batch_stats),
        jax.tree.leaves(sb.batch_stats),
        strict=True,
    ):  # running means see the zero-gradient biases' +-lr steps; variances do not
        name = jax.tree_util.keystr(path)
        tol = dict(atol=noise, rtol=0) if "mean" in name else dict(atol=1e-6, rtol=1e-4)
        np.testing.assert_allclose(u, v, err_msg=name, **tol)


def _batches(trainer, data, n=2, size=64):
    rng = np.random.default_rng(0)
    pos = [rng.permutation(data.num_examples)[:size] for _ in range(n - 1)]
    pos.append(np.arange(size - 9))  # uneven: 9 pad rows
    return [pad_to(loop.make_batch(trainer, data, p, i), size) for i, p in enumerate(pos)]


@pytest.fixture(scope="module")
def k16():
    """K = 16 proxies (a multiple of 8) over budget (sharded), B3's batch-mean loss: the state,
    two batches (the second uneven) and the reference run on one device."""
    t = tiny_trainer(
        mesh=False,
        **{
            "proxycore.pslabel_ratio": 0.0625,
            "proxycore.proxy_shard_gb": 0.0,
            "proxycore.focal_on_batch_mean": True,
        },
    )
    state, data = prepared(t, features(n_img=4, p=64, d=16, seed=5))
    assert t.layout.proxies == t.layout.padded == 16
    batches = _batches(t, data)
    one = DataParallel(t.train_step, mesh=data_mesh(jax.devices()[:1]), donate=False)
    return t, state, batches, _run(t, state, batches, one)


@pytest.mark.slow  # fast tier: the numpy-reference step and pmap tests stay
def test_sharded_proxies_step_equals_replicated(k16):
    """K x D x 3 floats over ``proxy_shard_gb``: the proxy matrix and its AdamP moments are split
    over 8 devices (``P("data", None)``), the rest replicated; the steps equal the replicated
    single-device run."""
    t, state, batches, ref = k16
    shapes = jax.eval_shape(t.init, jax.random.PRNGKey(0), {})
    specs = t.state_specs(shapes, 8)
    assert specs.params["proxies"] == P("data", None)
    assert specs.params["embedding"]["bn"]["scale"] == P() and specs.extras["labels"] == P()
    dp = DataParallel(t.train_step, mesh=data_mesh(), state_specs=specs, donate=False)
    s = dp.put_state(state)
    assert s.params["proxies"].sharding.spec == P("data", None)
    assert s.opt_state[0].mu["proxies"].sharding.spec == P("data", None)
    assert s.params["proxies"].addressable_shards[0].data.shape == (2, 16)
    _assert_close(_run(t, state, batches, dp), ref, len(batches))


@pytest.mark.slow
def test_sharded_proxies_padded_to_the_device_count():
    """K = 13 is padded to 16 rows (zero rows, -inf logits) to shard over 8 devices; the real
    rows, the MLPs and the losses equal an unpadded single-device run, pad rows stay zero."""
    ratio = 13 / 256 + 1e-6
    feats = features(n_img=4, p=64, d=16, seed=5)
    t = tiny_trainer(
        mesh=False, **{"proxycore.pslabel_ratio": ratio, "proxycore.proxy_shard_gb": 0.0}
    )
    state, data = prepared(t, feats)
    assert t.layout.proxies == 13 and t.layout.padded == 16
    specs = t.state_specs(jax.eval_shape(t.init, jax.random.PRNGKey(0), {}), 8)
    dp = DataParallel(t.train_step, mesh=data_mesh(), state_specs=specs, donate=False)
    sharded = _run(t, state, _batches(t, data), dp)
    u = tiny_trainer(mesh=False, **{"proxycore.pslabel_ratio": ratio})  # within budget
    ustate, udata = prepared(u, feats)
    assert u.layout.padded == 13
    one = DataParallel(u.train_step, mesh=data_mesh(jax.devices()[:1]), donate=False)
    _assert_close(sharded, _run(u, ustate, _batches(u, udata), one), 2, k=13)


def test_pmap_equals_jit(k16):
    """Every batch reduction (BatchNorm, the loss means, B3's focal of the batch-mean CE) is
    global under pmap, and the noise is the global batch's draw: pmap computes the jit step."""
    t, state, batches, ref = k16
    pm = _run(t, state, batches, DataParallel(t.train_step, mesh=data_mesh(), mode="pmap"))
    _assert_close(pm, ref, len(batches))


# ---------------------------------------------------------------------------------------------
# Through the library: learning, exact resume, config errors
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(small_synthetic, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("proxycore")
    config = small_config(small_synthetic, **{"data.categories": "disc"})
    return config, workdir, runner.train_and_evaluate(config, workdir, progress=False)


@pytest.mark.slow
def test_synthetic_run_learns(trained):
    """About 6 training images x 64 patches (the runner may hold some out for calibration),
    batches of 64 patches, 4 epochs, K = 10 % of the patches. The epoch-mean loss falls. AUROC
    (random backbone weights) is reported, not asserted."""
    config, workdir, results = trained
    d = results["details"]["disc"]
    patches = d["train_images"]  # the loop counts training examples: patches here
    assert patches % 64 == 0 and 4 * 64 <= patches <= 6 * 64
    spe = -(-patches // 64)
    assert d["steps"] == 4 * spe and d["protocol"].startswith("last step")
    hist = d["history"]
    assert [h["epoch"] for h in hist] == [0, 1, 2, 3]
    assert hist[-1]["loss"] < hist[0]["loss"], hist
    assert [e["step"] for e in d["evaluations"]] == [2 * spe, 4 * spe]  # train.eval_every = 2
    state, meta = checkpoint.restore(workdir / "disc" / "checkpoint")
    assert set(state) == {"params", "batch_stats", "bank"} and meta["method"] == "proxycore"
    assert state["bank"].shape == (int(patches * 0.1), config.proxycore.out)
    m = results["metrics"]["disc"]
    print(
        f"\nproxycore small synthetic 'disc': loss {hist[0]['loss']:.3f} -> {hist[-1]['loss']:.3f}; "
        + ", ".join(f"{k} {v:.3f}" for k, v in m.items() if v is not None)
    )


class _Interrupted(Exception):
    pass


@pytest.mark.determinism
@pytest.mark.slow
def test_interrupted_run_resumes_bit_identical(trained, monkeypatch):
    """A run interrupted (an exception inside the loop) right after its second checkpoint (end
    of epoch 2) and started again on the same workdir ends bit-identical to the uninterrupted
    run: parameters, bank and every test score."""
    config, full_dir, full = trained
    workdir = full_dir.parent / (full_dir.name + "_resumed")
    config = small_config(
        config.data.root, **{"data.categories": "disc", "train.tensorboard": False}
    )  # logging is not part of the trained model (same fit signature)
    assert runner.fit_signature(config) == runner.fit_signature(trained[0])
    saved: list[int] = []

    class Interrupting(loop.Checkpoints):
        def save(self, step, *args, **kwargs):
            super().save(step, *args, **kwargs)
            saved.append(step)
            if len(saved) == 2:
                self.wait()
                raise _Interrupted(step)

    original = loop.Checkpoints
    monkeypatch.setattr(loop, "Checkpoints", Interrupting)
    with pytest.raises(_Interrupted):
        runner.train_and_evaluate(config, workdir, progress=False)
    assert not (workdir / "disc" / "checkpoint").exists()
    monkeypatch.setattr(loop, "Checkpoints", original)
    again = runner.train_and_evaluate(config, workdir, progress=False)
    d = again["details"]["disc"]
    assert d["resumed_from_step"] == saved[1] and d["steps_this_run"] == d["steps"] - saved[1]
    a, _ = checkpoint.restore(full_dir / "disc" / "checkpoint")
    b, _ = checkpoint.restore(workdir / "disc" / "checkpoint")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert d["image_scores"] == full["details"]["disc"]["image_scores"]
    assert again["metrics"] == full["metrics"]


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("proxycore.variant", "official", "proxycore.variant='official' is unknown"),
        ("proxycore.loss", "mse", "proxycore.loss='mse' is unknown"),
        ("proxycore.proxy_init", "zeros", "proxycore.proxy_init='zeros' is unknown"),
        ("proxycore.temperature", 0.0, "proxycore.temperature=0.0 must be a positive number"),
        ("proxycore.temperature", -0.05, "proxycore.temperature=-0.05 must be a positive"),
        ("proxycore.pslabel_ratio", 0.0, r"proxycore.pslabel_ratio=0.0 must be in \(0, 1\]"),
        ("proxycore.pslabel_ratio", 1.5, r"proxycore.pslabel_ratio=1.5 must be in \(0, 1\]"),
        ("proxycore.bank_ratio", -0.1, r"proxycore.bank_ratio=-0.1 must be in \(0, 1\]"),
        ("proxycore.out", 512, "proxy_init='coreset' needs proxycore.out"),
        ("proxycore.precision", "fp8", "proxycore.precision='fp8' is unknown"),
    ],
)
def test_bad_config_values_are_one_line_errors(small_synthetic, tmp_path, key, value, match):
    config = small_config(small_synthetic, **{key: value, "data.categories": "weave"})
    with pytest.raises(UserError, match=match) as err:
        runner.train_and_evaluate(config, tmp_path / "w", progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_export_round_trip(trained, tmp_path):
    from export_testutil import check_export

    config, workdir, _ = trained
    category = str(config.data.categories).split(",")[0]
    check_export(workdir, category, tmp_path / "proxycore.jax", exact=False)


@pytest.mark.slow
def test_report_shows_the_training_history(trained):
    """The report (jad.report) holds results.json's numbers, the losses, the learning-rate
    schedule and the protocol."""
    from report_testutil import check_report

    _, workdir, results = trained
    page = check_report(workdir, results)
    assert "learning rates" in page
