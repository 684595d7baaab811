"""Compare denoisers on your own full-dose CT: simulate lower doses, restore, score.

The study (:mod:`lowdose.evaluation.study`) judges restorations by a classifier on a labelled
dataset; this is the image-quality half for any full-dose scan a user brings (a DICOM series, a
NIfTI volume, a slice): each dose is simulated from it (seeded, with the scan's pixel size and
thickness), every denoiser restores it, and :func:`lowdose.evaluation.score.score_images`
scores the low dose and each restoration against the full dose (PSNR/SSIM in both conventions,
RMSE in HU overall and by tissue), with the time each denoiser took. A volume is scored on a
few evenly spaced slices (``slices``), so that the slow classical methods stay affordable.

The full dose is the reference: it carries its own noise, so the gains read as "how close to
the full-dose scan", the convention of the Mayo benchmark (``benchmarks/denoise_mayo.py``).

Example:
    >>> cfg = CompareConfig(doses=[0.25, 0.1])
    >>> result = compare_denoisers(read_ct("fd.nii.gz"), cfg, out="cmp/")  # doctest: +SKIP
    >>> result["doses"]["0.25"]["methods"]["unet"]["gain_db_full"]  # doctest: +SKIP
    4.1
"""

from __future__ import annotations

import math
import platform
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lowdose.errors import LowdoseError, OnceEach
from lowdose.image import CTImage

#: The row of the unrestored simulated low dose.
LOW_DOSE = "low-dose input"
#: Slices of a volume scored by default (evenly spaced).
DEFAULT_SLICES = 8
#: The files a comparison writes at the top of its output folder (the images: with
#: ``save_images``); beside them, one ``dose-<d>/`` folder of ``.nii.gz`` images per dose.
OUTPUT_FILES = ("compare.md", "compare.json", "compare.png", "full-dose.nii.gz")
# Written once an earlier run's files are removed, removed once the report is written: a folder
# holding it is a comparison that was interrupted, which a rerun may replace.
IN_PROGRESS = ".compare-in-progress"
_DOSE_FOLDER = re.compile(r"dose-[0-9.e+-]+")
# What an interrupted atomic write of one of OUTPUT_FILES leaves (lowdose.io.atomic).
_PARTIAL = re.compile(r"\.(compare|full-dose\.nii)\.\w+\.partial\..+")


@dataclass
class CompareConfig:
    """What :func:`compare_denoisers` runs.

    Attributes:
        doses: fractions of the full dose to simulate, each in (0, 1].
        method: simulation method (``projection``: calibrated physics; ``image-poisson``: the
            original study's).
        relative_dose: ``projection``: each dose is a fraction of the scan's own dose, read
            from its noise, not of the calibration's full dose.
        calibration: a calibration JSON for ``projection`` (default: the shipped Mayo fit).
        denoisers: registered names or weight files; ``None``: every registered denoiser that
            loads (the others are reported as skipped).
        seed: the simulation's seed (one seed reproduces the low-dose images).
        slices: score at most this many evenly spaced slices of a volume; 0: all.
        batch_size: slices per denoiser call.
        device: ``cpu``, ``cuda``, ... (default: a GPU when present).
        precision: the learned denoisers' arithmetic, ``fp32`` or ``bf16``.
        save_images: also write the full dose, each low dose and each restoration as NIfTI.
    """

    doses: list[float] = field(default_factory=lambda: [0.25])
    method: str = "projection"
    relative_dose: bool = False
    calibration: str | None = None
    denoisers: list[str] | None = None
    seed: int = 0
    slices: int = DEFAULT_SLICES
    batch_size: int = 4
    device: str | None = None
    precision: str = "fp32"
    save_images: bool = False

    def __post_init__(self) -> None:
        from lowdose.physics.checks import check_dose

        self.doses = [check_dose(d, "--doses") for d in self.doses]
        if not self.doses:
            raise LowdoseError("--doses: give at least one dose")
        if len(set(self.doses)) != len(self.doses):
            raise LowdoseError(f"--doses: repeated dose in {self.doses}")
        if self.slices < 0:
            raise LowdoseError(f"--slices: 0 (all) or more, got {self.slices}")
        if self.calibration is not None and self.method != "projection":
            raise LowdoseError("--calibration: only the projection method takes a calibration")


def pick_slices(image: CTImage, n: int) -> CTImage:
    """At most ``n`` evenly spaced slices of a volume (every k-th, centred in the volume), with
    their geometry (:meth:`CTImage.every_nth`); ``n = 0``, a slice, or a volume of at most ``n``
    slices: the image itself.

    Example:
        >>> vol = CTImage(np.zeros((10, 4, 4), np.float32), spacing=(1.0, 0.7, 0.7))
        >>> sub = pick_slices(vol, 3)
        >>> sub.n_slices, sub.spacing[0]
        (3, 4.0)
    """
    if n <= 0 or not image.is_volume or image.n_slices <= n:
        return image
    step = math.ceil(image.n_slices / n)
    count = math.ceil(image.n_slices / step)
    start = (image.n_slices - 1 - (count - 1) * step) // 2
    return image.every_nth(step, start)


def earlier_output(out: Path, source: str | Path | None = None) -> list[Path]:
    """What an earlier comparison left in ``out``, which a new one replaces (nothing when
    ``out`` is new or empty): its files and ``dose-<d>/`` image folders, so that no image of
    a denoiser the new run leaves out stays beside a report that does not list it.

    Raises:
        LowdoseError: ``out`` is a file; it holds anything a comparison does not write, or no
            ``compare.json`` of one (a folder of the user's own: never emptied); or it holds
            ``source``, the full-dose input.

    Example:
        >>> import tempfile
        >>> earlier_output(Path(tempfile.mkdtemp()))
        []
    """
    if not out.exists():
        return []
    if not out.is_dir():
        raise LowdoseError(f"{out}: expected a folder")
    entries = sorted(out.iterdir())
    if not entries:
        return []
    if source is not None and out.resolve() in Path(source).resolve().parents:
        raise LowdoseError(f"{out}: the output must not hold the input ({source})")
    foreign = [p.name for p in entries if not _written_by_compare(p)]
    if foreign:
        listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3
                                           else "")
        raise LowdoseError(f"{out}: not empty and holds what lowdose compare does not write "
                           f"({listed}); give a new or empty output folder")
    if not (_is_comparison(out / "compare.json") or (out / IN_PROGRESS).is_file()):
        raise LowdoseError(f"{out}: not empty and holds no compare.json of an earlier lowdose "
                           "compare; give a new or empty output folder")
    return entries


def _written_by_compare(path: Path) -> bool:
    """Whether ``path``, in an output folder, is a name a comparison writes there (links:
    never, as removing one would be removing what it points to)."""
    if path.is_symlink():
        return False
    if path.is_file():
        return path.name in (*OUTPUT_FILES, IN_PROGRESS) or bool(_PARTIAL.fullmatch(path.name))
    if path.is_dir() and _DOSE_FOLDER.fullmatch(path.name):
        return all(p.is_file() and not p.is_symlink() and p.name.endswith(".nii.gz")
                   for p in path.iterdir())
    return False


def _is_comparison(path: Path) -> bool:
    """Whether ``path`` is a ``compare.json`` as :func:`write_comparison` writes it."""
    import json

    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(saved, dict) and {"doses", "config", "scored_slices"} <= saved.keys()


def _remove(entries: list[Path]) -> None:
    import shutil

    for path in entries:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def window_note(image: CTImage) -> str | None:
    """A note when ``image`` is an 8-bit display image read through the default window (none
    stated, none recorded in the file): its HU, and so every score, rest on that window.

    Example:
        >>> img = CTImage(np.zeros((4, 4), np.float32), (0.7, 0.7),
        ...               metadata={"window": [-1350.0, 150.0], "window_source": "default (lung)"})
        >>> window_note(img)[:57]
        '8-bit display image read as HU through the default window'
    """
    meta = image.metadata
    if "window" not in meta or not str(meta.get("window_source", "")).startswith("default"):
        return None
    lo, hi = meta["window"]
    name = f"{meta['window_name']} " if meta.get("window_name") else ""
    return (f"8-bit display image read as HU through the default window, {name}[{lo:g}, "
            f"{hi:g}] HU (--window states another)")


def _load(cfg: CompareConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """The denoisers to compare by label (the denoiser's name; a second one of that name, a
    weight file say, or one given with settings, ``bm3d:noise_model=ct``, is labelled by what
    was given), and the registered ones skipped (name -> why)."""
    from lowdose.models.base import denoisers
    from lowdose.models.loading import load_denoiser, split_spec

    loaded: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for given in cfg.denoisers or denoisers.names():
        try:
            den = load_denoiser(given, device=cfg.device, precision=cfg.precision)
        except LowdoseError as exc:  # e.g. weights not shipped, bf16 refused on this CPU
            if cfg.denoisers:
                raise
            skipped[given] = str(exc)
            continue
        named = not split_spec(given)[1]  # a name with settings is labelled with them
        label = den.name if named and den.name not in loaded and den.name != LOW_DOSE else given
        if label in loaded:
            raise LowdoseError(f"--models: {given} is named twice")
        loaded[label] = den
    return loaded, skipped


def compare_denoisers(
    full: CTImage,
    cfg: CompareConfig | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Simulate each dose from ``full``, restore it with each denoiser, score everything
    against ``full``; with ``out``, write ``compare.json``, ``compare.md`` and ``compare.png``
    there (and the images, with ``cfg.save_images``), in place of what an earlier comparison
    wrote there (:func:`earlier_output`: a folder holding anything else is refused).

    Notes that apply (a denoiser given pixels far from its training scale, or a reformat; the
    projection physics given a reformat) go to ``warn`` (default: :func:`warnings.warn`), once.

    Returns:
        ``{"source", "scored_slices", "doses": {"<dose>": {"methods": {label: scores}}}, ...}``
        with, per label, the scores of :func:`lowdose.evaluation.score.score_images`, the gains
        over the low dose (``gain_db_full``, ``gain_db_window``) and ``seconds_per_slice``.

    Example:
        >>> img = CTImage(np.full((2, 64, 64), 40.0, np.float32), spacing=(2.0, 0.7, 0.7))
        >>> cfg = CompareConfig(doses=[0.25], method="image-poisson", denoisers=["tv"])
        >>> sorted(compare_denoisers(img, cfg)["doses"]["0.25"]["methods"])
        ['low-dose input', 'tv']
    """
    import torch

    from lowdose.device import pick_device
    from lowdose.evaluation.score import score_images
    from lowdose.metrics.image import RANGES, tissue_masks
    from lowdose.metrics.noise import read_noise
    from lowdose.physics.api import build_simulator, relative_dose_options
    from lowdose.physics.batch import projection_plane_note, simulate_image

    cfg = cfg or CompareConfig()
    out = Path(out) if out is not None else None
    # Refused before any work; an earlier run's files are removed only once this one can run.
    stale = earlier_output(out, full.metadata.get("source")) if out is not None else []
    say = OnceEach(warn)
    say([window_note(full)])
    scored = pick_slices(full, cfg.slices)
    dens, skipped = _load(cfg)
    for den in dens.values():
        say([den.pixel_size_note(scored.pixel_size_mm), den.plane_note(scored.orientation)])
    say([projection_plane_note(scored, cfg.method)])
    options: dict[str, Any] = {}
    if cfg.calibration is not None:
        options["calibration"] = Path(cfg.calibration)
    if cfg.relative_dose:
        options.update(relative_dose_options(cfg.method, "--relative-dose"))
    simulator = build_simulator(cfg.method, **options)
    target = pick_device(cfg.device)
    _remove(stale)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / IN_PROGRESS).write_text("a lowdose compare writes here; removed when it ends\n")
    if out is not None and cfg.save_images:
        _save(scored, out / "full-dose.nii.gz")

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(cfg.doses) * (1 + len(dens)), desc="compare", unit="step")
    # One small call each before any timing: a denoiser's first call pays one-time costs (a
    # lazy import, the first allocations) that its seconds per slice would otherwise carry.
    corner = np.ascontiguousarray(scored.slices()[:1, :64, :64], dtype=np.float32)
    with torch.inference_mode():
        for den in dens.values():
            den.denoise(torch.from_numpy(corner)[:, None])
    per_dose: dict[str, Any] = {}
    shown: dict[str, dict[str, np.ndarray]] = {}
    masks = tissue_masks(scored.slices())  # the reference's, for every image scored
    middle = scored.n_slices // 2
    try:
        for dose in cfg.doses:
            seed = zlib.crc32(f"{cfg.seed}|compare|{dose:.6g}".encode())
            low = scored.with_pixels(simulate_image(scored, dose, simulator, seed, target),
                                     metadata={"simulated_dose": dose, "simulator": cfg.method})
            # Each output is scored, its middle slice kept and (if asked) written as soon as
            # it is made: memory holds the scan, its low dose and one restoration at a time.
            scores = score_images(scored, {LOW_DOSE: low}, masks)
            scores[LOW_DOSE]["seconds_per_slice"] = 0.0
            shown[f"{dose:g}"] = {LOW_DOSE: low.slices()[middle].copy()}
            if out is not None and cfg.save_images:
                _save(low, out / f"dose-{dose:g}" / "low-dose.nii.gz")
            if bar is not None:
                bar.update(1)
            for label, den in dens.items():
                if bar is not None:
                    bar.set_postfix_str(f"dose {dose:g}, {label}")
                start = time.perf_counter()
                with torch.inference_mode():
                    restored = den.denoise_image(low, batch_size=cfg.batch_size)
                seconds = (time.perf_counter() - start) / scored.n_slices
                scores[label] = {**score_images(scored, {label: restored}, masks)[label],
                                 "seconds_per_slice": seconds}
                shown[f"{dose:g}"][label] = restored.slices()[middle].copy()  # not a view: frees it
                if out is not None and cfg.save_images:
                    name = re.sub(r"[^\w.-]+", "_", label)
                    _save(restored, out / f"dose-{dose:g}" / f"{name}.nii.gz")
                del restored
                if bar is not None:
                    bar.update(1)
            base = scores[LOW_DOSE]
            for entry in scores.values():
                entry["gain_db_full"] = entry["psnr_full"] - base["psnr_full"]
                entry["gain_db_window"] = entry["psnr_window"] - base["psnr_window"]
            per_dose[f"{dose:g}"] = {"methods": scores,
                                     "low_dose_noise": read_noise(low.slices()[middle])}
    finally:
        if bar is not None:
            bar.close()

    result = {
        "source": str(full.metadata.get("source", "image")),
        "shape": list(full.shape),
        "pixel_mm": scored.pixel_size_mm,
        "orientation": scored.orientation,
        "scored_slices": scored.n_slices,
        "of_slices": full.n_slices,
        "config": asdict(cfg),
        "conventions": {name: [w.lo, w.hi] for name, w in RANGES.items()},
        "reference": "the full-dose input itself (its own noise included)",
        "doses": per_dose,
        "skipped": skipped,
        "notes": sorted(say.said),
        "machine": f"{platform.machine()}, torch {torch.__version__}, device {target}",
    }
    if out is not None:
        write_comparison(result, out)
        compare_figure(scored.slices()[middle], shown, per_dose, out / "compare.png")
        (out / IN_PROGRESS).unlink(missing_ok=True)
    return result


def _save(image: CTImage, path: Path) -> None:
    from lowdose.io import write_ct

    write_ct(image, path)


def markdown(result: dict[str, Any]) -> str:
    """The comparison as Markdown: one table per dose, best PSNR first after the input.

    Example:
        >>> img = CTImage(np.full((64, 64), 40.0, np.float32), spacing=(0.7, 0.7))
        >>> cfg = CompareConfig(doses=[0.25], method="image-poisson", denoisers=["tv"])
        >>> markdown(compare_denoisers(img, cfg)).splitlines()[0]
        '# Denoisers compared on image'
    """
    conv = result["conventions"]
    cfg = result["config"]
    of = (f"{result['scored_slices']} evenly spaced of {result['of_slices']} slices"
          if result["scored_slices"] != result["of_slices"] else
          f"{result['scored_slices']} slice{'s' * (result['scored_slices'] != 1)}")
    pixel = f"{result['pixel_mm']:.3g} mm pixels" if result["pixel_mm"] else "pixel size unknown"
    dose_kind = (" of the scan's own dose" if cfg["relative_dose"] else "")
    lines = [
        f"# Denoisers compared on {result['source']}", "",
        f"Scored: {of}, {pixel}. Low dose: `{cfg['method']}` simulation{dose_kind}, seed "
        f"{cfg['seed']}. Reference: {result['reference']}. Conventions: full = HU clipped to "
        f"[{conv['full'][0]:g}, {conv['full'][1]:g}] scaled to [0, 1]; window = "
        f"[{conv['window'][0]:g}, {conv['window'][1]:g}] HU; RMSE in HU clipped to the full "
        "range, overall and in the reference's soft tissue and bone. s/slice: wall time on "
        f"{result['machine']}.",
    ]
    for dose, block in result["doses"].items():
        rows = block["methods"]
        order = [LOW_DOSE, *sorted((k for k in rows if k != LOW_DOSE),
                                   key=lambda k: -rows[k]["psnr_full"])]
        noise = block["low_dose_noise"]
        read = (f"Low dose, middle slice: noise reading {_num(noise['reading_hu'])} HU, texture "
                f"{_num(noise['texture'], 2)} (white noise 0.5; reconstructed CT 0.8-2.5): "
                f"white {_num(noise['white_hu'])} HU, correlated {_num(noise['correlated_hu'])} "
                "HU.")
        lines += ["", f"## Dose {dose}", "", read, "",
                  "| method | PSNR full | gain | SSIM full | PSNR window | gain | SSIM window "
                  "| RMSE HU | soft tissue HU | bone HU | s/slice |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for label in order:
            s = rows[label]
            lines.append(
                f"| {label} | {s['psnr_full']:.2f} | {s['gain_db_full']:+.2f} | "
                f"{s['ssim_full']:.4f} | {s['psnr_window']:.2f} | {s['gain_db_window']:+.2f} | "
                f"{s['ssim_window']:.4f} | {s['rmse_hu']:.1f} | "
                f"{_num(s['rmse_hu_soft_tissue'])} | {_num(s['rmse_hu_bone'])} | "
                f"{s['seconds_per_slice']:.2f} |")
    if result["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in result["skipped"].items())]
    if result["notes"]:
        lines += ["", "Notes:", *(f"- {note}" for note in result["notes"])]
    lines += ["", "Figure: compare.png (the middle scored slice, window [-160, 240] HU).", ""]
    return "\n".join(lines)


def _num(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "-"


def write_comparison(result: dict[str, Any], out: Path) -> None:
    """``compare.json`` (strict JSON: ``null`` for what is not finite) and ``compare.md``."""
    from lowdose.io.atomic import atomic_write_json, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "compare.json", result)
    atomic_write_text(out / "compare.md", markdown(result))


def compare_figure(full: np.ndarray, shown: dict[str, dict[str, np.ndarray]],
                   per_dose: dict[str, Any], path: Path) -> None:
    """One row per dose: the full dose, the low dose and each restoration of one slice, its
    central half, in the window [-160, 240] HU, each titled with its window PSNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lowdose.io.atomic import atomic_path

    h, w = full.shape
    rows, cols = slice(h // 4, h - h // 4), slice(w // 4, w - w // 4)
    labels = list(next(iter(shown.values())))
    fig, axes = plt.subplots(len(shown), len(labels) + 1, squeeze=False, layout="constrained",
                             figsize=(1.9 * (len(labels) + 1), 2.3 * len(shown)))
    for r, (dose, images) in enumerate(shown.items()):
        panels = [("full dose", full, None), *((label, images[label], label) for label in labels)]
        for c, (title, img, key) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img[rows, cols], cmap="gray", vmin=-160, vmax=240)
            if key is not None:
                psnr = per_dose[dose]["methods"][key]["psnr_window"]
                title = f"{title}\n{psnr:.1f} dB" + (f" (dose {dose})" if key == LOW_DOSE else "")
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
