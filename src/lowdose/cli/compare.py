"""``lowdose compare FULL_DOSE OUT``: every denoiser on lower doses simulated from your scan."""

from __future__ import annotations

from pathlib import Path

import typer

from lowdose.cli.options import (
    npy_scale_option,
    parse_doses,
    parse_window,
    series_option,
    window_option,
)
from lowdose.errors import LowdoseError


def compare(
    full_dose: Path = typer.Argument(..., help="Full-dose CT: a file, DICOM series folder or "
                                     "NIfTI volume."),
    out: Path = typer.Argument(..., help="Output folder: compare.md, compare.json, compare.png "
                               "(and the images with --save-images). An earlier compare's "
                               "output there is replaced; a folder holding anything else is "
                               "refused."),
    doses: str = typer.Option("0.25", "--doses", help="Doses to simulate, e.g. 0.25,0.1."),
    models: str | None = typer.Option(
        None, "--models", "-m", help="Denoisers to compare, e.g. unet,bm3d,tv (names or weight "
        "files; default: every registered one that loads; see lowdose denoise --list); a "
        "classical one with settings after colons: bm3d:noise_model=ct."),
    method: str = typer.Option("projection", "--method", help="projection (calibrated physics) "
                               "or image-poisson (the original study's method)."),
    relative_dose: bool = typer.Option(
        False, "--relative-dose", help="projection: each dose is a fraction of the scan's own "
        "dose, read from its noise, not of the calibration's full dose."),
    calibration: Path | None = typer.Option(
        None, "--calibration", help="Calibration JSON from 'lowdose calibrate'."),
    seed: int = typer.Option(0, "--seed", help="Simulation seed: the same seed, the same low "
                             "dose."),
    slices: int = typer.Option(
        8, "--slices", min=0, help="Score this many evenly spaced slices of a volume (0: all)."),
    save_images: bool = typer.Option(
        False, "--save-images", help="Also write the full dose, each low dose and each "
        "restoration as NIfTI under OUT, to view side by side."),
    window: str | None = window_option(),
    npy_scale: str | None = npy_scale_option(),
    series: str | None = series_option(),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 (default: best)."),
    precision: str = typer.Option("fp32", help="Learned models: fp32 or bf16."),
    batch_size: int = typer.Option(4, min=1, help="Slices per denoiser call."),
) -> None:
    """Compare denoisers on your own full-dose CT: simulate each dose from it, restore it with
    every denoiser, and score the low dose and each restoration against the full dose
    (PSNR/SSIM in full range and soft-tissue window, RMSE in HU by tissue, seconds per slice).

    Example: lowdose compare fd-series/ cmp/ --doses 0.25,0.1 --models unet,bm3d,tv
    """
    from lowdose.evaluation.compare import (
        CompareConfig,
        compare_denoisers,
        earlier_output,
        markdown,
    )
    from lowdose.io.read import read_ct_picking

    if not full_dose.exists():
        raise LowdoseError(f"{full_dose}: no such file or folder")
    src, dst = full_dose.resolve(), out.resolve()
    if dst == src or (full_dose.is_dir() and src in dst.parents):
        raise LowdoseError(f"{out}: the output must not be the input or inside it")
    earlier_output(out, full_dose)  # a folder of anything but a comparison: refused before work
    from lowdose.io.atomic import check_output_place

    check_output_place(out / "compare.json")  # a file where its folder goes, an unwritable one
    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    if models is not None and not names:  # '-m ,' ran every denoiser, minutes of it
        raise LowdoseError(f"-m {models!r}: names no denoiser (leave -m out for all of them)")
    from lowdose.models.network import checked_precision

    checked_precision(precision)  # before the denoisers, which blamed a classical one for it
    cfg = CompareConfig(doses=parse_doses(doses), method=method,
                        relative_dose=relative_dose,
                        calibration=str(calibration) if calibration else None, denoisers=names,
                        seed=seed, slices=slices, batch_size=batch_size, device=device,
                        precision=precision, save_images=save_images)
    # An 8-bit image without --window reads through the window it recorded, else the lung
    # window, as denoise, score and info read it; compare_denoisers notes the default.
    image = read_ct_picking(full_dose, series, window=parse_window(window), npy_scale=npy_scale)
    result = compare_denoisers(image, cfg, out, progress=True,
                               warn=lambda m: typer.echo(f"warning: {m}", err=True))
    table = markdown(result)
    typer.echo(table[table.index("## Dose"):].split("\nFigure:")[0].rstrip())
    for name in ("compare.md", "compare.json", "compare.png"):
        typer.echo(f"wrote {out / name}")


def register(app: typer.Typer) -> None:
    """Add ``lowdose compare`` to app."""
    app.command("compare")(compare)
