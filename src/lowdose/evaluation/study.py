"""The task-based study: does a classifier still work on low-dose and restored CT slices?

Stages (each cached under ``OUT/cache``, keyed by a hash of the configuration it depends on,
so a rerun continues where an interrupted one stopped):

1. ``data``: full-dose slices (built-in phantoms, or a class-folder dataset read as HU, PNGs
   through the stated window), prepared to ``slice_size`` (body crop, squared); unreadable
   files are listed and skipped.
2. ``classifier``: trained on the full-dose train split (through the one trainer) or loaded.
3. ``full-dose``: the classifier on the full-dose test split.
4. ``cells``: for every simulation method x dose, the simulated low-dose test slices, then
   each denoiser (``none`` = the raw low dose): class probabilities, task metrics with
   bootstrap 95% intervals, and PSNR/SSIM/RMSE against the full-dose slice in both stated
   conventions. Each cell is saved in chunks, so even a half-done cell resumes.
5. ``report``: ``results.json`` and a self-contained ``report.html``.

Every simulation, denoiser and classifier registered joins the study without a change here.

Example:
    >>> cfg = StudyConfig.from_dict({"doses": [0.25], "denoisers": ["tv"]})
    >>> cfg.doses, cfg.denoisers
    ([0.25], ['tv'])
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from lowdose.errors import LowdoseError
from lowdose.image import HU_MIN
from lowdose.io.atomic import atomic_path, atomic_write_text
from lowdose.io.datasets import CLASSES
from lowdose.models.classifiers import LUNG_WINDOW

FULL_DOSE = "full-dose"
"""The grid column of the full-dose images (``results.json`` ``grid``; the report's first)."""
RAW = "none"
"""The denoiser name of the unrestored low-dose images."""
RESULTS_FORMAT = "lowdose-study/3"
"""``results.json``'s format: 2 adds each cell's paired counts against full dose and (restored
cells) against the unrestored low dose; 3 the extra classifiers and the counts pooled over
all classifiers."""


@dataclass
class PhantomData:
    """The built-in phantom data set used when no data folder is given.

    Example:
        >>> PhantomData(n_test=8).size
        128
    """

    n_train: int = 240
    n_valid: int = 48
    n_test: int = 48
    size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        from lowdose.settings import checked_int

        # The phantom generator's own limits (lowdose.io.phantom), said when the config is built.
        for name, minimum in (("n_train", 1), ("n_valid", 1), ("n_test", 1), ("size", 32),
                              ("seed", 0)):
            setattr(self, name, checked_int(getattr(self, name), f"study phantom.{name}",
                                            minimum))

    @classmethod
    def from_dict(cls, data: Any) -> PhantomData:
        """Build from a mapping (a study config's ``phantom``), refusing unknown keys.

        Example:
            >>> PhantomData.from_dict({"n_test": 8}).n_test
            8
        """
        if not isinstance(data, dict):
            raise LowdoseError(f"study phantom: {data!r} is not a mapping of settings")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise LowdoseError(f"study phantom: unknown keys {unknown}; known: "
                               f"{', '.join(names)}")
        return cls(**data)


@dataclass
class StudyConfig:
    """One study (see the module doc); YAML presets in ``lowdose/configs/study*.yaml``.

    Attributes:
        data: a class-folder dataset (Kaggle layout); ``None`` uses the built-in phantoms.
        manifest: CSV ``path,label,split`` (e.g. the de-duplicated one from the audit).
        out: output folder (``results.json``, ``report.html``, ``cache/``).
        doses: dose fractions of the full dose simulated on the test slices.
        methods: simulation methods; ``None`` = every registered simulator.
        denoisers: denoisers; ``None`` = every registered one that loads (others are skipped and
            reported). A classical one may carry settings, ``"bm3d:noise_model=ct"``
            (:func:`lowdose.models.loading.split_spec`): a row of its own beside ``"bm3d"``.
        classifier: a trained classifier (``.safetensors``) to use instead of training one.
        preset: classifier training preset (``demo``, ``cpu``, ``gpu``).
        train: overrides of the training preset (e.g. ``{"arch": "resnet18", "epochs": 20}``).
        slice_size: side of the prepared study slices (simulation and restoration run on them).
        crop_body: crop slices to the body before squaring them.
        png_window: HU window 8-bit images are mapped through (lung, [-1350, 150] HU).
        valid_fraction: share of train held out for validation when the data has no valid split.
        phantom: the phantom data set (when ``data`` is ``None``).
        seed: seeds simulation noise, bootstrap and (unless ``train`` says otherwise) training.
        n_boot: bootstrap resamples per interval.
        chunk: slices per cached chunk.
        grid_slices: test slices shown in the report's image grid.
        grid_window: the display window of that grid.
        device: ``cpu``, ``cuda``... (default: a GPU when present).
        precision: the learned denoisers' arithmetic, ``fp32`` or ``bf16`` (on a GPU or a CPU
            with native bf16; refused at the start elsewhere). The classical ones are unaffected.
        max_test: use at most this many test slices (stratified; ``None`` = all).
        fov_mm: field of view of a prepared slice in mm; a simulator that takes
            ``pixel_size_mm`` (the projection physics) gets ``fov_mm / slice_size``. Phantoms
            are drawn on 350 mm; for body-cropped PNGs (no spacing stored) 350 mm, about a
            chest's width, is an assumption stated in the report.
        simulator_options: extra keyword options per simulation method.
        extra_classifiers: more classifiers that judge every cell on the same images (each
            chunk is simulated and restored once): an integer trains one like the first with
            that seed, a string loads a classifier file. Their accuracies, and the change of
            each cell averaged over all classifiers with a test that pools them, sit beside the
            first classifier's; on a small test split one classifier's paired counts can
            reflect that network more than the denoiser.
    """

    data: str | None = None
    manifest: str | None = None
    out: str = "study-output"
    doses: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25, 0.1])
    methods: list[str] | None = None
    denoisers: list[str] | None = None
    classifier: str | None = None
    preset: str = "demo"
    train: dict[str, Any] = field(default_factory=dict)
    slice_size: int = 128
    crop_body: bool = True
    png_window: tuple[float, float] = LUNG_WINDOW
    valid_fraction: float = 0.15
    phantom: PhantomData = field(default_factory=PhantomData)
    seed: int = 0
    n_boot: int = 1000
    chunk: int = 32
    grid_slices: int = 4
    grid_window: str = "lung"
    device: str | None = None
    precision: str = "fp32"
    max_test: int | None = None
    fov_mm: float = 350.0
    simulator_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra_classifiers: list[int | str] = field(default_factory=list)

    @property
    def pixel_mm(self) -> float:
        """The prepared slices' pixel size: ``fov_mm / slice_size``."""
        return self.fov_mm / self.slice_size

    def __post_init__(self) -> None:
        from lowdose.models.network import checked_precision

        self.precision = checked_precision(self.precision)
        if self.phantom is None:
            self.phantom = PhantomData()
        elif not isinstance(self.phantom, PhantomData):
            self.phantom = PhantomData.from_dict(self.phantom)
        # One dose may be given bare (`doses: 0.5`); a list otherwise.
        doses = (list(self.doses) if isinstance(self.doses, list | tuple | np.ndarray)
                 else [self.doses])
        bad = [d for d in doses if not 0 < (_number(d) or 0) <= 1]
        if bad:
            raise LowdoseError(f"study doses {bad}: each must lie in (0, 1] (a fraction of "
                               "the full dose)")
        self.doses = [float(d) for d in doses]
        if not self.doses:
            raise LowdoseError("study: no doses given")
        self._check_settings()
        self.extra_classifiers = [c if isinstance(c, str) else int(c)
                                  for c in self.extra_classifiers]
        seeds = [c for c in self.extra_classifiers if isinstance(c, int)]
        # Files compare by resolved path: `./a.safetensors` and `a.safetensors` are one classifier.
        keys = [_classifier_key(c) for c in self.extra_classifiers]
        if len(set(keys)) != len(keys):
            raise LowdoseError(f"study extra_classifiers {self.extra_classifiers}: repeated")
        if self.classifier is not None and _classifier_key(str(self.classifier)) in keys:
            raise LowdoseError(f"study extra_classifiers: {self.classifier} is the study's own "
                               "classifier")
        if seeds and self.classifier is None and self.seed in seeds:
            raise LowdoseError(f"study extra_classifiers: seed {self.seed} is the study's own "
                               "classifier seed")
        self.train = dict(self.train or {})
        self._check_train_keys()
        if seeds and "seed" in self.train:
            raise LowdoseError("study extra_classifiers: seeds cannot vary while `train` fixes "
                               f"the seed ({self.train['seed']})")

    def _check_settings(self) -> None:
        """Types and ranges, refused when the config is built: a bad one otherwise fails at the
        end of the study (the grid window), or late and unnamed."""
        from lowdose.image import NAMED_WINDOWS
        from lowdose.physics.base import simulators
        from lowdose.settings import (
            checked_bool,
            checked_float,
            checked_int,
            checked_text,
        )

        self.png_window = _checked_window(self.png_window, "study png_window")
        # The report draws its grid through Window.named(grid_window): a name, known now.
        if not isinstance(self.grid_window, str) or self.grid_window not in NAMED_WINDOWS:
            raise LowdoseError(f"study grid_window: {self.grid_window!r} is not a window's "
                               f"name; known: {', '.join(sorted(NAMED_WINDOWS))}")
        for name, minimum in (("slice_size", 1), ("seed", 0), ("n_boot", 1), ("chunk", 1),
                              ("grid_slices", 1)):
            setattr(self, name, checked_int(getattr(self, name), f"study {name}", minimum))
        if self.max_test is not None:
            self.max_test = checked_int(self.max_test, "study max_test", 1)
        self.crop_body = checked_bool(self.crop_body, "study crop_body")
        self.valid_fraction = checked_float(self.valid_fraction, "study valid_fraction", 0, 1,
                                            open_low=True, open_high=True)
        self.fov_mm = checked_float(self.fov_mm, "study fov_mm", 0, open_low=True)
        self.out = checked_text(self.out, "study out", optional=False)
        self.preset = checked_text(self.preset, "study preset", optional=False)
        for name in ("methods", "denoisers"):  # one name may be given bare
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [value])
            elif value is not None and not isinstance(value, list | tuple):
                raise LowdoseError(f"study {name}: {value!r} is not a list of names")
            elif value is not None:
                setattr(self, name, list(value))
        if self.methods is not None:  # before the classifier trains, not after (minutes)
            known = simulators.names()
            unknown = [m for m in self.methods if m not in known]
            if unknown:
                raise LowdoseError(f"study methods: unknown simulator {unknown[0]!r}; known: "
                                   f"{', '.join(known)}")
        if not isinstance(self.train, dict | type(None)):
            raise LowdoseError(f"study train: {self.train!r} is not a mapping of settings")
        if not isinstance(self.simulator_options, dict) or not all(
                isinstance(v, dict) for v in self.simulator_options.values()):
            raise LowdoseError(f"study simulator_options: {self.simulator_options!r} is not a "
                               "mapping of method -> options")

    def _check_train_keys(self) -> None:
        """A typo in ``train`` fails here, in one line, not as a TypeError after the data load."""
        from lowdose.training.classifier import ClassifierTrainConfig

        names = {f.name for f in fields(ClassifierTrainConfig)}
        unknown = set(self.train) - names
        if unknown:
            raise LowdoseError(f"study config train: unknown keys {sorted(unknown)}; known: "
                               f"{', '.join(sorted(names))}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise LowdoseError(f"study config: unknown keys {sorted(unknown)}; known: "
                               f"{', '.join(sorted(names))}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> StudyConfig:
        """A study config file, or a built-in preset by name (``demo``, ``kaggle``).

        A file may build on another (``base: kaggle``, then only the settings that differ; see
        ``lowdose.training.presets``).

        Example:
            >>> StudyConfig.from_yaml("demo").preset
            'demo'
        """
        from lowdose.training.presets import read_preset

        return cls.from_dict(read_preset(study_config_file(path), study_config_file))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(value: Any) -> float | None:
    """``value`` as a float, or ``None`` when it is no finite number (YAML's ``1e-1`` string
    counts: PyYAML reads it as one)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _checked_window(value: Any, key: str) -> tuple[float, float]:
    """``value`` as an HU window ``(low, high)`` with ``low < high``: a pair of numbers or a
    window's name (:data:`lowdose.image.NAMED_WINDOWS`).

    Example:
        >>> _checked_window("lung", "png_window"), _checked_window([-1024, 476], "png_window")
        ((-1350.0, 150.0), (-1024.0, 476.0))
    """
    from lowdose.image import Window

    if isinstance(value, str):
        try:
            window = Window.named(value)
        except ValueError as exc:
            raise LowdoseError(f"{key}: {exc}") from None
        return (float(window.lo), float(window.hi))
    pair = list(value) if isinstance(value, list | tuple | np.ndarray) else None
    if pair is None or len(pair) != 2 or any(_number(v) is None for v in pair):
        raise LowdoseError(f"{key}: {value!r} is not [low, high] HU nor a window's name")
    low, high = (_number(v) for v in pair)
    if not low < high:  # type: ignore[operator]
        raise LowdoseError(f"{key}: {value!r} is reversed or empty; give [low, high] HU with "
                           "low < high")
    return (float(low), float(high))  # type: ignore[arg-type]


def study_config_file(path: str | Path) -> Path:
    """The YAML file of a study config: a path, or a built-in preset's name."""
    path = Path(path)
    if path.is_file():
        return path
    from lowdose.training.presets import CONFIG_DIR

    builtin = CONFIG_DIR / f"study-{path}.yaml"
    if builtin.is_file():
        return builtin
    raise LowdoseError(f"{path}: no such config file (built-in presets: "
                       f"{', '.join(builtin_presets())})")


def builtin_presets() -> list[str]:
    """Names of the YAML study presets shipped in ``lowdose/configs`` (``demo``, ``kaggle``)."""
    from lowdose.training.presets import shipped_names

    return shipped_names("study")


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _seed_for(*parts: Any) -> int:
    return zlib.crc32(json.dumps(parts, default=str).encode()) & 0x7FFFFFFF


def _save_npz(path: Path, **arrays: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def _progress(iterable: Any = None, **kwargs: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(iterable, dynamic_ncols=True, **kwargs)


# ------------------------------------------------------------------------------ data stage


@dataclass
class StudyData:
    """Prepared full-dose slices ``(N, S, S)`` HU and integer labels per split."""

    hu: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    paths: dict[str, list[str]]
    failures: list[dict[str, str]]
    warnings: list[str]
    audit: dict[str, Any]
    source: str
    revision: str | None = None
    """``None`` while the data are those first cached for this configuration; after the data
    folder or manifest changed, a hash of the new inputs: it joins the classifier's and the
    cells' cache keys, so what was computed on other images is never reused."""
    inputs: str | None = None
    """The hash of the files the data stage read (:func:`data_inputs`; ``None``: phantoms)."""
    build_s: float | None = None
    """Seconds the data stage took when it was computed (kept with the cache)."""
    cached: bool = False
    """Whether this run read the data stage from the cache."""


def _phantom_data(cfg: StudyConfig) -> StudyData:
    from lowdose.io.phantom import phantom_batch
    from lowdose.training.classifier import prepare_slice

    ph = cfg.phantom
    hu, labels, paths = {}, {}, {}
    for k, (split, n) in enumerate((("train", ph.n_train), ("valid", ph.n_valid),
                                    ("test", ph.n_test))):
        # Disjoint seeds per split: no test slice shares anatomy with a train slice.
        batch, names = phantom_batch(n, size=ph.size, seed=ph.seed * 1000 + 100 * k + 7)
        if ph.size != cfg.slice_size:
            batch = np.stack([prepare_slice(s, cfg.slice_size, crop_body=False) for s in batch])
        hu[split] = batch.astype(np.float32)
        labels[split] = np.array([CLASSES.index(c) for c in names], np.int64)
        paths[split] = [f"phantom:{split}:{i}" for i in range(n)]
    audit = {"source": "built-in phantoms", "n_files": sum(len(v) for v in labels.values()),
             "n_unique": sum(len(v) for v in labels.values()), "duplicate_groups": 0,
             "per_split": {s: np.bincount(labels[s], minlength=len(CLASSES)).tolist()
                           for s in labels}, "classes": list(CLASSES)}
    return StudyData(hu, labels, paths, [], [], audit, "phantom")


#: How the report and the warning tell users to drop duplicates.
DEDUP_HINT = ("drop them with `lowdose data audit DATA --write-manifest dedup.csv`, then "
              "`--manifest dedup.csv`")


def _audit_summary(root: Path) -> dict[str, Any]:
    """The audit of the data folder, in brief; the duplicate groups (paths relative to
    ``root``) ride along under ``_groups`` for :func:`_add_duplicates_in_use`."""
    try:
        from lowdose.io.audit import audit_dataset
    except ImportError:
        return {"note": "lowdose.io.audit is not available"}
    import warnings

    try:
        with warnings.catch_warnings():  # its folder scan repeats what the data stage said
            warnings.simplefilter("ignore")
            result = audit_dataset(root)
    except Exception as exc:  # the audit informs the report; it must not stop the study
        return {"error": f"{type(exc).__name__}: {exc}"}
    raw = result.to_json() if hasattr(result, "to_json") else (
        asdict(result) if hasattr(result, "__dataclass_fields__") else dict(result))
    if isinstance(raw, str):
        raw = json.loads(raw)
    summary: dict[str, Any] = {}
    # The names AuditResult.to_json writes; the group lists are counted here.
    for key in ("n_files", "n_unique", "n_unique_near", "duplicate_groups",
                "near_duplicate_groups", "cross_split_groups", "cross_class_groups",
                "unreadable", "overlap"):
        if key in raw:
            value = raw[key]
            summary[key] = len(value) if key.endswith("_groups") and isinstance(
                value, list) else value
    summary["_groups"] = {
        "copies": [list(g) for g in raw.get("duplicate_groups", [])]
        + [list(g) for g in raw.get("near_duplicate_groups", [])],
        "classes": [list(g["paths"]) for g in raw.get("cross_class_groups", [])]}
    return summary


def _add_duplicates_in_use(data: StudyData, root: Path) -> None:
    """Count the audit's copies among the images the study uses, in its own splits (a valid
    split held out of train, a manifest, ``max_test`` all count): test and valid images with
    a copy in train, test images with one in valid, images filed under two classes. Adds them
    to ``data.audit`` and, when any, one warning."""
    from lowdose.io.datasets import absolute

    groups = data.audit.pop("_groups", None)
    if groups is None:
        return
    base = absolute(root)
    where: dict[str, tuple[str, int]] = {}
    for split, paths in data.paths.items():
        for path, label in zip(paths, data.labels[split].tolist(), strict=True):
            with contextlib.suppress(ValueError):
                where[Path(path).relative_to(base).as_posix()] = (split, int(label))
    seen: dict[str, set[str]] = {"test_in_train": set(), "valid_in_train": set(),
                                 "test_in_valid": set(), "in_two_classes": set()}
    for group in groups["copies"]:
        used = [p for p in group if p in where]
        for a, b in (("test", "train"), ("valid", "train"), ("test", "valid")):
            if any(where[p][0] == b for p in used):
                seen[f"{a}_in_{b}"].update(p for p in used if where[p][0] == a)
    for group in groups["classes"]:
        used = [p for p in group if p in where]
        if len({where[p][1] for p in used}) > 1:
            seen["in_two_classes"].update(used)
    counts = {k: len(v) for k, v in seen.items()}
    n = {s: len(v) for s, v in data.labels.items()}
    text = (f"{counts['test_in_train']} of {n.get('test', 0)} test images and "
            f"{counts['valid_in_train']} of {n.get('valid', 0)} valid images have a copy "
            f"(exact or near) in train, {counts['test_in_valid']} test images one in valid; "
            f"{counts['in_two_classes']} images sit in two classes")
    data.audit["duplicates_in_use"] = counts
    if any(counts.values()):
        data.audit["duplicates_note"] = f"{text}: {DEDUP_HINT}"
        data.warnings.append(f"{text}: {DEDUP_HINT}")
    else:
        data.audit["duplicates_note"] = f"{text}"


def _folder_data(cfg: StudyConfig, progress: bool) -> StudyData:
    import warnings as pywarnings

    from lowdose.image import Window
    from lowdose.io.datasets import scan_class_folders
    from lowdose.io.formats.png import COLOURED
    from lowdose.io.read import read_ct
    from lowdose.training.classifier import check_split_labels, prepare_slice

    root = Path(cfg.data or "")
    if not root.is_dir():
        raise LowdoseError(f"{root}: no such data folder")
    with pywarnings.catch_warnings():
        # A split lacking a class is said once, below, of the images actually read.
        pywarnings.filterwarnings("ignore", message=r".*split \w+ has no images of class")
        items = scan_class_folders(root, manifest=Path(cfg.manifest) if cfg.manifest else None)
    if not items:
        raise LowdoseError(f"{root}: no images found in class folders")
    window = Window(*cfg.png_window)
    hu: dict[str, list[np.ndarray]] = {}
    labels: dict[str, list[int]] = {}
    paths: dict[str, list[str]] = {}
    failures: list[dict[str, str]] = []
    marked: list[str] = []
    for item in _progress(items, desc="read images", disable=not progress):
        label = str(item.label)
        if label not in CLASSES:
            raise LowdoseError(f"{item.path}: unknown class {label!r}; known: {list(CLASSES)}")
        try:
            with pywarnings.catch_warnings(record=True) as caught:
                pywarnings.simplefilter("always")
                img = read_ct(item.path, window=window)
            for w in caught:  # colour marks: counted below, not a line per image
                if COLOURED in str(w.message):
                    marked.append(str(item.path))
                else:
                    pywarnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            sl = img.slices()
            if sl.shape[0] != 1:
                raise LowdoseError(f"{item.path}: a volume of {sl.shape[0]} slices, not a slice")
            # A display window reaching below air (lung: -1350 HU for black) gives values
            # no scanner stores; the simulators refuse them, so clip at the project's floor.
            prepared = np.maximum(prepare_slice(sl[0], cfg.slice_size, crop_body=cfg.crop_body),
                                  HU_MIN)
        except Exception as exc:  # listed, skipped and counted in the report
            failures.append({"path": str(item.path), "reason": str(exc) or type(exc).__name__})
            continue
        split = str(item.split)
        hu.setdefault(split, []).append(prepared)
        labels.setdefault(split, []).append(CLASSES.index(label))
        paths.setdefault(split, []).append(str(item.path))
    out_hu = {s: np.stack(v).astype(np.float32) for s, v in hu.items()}
    out_y = {s: np.array(v, np.int64) for s, v in labels.items()}
    if "train" not in out_y or "test" not in out_y:
        raise LowdoseError(f"{root}: need a train and a test split, found {sorted(out_y)}")
    warnings = []
    held_out: dict[str, int] = {}
    if "valid" not in out_y:  # hold out a stratified share of train
        rng = np.random.default_rng(cfg.seed)
        y = out_y["train"]
        val_idx = np.concatenate([
            rng.permutation(np.flatnonzero(y == k))[
                : max(1, int(cfg.valid_fraction * (y == k).sum()))] for k in np.unique(y)])
        keep = np.setdiff1d(np.arange(len(y)), val_idx)
        for dst, idx in (("valid", val_idx), ("train", keep)):
            src_paths = paths["train"]
            out_hu[dst], out_y[dst] = out_hu["train"][idx], y[idx]
            paths[dst] = [src_paths[i] for i in idx]
        counts = np.bincount(out_y["valid"], minlength=len(CLASSES))
        held_out = {c: int(n) for c, n in zip(CLASSES, counts, strict=True) if n}
        # Said, not silent: validation (and so the kept epoch) now rests on train images.
        warnings.append(f"no valid split in the data: {len(val_idx)} train image(s) held out "
                        f"for validation (valid_fraction {cfg.valid_fraction:g}; "
                        + ", ".join(f"{c} {n}" for c, n in held_out.items()) + ")")
    for split in ("train", "valid", "test"):
        warnings += check_split_labels(out_y[split], list(CLASSES), split)
    audit = _audit_summary(root)
    audit["per_split"] = {s: np.bincount(out_y[s], minlength=len(CLASSES)).tolist()
                          for s in out_y}
    audit["classes"] = list(CLASSES)
    if held_out:
        audit["valid_held_out_of_train"] = held_out
    if cfg.manifest:
        audit["manifest"] = str(cfg.manifest)
    if marked:
        warnings.append(f"{len(marked)} image(s) carry colour marks (an annotation line?), read "
                        f"as grey levels the classifier sees (e.g. {marked[0]})")
    return StudyData(out_hu, out_y, paths, failures, warnings, audit, str(root))


def _limit_test(data: StudyData, max_test: int | None, seed: int) -> None:
    if not max_test or len(data.labels["test"]) <= max_test:
        return
    y = data.labels["test"]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    # Stratified: keep each class's share.
    keep = []
    for k in np.unique(y):
        idx = order[y[order] == k]
        keep.extend(idx[: max(1, round(max_test * len(idx) / len(y)))].tolist())
    keep = np.sort(np.array(keep[: max_test] if len(keep) > max_test else keep))
    data.hu["test"], data.labels["test"] = data.hu["test"][keep], y[keep]
    data.paths["test"] = [data.paths["test"][i] for i in keep]


def data_inputs(cfg: StudyConfig) -> str | None:
    """A hash of what the data stage reads from disk: the manifest's bytes and every image
    file's path (relative to the data folder), size and modification time.

    A stat per file, no pixel read, so a rerun checks it cheaply; ``None`` for the built-in
    phantoms (their configuration says everything).

    Example:
        >>> data_inputs(StudyConfig()) is None
        True
    """
    if cfg.data is None:
        return None
    from lowdose.io.datasets import IMAGE_SUFFIXES

    root = Path(cfg.data)
    h = hashlib.sha256()
    if cfg.manifest:
        try:
            h.update(Path(cfg.manifest).read_bytes())
        except OSError as exc:  # the rebuild that follows says what is wrong
            h.update(f"unreadable manifest: {exc}".encode())
    h.update(b"\0files\0")
    if root.is_dir():
        entries = []
        for path in root.rglob("*"):
            if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            with contextlib.suppress(OSError):  # vanished or not a file: not an input
                st = path.stat()
                if path.is_file():
                    entries.append(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0"
                                   f"{st.st_mtime_ns}\n")
        h.update("".join(sorted(entries)).encode())
    return h.hexdigest()[:16]


def _listing_unchanged(cfg: StudyConfig, meta: dict[str, Any]) -> bool:
    """Whether a data cache written before input hashes were recorded still lists the images
    the data folder and manifest give now (the same paths; a test split cut by ``max_test``
    may leave some out)."""
    import warnings

    from lowdose.io.datasets import scan_class_folders

    if cfg.data is None:
        return True
    try:
        with warnings.catch_warnings():  # the scan's notes were given when the cache was made
            warnings.simplefilter("ignore")
            items = scan_class_folders(Path(cfg.data),
                                       manifest=Path(cfg.manifest) if cfg.manifest else None)
    except Exception:  # e.g. a manifest row naming a deleted file: the rebuild says it
        return False
    now = {str(i.path): str(i.split) for i in items}
    cached = {p for paths in meta.get("paths", {}).values() for p in paths}
    cached |= {f["path"] for f in meta.get("failures", [])}
    if cached - set(now):
        return False
    extra = set(now) - cached
    return not extra or (bool(cfg.max_test) and all(now[p] == "test" for p in extra))


def _read_data_cache(npz: Path, meta: dict[str, Any]) -> StudyData:
    arrays = np.load(npz)
    splits = meta["splits"]
    return StudyData({s: arrays[f"{s}_hu"] for s in splits},
                     {s: arrays[f"{s}_y"] for s in splits}, meta["paths"], meta["failures"],
                     meta["warnings"], meta["audit"], meta["source"], meta.get("revision"),
                     meta.get("inputs"), meta.get("build_s"), cached=True)


def load_study_data(cfg: StudyConfig, cache: Path, progress: bool = True) -> StudyData:
    """The data stage, cached in ``cache/data-<hash>.npz`` (+ ``.json``).

    The cache is keyed by the configuration; it is used only while the data folder's image
    files (path, size, modification time) and the manifest's bytes are those it was built
    from. Otherwise it is rebuilt, ``warnings`` says so (that run only) and
    :attr:`StudyData.revision` changes, so that the classifier and the cells are recomputed.
    """
    key = _hash({"data": cfg.data, "manifest": cfg.manifest, "size": cfg.slice_size,
                 "crop": cfg.crop_body, "window": cfg.png_window, "valid": cfg.valid_fraction,
                 "phantom": asdict(cfg.phantom) if cfg.data is None else None, "seed": cfg.seed,
                 "max_test": cfg.max_test, "v": 3})
    npz, meta_path = cache / f"data-{key}.npz", cache / f"data-{key}.json"
    inputs = data_inputs(cfg)
    first = inputs  # the inputs this key was first built from (revision None for them)
    changed = False
    if npz.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if "inputs" not in meta and _listing_unchanged(cfg, meta):
            # A cache from before input hashes were kept, still listing the same images:
            # adopt it (recomputing it, and all that depends on it, would change nothing).
            meta["inputs"] = meta["first_inputs"] = inputs
            atomic_write_text(meta_path, json.dumps(meta, indent=1))
        if meta.get("inputs") == inputs:
            return _read_data_cache(npz, meta)
        changed = True
        first = meta.get("first_inputs") or "unknown"
    t0 = time.perf_counter()
    data = _phantom_data(cfg) if cfg.data is None else _folder_data(cfg, progress)
    _limit_test(data, cfg.max_test, cfg.seed)
    if cfg.data is not None:
        _add_duplicates_in_use(data, Path(cfg.data))
    data.build_s = round(time.perf_counter() - t0, 2)
    data.inputs = inputs
    data.revision = None if inputs == first else inputs
    arrays = {f"{s}_hu": v for s, v in data.hu.items()} | {
        f"{s}_y": v for s, v in data.labels.items()}
    _save_npz(npz, **arrays)
    atomic_write_text(meta_path, json.dumps({
        "splits": sorted(data.hu), "paths": data.paths, "failures": data.failures,
        "warnings": data.warnings, "audit": data.audit, "source": data.source,
        "inputs": inputs, "first_inputs": first, "revision": data.revision,
        "build_s": data.build_s}, indent=1))
    if changed:  # this run's note only: the cached warnings describe the data themselves
        data.warnings = [f"{cfg.data}: the image files or the manifest changed since the data "
                         "stage was cached: rebuilt it (what depends on it is recomputed)",
                         *data.warnings]
    return data


# ------------------------------------------------------------------------ classifier stage


def get_classifier(cfg: StudyConfig, data: StudyData, cache: Path, resume: bool,
                   progress: bool = True) -> tuple[Any, dict[str, Any]]:
    """Load the named classifier or train one on the full-dose train split (cached)."""
    from lowdose.models.classifiers import load_classifier
    from lowdose.training.classifier import preset, train_classifier

    if cfg.classifier:
        model = load_classifier(cfg.classifier, device=cfg.device, expected_classes=CLASSES)
        summary = {"source": "loaded", "path": str(cfg.classifier), "spec": asdict(model.spec)}
        if note := preparation_note(cfg, data, model.spec):
            summary["preparation_note"] = note
        return model, summary
    overrides = {"seed": cfg.seed, "slice_size": cfg.slice_size, "crop_body": cfg.crop_body,
                 **cfg.train}
    tcfg = preset(cfg.preset, **overrides)
    key = _hash({"data": cfg.data, "manifest": cfg.manifest, "size": cfg.slice_size,
                 "phantom": asdict(cfg.phantom) if cfg.data is None else None,
                 "train": tcfg.to_dict(), "window": cfg.png_window, "hu_floor": HU_MIN,
                 # Only data changed since first cached: the keys of unchanged data stay.
                 **({"data_revision": data.revision} if data.revision else {})})
    folder = cache / f"classifier-{key}"
    final = folder / "classifier.safetensors"
    summary_path = folder / "summary.json"
    if final.is_file() and summary_path.is_file():
        model = load_classifier(final, device=cfg.device, expected_classes=CLASSES)
        return model, {**json.loads(summary_path.read_text()), "cached": True}
    t0 = time.perf_counter()
    model, summary = train_classifier(
        data.hu["train"], data.labels["train"], data.hu["valid"], data.labels["valid"], tcfg,
        folder, resume=resume, device=cfg.device, progress=progress)
    summary = {"source": "trained", "preset": cfg.preset, "config": tcfg.to_dict(), **summary,
               "train_s": round(time.perf_counter() - t0, 2)}
    atomic_write_text(summary_path, json.dumps(summary, indent=1, default=str))
    return model, summary


def preparation_note(cfg: StudyConfig, data: StudyData, spec: Any) -> str | None:
    """How the study prepares slices differently from how a loaded classifier was trained
    (``lowdose classify`` prepares them its way), or ``None``.

    The study keeps its own preparation: simulation and restoration run on its slices, and
    an 8-bit image already clipped through one window cannot be read again through another.
    So this is stated, not corrected.
    """
    from lowdose.io.datasets import IMAGE_SUFFIXES

    ours, theirs = [], []
    eight_bit = tuple(s for s in IMAGE_SUFFIXES if s != ".npy")  # .npy holds HU, no window
    png = any(Path(p).suffix.lower() in eight_bit for paths in data.paths.values() for p in paths)
    window = tuple(float(v) for v in spec.window)
    if png and window != tuple(cfg.png_window):
        ours.append(f"8-bit images through [{cfg.png_window[0]:g}, {cfg.png_window[1]:g}] HU")
        theirs.append(f"8-bit images through [{window[0]:g}, {window[1]:g}] HU")
    if spec.slice_size and spec.slice_size != cfg.slice_size:
        ours.append(f"{cfg.slice_size} px slices")
        theirs.append(f"{spec.slice_size} px slices")
    if spec.slice_size and spec.crop_body != cfg.crop_body:
        ours.append("body crop " + ("on" if cfg.crop_body else "off"))
        theirs.append("body crop " + ("on" if spec.crop_body else "off"))
    if not ours:
        return None
    return (f"classifier {Path(str(cfg.classifier)).name} was trained on "
            f"{', '.join(theirs)}; this study prepares {', '.join(ours)} and keeps its own "
            "preparation (the probabilities differ from those of `lowdose classify`)")


def _classifier_key(entry: int | str) -> str:
    """What makes two ``extra_classifiers`` entries the same: the seed, or the resolved file.

    Example:
        >>> _classifier_key(3), _classifier_key("./x.pt") == _classifier_key("x.pt")
        ('3', True)
    """
    return str(entry) if isinstance(entry, int) else str(Path(entry).expanduser().resolve())


def extra_classifiers(cfg: StudyConfig, data: StudyData, cache: Path, resume: bool,
                      progress: bool = True) -> list[tuple[str, Any, dict[str, Any]]]:
    """The study's ``extra_classifiers`` as ``(label, model, summary)``: a seed trains one like
    the study's own (cached like it), a path loads one."""
    from dataclasses import replace

    out = []
    for extra in cfg.extra_classifiers:
        sub = (replace(cfg, seed=extra, classifier=None, extra_classifiers=[])
               if isinstance(extra, int) else
               replace(cfg, classifier=extra, extra_classifiers=[]))
        model, summary = get_classifier(sub, data, cache, resume, progress)
        out.append((classifier_label(summary), model, summary))
    return out


def classifier_label(summary: dict[str, Any]) -> str:
    """How tables name a classifier from its :func:`get_classifier` summary: ``seed N`` for
    one trained here, the file's name for one loaded.

    Example:
        >>> classifier_label({"config": {"seed": 2}}), classifier_label({"path": "/a/b.pt"})
        ('seed 2', 'b.pt')
    """
    seed = summary.get("config", {}).get("seed")
    return f"seed {seed}" if seed is not None else Path(summary["path"]).name


def _cells_dir(cache: Path, cfg: StudyConfig, data: StudyData, clf_summary: dict[str, Any]
               ) -> Path:
    """Where one classifier's cells are cached (they depend on it and on the data)."""
    key = _hash({"clf": clf_summary.get("config") or clf_summary.get("path"),
                 "data": data.source, "n_test": len(data.labels["test"]),
                 "size": cfg.slice_size, "phantom": asdict(cfg.phantom),
                 "manifest": cfg.manifest, "max_test": cfg.max_test,
                 **({"data_revision": data.revision} if data.revision else {})})
    return cache / f"cells-{key}"


# ------------------------------------------------------------------------------ cell stage


def _image_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    from lowdose.metrics.image import image_quality

    rows = [image_quality(p, t) for p, t in zip(pred, target, strict=True)]
    return {k: np.array([r[k] for r in rows], np.float64) for k in rows[0]}


def _select_grid(labels: np.ndarray, n: int) -> list[int]:
    """The first slice of each class, then more, up to ``n`` (the same slices in every cell)."""
    picked: list[int] = []
    for k in np.unique(labels):
        picked.append(int(np.flatnonzero(labels == k)[0]))
    for i in range(len(labels)):
        if len(picked) >= n:
            break
        if i not in picked:
            picked.append(i)
    return sorted(picked[:n])


def run_cell(
    *,
    full: np.ndarray,
    targets: Sequence[tuple[Any, Path]],
    low_fn: Callable[[int, int], np.ndarray] | None,
    denoiser: Any | None,
    chunk: int,
    grid: list[int],
    desc: str,
    progress: bool = True,
) -> list[dict[str, np.ndarray]]:
    """Probabilities, per-image metrics and grid images of one cell, resumable by chunk.

    ``low_fn(start, stop)`` gives the (low-dose) inputs of slices ``start:stop`` (``None``: the
    full-dose images themselves); ``denoiser`` restores them (``None``: raw). ``targets`` are
    ``(classifier, cache file)`` pairs: each chunk is restored once and judged by every
    classifier still missing it; one result per target, in order.
    """
    import torch

    n = len(full)
    done: list[dict[str, np.ndarray]] = []
    for _, path in targets:
        found: dict[str, np.ndarray] = {}
        if path.is_file():
            with np.load(path) as z:
                found = {k: z[k] for k in z.files}
        done.append(found)
    n_done = [int(d.get("n_done", 0)) for d in done]
    start = min(n_done)
    bar = _progress(total=n, initial=start, desc=desc, leave=False,
                    disable=not progress or start >= n)
    first = start
    while start < n:
        t0 = time.perf_counter()
        stop = min(n, start + chunk)
        x = full[start:stop] if low_fn is None else low_fn(start, stop)
        if denoiser is not None:
            with torch.no_grad():
                x = denoiser.denoise(torch.from_numpy(np.ascontiguousarray(x))[:, None].float())
            x = x[:, 0].detach().cpu().numpy().astype(np.float32)
        batch = torch.from_numpy(np.ascontiguousarray(x))[:, None]
        metrics = {f"m_{m}": v for m, v in _image_metrics(x, full[start:stop]).items()}
        in_chunk = [g for g in grid if start <= g < stop]
        shown = {"grid_idx": np.array(in_chunk, np.int64),
                 "grid_img": x[[g - start for g in in_chunk]].astype(np.float32)}
        for k, (model, path) in enumerate(targets):
            if n_done[k] > start:  # chunks are the same for every target: this one has it
                continue
            new = {"probs": model.predict_proba(batch).numpy(), **metrics, **shown}
            merged = ({m: np.concatenate([done[k][m], new[m]]) for m in new}
                      if "probs" in done[k] else new)
            merged["n_done"] = np.array(stop)
            # Seconds spent on the cell so far, kept with it: a cached rerun reports them.
            merged["compute_s"] = np.array(float(done[k].get("compute_s", 0.0))
                                           + time.perf_counter() - t0)
            _save_npz(path, **merged)
            done[k], n_done[k] = merged, stop
        bar.update(stop - start)
        start = stop
    bar.close()
    for d in done:
        d["cached"] = np.array(first >= n)  # nothing computed in this run
    return done


def _cell_summary(y: np.ndarray, res: dict[str, np.ndarray], n_boot: int, seed: int,
                  reference_probs: np.ndarray | None = None,
                  raw_probs: np.ndarray | None = None) -> dict[str, Any]:
    """Task metrics, image metrics and, given the probabilities of the same slices at full
    dose and at the same low dose unrestored, the paired per-slice changes against each
    (``paired_vs_full_dose``, ``paired_vs_raw``: does restoring help the classifier?)."""
    from lowdose.metrics.task import paired_change, task_metrics

    task = task_metrics(y, res["probs"], class_names=CLASSES, n_boot=n_boot, seed=seed)
    # Mean over slices, but PSNR from the mean squared error over slices (data range 1): one
    # slice identical to its reference (infinite PSNR, e.g. nothing inside the window) must
    # not make the whole cell infinite. Only an unchanged cell has no PSNR (null: JSON has no
    # infinity).
    image = {k[2:]: float(np.mean(v)) for k, v in res.items() if k.startswith("m_")}
    for key in [k for k in image if k.startswith("psnr_")]:
        rmse = res.get("m_rmse_" + key[5:])
        if rmse is not None:
            mse = float(np.mean(np.square(rmse)))
            image[key] = -10.0 * float(np.log10(mse)) if mse > 0 else float("inf")
    image = {k: (v if np.isfinite(v) else None) for k, v in image.items()}
    out = {"accuracy": task["accuracy"], "task": task, "image": image}
    if reference_probs is not None:
        out["paired_vs_full_dose"] = paired_change(y, reference_probs, res["probs"])
    if raw_probs is not None:
        out["paired_vs_raw"] = paired_change(y, raw_probs, res["probs"])
    return out


def _plain_task(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy and balanced accuracy without intervals (for the extra classifiers)."""
    from lowdose.metrics.task import accuracy, balanced_accuracy

    return {"accuracy": accuracy(y, probs), "balanced_accuracy": balanced_accuracy(y, probs)}


def _across_classifiers(y: np.ndarray, labels: list[str], refs: list[dict[str, np.ndarray]],
                        judged: list[dict[str, np.ndarray]],
                        raw_probs: list[np.ndarray] | None) -> dict[str, Any]:
    """A cell as each extra classifier sees it, and its change pooled over all classifiers
    (the study's own first): against full dose and, for a restored cell, the raw low dose."""
    from lowdose.metrics.task import paired_change, paired_change_across

    tasks = [_plain_task(y, j["probs"]) for j in judged]
    each = []
    for k, label in enumerate(labels, start=1):
        entry = {"label": label, **tasks[k],
                 "paired_vs_full_dose": paired_change(y, refs[k]["probs"], judged[k]["probs"])}
        if raw_probs is not None:
            entry["paired_vs_raw"] = paired_change(y, raw_probs[k], judged[k]["probs"])
        each.append(entry)
    accs = [t["accuracy"] for t in tasks]
    pooled: dict[str, Any] = {
        "n_classifiers": len(judged), "accuracy_mean": float(np.mean(accs)),
        "accuracy_min": float(np.min(accs)), "accuracy_max": float(np.max(accs)),
        "vs_full_dose": paired_change_across(y, [r["probs"] for r in refs],
                                             [j["probs"] for j in judged])}
    if raw_probs is not None:
        pooled["vs_raw"] = paired_change_across(y, raw_probs, [j["probs"] for j in judged])
    return {"extra_classifiers": each, "across_classifiers": pooled}


def _holm_across_cells(cells: list[dict[str, Any]]) -> None:
    """Add ``p_holm`` to each pooled test: Holm's adjustment over all the study's cells
    (against full dose) and over its restored cells (against the raw low dose)."""
    from lowdose.metrics.task import holm_adjust

    for key in ("vs_full_dose", "vs_raw"):
        tests = [c["across_classifiers"][key] for c in cells
                 if key in c.get("across_classifiers", {})]
        for test, adjusted in zip(tests, holm_adjust([t["p_value"] for t in tests]),
                                  strict=True):
            test["p_holm"] = adjusted


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("lowdose", "torch", "monai", "numpy", "scikit-image", "bm3d", "astra-toolbox"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def _simulator_options(cfg: StudyConfig, method: str) -> dict[str, Any]:
    """Options for ``method``: the pixel size where the simulator takes one, plus the config's."""
    import inspect

    from lowdose.physics.base import simulators

    params = inspect.signature(simulators.get(method).__init__).parameters
    opts: dict[str, Any] = {}
    if "pixel_size_mm" in params:
        opts["pixel_size_mm"] = round(cfg.pixel_mm, 4)
    opts.update(cfg.simulator_options.get(method, {}))
    return opts


#: Denoiser settings that change how it runs, never what it returns (left out of fingerprints,
#: so a new default for them keeps a study's cached cells).
OUTPUT_NEUTRAL_SETTINGS = frozenset({"tile_batch"})


#: A network denoiser's records that come with its weights (which are hashed): its
#: architecture, rebuilt from the weight file, and the facts of its training. Left out so the
#: fingerprints of learned denoisers stay what they were before settings held in lists, dicts
#: and arrays counted.
_WEIGHT_RECORDS = frozenset({"arch", "metadata"})


def _content(value: Any) -> str | None:
    """A stable text of a setting held in a list, tuple, set, dict or array, by content (an
    array's dtype, shape and bytes); ``None`` when it holds anything else (an object, a
    function), as such settings were always left out.

    Example:
        >>> _content([3, 3]), _content({"b": 1, "a": (2.0,)}), _content([object()])
        ('[3,3]', '{a:(2.0),b:1}', None)
    """
    import torch

    if isinstance(value, bool | int | float | str | np.generic) or value is None:
        return repr(value)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().contiguous().numpy()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return None
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
        return f"array({value.dtype.str},{value.shape},{digest})"
    if isinstance(value, dict):
        items = sorted((str(k), _content(v)) for k, v in value.items())
        if any(text is None for _, text in items):
            return None
        return "{" + ",".join(f"{k}:{text}" for k, text in items) + "}"
    if isinstance(value, list | tuple | set | frozenset):
        texts = [_content(v) for v in value]
        if any(text is None for text in texts):
            return None
        if isinstance(value, set | frozenset):  # no order of their own
            texts = sorted(texts)  # type: ignore[type-var]
        joined = ",".join(texts)  # type: ignore[arg-type]
        return f"({joined})" if isinstance(value, tuple) else f"[{joined}]"
    return None


def denoiser_fingerprint(denoiser: Any) -> str:
    """A hash of what decides a denoiser's output: its class and its ``revision``, its settings
    (but those of :data:`OUTPUT_NEUTRAL_SETTINGS`; lists, dicts and arrays by content) and the
    weights of every network it holds (so new weights under the same name are noticed).

    Example:
        >>> from lowdose.models.base import denoisers
        >>> len(denoiser_fingerprint(denoisers.get("tv")()))
        12
    """
    import torch

    from lowdose.models.network import NetworkDenoiser

    cls = type(denoiser)
    h = hashlib.sha256(f"{cls.__module__}.{cls.__qualname__}".encode())
    if revision := getattr(cls, "revision", ""):
        h.update(f"revision={revision};".encode())
    parts = vars(denoiser) if hasattr(denoiser, "__dict__") else {}
    modules = [denoiser] if isinstance(denoiser, torch.nn.Module) else []
    network = isinstance(denoiser, NetworkDenoiser)
    for key, value in sorted(parts.items()):
        if key in OUTPUT_NEUTRAL_SETTINGS:
            continue
        if isinstance(value, torch.nn.Module):
            modules.append(value)
        elif isinstance(value, (int, float, str, bool, tuple)) or value is None:
            # As before (repr), so the fingerprints of existing settings do not change.
            h.update(f"{key}={value!r};".encode())
        elif key.startswith("_") or (network and key in _WEIGHT_RECORDS):
            continue  # private state (a cache may fill as it runs), or hashed with the weights
        elif (text := _content(value)) is not None:
            h.update(f"{key}={text};".encode())
    for module in modules:
        for key, tensor in module.state_dict().items():
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def _fingerprints(dens: list[tuple[str, Any]]) -> dict[str, str]:
    """``denoiser_fingerprint`` of each loaded denoiser, by name."""
    return {name: denoiser_fingerprint(den) for name, den in dens}


def _forget_changed_denoisers(cells_dir: Path, dens: list[tuple[str, Any]],
                              say: Callable[[str], None]) -> dict[str, str]:
    """Drop cached cells of denoisers whose fingerprint changed since they were computed;
    returns the current fingerprints by name."""
    import re

    record = cells_dir / "denoisers.json"
    known = json.loads(record.read_text()) if record.is_file() else {}
    current = _fingerprints(dens)
    for name, fp in current.items():
        if known.get(name, fp) == fp:
            continue
        pattern = re.compile(rf".+_{re.escape(name)}-[0-9a-f]{{6}}\.npz")
        stale = [f for f in cells_dir.glob("*.npz") if pattern.fullmatch(f.name)]
        for f in stale:
            f.unlink()
        say(f"denoiser {name} changed since its {len(stale)} cached cell(s): recomputing")
    cells_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record, json.dumps({**known, **current}, indent=1, sort_keys=True))
    return current


def _denoiser_list(cfg: StudyConfig) -> tuple[list[tuple[str, Any]], list[dict[str, str]]]:
    from lowdose.device import pick_device
    from lowdose.models.base import denoisers
    from lowdose.models.loading import load_denoiser
    from lowdose.models.network import NetworkDenoiser, precision_context

    precision_context(cfg.precision, pick_device(cfg.device))  # refuse bf16 here, not mid-study
    names = cfg.denoisers if cfg.denoisers is not None else denoisers.names()
    loaded, skipped = [], []
    for name in names:
        if name == RAW:
            continue
        try:
            entry = denoisers.get(name) if name in denoisers else None
            # A registry entry may be a factory function: no class, so not a learned one.
            learned = isinstance(entry, type) and issubclass(entry, NetworkDenoiser)
            options = {"precision": cfg.precision} if learned else {}
            loaded.append((name, load_denoiser(name, device=cfg.device, **options)))
        except Exception as exc:  # a denoiser without weights is reported, not fatal
            skipped.append({"name": name, "reason": str(exc).splitlines()[0] if str(exc)
                            else type(exc).__name__})
    return loaded, skipped


def finished_study(cfg: StudyConfig) -> dict[str, Any] | None:
    """The results of a study already run with exactly this configuration and these
    denoisers (the same fingerprints: new weights under a shipped name count as a change),
    else ``None``. Lets a rerun keep a finished study's timings instead of re-timing cache
    loads; results of an older format (before fingerprints or the paired counts were recorded)
    are never taken as finished.

    Example:
        >>> finished_study(StudyConfig(out="/nonexistent")) is None
        True
    """
    path = Path(cfg.out) / "results.json"
    if not path.is_file():
        return None
    old = json.loads(path.read_text())
    if old.get("format") != RESULTS_FORMAT:
        return None
    if old.get("config") != json.loads(json.dumps(cfg.to_dict(), default=str)):
        return None
    if old.get("data", {}).get("inputs") != data_inputs(cfg):  # other images since
        return None
    recorded = old.get("denoisers", {}).get("fingerprints")
    return old if recorded == _fingerprints(_denoiser_list(cfg)[0]) else None


def run_study(cfg: StudyConfig, resume: bool = True, progress: bool = True,
              log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run every stage (see the module doc) and write ``results.json`` and ``report.html``.

    Args:
        cfg: the study configuration.
        resume: reuse cached stages and partial cells (``False`` clears the cache first).
        progress: show progress bars.
        log: where one-line stage messages go (``None``: silent).

    Returns:
        The results dict written to ``results.json``.
    """
    from lowdose.physics.api import build_simulator, simulate_low_dose
    from lowdose.physics.base import simulators

    say = log or (lambda _m: None)
    out = Path(cfg.out)
    if cfg.data and Path(cfg.data).resolve() in (out.resolve(), *out.resolve().parents):
        raise LowdoseError(f"{out}: the output folder must not lie inside the data folder")
    cache = out / "cache"
    if not resume and cache.exists():
        import shutil

        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    data = load_study_data(cfg, cache, progress)
    timings["data"] = time.perf_counter() - t0
    # A cached stage reports the time it took when computed (kept with its cache), and is
    # listed under "cached"; a cache older than that keeps this run's time.
    cached: list[str] = []
    if data.cached:
        cached.append("data")
        timings["data"] = data.build_s if data.build_s is not None else timings["data"]
    for w in data.warnings:
        say(f"warning: {w}")
    if data.failures:
        say(f"warning: {len(data.failures)} image(s) could not be read and were skipped "
            "(listed in results.json and the report)")
    say(f"data: {data.source}: " + ", ".join(f"{s} {len(v)}" for s, v in data.labels.items()))

    t0 = time.perf_counter()
    model, clf_summary = get_classifier(cfg, data, cache, resume, progress)
    others = extra_classifiers(cfg, data, cache, resume, progress)
    timings["classifier"] = time.perf_counter() - t0
    summaries = [clf_summary] + [summ for _, _, summ in others]
    if clf_summary.get("cached"):
        cached.append("classifier")
    timings["classifier"] += sum(float(summ.get("train_s", 0.0)) for summ in summaries
                                 if summ.get("cached"))
    for summ in summaries:
        if note := summ.get("preparation_note"):
            say(f"warning: {note}")
    judges = [(model, _cells_dir(cache, cfg, data, clf_summary))] + [
        (m, _cells_dir(cache, cfg, data, summ)) for _, m, summ in others]

    full = data.hu["test"]
    y = data.labels["test"]
    grid = _select_grid(y, cfg.grid_slices)
    t0 = time.perf_counter()
    refs = run_cell(full=full, targets=[(m, d / "full-dose.npz") for m, d in judges],
                    low_fn=None, denoiser=None, chunk=cfg.chunk, grid=grid, desc="full dose",
                    progress=progress)
    ref = refs[0]
    full_summary = _cell_summary(y, ref, cfg.n_boot, cfg.seed)
    timings["full_dose"] = time.perf_counter() - t0
    if bool(ref["cached"]) and "compute_s" in ref:
        cached.append(FULL_DOSE)
        timings["full_dose"] = float(ref["compute_s"])
    acc = full_summary["accuracy"]
    say(f"full dose: accuracy {acc['value']:.3f} [{acc['ci95'][0]:.3f}, {acc['ci95'][1]:.3f}]")
    extra_results = []
    for (label, _, summ), r in zip(others, refs[1:], strict=True):
        extra_results.append({"label": label, "full_dose": _plain_task(y, r["probs"]),
                              "classifier": {k: v for k, v in summ.items() if k != "history"}})
        say(f"full dose, classifier {label}: accuracy "
            f"{extra_results[-1]['full_dose']['accuracy']:.3f}")

    methods = cfg.methods if cfg.methods is not None else simulators.names()
    for m in methods:
        simulators.get(m)  # unknown method: one clear error before the long work
    dens, skipped = _denoiser_list(cfg)
    for s in skipped:
        say(f"warning: denoiser {s['name']} skipped: {s['reason']}")
    pixel_notes = {n: note for n, d in dens if (note := d.pixel_size_note(cfg.pixel_mm))}
    for note in pixel_notes.values():
        say(f"warning: {note}")
    for _, cells_dir in judges:
        fingerprints = _forget_changed_denoisers(cells_dir, dens, say)
    den_names = [RAW] + [n for n, _ in dens]
    cells: list[dict[str, Any]] = []
    grid_images: dict[str, np.ndarray] = {FULL_DOSE: ref["grid_img"]}
    t_cells = time.perf_counter()
    cell_times: dict[str, float] = {}
    total = len(methods) * len(cfg.doses) * len(den_names)
    outer = _progress(total=total, desc="study cells", disable=not progress)
    sim_options = {m: _simulator_options(cfg, m) for m in methods}
    for method in methods:
        sim = build_simulator(method, **sim_options[method])
        sim_key = _hash(sim_options[method])[:6]
        for dose in cfg.doses:
            sim_seed = _seed_for(cfg.seed, method, dose)
            cached_low: dict[tuple[int, int], np.ndarray] = {}

            def low_fn(a: int, b: int, _sim: Any = sim, _seed: int = sim_seed,
                       _dose: float = dose, _cache: dict = cached_low) -> np.ndarray:
                if (a, b) not in _cache:
                    # The seed depends on the chunk, so a resumed chunk gets the same noise.
                    _cache.clear()
                    _cache[(a, b)] = simulate_low_dose(
                        full[a:b], _dose, simulator=_sim, seed=_seed + a, device=cfg.device)
                return _cache[(a, b)]

            raw_probs: list[np.ndarray] | None = None  # the unrestored cell comes first
            for den_name in den_names:
                den = None if den_name == RAW else dict(dens)[den_name]
                t1 = time.perf_counter()
                tag = f"{method}_{dose:g}_{den_name}"
                judged = run_cell(full=full,
                               targets=[(m, d / f"{tag}-{sim_key}.npz") for m, d in judges],
                               low_fn=low_fn, denoiser=den, chunk=cfg.chunk, grid=grid,
                               desc=f"{method} dose {dose:g} {den_name}", progress=progress)
                cell_times[tag] = time.perf_counter() - t1
                res = judged[0]
                if bool(res["cached"]) and "compute_s" in res:
                    cached.append(tag)
                    cell_times[tag] = float(res["compute_s"])
                summary = _cell_summary(y, res, cfg.n_boot, cfg.seed, ref["probs"],
                                        raw_probs[0] if raw_probs else None)
                if others:
                    summary.update(_across_classifiers(
                        y, [label for label, _, _ in others], refs, judged, raw_probs))
                if den_name == RAW:
                    raw_probs = [r["probs"] for r in judged]
                cells.append({"method": method, "dose": dose, "denoiser": den_name, **summary})
                grid_images[tag] = res["grid_img"]
                outer.update(1)
                a = summary["accuracy"]
                psnr = summary["image"].get("psnr_window")
                paired = summary["paired_vs_full_dose"]
                vs_raw = summary.get("paired_vs_raw")
                outer.write(f"{tag}: accuracy {a['value']:.3f} (vs full dose: "
                            f"{paired['lost']} lost, {paired['gained']} gained"
                            + (f"; vs raw low dose: {vs_raw['lost']} lost, {vs_raw['gained']} "
                               "gained" if vs_raw else "")
                            + "), PSNR(window) "
                            + (f"{psnr:.2f} dB" if psnr is not None else "inf (unchanged)"))
    outer.close()
    timings["cells"] = time.perf_counter() - t_cells
    if any(tag in cached for tag in cell_times):
        # Cached cells count with the time they took; the rest of the stage as measured now.
        timings["cells"] += sum(t for tag, t in cell_times.items() if tag in cached)
    if others:
        _holm_across_cells(cells)

    results: dict[str, Any] = {
        "format": RESULTS_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": cfg.to_dict(),
        "versions": _versions(),
        "seeds": {"study": cfg.seed, "classifier": clf_summary.get("config", {}).get("seed"),
                  "simulation": "crc32(seed, method, dose) + first slice index of each chunk",
                  "bootstrap": cfg.seed},
        "classes": list(CLASSES),
        "data": {"source": data.source, "n": {s: len(v) for s, v in data.labels.items()},
                 "png_window_hu": list(cfg.png_window),
                 "png_note": "8-bit display images are not HU: grey g in [0, 255] is mapped "
                             f"linearly to HU = {cfg.png_window[0]:g} + g/255 * "
                             f"{cfg.png_window[1] - cfg.png_window[0]:g}"
                             + (" (the lung window)" if tuple(cfg.png_window) == LUNG_WINDOW
                                else "")
                             + (f", then clipped at {HU_MIN:g} HU (no scanner value lies below)"
                                if cfg.png_window[0] < HU_MIN else ""),
                 "slice_size": cfg.slice_size, "crop_body": cfg.crop_body,
                 "valid_held_out_of_train": data.audit.get("valid_held_out_of_train"),
                 "inputs": data.inputs, "warnings": data.warnings},
        "audit": data.audit,
        "read_failures": {"count": len(data.failures), "files": data.failures},
        "classifier": clf_summary,
        "classifier_label": classifier_label(clf_summary),
        "extra_classifiers": extra_results,
        "methods": methods,
        "simulator_options": sim_options,
        "doses": cfg.doses,
        "denoisers": {"used": den_names, "skipped": skipped, "fingerprints": fingerprints,
                      "pixel_size_notes": pixel_notes},
        "full_dose": full_summary,
        "cells": cells,
        "grid": {"indices": grid, "labels": [CLASSES[int(y[i])] for i in grid],
                 "paths": [data.paths["test"][i] for i in grid], "window": cfg.grid_window},
        "image_metric_ranges": {"full": "HU clipped to [-1024, 3072] scaled to [0, 1]",
                                "window": "HU clipped to [-160, 240] scaled to [0, 1]",
                                "rmse_hu": "RMSE in HU, unclipped",
                                "psnr": "from the mean squared error over the test slices; "
                                        "SSIM and RMSE: mean over slices",
                                "reference": "the full-dose test slice"},
        "timings_s": {**{k: round(v, 2) for k, v in timings.items()},
                      "cells_each": {k: round(v, 2) for k, v in cell_times.items()},
                      "cached": cached},
    }
    t0 = time.perf_counter()
    _save_npz(out / "grid.npz", **grid_images)
    from lowdose.reporting.report import write_report

    write_report(results, grid_images, out / "report.html")
    results["timings_s"]["report"] = round(time.perf_counter() - t0, 2)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1, default=str))
    say(f"wrote {out / 'results.json'} and {out / 'report.html'}")
    return results
