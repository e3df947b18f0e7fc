"""jad.optim.adamp vs the PyTorch package adamp==0.3.0, plus direct checks of the projection."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jadtest import need

from jad.optim import adamp, scale_by_adamp

DELTA = 0.1
EPS = 1e-8

# torch layout <-> jad layout per parameter. Dense: torch [out, in], Flax [in, out].
# Conv: torch OIHW, Flax HWIO. Proxy [K, D]: same layout, one proxy per row (channel_axis=0).
TORCH_SHAPES = {"bias": (6,), "dense": (6, 5), "conv": (4, 3, 3, 3), "proxy": (7, 8)}
TO_JAD = {
    "bias": lambda x: x,
    "dense": lambda x: x.T,
    "conv": lambda x: x.transpose(2, 3, 1, 0),
    "proxy": lambda x: x,
}
TO_TORCH = {
    "bias": lambda x: x,
    "dense": lambda x: x.T,
    "conv": lambda x: x.transpose(3, 2, 0, 1),
    "proxy": lambda x: x,
}
CHANNEL_AXIS = {"bias": None, "dense": -1, "conv": -1, "proxy": 0}
# Gradient designs (see _grad) and the branch torch must take for each.
MODES = {
    "channel": "channel",
    "layer": "layer",
    "none": "none",
    "zero": "channel",  # cos(0, w) = 0 in torch: a zero gradient counts as scale-invariant
    "channel_weak": "channel",
    "layer_weak": "layer",
    "none_weak": "none",
}


def _branch(w: np.ndarray, g: np.ndarray) -> str:
    """Which branch torch's AdamP takes for weight / grad ``w``, ``g`` in torch layout."""
    if w.ndim <= 1:
        return "1d"
    for name, rows in (("channel", w.shape[0]), ("layer", 1)):
        wv = w.reshape(rows, -1).astype(np.float64)
        gv = g.reshape(rows, -1).astype(np.float64)
        wn = np.maximum(np.linalg.norm(wv, axis=1, keepdims=True), EPS)
        gn = np.maximum(np.linalg.norm(gv, axis=1, keepdims=True), EPS)
        cos = np.abs(((wv / wn) * (gv / gn)).sum(1))
        if cos.max() < DELTA / math.sqrt(wv.shape[1]):
            return name
    return "none"


def _grad(w: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    """A float32 gradient for torch-layout weight ``w`` designed to land in ``MODES[mode]``.

    Each view row of the gradient has a prescribed cosine ``c`` (random sign) with the weight:
    channel / layer: ``c = 0`` per channel / for the whole tensor (as for a weight followed by a
    normalisation); *_weak: ``c`` = 0.5x (invariant) or 3x (not invariant, yet below ``delta``)
    the threshold ``delta / sqrt(row size)``, so that the ``sqrt`` in the test matters;
    none: ``c = 0.7``. The per-channel cosines of the layer-view designs are random, ~1/sqrt(n).
    """
    scale = 10.0 ** rng.uniform(-2, 1)
    if mode == "zero":
        return np.zeros_like(w)
    if w.ndim <= 1:
        return (scale * rng.standard_normal(w.shape)).astype(np.float32)
    rows = w.shape[0] if mode.startswith("channel") else 1
    wv = w.astype(np.float64).reshape(rows, -1)
    threshold = DELTA / math.sqrt(wv.shape[1])
    c = {"channel_weak": 0.5, "layer_weak": 0.5, "none_weak": 3.0}.get(mode, 0.0) * threshold
    c = 0.7 if mode == "none" else c
    u = rng.standard_normal(wv.shape)
    u -= wv * (u * wv).sum(1, keepdims=True) / (wv * wv).sum(1, keepdims=True)
    w_hat = wv / np.linalg.norm(wv, axis=1, keepdims=True)
    u_hat = u / np.linalg.norm(u, axis=1, keepdims=True)
    sign = rng.choice([-1.0, 1.0], size=(rows, 1))
    g = sign * c * w_hat + math.sqrt(1 - c * c) * u_hat
    return (scale * g).reshape(w.shape).astype(np.float32)


@pytest.mark.parametrize(
    ("nesterov", "use_schedule"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_matches_torch_adamp_step_by_step(nesterov, use_schedule):
    torch = need("torch")
    torch_adamp = need("adamp")

    lr, weight_decay, wd_ratio, steps = 0.05, 0.3, 0.1, 10
    schedule = optax.linear_schedule(0.05, 0.005, transition_steps=steps - 1)
    rng = np.random.default_rng(0)
    init = {k: rng.standard_normal(s).astype(np.float32) for k, s in TORCH_SHAPES.items()}

    torch_params = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in init.items()}
    torch_opt = torch_adamp.AdamP(
        list(torch_params.values()),
        lr=lr,
        weight_decay=weight_decay,
        delta=DELTA,
        wd_ratio=wd_ratio,
        nesterov=nesterov,
    )
    opt = adamp(
        schedule if use_schedule else lr,
        weight_decay=weight_decay,
        delta=DELTA,
        wd_ratio=wd_ratio,
        nesterov=nesterov,
        channel_axis=CHANNEL_AXIS,
    )
    params = {k: jnp.asarray(TO_JAD[k](v)) for k, v in init.items()}
    state = opt.init(params)
    update = jax.jit(opt.update)

    seen = set()
    max_diff = dict.fromkeys(TORCH_SHAPES, 0.0)
    for step in range(steps):
        grads = {}
        for i, (k, p) in enumerate(torch_params.items()):
            w = p.detach().numpy()
            mode = list(MODES)[(step + i) % len(MODES)]
            g = _grad(w, mode, rng)
            # The designed gradient must land in the intended branch.
            expected = "1d" if w.ndim == 1 else MODES[mode]
            assert _branch(w, g) == expected, (k, step, mode)
            seen.add(expected)
            p.grad = torch.from_numpy(g)
            grads[k] = jnp.asarray(TO_JAD[k](g))
        if use_schedule:
            # A torch LR scheduler sets group["lr"] before step k; optax evaluates schedule(k).
            torch_opt.param_groups[0]["lr"] = float(schedule(step))
        torch_opt.step()

        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)

        for k, p in torch_params.items():
            ours = TO_TORCH[k](np.asarray(params[k]))
            ref = p.detach().numpy()
            max_diff[k] = max(max_diff[k], float(np.abs(ours - ref).max()))
            # Both sides run in float32 and differ only by rounding order (fused decay+step vs
            # two in-place ops, lr * (perturb / bc1) vs (lr / bc1) * perturb, reduction orders):
            # a few float32 ulps of |p| ~ 1 per step, so ~1e-6 after 10 steps at worst. A wrong
            # branch or wd factor moves p by >= lr * wd * (1 - wd_ratio) * |p| ~ 1e-2.
            np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6, err_msg=f"{k} step {step}")
    assert {"1d", "channel", "layer", "none"} <= seen
    print(f"nesterov={nesterov} schedule={use_schedule} max |jad - torch|: {max_diff}")


def _column_orthogonal(w: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``r`` minus its component along ``w``, per column (output channel of a [in, out] kernel)."""
    return (r - w * (r * w).sum(0) / (w * w).sum(0)).astype(np.float32)


def test_projection_under_jit():
    rng = np.random.default_rng(1)
    lr, wd, wd_ratio = 0.1, 0.5, 0.1
    w = rng.standard_normal((5, 6)).astype(np.float32)  # Dense kernel [in, out]
    b = rng.standard_normal(6).astype(np.float32)
    v = rng.standard_normal((5, 6)).astype(np.float32)
    params = {"inv": jnp.asarray(w), "plain": jnp.asarray(v), "bias": jnp.asarray(b)}
    g_inv = _column_orthogonal(w, rng.standard_normal(w.shape))
    g_plain = (v + 0.1 * rng.standard_normal(v.shape)).astype(np.float32)
    g_bias = rng.standard_normal(b.shape).astype(np.float32)
    grads = {"inv": jnp.asarray(g_inv), "plain": jnp.asarray(g_plain), "bias": jnp.asarray(g_bias)}

    opt = adamp(lr, weight_decay=wd, wd_ratio=wd_ratio)
    updates, state = jax.jit(opt.update)(grads, jax.jit(opt.init)(params), params)
    u = {k: np.asarray(x) for k, x in updates.items()}
    assert int(state[0].count) == 1

    # Step 1: m / bc1 = g and sqrt(v / bc2) = |g|, so the Adam direction is g / (|g| + eps).
    s_inv = g_inv / (np.abs(g_inv) + EPS)
    p_n = w / (np.linalg.norm(w, axis=0) + EPS)
    projected = s_inv - p_n * (p_n * s_inv).sum(0)
    np.testing.assert_allclose(
        u["inv"], -lr * projected - lr * wd * wd_ratio * w, rtol=1e-5, atol=1e-6
    )
    # Only the decay is radial: <u_c, w_c> / |w_c|^2 = -lr * wd * wd_ratio for every channel.
    radial = (u["inv"] * w).sum(0) / (w * w).sum(0)
    np.testing.assert_allclose(radial, -lr * wd * wd_ratio, rtol=1e-4, atol=1e-6)
    # Not scale-invariant / 1-D: plain Adam step and full weight decay.
    for k, p, g in (("plain", v, g_plain), ("bias", b, g_bias)):
        expected = -lr * g / (np.abs(g) + EPS) - lr * wd * p
        np.testing.assert_allclose(u[k], expected, rtol=1e-5, atol=1e-6, err_msg=k)

    # With the projection disabled (delta=0: |cos| < 0 never holds) the same weight gets a
    # radial Adam component and the full decay: the checks above would fail.
    off = adamp(lr, weight_decay=wd, wd_ratio=wd_ratio, delta=0.0)
    u_off = np.asarray(jax.jit(off.update)(grads, off.init(params), params)[0]["inv"])
    np.testing.assert_allclose(u_off, -lr * s_inv - lr * wd * w, rtol=1e-5, atol=1e-6)
    assert np.abs((u_off * w).sum(0) / (w * w).sum(0) + lr * wd * wd_ratio).max() > 1e-2


def test_layer_view_projection():
    """Orthogonal to the whole tensor but not per channel: the layer view projects."""
    rng = np.random.default_rng(2)
    lr, wd, wd_ratio = 0.1, 0.5, 0.1
    w = rng.standard_normal((3, 3, 4, 8)).astype(np.float32)  # HWIO
    r = rng.standard_normal(w.shape)
    g = (r - w * (r * w).sum() / (w * w).sum()).astype(np.float32)
    opt = adamp(lr, weight_decay=wd, wd_ratio=wd_ratio)
    u = np.asarray(jax.jit(opt.update)(g, opt.init(w), jnp.asarray(w))[0])

    s = g / (np.abs(g) + EPS)
    p_n = w / (np.linalg.norm(w) + EPS)
    expected = -lr * (s - p_n * (p_n * s).sum()) - lr * wd * wd_ratio * w
    np.testing.assert_allclose(u, expected, rtol=1e-5, atol=1e-6)
    per_channel = (u * w).sum((0, 1, 2)) / (w * w).sum((0, 1, 2))
    assert np.abs(per_channel + lr * wd * wd_ratio).max() > 1e-2  # not projected per channel


def test_channel_axis_forms_agree_and_none_disables_projection():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, 6)).astype(np.float32)
    p = rng.standard_normal((4, 5)).astype(np.float32)  # [K, D] proxies, one per row
    params = {"kernel": jnp.asarray(w), "proxy": jnp.asarray(p)}
    grads = {
        "kernel": jnp.asarray(_column_orthogonal(w, rng.standard_normal(w.shape))),
        "proxy": jnp.asarray(_column_orthogonal(p.T, rng.standard_normal(p.T.shape)).T),
    }

    def run(channel_axis):
        opt = scale_by_adamp(weight_decay=0.5, channel_axis=channel_axis)
        return jax.jit(opt.update)(grads, opt.init(params), params)[0]

    by_tree = run({"kernel": -1, "proxy": 0})
    by_fn = run(lambda path, leaf: 0 if jax.tree_util.keystr(path) == "['proxy']" else 1)
    for k in params:
        np.testing.assert_array_equal(np.asarray(by_tree[k]), np.asarray(by_fn[k]))
        # Projected per channel: the Adam part is orthogonal, the decay is 0.5 * 0.1 * p.
        axis = 0 if k == "kernel" else 1
        x = np.asarray(params[k])
        radial = (np.asarray(by_tree[k]) * x).sum(axis) / (x * x).sum(axis)
        np.testing.assert_allclose(radial, 0.05, rtol=1e-4, atol=1e-6)

    none = run({"kernel": None, "proxy": None})
    g = np.asarray(grads["kernel"])
    np.testing.assert_allclose(
        np.asarray(none["kernel"]), g / (np.abs(g) + EPS) + 0.5 * w, rtol=1e-5, atol=1e-6
    )

    with pytest.raises(ValueError, match="params"):
        scale_by_adamp().update(grads, scale_by_adamp().init(params), None)
    with pytest.raises(ValueError, match="out of range"):
        run(2)
