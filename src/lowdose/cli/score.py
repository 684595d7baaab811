"""``lowdose score REFERENCE IMAGE [IMAGE ...] [--json OUT]``: image metrics on your own data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from lowdose.cli.options import npy_scale_option, parse_window, series_option

if TYPE_CHECKING:
    from lowdose.image import CTImage


def score(
    reference: Path = typer.Argument(..., help="The full-dose reference: a file, DICOM series "
                                     "folder or NIfTI volume."),
    images: list[Path] = typer.Argument(..., help="Images on the reference's grid to score "
                                        "(restorations, or the low-dose scan itself)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the scores here."),
    diff: Path | None = typer.Option(
        None, "--diff", help="Also write each image minus the reference (HU, NIfTI) into this "
        "folder, to view where it changed structure."),
    window: str | None = typer.Option(
        None, "--window", help="HU window of 8-bit PNG/JPEG inputs: 'lo,hi' or a name."),
    npy_scale: str | None = npy_scale_option(),
    reference_series: str | None = series_option("--reference-series", of="REFERENCE"),
    series: str | None = series_option(of="an IMAGE"),
) -> None:
    """Score images against a full-dose reference: PSNR/SSIM (full range and soft-tissue
    window) and RMSE in HU, overall and by tissue of the reference (outside the body, lung and
    gas, soft tissue, bone).

    Example: lowdose score fd.nii.gz qd.nii.gz restored.nii.gz --json scores.json
    """
    from lowdose.errors import LowdoseError
    from lowdose.evaluation.score import (
        display_window_notes,
        display_windows,
        format_scores,
        score_images,
    )
    from lowdose.io.atomic import atomic_write_json
    from lowdose.io.outputs import refuse_output_over_inputs
    from lowdose.io.read import read_ct_picking
    from lowdose.metrics.image import RANGES

    conventions = {name: [w.lo, w.hi] for name, w in RANGES.items()}
    # Before the scoring: --json over an input wrote JSON text into the scan.
    for out, option in ((json_out, "--json"), (diff, "--diff")):
        if out is not None:
            refuse_output_over_inputs(out, [reference, *images], option)
    if diff is not None and diff.exists() and not diff.is_dir():
        raise LowdoseError(f"--diff {diff}: is a file; give a folder for the difference images")
    if json_out is not None and json_out.is_dir():
        raise LowdoseError(f"--json {json_out}: is a folder; give a file name")

    hu_window = parse_window(window)
    ref = _read_reference(reference, window=hu_window, npy_scale=npy_scale,
                          series=reference_series)
    labels = [str(p) for p in images]
    if len(set(labels)) != len(labels):
        raise typer.BadParameter("an image is named twice")
    loaded = {label: read_ct_picking(path, series, window=hu_window, npy_scale=npy_scale)
              for label, path in zip(labels, images, strict=True)}
    scores = score_images(ref, loaded)
    read = {str(reference): ref, **loaded}
    for note in display_window_notes(read):
        typer.echo(f"warning: {note}", err=True)
    full, window_hu = ([f"{v:g}" for v in conventions[k]] for k in ("full", "window"))
    typer.echo(f"reference: {reference} (full: HU clipped to [{', '.join(full)}]; window: "
               f"[{', '.join(window_hu)}] HU; RMSE HU clipped to the full range, overall and by "
               "the reference's tissue)")
    typer.echo(format_scores(scores))
    if diff is not None:
        from lowdose.evaluation.score import difference_image
        from lowdose.io import write_ct

        stems = [_stem(p) for p in images]
        for i, image in enumerate(loaded.values()):
            stem = stems[i] if stems.count(stems[i]) == 1 else f"{i + 1}-{stems[i]}"
            path = write_ct(difference_image(ref, image),
                            diff / f"{stem}-minus-reference.nii.gz")
            typer.echo(f"wrote {path}")
    if json_out is not None:
        # Strict JSON: null for what is not finite (the PSNR of an image identical to the
        # reference, the RMSE of a tissue the reference lacks).
        record = {"reference": str(reference), "scores": scores, "conventions": conventions,
                  "null": "not finite: infinite PSNR (identical images) or no pixel of a tissue"}
        if windows := display_windows(read):  # 8-bit images: their HU rest on this window
            record["read_through_window_hu"] = windows
        atomic_write_json(json_out, record)
        typer.echo(f"wrote {json_out}")


def _read_reference(path: Path, **options: Any) -> CTImage:
    """The reference, with the option that picks its series named as score spells it."""
    from lowdose.errors import LowdoseError
    from lowdose.io import read_ct
    from lowdose.io.formats.dicom import MixedSeriesError

    try:
        return read_ct(path, **options)
    except MixedSeriesError as exc:
        raise LowdoseError(str(exc).replace("--series UID", "--reference-series UID")) from None


def _stem(path: Path) -> str:
    """``restored`` for ``restored.nii.gz``, a folder's own name for a DICOM series."""
    from lowdose.io.read import IMAGE_FILE_SUFFIXES

    name = path.name
    suffix = next((s for s in IMAGE_FILE_SUFFIXES if name.lower().endswith(s)), "")
    return name[: len(name) - len(suffix)]


def register(app: typer.Typer) -> None:
    """Add ``lowdose score`` to app."""
    app.command("score")(score)
