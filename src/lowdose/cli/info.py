"""``lowdose info PATH [--series UID] [--window lo,hi] [--npy-scale mayo]``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from lowdose.cli.options import npy_scale_option, parse_window

if TYPE_CHECKING:
    from lowdose.image import CTImage
    from lowdose.io.formats.dicom import DicomScan


def info(
    path: Path = typer.Argument(..., help="A CT file (DICOM, NIfTI, .npy, PNG/JPEG) or a folder."),
    series: str | None = typer.Option(
        None, "--series", help="SeriesInstanceUID (or a unique part of it) of the one series "
        "to describe when PATH is a folder of several DICOM series (default: each of them)."),
    window: str | None = typer.Option(
        None,
        "--window",
        help="HU window for 8-bit PNG/JPEG: 'lo,hi' or a name (default lung = -1350,150).",
    ),
    npy_scale: str | None = npy_scale_option(),
) -> None:
    """Print what a file or folder holds: kind, shape, spacing, HU range, series, skipped files.

    A folder of several DICOM series: the series, then each one described in turn.

    Example: lowdose info ../shared/data/ct-series-itkelastix-chest
    """
    from lowdose.io.formats.dicom import MixedSeriesError
    from lowdose.io.read import ALL_SERIES, describe, format_inventory

    # Warnings (files skipped, irregular spacing) go to stdout as notes: stderr carries only
    # the one error line on failure.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if series == ALL_SERIES and path.is_dir():
                _describe_each(path)
            else:  # a file holds one series: --series all describes it as it is
                inventory = describe(path, window=parse_window(window), npy_scale=npy_scale,
                                     series=None if series == ALL_SERIES else series)
                typer.echo(format_inventory(inventory))
                typer.echo(noise_line(inventory.image))
        except MixedSeriesError as exc:
            if series is not None:
                raise  # the UID given matches several series: the error names them
            _describe_each(path, exc.scan)
    notes = dict.fromkeys(str(w.message) for w in caught)
    for note in notes:
        if ": skipped " not in note:  # skipped files are listed above already
            typer.echo(f"note:        {note}")


def _describe_each(folder: Path, scan: DicomScan | None = None) -> None:
    """The series table of ``folder``, then each series described in turn (``scan``: the
    folder's scan, where a first read made it)."""
    from lowdose.io.read import describe_each_series, format_inventory, format_series_table

    found, described = describe_each_series(folder, scan)
    typer.echo(f"path:        {folder}\nseries found: {len(found)}")
    typer.echo("\n".join(format_series_table(found)))
    for i, (name, inventory) in enumerate(described, 1):
        typer.echo(f"\nseries {i} of {len(described)} ({name}/):")
        typer.echo(format_inventory(inventory, with_path=False))
        typer.echo(noise_line(inventory.image))


def noise_line(image: CTImage) -> str:
    """The middle slice's reference-free noise reading, its texture and their split: the
    high-frequency part of the noise in flat tissue, how coarse the noise is, and its white and
    reconstruction-like parts (:func:`lowdose.metrics.noise.read_noise`; what BM3D's and TV's
    default strength follow).

    Example:
        >>> import numpy as np
        >>> from lowdose.image import CTImage
        >>> white = 40 + 20 * np.random.default_rng(0).standard_normal((128, 128))
        >>> noise_line(CTImage(white, spacing=(0.7, 0.7)))[:53]
        'noise:       20.0 HU high-pass reading in flat tissue'
    """
    import math

    from lowdose.metrics.noise import read_noise

    where = " (middle slice)" if image.is_volume else ""
    noise = read_noise(image.slices()[image.n_slices // 2])
    if not math.isfinite(noise["reading_hu"]):
        return f"noise:       no reading: too little flat tissue{where}"
    if not math.isfinite(noise["texture"]):
        return f"noise:       {noise['reading_hu']:.1f} HU high-pass reading in flat tissue{where}"
    return (f"noise:       {noise['reading_hu']:.1f} HU high-pass reading in flat tissue{where}; "
            f"texture {noise['texture']:.2f} (white noise 0.5; reconstructed CT 0.8-2.5): white "
            f"{noise['white_hu']:.1f} HU, correlated {noise['correlated_hu']:.1f} HU")


def register(app: typer.Typer) -> None:
    """Add ``lowdose info`` to app."""
    app.command("info")(info)
