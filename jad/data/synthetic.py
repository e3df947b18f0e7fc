"""Synthetic MVTec-layout anomaly dataset (numpy + Pillow only, deterministic from a seed).

Run ``python -m jad.data.synthetic --out DIR [--seed 0] [--categories weave,disc] [--mode hard]
[--small]``.

Two categories, ``weave`` (texture) and ``disc`` (object), each with three defect types, in two
modes:

``easy`` (default; 256x256 RGB PNG, 24 train, 10 good + 3 x 4 defective test images):

- ``weave``: a beige basket weave with per-image phase shift and colourful value noise.
  Defects: ``scratch`` (bright 8-px line), ``stain`` (saturated magenta/green ellipse),
  ``hole`` (near-black irregular blob).
- ``disc``: a blue disc with a ring and a notch on a grey noisy background, jittered by a few
  pixels. Defects: ``scratch``, ``stain`` and ``missing`` (a bite out of the disc edge that shows
  the background).

  Defects cover about 1.5 % (scratch) to 8 % (stain, hole, missing) of the image. Even PatchCore
  with a randomly initialised backbone finds all of them (image AUROC 100 %): a smoke test.

``hard`` (256x256, 32 train, 16 good + 3 x 8 defective test images):

- normal images vary more: slight illumination and colour jitter (gain 96-104 %, per-channel
  offset, a brightness ramp), mostly-brightness grain instead of colourful noise, jittered yarn
  colour and thread contrast (``weave``); the disc is shifted by up to s/32, its radius varies and
  it is tilted by up to 15 degrees (the notch moves) (``disc``).
- defects are small (about 0.2-1.5 % of the image; scratches are 3 px thin) and drawn relative to
  the local texture: ``scratch`` 45-75 levels lighter or darker than what it crosses, ``stain`` a
  35-60-level colour tint fading out towards its rim, ``hole`` the texture darkened to 1/2-5/8,
  ``missing`` a shallow bite out of the disc's rim that shows the real background.

  PatchCore with a random backbone reaches only about 75-85 % mean image AUROC (pixel AUROC ~90 %)
  at 256 -> 224, so the set leaves room to show what a trained backbone or method adds.

Defects stay inside the central region so that a 256 -> 224 centre crop keeps them. Masks are
8-bit 0/255 PNGs at ``ground_truth/<defect>/<stem>_mask.png``, exactly the changed pixels in hard
mode. All drawing is integer arithmetic on numpy's PCG64 streams, so for a seed and mode the PNG
bytes are identical on every run (same Pillow/zlib build). Hard mode draws from other streams and
code paths than easy mode; easy mode is unchanged since before hard mode existed.

A finished tree carries ``.jad_synthetic.json`` (the parameters and every file's size; hard trees
add ``"mode": "hard"``, easy ones have no mode key); :func:`ensure` regenerates when it is missing,
different or incomplete. Writing goes to a temporary sibling folder that is renamed into place, so
a tree is never seen half-written. :func:`default_root` names the cache folder of a seed and mode.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from jad.data.errors import DatasetError
from jad.utils.atomic import atomic_dir

CATEGORIES = ("weave", "disc")
DEFECTS = {"weave": ("hole", "scratch", "stain"), "disc": ("missing", "scratch", "stain")}
MARKER = ".jad_synthetic.json"
FORMAT_VERSION = 1

# Defaults and the "small" variant used by tests.
DEFAULTS = dict(image_size=256, n_train=24, n_test_good=10, n_per_defect=4)
HARD_DEFAULTS = dict(image_size=256, n_train=32, n_test_good=16, n_per_defect=8)
SMALL = dict(image_size=64, n_train=4, n_test_good=2, n_per_defect=1)  # both modes
MODES = ("easy", "hard")


# --------------------------------------------------------------------------------------------
# Drawing primitives (integer math only).
# --------------------------------------------------------------------------------------------
def _grid(s: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(s, dtype=np.int64)[:, None], np.arange(s, dtype=np.int64)[None, :]


def _value_noise(rng: np.random.Generator, s: int, cell: int) -> np.ndarray:
    """int64 ``[3, s, s]`` in [0, 255]: bilinear interpolation of a random lattice, integers only."""
    g = s // cell + 2
    lat = rng.integers(0, 256, size=(3, g, g), dtype=np.int64)
    i = np.arange(s, dtype=np.int64)
    i0, f = i // cell, i % cell
    fy, fx = f[:, None], f[None, :]
    a = lat[:, i0[:, None], i0[None, :]]
    b = lat[:, i0[:, None], i0[None, :] + 1]
    c = lat[:, i0[:, None] + 1, i0[None, :]]
    d = lat[:, i0[:, None] + 1, i0[None, :] + 1]
    num = (cell - fx) * (cell - fy) * a + fx * (cell - fy) * b + (cell - fx) * fy * c + fx * fy * d
    return num // (cell * cell)


def _disc(s: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = _grid(s)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _segment(s: int, y0: int, x0: int, y1: int, x1: int, half_width: int) -> np.ndarray:
    """Pixels within ``half_width`` of the segment (y0,x0)-(y1,x1) (rectangle, no round caps)."""
    yy, xx = _grid(s)
    dy, dx = y1 - y0, x1 - x0
    n2 = dy * dy + dx * dx
    cross = (xx - x0) * dy - (yy - y0) * dx
    dot = (xx - x0) * dx + (yy - y0) * dy
    return (cross * cross <= half_width * half_width * n2) & (dot >= 0) & (dot <= n2)


def _paint(img: np.ndarray, where: np.ndarray, rgb: Sequence[int], keep: int = 0) -> np.ndarray:
    """Sets ``where`` to ``(rgb * (8 - keep) + img * keep) // 8`` (keep = texture kept, of 8)."""
    col = np.asarray(rgb, dtype=np.int64)[:, None, None]
    return np.where(where[None], (col * (8 - keep) + img * keep) // 8, img)


# --------------------------------------------------------------------------------------------
# Categories.
# --------------------------------------------------------------------------------------------
def _weave(rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray]:
    """A normal weave image: int64 ``[3, s, s]`` and the object mask (all True for textures)."""
    p = max(4, s // 16)  # thread width
    yy, xx = _grid(s)
    oy, ox = (int(v) for v in rng.integers(0, 2 * p, size=2))
    y, x = yy + oy, xx + ox
    horizontal = ((y // p) + (x // p)) % 2 == 0
    half = p // 2
    across = np.where(horizontal, y % p, x % p)  # position across the thread
    profile = half - np.abs(across - half)  # 0 at the thread edge, p/2 in its middle
    shade = 90 + (profile * 120) // max(1, half)  # [90, 210]
    noise = _value_noise(rng, s, max(2, s // 32))
    base = np.array([200, 170, 120], dtype=np.int64)[:, None, None]
    img = (base * shade[None]) // 210
    img = (img * 6 + noise * 2) // 8
    return np.clip(img, 0, 255), np.ones((s, s), bool)


def _disc_object(rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray]:
    """A normal disc image: int64 ``[3, s, s]`` and the disc's mask."""
    jitter = max(1, s // 64)
    cy = s // 2 + int(rng.integers(-jitter, jitter + 1))
    cx = s // 2 + int(rng.integers(-jitter, jitter + 1))
    r = (s * 3) // 10
    noise = _value_noise(rng, s, max(2, s // 16))
    fine = _value_noise(rng, s, max(2, s // 64))
    img = (np.full((3, s, s), 70, np.int64) * 5 + noise * 2 + fine) // 8  # grey background
    disc = _disc(s, cy, cx, r)
    body = (np.array([40, 90, 170], dtype=np.int64)[:, None, None] * 6 + fine * 2) // 8
    img = np.where(disc[None], body, img)
    ring = disc & ~_disc(s, cy, cx, r - max(2, s // 32))
    img = _paint(img, ring, (210, 200, 160), keep=1)
    inner = _disc(s, cy, cx, r // 3) & ~_disc(s, cy, cx, r // 3 - max(1, s // 64))
    img = _paint(img, inner, (150, 180, 220), keep=2)
    notch = _disc(s, cy - (r * 2) // 3, cx, max(2, s // 40))
    img = _paint(img, notch, (20, 30, 60), keep=1)
    return np.clip(img, 0, 255), disc


def _defect(
    rng: np.random.Generator, img: np.ndarray, obj: np.ndarray, kind: str, s: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draws one defect; returns (image int64 ``[3,s,s]``, mask bool ``[s,s]``)."""
    lo, hi = (s * 3) // 10, (s * 7) // 10  # defect centres stay in the central 40 %

    def centre() -> tuple[int, int]:
        ys, xs = np.nonzero(obj[lo:hi, lo:hi])
        k = int(rng.integers(0, len(ys)))
        return lo + int(ys[k]), lo + int(xs[k])

    if kind == "scratch":
        cy, cx = centre()
        length = s // 4 + int(rng.integers(0, s // 8 + 1))
        ang = int(rng.integers(0, 8))  # 8 directions, integer unit vectors scaled by 5
        uy, ux = ((0, 5), (3, 4), (4, 3), (5, 0), (4, -3), (3, -4), (5, 5), (5, -5))[ang]
        norm = 5 if ang < 6 else 7
        dy, dx = (uy * length) // (2 * norm), (ux * length) // (2 * norm)
        mask = _segment(s, cy - dy, cx - dx, cy + dy, cx + dx, max(1, s // 48))
        mask &= obj
        return _paint(img, mask, (250, 248, 240), keep=0), mask
    if kind == "stain":
        cy, cx = centre()
        ry = s // 10 + int(rng.integers(0, s // 20 + 1))
        rx = s // 10 + int(rng.integers(0, s // 20 + 1))
        yy, xx = _grid(s)
        mask = (yy - cy) ** 2 * rx * rx + (xx - cx) ** 2 * ry * ry <= rx * rx * ry * ry
        mask &= obj
        colour = ((230, 40, 200), (60, 220, 60), (240, 200, 20))[int(rng.integers(0, 3))]
        return _paint(img, mask, colour, keep=2), mask
    if kind == "hole":
        cy, cx = centre()
        mask = np.zeros((s, s), bool)
        for _ in range(3):
            oy, ox = (int(v) for v in rng.integers(-s // 16, s // 16 + 1, size=2))
            mask |= _disc(s, cy + oy, cx + ox, s // 14 + int(rng.integers(0, s // 32 + 1)))
        return _paint(img, mask, (15, 12, 10), keep=1), mask
    if kind == "missing":
        # A bite at the disc edge: the removed part shows the background.
        ys, xs = np.nonzero(obj)
        cy0, cx0 = int(ys.mean().round()), int(xs.mean().round())
        r = int(np.sqrt(obj.sum() / np.pi))
        side = int(rng.integers(0, 4))
        dy, dx = ((-1, 0), (1, 0), (0, -1), (0, 1))[side]
        by, bx = cy0 + dy * r, cx0 + dx * r
        bite = _disc(s, by, bx, s // 7 + int(rng.integers(0, s // 28 + 1)))
        mask = bite & obj
        bg = (np.full((3, s, s), 70, np.int64) * 7 + _value_noise(rng, s, max(2, s // 16))) // 8
        return np.where(mask[None], bg, img), mask
    raise ValueError(kind)


# --------------------------------------------------------------------------------------------
# Hard mode: natural variation in the normal images, small low-contrast defects.
# --------------------------------------------------------------------------------------------
# (sin, cos) * 1024 of -15, -10, ..., 15 degrees (disc tilt) and of 0, 30, ..., 330 degrees
# (directions): integer tables, so no floating point enters the drawing.
_TILT = ((-265, 989), (-178, 1008), (-89, 1020), (0, 1024), (89, 1020), (178, 1008), (265, 989))
_DIRS = (
    (0, 1024), (512, 887), (887, 512), (1024, 0), (887, -512), (512, -887), (0, -1024),
    (-512, -887), (-887, -512), (-1024, 0), (-887, 512), (-512, 887),
)  # fmt: skip


@dataclass
class _Scene:
    """A hard-mode image before lighting (defects are drawn into ``img``, then it is lit)."""

    img: np.ndarray  # int64 [3, s, s]
    obj: np.ndarray  # bool [s, s]: where defects may go
    light: tuple[int, np.ndarray, np.ndarray]  # see _lighting
    bg: np.ndarray | None = None  # what a missing part of the object reveals
    centre: tuple[int, int, int] = (0, 0, 0)  # the object's (cy, cx, radius)


def _lighting(rng: np.random.Generator, s: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Slight illumination / colour jitter: gain 96-104 %, per-channel offset +-4 levels and a
    linear brightness ramp of up to +-8 levels across the image."""
    gain = 100 + int(rng.integers(-4, 5))
    off = rng.integers(-4, 5, size=3).astype(np.int64)[:, None, None]
    gy, gx = (int(v) for v in rng.integers(-8, 9, size=2))
    yy, xx = _grid(s)
    return gain, off, (gy * (2 * yy - s) + gx * (2 * xx - s)) // (2 * s)


def _lit(sc: _Scene) -> np.ndarray:
    """The lit image as uint8 ``[s, s, 3]``."""
    gain, off, ramp = sc.light
    img = np.clip((sc.img * gain) // 100 + off + ramp[None], 0, 255)
    return img.astype(np.uint8).transpose(1, 2, 0)


def _grain(rng: np.random.Generator, s: int, cell: int) -> np.ndarray:
    """Value noise that is mostly brightness: 3/4 shared by the channels, 1/4 per channel."""
    n = _value_noise(rng, s, cell)
    return (n[:1] * 3 + n) // 4


def _weave_hard(rng: np.random.Generator, s: int) -> _Scene:
    """The weave with jittered thread contrast and yarn colour, brightness grain and lighting."""
    p = max(4, s // 16)
    yy, xx = _grid(s)
    oy, ox = (int(v) for v in rng.integers(0, 2 * p, size=2))
    y, x = yy + oy, xx + ox
    horizontal = ((y // p) + (x // p)) % 2 == 0
    half = p // 2
    across = np.where(horizontal, y % p, x % p)
    profile = half - np.abs(across - half)
    dark = 90 + int(rng.integers(-8, 9))
    span = 120 + int(rng.integers(-12, 13))
    shade = dark + (profile * span) // max(1, half)
    noise = _grain(rng, s, max(2, s // 32))
    base = (np.array([200, 170, 120]) + rng.integers(-6, 7, size=3)).astype(np.int64)
    img = (base[:, None, None] * shade[None]) // 210
    img = (img * 6 + noise * 2) // 8
    return _Scene(np.clip(img, 0, 255), np.ones((s, s), bool), _lighting(rng, s))


def _disc_hard(rng: np.random.Generator, s: int) -> _Scene:
    """The disc shifted by up to s/32, radius +-s/128, tilted +-15 degrees (the notch moves),
    with jittered colours, brightness grain and lighting."""
    jitter = max(1, s // 32)
    cy = s // 2 + int(rng.integers(-jitter, jitter + 1))
    cx = s // 2 + int(rng.integers(-jitter, jitter + 1))
    r = (s * 3) // 10 + int(rng.integers(-(s // 128), s // 128 + 1))
    sin, cos = _TILT[int(rng.integers(0, len(_TILT)))]
    noise = _grain(rng, s, max(2, s // 16))
    fine = _grain(rng, s, max(2, s // 64))
    grey = 70 + int(rng.integers(-6, 7))
    bg = (np.full((3, s, s), grey, np.int64) * 5 + noise * 2 + fine) // 8
    disc = _disc(s, cy, cx, r)
    body_rgb = (np.array([40, 90, 170]) + rng.integers(-6, 7, size=3)).astype(np.int64)
    body = (body_rgb[:, None, None] * 6 + fine * 2) // 8
    img = np.where(disc[None], body, bg)
    ring = disc & ~_disc(s, cy, cx, r - max(2, s // 32))
    img = _paint(img, ring, (210, 200, 160), keep=1)
    inner = _disc(s, cy, cx, r // 3) & ~_disc(s, cy, cx, r // 3 - max(1, s // 64))
    img = _paint(img, inner, (150, 180, 220), keep=2)
    d = (r * 2) // 3
    notch = _disc(s, cy - (d * cos) // 1024, cx + (d * sin) // 1024, max(2, s // 40))
    img = _paint(img, notch, (20, 30, 60), keep=1)
    return _Scene(np.clip(img, 0, 255), disc, _lighting(rng, s), bg, (cy, cx, r))


def _defect_hard(rng: np.random.Generator, sc: _Scene, kind: str, s: int) -> np.ndarray:
    """Draws one subtle defect into ``sc.img`` (before lighting) and returns its mask.

    Every masked pixel changes and no other does. Sizes at 256 px: scratch ~0.2-0.5 %, stain
    ~0.4-1.5 %, hole ~0.3-0.9 %, missing ~0.3-0.7 % of the image.
    """
    lo, hi = (s * 3) // 10, (s * 7) // 10  # centres in the central 40 %
    yy, xx = _grid(s)

    def centre() -> tuple[int, int]:
        ys, xs = np.nonzero(sc.obj[lo:hi, lo:hi])
        k = int(rng.integers(0, len(ys)))
        return lo + int(ys[k]), lo + int(xs[k])

    def blend(mask: np.ndarray, target: np.ndarray, w8: np.ndarray | int = 8) -> None:
        # img + (target - img) * w8 / 8 on the mask, moving each pixel at least one level
        diff = np.clip(target, 0, 255) - sc.img
        step = (diff * w8) // 8
        step = np.where((step == 0) & (diff != 0), np.sign(diff), step)
        sc.img = np.where(mask[None], sc.img + step, sc.img)

    if kind == "scratch":  # a thin (3 px) line, 45-75 levels lighter (2/3) or darker
        cy, cx = centre()
        length = (s * 3) // 10 + int(rng.integers(0, s // 10 + 1))  # <= 0.4 s: stays central
        sin, cos = _DIRS[int(rng.integers(0, len(_DIRS)))]
        dy, dx = (sin * length) // 2048, (cos * length) // 2048
        mask = _segment(s, cy - dy, cx - dx, cy + dy, cx + dx, max(1, s // 160)) & sc.obj
        amount = int(rng.integers(45, 76))
        blend(mask, sc.img + (amount if rng.integers(0, 3) else -amount))
        return mask
    if kind == "stain":  # a small ellipse tinted by 35-60 levels, fading to 5/8 at its rim
        cy, cx = centre()
        ry, rx = (
            max(2, (s * 36) // 1000) + int(rng.integers(0, (s * 36) // 1000 + 1)) for _ in "yx"
        )
        e, big = (yy - cy) ** 2 * rx * rx + (xx - cx) ** 2 * ry * ry, rx * rx * ry * ry
        mask = (e <= big) & sc.obj
        tint = ((1, 0, -1), (-1, 0, 1), (1, 1, -1), (0, 1, 0), (-1, -1, 1))[int(rng.integers(0, 5))]
        amount = int(rng.integers(35, 61))
        blend(mask, sc.img + np.asarray(tint)[:, None, None] * amount, 8 - (3 * e) // big)
        return mask
    if kind == "hole":  # two overlapping small discs, darkened to 1/2-5/8 of the texture
        cy, cx = centre()
        mask = np.zeros((s, s), bool)
        for _ in range(2):
            oy, ox = (int(v) for v in rng.integers(-(s // 40), s // 40 + 1, size=2))
            rr = max(2, (s * 28) // 1000) + int(rng.integers(0, (s * 12) // 1000 + 1))
            mask |= _disc(s, cy + oy, cx + ox, rr)
        blend(mask, (sc.img * int(rng.integers(4, 6))) // 8)
        return mask
    if kind == "missing":  # a shallow bite out of the rim that shows the true background
        cy, cx, r = sc.centre
        rb = max(3, (s * 45) // 1000) + int(rng.integers(0, (s * 25) // 1000 + 1))
        sin, cos = _DIRS[int(rng.integers(0, len(_DIRS)))]
        d = r + rb // 8  # the bite's centre lies just outside the rim
        mask = _disc(s, cy - (d * cos) // 1024, cx + (d * sin) // 1024, rb) & sc.obj
        sc.img = np.where(mask[None], sc.bg, sc.img)
        return mask
    raise ValueError(kind)


_MAKERS = {"weave": _weave, "disc": _disc_object}


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _save_png(a: np.ndarray, path: Path, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a, mode).save(path, format="PNG", compress_level=6)


def _write_category(folder: Path, cat: str, ci: int, seed: int, p: dict) -> None:
    if p.get("mode", "easy") == "hard":
        _write_category_hard(folder, cat, ci, seed, p)
        return
    s, make = p["image_size"], _MAKERS[cat]

    def normal(split: int, i: int) -> np.ndarray:
        img, _ = make(_rng(seed, ci, split, 0, i), s)
        return img.astype(np.uint8).transpose(1, 2, 0)

    for i in range(p["n_train"]):
        _save_png(normal(0, i), folder / "train" / "good" / f"{i:03d}.png")
    for i in range(p["n_test_good"]):
        _save_png(normal(1, i), folder / "test" / "good" / f"{i:03d}.png")
    for di, kind in enumerate(DEFECTS[cat]):
        for i in range(p["n_per_defect"]):
            rng = _rng(seed, ci, 2, di + 1, i)
            img, obj = make(rng, s)
            img, mask = _defect(rng, img, obj, kind, s)
            _save_png(
                img.astype(np.uint8).transpose(1, 2, 0), folder / "test" / kind / f"{i:03d}.png"
            )
            m = mask.astype(np.uint8) * np.uint8(255)
            _save_png(m, folder / "ground_truth" / kind / f"{i:03d}_mask.png", mode="L")


_HARD_MAKERS = {"weave": _weave_hard, "disc": _disc_hard}
_HARD = 1  # extra seed key of hard-mode streams


def _hard_sample(
    cat: str, seed: int, split: int, i: int, kind: str | None = None, s: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One hard-mode image: (defect-free uint8 ``[s,s,3]``, image uint8 ``[s,s,3]``, mask or None).

    ``split`` 0 = train, 1 = test good, 2 = defective (``kind`` given). The defect-free image of a
    defective sample is the same scene without the defect, so tests can compare the two.
    """
    ci = CATEGORIES.index(cat)
    di = 0 if kind is None else DEFECTS[cat].index(kind) + 1
    sc = _HARD_MAKERS[cat](_rng(seed, _HARD, ci, split, di, i), s)
    clean = _lit(sc)
    if kind is None:
        return clean, clean, None
    mask = _defect_hard(_rng(seed, _HARD, ci, split, di, i, 1), sc, kind, s)
    return clean, _lit(sc), mask


def _write_category_hard(folder: Path, cat: str, ci: int, seed: int, p: dict) -> None:
    s = p["image_size"]
    for i in range(p["n_train"]):
        _save_png(_hard_sample(cat, seed, 0, i, s=s)[1], folder / "train" / "good" / f"{i:03d}.png")
    for i in range(p["n_test_good"]):
        _save_png(_hard_sample(cat, seed, 1, i, s=s)[1], folder / "test" / "good" / f"{i:03d}.png")
    for kind in DEFECTS[cat]:
        for i in range(p["n_per_defect"]):
            _, img, mask = _hard_sample(cat, seed, 2, i, kind, s=s)
            _save_png(img, folder / "test" / kind / f"{i:03d}.png")
            m = mask.astype(np.uint8) * np.uint8(255)
            _save_png(m, folder / "ground_truth" / kind / f"{i:03d}_mask.png", mode="L")


# --------------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------------
def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise DatasetError(f"unknown synthetic mode {mode!r}; valid: {', '.join(MODES)}.")


def _params(
    seed: int, categories: Sequence[str] | None, small: bool, overrides: dict, mode: str = "easy"
) -> dict[str, object]:
    _check_mode(mode)
    cats = list(CATEGORIES if categories is None else categories)
    if isinstance(categories, str):
        cats = [c for c in categories.split(",") if c]
    for c in cats:
        if c not in CATEGORIES:
            raise DatasetError(f"unknown synthetic category {c!r}; valid: {', '.join(CATEGORIES)}.")
    p: dict[str, object] = dict(SMALL if small else (HARD_DEFAULTS if mode == "hard" else DEFAULTS))
    for k, v in overrides.items():
        if k not in DEFAULTS:
            raise DatasetError(f"unknown synthetic parameter {k!r}; valid: {', '.join(DEFAULTS)}.")
        if v is not None:
            p[k] = int(v)
    if int(p["image_size"]) < 32:
        raise DatasetError(f"synthetic image_size={p['image_size']} is too small; use >= 32.")
    for k in ("n_train", "n_test_good", "n_per_defect"):
        if int(p[k]) < 1:
            raise DatasetError(f"synthetic {k}={p[k]} must be >= 1.")
    # Easy mode has no "mode" key, so that trees written before hard mode existed stay valid.
    extra = {"mode": mode} if mode != "easy" else {}
    return {"format": FORMAT_VERSION, "seed": int(seed), "categories": cats, **extra, **p}


def _file_table(root: Path) -> dict[str, int]:
    return {
        str(f.relative_to(root)): f.stat().st_size
        for f in sorted(root.rglob("*"))
        if f.is_file() and f.name != MARKER
    }


def _is_complete(root: Path, params: dict) -> bool:
    marker = root / MARKER
    if not marker.is_file():
        return False
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if meta.get("params") != params:
        return False
    for rel, size in meta.get("files", {}).items():
        f = root / rel
        if not f.is_file() or f.stat().st_size != size:
            return False
    return True


def _build(root: Path, params: dict) -> Path:
    """Writes the tree into a temp sibling and renames it to ``root`` (replacing an old jad tree)."""
    root = root.expanduser().absolute()
    if root.exists() and not (root / MARKER).is_file():
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        else:
            raise DatasetError(
                f"{root} exists and is not a jad synthetic dataset; pass a new or empty folder."
            )
    with atomic_dir(root, keep_existing=lambda p: _is_complete(p, params)) as tmp:
        for ci, cat in enumerate(CATEGORIES):
            if cat in params["categories"]:
                _write_category(tmp / cat, cat, ci, params["seed"], params)
        meta = {"params": params, "files": _file_table(tmp)}
        (tmp / MARKER).write_text(json.dumps(meta, indent=1, sort_keys=True))
    return root


def default_root(cache: Path, seed: int, mode: str) -> Path:
    """The generated set's folder under jad's data cache: ``synthetic/seed<N>`` (easy, as before
    hard mode existed) or ``synthetic/hard-seed<N>``."""
    _check_mode(mode)
    prefix = "" if mode == "easy" else f"{mode}-"
    return Path(cache) / "synthetic" / f"{prefix}seed{int(seed)}"


def generate(
    out: str | os.PathLike,
    seed: int = 0,
    categories: Sequence[str] | None = None,
    *,
    mode: str = "easy",
    small: bool = False,
    image_size: int | None = None,
    n_train: int | None = None,
    n_test_good: int | None = None,
    n_per_defect: int | None = None,
) -> Path:
    """(Re)writes the synthetic dataset at ``out`` and returns its absolute path.

    Args:
      out: the dataset root to create (must be new, empty, or an earlier jad synthetic tree).
      seed: everything is a function of it.
      categories: subset of :data:`CATEGORIES` (default: all).
      mode: ``"easy"`` (large, obvious defects) or ``"hard"`` (small, subtle defects and more
        normal variation; default sizes :data:`HARD_DEFAULTS`); see the module docstring.
      small: tiny variant for tests (64 px, 4 train, 2 good + 3 x 1 defective test images).
      image_size, n_train, n_test_good, n_per_defect: override single sizes.
    """
    overrides = dict(
        image_size=image_size, n_train=n_train, n_test_good=n_test_good, n_per_defect=n_per_defect
    )
    return _build(Path(out), _params(seed, categories, small, overrides, mode))


def ensure(
    root: str | os.PathLike,
    seed: int = 0,
    categories: Sequence[str] | None = None,
    *,
    mode: str = "easy",
    small: bool = False,
    **sizes: int,
) -> Path:
    """Returns ``root``, generating it first if it is missing, incomplete or has other parameters.

    Arguments as for :func:`generate` (``sizes``: ``image_size``, ``n_train``, ...).
    """
    params = _params(seed, categories, small, sizes, mode)
    path = Path(root).expanduser().absolute()
    if _is_complete(path, params):
        return path
    return _build(path, params)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jad.data.synthetic", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, help="dataset root to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--categories", default=",".join(CATEGORIES), help="comma-separated")
    parser.add_argument(
        "--mode",
        default="easy",
        metavar="{easy,hard}",
        help="easy (default): large, obvious defects; hard: small, subtle ones",
    )
    parser.add_argument("--small", action="store_true", help="tiny variant (tests)")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-test-good", type=int, default=None)
    parser.add_argument("--n-per-defect", type=int, default=None)
    parser.add_argument("--force", action="store_true", help="rewrite even if complete")
    args = parser.parse_args(argv)
    kwargs = dict(
        seed=args.seed,
        categories=args.categories,
        mode=args.mode,
        small=args.small,
        image_size=args.image_size,
        n_train=args.n_train,
        n_test_good=args.n_test_good,
        n_per_defect=args.n_per_defect,
    )
    try:
        path = generate(args.out, **kwargs) if args.force else ensure(args.out, **kwargs)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
