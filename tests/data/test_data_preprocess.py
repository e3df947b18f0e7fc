"""Preprocessing: bit-exact official transform, odd image modes, the three mask modes."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from jad_data_testutil import rgb, save
from jadtest import need
from PIL import Image

from jad import data
from jad.data import DatasetError, Preprocess
from jad.data.preprocess import legacy_nearest_indices, preprocess_mask, resized_size

SIZES = [(256, 224), (288, 288), (329, 288)]


# ---------------------------------------------------------------------------------------------
# Images.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("resize,crop", SIZES)
def test_bit_exact_vs_golden_make_inputs(golden_dir, make_inputs, resize, crop):
    pre = Preprocess(resize, crop)
    for i in range(4):
        path = golden_dir / f"image_{i}.png"
        want = make_inputs.preprocess(
            np.asarray(Image.open(path).convert("RGB")), resize, crop
        ).transpose(1, 2, 0)
        got = data.preprocess_image(path, pre)
        assert got.dtype == np.float32 and got.shape == (crop, crop, 3)
        np.testing.assert_array_equal(got, want)  # tolerance: exact (0.0)


def test_bit_exact_vs_official_torchvision_output(golden_dir):
    # x224 / x288 are the official datasets' tensors (torchvision), stored by the golden run.
    for key, pre in (("patchcore", Preprocess(256, 224)), ("pbas", Preprocess(288, 288))):
        ref = np.load(golden_dir / f"{key}.npz")["x" + str(pre.crop)]
        got = np.stack(
            [data.preprocess_image(golden_dir / f"image_{i}.png", pre) for i in range(4)]
        )
        np.testing.assert_array_equal(got.transpose(0, 3, 1, 2), ref)  # exact


def test_sources_path_bytes_pil_array_agree(tmp_path):
    a = rgb(3, 40, 30)  # portrait: the height is the longer side
    p = save(tmp_path / "x.png", a)
    pre = Preprocess(20, 16)
    ref = data.preprocess_image(p, pre)
    assert ref.shape == (16, 16, 3)
    for src in (str(p), p.read_bytes(), Image.open(p), a):
        np.testing.assert_array_equal(data.preprocess_image(src, pre), ref)


def test_resized_size_formula():
    assert resized_size(384, 320, 256) == (307, 256)  # int(256 * 384 / 320) = 307
    assert resized_size(1000, 1500, 288) == (288, 432)
    assert resized_size(1024, 1024, 329) == (329, 329)


def _via_rgb8(grey8: np.ndarray, pre: Preprocess) -> np.ndarray:
    return data.preprocess_image(np.repeat(grey8[..., None], 3, axis=2), pre)


def test_grey_palette_rgba_modes_are_converted():
    pre = Preprocess(16, 12)
    g = rgb(1, 20, 24)[..., 0]
    np.testing.assert_array_equal(
        data.preprocess_image(Image.fromarray(g, "L"), pre), _via_rgb8(g, pre)
    )
    c = rgb(2, 20, 24)
    rgba = Image.fromarray(np.dstack([c, np.full(g.shape, 7, np.uint8)]), "RGBA")
    np.testing.assert_array_equal(data.preprocess_image(rgba, pre), data.preprocess_image(c, pre))
    pal = Image.fromarray(c).quantize(16)
    want = data.preprocess_image(np.asarray(pal.convert("RGB")), pre)
    np.testing.assert_array_equal(data.preprocess_image(pal, pre), want)
    for mode in ("1", "LA", "CMYK", "YCbCr", "P"):
        out = data.preprocess_image(Image.fromarray(c).convert(mode), pre)
        assert out.shape == (12, 12, 3) and np.isfinite(out).all()


def test_16bit_and_int32_scaled_to_8bit(tmp_path):
    pre = Preprocess(16, 12)
    g8 = rgb(4, 20, 24)[..., 0]
    g16 = g8.astype(np.uint16) * 257  # exact 8 -> 16 bit expansion
    want = _via_rgb8(g8, pre)
    p = tmp_path / "g16.png"
    Image.fromarray(g16).save(p)  # a 16-bit grey PNG
    assert Image.open(p).mode.startswith("I")
    np.testing.assert_array_equal(data.preprocess_image(p, pre), want)
    np.testing.assert_array_equal(
        data.preprocess_image(Image.fromarray(g16.astype(np.int32), "I"), pre), want
    )
    f = Image.fromarray(g8.astype(np.float32), "F")
    np.testing.assert_array_equal(data.preprocess_image(f, pre), want)


def test_corrupt_and_missing_image_files_are_named(tmp_path):
    bad = tmp_path / "broken.png"
    good = save(tmp_path / "ok.png", rgb(0)).read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # truncated PNG
    with pytest.raises(DatasetError, match=r"cannot decode image file .*broken.png"):
        data.preprocess_image(bad, Preprocess(16, 16))
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(DatasetError, match=r"cannot decode image file .*text.png"):
        data.preprocess_image(tmp_path / "text.png", Preprocess(16, 16))
    with pytest.raises(DatasetError, match=r"image file .*nope.png does not exist"):
        data.preprocess_image(tmp_path / "nope.png", Preprocess(16, 16))


# ---------------------------------------------------------------------------------------------
# Masks.
# ---------------------------------------------------------------------------------------------
def _defect_16() -> np.ndarray:
    m = np.zeros((16, 16), np.uint8)
    m[4:8, 4:8] = 255
    return m


def test_mask_modes_on_a_4px_defect_at_16_to_4():
    m = Image.fromarray(_defect_16(), "L")
    nearest = preprocess_mask(m, Preprocess(4, 4, "nearest"))
    eq1 = preprocess_mask(m, Preprocess(4, 4, "bilinear_eq1"))
    gt0 = preprocess_mask(m, Preprocess(4, 4, "bilinear_gt0"))
    want = np.zeros((4, 4), np.float32)
    want[1, 1] = 1.0  # legacy nearest samples source rows/cols 0, 4, 8, 12
    np.testing.assert_array_equal(nearest, want)
    assert eq1.sum() == 0  # bilinear + "== 1" erases the defect
    assert gt0[1, 1] == 1 and gt0.sum() > 1  # bilinear + "> 0" dilates it
    for out in (nearest, eq1, gt0):
        assert out.dtype == np.float32 and set(np.unique(out)) <= {0.0, 1.0}


def test_bilinear_eq1_matches_the_official_path_on_0_255_masks():
    rng = np.random.default_rng(0)
    m = np.zeros((60, 80), np.uint8)
    m[10:40, 20:70] = 255
    m[rng.random(m.shape) < 0.02] = 255
    pre = Preprocess(32, 28, "bilinear_eq1")
    nw, nh = resized_size(80, 60, 32)
    a = np.asarray(Image.fromarray(m, "L").resize((nw, nh), Image.BILINEAR))
    top, left = int(round((nh - 28) / 2)), int(round((nw - 28) / 2))
    official = a[top : top + 28, left : left + 28].astype(np.float32) / 255.0 == 1.0
    np.testing.assert_array_equal(preprocess_mask(m, pre), official.astype(np.float32))


@pytest.mark.parametrize(
    "h,w,resize,crop",
    [(60, 80, 32, 28), (1024, 1024, 256, 224), (37, 91, 13, 11), (30, 20, 50, 40)],
)
def test_nearest_matches_torch_legacy_interpolate(h, w, resize, crop):
    torch = need("torch")
    m = (np.random.default_rng(h * w).random((h, w)) < 0.3).astype(np.uint8)
    nw, nh = resized_size(w, h, resize)
    t = torch.from_numpy(m.astype(np.float32))[None, None]
    r = torch.nn.functional.interpolate(t, size=(nh, nw), mode="nearest")[0, 0].numpy()
    top, left = int(round((nh - crop) / 2)), int(round((nw - crop) / 2))
    want = r[top : top + crop, left : left + crop]
    np.testing.assert_array_equal(preprocess_mask(m * 255, Preprocess(resize, crop)), want)


def test_legacy_nearest_is_not_half_pixel():
    # 1024 -> 256 picks source 4i (torch legacy), not 4i + 2 (PIL / jax "nearest").
    np.testing.assert_array_equal(legacy_nearest_indices(1024, 256), 4 * np.arange(256))


def test_mask_encodings_all_binarise_to_the_same(tmp_path):
    base = _defect_16() != 0
    variants = {
        "0_255": Image.fromarray(base.astype(np.uint8) * 255, "L"),
        "0_1": Image.fromarray(base.astype(np.uint8), "L"),
        "class_id": Image.fromarray(base.astype(np.uint8) * 7, "L"),
        "rgb": Image.fromarray(
            np.dstack([np.zeros_like(base, np.uint8)] * 2 + [base.astype(np.uint8)])
        ),
        "bool": Image.fromarray(base),
        "16bit": Image.fromarray(base.astype(np.uint16) * 3),
    }
    pal = Image.fromarray(base.astype(np.uint8) * 2, "P")
    pal.putpalette([0, 0, 0, 9, 9, 9, 200, 10, 10] + [0] * 759)
    variants["palette"] = pal
    want = preprocess_mask(variants["0_255"], Preprocess(8, 8))
    assert want.sum() == 4
    for name, img in variants.items():
        p = tmp_path / f"{name}.png"
        img.save(p)
        assert data.mask_array(Image.open(p)).tolist() == base.tolist(), name
        np.testing.assert_array_equal(preprocess_mask(p, Preprocess(8, 8)), want, err_msg=name)


def test_no_mask_gives_zeros_and_wrong_size_is_an_error(tmp_path):
    z = preprocess_mask(None, Preprocess(16, 12))
    assert z.shape == (12, 12) and z.dtype == np.float32 and not z.any()
    p = save(tmp_path / "m_mask.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError, match=r"mask .*m_mask.png is 10x10 but its image is 32x24"):
        preprocess_mask(p, Preprocess(8, 8), image_size=(32, 24))


def test_preprocess_example_decodes_once_and_aligns(tmp_path):
    img = save(tmp_path / "a.png", rgb(9, 48, 64))
    mask = np.zeros((48, 64), np.uint8)
    mask[20:30, 30:40] = 255
    mp = save(tmp_path / "a_mask.png", mask)
    x, m = data.preprocess_example(img, mp, Preprocess(32, 28))
    assert x.shape == (28, 28, 3) and m.shape == (28, 28)
    np.testing.assert_array_equal(x, data.preprocess_image(img, Preprocess(32, 28)))
    assert 0 < m.sum() < m.size
    buf = io.BytesIO()
    Image.fromarray(mask[:, :10]).save(buf, "PNG")
    with pytest.raises(DatasetError, match="masks must have the image's size"):
        data.preprocess_example(img, buf.getvalue(), Preprocess(32, 28), mask_name="m.png")


# ---------------------------------------------------------------------------------------------
# Settings and presets.
# ---------------------------------------------------------------------------------------------
def test_preprocess_validation():
    with pytest.raises(DatasetError, match="crop=300 is larger than resize=256"):
        Preprocess(256, 300)
    with pytest.raises(DatasetError, match="mask_mode='bilinear'.*nearest, bilinear_eq1"):
        Preprocess(256, 224, "bilinear")
    with pytest.raises(DatasetError, match="resize=0"):
        Preprocess(0, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Preprocess().crop = 3  # type: ignore[misc]


def test_presets():
    assert data.preprocess_for("patchcore", "mvtec", "bottle") == Preprocess(256, 224, "nearest")
    assert data.preprocess_for("apc", "visa", "pcb1") == Preprocess(256, 224, "nearest")
    assert data.preprocess_for("proxycore", "mvtec", "bottle") == Preprocess(
        256, 224, "bilinear_gt0"
    )
    assert data.preprocess_for("pbas", "mvtec", "bottle") == Preprocess(288, 288)
    assert data.preprocess_for("pbas", "mvtec", "wood") == Preprocess(329, 288)
    assert data.preprocess_for("pbas", "mpdd", "toothbrush") == Preprocess(329, 288)
    assert data.preprocess_for("pbas", "visa", "wood") == Preprocess(288, 288)
    with pytest.raises(DatasetError, match="unknown method 'padim'"):
        data.preprocess_for("padim", "mvtec", "bottle")
