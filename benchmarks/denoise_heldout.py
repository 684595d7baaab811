"""Learned denoisers on the training data's held-out slices (a benchmark, not a test).

Choosing between two fine-tunes of one model must not look at the test pairs (L506). This script
scores weight files on the slices `lowdose train denoiser` holds out for validation: the same
full-dose sets as the shipped `unet`, the same artifact filter and split (4 slices spread over
the kept ones), low dose simulated as in training (projection physics, a quarter of each slice's
own dose), every noise draw of each slice, whole 512x512 slices. A seed gives its own draws, so
several seeds give independent sets; the trainer's own validation (centre crops of one draw) is
too small to separate models a few hundredths of a dB apart.

PSNR of HU clipped to [-1024, 3072] scaled to [0, 1] (the full-range convention), mean over
slices and draws. Writes ``benchmarks/results/denoise_heldout.{json,md}``.

Example:
    git show 1601cc7:src/lowdose/weights/unet.safetensors > /tmp/unet-stage4.safetensors
    .venv/bin/python benchmarks/denoise_heldout.py --seed 3 --seed 4 \\
        --model stage-4=/tmp/unet-stage4.safetensors --model unet
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from denoise_mayo import DEFAULT_DATA, RESULTS, parse_data_args, write_results

TRAINING_SETS = ("mayo-l067-full-dose", "ct-series-itkelastix-chest", "chest-ct-dicom/*/axial",
                 "chest-ct-dicom/A072894/*.dcm")  # the shipped unet's (see its card)


def held_out_pairs(data: Path, seed: int, cache: Path, preset: str) -> dict[str, Any]:
    """The held-out full-dose slices and their simulated draws, as a training run of ``seed``."""
    from lowdose.training.denoising import load_preset, simulated_pairs, validation_indices

    dc = load_preset(preset, model="unet", data={"dose": [0.25], "relative_dose": True}).data
    full, low, names, _, _ = simulated_pairs([data / s for s in TRAINING_SETS], dc, seed, cache)
    from lowdose.metrics.image import psnr

    val = validation_indices(len(full), dc.val_slices)
    input_psnr = [psnr(draw, full[i], "full") for i in val for draw in low[i]]
    return {"names": [names[i] for i in val], "full": [full[i] for i in val],
            "low": [low[i] for i in val], "psnr_full_input": float(np.mean(input_psnr))}


def score(spec: str, pairs: dict[str, Any]) -> dict[str, float]:
    """Mean PSNR of a model (a name or a weight file) over every held-out draw, beside the
    input's (scored once per seed by :func:`held_out_pairs`)."""
    import torch

    from lowdose.metrics.image import psnr
    from lowdose.models.loading import load_denoiser

    model = load_denoiser(spec, device="cpu")
    out = []
    for full, draws in zip(pairs["full"], pairs["low"], strict=True):
        for low in draws:
            with torch.no_grad():
                x = torch.from_numpy(np.ascontiguousarray(low, np.float32))[None, None]
                restored = model.denoise(x).numpy()[0, 0]
            out.append(psnr(restored, full, "full"))
    return {"psnr_full": float(np.mean(out)), "psnr_full_input": pairs["psnr_full_input"],
            "n": len(out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, action="append", required=True,
                        help="a training seed whose noise draws to use (repeatable)")
    parser.add_argument("--model", action="append", required=True,
                        help="a denoiser name or LABEL=WEIGHT_FILE (repeatable)")
    parser.add_argument("--preset", default="cpu-finetune",
                        help="the training preset whose data settings to mirror")
    parser.add_argument("--cache", type=Path, default=Path("runs/heldout-cache"),
                        help="where the simulated draws are kept (per seed)")
    args = parse_data_args(parser, argv, DEFAULT_DATA, RESULTS,
                           needs=tuple(s.split("/")[0] for s in TRAINING_SETS))
    models = [m.split("=", 1) if "=" in m else [m, m] for m in args.model]
    rows: dict[str, dict[str, Any]] = {label: {} for label, _ in models}
    names: list[str] = []
    for seed in args.seed:
        pairs = held_out_pairs(args.data, seed, args.cache / f"seed-{seed}", args.preset)
        names = pairs["names"]
        for label, spec in models:
            rows[label][str(seed)] = score(spec, pairs)
            print(f"seed {seed} {label}: {rows[label][str(seed)]['psnr_full']:.4f} dB")
    seeds = [str(s) for s in args.seed]
    first = rows[models[0][0]]
    lines = ["# Learned denoisers on held-out training slices", "",
             f"Held-out slices: {', '.join(Path(n).name for n in names)}; every noise draw of "
             f"each (n = {first[seeds[0]]['n']} per seed), whole slices, low dose as in "
             f"training (preset {args.preset}, projection physics, relative quarter dose). "
             "PSNR full range ([-1024, 3072] HU to [0, 1]), mean.", "",
             "| model | " + " | ".join(f"PSNR, draws of seed {s}" for s in seeds) + " |",
             "|---|" + "---|" * len(seeds),
             "| low-dose input | " + " | ".join(f"{first[s]['psnr_full_input']:.3f}"
                                                for s in seeds) + " |"]
    lines += [f"| {label} | " + " | ".join(f"{rows[label][s]['psnr_full']:.3f}" for s in seeds)
              + " |" for label, _ in models]
    machine = f"{platform.machine()}, {args.threads} threads"
    lines += ["", f"Machine: {machine}. Written by benchmarks/denoise_heldout.py.", ""]
    result = {"benchmark": "denoise_heldout", "held_out": names, "preset": args.preset,
              "models": dict(models), "rows": rows, "machine": machine}
    write_results(args.out, "denoise_heldout", result, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
