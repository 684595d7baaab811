"""Where each denoiser's error lies on the real AAPM-Mayo L506 pairs: RMSE by tissue (a benchmark).

PSNR over a whole slice mixes air, lung, soft tissue and bone, and on these slices half the
pixels are air. This script splits the error of every registered denoiser (default settings, as
`lowdose denoise` runs them) and of the unrestored quarter dose by the tissue band of the
full-dose reference (`lowdose.metrics.image.TISSUE_BANDS_HU`: air below -900 HU, lung -900 to
-500, soft tissue -500 to 300, bone from 300; both images clipped to the full range [-1024, 3072]
HU). A band whose error a denoiser leaves at or above the input's on some pair is where it
removes no noise, or reshapes structure as much as it removes noise.

Writes ``benchmarks/results/denoise_tissue.{json,md}``; the README quotes the table.

Example:
    .venv/bin/python benchmarks/denoise_tissue.py
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from denoise_mayo import DEFAULT_DATA, RESULTS, load_pairs, load_row, parse_data_args, write_results

INPUT = "low-dose input"


def tissue_errors(label: str, denoiser: Any, pairs: list[tuple[str, np.ndarray, np.ndarray]]
                  ) -> dict[str, dict[str, float]]:
    """Per pair, the RMSE in HU of each tissue band (``denoiser`` None: the input itself)."""
    import torch

    from lowdose.metrics.image import rmse_hu_by_tissue

    print(f"evaluating {label}", flush=True)
    per_pair = {}
    for name, low, full in pairs:
        out = low
        if denoiser is not None:
            with torch.inference_mode():
                out = denoiser.denoise(torch.from_numpy(low)[None, None])[0, 0].numpy()
        per_pair[name] = rmse_hu_by_tissue(out, full)
    return per_pair


def summarise(per_method: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Mean RMSE over pairs per band, its ratio to the input's, and the pairs where a method
    leaves a band's error at or above the input's."""
    base = per_method[INPUT]
    names = list(base)
    bands = list(next(iter(base.values())))
    summary = {}
    for method, per_pair in per_method.items():
        row = {}
        for band in bands:
            values = [per_pair[n][band] for n in names]
            mean = float(np.mean(values))
            row[band] = {
                "rmse_hu": mean,
                "ratio_to_input": mean / float(np.mean([base[n][band] for n in names])),
                "pairs_not_below_input": [n for n in names if per_pair[n][band] >= base[n][band]],
            }
        summary[method] = row
    return summary


def _band_text(low: float | None, high: float | None) -> str:
    """``below -900 HU``, ``-900 to -500 HU`` or ``from 300 HU`` (None: unbounded)."""
    if low is None:
        return f"below {high:g} HU"
    return f"from {low:g} HU" if high is None else f"{low:g} to {high:g} HU"


def markdown(result: dict[str, Any]) -> str:
    bands = list(result["band_fraction"])
    lines = [
        "# Error by tissue on the real AAPM-Mayo L506 pairs",
        "",
        f"Pairs: {', '.join(result['pairs'])}. RMSE in HU within each band of the full-dose "
        "reference's HU (" + "; ".join(
            f"{b} {_band_text(lo, hi)}, {100 * result['band_fraction'][b]:.0f}% of the pixels"
            for b, (lo, hi) in result["bands_hu"].items()) + "), both images clipped to "
        "[-1024, 3072] HU; mean over pairs, then the ratio to the unrestored input's. "
        "`not below input`: pairs on which the band's error is at or above the input's. "
        "Denoisers at their defaults (as `lowdose denoise` runs them).",
        "",
        "| method | " + " | ".join(f"{b} RMSE (HU) | x input" for b in bands)
        + " | not below input |",
        "|---|" + "---|---|" * len(bands) + "---|",
    ]
    for method, row in result["methods"].items():
        worse = [f"{b} {len(row[b]['pairs_not_below_input'])}/{len(result['pairs'])}"
                 for b in bands if row[b]["pairs_not_below_input"]]
        cells = " | ".join(f"{row[b]['rmse_hu']:.1f} | {row[b]['ratio_to_input']:.2f}"
                           for b in bands)
        note = "–" if method == INPUT else (", ".join(worse) or "none")
        lines.append(f"| {method} | {cells} | {note} |")
    lines += ["", f"Machine: {result['machine']}. Written by benchmarks/denoise_tissue.py.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args = parse_data_args(parser, argv, DEFAULT_DATA, RESULTS)
    if args is None:
        return 0
    if not (args.data / "mayo-l506-pairs").is_dir():
        print(f"skipped: {args.data / 'mayo-l506-pairs'} not found", file=sys.stderr)
        return 0
    import torch

    from lowdose.errors import LowdoseError
    from lowdose.metrics.image import TISSUE_BANDS_HU
    from lowdose.models.base import denoisers

    pairs = load_pairs(args.data)
    per_method = {INPUT: tissue_errors(INPUT, None, pairs)}
    skipped = {}
    for name in denoisers.names():
        try:
            denoiser = load_row(name)
        except LowdoseError as err:  # e.g. an optional package missing
            skipped[name] = str(err)
            continue
        per_method[name] = tissue_errors(name, denoiser, pairs)
    fraction = {b: float(np.mean([((full >= lo) & (full < hi)).mean() for _, _, full in pairs]))
                for b, (lo, hi) in TISSUE_BANDS_HU.items()}
    result = {
        "benchmark": "RMSE by tissue band of the full-dose reference, real L506 pairs",
        "pairs": [p[0] for p in pairs],
        "bands_hu": {b: [float(v) if np.isfinite(v) else None for v in band]  # None: open
                     for b, band in TISSUE_BANDS_HU.items()},
        "band_fraction": fraction,
        "clip_hu": [-1024.0, 3072.0],
        "methods": summarise(per_method),
        "per_pair": per_method,
        "skipped": skipped,
        "machine": f"{platform.machine()}, torch {torch.__version__}, {args.threads} threads",
    }
    write_results(args.out, "denoise_tissue", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
