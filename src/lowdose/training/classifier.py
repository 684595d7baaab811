"""The classifier family for the one trainer, its presets, and slice data + augmentation.

Slices enter as HU. :func:`prepare_slice` crops a slice to the body (largest bright connected
region, holes filled) with a small margin, pads it to a square with its own background value and
resizes it: this removes the framing and aspect-ratio differences between exports (the Kaggle
test images have another aspect ratio than train). The augmentation
(:func:`augment_hu`) works in HU on ``(B, 1, H, W)`` tensors and is suited to axial CT slices:
small rotations, scaling and shifts (patients lie a little rotated and off-centre), left-right
flips (the classes do not depend on the side), a gamma and gain change of the displayed
intensities (exports differ in brightness and contrast) and, optionally, Gaussian noise.

Class imbalance is handled with inverse-frequency class weights in the cross-entropy, which
also carries label smoothing; the learning rate follows a linear warm-up then a cosine decay,
set by the family itself at every step (so any trainer gives the same schedule).

Example:
    >>> import numpy as np
    >>> hu = np.full((60, 80), -1350, np.float32); hu[10:50, 10:70] = 0
    >>> prepare_slice(hu, 32).shape
    (32, 32)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lowdose.errors import LowdoseError
from lowdose.io.datasets import CLASSES
from lowdose.models.classifiers import LUNG_WINDOW, ClassifierSpec, SliceClassifier
from lowdose.training.base import EMA, TrainingFamily


@dataclass
class ClassifierTrainConfig:
    """Everything that decides a classifier training run (saved beside its checkpoints).

    Attributes:
        arch: registered classifier (``densenet121``, ``resnet18``).
        input_size: pixels the network sees; slices are prepared at ``slice_size``.
        slice_size: side of the prepared (cropped, squared) slices fed to the model.
        intensity: ``window`` or ``percentile`` (see :mod:`lowdose.models.classifiers`).
        epochs, batch_size, lr, weight_decay, warmup_epochs: optimisation (AdamW, cosine).
        label_smoothing: cross-entropy label smoothing.
        class_weighting: weight classes by inverse frequency in the loss.
        patience: early stopping after this many epochs without a better validation score.
        dropout: dropout before the last layer.
        rotate_deg, scale, shift, flip, gamma, gain, noise_std_hu: augmentation ranges.
        crop_body: crop each slice to the body before squaring it.
        ema_decay: with a value in (0, 1), an exponential moving average of the weights
            (updated every step) is what is validated, selected and saved; 0 uses the raw
            weights. On a small validation split the average's scores swing less from epoch
            to epoch, so the selected epoch is less of a lucky draw.
        seed: seeds initialisation, data order and augmentation.
        amp: mixed precision where the device supports it.
    """

    arch: str = "densenet121"
    input_size: int = 128
    slice_size: int = 160
    intensity: str = "percentile"
    epochs: int = 40
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    class_weighting: bool = True
    patience: int = 10
    dropout: float = 0.2
    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.06
    flip: bool = True
    gamma: tuple[float, float] = (0.7, 1.4)
    gain: tuple[float, float] = (0.8, 1.2)
    noise_std_hu: float = 0.0
    crop_body: bool = True
    ema_decay: float = 0.0
    seed: int = 0
    amp: bool = True
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    window: tuple[float, float] = LUNG_WINDOW

    def __post_init__(self) -> None:
        from numbers import Integral

        for key in ("epochs", "patience"):
            if getattr(self, key) < 1:
                raise LowdoseError(f"classifier {key} {getattr(self, key)}: use 1 or more")
        # Sizes in pixels: checked here, before any image is read (torch would fail later).
        for key, option in (("input_size", " (--input-size)"), ("slice_size", "")):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise LowdoseError(f"classifier {key} {value}{option}: use a whole number of "
                                   "pixels, 1 or more")
        if not (self.ema_decay == 0 or 0 < self.ema_decay < 1):
            raise LowdoseError(f"classifier ema_decay {self.ema_decay}: use 0 (off) or a value "
                               "in (0, 1), e.g. 0.99")

    def spec(self) -> ClassifierSpec:
        """The model spec this training produces."""
        return ClassifierSpec(arch=self.arch, classes=list(self.classes),
                              input_size=self.input_size, window=self.window,
                              intensity=self.intensity, dropout=self.dropout,
                              slice_size=self.slice_size, crop_body=self.crop_body)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassifierTrainConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise LowdoseError(f"classifier config: unknown keys {sorted(unknown)}")
        out = cls(**data)
        for key in ("scale", "gamma", "gain", "window"):
            setattr(out, key, tuple(getattr(out, key)))
        return out


PRESETS: dict[str, ClassifierTrainConfig] = {
    # Laptop CPU: 128 px input, a few minutes per 1000 slices and epoch on 2 cores. The weight
    # average (ema_decay) lifted DenseNet-121 on the Kaggle hold-out and test splits
    # (benchmarks/results/study_kaggle.md).
    "cpu": ClassifierTrainConfig(input_size=128, slice_size=160, epochs=40, batch_size=16,
                                 ema_decay=0.99),
    # GPU: 256 px input (the study used 224-512), more epochs.
    "gpu": ClassifierTrainConfig(input_size=256, slice_size=288, epochs=60, batch_size=32,
                                 lr=1e-3, patience=15, ema_decay=0.99),
    # The demo on phantoms: small and short (the whole study runs in minutes on 2 cores). 24
    # epochs with the weight average: 0.56 accuracy on 400 fresh 96 px phantoms, against 0.42
    # for 12 epochs without it (session 32; 4 classes), for about a minute more.
    "demo": ClassifierTrainConfig(arch="densenet121", input_size=96, slice_size=96, epochs=24,
                                  batch_size=16, lr=1e-3, patience=8, warmup_epochs=1.0,
                                  dropout=0.0, ema_decay=0.99),
}


def preset(name: str, **overrides: Any) -> ClassifierTrainConfig:
    """A copy of a named preset (``cpu``, ``gpu``, ``demo``) with ``overrides`` applied."""
    if name not in PRESETS:
        raise LowdoseError(f"unknown classifier preset {name!r}; known: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


# ----------------------------------------------------------------------------- slice data


def body_box(hu: np.ndarray, margin: float = 0.04) -> tuple[slice, slice] | None:
    """Bounding box of the body: the largest region above an Otsu threshold, holes filled.

    Returns ``None`` when no convincing body is found (then nothing is cropped).
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    img = np.asarray(hu, np.float32)
    if img.ndim != 2 or img.min() == img.max():
        return None
    small = img[::2, ::2] if min(img.shape) > 256 else img
    step = 2 if small is not img else 1
    t = threshold_otsu(small)
    mask = ndimage.binary_opening(small > t, iterations=2)
    labels, n = ndimage.label(mask)
    if n == 0:
        return None
    sizes = ndimage.sum(mask, labels, index=range(1, n + 1))
    body = ndimage.binary_fill_holes(labels == (int(np.argmax(sizes)) + 1))
    if body.sum() < 0.05 * body.size:
        return None
    rows, cols = np.flatnonzero(body.any(1)) * step, np.flatnonzero(body.any(0)) * step
    h, w = img.shape
    pad_r, pad_c = int(margin * h), int(margin * w)
    return (slice(max(0, rows[0] - pad_r), min(h, rows[-1] + step + pad_r)),
            slice(max(0, cols[0] - pad_c), min(w, cols[-1] + step + pad_c)))


def prepare_slice(hu: np.ndarray, size: int, crop_body: bool = True) -> np.ndarray:
    """Crop to the body (optional), pad to a square with the background, resize to ``size``.

    The background value is the image's 1st percentile, so padding never adds an edge.
    """
    img = np.asarray(hu, np.float32)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2:
        raise ValueError(f"expected a 2D slice, got shape {img.shape}")
    if crop_body:
        box = body_box(img)
        if box is not None:
            img = img[box]
    h, w = img.shape
    side = max(h, w)
    background = float(np.percentile(img, 1))
    square = np.full((side, side), background, np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    square[top:top + h, left:left + w] = img
    if side == size:
        return square
    t = torch.from_numpy(square)[None, None]
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                        antialias=side > size)
    return out[0, 0].numpy().astype(np.float32)


def augment_hu(hu: torch.Tensor, cfg: ClassifierTrainConfig, generator: torch.Generator
               ) -> torch.Tensor:
    """Random geometric and intensity changes of a ``(B, 1, H, W)`` HU batch (see module doc)."""
    b = hu.shape[0]
    dev = hu.device

    def uniform(lo: float, hi: float, n: int = b) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * (hi - lo) + lo).to(dev)

    lo, hi = cfg.window
    # Geometry: rotation, isotropic scale, shift, optional flip; background = window floor.
    ang = uniform(-cfg.rotate_deg, cfg.rotate_deg) * math.pi / 180
    sc = uniform(*cfg.scale)
    flip = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(b, device=dev)
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta[:, 0, 2], theta[:, 1, 2] = uniform(-cfg.shift, cfg.shift) * 2, uniform(
        -cfg.shift, cfg.shift) * 2
    grid = F.affine_grid(theta, list(hu.shape), align_corners=False)
    base = hu.float() - lo
    out = F.grid_sample(base, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + lo
    # Intensity: gamma and gain of the displayed (windowed) values.
    u = ((out - lo) / (hi - lo)).clamp(0, 1)
    gamma = uniform(*cfg.gamma).view(b, 1, 1, 1)
    gain = uniform(*cfg.gain).view(b, 1, 1, 1)
    u = (u.clamp_min(1e-6) ** gamma * gain).clamp(0, 1)
    out = u * (hi - lo) + lo
    if cfg.noise_std_hu > 0:
        sigma = uniform(0, cfg.noise_std_hu).view(b, 1, 1, 1)
        noise = torch.randn(out.shape, generator=generator).to(dev)
        out = out + sigma * noise
    return out


class SliceDataset(torch.utils.data.Dataset):
    """Prepared HU slices ``(N, S, S)`` and integer labels, yielding ``{"hu", "label"}``."""

    def __init__(self, hu: np.ndarray, labels: np.ndarray) -> None:
        self.hu = torch.as_tensor(np.asarray(hu, np.float32))
        self.labels = torch.as_tensor(np.asarray(labels, np.int64))
        if len(self.hu) != len(self.labels):
            raise ValueError("slices and labels differ in number")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"hu": self.hu[i][None], "label": self.labels[i]}


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1 over present classes (0 if absent)."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max(1, (counts > 0).sum()), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def check_split_labels(labels: np.ndarray, classes: list[str], split: str) -> list[str]:
    """Warnings for classes missing from a split (an error when the train split lacks one)."""
    present = set(np.unique(np.asarray(labels, np.int64)).tolist())
    missing = [c for i, c in enumerate(classes) if i not in present]
    if missing and split == "train":
        raise LowdoseError(f"train split: no images of class(es) {missing}; cannot learn them")
    return [f"{split} split has no images of class {c}" for c in missing]


# Settings that define a classifier run, by option (the rest of the config: its preset key).
# Left out, as a resume may change them: the run length and early stopping (epochs, patience),
# the optimiser and loss (lr, weight_decay, warmup_epochs, label_smoothing, class_weighting)
# and the precision (amp).
_RESUMABLE = ("epochs", "patience", "lr", "weight_decay", "warmup_epochs", "label_smoothing",
              "class_weighting", "amp")
_OPTIONS = {"arch": "--model", "input_size": "--input-size", "intensity": "--intensity",
            "window": "--window", "seed": "--seed", "ema_decay": "--ema-decay"}
_SOURCE_OPTIONS = {"data": "DATA", "manifest": "--manifest", "weights": "--weights"}


def classifier_run_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that define a classifier run, by option, from its family config: what a
    ``--resume`` may not change (the data, with its ``source`` when the run records one, the
    network and its input, the augmentation, the batch size and the seed).

    Example:
        >>> classifier_run_settings({"family": "classifier", "input_size": 96})
        {'--input-size': 96}
    """
    settings: dict[str, Any] = {}
    for key, value in config.items():
        if key in ("family", "source") or key in _RESUMABLE:
            continue
        settings[_OPTIONS.get(key, f"{key} (preset)")] = value
    source = config.get("source") or {}
    settings.update({_SOURCE_OPTIONS.get(k, k): v for k, v in source.items()})
    return settings


def refuse_changed_classifier_resume(out_dir: Any, cfg: ClassifierTrainConfig,
                                     source: dict[str, Any] | None = None) -> None:
    """Before any image is read: refuse to resume ``out_dir``'s checkpoint with other settings
    of the run's data or model than it was trained with (``source``: where its images come
    from, as :func:`train_classifier` records it).

    Raises:
        LowdoseError: the first changed setting, with the run's value and the new one.

    Example:
        >>> refuse_changed_classifier_resume("no/such/run", preset("demo"))
    """
    from lowdose.training.trainer import refuse_changed_resume

    current = {"family": "classifier", **cfg.to_dict(), **({"source": source} if source else {})}
    refuse_changed_resume(out_dir, classifier_run_settings, current)


def finished_classifier_run(out_dir: str | Path, cfg: ClassifierTrainConfig) -> str | None:
    """One line saying that ``out_dir`` holds a finished run that a ``--resume`` with ``cfg``
    would not train further, or ``None`` when there is nothing finished there or the resume
    trains on.

    A finished run (its ``classifier.safetensors`` and ``train_summary.json`` written) trains
    on when ``cfg.epochs`` is more than it ran, unless it stopped early and still would: it
    stopped after ``cfg.patience`` epochs without a better score, counted from its best epoch
    (the family's ``bad_epochs``), so a larger patience lets it go on. The longer run follows
    the schedule of ``cfg`` (the warm-up and cosine decay over all ``cfg.epochs``, as
    :meth:`ClassifierFamily.lr_factor` computes it from the step), as the denoisers' trainer
    does for a longer ``--steps``.

    Raises:
        LowdoseError: the run would train on but holds no checkpoint to continue from, or its
            summary is unreadable.

    Example:
        >>> finished_classifier_run("no/such/run", preset("demo")) is None
        True
    """
    import json

    from lowdose.training.trainer import latest_checkpoint

    out = Path(out_dir)
    summary_path = out / "train_summary.json"
    if not ((out / "classifier.safetensors").is_file() and summary_path.is_file()):
        return None
    try:
        summary = json.loads(summary_path.read_text())
        ran, best = int(summary["epochs_run"]), summary.get("best_epoch")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LowdoseError(f"{summary_path}: unreadable run summary: {exc}") from None
    # The early stop holds while the epochs since the best reach the (possibly new) patience.
    stopped = (summary.get("early_stop") if summary.get("early_stop") and best is not None
               and ran - int(best) >= cfg.patience else None)
    if ran < cfg.epochs and not stopped:
        if latest_checkpoint(out) is None:  # a resume would silently start from scratch
            raise LowdoseError(f"{out}: finished after {ran} epochs but holds no checkpoint to "
                               f"continue to {cfg.epochs}; train into another --out")
        return None
    score = summary.get("best_score")
    shown = f"{score:.3f}" if isinstance(score, int | float) else "n/a"
    why = (f"stopped early: {stopped}; a larger --patience trains on" if stopped else
           f"--epochs {cfg.epochs}; a larger --epochs trains on")
    # The weights file found here, not the summary's record of it (a moved run folder).
    return (f"{out}: already finished ({ran} epochs run, {why}); best epoch {best} (valid "
            f"balanced accuracy {shown}); weights {out / 'classifier.safetensors'}")


class ClassifierFamily(TrainingFamily):
    """A :class:`SliceClassifier` trained with weighted, label-smoothed cross-entropy.

    Batches are ``{"hu": (B, 1, S, S) HU, "label": (B,)}``. One optimiser, ``"classifier"``
    (AdamW); its learning rate (:meth:`lr_factor`): linear warm-up over ``warmup_epochs`` then
    cosine decay to 1% of ``lr`` at ``epochs``. With ``cfg.ema_decay > 0`` the family also
    keeps ``classifier_ema`` (checkpointed with the rest), updated after every step;
    :attr:`evaluated` is the model to validate and keep.

    Example:
        >>> from lowdose.models.classifiers import build_classifier
        >>> cfg = preset("demo", arch="resnet18", input_size=32, epochs=1)
        >>> fam = ClassifierFamily(build_classifier("resnet18", cfg.spec()), cfg, steps_per_epoch=1)
        >>> batch = {"hu": torch.full((2, 1, 40, 40), -700.0), "label": torch.tensor([0, 2])}
        >>> bool(fam.training_step(batch, "classifier", 0)["loss"] > 0)
        True
    """

    def __init__(self, model: SliceClassifier, cfg: ClassifierTrainConfig, steps_per_epoch: int,
                 weights: torch.Tensor | None = None,
                 source: dict[str, Any] | None = None) -> None:
        self.model = model
        self.cfg = cfg
        self.source = dict(source) if source else None
        self.modules: dict[str, torch.nn.Module] = {"classifier": model}
        if cfg.ema_decay > 0:
            self.modules["classifier_ema"] = EMA(model, cfg.ema_decay)
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.weights = weights
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)

    @property
    def evaluated(self) -> SliceClassifier:
        """The weight average when one is kept, else the trained model."""
        ema = self.modules.get("classifier_ema")
        return ema.module if ema is not None else self.model

    def on_step_end(self, step: int) -> None:
        """After every optimiser step: update the weight average (if kept)."""
        if "classifier_ema" in self.modules:
            self.modules["classifier_ema"].update(self.model)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.cfg.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], lr=self.cfg.lr)
        return {"classifier": optimizer}

    def lr_factor(self, optimizer_name: str, step: int) -> float:
        """Warm-up then cosine decay to 1%: the factor of ``lr`` at optimiser step ``step``."""
        total = self.cfg.epochs * self.steps_per_epoch
        warm = max(1, int(self.cfg.warmup_epochs * self.steps_per_epoch))
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        w = self.weights.to(logits.device) if (self.weights is not None
                                               and self.cfg.class_weighting) else None
        return F.cross_entropy(logits.float(), labels, weight=w,
                               label_smoothing=self.cfg.label_smoothing)

    def training_step(self, batch: Any, optimizer_name: str, step: int) -> dict[str, torch.Tensor]:
        hu, labels = batch["hu"], batch["label"]
        hu = augment_hu(hu, self.cfg, self.generator)
        logits = self.model(hu)
        loss = self.loss(logits, labels)
        acc = (logits.argmax(1) == labels).float().mean()
        return {"loss": loss, "accuracy": acc.detach()}

    def validation_step(self, batch: Any) -> dict[str, float]:
        hu, labels = batch["hu"], batch["label"]
        logits = self.evaluated(hu)
        pred = logits.argmax(1)
        recalls = [float((pred[labels == k] == k).float().mean())
                   for k in range(len(self.cfg.classes)) if bool((labels == k).any())]
        return {"loss": float(F.cross_entropy(logits.float(), labels)),
                "accuracy": float((pred == labels).float().mean()),
                "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan")}

    def run_settings(self, config: dict[str, Any]) -> dict[str, Any]:
        """The trainer's resume check: :func:`classifier_run_settings` of a family config."""
        return classifier_run_settings(config)

    def config(self) -> dict[str, Any]:
        source = {"source": self.source} if self.source else {}
        return {"family": "classifier", **self.cfg.to_dict(), **source}


# ------------------------------------------------------------------------------- training


def _is_main_process() -> bool:
    """Rank 0 of a ``torchrun`` job, or the only process."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _evaluate(model: SliceClassifier, hu: torch.Tensor, labels: np.ndarray) -> dict[str, float]:
    from lowdose.metrics.task import accuracy, balanced_accuracy

    probs = model.predict_proba(hu).numpy()
    eps = 1e-7
    nll = float(-np.mean(np.log(probs[np.arange(len(labels)), labels] + eps)))
    return {"accuracy": accuracy(labels, probs),
            "balanced_accuracy": balanced_accuracy(labels, probs), "loss": nll}


class SelectingClassifierFamily(ClassifierFamily):
    """:class:`ClassifierFamily` plus model selection and early stopping at epoch ends.

    After every epoch (``on_step_end``) it evaluates the whole validation split, keeps the
    best weights on disk (``best.safetensors``: highest balanced accuracy, ties broken by lower
    loss) and, through the trainer's ``should_stop`` hook, ends training after ``patience``
    epochs without improvement. Under ``torchrun`` only rank 0 validates and writes; the trainer
    broadcasts its stop decision. The selection state travels in the trainer's checkpoints
    (``state_dict``), so a resumed run selects exactly as an uninterrupted one.
    """

    def __init__(self, model: SliceClassifier, cfg: ClassifierTrainConfig, steps_per_epoch: int,
                 weights: torch.Tensor | None, val_hu: np.ndarray, val_y: np.ndarray,
                 out_dir: Any, progress: bool = True,
                 source: dict[str, Any] | None = None) -> None:
        super().__init__(model, cfg, steps_per_epoch, weights, source)
        self.val_hu = torch.as_tensor(np.asarray(val_hu, np.float32))[:, None]
        self.val_y = np.asarray(val_y, np.int64)
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.history: list[dict[str, float]] = []
        self.best: dict[str, float] = {}
        self.bad_epochs = 0

    def on_step_end(self, step: int) -> None:
        super().on_step_end(step)
        if (step + 1) % self.steps_per_epoch or not _is_main_process():
            return
        from lowdose.models.classifiers import save_classifier

        epoch = (step + 1) // self.steps_per_epoch
        scores = {"epoch": epoch, **_evaluate(self.evaluated, self.val_hu, self.val_y)}
        self.history.append(scores)
        key = (scores["balanced_accuracy"], -scores["loss"])
        best_key = (self.best.get("balanced_accuracy", -1.0), -self.best.get("loss", 1e9))
        if not self.best or key > best_key:
            self.best = scores
            self.bad_epochs = 0
            save_classifier(self.evaluated, self.out_dir / "best.safetensors",
                            card={"selected_epoch": epoch, "validation": scores})
        else:
            self.bad_epochs += 1
        if self.progress:
            from tqdm.auto import tqdm

            tqdm.write(f"epoch {epoch}: valid balanced acc {scores['balanced_accuracy']:.3f} "
                       f"acc {scores['accuracy']:.3f} loss {scores['loss']:.3f} "
                       f"(best {self.best['balanced_accuracy']:.3f} @ {self.best['epoch']})")

    def should_stop(self, step: int) -> str | None:
        """The early-stopping decision (asked by the trainer after every step)."""
        if self.best and self.bad_epochs >= self.cfg.patience:
            return f"no better validation score for {self.bad_epochs} epochs"
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "best": self.best, "bad_epochs": self.bad_epochs,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state.get("history", []))
        self.best = dict(state.get("best", {}))
        self.bad_epochs = int(state.get("bad_epochs", 0))
        if "generator" in state:
            self.generator.set_state(state["generator"])


def train_classifier(
    train_hu: np.ndarray,
    train_y: np.ndarray,
    val_hu: np.ndarray,
    val_y: np.ndarray,
    cfg: ClassifierTrainConfig,
    out_dir: str | Any,
    *,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    init_weights: str | None = None,
    trust_pickle: bool = False,
    source: dict[str, Any] | None = None,
) -> tuple[SliceClassifier, dict[str, Any]]:
    """Train a classifier through the one trainer; keep the best-validation weights.

    The model is selected on the validation split by balanced accuracy (ties: lower loss)
    after every epoch, and training stops early after ``cfg.patience`` epochs without
    improvement. The trainer's checkpoints (``out_dir/checkpoints``, one per epoch) make
    ``resume=True`` continue an interrupted run, or a finished one to a larger ``cfg.epochs``
    (a finished run that would train no further is returned as it is:
    :func:`finished_classifier_run`); the selected weights end in
    ``out_dir/classifier.safetensors`` (+ ``.json`` spec and card). ``source`` (e.g.
    ``{"data": ..., "manifest": ...}``) records where the images came from; with
    ``init_weights`` it is kept in the run's config, and a resume that changes it, the
    network or its input, the augmentation or the seed is refused
    (:func:`refuse_changed_classifier_resume`).

    Returns:
        The selected model (eval mode) and a JSON-friendly summary (history, best epoch).

    Example:
        >>> train_classifier(hu, y, vhu, vy, preset("cpu"), "runs/c")  # doctest: +SKIP
    """
    import json

    from lowdose.models.classifiers import (
        build_classifier,
        load_backbone_weights,
        load_classifier,
        save_classifier,
    )
    from lowdose.training.trainer import Trainer, TrainerConfig, latest_checkpoint

    out = Path(out_dir)
    final_path = out / "classifier.safetensors"
    summary_path = out / "train_summary.json"
    if device:  # a device this machine lacks: one clear line before the model is built
        from lowdose.device import check_device

        check_device(device)
    source = {**(source or {}), **({"weights": init_weights} if init_weights else {})}
    if resume:  # also before returning a finished run as it is
        refuse_changed_classifier_resume(out, cfg, source)
        if finished_classifier_run(out, cfg) is not None:
            return (load_classifier(final_path, device=device),
                    json.loads(summary_path.read_text()))
    out.mkdir(parents=True, exist_ok=True)
    warnings = check_split_labels(train_y, list(cfg.classes), "train")
    warnings += check_split_labels(val_y, list(cfg.classes), "valid")
    if len(val_y) == 0:
        raise LowdoseError("validation split is empty: model selection needs it")
    torch.manual_seed(cfg.seed)
    model = build_classifier(cfg.arch, cfg.spec())
    kept_init: list[str] = []
    if init_weights:
        kept_init = load_backbone_weights(model, init_weights, trust_pickle=trust_pickle)
    train_ds = SliceDataset(train_hu, train_y)
    steps = math.ceil(len(train_ds) / cfg.batch_size)
    family = SelectingClassifierFamily(
        model, cfg, steps, class_weights(train_y, len(cfg.classes)), val_hu, val_y, out,
        progress=progress, source=source)
    tcfg = TrainerConfig(max_steps=cfg.epochs * steps, batch_size=cfg.batch_size, seed=cfg.seed,
                         checkpoint_every=steps, keep_checkpoints=1, log_every=max(1, steps // 2),
                         precision="auto" if cfg.amp else "fp32", device=device,
                         tensorboard=False, progress=progress)
    if latest_checkpoint(out) is not None and not resume:
        raise LowdoseError(f"{out}: holds an earlier training run; pass --resume or use "
                           "another output folder")
    stopped = Trainer(family, train_ds, tcfg, out, resume=resume).fit().stopped
    best = family.best
    final = load_classifier(out / "best.safetensors", device=device)
    if not _is_main_process():  # rank 0 selected, wrote and summarises; the others only load
        return final.eval(), {"best_epoch": None, "early_stop": stopped, "rank": "not main"}
    save_classifier(final, final_path, card={
        "trained_on": f"{len(train_ds)} slices", "selected_epoch": best.get("epoch"),
        "validation": best, "init_weights": init_weights, "head_reinitialised": kept_init,
        "window_note": f"HU clipped to {list(cfg.window)} and scaled to [0, 1] inside the model"})
    summary = {"best_epoch": best.get("epoch"), "best_score": best.get("balanced_accuracy"),
               "monitor": "valid balanced_accuracy", "epochs_run": len(family.history),
               "early_stop": stopped or None, "history": family.history, "warnings": warnings,
               "spec": {**final.spec.__dict__}, "weights": str(final_path)}
    from lowdose.io.atomic import atomic_write_text

    atomic_write_text(summary_path, json.dumps(summary, indent=1, default=str))
    return final.eval(), summary
