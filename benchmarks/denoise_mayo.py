"""Denoising quality on the real AAPM-Mayo quarter/full-dose pairs of patient L506.

Evaluates the low-dose input, TV, BM3D and every learned denoiser with weights (shipped or
named with ``--model``) on the five npy pairs (3 mm) and the DICOM pair (1 mm) in
``../shared/data/mayo-l506-pairs``: PSNR, SSIM and RMSE under two conventions
(``full``: HU clipped to [-1024, 3072] scaled to [0, 1]; ``window``: [-160, 240] HU), via
``lowdose.metrics.image``. BM3D and TV are tuned on these pairs (grid search, best mean
full-range PSNR over all six) in both of their modes, and both tuned rows are reported: a fixed
strength (BM3D's sigma, TV's weight, in HU) and the default, a strength that follows each
slice's noise reading (``noise_factor`` x ``lowdose.metrics.noise.estimate_noise_hu``). The
default learned model's ``strength`` is tuned the same way, in a row of its own marked as tuned.

The default model is also evaluated with its x8 self-ensemble (``--self-ensemble``) and, on a
CPU with native bf16, in bfloat16 (``--precision bf16``: what the rounding costs).

Writes ``benchmarks/results/denoise_mayo.json`` and ``denoise_mayo.md``. ``--rows`` re-evaluates
only the named methods (e.g. reshipped weights) and keeps every other row, the tuning and its
machine note from the previous JSON (``--reuse``); the low-dose input row is always recomputed
and must match the kept one.

Example:
    .venv/bin/python benchmarks/denoise_mayo.py
    .venv/bin/python benchmarks/denoise_mayo.py --no-tune --model runs/unet
    .venv/bin/python benchmarks/denoise_mayo.py --rows gan-circle --rows cyclegan
    .venv/bin/python benchmarks/denoise_mayo.py --rows "unet (x8 self-ensemble)" \
        --rows unet_strength
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("LOWDOSE_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "benchmarks" / "results"
BM3D_GRID = (30.0, 42.0, 50.0, 60.0, 72.0)
TV_GRID = (8.0, 12.0, 16.0, 20.0, 24.0, 30.0, 38.0)
BM3D_FACTOR_GRID = (5.0, 6.0, 7.0, 8.0, 9.5)
BM3D_CT_FACTOR_GRID = (0.85, 1.0, 1.1, 1.2)
TV_FACTOR_GRID = (1.5, 2.0, 2.5, 3.0, 3.5, 4.5)
STRENGTH_GRID = (0.8, 1.0, 1.2, 1.3, 1.4, 1.6)
TUNED = {  # key -> (registry name, parameter, grid, label of the tuned row)
    "tv": ("tv", "weight_hu", TV_GRID, "tv (weight {:g} HU)"),
    "tv_adaptive": ("tv", "noise_factor", TV_FACTOR_GRID, "tv ({:g} x noise reading)"),
    "bm3d": ("bm3d", "sigma_hu", BM3D_GRID, "bm3d (sigma {:g} HU)"),
    "bm3d_adaptive": ("bm3d", "noise_factor", BM3D_FACTOR_GRID, "bm3d ({:g} x noise reading)"),
    # BM3D given the noise's power spectrum (its CT noise model), scaled by the reading.
    "bm3d_ct": ("bm3d", "noise_factor", BM3D_CT_FACTOR_GRID,
                "bm3d, CT noise spectrum ({:g} x noise reading)"),
    # The default learned model with its strength tuned here like BM3D's sigma (a diagnostic:
    # how far its trained strength is from the best one on real data; not its headline row).
    "unet_strength": ("unet", "strength", STRENGTH_GRID, "unet (strength {:g}, tuned here)"),
}
FIXED_OPTIONS = {"bm3d_ct": {"noise_model": "ct"}}  # key -> options every value of it takes


SELF_ENSEMBLE = " (x8 self-ensemble)"  # row suffix: the model averaged over flips and turns
BF16 = " (bf16)"  # row suffix: the model run in bfloat16 (on a CPU with native bf16)


def load_row(label: str) -> Any:
    """The denoiser of a row: a registry name or weight path, with ``SELF_ENSEMBLE`` appended
    for the self-ensembled model and ``BF16`` for the model run in bfloat16."""
    from lowdose.models.loading import load_denoiser

    ensemble, bf16 = label.endswith(SELF_ENSEMBLE), label.endswith(BF16)
    name = label.removesuffix(SELF_ENSEMBLE).removesuffix(BF16)
    return load_denoiser(name, device="cpu", self_ensemble=ensemble,
                         precision="bf16" if bf16 else "fp32")


def tuned_denoiser(key: str, value: float) -> Any:
    """The denoiser of tuned ``key`` with its parameter at ``value``."""
    from lowdose.models.base import denoisers

    name, param, _, _ = TUNED[key]
    return denoisers.get(name)(**FIXED_OPTIONS.get(key, {}), **{param: value})


def tuned_row(key: str, value: float) -> tuple[str, Any]:
    """``(label, denoiser)`` of the row of tuned ``key`` at ``value``."""
    return TUNED[key][3].format(value), tuned_denoiser(key, value)


def evaluate(label: str, denoiser: Any, pairs: list[tuple[str, np.ndarray, np.ndarray]],
             **extra: Any) -> dict[str, Any]:
    """One row: per-pair and mean scores, seconds per slice, the weights' facts; printed."""
    print(f"evaluating {label}", flush=True)
    per_pair, seconds = run_denoiser(denoiser, pairs)
    entry = {"mean": mean_of(per_pair, [p[0] for p in pairs]), "per_pair": per_pair,
             "seconds_per_slice": seconds, **extra}
    if getattr(denoiser, "metadata", None):
        entry["weights"] = {k: v for k, v in denoiser.metadata.items() if k != "preset"}
    m = entry["mean"]
    print(f"  psnr_full {m['psnr_full']:.3f} ssim_full {m['ssim_full']:.4f} "
          f"psnr_window {m['psnr_window']:.3f} ssim_window {m['ssim_window']:.4f}", flush=True)
    return entry


def write_result(result: dict[str, Any], out: Path) -> None:
    """Add the gains over the low-dose input; write the JSON and the Markdown table."""
    base = result["methods"]["low-dose input"]["mean"]
    result["gains_db"] = {
        k: {"full": v["mean"]["psnr_full"] - base["psnr_full"],
            "window": v["mean"]["psnr_window"] - base["psnr_window"]}
        for k, v in result["methods"].items()
    }
    write_results(out, "denoise_mayo", result, markdown(result))


OUT_HELP = ("where the result files go (default: %(default)s, the tracked results "
            "in the repository, overwritten)")


def refuse(path: Path, reason: str) -> NoReturn:
    """Print ``error: <path>: <reason>`` on stderr and exit with code 2 (data refused)."""
    print(f"error: {path}: {reason}", file=sys.stderr)
    raise SystemExit(2)


def require_data(data: Path, needs: tuple[str, ...] = ()) -> None:
    """Refuse (``refuse``) a data folder that is missing or empty, or lacks one of the sets (sub
    folders) it ``needs`` or has it empty, before any work is done.

    Example:
        >>> require_data(Path("/no/such/folder"))
        Traceback (most recent call last):
        SystemExit: 2
    """
    if not data.is_dir():
        refuse(data, "no such data folder")
    if not any(data.iterdir()):
        refuse(data, "empty data folder")
    for name in needs:
        folder = data / name
        if not folder.is_dir():
            refuse(data, f"no {name} in the data folder")
        if not any(folder.iterdir()):
            refuse(folder, "empty data folder")


def parse_data_args(parser: Any, argv: list[str] | None, default_data: Path,
                    results: Path, needs: tuple[str, ...] = ()) -> Any:
    """Add ``--data``, ``--threads`` and ``--out`` to ``parser`` and parse ``argv``; set the
    threads. Exits with code 2 (one ``error:`` line on stderr, ``require_data``) when the data
    folder is missing or empty, or lacks one of the sets it ``needs``."""
    parser.add_argument("--data", type=Path, default=default_data,
                        help="the shared data folder (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads for torch (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=results, help=OUT_HELP)
    args = parser.parse_args(argv)
    require_data(args.data, needs)
    import torch

    torch.set_num_threads(args.threads)
    return args


def write_results(out: Path, stem: str, result: dict[str, Any], table: str) -> None:
    """Write ``<stem>.json`` and ``<stem>.md`` under ``out`` and print the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(table)
    print(table)


def load_pairs(root: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, low HU, full HU)`` for every real pair (npy first, then DICOM)."""
    from lowdose.io import read_ct

    folder = root / "mayo-l506-pairs"
    pairs = []
    for low in sorted((folder / "npy").glob("*_input.npy")):
        full = low.with_name(low.name.replace("_input", "_target"))
        pairs.append((low.name.removesuffix("_input.npy"),
                      read_ct(low, npy_scale="mayo").hu, read_ct(full, npy_scale="mayo").hu))
    qd = sorted((folder / "dicom").glob("*_QD_*"))
    fd = sorted((folder / "dicom").glob("*_FD_*"))
    if qd and fd:
        pairs.append(("L506_87_dicom_1mm", read_ct(qd[0]).hu, read_ct(fd[0]).hu))
    if not pairs:
        refuse(folder, "no quarter/full-dose pairs")
    return pairs


def score(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    from lowdose.metrics.image import psnr, rmse, ssim

    out = {}
    for conv in ("full", "window"):
        out[f"psnr_{conv}"] = psnr(pred, target, data_range=conv)
        out[f"ssim_{conv}"] = ssim(pred, target, data_range=conv)
        out[f"rmse_{conv}"] = rmse(pred, target, data_range=conv)
    return out


def run_denoiser(denoiser: Any, pairs: list[tuple[str, np.ndarray, np.ndarray]]
                 ) -> tuple[dict[str, dict[str, float]], float]:
    import torch

    per_pair, seconds = {}, 0.0
    for name, low, full in pairs:
        t = time.perf_counter()
        with torch.inference_mode():
            out = denoiser.denoise(torch.from_numpy(low)[None, None])[0, 0].numpy()
        seconds += time.perf_counter() - t
        per_pair[name] = score(out, full)
    return per_pair, seconds / len(pairs)


def mean_of(per_pair: dict[str, dict[str, float]], names: list[str]) -> dict[str, float]:
    keys = next(iter(per_pair.values())).keys()
    return {k: float(np.mean([per_pair[n][k] for n in names])) for k in keys}


def tune(key: str, pairs: list[tuple[str, np.ndarray, np.ndarray]]
         ) -> tuple[float, list[dict[str, float]]]:
    _, param, grid, _ = TUNED[key]
    rows = []
    for value in grid:
        per_pair, _ = run_denoiser(tuned_denoiser(key, value), pairs)
        m = mean_of(per_pair, [p[0] for p in pairs])
        rows.append({param: value, **m})
        print(f"  {key} {param}={value}: psnr_full {m['psnr_full']:.3f} "
              f"psnr_window {m['psnr_window']:.3f}", flush=True)
    best = max(rows, key=lambda r: r["psnr_full"])
    return float(best[param]), rows


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Denoising on real AAPM-Mayo quarter/full-dose pairs (patient L506)",
        "",
        f"Pairs: {', '.join(result['pairs'])} (npy: 3 mm; DICOM: 1 mm). Means over pairs.",
        "Conventions: full = HU clipped to [-1024, 3072] scaled to [0, 1]; "
        "window = [-160, 240] HU.",
        "Tuned on these pairs: " + "; ".join(
            f"{key} {TUNED[key][1]} = {value:g}" for key, value in result["tuned"].items())
        + ". `x noise reading`: the strength follows each slice's reference-free noise "
        "reading (BM3D's and TV's default). Learned models saw no real pairs; the `tuned here` "
        "row scales the default model's change to its input (`--strength`) by a factor chosen "
        "on these pairs, a diagnostic of how conservative it is on real data.",
        "",
        "| method | PSNR full | gain | SSIM full | RMSE full | PSNR window | gain | SSIM window "
        "| RMSE window | s/slice |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = result["methods"]["low-dose input"]["mean"]
    for name, entry in result["methods"].items():
        m = entry["mean"]
        lines.append(
            f"| {name} | {m['psnr_full']:.2f} | {m['psnr_full'] - base['psnr_full']:+.2f} "
            f"| {m['ssim_full']:.4f} | {m['rmse_full']:.5f} | {m['psnr_window']:.2f} "
            f"| {m['psnr_window'] - base['psnr_window']:+.2f} | {m['ssim_window']:.4f} "
            f"| {m['rmse_window']:.4f} | {entry.get('seconds_per_slice', 0):.2f} |"
        )
    tuning = result.get("tuning", {})
    for key, (_, param, _, _) in TUNED.items():
        rows = tuning.get(key, [])
        if rows:
            lines += ["", f"Tuning {key} ({param}, criterion: mean PSNR full): " + ", ".join(
                f"{r[param]:g} -> {r['psnr_full']:.2f} dB" for r in rows)]
    lines += ["", f"Machine: {result['machine']}. Written by benchmarks/denoise_mayo.py."]
    updated = result.get("updated_rows")
    if updated:
        by_machine: dict[str, list[str]] = {}
        for row in updated["rows"]:
            machine = result["methods"][row].get("machine") or updated["machine"]
            by_machine.setdefault(machine, []).append(row)
        runs = "; ".join(f"{', '.join(rows)} ({machine})" for machine, rows in by_machine.items())
        lines += ["", f"Rows re-evaluated later with `--rows`: {runs}; the others are kept from "
                  "the full run."]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="the shared data folder, holding mayo-l506-pairs "
                        "(default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=OUT_HELP)
    parser.add_argument("--no-tune", action="store_true", help="use the current defaults")
    parser.add_argument("--model", action="append", default=[],
                        help="extra weight file or checkpoint folder (repeatable)")
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads for torch (default: %(default)s)")
    parser.add_argument("--tuning-from", type=Path, action="append", default=[],
                        help="with --no-tune: JSON tuning rows of an earlier run of this script "
                        "(a denoise_mayo.json or a list of rows) to report with the result")
    parser.add_argument("--rows", action="append", default=[],
                        help="re-evaluate only these methods (registry names, --model paths, or "
                        "a tuned key such as unet_strength, tuned again); keep the other rows "
                        "of --reuse")
    parser.add_argument("--reuse", type=Path, default=None,
                        help="with --rows: the earlier result to keep rows from "
                        "(default: <out>/denoise_mayo.json)")
    args = parser.parse_args(argv)
    require_data(args.data, ("mayo-l506-pairs",))
    if args.rows:
        return update_rows(args)

    import torch

    from lowdose.device import cpu_has_bf16
    from lowdose.models import classical
    from lowdose.models.base import denoisers
    from lowdose.models.loading import DEFAULT_DENOISER, load_denoiser
    from lowdose.models.network import NetworkDenoiser

    torch.set_num_threads(args.threads)
    pairs = load_pairs(args.data)
    names = [p[0] for p in pairs]
    result: dict[str, Any] = {
        "benchmark": "denoise_mayo", "pairs": names, "methods": {},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"torch {torch.__version__}, {args.threads} threads",
        "conventions": {"full": [-1024, 3072], "window": [-160, 240]},
    }
    methods: dict[str, Any] = {}
    inputs = {n: score(lo, fu) for n, lo, fu in pairs}
    methods["low-dose input"] = {"mean": mean_of(inputs, names), "per_pair": inputs}

    defaults = {"tv": classical.DEFAULT_TV_WEIGHT_HU,
                "tv_adaptive": classical.DEFAULT_TV_NOISE_FACTOR,
                "bm3d": classical.DEFAULT_BM3D_SIGMA_HU,
                "bm3d_adaptive": classical.DEFAULT_BM3D_NOISE_FACTOR,
                "bm3d_ct": classical.DEFAULT_BM3D_CT_FACTOR,
                "unet_strength": 1.0}
    tuned: dict[str, float] = {}
    tuning: dict[str, Any] = {"criterion": "mean psnr_full"}
    if args.no_tune:
        tuned = dict(defaults)
        tuning.update({key: [] for key in TUNED})
        tuning["from"] = [str(p) for p in args.tuning_from]
        tuning["note"] = "defaults tuned by earlier runs of this script on the same pairs"
        for path in args.tuning_from:
            data = json.loads(path.read_text())
            rows = data.get("tuning", {}) if isinstance(data, dict) else {"bm3d": data}
            for key in TUNED:
                tuning[key] += rows.get(key, [])
        for key, (_, param, _, _) in TUNED.items():
            tuning[key] = sorted({r[param]: r for r in tuning[key]}.values(),
                                 key=lambda r, p=param: r[p])
    else:
        for key in TUNED:
            print(f"tuning {key}", flush=True)
            tuned[key], tuning[key] = tune(key, pairs)
    result["tuned"] = tuned
    result["tuning"] = tuning
    candidates: list[tuple[str, Any]] = [tuned_row(key, tuned[key]) for key in TUNED]
    for name in denoisers.names():
        cls = denoisers.get(name)
        if isinstance(cls, type) and issubclass(cls, NetworkDenoiser):
            try:
                candidates.append((name, load_denoiser(name, device="cpu")))
            except Exception as exc:  # no shipped weights for this model yet
                print(f"  {name}: skipped ({exc})", flush=True)
    for path in args.model:
        candidates.append((path, load_denoiser(path, device="cpu")))
    variants = [DEFAULT_DENOISER + SELF_ENSEMBLE]
    if cpu_has_bf16():
        variants.append(DEFAULT_DENOISER + BF16)
    candidates += [(label, load_row(label)) for label in variants]
    for label, denoiser in candidates:
        methods[label] = evaluate(label, denoiser, pairs)
    result["methods"] = methods
    write_result(result, args.out)
    return 0


def update_rows(args: argparse.Namespace) -> int:
    """Re-evaluate ``args.rows`` and keep the other rows of an earlier result."""
    import torch

    torch.set_num_threads(args.threads)
    reuse = args.reuse or args.out / "denoise_mayo.json"
    if not reuse.is_file():
        raise SystemExit(f"--rows: {reuse} not found; run the full benchmark first")
    result = json.loads(reuse.read_text())
    pairs = load_pairs(args.data)
    names = [p[0] for p in pairs]
    if names != result["pairs"]:
        raise SystemExit(f"--rows: pairs {names} differ from {reuse}'s {result['pairs']}")
    inputs = mean_of({n: score(lo, fu) for n, lo, fu in pairs}, names)
    kept = result["methods"]["low-dose input"]["mean"]
    if any(abs(inputs[k] - kept[k]) > 1e-6 * max(1.0, abs(kept[k])) for k in kept):
        raise SystemExit(f"--rows: the low-dose input scores differ from {reuse}'s")
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"torch {torch.__version__}, {args.threads} threads")

    evaluated = []
    for row in args.rows:
        if row in TUNED:  # a tuned row: tune again, replace the old row of that key
            label = TUNED[row][3]
            print(f"tuning {row}", flush=True)
            best, result.setdefault("tuning", {})[row] = tune(row, pairs)
            result.setdefault("tuned", {})[row] = best
            head, _, tail = label.partition("{:g}")
            for old in [k for k in result["methods"] if k.startswith(head) and k.endswith(tail)]:
                del result["methods"][old]
            row, denoiser = tuned_row(row, best)
        else:
            denoiser = load_row(row)
        result["methods"][row] = evaluate(row, denoiser, pairs, machine=machine)
        evaluated.append(row)
    earlier = [r for r in result.get("updated_rows", {}).get("rows", [])
               if r in result["methods"] and r not in evaluated]
    result["updated_rows"] = {"rows": earlier + evaluated, "machine": machine}
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
