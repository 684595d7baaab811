"""``lowdose upscale IN OUT --scale 2|4 [--model NAME|WEIGHTS]`` and ``lowdose upscale --list``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from lowdose.cli.options import npy_scale_option, say_written, series_option, window_option
from lowdose.errors import LowdoseError

if TYPE_CHECKING:
    from lowdose.image import CTImage


def list_upscalers() -> list[tuple[str, str]]:
    """``(name and scale, first line of its model card)`` of every shipped upscaler.

    Example:
        >>> list_upscalers()[0][0]
        'gan-circle --scale 2 (default)'
    """
    from lowdose.cli.options import plain_text
    from lowdose.models.gan_circle import (
        DEFAULT_UPSCALER,
        shipped_upscaler_path,
        shipped_upscalers,
    )

    rows = []
    for name, scale in shipped_upscalers():
        card = shipped_upscaler_path(name, scale).with_suffix(".md")
        title = card.read_text().splitlines()[0].split(": ", 1)[-1] if card.is_file() else ""
        title = plain_text(title)  # a card's title may quote code as a docstring does
        default = " (default)" if name == DEFAULT_UPSCALER else ""
        rows.append((f"{name} --scale {scale}{default}", title))
    return rows


def upscale_path(
    src: str | Path,
    dst: str | Path,
    scale: int = 2,
    model: str | None = None,
    device: str | None = None,
    batch_size: int = 4,
    progress: bool = True,
    precision: str = "fp32",
    series: str | None = None,
    npy_scale: str | None = None,
    window: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[Path]:
    """Upscale a CT file, volume, DICOM series or folder of images in-plane by ``scale`` into
    ``dst``.

    The output has the in-plane spacing divided by ``scale`` and the same field of view; a DICOM
    series is written as a derived series (new series UID, patient and study kept), a folder of
    images (NIfTI, npy, PNG) as a folder of upscaled images with the same names. Never writes
    over the input. Inputs whose pixel size lies outside what the model was trained on, and
    reformats (coronal, sagittal, oblique slices), are reported through ``warn`` (default:
    :func:`warnings.warn`), once per distinct message. ``series`` picks one series of a folder
    holding several (``"all"``: each series into a subfolder of ``dst`` named by its number
    and description); ``npy_scale`` says how ``.npy`` values map to HU (see
    :func:`lowdose.io.read_ct`). Returns the written paths.

    Example:
        >>> upscale_path("series/", "series-x2/", scale=2)  # doctest: +SKIP
        [PosixPath('series-x2')]
    """
    from lowdose.cli.jobs import windowed_input_jobs
    from lowdose.cli.options import parse_window
    from lowdose.errors import OnceEach
    from lowdose.io import write_ct
    from lowdose.io.outputs import run_each
    from lowdose.io.read import ALL_SERIES, check_writable, from_series_folder
    from lowdose.models.gan_circle import load_upscaler

    # input and output errors before loading
    jobs = windowed_input_jobs(Path(src), Path(dst), series, npy_scale, window)
    upscaler = load_upscaler(model, scale=scale, device=device, precision=precision)
    say = OnceEach(warn)
    # A tree of images: one bar over them; a file or series (--series all too): one of slices.
    tree = len(jobs) > 1 and series != ALL_SERIES
    given_window = parse_window(window)  # a PNG output's, where given

    def upscale_one(out: Path, read: Callable[[], CTImage]) -> Path:
        image = read()
        check_writable(image, out, folder_if_unknown=from_series_folder(image))  # first
        say([upscaler.pixel_size_note(image.pixel_size_mm),
             upscaler.plane_note(image.orientation)])
        image = upscaler.upscale_image(image, batch_size=batch_size,
                                       progress=progress and not tree)
        return write_ct(image, out, description=f"lowdose gan-circle x{scale}",
                        window=given_window, folder_if_unknown=from_series_folder(image))

    return run_each(jobs, upscale_one, Path(dst), warn,
                    bar=f"upscale x{scale}" if progress and tree else None)


def register(app: typer.Typer) -> None:
    """Add ``upscale`` to ``app``."""

    @app.command("upscale")
    def upscale(
        src: Path | None = typer.Argument(
            None, help="Input: file, DICOM series folder, NIfTI volume, or folder of images."),
        dst: Path | None = typer.Argument(None, help="Output file or folder (never the input)."),
        scale: int = typer.Option(2, "--scale", "-s", help="In-plane factor: 2 or 4."),
        model: str | None = typer.Option(
            None, "--model", "-m",
            help="A shipped upscaler (see --list; default gan-circle) or a x2/x4 weight file."),
        list_: bool = typer.Option(False, "--list", help="List the shipped upscalers and exit."),
        device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 (default: best)."),
        batch_size: int = typer.Option(4, min=1, help="Slices per batch."),
        precision: str = typer.Option(
            "fp32", help="fp32, or bf16 (a GPU, or a CPU with native bf16: faster there)."),
        series: str | None = series_option(each=True),
        npy_scale: str | None = npy_scale_option(),
        window: str | None = window_option(writes=True),
    ) -> None:
        """Super-resolve CT slices in-plane with GAN-CIRCLE (spacing divided by the scale).

        Example: lowdose upscale series/ series-x2/ --scale 2
        """
        from lowdose.cli.options import listed_or_need_io

        if listed_or_need_io("upscale", list_upscalers if list_ else None, src, dst):
            return
        if scale not in (2, 4):
            raise LowdoseError(f"--scale must be 2 or 4, got {scale}")
        say_written(upscale_path(src, dst, scale, model, device, batch_size, precision=precision,
                                 series=series, npy_scale=npy_scale, window=window,
                                 warn=lambda m: typer.echo(f"warning: {m}", err=True)), dst)
