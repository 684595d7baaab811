"""``lowdose denoise IN OUT [--model NAME|WEIGHTS]`` and ``lowdose denoise --list``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from lowdose.cli.options import (
    npy_scale_option,
    plain_text,
    say_written,
    series_option,
    window_option,
)
from lowdose.errors import LowdoseError

if TYPE_CHECKING:
    from lowdose.image import CTImage, Window
    from lowdose.models.base import Denoiser


def list_denoisers() -> list[tuple[str, str]]:
    """``(name, one-line description)`` for every registered denoiser (a class, or a function
    that returns one); the default is marked, and the classical ones name the settings
    ``--set`` takes.

    Example:
        >>> dict(list_denoisers())["tv"][:30]
        'Isotropic total variation (Cha'
    """
    from lowdose.models.base import denoisers
    from lowdose.models.loading import DEFAULT_DENOISER, denoiser_settings, is_learned

    rows = []
    for name in denoisers.names():
        entry = denoisers.get(name)
        doc = (entry.__doc__ or "").strip().splitlines()
        line = plain_text(doc[0]) if doc else ""
        if not is_learned(entry) and (settings := denoiser_settings(name)):
            line += f" [--set {', '.join(settings)}]"
        rows.append((name + (" (default)" if name == DEFAULT_DENOISER else ""), line))
    return rows


def denoise_path(
    src: str | Path,
    dst: str | Path,
    model: str | None = None,
    device: str | None = None,
    batch_size: int = 8,
    trust_pickle: bool = False,
    progress: bool = True,
    self_ensemble: bool = False,
    strength: float = 1.0,
    precision: str = "fp32",
    warn: Callable[[str], None] | None = None,
    series: str | None = None,
    npy_scale: str | None = None,
    window: str | None = None,
    along: str = "slices",
    settings: list[str] | None = None,
) -> list[Path]:
    """Denoise a file, a DICOM series folder, a NIfTI volume or a folder of images into ``dst``.

    A DICOM series is written back as a derived series when ``dst`` is a folder; a folder of
    other images becomes a folder of restored images with the same names. Never writes over
    the input. Returns the written paths. Inputs whose pixel size lies outside what the model
    was trained on, and reformats (coronal, sagittal, oblique slices), are reported through
    ``warn`` (default: :func:`warnings.warn`), once per distinct message. ``series`` picks one
    series of a folder holding several (``"all"``: each series into a subfolder of ``dst``
    named by its number and description); ``npy_scale`` says how ``.npy`` values map to HU
    (see :func:`lowdose.io.read_ct`). ``along="axial"`` denoises a coronal or sagittal volume
    along its axial planes instead of its own slices, as CT noise is made
    (``benchmarks/results/denoise_orientation.md``); axial input is denoised as it is.
    ``settings`` are a classical denoiser's ``KEY=VALUE`` settings
    (:func:`lowdose.models.loading.parse_settings`).

    Example:
        >>> denoise_path("qd.nii.gz", "restored.nii.gz", model="bm3d")  # doctest: +SKIP
    """
    from lowdose.cli.jobs import windowed_input_jobs
    from lowdose.errors import OnceEach
    from lowdose.io.outputs import run_each
    from lowdose.io.read import ALL_SERIES
    from lowdose.models.loading import (
        DEFAULT_DENOISER,
        load_denoiser,
        parse_settings,
        split_spec,
    )

    if along not in ALONG:
        raise LowdoseError(f"--along {along!r}: use one of {', '.join(ALONG)}")
    from lowdose.cli.options import parse_window

    # input and output errors before loading
    jobs = windowed_input_jobs(Path(src), Path(dst), series, npy_scale, window)
    denoiser = load_denoiser(model, device=device, trust_pickle=trust_pickle,
                             self_ensemble=self_ensemble, strength=strength,
                             precision=precision,
                             settings=parse_settings(split_spec(model or DEFAULT_DENOISER)[0],
                                                     settings or []))
    say = OnceEach(warn)
    # A tree of images: one bar over them; a file or series (--series all too): one of slices.
    tree = len(jobs) > 1 and series != ALL_SERIES
    given_window = parse_window(window)  # a PNG output's, where given
    return run_each(jobs, lambda out, read: _denoise_one(
        denoiser, read, out, along, batch_size, progress and not tree, say, given_window),
        Path(dst), warn,
        bar=f"denoise ({denoiser.name})" if progress and tree else None)


def _denoise_one(denoiser: Denoiser, read: Callable[[], CTImage], out: Path, along: str,
                 batch_size: int, progress: bool, say: Callable[[list[str | None]], None],
                 window: Window | None = None) -> Path:
    """Read one input, denoise it and write it to ``out`` (a PNG through ``window`` where
    given, else the one it was read through); the written path."""
    from lowdose.io import write_ct
    from lowdose.io.read import check_writable, from_series_folder

    image = read()
    check_writable(image, out, folder_if_unknown=from_series_folder(image))  # before work
    planes = along == "axial" and image.orientation not in (None, "axial")
    notes = [denoiser.pixel_size_note(image.pixel_size_mm)]
    if planes:
        notes.append(_axial_planes_note(image))
    elif note := denoiser.plane_note(image.orientation):
        can_turn = image.is_volume and image.orientation in ("coronal", "sagittal")
        notes.append(note + ("; or denoise this volume along its axial planes: --along "
                             "axial" if can_turn else ""))
    say(notes)
    if planes:
        restored = denoise_along_axial(denoiser, image, batch_size, progress)
    else:
        restored = denoiser.denoise_image(image, batch_size=batch_size, progress=progress)
    return write_ct(restored, out, description=f"lowdose {denoiser.name}", window=window,
                    folder_if_unknown=from_series_folder(image))

ALONG = ("slices", "axial")


def denoise_along_axial(denoiser: Denoiser, image: CTImage, batch_size: int = 8,
                        progress: bool = False) -> CTImage:
    """Denoise a coronal or sagittal volume along its axial planes (each image row of its
    slices stacked across the slices), then put the pixels back in the volume's own order.

    Raises:
        LowdoseError: ``image`` is one slice, or oblique (no axis of it runs head to foot).

    Example:
        >>> denoise_along_axial(load_denoiser("tv"), read_ct("coronal/"))  # doctest: +SKIP
    """
    import numpy as np

    from lowdose.image import CTImage

    source = image.metadata.get("source", "the input")
    if not image.is_volume:
        raise LowdoseError(f"{source}: --along axial needs a volume of reformatted slices; "
                           "this is one slice")
    if image.orientation == "oblique":
        raise LowdoseError(f"{source}: --along axial: an oblique series has no axial planes "
                           "among its axes")
    axis = image.axial_axis()
    assert axis is not None
    order = [axis, *(k for k in range(3) if k != axis)]
    planes = CTImage(np.ascontiguousarray(np.moveaxis(image.hu, axis, 0)),
                     spacing=tuple(image.spacing[k] for k in order))
    out = denoiser.denoise_image(planes, batch_size=batch_size, progress=progress).hu
    return image.with_pixels(np.moveaxis(out, 0, axis),
                             metadata={"denoiser": denoiser.name, "denoised_along": "axial"})


def _axial_planes_note(image: CTImage) -> str | None:
    """A warning when the axial planes of a reformatted volume have far from square pixels
    (the series' slice spacing against its pixel size): a denoiser sees them stretched."""
    axis = image.axial_axis()
    if axis is None:
        return None
    sizes = [s for k, s in enumerate(image.spacing) if k != axis]
    if max(sizes) <= 1.5 * min(sizes):
        return None
    return (f"the axial planes of this volume have {sizes[0]:.2f} x {sizes[1]:.2f} mm pixels "
            "(its slice spacing against its pixel size): the denoiser sees them stretched, "
            "and may remove less noise or blur along the longer side")


def register(app: typer.Typer) -> None:
    """Add ``denoise`` to ``app``."""

    @app.command("denoise")
    def denoise(
        src: Path | None = typer.Argument(None, help="Input: file, DICOM series folder, NIfTI "
                                          "volume, or folder of images."),
        dst: Path | None = typer.Argument(None, help="Output file or folder (never the input)."),
        model: str | None = typer.Option(
            None, "--model", "-m", help="Denoiser name (see --list) or a weight file / "
            "checkpoint folder. Default: the shipped default model. A classical one may carry "
            "its settings: bm3d:noise_model=ct (as --set)."),
        list_: bool = typer.Option(False, "--list", help="List the denoisers and exit."),
        device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 (default: best)."),
        batch_size: int = typer.Option(8, min=1, help="Slices per batch."),
        trust_pickle: bool = typer.Option(
            False, "--trust-pickle", help="Allow a pickle checkpoint (can run arbitrary code)."),
        self_ensemble: bool = typer.Option(
            False, "--self-ensemble", help="Learned models: average over the 8 flips and "
            "quarter turns of each slice (8x the time; +0.1 dB for the unet, +0.5-0.9 dB for "
            "the unpaired GANs on the real Mayo pairs, see the README)."),
        strength: float = typer.Option(
            1.0, min=0.0, max=3.0, help="Learned models: scale of the change made to the "
            "input (1 = as trained, < 1 keeps more texture, > 1 removes more noise)."),
        precision: str = typer.Option(
            "fp32", help="Learned models: fp32, or bf16 (a GPU, or a CPU with native bf16: "
            "2-3x faster there, about 1 HU rms of rounding; see the README)."),
        series: str | None = series_option(each=True),
        npy_scale: str | None = npy_scale_option(),
        window: str | None = window_option(writes=True),
        along: str = typer.Option(
            "slices", "--along", help="slices: denoise each slice as stored; axial: a coronal "
            "or sagittal volume along its axial planes, as CT noise is made (reformats denoised "
            "slice by slice lose 1-3.1 dB; see the README)."),
        settings: list[str] | None = typer.Option(
            None, "--set", help="BM3D and TV: a setting KEY=VALUE (repeatable; --list names "
            "them), e.g. --set sigma_hu=40 (a fixed strength in HU instead of one read from "
            "each slice's noise), --set noise_model=ct (BM3D with CT noise's power spectrum)."),
    ) -> None:
        """Restore a low-dose CT image, volume or DICOM series.

        Example: lowdose denoise qd.nii.gz restored.nii.gz --model red-cnn
        """
        from lowdose.cli.options import listed_or_need_io

        if listed_or_need_io("denoise", list_denoisers if list_ else None, src, dst):
            return
        say_written(denoise_path(src, dst, model, device, batch_size, trust_pickle,
                                 self_ensemble=self_ensemble, strength=strength,
                                 precision=precision, series=series, npy_scale=npy_scale,
                                 window=window,
                                 along=along, settings=settings,
                                 warn=lambda m: typer.echo(f"warning: {m}", err=True)), dst)
