"""Super-resolution benchmark: GAN-CIRCLE x2 / x4 against bicubic and against L1-only training.

Data: the real full-dose Mayo slices of patient L506 (``mayo-l506-pairs``: the five ``*_target``
npy slices and the full-dose DICOM slice), never trained on, degraded exactly as in training
(:func:`lowdose.training.gan.degrade`: Gaussian blur sigma 0.5*s px, s x s binning, then the
``projection`` simulator at dose 0.25 on the coarse grid, seeded). Each method upscales the
coarse low-dose slice back to 512 x 512 and is scored against the full-dose slice: PSNR and SSIM
in both conventions (``full``: HU [-1024, 3072]; ``window``: [-160, 240]), mean over slices.

Methods: ``bicubic`` (the interpolation the networks start from), ``gan-circle`` (the shipped
GAN-CIRCLE weights, trained on aligned pairs), ``gan-circle-unpaired`` (the shipped x2 trained
unpaired) and ``l1-only`` (the same generator trained with the L1 term alone on aligned
pairs of the same slice pool, for the same number of steps, no GAN ensemble: runs
``runs/gan-circle-l1c-x{2,4}``, made with ``lowdose train denoiser --model gan-circle --preset
gan-circle-l1-cpu --scale S --out runs/gan-circle-l1c-xS``). Weights: ``--model
NAME:SCALE=PATH`` (defaults below).

Writes ``benchmarks/results/upscale.json`` and ``upscale.md``. With ``--seed-run`` (several
training runs of one recipe under one key) also ``upscale_seeds.json`` and ``.md``: each
method's spread over seeds, and each method minus l1-only with its standard error (``--seed-file``
names other files, e.g. for an ablation).

With ``--denoise-nps`` it also writes the no-hallucination check of the GAN denoisers beside the
supervised model on the real L506 quarter/full-dose pairs: the noise power spectrum of the
residual ``output - full dose`` in soft-tissue ROIs (32 x 32 px, half overlapping, whose
full-dose pixels all lie in [-150, 250] HU), radially averaged, and a figure of the difference
images (``output - full dose`` and ``output - low-dose input``, what the model removed) of one
slice:
``upscale_nps_denoise.json``, ``.md`` and ``.png``.

Example:
    .venv/bin/python benchmarks/upscale.py --scales 2 4
    .venv/bin/python benchmarks/upscale.py --rows gan-circle:2   # reshipped x2 weights only
    .venv/bin/python benchmarks/upscale.py --scales --denoise-nps --denoiser gan-circle \
        --denoiser cyclegan --denoiser unet
    .venv/bin/python benchmarks/upscale.py --scales --seed-run gan-circle:4=runs/gc-x4-pf1 \
        --seed-run gan-circle:4=runs/seeds/gan-x4-s1 --seed-run l1-only:4=runs/gan-circle-l1c-x4 \
        --seed-run l1-only:4=runs/seeds/l1-x4-s1   # seed spread: upscale_seeds.json / .md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from denoise_mayo import OUT_HELP, require_data

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_MODELS = {
    "gan-circle:2": "gan-circle",  # the shipped x2 weights
    "gan-circle:4": "gan-circle",  # the shipped x4 weights
    "gan-circle-unpaired:2": "gan-circle-unpaired",  # the shipped x2 trained unpaired
    "l1-only:2": str(REPO / "runs" / "gan-circle-l1c-x2"),
    "l1-only:4": str(REPO / "runs" / "gan-circle-l1c-x4"),
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


def run(scales: list[int], models: dict[str, str], kept: dict | None = None,
        only: set[str] | None = None) -> dict:
    """Score bicubic and the models at each scale.

    With ``only`` (``METHOD:SCALE`` keys) just those rows are re-evaluated; every other model
    row comes from ``kept`` (the previous result), whose bicubic rows must match the ones
    recomputed here (the same data and degradation); ``rerun_rows`` lists the rows rerun so far.
    """
    from lowdose.models.gan_circle import (
        SHIPPED_UPSCALERS,
        hu_to_net,
        load_upscaler,
        net_to_hu,
        shipped_upscalers,
        to_fine_grid,
    )

    full, names = mayo_full_dose(DATA)
    previous = {(r["scale"], r["method"]): r for r in (kept or {}).get("rows", [])}
    done = (kept or {}).get("rerun_rows", [])
    rows = []
    for scale in scales:
        coarse = coarse_low_dose(full, scale)
        bicubic = net_to_hu(to_fine_grid(hu_to_net(coarse), scale).clamp(0, 1))[:, 0].numpy()
        rows.append({"scale": scale, "method": "bicubic", "weights": None,
                     **score(bicubic, full)})
        if only is not None:
            old = previous.get((scale, "bicubic"), {}).get("psnr_full")
            if old is None or abs(old - rows[-1]["psnr_full"]) > 1e-3:
                raise SystemExit(f"x{scale} bicubic: {rows[-1]['psnr_full']:.4f} dB here, "
                                 f"{old} in the kept result: not the same benchmark")
        for method in ("gan-circle", "gan-circle-unpaired", "l1-only"):
            source = models.get(f"{method}:{scale}")
            if only is not None and f"{method}:{scale}" not in only:
                if (scale, method) in previous:
                    rows.append(previous[(scale, method)])
                continue
            if source is None:
                continue
            installed = ((source, scale) in shipped_upscalers() if source in SHIPPED_UPSCALERS
                         else Path(source).exists())
            if not installed:
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
        # rows re-evaluated after the full run (--rows), oldest first
        "rerun_rows": [*done, *(k for k in sorted(only or ()) if k not in done)],
    }


def seed_spread(runs: dict[str, list[str]]) -> dict:
    """Score several training runs of each ``METHOD:SCALE`` (seeds of one recipe) alike.

    One run per seed can tell two recipes apart only by more than the spread of either; this
    gives that spread. For every key: each run's scores and validation PSNR (from its
    ``config.json``), the mean and sample standard deviation over runs; for every other method
    at a scale with an ``l1-only`` key (``gan-circle``, or an ablation such as
    ``gan-circle-no-jst``), its difference of the means to ``l1-only`` with its standard error
    and, when both list as many runs (give them in the same seed order), seed by seed.
    """
    from lowdose.models.gan_circle import load_upscaler

    full, names = mayo_full_dose(DATA)
    groups = []
    coarse_by_scale: dict[int, torch.Tensor] = {}
    by_scale = sorted(runs.items(), key=lambda kv: (int(kv[0].rsplit(":", 1)[1]), kv[0]))
    for key, paths in by_scale:
        method, scale = key.rsplit(":", 1)
        scale = int(scale)
        if scale not in coarse_by_scale:
            coarse_by_scale[scale] = coarse_low_dose(full, scale)
        entries = []
        for path in paths:
            up = load_upscaler(path, scale=scale, device="cpu")
            summary = Path(path) / "config.json"
            val = (json.loads(summary.read_text()).get("metrics", {}).get("val/psnr_full")
                   if summary.is_file() else None)
            entries.append({"weights": path, "val_psnr_full": val,
                            **score(up.upscale(coarse_by_scale[scale])[:, 0].numpy(), full)})
        stats = {}
        for metric in ("psnr_full", "ssim_full", "psnr_window", "ssim_window"):
            values = np.array([e[metric] for e in entries])
            stats[metric] = {"mean": float(values.mean()),
                             "sd": float(values.std(ddof=1)) if len(values) > 1 else None}
        groups.append({"scale": scale, "method": method, "runs": entries, **stats})
    differences = []
    by_key = {(g["scale"], g["method"]): g for g in groups}
    for g in groups:  # every recipe against the l1-only runs of its scale
        l1 = by_key.get((g["scale"], "l1-only"))
        if g["method"] == "l1-only" or not l1:
            continue
        row = {"scale": g["scale"], "method": g["method"]}
        for metric in ("psnr_full", "psnr_window"):
            se = [h[metric]["sd"] ** 2 / len(h["runs"]) for h in (g, l1)
                  if h[metric]["sd"] is not None]
            row[metric] = {"difference": g[metric]["mean"] - l1[metric]["mean"],
                           "standard_error": float(np.sqrt(sum(se))) if len(se) == 2 else None}
            if len(g["runs"]) == len(l1["runs"]):  # given in the same seed order: paired
                row[metric]["per_seed"] = [a[metric] - b[metric]
                                           for a, b in zip(g["runs"], l1["runs"], strict=True)]
        differences.append(row)
    return {"benchmark": "upscale seed spread",
            "data": "mayo-l506-pairs full-dose slices " + ", ".join(names),
            "metrics": "PSNR/SSIM vs full dose; full = HU [-1024, 3072], window = [-160, 240]",
            "groups": groups, "minus_l1": differences}


def seed_markdown(result: dict) -> str:
    lines = ["| scale | method | runs | PSNR full | PSNR window | SSIM full | SSIM window | "
             "validation PSNR |", "|---|---|---|---|---|---|---|---|"]

    def cell(stat: dict, digits: int) -> str:
        sd = f" +- {stat['sd']:.{digits}f}" if stat["sd"] is not None else ""
        return f"{stat['mean']:.{digits}f}{sd}"

    for g in result["groups"]:
        vals = [r["val_psnr_full"] for r in g["runs"] if r["val_psnr_full"] is not None]
        val = ", ".join(f"{v:.2f}" for v in vals) or "-"
        lines.append(f"| x{g['scale']} | {g['method']} | {len(g['runs'])} | "
                     f"{cell(g['psnr_full'], 2)} | {cell(g['psnr_window'], 2)} | "
                     f"{cell(g['ssim_full'], 4)} | {cell(g['ssim_window'], 4)} | {val} |")
    diff = []
    for d in result["minus_l1"]:
        parts = []
        for metric, label in (("psnr_full", "full"), ("psnr_window", "window")):
            se = d[metric]["standard_error"]
            per_seed = d[metric].get("per_seed")
            parts.append(f"{d[metric]['difference']:+.2f} dB {label}"
                         + (f" (standard error {se:.2f})" if se is not None else "")
                         + (" (seed by seed: " + ", ".join(f"{v:+.2f}" for v in per_seed) + ")"
                            if per_seed else ""))
        diff.append(f"- x{d['scale']}: {d['method']} minus l1-only, mean over runs: "
                    + ", ".join(parts))
    return (f"Seed spread on {result['data']} (mean +- sample standard deviation over runs of "
            f"one recipe, one seed each; validation: each run's last validation PSNR, full "
            f"range). {result['metrics']}.\n\n" + "\n".join(lines) + "\n\n"
            + "\n".join(diff) + ("\n" if diff else ""))


def _rois(full: np.ndarray, size: int = 32, step: int = 16) -> list[tuple[int, int, int]]:
    """(slice, y, x) of soft-tissue ROIs: every full-dose pixel in [-150, 250] HU."""
    out = []
    for k, hu in enumerate(full):
        for y in range(0, hu.shape[0] - size + 1, step):
            for x in range(0, hu.shape[1] - size + 1, step):
                roi = hu[y : y + size, x : x + size]
                if roi.min() >= -150 and roi.max() <= 250:
                    out.append((k, y, x))
    return out


def nps(residual: np.ndarray, rois: list[tuple[int, int, int]], pixel_mm: float,
        size: int = 32) -> tuple[np.ndarray, np.ndarray, float]:
    """Radially averaged NPS (HU^2 mm^2) of ``residual`` over ``rois``; (freq, nps, std HU).

    Each ROI has its mean (and a plane fit) removed before the 2D periodogram,
    ``NPS = |FFT|^2 * dx * dy / (Nx * Ny)``, averaged over ROIs and binned by radial frequency.
    """
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    design = np.stack([np.ones(size * size), yy.ravel(), xx.ravel()], axis=1)
    acc = np.zeros((size, size))
    stds = []
    for k, y, x in rois:
        roi = residual[k, y : y + size, x : x + size].astype(np.float64)
        coef, *_ = np.linalg.lstsq(design, roi.ravel(), rcond=None)
        roi = roi - (design @ coef).reshape(size, size)
        stds.append(roi.std())
        acc += np.abs(np.fft.fft2(roi)) ** 2
    acc *= pixel_mm * pixel_mm / (size * size) / max(1, len(rois))
    freq = np.fft.fftfreq(size, d=pixel_mm)
    fr = np.sqrt(freq[:, None] ** 2 + freq[None, :] ** 2)
    bins = np.linspace(0, fr.max(), size // 2 + 1)
    idx = np.digitize(fr.ravel(), bins) - 1
    radial = np.array([acc.ravel()[idx == i].mean() if (idx == i).any() else 0.0
                       for i in range(len(bins) - 1)])
    centres = 0.5 * (bins[1:] + bins[:-1])
    return centres, radial, float(np.sqrt(np.mean(np.square(stds))))


def denoise_nps(denoisers: list[str], out: Path) -> dict:
    """NPS of ``output - full dose`` and the difference-image figure on the real L506 pairs."""
    import importlib.util

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lowdose.models.loading import load_denoiser

    spec = importlib.util.spec_from_file_location("denoise_mayo", REPO / "benchmarks" /
                                                  "denoise_mayo.py")
    assert spec is not None and spec.loader is not None
    mayo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mayo)
    pairs = mayo.load_pairs(DATA)
    low = np.stack([p[1] for p in pairs])
    full = np.stack([p[2] for p in pairs])
    rois = _rois(full)
    outputs = {"low-dose input": low}
    for spec in denoisers:
        name, _, source = spec.partition("=")  # "LABEL=PATH" or a name
        d = load_denoiser(source or name, device="cpu")
        with torch.inference_mode():
            outputs[name] = np.stack([
                d.denoise(torch.from_numpy(x)[None, None])[0, 0].numpy() for x in low
            ])
    curves = {}
    for name, pred in outputs.items():
        f, p, std = nps(pred - full, rois, PIXEL_MM)
        mean_f = float((f * p).sum() / max(p.sum(), 1e-12))
        curves[name] = {"freq_per_mm": f.tolist(), "nps_hu2_mm2": p.tolist(),
                        "residual_std_hu": std, "mean_frequency_per_mm": mean_f}
    k = 1  # one slice for the figure
    cols = len(outputs)
    fig, axes = plt.subplots(3, cols, figsize=(3 * cols, 9.4))
    crop = (slice(96, 416), slice(96, 416))
    for j, (name, pred) in enumerate(outputs.items()):
        axes[0, j].imshow(pred[k][crop], cmap="gray", vmin=-160, vmax=240)
        axes[0, j].set_title(name, fontsize=9)
        axes[1, j].imshow((pred - full)[k][crop], cmap="RdBu_r", vmin=-100, vmax=100)
        axes[1, j].set_title("output - full dose", fontsize=8)
        axes[2, j].imshow((pred - low)[k][crop], cmap="RdBu_r", vmin=-100, vmax=100)
        axes[2, j].set_title("output - low dose (removed)", fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(f"L506 pair {pairs[k][0]}: window [-160, 240] HU; differences +-100 HU")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "upscale_nps_denoise.png", dpi=80)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in curves.items():
        ax.semilogy(c["freq_per_mm"], np.maximum(c["nps_hu2_mm2"], 1e-3), label=name)
    ax.set_xlabel("spatial frequency (1/mm)")
    ax.set_ylabel("NPS of output - full dose (HU^2 mm^2)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "upscale_nps_denoise_curves.png", dpi=80)
    plt.close(fig)
    result = {"benchmark": "denoise NPS and difference images (GAN vs supervised)",
              "pairs": [p[0] for p in pairs], "n_rois": len(rois), "roi": "32x32 px, half "
              "overlapping, full-dose pixels all in [-150, 250] HU", "pixel_mm": PIXEL_MM,
              "curves": curves}
    lines = ["| method | residual std in soft tissue (HU) | NPS mean frequency (1/mm) |",
             "|---|---|---|"]
    for name, c in curves.items():
        lines.append(f"| {name} | {c['residual_std_hu']:.1f} | "
                     f"{c['mean_frequency_per_mm']:.3f} |")
    (out / "upscale_nps_denoise.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "upscale_nps_denoise.md").write_text(
        f"Residual (output - full dose) on {len(rois)} soft-tissue ROIs (32x32 px) of the "
        "real L506 pairs; figures: upscale_nps_denoise.png (difference images), "
        "upscale_nps_denoise_curves.png (NPS).\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


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
    rerun = result.get("rerun_rows")
    note = (f"\nRows re-evaluated later with `--rows` (new weights): {', '.join(rerun)}; the "
            "others are kept from the full run.\n" if rerun else "")
    return (
        f"Super-resolution on {result['data']}; degradation: {result['degradation']}. "
        f"{result['metrics']}.\n\n" + "\n".join(lines) + "\n" + note
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="*", default=[2, 4],
                        help="upscaling factors to benchmark; none: only --seed-run or "
                        "--denoise-nps (default: %(default)s)")
    parser.add_argument("--denoise-nps", action="store_true",
                        help="also write the NPS / difference-image check of the denoisers")
    parser.add_argument("--denoiser", action="append", default=[],
                        help="denoiser name, weight file or LABEL=PATH for --denoise-nps "
                        "(repeatable)")
    parser.add_argument("--model", action="append", default=[],
                        help="METHOD:SCALE=PATH, e.g. l1-only:2=runs/gan-circle-l1-x2")
    parser.add_argument("--rows", action="append", default=None,
                        help="re-evaluate only METHOD:SCALE (repeatable, e.g. gan-circle:2); "
                        "the other rows are kept from the previous upscale.json")
    parser.add_argument("--seed-run", action="append", default=[],
                        help="METHOD:SCALE=RUN, repeatable with one key for several seeds: "
                        "also write the seed spread (upscale_seeds.json / .md, or --seed-file)")
    parser.add_argument("--seed-file", default="upscale_seeds",
                        help="file stem of the --seed-run results (e.g. upscale_ablation_x4)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=OUT_HELP)
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads for torch (default: %(default)s)")
    args = parser.parse_args()
    require_data(DATA, ("mayo-l506-pairs",))
    torch.set_num_threads(args.threads)
    models = dict(DEFAULT_MODELS)
    for spec in args.model:
        key, path = spec.split("=", 1)
        models[key] = path
    if args.scales:
        kept = None
        if args.rows:
            kept = json.loads((args.out / "upscale.json").read_text())
            args.scales = sorted({r["scale"] for r in kept["rows"]})
        result = run(args.scales, models, kept, set(args.rows) if args.rows else None)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "upscale.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "upscale.md").write_text(markdown(result))
        print(markdown(result))
    if args.seed_run:
        runs: dict[str, list[str]] = {}
        for spec in args.seed_run:
            key, path = spec.split("=", 1)
            runs.setdefault(key, []).append(path)
        spread = seed_spread(runs)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.seed_file}.json").write_text(json.dumps(spread, indent=2) + "\n")
        (args.out / f"{args.seed_file}.md").write_text(seed_markdown(spread))
        print(seed_markdown(spread))
    if args.denoise_nps:
        denoise_nps(args.denoiser or ["gan-circle", "cyclegan", "unet"], args.out)


if __name__ == "__main__":
    main()
