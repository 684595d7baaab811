"""Slice classifiers: DenseNet-121 and ResNet-18 (MONAI, one input channel) behind HU input.

A :class:`SliceClassifier` takes ``(B, 1, H, W)`` float32 **HU** and returns logits. Inside it
(and nowhere else) the HU are mapped to the network's range:

1. clipped to the **lung window** ``[-1350, 150]`` HU (stated in ``spec.window``) and scaled to
   [0, 1];
2. with ``intensity="percentile"``, stretched per image so its 1st..99th percentile spans
   [0, 1] (removes the brightness/contrast differences between scanners and exports); with
   ``intensity="equalize"``, replaced by its rank in the image (histogram equalisation: any
   monotonic change of the displayed grey levels, a gamma included, gives the same input);
3. resized to ``spec.input_size`` (bilinear, antialiased) and standardised to mean 0.5,
   std 0.25.

Weights are stored as safetensors plus a JSON spec (architecture, classes, window, input size)
and a short model card; :func:`load_classifier` reads those, or a training checkpoint folder
(whose config holds the spec), refuses pickles (they can run code when loaded) and refuses a file
whose classes differ from the ones the caller expects.

Example:
    >>> import torch
    >>> net = build_classifier("resnet18", ClassifierSpec(arch="resnet18", input_size=32))
    >>> net(torch.full((2, 1, 40, 40), -800.0)).shape
    torch.Size([2, 4])
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lowdose.errors import LowdoseError
from lowdose.io.datasets import CLASSES
from lowdose.models.base import classifiers

LUNG_WINDOW: tuple[float, float] = (-1350.0, 150.0)
"""The HU window the classifiers see by default; the same window maps 8-bit PNGs to HU."""

INTENSITIES = ("window", "percentile", "equalize")
"""Per-image intensity normalisations a :class:`ClassifierSpec` may name."""


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Per-image histogram equalisation of ``(B, C, H, W)``: each value becomes its mid-rank.

    Tied values (a flat background) share one level, so no noise is invented.

    Example:
        >>> equalize(torch.tensor([[[[0.0, 0.0], [0.2, 0.9]]]])).flatten().tolist()
        [0.25, 0.25, 0.625, 0.875]
    """
    flat = x.flatten(1).contiguous()
    ordered = flat.sort(dim=1).values
    below = torch.searchsorted(ordered, flat, right=False)
    upto = torch.searchsorted(ordered, flat, right=True)
    return ((below + upto).float() / (2 * flat.shape[1])).view_as(x)


@dataclass
class ClassifierSpec:
    """What a classifier is: enough to rebuild it and to use it correctly.

    Attributes:
        arch: a name in the ``classifiers`` registry (``densenet121``, ``resnet18``).
        classes: class names, in logit order.
        input_size: side in pixels the network sees (the input is resized to it).
        window: HU window ``(lo, hi)`` mapped to [0, 1] before the network.
        intensity: ``"window"`` (fixed window only), ``"percentile"`` (plus a per-image
            1..99th percentile stretch) or ``"equalize"`` (plus per-image histogram
            equalisation).
        dropout: dropout before the last layer.
        slice_size: side of the prepared slice (body crop, squared) the model was trained on;
            ``lowdose classify`` prepares new images the same way.
        crop_body: whether slices were cropped to the body before squaring.
    """

    arch: str = "densenet121"
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    input_size: int = 128
    window: tuple[float, float] = LUNG_WINDOW
    intensity: str = "percentile"
    dropout: float = 0.0
    slice_size: int = 0
    crop_body: bool = True

    def __post_init__(self) -> None:
        self.window = (float(self.window[0]), float(self.window[1]))
        self.classes = list(self.classes)
        if self.intensity not in INTENSITIES:
            raise LowdoseError(f"classifier intensity {self.intensity!r}: use "
                               f"{'|'.join(INTENSITIES)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassifierSpec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@classifiers.register("densenet121")
def densenet121(n_classes: int, dropout: float = 0.0) -> nn.Module:
    """MONAI DenseNet-121, 2D, one input channel (the study's network).

    ``dropout`` acts before the last linear layer, as for ResNet-18. MONAI's own
    ``dropout_prob`` drops after each of the 58 dense layers instead: trained from scratch on
    the Kaggle slices with 0.2 there, DenseNet-121 reached 0.40-0.61 test accuracy over three
    seeds; with the same 0.2 before the last layer only, 0.72 and 0.92 (seeds 0 and 1).

    Example:
        >>> net = densenet121(4, dropout=0.2)
        >>> [name for name, _ in net.class_layers.named_children()]
        ['relu', 'pool', 'flatten', 'dropout', 'out']
        >>> any(isinstance(m, nn.Dropout) for m in net.features.modules())
        False
    """
    from collections import OrderedDict

    from monai.networks.nets import DenseNet121

    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=n_classes, dropout_prob=0.0)
    if dropout > 0:
        # A parameter-free module inserted before "out": state-dict keys stay MONAI's.
        layers = OrderedDict(net.class_layers.named_children())
        out = layers.pop("out")
        net.class_layers = nn.Sequential(OrderedDict(
            [*layers.items(), ("dropout", nn.Dropout(dropout)), ("out", out)]))
    return net


@classifiers.register("resnet18")
def resnet18(n_classes: int, dropout: float = 0.0) -> nn.Module:
    """MONAI ResNet-18, 2D, one input channel (7x7 stride-2 stem and max-pool, like ImageNet)."""
    from monai.networks.nets import ResNet

    net = ResNet("basic", [2, 2, 2, 2], [64, 128, 256, 512], spatial_dims=2, n_input_channels=1,
                 conv1_t_size=7, conv1_t_stride=2, num_classes=n_classes)
    if dropout > 0:
        net.fc = nn.Sequential(nn.Dropout(dropout), net.fc)
    return net


class SliceClassifier(nn.Module):
    """HU slices in, logits out; the HU-to-network mapping lives here (see the module doc)."""

    def __init__(self, backbone: nn.Module, spec: ClassifierSpec) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = spec

    def preprocess(self, hu: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` HU -> the standardised network input ``(B, 1, S, S)``."""
        if hu.ndim != 4 or hu.shape[1] != 1:
            raise ValueError(f"expected (B, 1, H, W) HU, got {tuple(hu.shape)}")
        lo, hi = self.spec.window
        x = ((hu.float() - lo) / (hi - lo)).clamp(0.0, 1.0)
        if self.spec.intensity == "percentile":
            flat = x.flatten(1)
            if flat.shape[1] > 65536:  # quantile on a strided subsample: same answer, faster
                flat = flat[:, :: flat.shape[1] // 65536 + 1]
            q = torch.quantile(flat, torch.tensor([0.01, 0.99], device=x.device), dim=1)
            p1, p99 = q[0].view(-1, 1, 1, 1), q[1].view(-1, 1, 1, 1)
            x = ((x - p1) / (p99 - p1).clamp_min(1e-3)).clamp(0.0, 1.0)
        elif self.spec.intensity == "equalize":
            x = equalize(x)
        size = self.spec.input_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True)
        return (x - 0.5) / 0.25

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.preprocess(hu))

    @torch.no_grad()
    def predict_proba(self, hu: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Class probabilities ``(B, K)`` in eval mode, batched, on the model's device."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = [torch.softmax(self(hu[i:i + batch_size].to(device)).float(), dim=1).cpu()
               for i in range(0, len(hu), batch_size)]
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, len(self.spec.classes))


def build_classifier(arch: str, spec: ClassifierSpec | None = None) -> SliceClassifier:
    """A freshly initialised :class:`SliceClassifier` of registered architecture ``arch``."""
    spec = spec or ClassifierSpec(arch=arch)
    spec.arch = arch
    backbone = classifiers.get(arch)(len(spec.classes), dropout=spec.dropout)
    return SliceClassifier(backbone, spec)


def _strip_prefixes(state: dict[str, torch.Tensor], targets: set[str]) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes (``module.``, ``backbone.``, ...) until the keys meet the target's."""
    for prefix in ("module.", "model.", "backbone.", "net.", "_orig_mod."):
        if not any(k in targets for k in state) and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def read_state_dict(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a pickle (.pt/.pth/.bin) needs ``trust_pickle``."""
    path = Path(path)
    if not path.is_file():
        raise LowdoseError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # corrupt or not safetensors
            raise LowdoseError(f"{path}: not a readable safetensors file ({exc})") from None
    if not trust_pickle:
        raise LowdoseError(f"{path}: a pickle file can run code when loaded; convert it to "
                           "safetensors or pass --trust-pickle if you trust its source")
    obj = torch.load(str(path), map_location="cpu", weights_only=False)
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise LowdoseError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def load_backbone_weights(model: SliceClassifier, path: str | Path,
                          trust_pickle: bool = False) -> list[str]:
    """Start ``model`` from a local pretrained file with a strict key mapping.

    Every backbone key must be present with the same shape, with two stated exceptions: a
    3-channel first convolution is summed over its colour channels (grey input), and a final
    layer with another number of classes is left at its initialisation. Anything else (missing
    or unexpected keys, other shapes) raises :class:`LowdoseError` naming the keys.

    Returns:
        The names of the keys left at initialisation (the classifier head, if replaced).
    """
    own = model.backbone.state_dict()
    state = _strip_prefixes(read_state_dict(path, trust_pickle), set(own))
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise LowdoseError(
            f"{path}: keys do not match {model.spec.arch}: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''} ({len(missing)}), unexpected {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''} ({len(unexpected)})")
    head_params = [n for n, _ in list(model.backbone.named_parameters())[-2:]]
    kept: list[str] = []
    for key, value in list(state.items()):
        target = own[key]
        if value.shape == target.shape:
            continue
        if value.ndim == 4 and target.ndim == 4 and value.shape[1] == 3 and target.shape[1] == 1 \
                and value.shape[0] == target.shape[0]:
            state[key] = value.sum(dim=1, keepdim=True)
        elif key in head_params:
            state[key] = target
            kept.append(key)
        else:
            raise LowdoseError(f"{path}: {key} has shape {tuple(value.shape)}, "
                               f"{model.spec.arch} needs {tuple(target.shape)}")
    model.backbone.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return kept


def save_classifier(model: SliceClassifier, path: str | Path,
                    card: dict[str, Any] | None = None) -> Path:
    """Write ``path`` (``.safetensors``) and its ``.json`` spec + model card, atomically."""
    from safetensors.torch import save_file

    from lowdose.io.atomic import atomic_path, atomic_write_text

    path = Path(path).with_suffix(".safetensors")
    state = {k: v.detach().cpu().contiguous() for k, v in model.backbone.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    meta = {"kind": "lowdose-classifier", "spec": asdict(model.spec), "card": card or {}}
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2))
    return path


CLASSIFIER_FILE = "classifier.safetensors"
"""The weights a training run keeps (its best epoch), with ``classifier.json`` beside them."""

# A training checkpoint's tensors, by module: the weight average first (what a run validates,
# selects and saves when it keeps one), then the trained weights.
_CHECKPOINT_PREFIXES = ("classifier_ema.module.backbone.", "classifier.backbone.")


def classifier_weights_path(path: str | Path) -> Path:
    """The weight file that ``path`` names for :func:`load_classifier`.

    ``path`` may be the weights (``.safetensors``), their ``.json`` spec, a training run's
    folder (its ``classifier.safetensors``), a training checkpoint folder
    (``checkpoints/step-N``, its ``model.safetensors``) or a run's ``checkpoints`` folder (its
    latest checkpoint).

    Raises:
        LowdoseError: nothing there, a folder without a classifier, a spec without its weights,
            or a pickle (refused: loading one can run arbitrary code).

    Example:
        >>> classifier_weights_path("no/such/clf.safetensors")
        Traceback (most recent call last):
        ...
        lowdose.errors.LowdoseError: no/such/clf.safetensors: no such classifier file or folder
    """
    path = Path(path)
    if not path.exists() and not path.suffix and path.with_suffix(".safetensors").is_file():
        path = path.with_suffix(".safetensors")  # the weights named without their suffix
    if not path.exists():
        raise LowdoseError(f"{path}: no such classifier file or folder")
    if path.is_dir():
        for name in (CLASSIFIER_FILE, "model.safetensors"):
            if (path / name).is_file():
                return path / name
        for latest in (path / "latest", path / "checkpoints" / "latest"):
            if latest.is_file():
                return classifier_weights_path(latest.parent / latest.read_text().strip())
        raise LowdoseError(f"{path}: no {CLASSIFIER_FILE} (a training run) or model.safetensors "
                           "(a training checkpoint) in this folder")
    if path.suffix.lower() == ".json":
        weights = path.with_suffix(".safetensors")
        if not weights.is_file():
            raise LowdoseError(f"{path}: a classifier spec without its weights ({weights.name} "
                               "is missing beside it)")
        return weights
    from lowdose.models.loading import looks_like_pickle

    if looks_like_pickle(path):
        raise LowdoseError(
            f"{path}: a pickle file, refused (loading one can run arbitrary code); a classifier "
            "is a .safetensors with its .json spec: if you trust this file, start a training "
            f"from it (lowdose train classifier DATA --weights {path} --trust-pickle) or convert "
            "it with lowdose.models.classifiers (load_backbone_weights(..., trust_pickle=True), "
            "then save_classifier)")
    return path


def _classifier_spec(config: Any, source: Path, weights: Path) -> ClassifierSpec:
    """The spec in ``config``: a :func:`save_classifier` ``.json``, or a classifier training
    config (a checkpoint's, whose ``config.json`` wraps it under ``"family"``)."""
    if not isinstance(config, dict):
        raise LowdoseError(f"{source}: not a lowdose classifier spec (not a JSON object)")
    if config.get("kind") == "lowdose-classifier" and isinstance(config.get("spec"), dict):
        data = config["spec"]
    else:
        if isinstance(config.get("family"), dict):
            config = config["family"]
        if config.get("family") != "classifier":
            what = config.get("model") or config.get("family") or config.get("kind")
            if what:
                raise LowdoseError(f"{weights}: a {what!r} model, not a classifier (a "
                                   "denoiser is used with lowdose denoise --model)")
            raise LowdoseError(f"{source}: not a lowdose classifier spec")
        data = config
    try:
        return ClassifierSpec.from_dict(data)
    except (TypeError, ValueError, IndexError) as exc:
        raise LowdoseError(f"{source}: not a valid classifier spec for {weights.name}: "
                           f"{exc}") from None


def _read_classifier_file(weights: Path) -> tuple[dict[str, torch.Tensor], ClassifierSpec]:
    """The backbone tensors of ``weights`` and the spec beside them (or in them)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (no iteration)
    except Exception as exc:  # safetensors raises its own error types for bad headers/sizes
        raise LowdoseError(f"{weights}: not a readable safetensors weight file (truncated or "
                           f"corrupt?): {exc}") from None
    spec_path = weights.with_suffix(".json")
    checkpoint_config = weights.parent / "config.json"
    if spec_path.is_file():
        source, text = spec_path, spec_path.read_bytes()
    elif "lowdose_config" in metadata:  # a training checkpoint's weights carry their config
        source, text = weights, metadata["lowdose_config"].encode()
    elif checkpoint_config.is_file():
        source, text = checkpoint_config, checkpoint_config.read_bytes()
    else:
        raise LowdoseError(f"{weights}: no classifier spec: {spec_path.name} is missing beside "
                           "it (save_classifier writes both)")
    try:
        config = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LowdoseError(f"{source}: the spec of {weights.name} is not valid JSON (cut "
                           f"short?): {exc}") from None
    spec = _classifier_spec(config, source, weights)
    for prefix in _CHECKPOINT_PREFIXES:
        picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if picked:
            return picked, spec
    return state, spec


def load_classifier(path: str | Path, device: str | torch.device | None = None,
                    expected_classes: list[str] | tuple[str, ...] | None = None) -> SliceClassifier:
    """Load a classifier written by :func:`save_classifier` or a classifier training checkpoint.

    ``path`` may be the ``.safetensors`` (with its ``.json`` spec beside it), the ``.json``, a
    training run's folder (its ``classifier.safetensors``), a checkpoint folder
    (``checkpoints/step-N``: ``model.safetensors`` whose config holds the spec; the weight
    average is loaded when the run kept one) or a run's ``checkpoints`` folder (the latest).

    Raises:
        LowdoseError: one line naming the file and the reason: missing files, a pickle,
            truncated or unreadable weights or spec, a denoiser's file, weights that do not
            fit the spec, or classes other than ``expected_classes``.

    Example:
        >>> import tempfile
        >>> net = build_classifier("resnet18", ClassifierSpec(arch="resnet18", input_size=32))
        >>> run = Path(tempfile.mkdtemp())
        >>> _ = save_classifier(net, run / "classifier.safetensors")
        >>> load_classifier(run, device="cpu").spec.input_size
        32
    """
    path = classifier_weights_path(path)
    state, spec = _read_classifier_file(path)
    if expected_classes is not None and list(expected_classes) != spec.classes:
        raise LowdoseError(f"{path}: trained for {len(spec.classes)} classes {spec.classes}, "
                           f"this data has {len(expected_classes)} {list(expected_classes)}")
    if spec.arch not in classifiers:
        raise LowdoseError(f"{path}: unknown classifier architecture {spec.arch!r} (known: "
                           f"{', '.join(classifiers.names())})")
    model = build_classifier(spec.arch, spec)
    try:
        model.backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise LowdoseError(f"{path}: weights do not fit {spec.arch} ({first})") from None
    from lowdose.device import pick_device

    return model.to(pick_device(str(device) if device else None)).eval()
