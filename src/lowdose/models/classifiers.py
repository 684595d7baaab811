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
and a short model card; :func:`load_classifier` refuses a file whose classes differ from the
ones the caller expects.

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


def load_classifier(path: str | Path, device: str | torch.device | None = None,
                    expected_classes: list[str] | tuple[str, ...] | None = None) -> SliceClassifier:
    """Load a classifier written by :func:`save_classifier` (give the ``.safetensors`` path,
    its ``.json`` or the folder holding ``classifier.safetensors``).

    Raises:
        LowdoseError: missing files, unreadable weights, or classes other than
            ``expected_classes`` (a checkpoint with another number of classes).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "classifier.safetensors"
    path = path.with_suffix(".safetensors")
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise LowdoseError(f"{path}: classifier weights and their .json spec are both needed")
    meta = json.loads(meta_path.read_text())
    if meta.get("kind") != "lowdose-classifier":
        raise LowdoseError(f"{meta_path}: not a lowdose classifier spec")
    spec = ClassifierSpec.from_dict(meta["spec"])
    if expected_classes is not None and list(expected_classes) != spec.classes:
        raise LowdoseError(f"{path}: trained for {len(spec.classes)} classes {spec.classes}, "
                           f"this data has {len(expected_classes)} {list(expected_classes)}")
    model = build_classifier(spec.arch, spec)
    from safetensors.torch import load_file

    state = load_file(str(path))
    try:
        model.backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise LowdoseError(f"{path}: weights do not fit {spec.arch} ({first})") from None
    from lowdose.device import pick_device

    return model.to(pick_device(str(device) if device else None)).eval()
