"""The relative dose on real scans: inserted noise level and texture (a benchmark, not a test).

``ProjectionSimulator(relative_to_image=True)`` (``--relative-dose``) inserts noise of
``(1 - d) / d`` times each slice's own noise power, reshaped to the slice's own noise texture
where the calibrated texture differs from it by more than ``texture_tolerance`` (1.5). This
script measures, slice by slice, on the real full-dose sets of ``../shared/data``:

- the slice's own noise (``lowdose.metrics.noise.estimate_noise_hu``) and texture
  (``noise_texture``: the 2 x 2-binned over the unbinned reading; white noise 0.5);
- for the relative quarter dose, with the texture match (default) and without it
  (``texture_tolerance=None``): the inserted noise's texture, its power over the slice's own
  (by the same reading; 3 is the target at a quarter dose) and its standard deviation in the
  body (HU > -500);
- on the real AAPM-Mayo L506 pairs, the same numbers for the real quarter dose (QD - FD), beside
  the relative quarter dose simulated from their full dose: the physics against the real thing.

Writes ``benchmarks/results/relative_dose.{json,md}``.

Example:
    .venv/bin/python benchmarks/relative_dose.py --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from denoise_mayo import load_pairs, parse_data_args, write_results

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DOSE = 0.25
NEEDS = ("mayo-l067-full-dose", "ct-series-itkelastix-chest", "chest-ct-dicom", "mayo-l506-pairs")


def _slices(root: Path) -> list[tuple[str, str, np.ndarray, float]]:
    """(set, name, full-dose HU, pixel mm) of a few slices of each full-dose training set."""
    from lowdose.io import read_ct

    picks = {
        "mayo-l067-full-dose (1 mm, sharp)": sorted((root / "mayo-l067-full-dose").glob("*.IMA")),
        "ct-series-itkelastix-chest (2 mm)": sorted(
            (root / "ct-series-itkelastix-chest").glob("*.dcm"))[10:70:20],
        "chest-ct-dicom": sorted((root / "chest-ct-dicom").glob("*/axial/*.dcm"))[::12][:4],
    }
    out = []
    for name, files in picks.items():
        for f in files:
            image = read_ct(f)
            hu = np.maximum(image.slices()[0].astype(np.float64), -1024.0)
            out.append((name, f.name, hu, float(image.spacing[-1])))
    return out


def _inserted(hu: np.ndarray, noise: np.ndarray, own_noise_hu: float) -> dict[str, float]:
    from lowdose.metrics.noise import estimate_noise_hu, noise_texture

    return {
        "texture": noise_texture(noise, tissue_of=hu),
        "power_ratio": (estimate_noise_hu(noise, tissue_of=hu) / own_noise_hu) ** 2,
        "std_body_hu": float(noise[hu > -500].std()),
    }


def measure(hu: np.ndarray, pixel_mm: float | None, seed: int) -> dict[str, object]:
    """Own noise and texture of one slice, and the relative quarter dose with / without match."""
    from lowdose.metrics.noise import estimate_noise_hu, noise_texture
    from lowdose.physics import build_simulator
    from lowdose.physics.projection import TEXTURE_TOLERANCE

    own = estimate_noise_hu(hu)
    row: dict[str, object] = {"own_noise_hu": own, "own_texture": noise_texture(hu)}
    t = torch.from_numpy(hu.astype(np.float32))[None, None]
    for label, tolerance in (("matched", TEXTURE_TOLERANCE), ("level_only", None)):
        sim = build_simulator("projection", pixel_size_mm=pixel_mm, relative_to_image=True,
                              texture_tolerance=tolerance)
        low = sim(t, DOSE, torch.Generator().manual_seed(seed))[0, 0].double().numpy()
        row[label] = _inserted(hu, low - hu, own)
    return row


def _fmt(x: object) -> str:
    return f"{x:.2f}" if isinstance(x, float) else str(x)


def markdown(result: dict) -> str:
    lines = [
        "# The relative quarter dose on real scans: inserted noise level and texture",
        "",
        "Measured by `benchmarks/relative_dose.py`. Own noise: the reference-free reading of "
        "`estimate_noise_hu` (HU); texture: `noise_texture` (2 x 2-binned over unbinned reading; "
        "white noise 0.5, a smooth kernel 2-3). Inserted = simulated relative quarter dose minus "
        "the full dose (`--relative-dose`), with the texture match (default, tolerance 1.5) and "
        "without it (`texture_tolerance=None`): its texture, its power over the slice's own by "
        "the same reading (the target at a quarter dose: 3) and its standard deviation in the body "
        "(HU > -500). The real L506 rows: the real quarter dose minus the full dose.",
        "",
        "| set | slice | own noise (HU) | own texture | inserted texture: matched / level only "
        "| power ratio: matched / level only | std in body (HU): matched / level only |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        m, lv = r["matched"], r["level_only"]
        lines.append(
            f"| {r['set']} | {r['slice']} | {_fmt(r['own_noise_hu'])} | {_fmt(r['own_texture'])} "
            f"| {_fmt(m['texture'])} / {_fmt(lv['texture'])} "
            f"| {_fmt(m['power_ratio'])} / {_fmt(lv['power_ratio'])} "
            f"| {m['std_body_hu']:.1f} / {lv['std_body_hu']:.1f} |")
    lines += ["", "Real L506 quarter dose against the relative quarter dose simulated from its "
              "full dose (matched; pixel size: the simulator's default, 0.742 mm):", "",
              "| pair | own texture | real: texture / power ratio / std in body (HU) "
              "| simulated: texture / power ratio / std in body (HU) |", "|---|---|---|---|"]
    for r in result["l506"]:
        real, sim = r["real"], r["matched"]
        lines.append(
            f"| {r['slice']} | {_fmt(r['own_texture'])} | {_fmt(real['texture'])} / "
            f"{_fmt(real['power_ratio'])} / {real['std_body_hu']:.1f} | {_fmt(sim['texture'])} / "
            f"{_fmt(sim['power_ratio'])} / {sim['std_body_hu']:.1f} |")
    lines += ["", f"Machine: {result['machine']}. Written by benchmarks/relative_dose.py."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import platform

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args = parse_data_args(parser, argv, DEFAULT_DATA, RESULTS, needs=NEEDS)
    t0 = time.time()
    rows = []
    for i, (name, slice_name, hu, pixel_mm) in enumerate(_slices(args.data)):
        rows.append({"set": name, "slice": slice_name[:40], **measure(hu, pixel_mm, i)})
        print(f"{name} {slice_name[:40]} ({time.time() - t0:.0f} s)", flush=True)
    l506 = []
    for i, (pair, low, full) in enumerate(load_pairs(args.data)):
        full = full.astype(np.float64)
        # pixel size: the simulator's default (the Mayo 380 mm field of view)
        row = measure(full, None, 100 + i)
        row["real"] = _inserted(full, low.astype(np.float64) - full, row["own_noise_hu"])
        l506.append({"slice": pair, **row})
    result = {
        "benchmark": "relative_dose", "dose": DOSE, "rows": rows, "l506": l506,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}",
    }
    write_results(args.out, "relative_dose", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
