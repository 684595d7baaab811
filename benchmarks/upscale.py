"""Super-resolution benchmark: GAN-CIRCLE x2 / x4 against bicubic and against L1-only training.

Data: the real full-dose Mayo slices of patient L506 (``mayo-l506-pairs``: the five ``*_target``
npy slices and the full-dose DICOM slice), never trained on, degraded exactly as in training
(:func:`lowdose.training.gan.degrade`: Gaussian blur sigma 0.5*s px, s x s binning, then the
``projection`` simulator at dose 0.25 on the coarse grid, seeded). Each method upscales the
coarse low-dose slice back to 512 x 512 and is scored against the full-dose slice: PSNR and SSIM
in both conventions (``full``: HU [-1024, 3072]; ``window``: [-160, 240]), mean over slices.

Methods: ``bicubic`` (the interpolation the networks start from), ``gan-circle`` (unpaired
GAN-CIRCLE weights) and ``l1-only`` (the same generator trained with the L1 term alone on aligned
pairs, no GAN ensemble). Weights: ``--model NAME:SCALE=PATH`` (defaults below).

Writes ``benchmarks/results/upscale.json`` and ``upscale.md``.

Example:
    .venv/bin/python benchmarks/upscale.py --scales 2 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_MODELS = {
    "gan-circle:2": "gan-circle",  # the shipped x2 weights
    "gan-circle:4": str(REPO / "runs" / "gan-circle-x4"),
    "l1-only:2": str(REPO / "runs" / "gan-circle-l1-x2"),
    "l1-only:4": str(REPO / "runs" / "gan-circle-l1-x4"),
}
DOSE = 0.25
PIXEL_MM = 0.7421875  # L506 PixelSpacing


def mayo_full_dose(root: Path) -> tuple[np.ndarray, list[str]]:
    """The L506 full-dose slices (HU) and their names."""
    from lowdose.io import read_ct

    pairs = root / "mayo-l506-pairs"
    names, slices = [], []
    for f in sorted((pairs / "npy").glob("*_target.npy")):
        slices.append(read_ct(f, npy_scale="mayo").hu)
        names.append(f.stem)
    for f in sorted((pairs / "dicom").glob("L506_FD_*")):
        slices.append(read_ct(f).hu)
        names.append("L506_FD_dicom")
    return np.stack(slices).astype(np.float32), names


def coarse_low_dose(full: np.ndarray, scale: int, seed: int = 0) -> torch.Tensor:
    """Blur + bin + projection low dose on the coarse grid, as in training (not bicubic'd)."""
    from lowdose.physics.api import simulate_low_dose
    from lowdose.training.gan import blur_downsample

    out = []
    for i, hu in enumerate(full):
        coarse = blur_downsample(torch.from_numpy(hu)[None, None], scale)
        out.append(simulate_low_dose(coarse, DOSE, method="projection", seed=seed + i,
                                     pixel_size_mm=PIXEL_MM * scale))
    return torch.cat(out)


def score(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    from lowdose.metrics.image import psnr, ssim

    return {
        "psnr_full": psnr(pred, target, "full"),
        "ssim_full": ssim(pred, target, "full"),
        "psnr_window": psnr(pred, target, "window"),
        "ssim_window": ssim(pred, target, "window"),
    }


def run(scales: list[int], models: dict[str, str]) -> dict:
    from lowdose.models.gan_circle import hu_to_net, load_upscaler, net_to_hu, to_fine_grid

    full, names = mayo_full_dose(DATA)
    rows = []
    for scale in scales:
        coarse = coarse_low_dose(full, scale)
        bicubic = net_to_hu(to_fine_grid(hu_to_net(coarse), scale).clamp(0, 1))[:, 0].numpy()
        rows.append({"scale": scale, "method": "bicubic", "weights": None,
                     **score(bicubic, full)})
        for method in ("gan-circle", "l1-only"):
            source = models.get(f"{method}:{scale}")
            if source is None:
                continue
            if source != "gan-circle" and not Path(source).exists():
                rows.append({"scale": scale, "method": method, "weights": source,
                             "missing": True})
                continue
            up = load_upscaler(source, scale=scale, device="cpu")
            t0 = time.perf_counter()
            pred = up.upscale(coarse)[:, 0].numpy()
            seconds = (time.perf_counter() - t0) / len(full)
            rows.append({"scale": scale, "method": method, "weights": source,
                         "cpu_s_per_slice": seconds, **score(pred, full),
                         "trained": up.metadata.get("training_summary", up.metadata)})
    return {
        "benchmark": "upscale",
        "data": "mayo-l506-pairs full-dose slices " + ", ".join(names),
        "degradation": f"Gaussian blur sigma 0.5*s px, s x s binning, projection dose {DOSE} "
                       "(seeded per slice) on the coarse grid",
        "metrics": "PSNR/SSIM vs full dose; full = HU [-1024, 3072], window = [-160, 240]",
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
    }


def markdown(result: dict) -> str:
    lines = [
        "| scale | method | PSNR full | SSIM full | PSNR window | SSIM window |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if r.get("missing"):
            lines.append(f"| x{r['scale']} | {r['method']} | not run (no weights) | | | |")
            continue
        lines.append(
            f"| x{r['scale']} | {r['method']} | {r['psnr_full']:.2f} | {r['ssim_full']:.4f} | "
            f"{r['psnr_window']:.2f} | {r['ssim_window']:.4f} |"
        )
    return (
        f"Super-resolution on {result['data']}; degradation: {result['degradation']}. "
        f"{result['metrics']}.\n\n" + "\n".join(lines) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--model", action="append", default=[],
                        help="METHOD:SCALE=PATH, e.g. l1-only:2=runs/gan-circle-l1-x2")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = dict(DEFAULT_MODELS)
    for spec in args.model:
        key, path = spec.split("=", 1)
        models[key] = path
    result = run(args.scales, models)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "upscale.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "upscale.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
