"""The full study on the Kaggle Chest CT-Scan images (real data; a benchmark, not a test).

Steps:
1. ``lowdose data audit``: the de-duplicated split (test images seen in train or valid leave
   test; images filed under two classes are dropped). Reused if already written.
2. Model selection a user can trust, never on the test split: train + valid are pooled and a
   stratified 20% is held out, **grouped by near-duplicate cluster** (copies never straddle the
   two), on ``--folds`` different draws. Every candidate preprocessing (``CANDIDATES``: the HU
   mapping of the PNGs, the per-image intensity normalisation, the augmentation) is trained
   on each draw with a cheap proxy network (``--select-arch``, ``--select-size``,
   ``--select-epochs``); the candidate with the best mean hold-out balanced accuracy is chosen.
3. ``run_study`` with the chosen candidate: DenseNet-121 from scratch (the epoch chosen on the
   draw-0 hold-out), every registered simulation method, the chosen denoisers and doses.
4. Extra seeds (``--seeds``): the classifier retrained with other seeds; each judges every
   cell on the same images (the study's ``extra_classifiers``), and a second table gives each
   cell's accuracy per seed and its change pooled over the seeds (one classifier's paired
   counts on 267 slices say as much about that network as about the denoiser).
   ``--also-archs`` trains other networks (e.g. ResNet-18) with the same seeds, evaluated at
   full dose only, and ``--study-archs`` runs the whole study with their first seed too (the
   first table then holds one accuracy column per network).

Writes ``OUT/results.json``, ``OUT/report.html`` and ``benchmarks/results/study_kaggle.{json,md}``
(the Markdown table quoted in the README). Resumable: rerun the same command. Every training
uses one CPU thread (``torch.set_num_threads(1)``) unless ``--threads`` says otherwise.

Example:
    nohup .venv/bin/python benchmarks/study_kaggle.py --out runs/kaggle-study \\
        > runs/kaggle-study.log 2>&1 &
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from denoise_mayo import require_data

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "chest-ctscan-images"
RESULTS = REPO / "benchmarks" / "results"


def audit(data: Path, out: Path) -> tuple[Path, dict]:
    """The audit JSON and de-duplicated manifest (written once, then reused)."""
    manifest, report = out / "dedup.csv", out / "audit.json"
    if not (manifest.is_file() and report.is_file()):
        import subprocess

        done = subprocess.run([str(REPO / ".venv" / "bin" / "lowdose"), "data", "audit",
                               str(data), "--json", str(report), "--write-manifest",
                               str(manifest)], check=False)
        if done.returncode:  # the audit printed its own one-line error
            raise SystemExit(done.returncode)
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


LUNG = [-1350.0, 150.0]
"""The lung window: black = -1350 HU, below air, so the darkest grey levels clip at -1024 HU."""
BLACK_AIR = [-1024.0, 476.0]
"""Same width (1500 HU), black = air (-1024 HU): no grey level is clipped."""

CANDIDATES: dict[str, dict] = {
    "lung-window, percentile": {"png_window": LUNG, "train": {"intensity": "percentile"}},
    "black-air, percentile": {"png_window": BLACK_AIR,
                              "train": {"intensity": "percentile", "window": BLACK_AIR}},
    "black-air, equalize": {"png_window": BLACK_AIR,
                            "train": {"intensity": "equalize", "window": BLACK_AIR}},
    "black-air, percentile, strong aug": {
        "png_window": BLACK_AIR,
        "train": {"intensity": "percentile", "window": BLACK_AIR, "gamma": [0.5, 2.0],
                  "gain": [0.7, 1.3], "scale": [0.8, 1.2], "noise_std_hu": 20.0}},
}
"""Preprocessing candidates compared on the grouped hold-outs (name -> study settings)."""


def select_settings(data_dir: Path, manifest: Path, audit_json: dict, out: Path, folds: list[int],
                    arch: str, size: int, epochs: int, names: list[str]
                    ) -> tuple[str, list[dict]]:
    """Train every candidate on every grouped hold-out draw; the best mean balanced accuracy wins.

    Results are appended to ``out/results.jsonl`` and reused, so an interrupted selection
    resumes. Only train+valid images of ``data_dir`` (the images ``manifest`` lists) are used: the
    test split is never looked at.
    """
    from lowdose.evaluation.study import StudyConfig, load_study_data
    from lowdose.training.classifier import preset, train_classifier

    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.jsonl"
    rows = [json.loads(line) for line in res_path.read_text().splitlines()] \
        if res_path.is_file() else []
    for fold in folds:
        fdir = out / f"fold{fold}"
        fdir.mkdir(parents=True, exist_ok=True)
        sel = grouped_selection_manifest(manifest, audit_json, fdir, seed=fold)
        for name in names:
            if any((r["name"], r["fold"], r["arch"], r["size"], r["epochs"]) ==
                   (name, fold, arch, size, epochs) for r in rows):
                continue
            cand = CANDIDATES[name]
            scfg = StudyConfig(data=str(data_dir), manifest=str(sel), slice_size=size + 16,
                               png_window=tuple(cand["png_window"]), seed=0)
            data = load_study_data(scfg, fdir / "cache", progress=False)
            tcfg = preset("cpu", arch=arch, input_size=size, slice_size=size + 16,
                          epochs=epochs, patience=epochs, amp=False, **cand["train"])
            t0 = time.time()
            run = fdir / f"{name.replace(', ', '-').replace(' ', '')}-{arch}-{size}-{epochs}"
            _, summ = train_classifier(data.hu["train"], data.labels["train"], data.hu["valid"],
                                       data.labels["valid"], tcfg, run, resume=True,
                                       progress=False)
            bal = [e["balanced_accuracy"] for e in summ["history"]]
            row = {"name": name, "fold": fold, "arch": arch, "size": size, "epochs": epochs,
                   "best_bal": max(bal), "best_epoch": summ["best_epoch"],
                   "last3_bal": float(np.mean(bal[-3:])), "seconds": round(time.time() - t0),
                   "n_train": len(data.labels["train"]), "n_valid": len(data.labels["valid"])}
            print(json.dumps(row), flush=True)
            rows.append(row)
            with res_path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
    table = []
    for name in names:
        mine = [r for r in rows if r["name"] == name and r["fold"] in folds
                and (r["arch"], r["size"], r["epochs"]) == (arch, size, epochs)]
        table.append({"name": name, "folds": [r["fold"] for r in mine],
                      "best_bal": [r["best_bal"] for r in mine],
                      "mean_best_bal": float(np.mean([r["best_bal"] for r in mine])),
                      "mean_last3_bal": float(np.mean([r["last3_bal"] for r in mine]))})
    chosen = max(table, key=lambda t: t["mean_best_bal"])["name"]
    return chosen, table


def reused_selection(path: Path) -> dict:
    """The selection of an earlier run of this script, marked with where it came from."""
    if not path.is_file():
        raise SystemExit(f"--selection-from: {path} not found")
    selection = json.loads(path.read_text()).get("selection")
    if not selection or selection.get("chosen") not in CANDIDATES:
        raise SystemExit(f"--selection-from: {path} holds no selection of known candidates")
    if selection["settings"] != CANDIDATES[selection["chosen"]]:
        raise SystemExit(f"--selection-from: {path}'s chosen candidate has other settings now")
    return {**selection, "reused_from": selection.get("reused_from", str(path.name))}


def _seed_run(arch: str, seed: int, full_dose: dict, classifier: dict) -> dict:
    """One row of the seeds table (``full_dose``: task metrics, with or without intervals)."""
    value = (lambda m: m["value"] if isinstance(m, dict) else m)  # noqa: E731
    return {"arch": arch, "seed": seed, "accuracy": value(full_dose["accuracy"]),
            "balanced_accuracy": value(full_dose["balanced_accuracy"]),
            "best_epoch": classifier.get("best_epoch")}


def _ci(a: dict) -> str:
    return f"{a['value']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]"


def _across_markdown(study: dict, runs: list[dict]) -> list[str]:
    """The second table: every cell judged by each seed's classifier, pooled over them."""
    from lowdose.reporting.report import classifier_accuracies

    if not study.get("extra_classifiers"):
        return []
    arch = study["classifier"].get("spec", {}).get("arch")
    seeds = [e["seed"] for e in runs if e["arch"] == arch]
    fd = classifier_accuracies(study)

    def pooled(t: dict | None) -> str:
        if not t:
            return "–"
        return (f"{100 * t['change']:+.1f} (−{t['lost']:.1f}/+{t['gained']:.1f}, "
                f"p {t['p_value']:.2g}, Holm {t['p_holm']:.2g})")

    lines = [
        "", f"The same cells judged by {len(fd)} {arch} classifiers, seeds "
        f"{', '.join(map(str, seeds))} (the same recipe; the same simulated and restored images "
        "for each). Accuracy per seed and their mean; the change is the mean over the seeds in "
        "points, then slices lost/gained per classifier (mean) and the p-value of an exact "
        "sign-flip test over slices of the change summed over the classifiers (slices are the "
        "sampled units, the classifiers fixed; with one classifier it is McNemar's test), "
        "uncorrected and Holm-adjusted over the column's cells.", "",
        "| method | dose | denoiser | accuracy per seed | mean | change vs full dose | "
        "vs raw low dose |", "|---|---|---|---|---|---|---|",
        f"| original | 1 | – | {' / '.join(f'{a:.3f}' for a in fd)} | {np.mean(fd):.3f} "
        "| – | – |"]
    for c in study["cells"]:
        accs = classifier_accuracies(study, c)
        across = c["across_classifiers"]
        lines.append(f"| {c['method']} | {c['dose']:g} | {c['denoiser']} | "
                     f"{' / '.join(f'{a:.3f}' for a in accs)} | {across['accuracy_mean']:.3f} | "
                     f"{pooled(across['vs_full_dose'])} | {pooled(across.get('vs_raw'))} |")
    return lines


def markdown(studies: dict[str, dict], runs: list[dict], selection: dict) -> str:
    """The results file: selection, the dose x denoiser table (one accuracy pair per network
    that ran the whole study; image metrics do not depend on the network), seeds."""
    sel = selection
    reused = (f" (selection reused from an earlier run, {sel['reused_from']}; the proxy "
              "network's training is unchanged since)") if sel.get("reused_from") else ""
    lines = [
        "# Task-based study: Kaggle chest CT slices, full dose, low dose and restored", "",
        f"Model selection on {len(sel['folds'])} grouped hold-outs of train+valid "
        f"({sel['proxy']}; the test split is not used): mean best hold-out balanced "
        f"accuracy{reused}",
        "",
        "| candidate | hold-out balanced accuracy per draw | mean |", "|---|---|---|",
    ]
    for t in sel["table"]:
        mark = " (chosen)" if t["name"] == sel["chosen"] else ""
        lines.append(f"| {t['name']}{mark} | {', '.join(f'{b:.3f}' for b in t['best_bal'])} "
                     f"| {t['mean_best_bal']:.3f} |")
    first = next(iter(studies.values()))
    described = []
    for arch, res in studies.items():
        clf, spec = res["classifier"], res["classifier"].get("spec", {})
        described.append(f"{arch} (epoch {clf.get('best_epoch')} of {clf.get('epochs_run')} "
                         f"chosen on the hold-out)")
        assert spec.get("arch") == arch
    spec = first["classifier"].get("spec", {})
    lines += [
        "", f"Study: {' and '.join(described)}, from scratch, seed 0, {spec.get('input_size')} "
        f"px, {spec.get('intensity')} intensity, PNGs mapped through "
        f"{first['data']['png_window_hu']} HU; de-duplicated test split, n = "
        f"{first['data']['n']['test']}. Accuracy with a bootstrap 95% interval; the change is "
        "in points against the same network at full dose, then the paired count on the same "
        "slices: slices lost (right at full dose, wrong here) / gained, and the exact McNemar "
        "p-value (not corrected for the table's many cells); vs raw low dose: the same count "
        "for a restoration against the unrestored image at its dose. PSNR/SSIM against the "
        "full-dose slice (full: [-1024, 3072] HU; window: [-160, 240] HU, which on these "
        "PNG-mapped images covers grey levels 147-215 only).",
        "",
        "| method | dose | denoiser | " + " | ".join(
            f"{a} accuracy [95% CI] | change | vs raw low dose" for a in studies)
        + " | PSNR full (dB) | PSNR window (dB) | SSIM window |",
        "|---|---|---|" + "---|---|---|" * len(studies) + "---|---|---|",
        "| original | 1 | – | " + " | ".join(
            f"{_ci(r['full_dose']['accuracy'])} | – | –" for r in studies.values())
        + " | – | – | – |",
    ]

    def num(value: float | None, digits: int) -> str:
        return "–" if value is None else f"{value:.{digits}f}"  # None: equals its reference

    for k, c in enumerate(first["cells"]):
        accs = []
        for r in studies.values():
            other = r["cells"][k]
            assert (other["method"], other["dose"], other["denoiser"]) == (
                c["method"], c["dose"], c["denoiser"])
            a, fd = other["accuracy"], r["full_dose"]["accuracy"]
            paired = other.get("paired_vs_full_dose")
            count = (f" (−{paired['lost']}/+{paired['gained']}, p {paired['p_value']:.2g})"
                     if paired else "")
            vs_raw = other.get("paired_vs_raw")
            raw_text = (f"−{vs_raw['lost']}/+{vs_raw['gained']}, p {vs_raw['p_value']:.2g}"
                        if vs_raw else "–")
            accs.append(f"{_ci(a)} | {100 * (a['value'] - fd['value']):+.1f}{count} | "
                        f"{raw_text}")
        lines.append(f"| {c['method']} | {c['dose']:g} | {c['denoiser']} | {' | '.join(accs)} | "
                     f"{num(c['image'].get('psnr_full'), 2)} | "
                     f"{num(c['image'].get('psnr_window'), 2)} | "
                     f"{num(c['image'].get('ssim_window'), 3)} |")
    raw = [c for c in first["cells"] if c["denoiser"] == "none"]
    if raw:
        lowest = min(c["dose"] for c in raw)
        noise = ", ".join(f"{c['method']} {c['image'].get('rmse_hu', float('nan')):.1f} HU"
                          for c in raw if c["dose"] == lowest)
        lines += ["", f"How much the simulation changes these {first['data']['slice_size']} px "
                  f"slices at dose {lowest:g} (raw low dose, RMSE against full dose): {noise}. "
                  "The projection physics is run on the prepared slices' pixel size "
                  f"({first['simulator_options'].get('projection', {}).get('pixel_size_mm')} "
                  "mm, an assumed 350 mm field of view), so its noise is that of a coarse "
                  "reconstruction grid."]
    lines += _across_markdown(first, runs)
    if runs:
        lines += ["", "Full-dose test accuracy across classifier seeds:", "",
                  "| network | seed | accuracy | balanced accuracy | selected epoch |",
                  "|---|---|---|---|---|"]
        for e in runs:
            lines.append(f"| {e['arch']} | {e['seed']} | {e['accuracy']:.3f} | "
                         f"{e['balanced_accuracy']:.3f} | {e['best_epoch']} |")
        for arch in dict.fromkeys(e["arch"] for e in runs):
            accs = np.array([e["accuracy"] for e in runs if e["arch"] == arch])
            sd = accs.std(ddof=1) if len(accs) > 1 else 0.0
            lines.append(f"\n{arch}: mean {accs.mean():.3f}, standard deviation {sd:.3f} over "
                         f"{len(accs)} seed(s).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=f"{__doc__.splitlines()[0]} The run goes to --out; the README table always "
        f"goes to {RESULTS.relative_to(REPO)}/study_kaggle.json and .md, overwriting the "
        "tracked results.")
    parser.add_argument("--data", type=Path, default=DATA,
                        help="the Kaggle Chest CT-Scan images folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "kaggle-study",
                        help="the run folder: audit, selection, study, report.html; rerun to "
                        "resume (default: %(default)s)")
    parser.add_argument("--denoisers", default=None,
                        help="comma-separated (default: every registered one that loads)")
    parser.add_argument("--methods", default=None, help="comma-separated (default: all)")
    parser.add_argument("--doses", default=None, help="comma-separated (default: the preset's)")
    parser.add_argument("--seeds", default="0", help="classifier seeds; the first is the "
                        "study's own, the others judge every cell too")
    parser.add_argument("--also-archs", default="",
                        help="other networks evaluated at full dose with the same seeds")
    parser.add_argument("--study-archs", default="",
                        help="of --also-archs, those whose first seed runs the whole study too")
    parser.add_argument("--preset", default="cpu",
                        help="classifier training preset: demo, cpu or gpu (default: %(default)s)")
    parser.add_argument("--arch", default="densenet121",
                        help="the study's classifier network (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="classifier epochs (default: the preset's)")
    parser.add_argument("--input-size", type=int, default=None,
                        help="network input (slices are prepared 16 px larger)")
    parser.add_argument("--patience", type=int, default=None,
                        help="early stopping after this many epochs without a better "
                        "validation score (default: the preset's)")
    parser.add_argument("--max-test", type=int, default=None,
                        help="use at most this many test slices, stratified (default: all)")
    parser.add_argument("--folds", default="0,1", help="grouped hold-out draws for selection")
    parser.add_argument("--candidates", default="",
                        help="';'-separated candidate names (default: all of CANDIDATES)")
    parser.add_argument("--select-arch", default="resnet18",
                        help="proxy network of the selection (default: %(default)s)")
    parser.add_argument("--select-size", type=int, default=96,
                        help="proxy network input in px (default: %(default)s)")
    parser.add_argument("--select-epochs", type=int, default=18,
                        help="proxy training epochs (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default: %(default)s)")
    parser.add_argument("--selection-from", type=Path, default=None,
                        help="reuse the selection of an earlier result (a study_kaggle.json) "
                        "instead of retraining the proxy; the table says so")
    args = parser.parse_args(argv)
    require_data(args.data)
    # Before the audit (minutes on the Kaggle images): a typo is said at once.
    names = [n.strip() for n in args.candidates.split(";") if n.strip()] or list(CANDIDATES)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidates {unknown}; known: {list(CANDIDATES)}")
    import torch

    from lowdose.evaluation.study import StudyConfig, finished_study, run_study

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest, audit_json = audit(args.data, args.out)
    folds = [int(f) for f in args.folds.split(",")]
    if args.selection_from:
        selection = reused_selection(args.selection_from)
        chosen = selection["chosen"]
        # The study trains on the draw-0 split: write it as the selection would have.
        fold0 = args.out / "selection" / "fold0"
        fold0.mkdir(parents=True, exist_ok=True)
        grouped_selection_manifest(manifest, audit_json, fold0, seed=0)
    else:
        chosen, table = select_settings(args.data, manifest, audit_json,
                                        args.out / "selection", folds, args.select_arch,
                                        args.select_size, args.select_epochs, names)
        selection = {"chosen": chosen, "table": table, "folds": folds,
                     "proxy": f"{args.select_arch}, {args.select_size} px, "
                              f"{args.select_epochs} epochs",
                     "settings": CANDIDATES[chosen]}
    print(f"selected: {chosen} ({json.dumps(CANDIDATES[chosen])})", flush=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    base = StudyConfig.from_yaml("kaggle")
    base.data = str(args.data)
    base.preset = args.preset
    base.png_window = tuple(CANDIDATES[chosen]["png_window"])
    base.train = {**base.train, **CANDIDATES[chosen]["train"], "arch": args.arch}
    if args.epochs:
        base.train["epochs"] = args.epochs
    if args.patience:
        base.train["patience"] = args.patience
    if args.input_size:
        base.train["input_size"] = args.input_size
        base.slice_size = args.input_size + 16
    if args.denoisers:
        base.denoisers = [d for d in args.denoisers.split(",") if d]
    if args.methods:
        base.methods = [m for m in args.methods.split(",") if m]
    if args.doses:
        base.doses = [float(d) for d in args.doses.split(",")]
    base.max_test = args.max_test
    base.manifest = str(args.out / "selection" / "fold0" / "selection.csv")
    runs = []
    main_results = None
    studies: dict[str, dict] = {}
    whole_archs = {a for a in args.study_archs.split(",") if a}
    for arch in [args.arch] + [a for a in args.also_archs.split(",") if a]:
        if arch == args.arch:  # its other seeds judge every cell of the main study
            cfg = StudyConfig.from_dict({**base.to_dict(), "phantom": base.phantom.__dict__,
                                         "seed": seeds[0], "out": str(args.out),
                                         "extra_classifiers": seeds[1:]})
            results = finished_study(cfg) or run_study(cfg, resume=True)
            main_results = studies[arch] = results
            runs.append(_seed_run(arch, seeds[0], results["full_dose"]["task"],
                                  results["classifier"]))
            runs += [_seed_run(arch, s, extra["full_dose"], extra["classifier"])
                     for s, extra in zip(seeds[1:], results["extra_classifiers"], strict=True)]
            continue
        for i, seed in enumerate(seeds):
            cfg = StudyConfig.from_dict({**base.to_dict(), "phantom": base.phantom.__dict__})
            cfg.seed = seed
            cfg.train = {**cfg.train, "arch": arch}
            cfg.out = str(args.out / f"{arch}-seed-{seed}")
            if not (arch in whole_archs and i == 0):
                cfg.methods = []
            results = finished_study(cfg) or run_study(cfg, resume=True)
            runs.append(_seed_run(arch, seed, results["full_dose"]["task"],
                                  results["classifier"]))
            if arch in whole_archs and i == 0:
                studies[arch] = results
    assert main_results is not None
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = {"benchmark": "study_kaggle",
               "timings_note": "timings_s are the main study's last run: a stage resumed from "
                               "its cache reports the time to load it",
               "results_json": str(args.out / "results.json"), "selection": selection,
               "seeds": runs, "full_dose": main_results["full_dose"]["accuracy"],
               "cells": [{k: c[k] for k in ("method", "dose", "denoiser", "accuracy", "image",
                                            "paired_vs_full_dose", "paired_vs_raw",
                                            "extra_classifiers", "across_classifiers")
                          if k in c}
                         for c in main_results["cells"]],
               "studies": {a: {"results_json": str(Path(r["config"]["out"]) / "results.json"),
                               "full_dose": r["full_dose"]["accuracy"],
                               "cells": [{k: c[k] for k in ("method", "dose", "denoiser",
                                                             "accuracy", "paired_vs_full_dose",
                                                             "paired_vs_raw") if k in c}
                                         for c in r["cells"]]}
                           for a, r in studies.items()},
               "config": main_results["config"], "versions": main_results["versions"],
               "timings_s": main_results["timings_s"],
               "classifier": {k: v for k, v in main_results["classifier"].items()
                              if k != "history"}}
    # Which weights the learned denoisers had (a study's cells are cached by denoiser name).
    weights = REPO / "src" / "lowdose" / "weights"
    summary["denoiser_weights_sha256"] = {
        p.stem: hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        for p in sorted(weights.glob("*.safetensors"))
        if p.stem in main_results["denoisers"]["used"]}
    (RESULTS / "study_kaggle.json").write_text(json.dumps(summary, indent=1, default=str))
    md = markdown(studies, runs, selection)
    (RESULTS / "study_kaggle.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
