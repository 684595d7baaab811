"""Denoising coronal and sagittal reformats with denoisers made for axial slices (a benchmark).

CT noise is made in the axial plane: filtered back-projection correlates it within each axial
slice, and every slice gets its own draw. A coronal or sagittal reformat therefore shows noise
with one texture along x (or y) and another along z, which no axial training slice shows. This
script measures what that costs each denoiser. It simulates a quarter dose of the real full-dose
volume ``ct-series-itkelastix-chest`` (72 axial slices of 2 mm at 0.977 mm pixels, the
calibrated projection physics at a quarter of the scan's own dose, one seed), reformats the
quarter and the full dose into coronal and sagittal slices resampled to square 0.977 mm pixels
(linear interpolation along z, as a viewer's reformat does), and denoises the same number of
axial, coronal and sagittal slices through the middle of the body.

Scores: RMSE in HU inside the body (full-dose pixels above -500 HU) against the full dose
resampled the same way, and the gain over the quarter dose in dB (20 log10 of the RMSE ratio).
A denoiser that works across orientations gains about as much on reformats as on axial slices.
The other order is scored too: every axial slice denoised, then the restored volume reformatted
(``from axial``), which is what ``lowdose denoise`` advises for a reformatted series; and the
reformatted volume itself denoised along its axial planes (``axial planes``: ``lowdose denoise
--along axial``, for a user who has only the reformat).

Caveat: the volume is one patient, and the learned models saw its axial slices in training
(with other noise draws). Their axial gain is therefore the optimistic one; the classical
methods (TV, BM3D) saw nothing.

Writes ``benchmarks/results/denoise_orientation.{json,md}``.

Example:
    .venv/bin/python benchmarks/denoise_orientation.py
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from denoise_mayo import DEFAULT_DATA, RESULTS, parse_data_args, write_results

SERIES = "ct-series-itkelastix-chest"
BODY_HU = -500.0
ORIENTATIONS = ("axial", "coronal", "sagittal")
DEFAULT_DENOISERS = ("unet", "red-cnn", "gan-circle-semi", "tv", "bm3d")


def reformat(volume: np.ndarray, z_mm: float, pixel_mm: float, orientation: str,
             index: int) -> np.ndarray:
    """Slice ``index`` of ``volume`` (z, y, x) in ``orientation``; reformats resampled along z
    to square pixels by linear interpolation."""
    from scipy import ndimage

    if orientation == "axial":
        return volume[index]
    plane = volume[:, index, :] if orientation == "coronal" else volume[:, :, index]
    zoom = (z_mm / pixel_mm, 1.0)
    return ndimage.zoom(plane, zoom, order=1, mode="nearest", grid_mode=True).astype(np.float32)


def slice_indices(full: np.ndarray, orientation: str, n: int) -> list[int]:
    """``n`` evenly spaced slice positions through the middle 60% of the body along the axis
    that ``orientation`` cuts."""
    axis = {"axial": 0, "coronal": 1, "sagittal": 2}[orientation]
    other = tuple(a for a in range(3) if a != axis)
    body = (full > BODY_HU).mean(axis=other)
    inside = np.flatnonzero(body > 0.5 * body.max())
    lo, hi = inside[0], inside[-1]
    margin = 0.2 * (hi - lo)
    return [round(i) for i in np.linspace(lo + margin, hi - margin, n)]


def resample_z(volume: np.ndarray, z_mm: float, pixel_mm: float) -> np.ndarray:
    """``volume`` (z, y, x) resampled along z to the in-plane pixel size, as :func:`reformat`
    resamples each reformat."""
    from scipy import ndimage

    return ndimage.zoom(volume, (z_mm / pixel_mm, 1.0, 1.0), order=1, mode="nearest",
                        grid_mode=True).astype(np.float32)


def body_rmse(out: np.ndarray, full: np.ndarray) -> float:
    mask = full > BODY_HU
    clip = (-1024.0, 3072.0)
    diff = np.clip(out, *clip) - np.clip(full, *clip)
    return float(np.sqrt(np.mean(diff[mask] ** 2)))


def score(errors: list[float], input_rmse: float) -> dict[str, float]:
    """Mean body RMSE over slices, and its gain in dB over the input's."""
    rmse = float(np.mean(errors))
    return {"rmse_hu": rmse, "gain_db": 20 * math.log10(input_rmse / rmse)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="Denoisers (default: %(default)s).")
    parser.add_argument("--slices", type=int, default=8, help="Slices per orientation.")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the simulated low dose (default: %(default)s)")
    parser.add_argument("--skip-volume", action="append", default=[],
                        help="Denoisers not to run on the whole axial volume (slow ones).")
    parser.add_argument("--axial-planes", action="append", default=None,
                        help="Denoisers also run along the axial planes of the reformatted "
                        "volume (default: %(default)s -> unet, tv).")
    args = parse_data_args(parser, argv, DEFAULT_DATA, RESULTS, needs=(SERIES,))
    import torch

    from lowdose.io import read_ct
    from lowdose.models.loading import load_denoiser
    from lowdose.physics.api import relative_dose_options, simulate_low_dose

    image = read_ct(args.data / SERIES)
    full = image.hu.astype(np.float32)
    z_mm, pixel_mm = float(image.spacing[0]), float(image.spacing[1])
    print(f"simulating a quarter of the scan's own dose on {full.shape[0]} slices", flush=True)
    low = simulate_low_dose(full, 0.25, "projection", seed=args.seed, pixel_size_mm=pixel_mm,
                            slice_thickness_mm=z_mm,
                            **relative_dose_options("projection", "relative dose"))
    names = args.model or list(DEFAULT_DENOISERS)
    args.axial_planes = args.axial_planes or ["unet", "tv"]
    rows: dict[str, dict[str, Any]] = {}
    picks = {o: slice_indices(full, o, args.slices) for o in ORIENTATIONS}
    pairs = {o: [(reformat(low, z_mm, pixel_mm, o, i), reformat(full, z_mm, pixel_mm, o, i))
                 for i in picks[o]] for o in ORIENTATIONS}
    rows["low-dose input"] = {o: {"rmse_hu": float(np.mean([body_rmse(q, f) for q, f in pairs[o]]))}
                              for o in ORIENTATIONS}
    low_r = full_r = None
    for name in names:
        denoiser = load_denoiser(name, device="cpu")
        rows[name] = {}
        for o in ORIENTATIONS:
            start = time.perf_counter()
            errors = []
            for q, f in pairs[o]:
                out = denoiser.denoise(torch.from_numpy(q)[None, None])[0, 0].numpy()
                errors.append(body_rmse(out, f))
            rows[name][o] = score(errors, rows["low-dose input"][o]["rmse_hu"])
            rows[name][o]["s_per_slice"] = (time.perf_counter() - start) / len(pairs[o])
            print(f"{name} {o}: {rows[name][o]['rmse_hu']:.1f} HU "
                  f"({rows[name][o]['gain_db']:+.2f} dB)", flush=True)
        if name in args.axial_planes:
            # A reformatted series as a volume (z resampled to square pixels, as the reformats
            # above), denoised along its axial planes: `lowdose denoise --along axial`.
            print(f"{name}: the reformatted volume along its axial planes", flush=True)
            if low_r is None:
                low_r, full_r = (resample_z(v, z_mm, pixel_mm) for v in (low, full))
            planes = np.concatenate([
                denoiser.denoise(torch.from_numpy(low_r[i:i + 8])[:, None])[:, 0].numpy()
                for i in range(0, low_r.shape[0], 8)])
            for o in ORIENTATIONS[1:]:
                cut = (lambda v, i: v[:, i, :]) if o == "coronal" else (lambda v, i: v[:, :, i])
                errors = [body_rmse(cut(planes, i), cut(full_r, i)) for i in picks[o]]
                rows[name][f"{o}, axial planes"] = score(errors,
                                                         rows["low-dose input"][o]["rmse_hu"])
        if name in args.skip_volume:
            continue
        # The other order: denoise every axial slice, then reformat the restored volume.
        print(f"{name}: the whole volume, axially", flush=True)
        restored = np.concatenate([
            denoiser.denoise(torch.from_numpy(low[i:i + 8])[:, None])[:, 0].numpy()
            for i in range(0, low.shape[0], 8)])
        for o in ORIENTATIONS[1:]:
            errors = [body_rmse(reformat(restored, z_mm, pixel_mm, o, i), f)
                      for i, (_, f) in zip(picks[o], pairs[o], strict=True)]
            rows[name][f"{o} from axial"] = score(errors, rows["low-dose input"][o]["rmse_hu"])
            print(f"{name} {o} from axial: {rows[name][f'{o} from axial']['rmse_hu']:.1f} HU",
                  flush=True)
    shapes = {o: list(pairs[o][0][0].shape) for o in ORIENTATIONS}
    result = {
        "series": SERIES, "volume_shape": list(full.shape), "spacing_mm": [z_mm, pixel_mm],
        "dose": "0.25 of the scan's own (projection, relative dose)", "seed": args.seed,
        "slices": picks, "slice_shapes": shapes, "body_hu": BODY_HU, "rows": rows,
        "machine": f"{platform.machine()}, torch {torch.__version__}",
    }
    columns = [*ORIENTATIONS, *(f"{o} from axial" for o in ORIENTATIONS[1:]),
               *(f"{o}, axial planes" for o in ORIENTATIONS[1:])]
    lines = [
        "# Coronal and sagittal reformats: denoise the reformat, or reformat the denoised "
        "axial slices",
        "",
        f"`{SERIES}` ({full.shape[0]} axial slices, {z_mm:g} mm apart, {pixel_mm:.3f} mm "
        f"pixels), a quarter of its own dose simulated (projection physics, seed {args.seed}); "
        f"{args.slices} slices per orientation through the middle of the body, reformats "
        f"resampled to square {pixel_mm:.3f} mm pixels (shapes: "
        + ", ".join(f"{o} {'x'.join(map(str, s))}" for o, s in shapes.items())
        + f"). RMSE in HU inside the body (full dose > {BODY_HU:g} HU) and, in brackets, the "
        "gain over the quarter dose reformatted the same way. `from axial`: every axial slice "
        "denoised, then the restored volume reformatted. `axial planes`: the reformatted "
        "volume (z resampled to square pixels) denoised along its axial planes, as `lowdose "
        "denoise --along axial` does with a reformatted series. The learned models were trained on "
        "this scan's axial slices (other noise draws), so their axial and `from axial` columns "
        "are the optimistic ones; TV and BM3D saw nothing.",
        "",
        "| method | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for label, row in rows.items():
        cells = []
        for column in columns:
            entry = row.get(column)
            if entry is None and label == "low-dose input":  # reformatted either way alike
                entry = row[column.split()[0].rstrip(",")]
            cells.append("-" if entry is None else
                         f"{entry['rmse_hu']:.1f} HU ({entry.get('gain_db', 0.0):+.2f} dB)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Written by benchmarks/denoise_orientation.py.", ""]
    write_results(args.out, "denoise_orientation", result, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
