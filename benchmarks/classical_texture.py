"""BM3D's and TV's strength against the noise's texture, on real CT slices (a benchmark).

The classical denoisers set their strength per slice as a factor times the slice's noise
reading (``lowdose.metrics.noise.estimate_noise_hu``: the high-frequency part of the noise).
That reading is all of white noise but only about a quarter of a smooth reconstruction
kernel's, so a factor tuned on real quarter-dose CT (the L506 pairs, ``denoise_mayo.py``) is
three to five times too strong on the white noise of the original study's ``image-poisson`` low
dose. The denoisers therefore split the reading by the noise's texture
(``lowdose.metrics.noise.noise_texture``) into a white part and a part correlated like the L506
reconstructions (``lowdose.metrics.noise.split_noise``), and take the white factor on the first,
the correlated factor (tuned on L506) on the second, added in quadrature.

Measured here, each a grid of factors and the default, mean PSNR against the full dose:

1. **white**: the L506 full-dose slices (5 npy, 3 mm; 1 DICOM, 1 mm) with ``image-poisson`` low
   dose at 0.25 and 0.1 (seeded), scored against those full-dose slices. The white factors are
   chosen here (the L506 quarter-dose *pairs* are not used).
2. **other kernels**: correlated noise of two other textures, the relative quarter dose
   (projection physics, 3 times the scan's own noise power with its texture) of 6 slices of the
   itkelastix chest series (2 mm, texture about 1.6) and the 3 Mayo L067 slices (1 mm, sharp
   kernel, about 0.8), scored against their full dose: how far the correlated factor tuned on
   L506 is from their best.
3. the textures of the real L506 quarter-dose slices (2.2-2.3): almost all correlated, so
   their strength is the correlated factor's, as tuned.

Each case also has BM3D with its CT noise model (``noise_model="ct"``: the noise's power
spectrum, the correlated part shaped by the projection physics at the slice's pixel size), at
its default factors.

Writes ``benchmarks/results/classical_texture.{json,md}``.

Example:
    .venv/bin/python benchmarks/classical_texture.py
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from denoise_mayo import DEFAULT_DATA, RESULTS, load_pairs, parse_data_args, score, write_results

BM3D_WHITE_GRID = (0.8, 1.0, 1.15, 1.3)
TV_WHITE_GRID = (0.4, 0.6, 0.8, 1.0)
BM3D_CORRELATED_GRID = (2.5, 4.0, 6.0)
TV_CORRELATED_GRID = (1.2, 1.6, 2.5)
SEED = 7


Case = tuple[np.ndarray, np.ndarray, float | None]  # low HU, full HU, pixel size (mm) if known


def evaluate(cases: list[Case], grids: dict[str, tuple[float, ...]], label: str) -> dict[str, Any]:
    """Mean scores of the input, of each denoiser at each factor of its grid (``noise_factor``
    and ``white_noise_factor`` both set, so the factor applies whatever the texture), at its
    default, and of BM3D with its CT noise model, over ``cases`` of ``(low, full, pixel mm)``."""
    import torch

    from lowdose.metrics.noise import noise_texture
    from lowdose.models.classical import BM3D, TotalVariation

    classes = {"bm3d": BM3D, "tv": TotalVariation}
    rows: dict[str, list[dict[str, float]]] = {}
    for low, full, pixel_mm in cases:
        candidates: list[tuple[str, Any]] = [("input", None)]
        for name, grid in grids.items():
            cls = classes[name]
            candidates += [(f"{name} x{f:g}", cls(noise_factor=f, white_noise_factor=f))
                           for f in grid]
            candidates.append((f"{name} default", cls()))
            if name == "bm3d":
                candidates.append(("bm3d ct", BM3D(noise_model="ct", pixel_size_mm=pixel_mm)))
        for row, den in candidates:
            if den is None:
                out = low
            else:
                with torch.inference_mode():
                    out = den.denoise(torch.from_numpy(np.ascontiguousarray(low))[None, None])
                out = out[0, 0].numpy()
            rows.setdefault(row, []).append(score(out, full))
    textures = [float(noise_texture(low)) for low, _, _ in cases]
    means = {row: {k: float(np.mean([s[k] for s in v])) for k in v[0]} for row, v in rows.items()}
    print(f"{label}: texture {min(textures):.2f}-{max(textures):.2f}; " + ", ".join(
        f"{row} {m['psnr_full']:.2f}" for row, m in means.items()), flush=True)
    return {"n": len(cases), "texture": [min(textures), max(textures)], "rows": means}


def white_cases(data: Path, dose: float) -> list[Case]:
    """(image-poisson low dose, full dose, None) of each L506 full-dose slice (the npy slices
    state no pixel size; the physics' default, 0.742 mm, is the Mayo one)."""
    import zlib

    from lowdose.physics.api import simulate_low_dose

    cases = []
    for name, _, full in load_pairs(data):
        seed = zlib.crc32(f"{SEED}|{name}|{dose:g}".encode())
        cases.append((simulate_low_dose(full, dose, method="image-poisson", seed=seed), full,
                      None))
    return cases


def kernel_cases(data: Path, which: str) -> list[Case]:
    """(relative quarter dose, full dose, pixel mm) of 6 itkelastix slices or the 3 L067
    slices."""
    from lowdose.evaluation.compare import pick_slices
    from lowdose.io import read_ct
    from lowdose.physics.api import build_simulator, relative_dose_options
    from lowdose.physics.batch import simulate_image

    simulator = build_simulator("projection",
                                **relative_dose_options("projection", "--relative-dose"))
    if which == "itkelastix":
        images = [pick_slices(read_ct(data / "ct-series-itkelastix-chest"), 6)]
    else:
        images = [read_ct(p) for p in sorted((data / "mayo-l067-full-dose").glob("*.IMA"))]
    cases = []
    for k, image in enumerate(images):
        low = simulate_image(image, 0.25, simulator, SEED + k)
        cases += [(lo, fu, image.pixel_size_mm) for lo, fu in zip(low, image.slices(),
                                                                    strict=True)]
    return cases


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Classical denoisers: strength against the noise's texture", "",
             "Mean PSNR (dB) against the full dose, full range [-1024, 3072] HU, then window "
             "[-160, 240]. `xF`: the strength F times the slice's noise reading whatever its "
             "texture; `default`: the reading split by its texture into white and correlated "
             "parts, the white factor ("
             f"{result['defaults']['bm3d_white']:g} / {result['defaults']['tv_white']:g} for "
             f"BM3D / TV) on the first, the correlated one ({result['defaults']['bm3d']:g} / "
             f"{result['defaults']['tv']:g}, texture "
             f"{result['defaults']['correlated_texture']:g}) on the second, added in "
             "quadrature. `bm3d ct`: BM3D with its CT noise model (`noise_model=\"ct\"`, "
             "`lowdose denoise -m bm3d --set noise_model=ct`): the noise's power spectrum, the "
             "white part flat and the correlated part shaped like the projection physics' noise "
             "simulated on the slice at its pixel size, the reading split between them by that "
             "noise's texture, each part scaled by its share (factors "
             f"{result['defaults']['bm3d_white']:g} and {result['defaults']['bm3d_ct']:g}). "
             "Texture = noise reading of the slice binned 2x2 over that of the slice (white "
             "0.5).", ""]
    for case in result["cases"].values():
        rows = case["rows"]
        lines += [f"## {case['title']}", "",
                  f"{case['n']} slices, low-dose texture {case['texture'][0]:.2f}-"
                  f"{case['texture'][1]:.2f}.", "",
                  "| method | PSNR full | gain | PSNR window | gain |", "|---|---|---|---|---|"]
        base = rows["input"]
        for row, m in rows.items():
            label = "low-dose input" if row == "input" else row
            lines.append(f"| {label} | {m['psnr_full']:.2f} | "
                         f"{m['psnr_full'] - base['psnr_full']:+.2f} | {m['psnr_window']:.2f} | "
                         f"{m['psnr_window'] - base['psnr_window']:+.2f} |")
        lines.append("")
    real = result["real_quarter_dose_texture"]
    lines += [f"Real L506 quarter-dose slices (the `denoise_mayo.py` pairs): texture "
              f"{min(real):.2f}-{max(real):.2f}: read as correlated noise, so the correlated "
              "factors apply there, as tuned.", "", f"Machine: {result['machine']}. Written by "
              "benchmarks/classical_texture.py.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args = parse_data_args(parser, argv, DEFAULT_DATA, RESULTS,
                           needs=("mayo-l506-pairs", "ct-series-itkelastix-chest",
                                  "mayo-l067-full-dose"))
    import torch

    from lowdose.metrics.noise import RECONSTRUCTED_TEXTURE, noise_texture
    from lowdose.models import classical

    white = {"bm3d": (*BM3D_WHITE_GRID, classical.DEFAULT_BM3D_NOISE_FACTOR),
             "tv": (*TV_WHITE_GRID, classical.DEFAULT_TV_NOISE_FACTOR)}
    correlated = {"bm3d": BM3D_CORRELATED_GRID, "tv": TV_CORRELATED_GRID}
    cases = {}
    for dose in (0.25, 0.1):
        cases[f"white_{dose:g}"] = {
            "title": f"White noise: image-poisson dose {dose:g} of the L506 full-dose slices",
            **evaluate(white_cases(args.data, dose), white, f"white {dose:g}")}
    for which, title in (("itkelastix", "itkelastix chest series (2 mm), relative dose 0.25"),
                         ("l067", "Mayo L067 (1 mm, sharp kernel), relative dose 0.25")):
        cases[which] = {"title": title,
                        **evaluate(kernel_cases(args.data, which), correlated, which)}
    result = {
        "benchmark": "classical denoisers' strength against the noise's texture",
        "defaults": {"bm3d": classical.DEFAULT_BM3D_NOISE_FACTOR,
                     "tv": classical.DEFAULT_TV_NOISE_FACTOR,
                     "bm3d_white": classical.DEFAULT_BM3D_WHITE_FACTOR,
                     "bm3d_ct": classical.DEFAULT_BM3D_CT_FACTOR,
                     "tv_white": classical.DEFAULT_TV_WHITE_FACTOR,
                     "correlated_texture": RECONSTRUCTED_TEXTURE},
        "seed": SEED,
        "cases": cases,
        "real_quarter_dose_texture": [float(noise_texture(low))
                                      for _, low, _ in load_pairs(args.data)],
        "machine": f"{platform.machine()}, torch {torch.__version__}, {args.threads} threads",
    }
    write_results(args.out, "classical_texture", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
