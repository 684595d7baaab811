"""``lowdose simulate IN OUT --dose D`` and ``lowdose calibrate PAIRS``: low-dose physics."""

from __future__ import annotations

from pathlib import Path

import typer

from lowdose.cli.options import npy_scale_option, parse_doses, series_option
from lowdose.errors import LowdoseError

MAX_OUTPUTS_LISTED = 10


def simulate(
    input: Path = typer.Argument(
        ..., help="Full-dose CT: a file (DICOM, NIfTI, .npy, PNG), a DICOM series folder, or a "
        "folder tree of images (class folders keep their layout)."
    ),
    output: Path = typer.Argument(
        ..., help="Output file, series folder or dataset folder (with --doses: a folder holding "
        "dose-<d>/ per dose). Never the input."
    ),
    dose: float | None = typer.Option(
        None, "--dose", help="Fraction of the full dose in (0, 1] (default 0.25)."
    ),
    doses: str | None = typer.Option(
        None, "--doses", help="Several doses, e.g. 1,0.5,0.25,0.1,0.05: one tree per dose."
    ),
    method: str = typer.Option(
        "projection", "--method",
        help="projection (calibrated projection-domain physics) or image-poisson (the study's "
        "12-bit + Poisson method).",
    ),
    seed: int = typer.Option(0, "--seed", help="Noise seed: the same seed gives the same output."),
    calibration: Path | None = typer.Option(
        None, "--calibration",
        help="Calibration JSON from 'lowdose calibrate' (default: the shipped Mayo fit).",
    ),
    window: str | None = typer.Option(
        None, "--window", help="HU window of 8-bit PNG/JPEG inputs: 'lo,hi' or a name (lung)."
    ),
    npy_scale: str | None = npy_scale_option(),
    series: str | None = series_option(each=True),
    pixel_size: float | None = typer.Option(
        None, "--pixel-size", help="Pixel size (mm) for inputs without one (npy, PNG); "
        "default: the larger side spans 380 mm (0.742 mm at 512 px)."
    ),
    relative_dose: bool = typer.Option(
        False, "--relative-dose",
        help="projection: the dose is a fraction of each slice's own dose, read from its noise "
        "(3x its noise power inserted at 0.25), not of the calibration's full dose.",
    ),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: best)."),
) -> None:
    """Simulate a lower-dose scan from a full-dose one; writes HU in the input's format.

    A DICOM series gets its dose tags (CTDIvol, mA, mAs) scaled by the dose where the dose is a
    fraction of the scan's own (image-poisson, --relative-dose); the default projection's dose is
    a fraction of the calibration's full dose, so there they are removed (below dose 1).

    Example: lowdose simulate FD.nii.gz LD.nii.gz --dose 0.25 --seed 0
    """
    from lowdose.cli.options import parse_window
    from lowdose.physics.batch import simulate_path

    if doses is not None and dose is not None:
        raise LowdoseError("--dose and --doses: give one of them")
    dose_list = parse_doses(doses) if doses is not None else [0.25 if dose is None else dose]
    written = simulate_path(
        input, output, dose_list, method=method, seed=seed,
        calibration=calibration, window=parse_window(window), npy_scale=npy_scale,
        series=series, pixel_size_mm=pixel_size, relative_dose=relative_dose, device=device,
        progress=True,
    )
    # Each output by name, as denoise does, unless a dataset of images made many.
    if len(written) <= MAX_OUTPUTS_LISTED:
        for path in written:
            typer.echo(f"wrote {path}")
    else:
        typer.echo(f"wrote {len(written)} files under {output}")


def calibrate(
    pairs: Path = typer.Argument(
        ..., help="Folder of real full-dose/low-dose pairs (*_target/*_input.npy, *_FD_*/*_QD_*,"
        " or full/ and low/ folders with the same names)."
    ),
    output: Path = typer.Option(
        Path("calibration.json"), "--out", "-o", help="Calibration JSON to write."
    ),
    dose: float = typer.Option(0.25, "--dose", help="Dose fraction of the real low-dose images."),
    npy_scale: str = npy_scale_option("mayo"),
    pixel_size: float | None = typer.Option(
        None, "--pixel-size", help="Pixel size (mm) when the files carry none (npy)."
    ),
    slice_thickness: float | None = typer.Option(
        None, "--slice-thickness", help="Slice thickness (mm) when the files carry none (npy)."
    ),
    roi: int = typer.Option(32, "--roi", help="Side (px) of the flat noise ROIs."),
    seed: int = typer.Option(0, "--seed", help="Noise seed of the fit."),
) -> None:
    """Fit I0 and the FBP window so simulated low dose matches your real low-dose scans.

    Example: lowdose calibrate ../shared/data/mayo-l506-pairs/npy --out mayo.json
    """
    from tqdm import tqdm

    from lowdose.physics.calibration import fit_calibration, load_pairs

    loaded = load_pairs(pairs, pixel_size_mm=pixel_size, npy_scale=npy_scale,
                        slice_thickness_mm=slice_thickness)
    if output.resolve().is_relative_to(pairs.resolve()):
        raise LowdoseError(f"{output}: write the calibration outside the pairs folder")
    typer.echo(f"{len(loaded)} pair(s) from {pairs}")
    if any(p.pixel_assumed for p in loaded):
        typer.echo("note: no pixel size in the files; assumed 0.742 mm (give --pixel-size)")
    with tqdm(desc="calibrate", unit="step") as bar:
        result = fit_calibration(loaded, dose, seed=seed, roi=roi,
                                 progress=lambda _m: bar.update(1))
    path = result.calibration.save(output)
    cal, mean = result.calibration, result.mean
    for row in result.per_pair:
        typer.echo(
            f"  {row['name']}: noise std real {row['std_real']:.1f} HU, simulated "
            f"{row['std_sim']:.1f} HU (ratio {row['std_ratio']:.3f}), NPS error "
            f"{row['nps_rel_l2']:.3f}"
        )
    verdict = "within" if result.passed() else "NOT within"
    typer.echo(
        f"pooled: std ratio {mean['std_ratio']:.3f}, NPS error {mean['nps_rel_l2']:.3f} "
        f"({verdict} 15%); I0 {cal.i0:.4g}, window {cal.filter} cutoff {cal.cutoff:g}"
    )
    typer.echo(f"wrote {path}; use it with: lowdose simulate IN OUT --calibration {path}")


def register(app: typer.Typer) -> None:
    """Add ``simulate`` and ``calibrate`` to app."""
    app.command("simulate")(simulate)
    app.command("calibrate")(calibrate)
