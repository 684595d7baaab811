"""``lowdose info PATH [--series UID] [--window lo,hi] [--npy-scale mayo]``."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from lowdose.cli.options import npy_scale_option, parse_window, series_option


def info(
    path: Path = typer.Argument(..., help="A CT file (DICOM, NIfTI, .npy, PNG/JPEG) or a folder."),
    series: str | None = series_option(of="PATH"),
    window: str | None = typer.Option(
        None,
        "--window",
        help="HU window for 8-bit PNG/JPEG: 'lo,hi' or a name (default lung = -1350,150).",
    ),
    npy_scale: str | None = npy_scale_option(),
) -> None:
    """Print what a file or folder holds: kind, shape, spacing, HU range, series, skipped files.

    Example: lowdose info ../shared/data/ct-series-itkelastix-chest
    """
    from lowdose.io.formats.dicom import MixedSeriesError
    from lowdose.io.read import describe, format_inventory, format_series_table

    # Warnings (files skipped, irregular spacing) go to stdout as notes: stderr carries only
    # the one error line on failure.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            inventory = describe(
                path, window=parse_window(window), npy_scale=npy_scale, series=series
            )
        except MixedSeriesError as exc:
            # Say which series exist before the one error line, so the user can pick one.
            typer.echo(f"path:        {path}\nseries found: {len(exc.series)}")
            typer.echo("\n".join(format_series_table(exc.series)))
            raise
    typer.echo(format_inventory(inventory))
    notes = dict.fromkeys(str(w.message) for w in caught)
    for note in notes:
        if ": skipped " not in note:  # skipped files are listed above already
            typer.echo(f"note:        {note}")


def register(app: typer.Typer) -> None:
    """Add ``lowdose info`` to app."""
    app.command("info")(info)
