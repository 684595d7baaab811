"""What each denoiser does to the clean full-dose slices of a finished study (real data).

A denoiser that is right for a task should leave a slice without added noise nearly as it is.
This runs every denoiser on the study's full-dose test slices themselves (no simulated noise)
and measures, against those slices:

- the change in HU (RMS over the slice, and over the body: HU > -500),
- the classifier's paired count against full dose: slices it gets right on the original and
  wrong on the denoised one (lost), the reverse (gained), and the exact McNemar p-value,
- the mean probability of the true class per class,
- when the study has extra classifiers (other seeds), each one's accuracy and the count pooled
  over all of them (:func:`lowdose.metrics.task.paired_change_across`).

It reads the study's cached test slices and classifier (``OUT/cache``), so run
``benchmarks/study_kaggle.py`` first. ``--weights NAME=FILE`` adds other weight files (e.g. an
earlier version of a shipped model, extracted with ``git show``) as extra rows.

Writes ``benchmarks/results/study_clean_input.{json,md}`` and a figure of the differences
(denoised minus original) on the first test slice of each class, ``study_clean_input.png``.

Example:
    .venv/bin/python benchmarks/study_clean_input.py --study runs/kaggle-study \\
        --weights gan-circle-semi@0e2f59f=/tmp/old/gan-circle-semi.safetensors
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
from denoise_mayo import refuse

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def _in_chunks(fn, x: np.ndarray, chunk: int = 32) -> np.ndarray:
    return np.concatenate([fn(x[a:a + chunk]) for a in range(0, len(x), chunk)])


def measure(full: np.ndarray, y: np.ndarray, classifiers: list, denoisers: dict[str, object]
            ) -> tuple[list[dict], dict[str, np.ndarray]]:
    """One row per denoiser (the first row: the original slices, no denoiser), and each
    denoiser's output on the first slice of each class. ``classifiers[0]`` is the study's own;
    with more, each row also holds every classifier's accuracy and the count pooled over them."""
    import torch

    from lowdose.io.datasets import CLASSES
    from lowdose.metrics.task import paired_change, paired_change_across

    def probs_of(x: np.ndarray, classifier) -> np.ndarray:
        return _in_chunks(lambda c: classifier.predict_proba(torch.from_numpy(c)[:, None]).numpy(),
                          x)

    refs = [probs_of(full, c) for c in classifiers]
    ref = refs[0]
    body = full > -500
    rows = []
    shown = [int(np.flatnonzero(y == k)[0]) for k in np.unique(y)]
    outputs: dict[str, np.ndarray] = {}
    for name, den in {"none": None, **denoisers}.items():
        if den is None:
            out = full
        else:
            with torch.no_grad():
                out = _in_chunks(lambda c, d=den: d.denoise(torch.from_numpy(c)[:, None].float())
                                 [:, 0].numpy().astype(np.float32), full)
        ps = refs if den is None else [probs_of(out, c) for c in classifiers]
        p = ps[0]
        outputs[name] = out[shown]
        diff = out - full
        p_true = p[np.arange(len(y)), y]
        rows.append({
            "denoiser": name,
            "change_rms_hu": float(np.sqrt(np.mean(diff ** 2))),
            "change_rms_hu_body": float(np.sqrt(np.mean(diff[body] ** 2))),
            "accuracy": float(np.mean(p.argmax(1) == y)),
            "paired_vs_original": paired_change(y, ref, p),
            "mean_p_true": {c: float(p_true[y == k].mean()) for k, c in enumerate(CLASSES)
                            if np.any(y == k)},
        })
        if len(classifiers) > 1:
            rows[-1]["accuracy_per_classifier"] = [float(np.mean(q.argmax(1) == y)) for q in ps]
            rows[-1]["pooled_vs_original"] = paired_change_across(y, refs, ps)
    return rows, outputs


def figure(outputs: dict[str, np.ndarray], path: Path) -> None:
    """Original (lung window) and each denoiser's difference image (+-60 HU), a row per slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(outputs)
    rows = len(outputs["none"])
    fig, axes = plt.subplots(rows, len(names), figsize=(1.6 * len(names), 1.7 * rows),
                             squeeze=False)
    for i in range(rows):
        for j, name in enumerate(names):
            ax = axes[i, j]
            if name == "none":
                ax.imshow(outputs[name][i], cmap="gray", vmin=-1350, vmax=150)
            else:
                ax.imshow(outputs[name][i] - outputs["none"][i], cmap="RdBu_r", vmin=-60, vmax=60)
            ax.set_axis_off()
            if i == 0:
                ax.set_title("original" if name == "none" else name, fontsize=7)
    fig.suptitle("Clean full-dose slices: original (lung window) and denoised minus original "
                 "(-60 to +60 HU)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    small_png(path)


def small_png(path: Path, colors: int = 128) -> None:
    """Re-save a PNG with a palette: a third of the size, no visible change at this scale."""
    from PIL import Image

    with Image.open(path) as im:
        quantized = im.convert("RGB").quantize(colors=colors)
    quantized.save(path, optimize=True)


def markdown(rows: list[dict], meta: dict) -> str:
    classes = list(rows[0]["mean_p_true"])
    lines = [
        "# What each denoiser does to clean study slices", "",
        f"Study: `{meta['study']}`, {meta['n']} full-dose test slices of {meta['slice_size']} px "
        f"(about {meta['pixel_mm']:.1f} mm pixels), each denoiser run on the slices themselves "
        "(no simulated noise). Change: RMS of denoised minus original in HU (body: HU > -500). "
        "Lost / gained: slices the study's classifier gets right on the original and wrong on "
        "the denoised slice, and the reverse, with the exact McNemar p-value (not corrected "
        "for the table's rows). Mean probability of the true class per class.", "",
        "| denoiser | change RMS (HU) | body (HU) | accuracy | lost / gained (p) | "
        + " | ".join(f"p(true) {c}" for c in classes) + " |",
        "|---|---|---|---|---|" + "---|" * len(classes),
    ]
    for r in rows:
        pc = r["paired_vs_original"]
        lines.append(
            f"| {r['denoiser']} | {r['change_rms_hu']:.1f} | {r['change_rms_hu_body']:.1f} | "
            f"{r['accuracy']:.3f} | −{pc['lost']} / +{pc['gained']} ({pc['p_value']:.2g}) | "
            + " | ".join(f"{r['mean_p_true'][c]:.3f}" for c in classes) + " |")
    if "pooled_vs_original" in rows[0]:
        lines += ["", f"The same slices judged by all {len(meta['classifiers'])} classifiers of "
                  f"the study ({', '.join(meta['classifiers'])}): accuracy of each, and lost / "
                  "gained per classifier (mean) with the exact sign-flip test over slices of "
                  "the change summed over the classifiers.", "",
                  "| denoiser | accuracy per classifier | mean | change (points) | "
                  "lost / gained (p) |", "|---|---|---|---|---|"]
        for r in rows:
            pc = r["pooled_vs_original"]
            accs = r["accuracy_per_classifier"]
            lines.append(f"| {r['denoiser']} | {' / '.join(f'{a:.3f}' for a in accs)} | "
                         f"{np.mean(accs):.3f} | {100 * pc['change']:+.1f} | "
                         f"−{pc['lost']:.2f} / +{pc['gained']:.2f} ({pc['p_value']:.2g}) |")
    if meta.get("extra"):
        lines += ["", "Extra weight files: " + "; ".join(
            f"{k} = `{v}`" for k, v in meta["extra"].items()) + "."]
    lines += ["", "Figure: benchmarks/results/study_clean_input.png (the difference images of "
              "the first test slice of each class).", "",
              f"Machine: {meta['machine']}. Written by benchmarks/study_clean_input.py."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=f"{__doc__.splitlines()[0]} Writes {RESULTS.relative_to(REPO)}/"
        "study_clean_input.json, .md and .png, overwriting the tracked results.")
    parser.add_argument("--study", type=Path, default=REPO / "runs" / "kaggle-study",
                        help="the --out folder of a finished benchmarks/study_kaggle.py run "
                        "(default: %(default)s)")
    parser.add_argument("--denoisers", default=None,
                        help="comma-separated (default: those the study used)")
    parser.add_argument("--weights", action="append", default=[],
                        help="NAME=FILE: an extra weight file as a row (repeatable)")
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads for torch (default: %(default)s)")
    args = parser.parse_args(argv)
    results_path = args.study / "results.json"
    if not results_path.is_file():  # as the other benchmarks refuse missing data: exit 2
        refuse(results_path, "not found (run benchmarks/study_kaggle.py first, or give "
               "--study its --out)")
    import torch

    from lowdose.evaluation.study import (
        StudyConfig,
        classifier_label,
        extra_classifiers,
        get_classifier,
        load_study_data,
    )
    from lowdose.models.loading import load_denoiser

    torch.set_num_threads(args.threads)
    results = json.loads(results_path.read_text())
    cfg = StudyConfig.from_dict(results["config"])
    cache = args.study / "cache"
    data = load_study_data(cfg, cache, progress=False)
    # resume=True loads the cached classifier; it only trains if the cache is gone.
    classifier, summary = get_classifier(cfg, data, cache, resume=True, progress=False)
    others = extra_classifiers(cfg, data, cache, resume=True, progress=False)
    labels = [classifier_label(summary)] + [label for label, _, _ in others]
    names = (args.denoisers.split(",") if args.denoisers
             else [d for d in results["denoisers"]["used"] if d != "none"])
    denoisers = {n: load_denoiser(n, device="cpu") for n in names}
    extra = {}
    for spec in args.weights:
        name, _, path = spec.partition("=")
        if not path:
            parser.error(f"--weights wants NAME=FILE, got {spec!r}")
        denoisers[name] = load_denoiser(path, device="cpu")
        extra[name] = path
    full, y = data.hu["test"], data.labels["test"]
    rows, outputs = measure(full, y, [classifier] + [m for _, m, _ in others], denoisers)
    meta = {"study": str(args.study), "n": len(y), "slice_size": cfg.slice_size,
            "pixel_mm": cfg.pixel_mm, "extra": extra, "classifiers": labels,
            "machine": f"{platform.machine()}, torch {torch.__version__}, "
                       f"{args.threads} threads"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "study_clean_input.json").write_text(
        json.dumps({"benchmark": "study_clean_input", **meta, "rows": rows}, indent=1))
    figure(outputs, RESULTS / "study_clean_input.png")
    md = markdown(rows, meta)
    (RESULTS / "study_clean_input.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
