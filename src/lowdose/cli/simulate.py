"""``lowdose simulate IN OUT --dose D`` and ``lowdose calibrate PAIRS``: low-dose physics."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from lowdose.cli.options import (
    npy_scale_option,
    parse_doses,
    say_written,
    series_option,
    window_option,
)
from lowdose.errors import LowdoseError

if TYPE_CHECKING:
    from lowdose.image import Window

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
    window: str | None = window_option(),
    npy_scale: str | None = npy_scale_option(),
    series: str | None = series_option(each=True),
    pixel_size: float | None = typer.Option(
        None, "--pixel-size", min=0.01, help="Pixel size (mm) for inputs without one (npy, "
        "PNG); default: the larger side spans 380 mm (0.742 mm at 512 px)."
    ),
    relative_dose: bool = typer.Option(
        False, "--relative-dose",
        help="projection: the dose is a fraction of each slice's own dose, read from its noise "
        "(3x its noise power inserted at 0.25), not of the calibration's full dose.",
    ),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: best)."),
) -> None:
    """Simulate a lower-dose scan from a full-dose one, written in the input's format and scale.

    A DICOM series gets its dose tags (CTDIvol, mA, mAs) scaled by the dose where the dose is a
    fraction of the scan's own (--relative-dose); the default projection's dose is a fraction of
    the calibration's full dose, and image-poisson's noise is its formula's whatever the scan's
    dose, so there they are removed (the projection's at dose 1 kept: the input itself).

    Example: lowdose simulate FD.nii.gz LD.nii.gz --dose 0.25 --seed 0
    """
    from lowdose.cli.options import parse_window
    from lowdose.physics.batch import simulate_path

    if doses is not None and dose is not None:
        raise LowdoseError("--dose and --doses: give one of them")
    dose_list = parse_doses(doses) if doses is not None else [0.25 if dose is None else dose]
    from lowdose.io.read import IMAGE_FILE_SUFFIXES

    if doses is not None and output.name.lower().endswith(IMAGE_FILE_SUFFIXES):
        # it became a folder named like a file (out.nii.gz/dose-0.25/...)
        raise LowdoseError(f"{output}: --doses writes a folder per dose (OUTPUT/dose-<d>/); "
                           "give a folder name, or --dose for one file")
    hu_window = parse_window(window)
    if hu_window is None and series is None:  # --series: DICOM, no 8-bit image to read
        hu_window = default_8bit_window(input)
    written = simulate_path(
        input, output, dose_list, method=method, seed=seed,
        calibration=calibration, window=hu_window, npy_scale=npy_scale,
        series=series, pixel_size_mm=pixel_size, relative_dose=relative_dose, device=device,
        progress=True, per_dose_folders=doses is not None,  # as --help says, even for one dose
    )
    say_written(written, output)


def default_8bit_window(source: Path) -> Window | None:
    """The window to read the 8-bit PNG/JPEG images under ``source`` through when no
    ``--window`` is given: the lung window where none of them records one (said on stderr,
    before the progress bar), as ``denoise``, ``score`` and ``info`` read them; ``None`` where
    each records its own (a lowdose PNG) or there is no 8-bit image.

    Raises:
        LowdoseError: some of them record a window and others do not: one window given for
            all would override the recorded ones, and none leaves the others unread.

    Example:
        >>> default_8bit_window(Path("fd.nii.gz")) is None  # doctest: +SKIP
        True
    """
    from lowdose.io.formats.common import default_window, describe_window, sniff
    from lowdose.physics.batch import plan_jobs

    if not source.exists():
        return None  # simulate_path says it is missing
    # The files simulate_path takes: the file, or the images of a folder tree (a series: none).
    files = [job.source for job in plan_jobs(source) if not job.is_series]
    recorded, unstated = [], []
    for path in files:
        kind = sniff(path)
        if kind in ("png", "jpeg"):
            (recorded if kind == "png" and _records_window(path) else unstated).append(path)
    if not unstated:
        return None
    if recorded:
        raise LowdoseError(
            f"{source}: {len(recorded)} 8-bit image(s) record their HU window (e.g. "
            f"{recorded[0].name}) and {len(unstated)} do not (e.g. {unstated[0].name}); pass "
            "--window to read them all through one"
        )
    window = default_window()
    typer.echo(f"note: 8-bit input read as HU through the default window, "
               f"{describe_window(window)} (--window states another)", err=True)
    return window


def _records_window(path: Path) -> bool:
    """Whether the PNG at ``path`` records the window lowdose wrote it through."""
    from PIL import Image

    from lowdose.io.formats.png import WINDOW_KEY

    try:
        with Image.open(path) as img:
            return WINDOW_KEY in (getattr(img, "text", {}) or {})
    except (OSError, SyntaxError, ValueError):  # unreadable: the reader says why, by name
        return False


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
        None, "--pixel-size", min=0.01, help="Pixel size (mm) when the files carry none (npy)."
    ),
    slice_thickness: float | None = typer.Option(
        None, "--slice-thickness", min=0.01,
        help="Slice thickness (mm) when the files carry none (npy)."
    ),
    roi: int = typer.Option(32, "--roi", min=8, help="Side (px) of the flat noise ROIs."),
    seed: int = typer.Option(0, "--seed", help="Noise seed of the fit."),
) -> None:
    """Fit I0 and the FBP window so simulated low dose matches your real low-dose scans.

    Example: lowdose calibrate ../shared/data/mayo-l506-pairs/npy --out mayo.json
    """
    from tqdm import tqdm

    from lowdose.io.atomic import check_output_place
    from lowdose.physics.calibration import fit_calibration, load_pairs

    if output.resolve().is_relative_to(pairs.resolve()):
        raise LowdoseError(f"{output}: write the calibration outside the pairs folder")
    check_output_place(output)  # before the fit: a file where a folder must be, say
    if output.is_dir():
        raise LowdoseError(f"--out {output}: is a folder; give a file name (e.g. my-scanner.json)")
    loaded = load_pairs(pairs, pixel_size_mm=pixel_size, npy_scale=npy_scale,
                        slice_thickness_mm=slice_thickness)
    typer.echo(f"{len(loaded)} pair(s) from {pairs}")
    if any(p.pixel_assumed for p in loaded):
        typer.echo("note: no pixel size in the files; assumed 0.742 mm (give --pixel-size)")
    if any(p.thickness_mm is None for p in loaded):
        typer.echo("note: no slice thickness in the files, so the calibration states none and "
                   "its I0 is not scaled to other thicknesses (a 1 mm slice would get a thicker "
                   "slice's noise level); give --slice-thickness (the Mayo npy slices: 3 mm)")
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
