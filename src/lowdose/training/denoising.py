"""Supervised denoiser training: typed configs, YAML presets, paired patch data, the family.

Data: full-dose CT slices (DICOM, NIfTI, npy) with low dose simulated by the calibrated physics
(``lowdose.physics.simulate_low_dose``; ``projection`` by default), ``realisations`` seeded noise
draws per slice computed once and cached on disk; or the user's real low/full pairs. Patches
are drawn at random (mostly inside the body) with random flips and 90-degree turns applied to
both images alike. Every draw is a function of the sample index, so the trainer's seeded
sample order reproduces a run.

Example:
    >>> cfg = load_preset("cpu")
    >>> cfg.trainer.batch_size > 0 and cfg.data.patch_size > 0
    True
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lowdose.errors import LowdoseError
from lowdose.io.formats.dicom import DICOM_SUFFIXES
from lowdose.models.network import NetworkDenoiser
from lowdose.settings import (
    checked_bool,
    checked_choice,
    checked_float,
    checked_int,
    checked_text,
)
from lowdose.training.base import TrainingFamily
from lowdose.training.presets import CONFIG_DIR, merge_settings, read_preset, shipped_names
from lowdose.training.trainer import (
    Trainer,
    TrainerConfig,
    TrainResult,
    finished_result,
    refuse_changed_resume,
)

CT_SUFFIXES = (*DICOM_SUFFIXES, ".nii", ".nii.gz", ".npy")


@dataclass
class DataConfig:
    """Where training pairs come from and how patches are drawn.

    Attributes:
        dose: simulated dose fraction, or a list of them (ignored for real pairs). With several,
            every slice gets ``realisations`` draws at each dose, so the model learns the whole
            range of noise levels instead of one (real scans vary: tube-current modulation and
            patient size change the noise from slice to slice).
        method: the simulator (``projection``, the calibrated default, or ``image-poisson``).
        relative_dose: ``projection`` only: ``dose`` is a fraction of each slice's own dose, read
            from its noise (``(1 - dose) / dose`` times its noise power inserted), instead of
            the calibration's full dose. Training sets whose scans are noisier than the
            calibration's protocol otherwise get too little noise inserted relative to their
            own, and a model trained on them keeps too much of a real quarter dose's noise.
        realisations: noise draws per full-dose slice, simulated once and cached.
        patch_size: side of the square training patches.
        samples_per_epoch: distinct (slice, draw, position) samples in one pass.
        min_body_fraction: reject patches with less than this fraction above -900 HU (air).
        val_slices: full-dose slices held out for validation (spread over the data), at most
            a quarter of them (:func:`validation_indices`): a set of under 4 slices trains on
            all of them.
        slice_stride: keep every k-th slice of each ``--data`` source (contiguous series are
            redundant; simulating fewer slices saves time).
        max_artifact_hu: drop slices whose simulated low dose differs from the full dose by
            more than this RMS in 15x15 local means: that is structure (streaks from metal, or
            an object wider than the scan field), not noise, and a few such slices dominate an
            MSE loss.
        cache_dir: where simulated realisations are cached (default ``<out>/cache``).
        bin: average each full-dose slice over ``bin`` x ``bin`` pixels before the low dose is
            simulated, so the model learns at ``bin`` times the pixel size: for data used at
            coarse pixels (a network learns the noise and anatomy of the scale it is shown;
            ``benchmarks/results/study_clean_input.md``).
    """

    dose: float | list[float] = 0.25
    method: str = "projection"
    relative_dose: bool = False
    realisations: int = 4
    patch_size: int = 64
    samples_per_epoch: int = 100_000
    min_body_fraction: float = 0.3
    val_slices: int = 4
    slice_stride: int = 1
    max_artifact_hu: float = 20.0
    cache_dir: str | None = None
    bin: int = 1

    def __post_init__(self) -> None:
        from lowdose.physics.base import simulators
        from lowdose.physics.checks import check_dose

        if isinstance(self.bin, bool) or not isinstance(self.bin, int | float) \
                or int(self.bin) != self.bin or self.bin < 1:
            raise LowdoseError(f"data.bin must be a whole number >= 1, got {self.bin!r}")
        self.bin = int(self.bin)

        doses = self.dose if isinstance(self.dose, list | tuple) else [self.dose]
        if not doses:
            raise LowdoseError("data.dose: give at least one dose fraction")
        checked = [check_dose(d, "data.dose") for d in doses]
        self.dose = checked[0] if len(checked) == 1 else checked
        # Checked now, when the preset is loaded: a wrong type or range otherwise fails (or
        # trains on nothing) only after the slices were read and simulated.
        self.method = checked_choice(self.method, "data.method", simulators.names())
        self.relative_dose = checked_bool(self.relative_dose, "data.relative_dose")
        for name, minimum in (("realisations", 1), ("patch_size", 1), ("samples_per_epoch", 1),
                              ("val_slices", 0), ("slice_stride", 1)):
            setattr(self, name, checked_int(getattr(self, name), f"data.{name}", minimum))
        self.min_body_fraction = checked_float(self.min_body_fraction, "data.min_body_fraction",
                                               0, 1)
        # inf: keep every slice (no artifact check)
        self.max_artifact_hu = checked_float(self.max_artifact_hu, "data.max_artifact_hu", 0,
                                             open_low=True, infinite=True)
        self.cache_dir = checked_text(self.cache_dir, "data.cache_dir")
        if self.relative_dose:
            from lowdose.physics.api import relative_dose_options

            relative_dose_options(self.method, "data.relative_dose")  # refused here, early

    @property
    def doses(self) -> list[float]:
        """The simulated dose fractions as a list (one element for a single dose)."""
        return list(self.dose) if isinstance(self.dose, list) else [self.dose]


@dataclass
class OptimConfig:
    """Adam with a linear warm-up and a cosine decay to ``lr * final_lr_fraction``."""

    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 200
    final_lr_fraction: float = 0.02
    loss: str = "mse"

    def __post_init__(self) -> None:
        self.lr = checked_float(self.lr, "optim.lr", 0, open_low=True)
        betas = self.betas
        if not isinstance(betas, list | tuple) or len(betas) != 2:
            raise LowdoseError(f"optim.betas: {betas!r} is not a pair of numbers in [0, 1)")
        self.betas = (checked_float(betas[0], "optim.betas", 0, 1, open_high=True),
                      checked_float(betas[1], "optim.betas", 0, 1, open_high=True))
        self.weight_decay = checked_float(self.weight_decay, "optim.weight_decay", 0)
        self.warmup_steps = checked_int(self.warmup_steps, "optim.warmup_steps", 0)
        self.final_lr_fraction = checked_float(self.final_lr_fraction, "optim.final_lr_fraction",
                                               0, 1)
        if self.loss not in ("mse", "l1", "charbonnier"):
            raise LowdoseError(f"optim.loss: use mse, l1 or charbonnier, not {self.loss!r}")


@dataclass
class DenoiserTrainConfig:
    """Everything one denoiser training needs; YAML presets fill it (see ``configs/``)."""

    model: str = "unet"
    arch: dict[str, Any] = field(default_factory=dict)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        # The model and its architecture are checked when the preset is loaded, not after the
        # data work (train_denoiser builds the network only then).
        cls = learned_model(self.model)
        if self.arch is None:
            self.arch = {}
        if not isinstance(self.arch, dict):
            raise LowdoseError(f"arch: {self.arch!r} is not a mapping of {self.model} "
                               "architecture settings")
        known = _arch_keys(cls)
        unknown = sorted(set(self.arch) - known) if known is not None else []
        if unknown:
            raise LowdoseError(f"arch: unknown keys {unknown} for {self.model}; known: "
                               f"{', '.join(sorted(known or ()))}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DenoiserTrainConfig:
        """Build from nested dicts, rejecting unknown keys with the section named, and values
        of the wrong type or range with the setting named (``trainer.max_steps``).

        Example:
            >>> DenoiserTrainConfig.from_dict({"optim": {"lr": "1e-4"}}).optim.lr
            0.0001
        """
        data = dict(data)
        sections = {"trainer": TrainerConfig, "data": DataConfig, "optim": OptimConfig}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in sections:
                if value is not None and not isinstance(value, dict):
                    raise LowdoseError(f"config section {key!r}: {value!r} is not a mapping of "
                                       "settings")
                known = {f.name for f in fields(sections[key])}
                unknown = sorted(set(value or {}) - known)
                if unknown:
                    raise LowdoseError(f"config section {key!r}: unknown keys {unknown}; "
                                       f"known: {', '.join(sorted(known))}")
                kwargs[key] = sections[key](**(value or {}))
            elif key in ("model", "arch"):
                kwargs[key] = value
            else:
                raise LowdoseError(f"config: unknown key {key!r}; known: model, arch, "
                                   f"{', '.join(sections)}")
        return cls(**kwargs)


def learned_model(name: Any) -> type[NetworkDenoiser]:
    """The registered learned denoiser class ``name`` (what ``model`` in a preset names).

    Raises:
        LowdoseError: ``name`` is no learned denoiser; the known ones are named.

    Example:
        >>> learned_model("unet").__name__
        'ResUNetDenoiser'
    """
    from lowdose.models.base import denoisers

    def learned(entry: Any) -> bool:  # a plugin factory function is no class
        return isinstance(entry, type) and issubclass(entry, NetworkDenoiser)

    if isinstance(name, str) and name in denoisers and learned(denoisers.get(name)):
        return denoisers.get(name)
    known = [n for n in denoisers.names() if learned(denoisers.get(n))]
    raise LowdoseError(f"model: {name!r} is not a learned denoiser; known: {', '.join(known)}")


def _arch_keys(cls: type[NetworkDenoiser]) -> set[str] | None:
    """The settings ``cls``'s network takes (``None``: any, it takes ``**kwargs``)."""
    import inspect

    if cls.arch_class is None:
        return None
    try:
        params = inspect.signature(cls.arch_class).parameters.values()
    except (TypeError, ValueError):  # no signature to read: left to the network to refuse
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                 inspect.Parameter.KEYWORD_ONLY)}


def preset_file(name_or_path: str) -> Path:
    """The YAML file of a denoiser preset: a path, or a name (``cpu``: ``denoiser-cpu.yaml``)."""
    path = Path(name_or_path)
    if not path.is_file():
        path = CONFIG_DIR / f"denoiser-{name_or_path}.yaml"
    if not path.is_file():
        known = shipped_names("denoiser")
        raise LowdoseError(f"{name_or_path}: no such preset file or name; known: "
                           f"{', '.join(known)}")
    return path


def load_preset(name_or_path: str, **model_overrides: Any) -> DenoiserTrainConfig:
    """A preset by name (``cpu``, ``gpu``: ``configs/denoiser-<name>.yaml``) or a YAML file.

    A preset may build on another (``base: cpu-long``, see ``lowdose.training.presets``) and may
    hold per-model sections (``models: {red-cnn: {...}}``) merged over the rest for the model
    named in ``model_overrides["model"]``.

    Example:
        >>> load_preset("cpu-finetune").optim.lr
        0.0002
    """
    raw = read_preset(preset_file(name_or_path), preset_file)
    per_model = raw.pop("models", {}) or {}
    model = model_overrides.get("model") or raw.get("model", "unet")
    own = (per_model.get(model) if isinstance(per_model, dict) and isinstance(model, str)
           else None) or {}
    merged = merge_settings(raw, own)
    if "arch" in own:  # the model's own architecture replaces the preset's (another model's)
        merged["arch"] = own["arch"]
    merged = merge_settings(merged, {k: v for k, v in model_overrides.items() if v is not None})
    return DenoiserTrainConfig.from_dict(merged)


# ---------------------------------------------------------------- data


def find_ct_files(specs: list[str | Path]) -> list[Path]:
    """CT files named by ``specs``: files, folders (searched recursively) or glob patterns.

    Only DICOM, NIfTI and npy files count (8-bit PNG has no HU; folders' ``info`` screenshots
    are skipped).
    """
    files: list[Path] = []
    for spec in specs:
        matches = sorted(glob.glob(str(spec))) if any(c in str(spec) for c in "*?[") else [spec]
        if not matches:
            raise LowdoseError(f"{spec}: matches no file")
        for m in map(Path, matches):
            if m.is_dir():
                files += sorted(p for p in m.rglob("*")
                                if p.is_file() and p.name.lower().endswith(CT_SUFFIXES))
            elif m.is_file():
                files.append(m)
            else:
                raise LowdoseError(f"{m}: no such file or folder")
    if not files:
        raise LowdoseError(f"{', '.join(map(str, specs))}: no DICOM, NIfTI or npy files")
    return files


AXIAL_NOISE = ("CT noise is made in the axial plane (each axial slice its own draw, correlated "
               "within it by the reconstruction), so noise simulated on a reformat is not a low "
               "dose scan's: train on the axial series")
"""Why training data is axial only (:func:`load_slices`)."""


def warn_low_dose_names(files: list[Path]) -> None:
    """Warn when full-dose training data holds files named as low dose (``*_input.npy``,
    ``QD``, ``low``, ...: :func:`lowdose.physics.calibration.pair_role`): a folder of real
    pairs given as ``--data`` trains on its quarter-dose halves as if they were full dose.

    Example:
        >>> warn_low_dose_names([Path("L067_FD_1_1.CT.0001.0001.IMA")])
    """
    import warnings

    from lowdose.physics.calibration import pair_role

    low = [f for f in files if pair_role(f) == "low"]
    if low:
        shown = ", ".join(f.name for f in low[:2]) + (f" and {len(low) - 2} more"
                                                      if len(low) > 2 else "")
        warnings.warn(f"{len(low)} of the {len(files)} training files are named as low dose "
                      f"({shown}): --data is taken as full dose and its low dose simulated; "
                      "for real low/full pairs use --pairs", stacklevel=3)


def load_slices(
    specs: list[str | Path], min_size: int = 64, stride: int = 1, npy_scale: str | None = None
) -> tuple[list[np.ndarray], list[str], list[dict[str, float]]]:
    """Every ``stride``-th axial 2D slice (HU, float32) of each spec, with a name and its
    geometry (``pixel_size_mm`` and, when known, ``slice_thickness_mm``: the projection physics
    scales the dose's photon count by both).

    Slices of a coronal, sagittal or oblique image (:attr:`lowdose.CTImage.orientation`; an
    unknown plane counts as axial) are left out with one warning naming how many
    (:data:`AXIAL_NOISE` says why). ``npy_scale`` is how ``.npy`` values map to HU (``hu`` or
    ``mayo``, as :func:`lowdose.io.read_ct` takes it).

    Raises:
        LowdoseError: no slice is left: every one is a reformat, or smaller than ``min_size``.

    Example:
        >>> full, names, geometry = load_slices(["ct/"], min_size=64)  # doctest: +SKIP
    """
    from lowdose.io import read_ct
    from lowdose.models.base import reformat_note

    slices, names, pixels = [], [], []
    reformats: dict[str, int] = {}  # plane -> slices left out
    axial_images = 0
    files = {str(spec): find_ct_files([spec]) for spec in specs}  # each folder walked once
    warn_low_dose_names([path for found in files.values() for path in found])
    for spec in specs:
        taken = 0
        for path in files[str(spec)]:
            image = read_ct(path, npy_scale=npy_scale)
            if reformat_note(str(path), image.orientation, AXIAL_NOISE) is not None:
                plane = str(image.orientation)
                reformats[plane] = reformats.get(plane, 0) + image.n_slices
                continue
            axial_images += 1
            for i, s in enumerate(image.slices()):
                if min(s.shape) < min_size:
                    continue
                if taken % max(1, stride) == 0:
                    # below -1024 HU is padding outside the reconstruction circle (-2048, -3024)
                    slices.append(np.ascontiguousarray(np.maximum(s, -1024.0), np.float32))
                    names.append(f"{path}#{i}" if image.is_volume else str(path))
                    geometry = {"pixel_size_mm": float(image.spacing[-1])}
                    thickness = image.metadata.get("slice_thickness") or (
                        image.spacing[0] if image.is_volume else None)
                    if thickness:
                        geometry["slice_thickness_mm"] = float(thickness)
                    pixels.append(geometry)
                taken += 1
    source = ", ".join(map(str, specs))
    planes = ", ".join(f"{n} {plane}" for plane, n in sorted(reformats.items()))
    if reformats and not axial_images:
        raise LowdoseError(f"{source}: no axial slice to train on, only {planes} ones; "
                           f"{AXIAL_NOISE}")
    if reformats:
        warnings.warn(f"{source}: left out {sum(reformats.values())} slice(s) of non-axial "
                      f"series ({planes}); {AXIAL_NOISE}", stacklevel=2)
    if not slices:
        raise LowdoseError(f"{specs}: no slice of at least {min_size}x{min_size} pixels")
    return slices, names, pixels


def bin_slice(hu: np.ndarray, factor: int) -> np.ndarray:
    """The mean of each ``factor`` x ``factor`` block (edges that do not fill a block dropped).

    Example:
        >>> bin_slice(np.arange(16, dtype=np.float32).reshape(4, 4), 2).tolist()
        [[2.5, 4.5], [10.5, 12.5]]
    """
    h, w = (hu.shape[0] // factor) * factor, (hu.shape[1] // factor) * factor
    blocks = hu[:h, :w].reshape(h // factor, factor, w // factor, factor)
    return np.ascontiguousarray(blocks.mean(axis=(1, 3)), np.float32)


def artifact_level(low: np.ndarray, full: np.ndarray, size: int = 15) -> float:
    """RMS (HU) of the ``size`` x ``size`` local means of ``low - full`` (first realisation):
    near zero for noise, large for streaks and truncation artefacts."""
    from scipy.ndimage import uniform_filter

    diff = (low[0] if low.ndim == 3 else low) - full
    return float(np.sqrt(np.mean(uniform_filter(diff.astype(np.float64), size) ** 2)))


def _simulator_identity(method: str) -> str:
    """What identifies the simulator's output besides the seed (its calibration, if any)."""
    from lowdose.physics import build_simulator

    sim = build_simulator(method)
    cal = getattr(sim, "calibration", None)
    return f"{method}|{cal!r}"


def simulate_realisations(
    slices: list[np.ndarray], names: list[str], cfg: DataConfig, seed: int, cache_dir: Path | None,
    progress: bool = True, pixels: list[dict[str, float]] | None = None,
) -> list[np.ndarray]:
    """``(realisations * len(doses), H, W)`` simulated low-dose HU per slice, cached on disk.

    The projection simulator gets each slice's own pixel size and thickness, so the simulated
    photon statistics follow the real object and slice. The cache key covers the slice, the
    simulator and its calibration, the geometry, the dose and the seed (one cache file per dose,
    so adding a dose reuses the draws already made).
    """
    from lowdose.physics.api import relative_dose_options

    identity = _simulator_identity(cfg.method)
    out = []
    items = list(enumerate(zip(slices, names, strict=True)))
    if progress:
        from tqdm import tqdm

        doses = ", ".join(f"{d:g}" for d in cfg.doses)
        items = tqdm(items, desc=f"simulate {cfg.method} dose {doses}", unit="slice")
    for index, (hu, name) in items:
        options: dict[str, Any] = {}
        if cfg.method == "projection" and pixels is not None:
            options = dict(pixels[index])
        if cfg.relative_dose:
            options.update(relative_dose_options(cfg.method, "data.relative_dose"))
        draws = [_cached_draws(hu, name, index, dose, cfg, seed, identity, options, cache_dir)
                 for dose in cfg.doses]
        out.append(np.concatenate(draws) if len(draws) > 1 else draws[0])
    return out


def _cached_draws(hu: np.ndarray, name: str, index: int, dose: float, cfg: DataConfig,
                  seed: int, identity: str, options: dict[str, Any],
                  cache_dir: Path | None) -> np.ndarray:
    """``(realisations, H, W)`` draws of one slice at one dose, from the cache or simulated."""
    from lowdose.physics import simulate_low_dose

    # Each (slice, dose) has its own noise stream, whatever other doses the run uses.
    draw_seed = seed * 7919 + index + 1_000_003 * round(dose * 10_000)
    key = hashlib.sha1(
        f"{name}|{hu.shape}|{float(hu.mean()):.4f}|{identity}|{options}|{dose}|{draw_seed}".encode()
    ).hexdigest()[:16]
    cached = cache_dir / f"{key}-{cfg.realisations}.npy" if cache_dir else None
    if cached is not None and cached.is_file():
        return np.load(cached)
    draws = simulate_low_dose(
        np.repeat(hu[None], cfg.realisations, axis=0), dose, method=cfg.method,
        seed=draw_seed, batch_size=cfg.realisations, **options,
    ).astype(np.float32)
    if cached is not None:
        from lowdose.io.atomic import atomic_path

        cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(cached) as tmp, open(tmp, "wb") as fh:
            np.save(fh, draws)
    return draws


class PairedPatches(torch.utils.data.Dataset):
    """Random ``(low, full)`` HU patch pairs from slices and their low-dose realisations.

    Item ``i`` is a function of ``(seed, i)`` only: slice, realisation, position, flips.
    """

    def __init__(self, full: list[np.ndarray], low: list[np.ndarray], patch_size: int,
                 length: int, seed: int = 0, min_body_fraction: float = 0.3) -> None:
        if len(full) != len(low) or not full:
            raise LowdoseError("training data: need as many low-dose stacks as full-dose slices")
        for f, lo in zip(full, low, strict=True):
            if lo.shape[-2:] != f.shape:
                raise LowdoseError(
                    f"training data: low-dose shape {lo.shape[-2:]} != full-dose {f.shape}")
            if min(f.shape) < patch_size:
                raise LowdoseError(f"training data: slice {f.shape} smaller than the patch")
        self.full, self.low = full, [lo if lo.ndim == 3 else lo[None] for lo in low]
        self.patch_size, self.length, self.seed = patch_size, length, seed
        self.min_body_fraction = min_body_fraction

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.seed, index))
        k = int(rng.integers(len(self.full)))
        full, low = self.full[k], self.low[k][int(rng.integers(self.low[k].shape[0]))]
        p = self.patch_size
        for _ in range(10):  # prefer patches inside the body
            y = int(rng.integers(full.shape[0] - p + 1))
            x = int(rng.integers(full.shape[1] - p + 1))
            f = full[y:y + p, x:x + p]
            if np.mean(f > -900) >= self.min_body_fraction:
                break
        lo = low[y:y + p, x:x + p]
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        f, lo = np.rot90(f, turns), np.rot90(lo, turns)
        if flip:
            f, lo = f[:, ::-1], lo[:, ::-1]
        return {
            "low": torch.from_numpy(np.ascontiguousarray(lo))[None],
            "full": torch.from_numpy(np.ascontiguousarray(f))[None],
        }


class CentreCrops(torch.utils.data.Dataset):
    """Fixed centre crops of held-out pairs (validation)."""

    def __init__(self, full: list[np.ndarray], low: list[np.ndarray], size: int = 256) -> None:
        self.items = []
        for f, lo in zip(full, low, strict=True):
            lo = lo[0] if lo.ndim == 3 else lo
            s = min(size, *f.shape)
            y, x = (f.shape[0] - s) // 2, (f.shape[1] - s) // 2
            self.items.append((lo[y:y + s, x:x + s], f[y:y + s, x:x + s]))
        sizes = {i[0].shape for i in self.items}
        if len(sizes) > 1:  # keep one size so items batch together
            s = min(min(sz) for sz in sizes)
            self.items = [(lo[:s, :s], f[:s, :s]) for lo, f in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        lo, f = self.items[index]
        return {"low": torch.from_numpy(np.ascontiguousarray(lo))[None],
                "full": torch.from_numpy(np.ascontiguousarray(f))[None]}


def load_real_pairs(folder: str | Path, npy_scale: str | None = None
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Real pairs from a folder: ``low/`` and ``full/`` subfolders with the same file names,
    or Mayo-style ``*_input.npy`` / ``*_target.npy`` (value = (HU + 1024) / 4096 unless
    ``npy_scale`` states another). ``npy_scale``: how ``.npy`` values map to HU (``hu`` or
    ``mayo``, as :func:`lowdose.io.read_ct` takes it).

    Example:
        >>> full, low = load_real_pairs("mayo-l506-pairs/npy")  # doctest: +SKIP
    """
    from lowdose.io import read_ct

    folder = Path(folder)
    if (folder / "low").is_dir() and (folder / "full").is_dir():
        names = sorted(p.name for p in (folder / "low").iterdir() if p.is_file())
        pairs = [(folder / "low" / n, folder / "full" / n, npy_scale) for n in names]
    else:
        inputs = sorted(folder.glob("*_input.npy"))
        pairs = [(p, p.with_name(p.name.replace("_input", "_target")), npy_scale or "mayo")
                 for p in inputs]
    if not pairs:
        raise LowdoseError(f"{folder}: no pairs (low/ + full/ folders or *_input/_target.npy)")
    low, full = [], []
    for lo_path, f_path, scale in pairs:
        if not f_path.is_file():
            raise LowdoseError(f"{f_path}: missing full-dose partner of {lo_path.name}")
        lo = read_ct(lo_path, npy_scale=scale).slices()
        f = read_ct(f_path, npy_scale=scale).slices()
        if lo.shape != f.shape:
            raise LowdoseError(f"{lo_path}: shape {lo.shape} differs from {f_path.name} {f.shape}")
        low += [s[None] for s in lo]
        full += list(f)
    return full, low


# ---------------------------------------------------------------- the family


class SupervisedDenoiserFamily(TrainingFamily):
    """One network, one optimiser, a pixel loss on the network's [0, 1] scale.

    Batches are dicts of ``(B, 1, P, P)`` HU tensors ``low`` and ``full``; the denoiser's own
    HU scaling maps them to the network's range.

    Example:
        >>> from lowdose.models.unet import ResUNetDenoiser
        >>> fam = SupervisedDenoiserFamily(ResUNetDenoiser.untrained({"channels": [4, 8, 16]}),
        ...                                OptimConfig(), max_steps=10)
        >>> list(fam.modules)
        ['net']
    """

    def __init__(self, denoiser: NetworkDenoiser, optim: OptimConfig, max_steps: int,
                 metadata: dict[str, Any] | None = None) -> None:
        self.denoiser = denoiser
        self.optim = optim
        self.max_steps = max_steps
        self.metadata = dict(metadata or {})
        self.modules = {"net": denoiser.net}

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        o = self.optim
        return {"net": torch.optim.Adam(self.modules["net"].parameters(), lr=o.lr,
                                        betas=o.betas, weight_decay=o.weight_decay)}

    def lr_factor(self, optimizer_name: str, step: int) -> float:
        """Linear warm-up, then cosine decay to ``final_lr_fraction``."""
        o = self.optim
        if step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        t = (step - o.warmup_steps) / max(1, self.max_steps - o.warmup_steps)
        t = min(1.0, t)
        return o.final_lr_fraction + (1 - o.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * t))

    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.optim.loss == "l1":
            return (pred - target).abs().mean()
        if self.optim.loss == "charbonnier":
            return torch.sqrt((pred - target) ** 2 + 1e-6).mean()
        return ((pred - target) ** 2).mean()

    def training_step(self, batch: Any, optimizer_name: str, step: int) -> dict[str, torch.Tensor]:
        d = self.denoiser
        low, full = d.to_unit(batch["low"].float()), d.to_unit(batch["full"].float())
        pred = self.modules["net"](low).float()
        loss = self._loss(pred, full)
        with torch.no_grad():
            psnr = -10 * torch.log10(((pred.clamp(0, 1) - full) ** 2).mean().clamp_min(1e-12))
        return {"loss": loss, "psnr_full": psnr}

    def validation_step(self, batch: Any) -> dict[str, float]:
        d = self.denoiser
        low, full = d.to_unit(batch["low"].float()), d.to_unit(batch["full"].float())
        pred = self.modules["net"](low).float().clamp(0, 1)

        def _psnr(a: torch.Tensor) -> float:
            mse = ((a - full) ** 2).flatten(1).mean(1).clamp_min(1e-12)
            return float((-10 * torch.log10(mse)).mean())

        return {"psnr_full": _psnr(pred), "psnr_full_input": _psnr(low)}

    def run_settings(self, config: dict[str, Any]) -> dict[str, Any]:
        """The trainer's resume check: :func:`denoiser_run_settings` of a family config."""
        return denoiser_run_settings(config)

    def config(self) -> dict[str, Any]:
        cfg = self.denoiser.config()
        cfg["metadata"] = {**cfg.get("metadata", {}), **self.metadata}
        cfg["module_prefix"] = "net."
        return cfg


# ---------------------------------------------------------------- the API

# Options of the data settings a run records in its metadata (key there -> option).
_SOURCE_OPTIONS = {"data": "--data", "pairs": "--pairs", "simulated": "--method",
                   "dose": "--dose", "relative_dose": "--relative-dose", "bin": "--bin",
                   "npy_scale": "--npy-scale"}
# Preset data settings that shape the training pairs besides those: all of them for simulated
# pairs, the patch sampling for real pairs (the cache folder is only where draws are kept).
_SIMULATION_KEYS = ("realisations", "slice_stride", "max_artifact_hu")
_SAMPLING_KEYS = ("patch_size", "samples_per_epoch", "min_body_fraction", "val_slices")


def denoiser_run_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that define a supervised denoiser run, by option, from its family config
    (``model`` and the ``metadata`` the run records): what a ``--resume`` may not change.

    The run length, batch size, optimiser, threads, device and logging are left out: they may
    change on resume. A setting the config does not hold (an older run) is left out too.

    Example:
        >>> meta = {"data": ["ct/"], "dose": 0.25, "preset": {"trainer": {"seed": 0}}}
        >>> denoiser_run_settings({"model": "unet", "metadata": meta})["--dose"]
        0.25
    """
    meta = config.get("metadata") or {}
    preset = meta.get("preset") or {}
    settings: dict[str, Any] = {}
    if "model" in config:
        settings["--model"] = config["model"]
    if "data" in meta or "pairs" in meta:  # one source or the other, never both
        settings["--data"], settings["--pairs"] = meta.get("data"), meta.get("pairs")
        settings["--init"] = meta.get("init")
    for key, option in _SOURCE_OPTIONS.items():
        if key in meta:
            settings[option] = meta[key]
    data = preset.get("data") or {}
    keys = _SAMPLING_KEYS + (_SIMULATION_KEYS if "data" in meta else ())
    settings.update({f"data.{k} (preset)": data[k] for k in keys if k in data})
    if "arch" in preset:
        settings["arch (preset)"] = preset["arch"]
    if "seed" in (preset.get("trainer") or {}):
        settings["--seed"] = preset["trainer"]["seed"]
    return settings


def simulated_pairs(
    data: list[str | Path], dc: DataConfig, seed: int, cache: Path, progress: bool = True,
    npy_scale: str | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[str], list[float], list[str]]:
    """The (full, low) training pairs a run of ``seed`` simulates from full-dose ``data``.

    Loads the axial slices (:func:`load_slices`: reformats are left out with a warning;
    ``npy_scale`` maps ``.npy`` values to HU), binned by ``dc.bin``, simulates
    ``dc.realisations`` low-dose draws of each (cached in ``cache``) and drops the slices whose
    simulated low dose carries artifacts beyond ``dc.max_artifact_hu``. Returns the kept
    full-dose slices, their draws, their names and pixel sizes (mm), and the names of the
    dropped slices.

    Example:
        >>> full, low, names, pixel_mm, dropped = simulated_pairs(  # doctest: +SKIP
        ...     ["ct/"], DataConfig(), 0, Path("runs/cache"))
    """
    full, names, pixels = load_slices(data, min_size=dc.patch_size * dc.bin,
                                      stride=dc.slice_stride, npy_scale=npy_scale)
    if dc.bin > 1:  # coarser pixels: the physics then simulates at the binned pixel size
        full = [bin_slice(hu, dc.bin) for hu in full]
        pixels = [{**g, "pixel_size_mm": g["pixel_size_mm"] * dc.bin} for g in pixels]
    low = simulate_realisations(full, names, dc, seed, cache, progress, pixels)
    levels = [artifact_level(lo, f) for lo, f in zip(low, full, strict=True)]
    dropped = [n for n, a in zip(names, levels, strict=True) if a > dc.max_artifact_hu]
    keep = [i for i, a in enumerate(levels) if a <= dc.max_artifact_hu]
    if not keep:
        raise LowdoseError(f"{data}: every slice exceeds max_artifact_hu")
    return ([full[i] for i in keep], [low[i] for i in keep], [str(names[i]) for i in keep],
            [pixels[i]["pixel_size_mm"] for i in keep], dropped)


def validation_indices(n_slices: int, val_slices: int) -> list[int]:
    """The slices a run holds out for validation: ``val_slices`` spread evenly, but never more
    than a quarter of the slices (rounded down), so at least three in four train: a set of
    under 4 slices holds none out and trains on all of them; 4-7 slices hold out 1.

    Example:
        >>> validation_indices(97, 4), validation_indices(6, 4), validation_indices(3, 4)
        ([0, 32, 64, 96], [0], [])
    """
    n_val = max(0, min(val_slices, n_slices // 4))
    if not n_val:
        return []
    return sorted(set(np.linspace(0, n_slices - 1, n_val).round().astype(int).tolist()))


def split_line(n_train: int, n_val: int, dropped: list[str] | None = None,
               max_artifact_hu: float | None = None, val_slices: int | None = None) -> str:
    """One line on the slices a run uses: how many train, how many validate (and why none,
    when ``val_slices`` was asked for but the set is too small, :func:`validation_indices`),
    and how many the artifact check dropped, with why and the first few names.

    Example:
        >>> split_line(3, 0, [], 20.0, val_slices=4)
        'slices: 3 train, 0 validate (under 4 slices: all train), 0 dropped by the artifact check'
        >>> split_line(3, 1)
        'slices: 3 train, 1 validate'
    """
    val_note = ""
    if n_val == 0 and val_slices:
        val_note = " (under 4 slices: all train)"
    line = f"slices: {n_train} train, {n_val} validate{val_note}"
    if dropped is None:
        return line
    line += f", {len(dropped)} dropped by the artifact check"
    if dropped:
        shown = ", ".join(Path(name).name for name in dropped[:3])  # fd.nii.gz#2: slice 2
        more = f" and {len(dropped) - 3} more" if len(dropped) > 3 else ""
        line += (f" (their simulated low dose differs from the full dose by more than "
                 f"{max_artifact_hu:g} HU RMS in 15x15 local means: streaks or truncation, not "
                 f"noise: {shown}{more})")
    return line


def thread_count(threads: int | None, preset_threads: int) -> tuple[int, str]:
    """The CPU threads a run uses, and where the count comes from: ``threads`` (``--threads``)
    if given, else ``OMP_NUM_THREADS`` if the environment sets it, else the preset's
    ``trainer.num_threads`` (0: torch's default, counted now).

    Raises:
        LowdoseError: ``threads`` below 1.

    Example:
        >>> thread_count(3, 2)
        (3, '--threads')
    """
    if threads is not None:
        if threads < 1:
            raise LowdoseError(f"--threads {threads}: use 1 or more")
        return threads, "--threads"
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    if preset_threads > 0:
        return preset_threads, "preset"
    return torch.get_num_threads(), "torch default"


def train_denoiser(
    cfg: DenoiserTrainConfig,
    data: list[str | Path] | None,
    out_dir: str | Path,
    pairs: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    init: str | Path | None = None,
    trust_pickle: bool = False,
    npy_scale: str | None = None,
    threads: int | None = None,
    say: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``cfg.model`` on simulated pairs from ``data`` (full-dose CT) or real ``pairs``.

    ``init`` (a shipped model name, a weight file or a run folder of the same model) starts
    from those weights instead of a random network: fine-tuning, e.g. the shipped ``unet`` on
    one's own scanner. It is read before any data work (a wrong one is refused at once); a
    pickle only with ``trust_pickle``. A checkpoint in ``out_dir`` (``resume``) still takes
    precedence.

    Args:
        cfg: model, trainer, data and optimiser settings.
        data: full-dose CT files, folders or globs; their axial slices train
            (:func:`simulated_pairs`).
        out_dir: the run folder (checkpoints, metrics, ``config.json``, the weights).
        pairs: real low/full pairs instead of ``data`` (:func:`load_real_pairs`).
        resume: continue from ``out_dir``'s latest checkpoint.
        progress: progress bars for the simulation.
        init: weights to start from (see above).
        trust_pickle: allow a pickle ``init`` (it can run arbitrary code).
        npy_scale: how ``.npy`` values map to HU: ``hu`` or ``mayo`` (4096 v - 1024).
        threads: CPU threads; default ``OMP_NUM_THREADS`` when set, else the preset's
            (:func:`thread_count`). The count used is recorded in ``config.json``.
        say: called with one line on the slices that train, validate and were dropped
            (:func:`split_line`) before training starts; the CLI prints it.

    Example:
        >>> train_denoiser(load_preset("cpu", model="unet"), ["ct/"], "runs/unet")  # doctest: +SKIP
    """
    from lowdose.models.base import denoisers

    cls = denoisers.get(cfg.model)
    if not (isinstance(cls, type) and issubclass(cls, NetworkDenoiser)):
        raise LowdoseError(f"--model {cfg.model}: not a learned supervised denoiser")
    out_dir = Path(out_dir)
    tc, dc = cfg.trainer, cfg.data
    if tc.device:  # a device this machine lacks: refused now, not after the simulation
        from lowdose.device import check_device

        check_device(tc.device)
    if pairs is not None:
        source: dict[str, Any] = {"pairs": str(pairs)}
    elif data:
        source = {"data": [str(d) for d in data], "simulated": dc.method, "dose": dc.dose,
                  "bin": dc.bin, "relative_dose": dc.relative_dose,
                  "realisations": dc.realisations}
    else:
        raise LowdoseError("train denoiser: give --data (full-dose CT) or --pairs")
    if init is not None:
        source["init"] = str(init)
    if npy_scale is not None:
        from lowdose.io.formats.npy import NPY_SCALES

        if npy_scale not in NPY_SCALES:
            raise LowdoseError(f"--npy-scale {npy_scale!r}: use one of "
                               f"{', '.join(sorted(NPY_SCALES))}")
        source["npy_scale"] = npy_scale
    # The threads used, in config.json's trainer section (and the run's preset): a seed
    # reproduces a CPU run only on the same thread count.
    tc = replace(tc, num_threads=thread_count(threads, tc.num_threads)[0])
    cfg = replace(cfg, trainer=tc)
    if resume:
        # Before any data work: the same model and data settings as the run's checkpoint.
        planned = {"model": cfg.model, "metadata": {**source, "preset": cfg.to_dict()}}
        refuse_changed_resume(out_dir, denoiser_run_settings, planned)
        # A finished run: said now, not after simulating its data again for nothing.
        if (done := finished_result(out_dir, tc.max_steps)) is not None:
            return done
    if init is not None:  # also before the data work: a missing, unreadable or other model's
        initial_denoiser(cls, init, cfg.arch, trust_pickle)
    dropped: list[str] | None = None
    if pairs is not None:
        full, low = load_real_pairs(pairs, npy_scale)
    else:
        cache = Path(dc.cache_dir) if dc.cache_dir else out_dir / "cache"
        full, low, _, kept_px, dropped = simulated_pairs(data, dc, tc.seed, cache, progress,
                                                         npy_scale)
        source.update({"train_pixel_mm": [min(kept_px), max(kept_px)],
                       "simulator": _simulator_identity(dc.method),
                       "dropped_artifact_slices": dropped})
    val_idx = set(validation_indices(len(full), dc.val_slices))
    train_idx = [i for i in range(len(full)) if i not in val_idx]
    dataset = PairedPatches([full[i] for i in train_idx], [low[i] for i in train_idx],
                            dc.patch_size, dc.samples_per_epoch, tc.seed, dc.min_body_fraction)
    val = CentreCrops([full[i] for i in sorted(val_idx)], [low[i] for i in sorted(val_idx)]) \
        if val_idx else None
    torch.manual_seed(tc.seed)
    # Built after the seed, as it always was (building draws from the generator): a seed
    # gives the run it gave before.
    denoiser = (cls.untrained(cfg.arch or None) if init is None
                else initial_denoiser(cls, init, cfg.arch, trust_pickle))
    metadata = {**source, "train_slices": len(train_idx), "val_slices": len(val_idx),
                "preset": cfg.to_dict()}
    family = SupervisedDenoiserFamily(denoiser, cfg.optim, tc.max_steps, metadata)
    trainer = Trainer(family, dataset, tc, out_dir, val_dataset=val, resume=resume)
    if say is not None and trainer.env.is_main:
        say(split_line(len(train_idx), len(val_idx), dropped, dc.max_artifact_hu,
                       dc.val_slices))
    result = trainer.fit()
    if trainer.env.is_main and result.finished is None:  # a finished run's summary stands
        (out_dir / "train_summary.json").write_text(json.dumps(
            {"step": result.step, "metrics": result.metrics, "config": cfg.to_dict(),
             **source}, indent=2, default=str) + "\n")
    return result


def initial_denoiser(cls: type[NetworkDenoiser], init: str | Path,
                     arch: dict[str, Any] | None = None,
                     trust_pickle: bool = False) -> NetworkDenoiser:
    """A trainable copy of the ``cls`` weights named by ``init`` (fine-tuning's start);
    ``trust_pickle`` allows a pickle file (it can run arbitrary code).

    Raises:
        LowdoseError: ``init`` holds another model, or ``arch`` asks for another architecture.

    Example:
        >>> from lowdose.models.unet import ResUNetDenoiser
        >>> initial_denoiser(ResUNetDenoiser, "unet").arch["channels"]
        [24, 48, 96, 192]
    """
    from lowdose.models.loading import load_denoiser

    start = load_denoiser(init, device="cpu", trust_pickle=trust_pickle)
    if not isinstance(start, NetworkDenoiser) or start.name != cls.name:
        raise LowdoseError(f"--init {init}: holds a {start.name!r} model, not {cls.name!r} "
                           f"(pass --model {start.name})")
    if arch and {**start.arch, **arch} != start.arch:
        raise LowdoseError(f"--init {init}: its architecture {start.arch} differs from the "
                           f"preset's {arch}")
    return cls(start.net, arch=start.arch, hu_range=start.hu_range)


# ---------------------------------------------------------------- shipping weights


def export_denoiser(
    run_dir: str | Path,
    dest: str | Path,
    benchmark: dict[str, Any] | None = None,
    notes: str = "",
) -> Path:
    """Export a finished run's network as ``<dest>.safetensors`` + ``.json`` + model card ``.md``.

    Args:
        run_dir: the ``--out`` folder of a finished ``lowdose train denoiser`` run.
        dest: path without suffix (e.g. ``src/lowdose/weights/unet``).
        benchmark: measured metrics to quote in the card (e.g. from ``denoise_mayo.json``).
        notes: extra Markdown for the card.

    Example:
        >>> export_denoiser("runs/unet", "src/lowdose/weights/unet")  # doctest: +SKIP
    """
    from lowdose.io.atomic import atomic_write_text
    from lowdose.models.base import denoisers
    from lowdose.models.loading import build_from_weights, read_weights, save_weights

    run_dir, dest = Path(run_dir), Path(dest)
    summary_path = run_dir / "train_summary.json"
    if not summary_path.is_file():
        raise LowdoseError(f"{run_dir}: no train_summary.json (the run has not finished)")
    summary = json.loads(summary_path.read_text())
    state, config = read_weights(run_dir / "model.safetensors")
    cls = denoisers.get(config["model"])
    loaded = build_from_weights(cls, state, config, run_dir)  # checks the weights fit
    net_state = {k: v.contiguous() for k, v in loaded.net.state_dict().items()}
    meta = dict(config.get("metadata", {}))
    preset = meta.pop("preset", summary.get("config", {}))
    meta.update({"steps": summary["step"], "train_metrics": summary.get("metrics", {})})
    if benchmark:
        meta["benchmark"] = benchmark
    clean = {k: v for k, v in config.items() if k not in ("module_prefix", "metadata")}
    clean["metadata"] = {**meta, "preset": preset}
    path = save_weights(net_state, clean, dest.with_suffix(".safetensors"))
    atomic_write_text(dest.with_suffix(".md"), model_card(clean, notes))
    for suffix in (".safetensors", ".json", ".md"):  # package data: readable by all
        dest.with_suffix(suffix).chmod(0o644)
    return path


def model_card(config: dict[str, Any], notes: str = "") -> str:
    """A Markdown model card from a weight config (data, dose, preset, steps, metrics)."""
    meta = config.get("metadata", {})
    preset = meta.get("preset", {})
    trainer, data, optim = (preset.get(k, {}) for k in ("trainer", "data", "optim"))
    relative = " of each slice's own dose (relative_dose)" if meta.get("relative_dose") else ""
    lines = [
        f"# {config['model']} (lowdose shipped weights)",
        "",
        f"- **Architecture**: `{config['model']}` {json.dumps(config.get('arch', {}))}",
        f"- **Input scaling**: {config.get('input_scaling')} with hu_range "
        f"{config.get('hu_range')}; output clipped to the same range, returned in HU.",
        f"- **Training data**: {', '.join(meta.get('data', [])) or meta.get('pairs')} "
        f"({meta.get('train_slices')} train / {meta.get('val_slices')} validation slices, "
        "real full-dose CT; no AAPM-Mayo L506 test pairs).",
        *([f"- **Training pixel sizes**: {meta['train_pixel_mm'][0]:.2f}-"
           f"{meta['train_pixel_mm'][1]:.2f} mm (`lowdose denoise` warns on slices beyond "
           f"{NetworkDenoiser.pixel_tolerance:g} times this range)."]
          if meta.get("train_pixel_mm") else []),
        f"- **Low dose**: simulated with `{meta.get('simulated')}` at dose {meta.get('dose')}"
        f"{relative}, {meta.get('realisations')} seeded realisations per slice.",
        f"- **Preset**: patch {data.get('patch_size')}, batch {trainer.get('batch_size')}, "
        f"{trainer.get('max_steps')} steps, Adam lr {optim.get('lr')} (warm-up "
        f"{optim.get('warmup_steps')}, cosine), loss {optim.get('loss')}, seed "
        f"{trainer.get('seed')}.",
        f"- **Steps trained**: {meta.get('steps')}",
        f"- **Training-end metrics** (simulated pairs): "
        f"{json.dumps({k: float(f'{v:.4g}') for k, v in meta.get('train_metrics', {}).items()})}",
        f"- **Slices dropped** (simulated low dose carried streaks or truncation, not noise): "
        f"{meta.get('dropped_artifact_slices', [])}",
    ]
    bench = meta.get("benchmark")
    if bench:
        lines.append(f"- **Real Mayo L506 pairs** (benchmarks/denoise_mayo.py): "
                     f"{json.dumps(bench)}")
    lines += ["", notes, ""] if notes else [""]
    return "\n".join(lines)
