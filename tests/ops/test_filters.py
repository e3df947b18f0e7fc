"""Gaussian blur vs scipy, bilinear resize vs a numpy transcription of torch's formula and torch."""

import numpy as np
import pytest
import scipy.ndimage as ndi
from jadtest import need

from jad.ops import gaussian_blur, gaussian_kernel1d, resize_bilinear, upsample_and_blur


def _torch_bilinear_np(x, out_h, out_w):
    """Loop transcription of torch's upsample_bilinear2d (align_corners=False), float32 index math."""

    def axis(out_size, in_size):
        scale = np.float32(in_size) / np.float32(out_size)
        res = []
        for i in range(out_size):
            src = max(scale * (np.float32(i) + np.float32(0.5)) - np.float32(0.5), np.float32(0))
            i0 = min(int(np.floor(src)), in_size - 1)
            i1 = i0 + 1 if i0 < in_size - 1 else i0
            l1 = np.float32(min(max(src - i0, 0.0), 1.0))
            res.append((i0, i1, np.float32(1) - l1, l1))
        return res

    n, h, w = x.shape
    out = np.zeros((n, out_h, out_w), np.float64)
    for oy, (y0, y1, wy0, wy1) in enumerate(axis(out_h, h)):
        for ox, (x0, x1, wx0, wx1) in enumerate(axis(out_w, w)):
            out[:, oy, ox] = wy0 * (wx0 * x[:, y0, x0] + wx1 * x[:, y0, x1]) + wy1 * (
                wx0 * x[:, y1, x0] + wx1 * x[:, y1, x1]
            )
    return out


@pytest.mark.parametrize(
    "shape,sigma,truncate",
    [
        ((3, 28, 28), 4.0, 4.0),
        ((2, 40, 31), 1.5, 4.0),
        ((1, 9, 7), 4.0, 4.0),
        ((2, 5, 6), 2.0, 3.0),
    ],
)
def test_gaussian_blur_matches_scipy(shape, sigma, truncate):
    # (1, 9, 7) and (2, 5, 6): radius (16, 6) larger than the map -> repeated reflection
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ref = np.stack([ndi.gaussian_filter(m, sigma, truncate=truncate) for m in x])
    out = np.asarray(gaussian_blur(x, sigma, truncate))
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_gaussian_kernel_radius():
    assert len(gaussian_kernel1d(4.0)) == 33  # int(4 * 4 + 0.5) = 16
    np.testing.assert_allclose(gaussian_kernel1d(4.0).sum(), 1.0)


@pytest.mark.parametrize(
    "hw,out",
    [((28, 28), (224, 224)), ((14, 14), (28, 28)), ((7, 9), (13, 4)), ((224, 200), (28, 28))],
)
def test_resize_bilinear_matches_torch_formula(hw, out):
    x = np.random.default_rng(1).standard_normal((2, *hw)).astype(np.float32)
    ref = _torch_bilinear_np(x, *out)
    np.testing.assert_allclose(np.asarray(resize_bilinear(x, out)), ref, atol=1e-5)
    # channels-last variant gives the same per channel
    xc = np.stack([x, 2 * x], -1)
    outc = np.asarray(resize_bilinear(xc, out))
    np.testing.assert_allclose(outc[..., 1], 2 * ref, atol=2e-5)


def test_resize_bilinear_matches_torch():
    torch = need("torch")
    x = np.random.default_rng(2).standard_normal((2, 3, 14, 11)).astype(np.float32)
    for size in [(28, 22), (224, 224), (5, 4), (14, 11)]:
        ref = torch.nn.functional.interpolate(
            torch.from_numpy(x), size=size, mode="bilinear", align_corners=False
        ).numpy()
        out = np.moveaxis(np.asarray(resize_bilinear(np.moveaxis(x, 1, -1), size)), -1, 1)
        # float32 rounding of a different association order; inputs |x| < 5
        np.testing.assert_allclose(out, ref, atol=5e-6)


def test_anomaly_maps_golden(golden_dir):
    g = np.load(golden_dir / "patchcore.npz")
    maps = upsample_and_blur(g["patch_scores"].reshape(4, 28, 28), (224, 224), sigma=4.0)
    np.testing.assert_allclose(np.asarray(maps), g["anomaly_maps"], atol=5e-4)  # README tol


def test_filter_errors():
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(np.zeros((1, 4, 4)), sigma=0.0)
    with pytest.raises(ValueError, match="maps must be"):
        gaussian_blur(np.zeros((4,)))
    with pytest.raises(ValueError, match="size"):
        resize_bilinear(np.zeros((1, 4, 4)), (0, 3))
