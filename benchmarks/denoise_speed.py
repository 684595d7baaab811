"""Denoising speed: seconds per 512x512 slice (and slices/s) for every denoiser.

CPU with the threads given (target for the shipped default: <= 0.25 s per slice on 2 cores),
in fp32 and, for the learned models on a CPU with native bf16 (AVX512-BF16 / AMX), in bf16;
CUDA in bf16 when a GPU is present (target: >= 2,000 slices/s on one H100 for the default model
and for the GAN-CIRCLE generator), with a large batch.
Learned models run with their shipped weights (random weights of the same architecture when
none are shipped: the speed is the same). Times are the median of ``--repeats`` runs after a
warm-up.

Writes ``benchmarks/results/denoise_speed.json`` and ``denoise_speed.md``. ``--rows MODEL``
re-measures only that model (e.g. after its weights changed) and keeps the other rows of the
previous JSON; since CPU times depend on the host, the same run also times the default model
as a reference, and the table names the host, its load and that reference next to the
re-measured rows.

Example:
    .venv/bin/python benchmarks/denoise_speed.py --threads 2
    .venv/bin/python benchmarks/denoise_speed.py --rows gan-circle-semi
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from denoise_mayo import OUT_HELP

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CLASSICAL_REPEATS = 1  # BM3D takes seconds per slice: one timed run is enough


def _slice(batch: int, device: Any) -> Any:
    import torch

    g = torch.Generator().manual_seed(0)
    hu = torch.full((batch, 1, 512, 512), -1000.0)
    yy, xx = torch.meshgrid(torch.arange(512), torch.arange(512), indexing="ij")
    body = ((yy - 256) / 200) ** 2 + ((xx - 256) / 240) ** 2 < 1
    hu[:, :, body] = 40.0
    return (hu + 30 * torch.randn(hu.shape, generator=g)).to(device)


def _time(fn: Any, repeats: int, sync: Any = None) -> float:
    fn()  # warm-up
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads for torch (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs of each learned model; the median counts "
                        "(default: %(default)s)")
    parser.add_argument("--gpu-batch", type=int, default=64,
                        help="slices per batch on CUDA (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=OUT_HELP)
    parser.add_argument("--skip-classical", action="store_true",
                        help="time only the learned models (not TV, BM3D)")
    parser.add_argument("--rows", action="append", default=[], metavar="MODEL",
                        help="re-measure only this model (repeatable); the other rows are kept "
                        "from <out>/denoise_speed.json")
    args = parser.parse_args(argv)

    import torch

    from lowdose.device import cpu_has_bf16
    from lowdose.models.base import denoisers
    from lowdose.models.loading import DEFAULT_DENOISER, load_denoiser
    from lowdose.models.network import NetworkDenoiser

    torch.set_num_threads(args.threads)
    previous = None
    if args.rows:
        unknown = sorted(set(args.rows) - set(denoisers.names()))
        if unknown:
            raise SystemExit(f"--rows: unknown model(s) {unknown}; known: {denoisers.names()}")
        if not (args.out / "denoise_speed.json").is_file():
            raise SystemExit(f"--rows: {args.out / 'denoise_speed.json'} not found; "
                             "run the full benchmark first")
        previous = json.loads((args.out / "denoise_speed.json").read_text())
    load_before = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    configs = [("cpu", "fp32")] + ([("cpu", "bf16")] if cpu_has_bf16() else [])
    if torch.cuda.is_available():
        configs.append(("cuda", "bf16"))
        # every timed call has one shape: let cuDNN pick its fastest convolutions once
        torch.backends.cudnn.benchmark = True
    gpu_target_models = (DEFAULT_DENOISER, "gan-circle")  # issues 5 and 6: >= 2,000 slices/s
    names = denoisers.names()
    if args.rows:  # the default model too, as this host's reference
        names = [*args.rows, *([DEFAULT_DENOISER] if DEFAULT_DENOISER not in args.rows else [])]
    for name in names:
        cls = denoisers.get(name)
        learned = isinstance(cls, type) and issubclass(cls, NetworkDenoiser)
        if not learned and args.skip_classical:
            continue
        for device, precision in configs:
            if not learned and (device, precision) != ("cpu", "fp32"):
                continue
            try:
                d = load_denoiser(name, device=device)
                weights = "shipped" if learned else "-"
            except Exception:
                if not learned:
                    raise
                if not hasattr(cls, "untrained"):
                    continue
                d = cls.untrained()
                d.net.to(device)
                weights = "untrained (same architecture)"
            batch = 1 if device == "cpu" else args.gpu_batch
            if learned:
                d.precision = precision
            if device == "cuda":
                d.tile_batch = batch
            x = _slice(batch, device)
            sync = torch.cuda.synchronize if device == "cuda" else None
            repeats = args.repeats if learned else CLASSICAL_REPEATS
            with torch.inference_mode():
                seconds = _time(lambda d=d, x=x: d.denoise(x), repeats, sync) / batch
            row = {
                "model": name, "device": device, "precision": precision if learned else "fp64",
                "batch": batch, "seconds_per_slice": seconds, "slices_per_second": 1 / seconds,
                "weights": weights, "default": name == DEFAULT_DENOISER,
            }
            if device == "cpu":
                row["threads"] = args.threads
                if name == DEFAULT_DENOISER:
                    row["target_seconds_per_slice"] = 0.25
                    row["meets_target"] = seconds <= 0.25
            else:
                row["gpu"] = torch.cuda.get_device_name()
                if name in gpu_target_models:
                    row["target_slices_per_second"] = 2000
                    row["meets_target"] = 1 / seconds >= 2000
            rows.append(row)
            print(f"{name:10s} {device:5s} {precision:5s} {seconds:8.4f} s/slice "
                  f"{1 / seconds:9.1f} slices/s", flush=True)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"torch {torch.__version__}")
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    # CPU times are only comparable at a similar load (other jobs share the cores)
    load = {"before": load_before, "after": os.getloadavg()[0]}
    if previous is not None:
        result = merge_rows(previous, rows, args.rows, {
            "models": args.rows, "machine": machine, "gpu": gpu, "load_average_1min": load,
            "reference": [r for r in rows if r["model"] not in args.rows]})
    else:
        result = {"benchmark": "denoise_speed", "size": [512, 512], "rows": rows,
                  "machine": machine, "gpu": gpu, "load_average_1min": load}
    write(result, args.out)
    return 0


def merge_rows(previous: dict[str, Any], rows: list[dict[str, Any]], models: list[str],
               remeasure: dict[str, Any]) -> dict[str, Any]:
    """The previous result with the rows of ``models`` replaced by ``rows`` of those models.

    Every previous row of a re-measured model goes, including device/precision combinations
    this host could not run: a time of other weights must not stand as the shipped one's.
    """
    kept = [r for r in previous["rows"] if r["model"] not in models]
    new = [r for r in rows if r["model"] in models]
    merged = sorted(kept + new, key=lambda r: r["model"])  # stable: device order kept per model
    earlier = [m for m in previous.get("remeasured", []) if not set(m["models"]) <= set(models)]
    return {**previous, "rows": merged, "remeasured": [*earlier, remeasure]}


def write(result: dict[str, Any], out: Path) -> None:
    """``denoise_speed.json`` and the Markdown table ``denoise_speed.md`` in ``out``."""
    load = result["load_average_1min"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "denoise_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Denoising speed, 512x512 slices", "",
        f"Machine: {result['machine']}; GPU: {result['gpu'] or 'none in this run'}; "
        f"1-min load average {load['before']:.1f} before, {load['after']:.1f} after"
        f"{' (other jobs shared the CPU)' if load['before'] >= 0.5 else ''}.", "",
        "| model | device | precision | batch | s/slice | slices/s | weights |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        mark = " (default)" if r["default"] else ""
        lines.append(f"| {r['model']}{mark} | {r['device']}"
                     f"{' x' + str(r.get('threads')) + ' threads' if r['device'] == 'cpu' else ''}"
                     f" | {r['precision']} | {r['batch']} | {r['seconds_per_slice']:.4f} "
                     f"| {r['slices_per_second']:.1f} | {r['weights']} |")
    for m in result.get("remeasured", []):
        reference = "; ".join(f"{r['model']} {r['device']} {r['precision']} "
                              f"{r['seconds_per_slice']:.4f} s" for r in m["reference"])
        lines += ["", f"Re-measured later with `--rows`: {', '.join(m['models'])}, on "
                  f"{m['machine']}, GPU {m['gpu'] or 'none'}, 1-min load average "
                  f"{m['load_average_1min']['before']:.1f} before, "
                  f"{m['load_average_1min']['after']:.1f} after; on that host the same run timed "
                  f"{reference} (compare those rows with this reference, not with the table's)."]
    lines += ["", "Written by benchmarks/denoise_speed.py.", ""]
    (out / "denoise_speed.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
