"""Simulating low dose for files, DICOM series, NIfTI volumes and class-folder datasets on disk.

The API behind ``lowdose simulate``: read with :func:`lowdose.io.read_ct`, simulate slice by
slice with :func:`lowdose.physics.simulate_low_dose`, write in the input's format with
:func:`lowdose.io.write_ct`. Each output's noise seed comes from the run's seed, the file's
path relative to the input and the dose, so one seed reproduces a run in any order.

Values below -1024 HU (DICOM padding, a display window's floor) are read as air (-1024);
NaN or values above 30720 HU are refused.

Example:
    >>> simulate_path("FD.nii.gz", "LD.nii.gz", doses=[0.25], seed=0)  # doctest: +SKIP
    [PosixPath('LD.nii.gz')]
"""

from __future__ import annotations

import os
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lowdose.errors import LowdoseError
from lowdose.image import HU_MIN, CTImage, Window
from lowdose.physics.checks import check_dose

if TYPE_CHECKING:
    import torch

    from lowdose.physics.base import LowDoseSimulator


@dataclass
class Job:
    """One thing to simulate: an input (file or series folder) and its output per dose;
    ``read`` reads it where ``read_ct(source)`` would not (one series of several)."""

    source: Path
    relative: Path
    is_series: bool = False
    read: Callable[[], CTImage] | None = None


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _is_series_folder(folder: Path) -> bool:
    """A folder is one DICOM series when its files (not subfolders) hold a DICOM series."""
    from lowdose.io.formats.dicom import scan_folder

    if any(p.is_dir() for p in folder.iterdir()):
        return False
    scan = scan_folder(folder)
    return bool(scan.series)


def plan_jobs(source: Path, series: str | None = None) -> list[Job]:
    """What to simulate under ``source``: one file, one DICOM series, or every image of a tree.
    A folder from which a ``series`` is named is one series folder, even with subfolders (viewer
    exports keep captures or other series in them); ``series="all"``: one job per series, each
    written to a subfolder named by its number and description."""
    from lowdose.io.read import ALL_SERIES, IMAGE_FILE_SUFFIXES, each_series

    if not source.exists():
        raise LowdoseError(f"{source}: no such file or folder")
    if series == ALL_SERIES:
        return [Job(source, Path(name), is_series=True, read=read)
                for name, read in each_series(source)]
    if source.is_file():
        return [Job(source, Path(source.name))]
    if series is not None or _is_series_folder(source):
        return [Job(source, Path("."), is_series=True)]
    jobs = []
    for path in sorted(source.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and (
            _suffix(path) in IMAGE_FILE_SUFFIXES
        ):
            jobs.append(Job(path, path.relative_to(source)))
    if not jobs:
        raise LowdoseError(
            f"{source}: no images found (DICOM, NIfTI, .npy, PNG/JPEG) and no DICOM series"
        )
    return jobs


def job_seed(seed: int, relative: Path, dose: float) -> int:
    """A seed for one output, independent of the order files are processed in."""
    return zlib.crc32(f"{seed}|{relative.as_posix()}|{dose:.6g}".encode())


def _slice_thickness(image: CTImage) -> float | None:
    """Slice thickness from the header (DICOM), else the slice spacing of a volume, or of a
    one-slice NIfTI volume ``(X, Y, 1)`` (its affine's third axis, which a NIfTI of several
    slices would give too; a 2-D NIfTI has none)."""
    from lowdose.io.formats.nifti import SINGLE_SLICE_SPACING, STORED_2D

    value = image.metadata.get("slice_thickness")
    try:
        if value is not None and float(value) > 0:
            return float(value)
    except (TypeError, ValueError):
        pass
    if image.metadata.get("spacing_known") is False:
        return None
    if image.is_volume:
        return abs(float(image.spacing[0])) or None
    if image.metadata.get("format") == "nifti" and not image.metadata.get(STORED_2D, True):
        try:
            return abs(float(image.metadata[SINGLE_SLICE_SPACING])) or None
        except (KeyError, TypeError, ValueError):
            return None
    return None


def stated_window(image: CTImage, path: Path, window: Window | None) -> Window | None:
    """The window an 8-bit image was read through (``None`` for HU images); refuse an
    unstated one: its grey values say nothing about HU.

    Raises:
        LowdoseError: an 8-bit image read through the default window, ``window`` not given.
    """
    if "window" not in image.metadata:
        return None
    if window is None and str(image.metadata.get("window_source", "")).startswith("default"):
        raise LowdoseError(
            f"{path}: an 8-bit image without a stated HU window; pass --window (e.g. lung "
            "or -1350,150) so its grey values can be read as HU"
        )
    lo, hi = image.metadata["window"]
    return Window(float(lo), float(hi))


def projection_plane_note(image: CTImage, method: str) -> str | None:
    """A warning when the projection physics is handed coronal, sagittal or oblique slices: it
    simulates an axial scan, so it inserts the noise of an axial reconstruction into whatever
    plane it is given. ``None`` for axial or unknown slices, and for other methods.

    Example:
        >>> coronal = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
        >>> img = CTImage(np.zeros((8, 8), np.float32), (0.7, 0.7), direction=coronal)
        >>> projection_plane_note(img, "projection")[:27]
        'these slices are coronal; t'
        >>> projection_plane_note(img, "image-poisson") is None
        True
    """
    if method != "projection" or image.orientation in (None, "axial"):
        return None
    return (f"these slices are {image.orientation}; the projection physics simulates an axial "
            "scan, so it inserts noise with the axial texture into this plane. Simulate the "
            "axial series and reformat the result")


def source_dose_scale(method: str, dose: float, relative_dose: bool = False) -> float | None:
    """The simulated image's dose as a fraction of the input scan's own dose, or ``None`` where
    that is unknown: what a derived DICOM series scales its exposure tags (CTDIvol, mA, mAs) by,
    or removes them for (:data:`lowdose.io.formats.dicom.DOSE_SCALE`).

    ``projection`` with ``relative_dose`` inserts noise for ``dose`` of each slice's own dose:
    ``dose``. The calibrated ``projection`` takes ``dose`` of the calibration's full dose (an
    absolute I0), whose relation to the scan's own is unknown, except at ``dose = 1``, where it
    returns the input. ``image-poisson`` adds the noise of its 12-bit formula, the same whatever
    the scan's own dose (some even at ``dose = 1``): unknown.

    Example:
        >>> source_dose_scale("projection", 0.25, relative_dose=True)
        0.25
        >>> source_dose_scale("image-poisson", 0.25) is None
        True
    """
    if method == "image-poisson":
        return None
    if dose == 1.0 or relative_dose:
        return dose
    return None


def simulate_image(image: CTImage, dose: float, simulator: LowDoseSimulator, seed: int,
                   device: str | torch.device | None = None,
                   pixel_size_mm: float | None = None,
                   progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Low-dose HU pixels ``(N, H, W)`` of ``image`` at ``dose``, seeded by ``seed``;
    ``progress`` is called with the number of slices done after each batch.

    Values below -1024 HU are read as air first. A simulator with a ``pixel_size_mm`` (the
    projection physics) is given the image's pixel size (else ``pixel_size_mm``, else its own
    stated default) and slice thickness (header, else a volume's slice spacing).

    Example:
        >>> from lowdose.physics.api import build_simulator
        >>> img = CTImage(np.full((32, 32), 40.0, np.float32), spacing=(0.7, 0.7))
        >>> simulate_image(img, 0.25, build_simulator("image-poisson"), seed=1).shape
        (1, 32, 32)
    """
    import torch

    from lowdose.physics.api import simulate_low_dose
    from lowdose.physics.checks import check_hu_tensor

    raw = image.slices()
    # Below -1024 HU is never tissue: DICOM padding outside the reconstruction circle
    # (-2048, -3024) or the floor of a display window (lung: -1350). Both are air.
    hu = np.maximum(raw, HU_MIN)
    # Checked here too, where the file is known, with the values as read (not as floored).
    check_hu_tensor(torch.from_numpy(hu[:, None]), as_read=raw,
                    source=str(image.metadata.get("source") or "image"))
    if hasattr(simulator, "pixel_size_mm"):
        # unknown spacing: the given size, else the simulator's stated default
        simulator.pixel_size_mm = image.pixel_size_mm or pixel_size_mm
        simulator.slice_thickness_mm = _slice_thickness(image)
    return simulate_low_dose(hu, dose, seed=seed, device=device, simulator=simulator,
                             progress=progress)


def simulated_geometry(image: CTImage, simulator: LowDoseSimulator,
                       pixel_size_mm: float | None = None) -> dict[str, Any]:
    """What :meth:`CTImage.with_pixels` needs so a simulated image without a pixel size in its
    file (npy, PNG) carries the one its simulation used: the stated ``pixel_size_mm``, else the
    projection physics' default (the larger side spans 380 mm), with its source in the
    metadata. Empty for an image whose file holds its spacing, or when no pixel size was stated
    or used (``image-poisson`` needs none). Call it after :func:`simulate_image`.

    Example:
        >>> from lowdose.physics.api import build_simulator
        >>> img = CTImage(np.zeros((512, 512), np.float32), (1.0, 1.0),
        ...               metadata={"spacing_known": False})
        >>> simulated_geometry(img, build_simulator("image-poisson"), 0.7)["spacing"]
        (0.7, 0.7)
    """
    if image.pixel_size_mm is not None:
        return {}
    if pixel_size_mm is not None:
        pixel = float(pixel_size_mm)
        source = f"stated ({pixel:g} mm given for the simulation), not read from the input"
    elif hasattr(simulator, "pixel_for"):
        # the size simulate_image let the projection physics pick, by its own rule
        pixel = float(simulator.pixel_for(*image.shape[-2:]))
        source = (f"assumed ({pixel:g} mm: the projection physics' default, the larger side "
                  "spanning 380 mm), not read from the input")
    else:
        return {}
    meta: dict[str, Any] = {"spacing_known": True, "spacing_source": source}
    if image.is_volume:
        meta["slice_spacing_known"] = False  # only the in-plane size was stated or assumed
    return {"spacing": (*image.spacing[:-2], pixel, pixel), "metadata": meta}


def simulate_path(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    doses: Sequence[float],
    *,
    method: str = "projection",
    seed: int = 0,
    calibration: str | os.PathLike[str] | None = None,
    window: Window | None = None,
    npy_scale: str | None = None,
    series: str | None = None,
    pixel_size_mm: float | None = None,
    relative_dose: bool = False,
    device: str | None = None,
    progress: bool = True,
    per_dose_folders: bool | None = None,
) -> list[Path]:
    """Simulate ``doses`` for everything under ``source`` and write it under ``output``.

    One dose: ``output`` is the output file (or series folder, or dataset folder). Several
    doses, or ``per_dose_folders`` (``--doses``, even of one dose): ``output`` is a folder
    holding ``dose-<d>/`` with one tree per dose, each file in its input's format.

    Outputs are checked before the work (names, a folder that can be written, a series folder
    that may be replaced); in a tree, an input that fails is skipped with a warning and the
    others written, then one error counts the failed ones.

    Args:
        source: a file, a DICOM series folder, or a folder tree of images (class folders).
        output: see above; never the input or inside it.
        doses: fractions of the full dose in (0, 1].
        method: ``projection`` (calibrated physics) or ``image-poisson`` (the study's method).
        seed: the run's seed.
        calibration: a calibration JSON for ``projection`` (default: the shipped Mayo fit).
        window: HU window of 8-bit inputs (else the one a lowdose PNG recorded).
        npy_scale: how ``.npy`` values map to HU (``hu`` or ``mayo``).
        series: SeriesInstanceUID (or a unique part) to read when ``source`` is a folder of
            several DICOM series (then it is read as one series folder, subfolders included),
            or the series a DICOM file must belong to; ``"all"``: every series of the folder,
            each into a subfolder of ``output`` (of each dose's folder) named by its number and
            description.
        pixel_size_mm: pixel size for inputs without one (npy, PNG); default: the image's
            larger side spans 380 mm (0.742 mm for 512 pixels). The output carries the one
            used as its spacing, its ``spacing_source`` metadata saying stated or assumed.
        relative_dose: ``projection``: each dose is a fraction of each slice's own dose, read
            from its noise, not of the calibration's full dose.
        device: torch device (default: a GPU when present).
        progress: show a progress bar (in slices for one input or DICOM series, else in
            images).
        per_dose_folders: write ``dose-<d>/`` folders (default: with several doses).

    Returns:
        The paths written.

    Example:
        >>> simulate_path("fd.nii.gz", "ld", [0.1], per_dose_folders=True)  # doctest: +SKIP
        [PosixPath('ld/dose-0.1/fd.nii.gz')]
    """
    from lowdose.device import pick_device
    from lowdose.io import read_ct, write_ct
    from lowdose.io.atomic import check_output_place
    from lowdose.io.formats.dicom import DOSE_SCALE
    from lowdose.io.outputs import SkippedInputs, check_outputs, refuse_output_inside_input
    from lowdose.io.read import check_writable, written_name
    from lowdose.physics.api import build_simulator, relative_dose_options

    source, output = Path(source), Path(output)
    doses = [check_dose(d, "--dose") for d in doses]
    if not doses:
        raise LowdoseError("--dose: give at least one dose")
    if len(set(doses)) != len(doses):
        raise LowdoseError(f"--doses: repeated dose in {doses}")
    per_dose = len(doses) > 1 if per_dose_folders is None else per_dose_folders
    src, out = source.resolve(), output.resolve()
    if out == src or src in out.parents or (source.is_dir() and out in src.parents):
        raise LowdoseError(f"{output}: the output must not be the input or inside it (or hold it)")
    if source.exists():
        refuse_output_inside_input(source, output)  # symlinks' folders, a DICOM file's series
    options: dict[str, Any] = {}
    if calibration is not None:
        if method != "projection":
            raise LowdoseError("--calibration: only the projection method takes a calibration")
        options["calibration"] = Path(calibration)
    if relative_dose:
        options.update(relative_dose_options(method, "--relative-dose"))
    jobs = plan_jobs(source, series)
    if source.is_dir() and not any(job.is_series for job in jobs):  # a tree of images
        from lowdose.io.outputs import warn_skipped_files

        warn_skipped_files(source, [job.source for job in jobs])
    many = len(jobs) > 1 or jobs[0].is_series or per_dose
    if many and output.exists() and not output.is_dir():
        raise LowdoseError(f"{output}: expected a folder (a series, a dataset or several doses)")

    def dest_of(job: Job, dose: float) -> Path:
        root = output / f"dose-{dose:g}" if per_dose else output
        if job.is_series:
            return root / job.relative
        if len(jobs) == 1 and not per_dose:
            return output
        return root / written_name(job.relative)

    if len(jobs) > 1 or per_dose:  # a tree of outputs: checked, and older files said, now
        check_outputs(output, [dest_of(job, d) for job in jobs for d in doses],
                      folders=any(job.is_series for job in jobs),
                      # other doses' folders of an earlier run are that run's, not strays
                      expected=lambda rel: per_dose and rel.parts[0].startswith("dose-"))
    else:
        check_output_place(output)  # a name too long, a folder not writable: before the work
    target = pick_device(device)
    simulator = build_simulator(method, **options)
    reads: dict[str, Any] = {"window": window}
    if npy_scale is not None:
        reads["npy_scale"] = npy_scale
    if series is not None:
        reads["series"] = series

    # One input or DICOM series: a bar in slices (a long series moves); a tree: one in images.
    in_slices = len(jobs) == 1 or any(job.is_series for job in jobs)
    bar: Any = None
    written: list[Path] = []
    planes_said: set[str] = set()
    skipped = SkippedInputs(len(jobs), output) if len(jobs) > 1 else None

    def _simulate_job(job: Job) -> None:
        """Read, check, simulate and write one input at every dose."""
        nonlocal bar
        image = job.read() if job.read is not None else read_ct(job.source, **reads)
        for dose in doses:  # every output of this input checked before its work
            check_writable(image, dest_of(job, dose), folder_if_unknown=job.is_series)
        note = projection_plane_note(image, method)
        if note and note not in planes_said:  # once per plane, before the bar is drawn
            planes_said.add(note)
            warnings.warn(f"{image.metadata.get('source', 'input')}: {note}", stacklevel=3)
        if progress and bar is None:
            # Drawn once the first input reads, so an unreadable one is one error line alone.
            from tqdm import tqdm

            bar = tqdm(total=image.n_slices * len(doses) if in_slices else len(jobs) * len(doses),
                       desc=f"simulate {method}", unit="slice" if in_slices else "image")
        elif bar is not None and in_slices:  # each further series' slices, once it is read
            bar.total += image.n_slices * len(doses)
            bar.refresh()
        win = stated_window(image, job.source, window)
        for dose in doses:
            low = simulate_image(image, dose, simulator, job_seed(seed, job.relative, dose),
                                 device=target, pixel_size_mm=pixel_size_mm,
                                 progress=bar.update if bar is not None and in_slices else None)
            meta = {"simulated_dose": dose, "simulator": method, "simulation_seed": seed,
                    DOSE_SCALE: source_dose_scale(method, dose, relative_dose)}
            # An input without a pixel size (npy, PNG) gets the one simulated with, so the
            # output's geometry matches its noise.
            geometry = simulated_geometry(image, simulator, pixel_size_mm)
            meta.update(geometry.pop("metadata", {}))
            result = image.with_pixels(low, metadata=meta, **geometry)
            written.append(write_ct(
                result, dest_of(job, dose), window=win,
                description=f"lowdose {method} dose {dose:g}",
                folder_if_unknown=job.is_series,  # dose-0.5/ is a folder, not a '.5' file
            ))
            if bar is not None and not in_slices:
                bar.update(1)

    try:
        for job in jobs:
            try:
                _simulate_job(job)
            except LowdoseError as exc:
                if skipped is None:
                    raise
                skipped.add(exc)
                if bar is not None and not in_slices:
                    bar.n = min(bar.n + len(doses), bar.total)  # its images count as done
                    bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    if skipped is not None:
        skipped.finish()
    return written
