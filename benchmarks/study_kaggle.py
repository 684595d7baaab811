"""The full study on the Kaggle Chest CT-Scan images (real data; a benchmark, not a test).

Steps:
1. ``lowdose data audit``: the de-duplicated split (test images seen in train or valid leave
   test; images filed under two classes are dropped). Reused if already written.
2. Model selection a user can trust: the official valid split is mostly near-copies of train,
   so train + valid are pooled and a stratified 20% is held out for validation, **grouped by
   near-duplicate cluster** (copies never straddle the two). The test split stays untouched.
3. ``run_study`` with the ``kaggle`` preset: DenseNet-121 from scratch (CPU preset, 128 px, body
   crop, per-image percentile intensity, CT augmentation), every registered simulation method,
   the chosen denoisers, doses 1 / 0.5 / 0.25 / 0.1.
4. Extra seeds (``--seeds``): the classifier retrained with other seeds and evaluated on the
   full-dose test split only, for the stability across seeds.

Writes ``OUT/results.json``, ``OUT/report.html`` and ``benchmarks/results/study_kaggle.{json,md}``
(the Markdown table quoted in the README). Resumable: rerun the same command.

Example:
    nohup .venv/bin/python benchmarks/study_kaggle.py --out runs/kaggle-study \\
        > runs/kaggle-study.log 2>&1 &
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "chest-ctscan-images"
RESULTS = REPO / "benchmarks" / "results"


def audit(data: Path, out: Path) -> tuple[Path, dict]:
    """The audit JSON and de-duplicated manifest (written once, then reused)."""
    manifest, report = out / "dedup.csv", out / "audit.json"
    if not (manifest.is_file() and report.is_file()):
        import subprocess

        subprocess.run([str(REPO / ".venv" / "bin" / "lowdose"), "data", "audit", str(data),
                        "--json", str(report), "--write-manifest", str(manifest)], check=True)
    return manifest, json.loads(report.read_text())


def grouped_selection_manifest(manifest: Path, audit_json: dict, out: Path, seed: int,
                               fraction: float = 0.2) -> Path:
    """Pool train+valid, hold out ``fraction`` per class grouped by near-duplicate cluster."""
    rows = list(csv.DictReader(manifest.open()))
    group_of: dict[str, int] = {}
    for gid, paths in enumerate(audit_json.get("near_duplicate_groups", []) +
                                audit_json.get("duplicate_groups", [])):
        for p in paths:
            group_of.setdefault(p, gid + 1_000_000)
    pool = [r for r in rows if r["split"] in ("train", "valid")]
    rng = np.random.default_rng(seed)
    valid_paths: set[str] = set()
    for label in sorted({r["label"] for r in pool}):
        members = [r for r in pool if r["label"] == label]
        groups: dict[int, list[str]] = {}
        for i, r in enumerate(members):
            groups.setdefault(group_of.get(r["path"], i), []).append(r["path"])
        keys = list(groups)
        rng.shuffle(keys)
        target = max(1, round(fraction * len(members)))
        taken = 0
        for k in keys:
            if taken >= target:
                break
            valid_paths.update(groups[k])
            taken += len(groups[k])
    out_path = out / "selection.csv"
    with out_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split"])
        for r in rows:
            split = r["split"]
            if split in ("train", "valid"):
                split = "valid" if r["path"] in valid_paths else "train"
            w.writerow([r["path"], r["label"], split])
    return out_path


def markdown(results: dict, extra: list[dict]) -> str:
    fd = results["full_dose"]["accuracy"]
    lines = [
        "| method | dose | denoiser | accuracy [95% CI] | PSNR window (dB) | SSIM window |",
        "|---|---|---|---|---|---|",
        f"| original | 1 | – | {fd['value']:.3f} [{fd['ci95'][0]:.3f}, {fd['ci95'][1]:.3f}] "
        "| – | – |",
    ]
    for c in results["cells"]:
        a = c["accuracy"]
        lines.append(f"| {c['method']} | {c['dose']:g} | {c['denoiser']} | {a['value']:.3f} "
                     f"[{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}] | "
                     f"{c['image'].get('psnr_window', float('nan')):.2f} | "
                     f"{c['image'].get('ssim_window', float('nan')):.3f} |")
    if extra:
        lines += ["", "Full-dose test accuracy across classifier seeds:", "",
                  "| seed | accuracy | balanced accuracy | selected epoch |", "|---|---|---|---|"]
        for e in extra:
            lines.append(f"| {e['seed']} | {e['accuracy']:.3f} | {e['balanced_accuracy']:.3f} | "
                         f"{e['best_epoch']} |")
        accs = np.array([e["accuracy"] for e in extra])
        sd = accs.std(ddof=1) if len(accs) > 1 else 0.0
        lines.append(f"\nMean {accs.mean():.3f}, standard deviation {sd:.3f} over "
                     f"{len(accs)} seeds.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "kaggle-study")
    parser.add_argument("--denoisers", default=None,
                        help="comma-separated (default: every registered one that loads)")
    parser.add_argument("--methods", default=None, help="comma-separated (default: all)")
    parser.add_argument("--seeds", default="0", help="classifier seeds; the first runs the "
                        "whole study, the others full dose only")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--input-size", type=int, default=None,
                        help="network input (slices are prepared 16 px larger)")
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--max-test", type=int, default=None)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"skip: {args.data} not found", file=sys.stderr)
        return 0
    import torch

    from lowdose.evaluation.study import StudyConfig, run_study

    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    manifest, audit_json = audit(args.data, args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    base = StudyConfig.from_yaml("kaggle")
    base.data = str(args.data)
    base.preset = args.preset
    if args.epochs:
        base.train = {**base.train, "epochs": args.epochs}
    if args.patience:
        base.train = {**base.train, "patience": args.patience}
    if args.input_size:
        base.train = {**base.train, "input_size": args.input_size}
        base.slice_size = args.input_size + 16
    if args.denoisers:
        base.denoisers = [d for d in args.denoisers.split(",") if d]
    if args.methods:
        base.methods = [m for m in args.methods.split(",") if m]
    base.max_test = args.max_test
    extra = []
    main_results = None
    for i, seed in enumerate(seeds):
        cfg = StudyConfig.from_dict({**base.to_dict(), "phantom": base.phantom.__dict__})
        cfg.seed = seed
        cfg.manifest = str(grouped_selection_manifest(manifest, audit_json, args.out, seed=0))
        cfg.out = str(args.out if i == 0 else args.out / f"seed-{seed}")
        if i > 0:
            cfg.methods = []
        results = run_study(cfg, resume=True)
        fd = results["full_dose"]["task"]
        extra.append({"seed": seed, "accuracy": fd["accuracy"]["value"],
                      "balanced_accuracy": fd["balanced_accuracy"]["value"],
                      "best_epoch": results["classifier"].get("best_epoch")})
        if i == 0:
            main_results = results
    assert main_results is not None
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = {"benchmark": "study_kaggle", "seconds": round(time.time() - t0, 1),
               "results_json": str(args.out / "results.json"), "seeds": extra,
               "full_dose": main_results["full_dose"]["accuracy"],
               "cells": [{k: c[k] for k in ("method", "dose", "denoiser", "accuracy", "image")}
                         for c in main_results["cells"]],
               "config": main_results["config"], "versions": main_results["versions"],
               "classifier": {k: v for k, v in main_results["classifier"].items()
                              if k != "history"}}
    (RESULTS / "study_kaggle.json").write_text(json.dumps(summary, indent=1, default=str))
    (RESULTS / "study_kaggle.md").write_text(markdown(main_results, extra))
    print(markdown(main_results, extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
