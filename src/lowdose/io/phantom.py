"""Built-in phantom data: procedurally generated chest CT slices in HU, four classes.

Every slice is drawn in millimetres on a fixed 350 mm field of view and sampled on a
``size x size`` grid, so a seed gives the same anatomy at any size. The anatomy (body with
skin fat and muscle, two lungs with branching vessels, heart and mediastinum, aorta, spine,
ribs, sternum, scapulae, optionally the couch) comes from the seed alone; the lesion comes from
the seed and the label, so the same seed shows the same chest with and without a lesion.

Classes mimic the Kaggle Chest CT-Scan study:

- ``normal``: no lesion (the vessel cross-sections are the only round things in the lungs).
- ``adenocarcinoma``: a peripheral nodule 8-32 mm next to the pleura, either solid and
  spiculated, part-solid (ground-glass halo around a solid core) or pure ground glass.
- ``large.cell.carcinoma``: a bulky lobulated mass 30-70 mm, heterogeneous, often with a
  necrotic centre about 25 HU lower than the rest (subtle: low dose hides it first).
- ``squamous.cell.carcinoma``: a central, hilar mass 22-55 mm abutting the mediastinum, in
  about half the cases cavitating (an irregular air cavity with a thick wall).

Sizes overlap between classes, so a classifier must learn shape, texture and position.
Intensities are "full dose": tissue texture plus a little fine grain (about 5 HU), so the
low-dose simulators add their noise on top of a realistic clean image.

Example:
    >>> hu = phantom_slice("adenocarcinoma", size=128, seed=3)
    >>> hu.shape, hu.dtype.name, bool(hu.min() < -900 and hu.max() > 500)
    ((128, 128), 'float32', True)
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from lowdose.errors import LowdoseError
from lowdose.image import Window
from lowdose.io.atomic import atomic_write_text
from lowdose.io.datasets import CLASSES

FOV_MM = 350.0
"""Field of view of every phantom slice in mm; the pixel spacing is ``FOV_MM / size``."""

SPLITS: tuple[str, ...] = ("train", "valid", "test")
GENERATOR_VERSION = 1
"""Bumped when the drawing changes, so a written dataset says which generator made it."""

# Tissue values in HU (non-contrast chest CT).
HU_AIR = -1000.0
HU_LUNG = -860.0
HU_FAT = -100.0
HU_MUSCLE = 45.0
HU_BLOOD = 40.0
HU_SOFT = 35.0
HU_CSF = 15.0
HU_CANCELLOUS = 230.0
HU_CORTICAL = 850.0


def pixel_spacing(size: int) -> float:
    """Pixel spacing in mm of a ``size x size`` phantom slice (350 mm field of view)."""
    return FOV_MM / size


@functools.lru_cache(maxsize=64)
def _bspline_taps(size: int, coarse: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights ``(4, size)`` of cubic B-spline upsampling from ``coarse`` knots.

    Elementwise gathers, not matrix products: BLAS threads stall on small products when the
    CPU is shared, and the B-spline gives a smooth (C2) field.
    """
    pos = (np.arange(size) + 0.5) / size * (coarse - 3) + 1.0
    base = np.floor(pos).astype(int)
    t = pos - base
    weights = np.stack([(1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6,
                        (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6, t**3 / 6]).astype(np.float32)
    index = np.clip(base[None, :] + np.arange(-1, 3)[:, None], 0, coarse - 1)
    return index, weights


class _Canvas:
    """Pixel-centre coordinates in mm (x to the image right, y down = posterior).

    The patient lies slightly rotated and off-centre: ``(x, y)`` are patient coordinates of
    each pixel, an affine map of the grid that :meth:`box` inverts to find a shape's pixels.
    """

    def __init__(self, size: int, rotation_deg: float, shift: tuple[float, float]) -> None:
        self.size = size
        self.spacing = sp = pixel_spacing(size)
        c = (np.arange(size, dtype=np.float32) + 0.5) * sp - FOV_MM / 2
        yy, xx = np.meshgrid(c, c, indexing="ij")
        t = np.deg2rad(rotation_deg)
        cos, sin = np.cos(t), np.sin(t)
        self.x = (cos * (xx - shift[0]) + sin * (yy - shift[1])).astype(np.float32)
        self.y = (-sin * (xx - shift[0]) + cos * (yy - shift[1])).astype(np.float32)
        # Inverse map patient (x, y) -> grid (col, row), in pixels.
        self._inv = (cos, sin, float(shift[0]), float(shift[1]), float(c[0]))

    def box(self, cx: float, cy: float, radius: float) -> tuple[slice, slice] | None:
        """Pixel slices covering the disc of ``radius`` mm around patient point (cx, cy)."""
        cos, sin, sx, sy, c0 = self._inv
        gx = cos * cx - sin * cy + sx
        gy = sin * cx + cos * cy + sy
        col, row = (gx - c0) / self.spacing, (gy - c0) / self.spacing
        rp = radius / self.spacing + 1.5
        r0, r1 = max(0, int(np.floor(row - rp))), min(self.size, int(np.ceil(row + rp)) + 1)
        c0_, c1 = max(0, int(np.floor(col - rp))), min(self.size, int(np.ceil(col + rp)) + 1)
        if r0 >= r1 or c0_ >= c1:
            return None
        return slice(r0, r1), slice(c0_, c1)

    def _ellipse_at(self, sub, cx, cy, a, b, angle_deg, edge) -> np.ndarray:
        t = np.deg2rad(angle_deg)
        dx, dy = self.x[sub] - cx, self.y[sub] - cy
        u = (np.cos(t) * dx + np.sin(t) * dy) / a
        v = (-np.sin(t) * dx + np.cos(t) * dy) / b
        dist = (1.0 - np.sqrt(u * u + v * v)) * min(a, b)  # ~signed distance to the edge, mm
        width = self.spacing * 0.5 if edge is None else edge
        return np.clip(0.5 + dist / (2 * width), 0.0, 1.0)

    def ellipse(self, cx: float, cy: float, a: float, b: float, angle_deg: float = 0.0,
                edge: float | None = None) -> np.ndarray:
        """Full-size soft indicator in [0, 1] of an ellipse (edge ``edge`` mm, default 1 px)."""
        out = np.zeros((self.size, self.size), np.float32)
        sub = self.box(cx, cy, max(a, b) + 2 * (edge or self.spacing))
        if sub is not None:
            out[sub] = self._ellipse_at(sub, cx, cy, a, b, angle_deg, edge)
        return out

    def paint(self, hu: np.ndarray, cx: float, cy: float, a: float, b: float, value: float,
              angle_deg: float = 0.0, within: np.ndarray | None = None) -> None:
        """Blend ``value`` into ``hu`` inside an ellipse (optionally times a mask), in place."""
        sub = self.box(cx, cy, max(a, b) + 2 * self.spacing)
        if sub is None:
            return
        w = self._ellipse_at(sub, cx, cy, a, b, angle_deg, None)
        if within is not None:
            w = w * within[sub]
        hu[sub] += w * (value - hu[sub])

    def smooth_field(self, rng: np.random.Generator, scale_mm: float) -> np.ndarray:
        """A smooth random field, zero mean and unit standard deviation, features ``scale_mm``."""
        coarse = max(5, round(FOV_MM / scale_mm) + 3)
        index, weights = _bspline_taps(self.size, coarse)
        noise = rng.standard_normal((coarse, coarse)).astype(np.float32)
        rows = sum(weights[k][:, None] * noise[index[k]] for k in range(4))
        field = sum(weights[k][None, :] * rows[:, index[k]] for k in range(4))
        std = float(field.std())
        return (field - field.mean()) / (std if std > 0 else 1.0)


def _blend(base: np.ndarray, weight: np.ndarray, value: np.ndarray | float) -> np.ndarray:
    return base + weight * (value - base)


def _segment_distance(x: np.ndarray, y: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    d = p1 - p0
    length2 = float(d @ d) or 1e-6
    t = np.clip(((x - p0[0]) * d[0] + (y - p0[1]) * d[1]) / length2, 0.0, 1.0)
    return np.hypot(x - (p0[0] + t * d[0]), y - (p0[1] + t * d[1]))


def _soft_step(signed_mm: np.ndarray, spacing: float) -> np.ndarray:
    return np.clip(0.5 + signed_mm / spacing, 0.0, 1.0)


class _Chest:
    """The anatomy of one slice, drawn from one generator; holds the masks lesions need."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.rng = rng
        self.cv = cv = _Canvas(size, rng.uniform(-5, 5), (rng.normal(0, 6), rng.normal(0, 6)))
        x, y, sp = cv.x, cv.y, cv.spacing
        level = rng.uniform(0.0, 1.0)  # 0: upper chest (great vessels), 1: lower (big heart)

        # Body outline with skin fat and muscle layers, flatter at the back (on the couch).
        a_body = rng.uniform(135, 165)
        b_body = a_body * rng.uniform(0.64, 0.76)
        t_fat = rng.uniform(5, 22)
        t_muscle = rng.uniform(8, 16)
        y_back = b_body / 1.06
        yb = np.where(y > 0, y * 1.06, y)
        dist_out = (1.0 - np.sqrt((x / a_body) ** 2 + (yb / b_body) ** 2)) * b_body
        dist_out = dist_out + cv.smooth_field(rng, 60.0) * 2.5  # ~mm inside the skin
        body = _soft_step(dist_out, sp)
        inner = _soft_step(dist_out - t_fat, sp)  # inside the subcutaneous fat
        hu = HU_AIR + body * (HU_FAT - HU_AIR)
        hu = _blend(hu, inner, HU_MUSCLE + 6.0 * cv.smooth_field(rng, 15.0))

        # Thoracic cavity inside the chest wall (same outline, so the wall thickness holds).
        a_cav, b_cav = a_body - t_fat - t_muscle, b_body - t_fat - t_muscle
        y_cav_back = y_back - t_fat - t_muscle
        cavity = _soft_step(dist_out - t_fat - t_muscle, sp)

        # Spine: vertebral body, canal, posterior elements; paraspinal muscles behind the
        # cavity. The lungs reach back beside the vertebral body (paravertebral gutters).
        xv, rv = rng.normal(0, 2), rng.uniform(13, 17)
        yv = y_cav_back - rv - rng.uniform(20, 30)
        canal_y = yv + rv + 9
        spine_block = np.maximum.reduce([
            cv.ellipse(xv, yv, rv * 1.15 + 2, rv + 2),
            cv.ellipse(xv, canal_y + 4, 15, 14),
            cv.ellipse(xv - 26, canal_y + 8, 16, 18, 15),
            cv.ellipse(xv + 26, canal_y + 8, 16, 18, -15),
        ]) * inner
        cavity = cavity * (1.0 - spine_block)
        hu = _blend(hu, spine_block, HU_MUSCLE)
        cv.paint(hu, xv, yv, rv * 1.15, rv, HU_CORTICAL)
        cv.paint(hu, xv, yv, rv * 1.15 - 2.0, rv - 2.0, HU_CANCELLOUS)
        cv.paint(hu, xv, canal_y, 11, 10, HU_CORTICAL * 0.75)  # lamina ring
        cv.paint(hu, xv, canal_y, 7.5, 7, HU_CSF)
        cv.paint(hu, xv, canal_y + 17, 3.5, 9, HU_CORTICAL * 0.7)  # spinous process
        for side in (-1, 1):  # transverse processes
            cv.paint(hu, xv + side * 19, canal_y - 1, 10, 3.5, HU_CORTICAL * 0.7, side * 20)

        # Mediastinum: a band between the lungs, wider at the back, plus the heart and aorta.
        xm = xv + rng.normal(3, 3)
        w_front, w_back = rng.uniform(7, 15), rng.uniform(20, 30)
        frac = np.clip((y + b_cav) / (yv + b_cav), 0.0, 1.0)
        border = cv.smooth_field(rng, 40.0) * 1.5  # uneven mediastinal pleura, mm
        mediastinum = _soft_step(w_front + (w_back - w_front) * frac - np.abs(x - xm) + border, sp)
        hx, hy = xm + rng.uniform(12, 28), rng.uniform(-28, -8)
        self.has_heart = level > 0.3
        heart = None
        if self.has_heart:
            scale = 0.8 + 0.3 * (level - 0.3) / 0.7
            ha, hb = rng.uniform(42, 56) * scale, rng.uniform(32, 42) * scale
            hang = rng.uniform(-40, -15)
            mediastinum = np.maximum(mediastinum, cv.ellipse(
                hx, hy, ha + rng.uniform(2, 6), hb + rng.uniform(2, 5), hang))
            heart = cv.ellipse(hx, hy, ha, hb, hang)
        else:  # upper chest: the great vessels widen the mediastinum
            mediastinum = np.maximum(mediastinum, cv.ellipse(
                xm + 2, hy + 15, rng.uniform(26, 34), rng.uniform(28, 38)))
        ax, ay, ar = xv + rv + rng.uniform(2, 8), yv - rng.uniform(0, 10), rng.uniform(10, 14)
        aorta = cv.ellipse(ax, ay, ar, ar)
        mediastinum = np.maximum(mediastinum, aorta) * cavity
        self.mediastinum = mediastinum

        # Lungs: the cavity less the mediastinum.
        lung = (1.0 - mediastinum) * cavity
        self.cavity, self.lung, self.lung_mask = cavity, lung, lung > 0.5
        hu = _blend(hu, cavity, HU_SOFT)
        post_density = np.clip((y + b_cav) / (2 * b_cav), 0.0, 1.0) * rng.uniform(20, 60)
        lung_hu = (HU_LUNG + rng.normal(0, 15) + post_density
                   + cv.smooth_field(rng, 25.0) * 6.0 + cv.smooth_field(rng, 6.0) * 10.0)
        hu = _blend(hu, lung, lung_hu)

        # Mediastinal content: fat around heart and vessels, heart, aorta, oesophagus, airway.
        med_fat = mediastinum * (1.0 - lung)
        hu = _blend(hu, med_fat, HU_FAT + 30.0 * cv.smooth_field(rng, 20.0).clip(-1, 1))
        if heart is not None:
            hu = _blend(hu, heart, HU_BLOOD + 6.0 * cv.smooth_field(rng, 30.0))
        else:  # upper chest: ascending aorta, superior vena cava, trachea
            cv.paint(hu, xm + 10, hy + 8, 15, 15, HU_BLOOD, within=cavity)
            cv.paint(hu, xm - 14, hy + 2, 9, 11, HU_BLOOD, within=cavity)
            cv.paint(hu, xm - 2, hy + 32, 9.5, 8.5, HU_MUSCLE, within=cavity)
            cv.paint(hu, xm - 2, hy + 32, 7.5, 6.5, HU_AIR + 30, within=cavity)
        cv.paint(hu, ax, ay, ar, ar, HU_BLOOD)
        cv.paint(hu, xv - 4, yv - rv - 6, 6, 5, HU_MUSCLE, within=cavity)

        # Hila: the most medial lung point near the heart level on each side.
        self.hila: list[tuple[float, float, int]] = []
        band_y = np.abs(y - (hy + 20)) < 14
        for side in (-1, 1):
            cand = self.lung_mask & ((x - xm) * side > 0)
            near = cand & band_y
            cand = near if near.any() else cand
            if cand.any():
                i = int(np.argmin(np.where(cand, np.abs(x - xm), np.inf)))
                self.hila.append((float(x.flat[i]), float(y.flat[i]), side))
        hu = self._vessels(hu)

        # Ribs around the cavity (cut obliquely, so elongated), sternum, scapulae.
        for ang in rng.uniform(0, 2 * np.pi, int(rng.integers(8, 13))):
            s, c = np.sin(ang), np.cos(ang)
            if s > 0.8:  # the spine is there
                continue
            rx, ry = (a_cav + 5) * c, (b_cav + 5) * s
            tangent = float(np.rad2deg(np.arctan2(b_cav * c, -a_cav * s)))
            length, thick = rng.uniform(5, 14), rng.uniform(3.5, 5)
            cv.paint(hu, rx, ry, length, thick, HU_CORTICAL, tangent)
            cv.paint(hu, rx, ry, length - 1.5, thick - 1.5, HU_CANCELLOUS + 50, tangent)
        if level > 0.2:
            sx, sy = xm * 0.5, -b_cav - 5
            cv.paint(hu, sx, sy, rng.uniform(11, 16), 6, HU_CORTICAL * 0.8)
            cv.paint(hu, sx, sy, 9, 4, HU_CANCELLOUS)
        if level < 0.7:
            for side in (-1, 1):
                phi = np.arcsin(rng.uniform(0.55, 0.8))
                ra, rb = a_cav + t_muscle * 0.6 + 3, b_cav + t_muscle * 0.6 + 3
                px, py = side * ra * np.cos(phi), rb * np.sin(phi)
                tangent = float(np.rad2deg(np.arctan2(rb * np.cos(phi), -side * ra * np.sin(phi))))
                cv.paint(hu, px, py, rng.uniform(20, 32), 3.0, HU_CORTICAL * 0.8, tangent,
                         within=inner)
        hu = HU_AIR + body * (hu - HU_AIR)  # nothing drawn outside the skin

        # Couch below the patient: carbon-fibre shells around a foam core.
        if rng.uniform() < 0.7:
            top = y_back + rng.uniform(3, 10) - 15.0 * (x / (a_body * 2.2)) ** 2
            thick = rng.uniform(8, 14)
            inside = (y > top) & (y < top + thick) & (np.abs(x) < a_body * 1.15)
            shell = inside & ((y < top + 1.6) | (y > top + thick - 1.6))
            hu = np.where(shell, 150.0, np.where(inside, -850.0, hu))

        self.hu = hu.astype(np.float32)

    def _vessels(self, hu: np.ndarray) -> np.ndarray:
        """Pulmonary vessels: short in-plane branches from each hilum plus cross-sections."""
        cv, rng = self.cv, self.rng
        x, y, sp = cv.x, cv.y, cv.spacing
        vessel = np.zeros(x.shape, np.float32)

        def stamp(sub, weight):
            vessel[sub] = np.maximum(vessel[sub], weight)

        for hx, hy, side in self.hila:
            stack = []
            for _ in range(int(rng.integers(2, 4))):
                ang = np.deg2rad(rng.uniform(-75, 75)) + (0.0 if side > 0 else np.pi)
                stack.append((np.array([hx, hy], np.float32), ang, rng.uniform(2.0, 3.2), 0))
            while stack:
                p0, a, r, gen = stack.pop()
                length = rng.uniform(10, 24) * (0.85 ** gen)
                p1 = p0 + length * np.array([np.cos(a), np.sin(a)], np.float32)
                # Segments leaving the slice plane are not drawn, but their branches may be.
                if gen == 0 or rng.uniform() < 0.5:
                    mid = (p0 + p1) / 2
                    sub = cv.box(float(mid[0]), float(mid[1]), length / 2 + r + 1)
                    if sub is not None:
                        d = _segment_distance(x[sub], y[sub], p0, p1)
                        stamp(sub, _soft_step(r - d, sp))
                if gen < 3 and r > 0.8:
                    for turn in (-1, 1):
                        stack.append((p1, a + turn * np.deg2rad(rng.uniform(12, 40)),
                                      r * rng.uniform(0.6, 0.8), gen + 1))
        # Vessels crossing the slice: dots, larger and denser near the hila.
        lung_idx = np.flatnonzero(self.lung_mask)
        if lung_idx.size and self.hila:
            n_dots = int(rng.integers(25, 60))
            pick = rng.choice(lung_idx, size=n_dots)
            px, py = x.flat[pick], y.flat[pick]
            hxy = np.array([(h[0], h[1]) for h in self.hila], np.float32)
            dh = np.min(np.hypot(px[:, None] - hxy[:, 0], py[:, None] - hxy[:, 1]), axis=1)
            radii = np.clip(2.6 * np.exp(-dh / 60.0) * rng.uniform(0.5, 1.1, n_dots), 0.5, 3.5)
            for cx, cy, r in zip(px.tolist(), py.tolist(), radii.tolist(), strict=True):
                sub = cv.box(cx, cy, r + 1)
                if sub is not None:
                    stamp(sub, _soft_step(r - np.hypot(x[sub] - cx, y[sub] - cy), sp))
        return _blend(hu, vessel * self.lung, HU_BLOOD)


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi


class _Lesion:
    """Draws one lesion into a :class:`_Chest` (pixels restricted to the thoracic cavity)."""

    def __init__(self, chest: _Chest, rng: np.random.Generator) -> None:
        self.chest, self.rng, self.cv = chest, rng, chest.cv
        self.lung_depth = self._distance(chest.lung_mask)
        self.from_mediastinum = self._distance(chest.mediastinum < 0.5)

    def _distance(self, mask: np.ndarray) -> np.ndarray:
        """Distance in mm to the nearest pixel outside ``mask``; on a 2x coarser grid (a
        lesion is placed to within a pixel anyway, and it is 4x faster)."""
        step = 2 if mask.shape[0] >= 128 else 1
        coarse = ndimage.distance_transform_edt(mask[::step, ::step]) * (self.cv.spacing * step)
        full = np.repeat(np.repeat(coarse, step, 0), step, 1)[: mask.shape[0], : mask.shape[1]]
        return np.where(mask, full, 0.0)

    # -- placement -------------------------------------------------------------------------
    def _pick(self, allowed: np.ndarray, fallback: np.ndarray) -> tuple[float, float]:
        idx = np.flatnonzero(allowed)
        if idx.size == 0:
            idx = np.flatnonzero(fallback)
        if idx.size == 0:  # degenerate anatomy: the deepest lung point
            idx = np.array([int(np.argmax(self.lung_depth))])
        i = int(self.rng.choice(idx))
        return float(self.cv.x.flat[i]), float(self.cv.y.flat[i])

    def peripheral(self, r0: float) -> tuple[float, float]:
        lm = self.chest.lung_mask
        ok = lm & (self.lung_depth > 0.4 * r0) & (self.lung_depth < r0 + 8) & (
            self.from_mediastinum > 30 + r0)
        return self._pick(ok, lm & (self.lung_depth > 0.3 * r0))

    def anywhere(self, r0: float) -> tuple[float, float]:
        lm = self.chest.lung_mask
        return self._pick(lm & (self.lung_depth > 0.55 * r0) & (self.from_mediastinum > 0.5 * r0),
                          lm & (self.lung_depth > 0.3 * r0))

    def central(self, r0: float) -> tuple[float, float]:
        if not self.chest.hila:
            return self.anywhere(r0)
        hx, hy, side = self.chest.hila[int(self.rng.integers(len(self.chest.hila)))]
        return hx + side * r0 * self.rng.uniform(0.25, 0.7), hy + self.rng.normal(0, 8)

    # -- drawing ---------------------------------------------------------------------------
    def _polar(self, cx: float, cy: float, extent: float):
        sub = self.cv.box(cx, cy, extent)
        if sub is None:
            return None
        dx, dy = self.cv.x[sub] - cx, self.cv.y[sub] - cy
        return sub, np.hypot(dx, dy), np.arctan2(dy, dx)

    def _radius(self, theta: np.ndarray, r0: float, lobulation: float, kmax: int) -> np.ndarray:
        radius = np.ones_like(theta)
        for k in range(2, kmax + 1):
            radius += self.rng.uniform(0, lobulation) * np.cos(k * theta + self.rng.uniform(0, 6.3))
        return r0 * radius

    def _soft(self, r: np.ndarray, radius: np.ndarray, edge: float) -> np.ndarray:
        return np.clip(0.5 + (radius - r) / max(edge, 1e-3), 0.0, 1.0)

    def _spicules(self, r, theta, r0, n, max_len, width) -> np.ndarray:
        out = np.zeros_like(r)
        for _ in range(n):
            a = self.rng.uniform(-np.pi, np.pi)
            length = self.rng.uniform(0.3, 1.0) * max_len
            w = self.rng.uniform(*width)
            along = (r - 0.8 * r0) / max(length + 0.2 * r0, 1e-3)
            lateral = r * np.abs(_wrap(theta - a))
            w_here = w * np.clip(1.0 - along, 0.0, 1.0)
            line = np.clip(0.5 + (w_here - lateral) / self.cv.spacing, 0.0, 1.0)
            out = np.maximum(out, np.where((along >= 0) & (along <= 1), line, 0.0))
        return out * self.rng.uniform(0.5, 0.85)  # thin: partial volume, never full density

    def _texture(self, sub, scale_mm: float, amplitude: float) -> np.ndarray:
        # A full-size field keeps the texture independent of the box position.
        return self.cv.smooth_field(self.rng, scale_mm)[sub] * amplitude

    def _put(self, hu, sub, weight, value) -> None:
        weight = weight * (self.chest.cavity[sub] > 0.5)
        hu[sub] = _blend(hu[sub], weight, value)

    def adenocarcinoma(self, hu: np.ndarray) -> dict:
        rng = self.rng
        r0 = rng.uniform(4, 16)
        cx, cy = self.peripheral(r0)
        kind = rng.choice(["solid-spiculated", "part-solid", "ground-glass"], p=[0.35, 0.4, 0.25])
        polar = self._polar(cx, cy, 2.4 * r0 + 12)
        if polar is None:
            return {}
        sub, r, th = polar
        radius = self._radius(th, r0, 0.12 if kind == "solid-spiculated" else 0.08, 5)
        lung_here = hu[sub]
        if kind == "solid-spiculated":
            solid = self._soft(r, radius, self.cv.spacing * 0.7)
            spic = self._spicules(r, th, r0, int(rng.integers(6, 15)), 0.9 * r0 + 6, (0.5, 1.1))
            value = rng.uniform(25, 45) + self._texture(sub, 4.0, 6.0)
            self._put(hu, sub, np.maximum(solid, spic), value)
        else:
            ggo = self._soft(r, radius, 1.5)
            level = rng.uniform(-720, -580) if kind == "ground-glass" else rng.uniform(-650, -480)
            value = np.maximum(lung_here, level + self._texture(sub, 2.5, 45.0))
            self._put(hu, sub, ggo, value)
            if kind == "part-solid":
                rc = r0 * rng.uniform(0.3, 0.6)
                ox, oy = rng.uniform(-0.3, 0.3, 2) * r0
                p2 = self._polar(cx + ox, cy + oy, 2.4 * r0 + 12)
                if p2 is not None and p2[0] == sub:
                    core = self._soft(p2[1], self._radius(p2[2], rc, 0.15, 4), self.cv.spacing)
                    spic = self._spicules(p2[1], p2[2], rc, int(rng.integers(0, 6)), r0, (0.4, 0.8))
                    self._put(hu, sub, np.maximum(core, spic), rng.uniform(15, 40))
            else:  # air bronchogram / bubbly lucencies
                for _ in range(int(rng.integers(1, 5))):
                    bx, by = rng.uniform(-0.5, 0.5, 2) * r0
                    bub = self.cv._ellipse_at(sub, cx + bx, cy + by, rng.uniform(0.8, 2.0),
                                              rng.uniform(0.8, 2.0), 0.0, None)
                    self._put(hu, sub, bub * ggo, HU_LUNG - 60)
        return {"kind": str(kind), "center_mm": [cx, cy], "diameter_mm": 2 * r0}

    def large_cell(self, hu: np.ndarray) -> dict:
        rng = self.rng
        r0 = rng.uniform(15, 35)
        cx, cy = self.anywhere(r0)
        polar = self._polar(cx, cy, 1.8 * r0 + 6)
        if polar is None:
            return {}
        sub, r, th = polar
        mass = self._soft(r, self._radius(th, r0, 0.14, 5), self.cv.spacing * 0.8)
        value = (rng.uniform(32, 45) + self._texture(sub, 5.0, rng.uniform(8, 15))
                 + self._texture(sub, 14.0, 6.0))
        necrotic = bool(rng.uniform() < 0.6)
        if necrotic:
            rn = r0 * rng.uniform(0.3, 0.55)
            ox, oy = rng.uniform(-0.2, 0.2, 2) * r0
            dxn, dyn = self.cv.x[sub] - cx - ox, self.cv.y[sub] - cy - oy
            core = self._soft(np.hypot(dxn, dyn), self._radius(np.arctan2(dyn, dxn), rn, 0.2, 4),
                              2.0)
            value = value - core * rng.uniform(18, 32)
        self._put(hu, sub, mass, value)
        return {"kind": "necrotic" if necrotic else "solid", "center_mm": [cx, cy],
                "diameter_mm": 2 * r0}

    def squamous(self, hu: np.ndarray) -> dict:
        rng = self.rng
        r0 = rng.uniform(11, 27)
        central = bool(rng.uniform() < 0.8)
        cx, cy = self.central(r0) if central else self.anywhere(r0)
        polar = self._polar(cx, cy, 1.6 * r0 + 6)
        if polar is None:
            return {}
        sub, r, th = polar
        mass = self._soft(r, self._radius(th, r0, 0.1, 4), self.cv.spacing * 0.8)
        value = rng.uniform(28, 42) + self._texture(sub, 5.0, 5.0)
        self._put(hu, sub, mass, value)
        cavitating = bool(rng.uniform() < 0.5)
        if cavitating:
            rc = r0 * rng.uniform(0.3, 0.6)
            ox, oy = rng.uniform(-0.25, 0.25, 2) * r0
            dxc, dyc = self.cv.x[sub] - cx - ox, self.cv.y[sub] - cy - oy
            cavity = self._soft(np.hypot(dxc, dyc), self._radius(np.arctan2(dyc, dxc), rc, 0.2, 4),
                                self.cv.spacing * 0.8) * mass
            air = np.full(cavity.shape, HU_AIR + 60, np.float32)
            if rng.uniform() < 0.3:  # air-fluid level: fluid settles posteriorly (down)
                air = np.where(dyc > rng.uniform(0.0, 0.5) * rc, 15.0, air)
            self._put(hu, sub, cavity, air)
        return {"kind": "cavitating" if cavitating else "solid", "central": central,
                "center_mm": [cx, cy], "diameter_mm": 2 * r0}


def _check_label(label: str) -> None:
    if label not in CLASSES:
        raise LowdoseError(f"unknown phantom class {label!r}; known: {', '.join(CLASSES)}")


def _render(label: str, size: int, seed: int) -> tuple[np.ndarray, dict]:
    _check_label(label)
    if size < 32:
        raise LowdoseError(f"phantom size {size} is too small (at least 32 pixels)")
    chest = _Chest(size, np.random.default_rng([seed, 0]))
    hu = chest.hu.copy()
    info: dict = {"label": label, "seed": seed}
    if label != "normal":
        lesion = _Lesion(chest, np.random.default_rng([seed, 1 + CLASSES.index(label)]))
        draw = {"adenocarcinoma": lesion.adenocarcinoma,
                "large.cell.carcinoma": lesion.large_cell,
                "squamous.cell.carcinoma": lesion.squamous}[label]
        info["lesion"] = draw(hu)
    # Scanner resolution (about 0.6 mm blur) and a little full-dose grain (about 5 HU).
    sigma_px = max(0.4, 0.6 / chest.cv.spacing)
    hu = ndimage.gaussian_filter(hu, sigma_px, mode="nearest")
    grain = np.random.default_rng([seed, 99]).standard_normal(hu.shape).astype(np.float32)
    grain = ndimage.gaussian_filter(grain, 0.7) * (5.0 * 2 * np.sqrt(np.pi) * 0.7)
    hu = np.clip(hu + grain, -1024.0, 3071.0).astype(np.float32)
    return hu, info


def phantom_slice(label: str, size: int = 256, seed: int = 0) -> np.ndarray:
    """One chest CT slice in HU with a lesion of class ``label`` (none for ``normal``).

    Args:
        label: one of :data:`lowdose.io.datasets.CLASSES`.
        size: pixels per side; the field of view is always 350 mm (spacing ``350 / size`` mm).
        seed: the anatomy comes from the seed, the lesion from the seed and the label.

    Returns:
        float32 array ``(size, size)`` in HU.

    Example:
        >>> a = phantom_slice("normal", 64, seed=1); b = phantom_slice("normal", 64, seed=1)
        >>> bool((a == b).all())
        True
    """
    return _render(label, int(size), int(seed))[0]


def _slice_seeds(n: int, seed: int) -> list[int]:
    return [int(s) for s in np.random.SeedSequence([seed, n]).generate_state(n, np.uint32)]


def _batch_plan(n: int, seed: int) -> tuple[list[str], list[int]]:
    """Balanced labels (counts differ by at most one), shuffled, and one seed per slice."""
    if n < 1:
        raise LowdoseError(f"phantom count {n} must be at least 1")
    labels = [CLASSES[i % len(CLASSES)] for i in range(n)]
    order = np.random.default_rng([seed, n, 7]).permutation(n)
    return [labels[i] for i in order], _slice_seeds(n, seed)


def phantom_batch(n: int, size: int = 256, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """``n`` phantom slices with balanced, shuffled classes.

    Returns:
        ``(hu, labels)``: float32 ``(n, size, size)`` HU and the class of each slice.

    Example:
        >>> hu, labels = phantom_batch(8, size=64, seed=0)
        >>> hu.shape, sorted(set(labels)) == sorted(CLASSES)
        ((8, 64, 64), True)
    """
    labels, seeds = _batch_plan(int(n), int(seed))
    hu = np.empty((len(labels), size, size), np.float32)
    for i, (label, s) in enumerate(zip(labels, seeds, strict=True)):
        hu[i] = phantom_slice(label, size, s)
    return hu, labels


def _split_counts(n: int, splits: Sequence[float]) -> list[int]:
    """Largest-remainder split of ``n`` items by the fractions ``splits``."""
    raw = np.asarray(splits, float) * n / float(np.sum(splits))
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - int(counts.sum())]:
        counts[i] += 1
    return [int(c) for c in counts]


def write_phantom_dataset(
    out: Path,
    n: int = 400,
    size: int = 256,
    seed: int = 0,
    splits: Sequence[float] = (0.7, 0.1, 0.2),
    fmt: str = "png",
    window: Window = Window.named("lung"),
    *,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write ``n`` phantom slices in the Kaggle layout ``out/{train,valid,test}/<class>/``.

    Each class is split by ``splits`` on its own (so every split holds every class when
    ``n`` allows). ``fmt="png"`` writes 8-bit grey PNGs through ``window``
    (``uint8 = round(255 * clip((HU - lo) / (hi - lo), 0, 1))``, the window also recorded in
    each PNG, so :func:`lowdose.io.read_ct` maps it back to HU); ``fmt="npy"`` writes float32
    HU arrays, exact. Files are written with :func:`lowdose.io.read.write_ct`.
    ``out/phantom.json`` records the seed, size, pixel spacing, window, format, generator
    version and the counts per split and class.

    Args:
        out: a new or empty folder, or a phantom dataset written before (with ``overwrite``).
        overwrite: replace a phantom dataset already in ``out``; other content is never touched.
        progress: show a progress bar on stderr (when it is a terminal).

    Returns:
        The path of ``phantom.json``.

    Example:
        >>> import tempfile
        >>> meta = write_phantom_dataset(Path(tempfile.mkdtemp()) / "ph", n=8, size=64)
        >>> sorted(p.name for p in meta.parent.iterdir())
        ['phantom.json', 'test', 'train', 'valid']
    """
    out = Path(out)
    if fmt not in ("png", "npy"):
        raise LowdoseError(f"unknown phantom format {fmt!r}; known: png, npy")
    if len(splits) != len(SPLITS) or any(f < 0 for f in splits) or sum(splits) <= 0:
        raise LowdoseError(f"splits {tuple(splits)} must be three non-negative fractions "
                           "(train, valid, test)")
    if out.exists() and not out.is_dir():
        raise LowdoseError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / "phantom.json").is_file():
            raise LowdoseError(f"{out}: folder is not empty and holds no phantom dataset; "
                               "choose a new folder")
        if not overwrite:
            raise LowdoseError(f"{out}: holds a phantom dataset already; pass --overwrite "
                               "to replace it")
        import shutil

        for split in SPLITS:
            if (out / split).is_dir():
                shutil.rmtree(out / split)
        (out / "phantom.json").unlink()

    labels, seeds = _batch_plan(int(n), int(seed))
    # Split each class on its own, in generation order.
    split_of: list[str] = [""] * len(labels)
    counts: dict[str, dict[str, int]] = {s: {c: 0 for c in CLASSES} for s in SPLITS}
    for c in CLASSES:
        members = [i for i, lab in enumerate(labels) if lab == c]
        k = 0
        for split, m in zip(SPLITS, _split_counts(len(members), splits), strict=True):
            for i in members[k:k + m]:
                split_of[i] = split
            counts[split][c] = m
            k += m

    from tqdm import tqdm

    from lowdose.image import CTImage
    from lowdose.io.read import write_ct

    suffix = ".png" if fmt == "png" else ".npy"
    spacing = pixel_spacing(size)
    # disable=None: a bar on a terminal only, none in logs.
    bar = tqdm(range(len(labels)), desc="phantom", unit="slice", leave=False,
               disable=None if progress else True)
    for i in bar:
        image = CTImage(phantom_slice(labels[i], size, seeds[i]), spacing=(spacing, spacing),
                        metadata={"source": "lowdose phantom", "label": labels[i],
                                  "seed": seeds[i]})
        path = out / split_of[i] / labels[i] / f"phantom_{i:05d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_ct(image, path, window=window if fmt == "png" else None)
    for split in SPLITS:
        for c in CLASSES:
            (out / split / c).mkdir(parents=True, exist_ok=True)

    meta = {
        "generator": "lowdose.io.phantom",
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "n": len(labels),
        "size": int(size),
        "field_of_view_mm": FOV_MM,
        "pixel_spacing_mm": [pixel_spacing(size), pixel_spacing(size)],
        "format": fmt,
        "window_hu": [window.lo, window.hi] if fmt == "png" else None,
        "png_mapping": ("uint8 = round(255 * clip((HU - lo) / (hi - lo), 0, 1))"
                        if fmt == "png" else None),
        "units": "8-bit through window_hu" if fmt == "png" else "HU, float32",
        "classes": list(CLASSES),
        "splits": dict(zip(SPLITS, (float(f) for f in splits), strict=True)),
        "counts": counts,
    }
    meta_path = out / "phantom.json"
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    return meta_path
