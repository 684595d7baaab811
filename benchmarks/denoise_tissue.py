"""Where each denoiser's error lies on the real AAPM-Mayo L506 pairs: RMSE by tissue (a benchmark).

PSNR over a whole slice mixes the air around the patient, lung, soft tissue and bone, and on
these slices half the pixels lie outside the body. This script splits the error of every
registered denoiser (default settings, as `lowdose denoise` runs them) and of the unrestored
quarter dose by the tissue of the full-dose reference (`lowdose.metrics.image.tissue_masks`:
outside the body, which holds the couch; lung and gas, with their small vessels; soft tissue;
bone; both images clipped to the full range [-1024, 3072] HU). A tissue whose error a denoiser
leaves at or above the input's on some pair is where it removes no noise, or reshapes structure
as much as it removes noise. The figure shows the 128 px window of the pair with the most bone,
each output and each output minus the full dose.

Writes ``benchmarks/results/denoise_tissue.{json,md,png}``; the README quotes the table.

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


def tissue_errors(label: str, denoiser: Any, pairs: list[tuple[str, np.ndarray, np.ndarray]],
                  masks: dict[str, dict[str, np.ndarray]], keep: str
                  ) -> tuple[dict[str, dict[str, float]], np.ndarray]:
    """Per pair, the RMSE in HU of each tissue (``masks``: each pair's reference tissues;
    ``denoiser`` None: the input itself), and the output on pair ``keep`` (for the figure)."""
    import torch

    from lowdose.metrics.image import rmse_hu_by_tissue

    print(f"evaluating {label}", flush=True)
    per_pair, kept = {}, None
    for name, low, full in pairs:
        out = low
        if denoiser is not None:
            with torch.inference_mode():
                out = denoiser.denoise(torch.from_numpy(low)[None, None])[0, 0].numpy()
        per_pair[name] = rmse_hu_by_tissue(out, full, masks[name])
        if name == keep:
            kept = out
    return per_pair, kept


def bone_crop(bone: np.ndarray, size: int = 128) -> tuple[slice, slice]:
    """The ``size`` x ``size`` window holding the most of the ``bone`` mask (fine,
    high-contrast structure, where the GANs' error stays at the input's)."""
    from scipy import ndimage

    density = ndimage.uniform_filter(bone.astype(np.float64), size)
    half = size // 2
    inner = density[half:-half, half:-half]  # windows that fit inside the slice
    y, x = np.unravel_index(int(np.argmax(inner)), inner.shape)
    return slice(y, y + size), slice(x, x + size)


def figure(full: np.ndarray, bone: np.ndarray, outputs: dict[str, np.ndarray], pair: str,
           path: Path) -> None:
    """Crops of the full dose and each output (window [-500, 1300] HU), and each output minus
    the full dose (+-100 HU): what every method does to bone and its edges."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = bone_crop(bone)
    labels = list(outputs)
    fig, axes = plt.subplots(2, len(labels) + 1, figsize=(2.2 * (len(labels) + 1), 4.8))
    axes[0, 0].imshow(full[rows, cols], cmap="gray", vmin=-500, vmax=1300)
    axes[0, 0].set_title("full dose", fontsize=8)
    axes[1, 0].axis("off")
    axes[1, 0].text(0.0, 0.5, f"{pair}\nrow: window\n[-500, 1300] HU\n\n"
                    "row: minus full dose\n[-100, 100] HU", fontsize=8, va="center")
    for i, label in enumerate(labels, start=1):
        crop = outputs[label][rows, cols]
        axes[0, i].imshow(crop, cmap="gray", vmin=-500, vmax=1300)
        axes[0, i].set_title(label, fontsize=8)
        axes[1, i].imshow(crop - full[rows, cols], cmap="RdBu_r", vmin=-100, vmax=100)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def summarise(per_method: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Mean RMSE over pairs per tissue, its ratio to the input's, and the pairs where a method
    leaves a tissue's error at or above the input's."""
    base = per_method[INPUT]
    names = list(base)
    tissues = list(next(iter(base.values())))
    summary = {}
    for method, per_pair in per_method.items():
        row = {}
        for t in tissues:
            mean = float(np.mean([per_pair[n][t] for n in names]))
            row[t] = {
                "rmse_hu": mean,
                "ratio_to_input": mean / float(np.mean([base[n][t] for n in names])),
                "pairs_not_below_input": [n for n in names if per_pair[n][t] >= base[n][t]],
            }
        summary[method] = row
    return summary


def markdown(result: dict[str, Any]) -> str:
    tissues = list(result["tissue_fraction"])
    lines = [
        "# Error by tissue on the real AAPM-Mayo L506 pairs",
        "",
        f"Pairs: {', '.join(result['pairs'])}. RMSE in HU within each tissue of the full-dose "
        "reference (`lowdose.metrics.image.tissue_masks`: outside the body, with the couch; "
        "lung and gas, with their small vessels, inside the body where the reference smoothed "
        "over 2 px is below -400 HU; the rest of the body below 300 HU, soft tissue, and from "
        "300 HU, bone; " + ", ".join(
            f"{t} {100 * f:.1f}%" for t, f in result["tissue_fraction"].items())
        + " of the pixels), both images clipped to [-1024, 3072] HU; mean over pairs, then the "
        "ratio to the unrestored input's. `not below input`: pairs on which the tissue's error "
        "is at or above the input's. Denoisers at their defaults (as `lowdose denoise` runs "
        "them).",
        "",
        "| method | " + " | ".join(f"{t} RMSE (HU) | x input" for t in tissues)
        + " | not below input |",
        "|---|" + "---|---|" * len(tissues) + "---|",
    ]
    for method, row in result["methods"].items():
        worse = [f"{t} {len(row[t]['pairs_not_below_input'])}/{len(result['pairs'])}"
                 for t in tissues if row[t]["pairs_not_below_input"]]
        cells = " | ".join(f"{row[t]['rmse_hu']:.1f} | {row[t]['ratio_to_input']:.2f}"
                           for t in tissues)
        note = "–" if method == INPUT else (", ".join(worse) or "none")
        lines.append(f"| {method} | {cells} | {note} |")
    lines += ["", f"Figure: benchmarks/results/denoise_tissue.png (the 128 px window of pair "
              f"{result['figure']['pair']} with the most bone: each output, then each output "
              "minus the full dose).", "",
              f"Machine: {result['machine']}. Written by benchmarks/denoise_tissue.py.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args = parse_data_args(parser, argv, DEFAULT_DATA, RESULTS, needs=("mayo-l506-pairs",))
    import torch

    from lowdose.errors import LowdoseError
    from lowdose.metrics.image import TISSUES, tissue_masks
    from lowdose.models.base import denoisers

    pairs = load_pairs(args.data)
    masks = {name: tissue_masks(full) for name, _, full in pairs}
    shown = max(masks, key=lambda name: int(masks[name]["bone"].sum()))  # the figure's pair
    per_method, outputs = {}, {}
    per_method[INPUT], outputs[INPUT] = tissue_errors(INPUT, None, pairs, masks, shown)
    skipped = {}
    for name in denoisers.names():
        try:
            denoiser = load_row(name)
        except LowdoseError as err:  # e.g. an optional package missing
            skipped[name] = str(err)
            continue
        per_method[name], outputs[name] = tissue_errors(name, denoiser, pairs, masks, shown)
    figure(next(p[2] for p in pairs if p[0] == shown), masks[shown]["bone"], outputs, shown,
           args.out / "denoise_tissue.png")
    fraction = {t: float(np.mean([m[t].mean() for m in masks.values()])) for t in TISSUES}
    result = {
        "benchmark": "RMSE by tissue of the full-dose reference, real L506 pairs",
        "pairs": [p[0] for p in pairs],
        "tissues": "lowdose.metrics.image.tissue_masks of the full dose",
        "tissue_fraction": fraction,
        "clip_hu": [-1024.0, 3072.0],
        "methods": summarise(per_method),
        "per_pair": per_method,
        "skipped": skipped,
        "figure": {"file": "denoise_tissue.png", "pair": shown},
        "machine": f"{platform.machine()}, torch {torch.__version__}, {args.threads} threads",
    }
    write_results(args.out, "denoise_tissue", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
