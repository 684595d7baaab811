"""How much PSNR any denoiser can gain on the real AAPM-Mayo L506 pairs (a benchmark, not a test).

The full-dose reference carries its own noise, so a perfect denoiser still scores a finite PSNR
against it. This script measures, in flat soft-tissue regions of each pair, how the quarter-dose
(QD) and full-dose (FD) noise relate and what that implies for the attainable gain:

- ``slope``: the regression slope of the high-passed QD pixels on the high-passed FD pixels
  (high pass: image minus its Gaussian blur, sigma 2 px, where anatomy contributes little):
  1 if QD = FD + independent noise, near 0 for two separate scans. 0.83-0.88 on these pairs: the
  Mayo quarter dose is the full-dose scan with noise *inserted*, not a second scan.
- ``ratio`` r = Var(hp(QD - FD)) / Var(hp FD): the inserted noise power over the full-dose noise
  power (r = 3 for an ideal quarter dose without electronic noise). Var(hp FD) still holds some
  anatomy, so r, and both ceilings below, are conservative (lower bounds).
- ``ceiling_truth_db`` = 10 log10(r): the gain of a denoiser that returns the noise-free image.
- ``ceiling_mmse_db`` = 10 log10(1 + r): the gain of the best possible estimate of the *full-dose
  image* from the quarter dose (it keeps the part of the full-dose noise the input predicts);
  10 log10(4) = 6.0 dB for an ideal quarter dose. This is the ceiling of PSNR against FD.

Both assume that the inserted and the full-dose noise have the same spectral shape (the Mayo
insertion models the scanner's noise), so the high-pass ratio holds for the whole band.

Writes ``benchmarks/results/noise_ceiling.{json,md}``; the README quotes the table.

Example:
    .venv/bin/python benchmarks/noise_ceiling.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from denoise_mayo import (
    DEFAULT_DATA,
    OUT_HELP,
    RESULTS,
    load_pairs,
    require_data,
    write_results,
)

HIGH_PASS_SIGMA_PX = 2.0
SOFT_TISSUE_HU = (-100.0, 150.0)
MAX_GRADIENT_HU_PER_PX = 5.0


def flat_soft_tissue(full_hu: np.ndarray) -> np.ndarray:
    """Mask of flat soft tissue: smoothed HU in SOFT_TISSUE_HU, small gradient, eroded 5 px."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(full_hu, 3.0)
    gradient = ndimage.gaussian_gradient_magnitude(full_hu, 3.0)
    mask = (smooth > SOFT_TISSUE_HU[0]) & (smooth < SOFT_TISSUE_HU[1])
    mask &= gradient < MAX_GRADIENT_HU_PER_PX
    return ndimage.binary_erosion(mask, iterations=5)


def high_pass(image: np.ndarray) -> np.ndarray:
    """``image`` minus its Gaussian blur (sigma HIGH_PASS_SIGMA_PX px) over its last two axes."""
    from scipy import ndimage

    image = np.asarray(image, np.float64)
    sigma = (0.0,) * (image.ndim - 2) + (HIGH_PASS_SIGMA_PX, HIGH_PASS_SIGMA_PX)
    return image - ndimage.gaussian_filter(image, sigma)


def pair_ceiling(low_hu: np.ndarray, full_hu: np.ndarray) -> dict[str, float]:
    """Noise relation and PSNR ceilings of one quarter/full-dose pair (see the module text)."""

    low = low_hu.astype(np.float64)
    full = full_hu.astype(np.float64)
    mask = flat_soft_tissue(full)
    if mask.sum() < 1000:
        raise ValueError(f"only {int(mask.sum())} flat soft-tissue pixels: too few to measure")
    high_low = high_pass(low)[mask]
    high_full = high_pass(full)[mask]
    inserted_var = float(np.var(high_low - high_full))
    full_var = float(np.var(high_full))
    ratio = inserted_var / full_var
    return {
        "pixels": int(mask.sum()),
        "slope": float(
            np.mean((high_low - high_low.mean()) * (high_full - high_full.mean())) / full_var
        ),
        "hp_std_low_hu": float(np.std(high_low)),
        "hp_std_full_hu": float(np.sqrt(full_var)),
        "ratio": ratio,
        "ceiling_truth_db": float(10 * np.log10(ratio)),
        "ceiling_mmse_db": float(10 * np.log10(1 + ratio)),
    }


def best_measured_gains() -> dict[str, dict[str, float]]:
    """Per-pair full-range PSNR gain of each method in ``denoise_mayo.json`` (if it exists)."""
    path = RESULTS / "denoise_mayo.json"
    if not path.is_file():
        return {}
    methods = json.loads(path.read_text())["methods"]
    base = methods["low-dose input"]["per_pair"]
    return {
        name: {
            pair: m["per_pair"][pair]["psnr_full"] - base[pair]["psnr_full"]
            for pair in base
            if pair in m["per_pair"]
        }
        for name, m in methods.items()
        if name != "low-dose input"
    }


def markdown(result: dict) -> str:
    lines = [
        "# PSNR ceiling on the real AAPM-Mayo L506 pairs",
        "",
        "Measured by `benchmarks/noise_ceiling.py` in flat soft tissue (high pass: image minus "
        f"Gaussian blur, sigma {HIGH_PASS_SIGMA_PX:g} px). slope = regression slope of the "
        "quarter-dose noise on the full-dose noise (1: the quarter dose is the full-dose scan "
        "with noise "
        "inserted; 0: a separate scan); "
        "r = inserted / full-dose noise power; ceilings are lower bounds: 10 log10(r) for a "
        "denoiser returning the noise-free image, 10 log10(1 + r) for the best estimate of the "
        "full-dose image (the PSNR reference). Best measured = the best full-range gain of any "
        "method in `benchmarks/denoise_mayo.py` on that pair (the mean row averages these "
        "per-pair bests).",
        "",
        "| pair | slope | noise std QD / FD (HU, high pass) | r | ceiling truth | ceiling vs FD "
        "| best measured (method) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in result["pairs"].items():
        best = row.get("best_measured")
        best_text = f"{best['gain_db']:+.2f} dB ({best['method']})" if best else "n/a"
        lines.append(
            f"| {name} | {row['slope']:.2f} | {row['hp_std_low_hu']:.1f} / "
            f"{row['hp_std_full_hu']:.1f} | {row['ratio']:.2f} | +{row['ceiling_truth_db']:.2f} dB "
            f"| +{row['ceiling_mmse_db']:.2f} dB | {best_text} |"
        )
    mean = result["mean"]
    lines += [
        f"| **mean** | {mean['slope']:.2f} | | {mean['ratio']:.2f} | "
        f"+{mean['ceiling_truth_db']:.2f} dB | +{mean['ceiling_mmse_db']:.2f} dB | "
        + (f"{mean['best_measured_db']:+.2f} dB |" if "best_measured_db" in mean else "n/a |"),
        "",
        "Written by benchmarks/noise_ceiling.py.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="the shared data folder, holding mayo-l506-pairs "
                        "(default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=OUT_HELP)
    args = parser.parse_args(argv)
    require_data(args.data, ("mayo-l506-pairs",))

    gains = best_measured_gains()
    pairs = {}
    for name, low, full in load_pairs(args.data):
        row = pair_ceiling(low, full)
        measured = {m: g[name] for m, g in gains.items() if name in g}
        if measured:
            method = max(measured, key=measured.get)
            row["best_measured"] = {"method": method, "gain_db": measured[method]}
        pairs[name] = row
        print(
            f"{name}: slope {row['slope']:.2f} r {row['ratio']:.2f} ceiling "
            f"+{row['ceiling_mmse_db']:.2f} dB",
            flush=True,
        )
    keys = ("slope", "ratio", "ceiling_truth_db", "ceiling_mmse_db")
    mean = {k: float(np.mean([p[k] for p in pairs.values()])) for k in keys}
    if all("best_measured" in p for p in pairs.values()):
        mean["best_measured_db"] = float(
            np.mean([p["best_measured"]["gain_db"] for p in pairs.values()])
        )
    result = {
        "benchmark": "noise_ceiling",
        "convention": "full: HU clipped to [-1024, 3072]",
        "high_pass_sigma_px": HIGH_PASS_SIGMA_PX,
        "pairs": pairs,
        "mean": mean,
    }
    write_results(args.out, "noise_ceiling", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
