"""Loading denoisers by name or from weight files: safetensors + JSON config, pickle refused.

A weight file is a safetensors file whose tensors are the network's state dict and whose
metadata holds the JSON config (``lowdose.models.network.FORMAT``); the same config is written
beside it as ``<stem>.json`` and a model card ``<stem>.md``. A training checkpoint folder
(``model.safetensors`` + ``config.json``, see :mod:`lowdose.training.checkpoint`) loads too.
Pickle checkpoints (``.pt``, ``.pth``, ``.ckpt``, ``.bin``) run arbitrary code when loaded and
are refused unless ``trust_pickle=True``.

Example:
    >>> load_denoiser("tv").name
    'tv'
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lowdose.errors import LowdoseError
from lowdose.models.base import Denoiser, denoisers

if TYPE_CHECKING:
    from torch import nn

    from lowdose.models.network import NetworkDenoiser

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
#: The model ``lowdose denoise`` uses when none is named.
DEFAULT_DENOISER = "unet"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
#: The first bytes of a pickle: torch's zip archive, or a pickle stream of protocol 2 to 5.
PICKLE_HEADS = (b"PK", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
CONFIG_KEY = "lowdose_config"


def looks_like_pickle(path: Path) -> bool:
    """Whether the file at ``path`` is a pickle (by its suffix or its first bytes): loading one
    can run arbitrary code, so it needs ``trust_pickle``.

    Example:
        >>> looks_like_pickle(Path("model.pth"))
        True
    """
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    with path.open("rb") as f:
        return f.read(2) in PICKLE_HEADS


@dataclass
class LoadedWeights:
    """A network rebuilt from a weight file, with its config."""

    net: nn.Module
    arch: dict[str, Any]
    hu_range: tuple[float, float]
    config: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)


def save_weights(
    state: dict[str, torch.Tensor], config: dict[str, Any], path: str | Path
) -> Path:
    """Write ``state`` as safetensors (config in its metadata) and ``config`` as JSON beside it.

    Both writes are atomic. Returns the safetensors path.
    """
    from safetensors.torch import save_file

    from lowdose.io.atomic import atomic_path, atomic_write_text

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={CONFIG_KEY: json.dumps(config)})
    atomic_write_text(path.with_suffix(".json"), json.dumps(config, indent=2) + "\n")
    return path


def read_weights(
    path: str | Path, trust_pickle: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict and config of a weight file or checkpoint folder.

    Raises:
        LowdoseError: missing, truncated or unreadable file, pickle without ``trust_pickle``,
            or no config.
    """
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "weights.safetensors"):
            if (path / name).is_file():
                return read_weights(path / name, trust_pickle)
        latest = path / "latest"
        if latest.is_file():
            return read_weights(path / latest.read_text().strip(), trust_pickle)
        raise LowdoseError(f"{path}: no model.safetensors in this folder")
    if not path.is_file():
        raise LowdoseError(f"{path}: no such weight file")
    if looks_like_pickle(path):
        return _read_pickle(path, trust_pickle)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    except Exception as exc:  # safetensors raises its own error types for bad headers/sizes
        raise LowdoseError(
            f"{path}: not a readable safetensors weight file (truncated or corrupt?): {exc}"
        ) from None
    config = _read_config(path, meta)
    return state, config


def _read_config(path: Path, meta: dict[str, str]) -> dict[str, Any]:
    text = meta.get(CONFIG_KEY)
    candidates = [path.with_suffix(".json"), path.parent / "config.json"]
    if text is None:
        for candidate in candidates:
            if candidate.is_file():
                text = candidate.read_text()
                break
    if text is None:
        raise LowdoseError(f"{path}: no lowdose config (metadata or {candidates[0].name})")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LowdoseError(f"{path}: config is not valid JSON: {exc}") from None
    # A training checkpoint's config.json wraps the family config (a classifier's family
    # config names its family, the string "classifier", under the same key).
    if isinstance(config, dict) and isinstance(config.get("family"), dict) \
            and "model" not in config:
        config = config["family"]
    if not isinstance(config, dict):
        raise LowdoseError(f"{path}: config is not a JSON object")
    if config.get("family") == "classifier" or config.get("kind") == "lowdose-classifier":
        raise LowdoseError(f"{path}: a classifier checkpoint, not a denoiser (use it with "
                           "lowdose classify --model)")
    return config


def _read_pickle(path: Path, trust_pickle: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not trust_pickle:
        raise LowdoseError(
            f"{path}: pickle checkpoint refused (loading a pickle can run arbitrary code); "
            "convert it to safetensors or pass --trust-pickle if you trust its source"
        )
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise LowdoseError(f"{path}: cannot read pickle checkpoint: {exc}") from None
    if not (isinstance(obj, dict) and "config" in obj and "state_dict" in obj):
        raise LowdoseError(
            f"{path}: pickle checkpoint must be a dict with 'config' and 'state_dict'"
        )
    return dict(obj["state_dict"]), dict(obj["config"])


def build_from_weights(
    cls: type[NetworkDenoiser],
    state: dict[str, torch.Tensor],
    config: dict[str, Any],
    source: str | Path,
) -> LoadedWeights:
    """Rebuild ``cls``'s network from ``state`` after checking the config matches it."""
    from lowdose.models.network import FORMAT

    if config.get("format") != FORMAT:
        kind = config.get("format") or config.get("kind") or "unknown"
        raise LowdoseError(f"{source}: not a lowdose denoiser checkpoint (format {kind!r})")
    if config.get("model") != cls.name:
        raise LowdoseError(
            f"{source}: checkpoint is a {config.get('model')!r} model, not {cls.name!r}"
        )
    scale = config.get("scale", 1)
    if scale != 1:
        raise LowdoseError(
            f"{source}: checkpoint is a x{scale} upscaler, not a same-size denoiser"
        )
    prefix = config.get("module_prefix", "")
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    arch = dict(config.get("arch", {}))
    net = cls.build_network(arch)
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k, v in state.items() if k in expected and expected[k].shape != v.shape]
    if missing or unexpected or mismatched:
        raise LowdoseError(
            f"{source}: weights do not fit {cls.name} {arch} (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shape {mismatched[:3]})"
        )
    net.load_state_dict(state)
    hu_range = tuple(float(v) for v in config.get("hu_range", (-1024.0, 3072.0)))
    return LoadedWeights(net, arch, hu_range, config, dict(config.get("metadata", {})))


def shipped_path(cls: type[NetworkDenoiser]) -> Path:
    """Where the shipped weights of ``cls`` live (they may be absent).

    Example:
        >>> from lowdose.models.unet import ResUNetDenoiser
        >>> shipped_path(ResUNetDenoiser).name
        'unet.safetensors'
    """
    return WEIGHTS_DIR / f"{cls.shipped}.safetensors"


def load_shipped(cls: type[NetworkDenoiser], device: str | torch.device | None = None
                 ) -> LoadedWeights:
    """The weights shipped in ``lowdose/weights`` for ``cls``."""
    if not cls.shipped:
        raise LowdoseError(f"{cls.name}: no shipped weights; pass a weight file")
    path = shipped_path(cls)
    if not path.is_file():
        raise LowdoseError(f"{path}: shipped weights for {cls.name!r} are missing")
    state, config = read_weights(path)
    return build_from_weights(cls, state, config, path)


def shipped_learned() -> list[str]:
    """Names of the registered learned denoisers whose shipped weights are present.

    Example:
        >>> DEFAULT_DENOISER in shipped_learned()
        True
    """
    from lowdose.models.network import NetworkDenoiser

    names = []
    for name in denoisers.names():
        cls = denoisers.get(name)
        if (isinstance(cls, type) and issubclass(cls, NetworkDenoiser) and cls.shipped
                and shipped_path(cls).is_file()):
            names.append(name)
    return names


def is_learned(entry: object) -> bool:
    """Whether a registered denoiser entry is a learned model's class (its settings are in its
    weights); a classical class or a factory function is not.

    Example:
        >>> is_learned(denoisers.get("unet")), is_learned(denoisers.get("tv"))
        (True, False)
    """
    from lowdose.models.network import NetworkDenoiser

    return isinstance(entry, type) and issubclass(entry, NetworkDenoiser)


#: The types ``--set`` converts a value to (``type(None)``: the word ``none``).
SETTING_TYPES = (bool, int, float, str, type(None))


def denoiser_settings(name: str) -> dict[str, tuple[type, ...]]:
    """The settings a registered classical denoiser (a class, or a function that returns a
    denoiser) takes, with the types each accepts (``type(None)`` where it may be left to its
    default behaviour, given as ``none``).

    The types come from each parameter's annotation (``float``, ``float | None``,
    ``Optional[float]``, ``Literal["a", "b"]``); an unannotated parameter takes the type of
    its default (``str`` without one, ``str`` or ``none`` for a default of ``None``).

    Example:
        >>> denoiser_settings("tv")["weight_hu"]
        (<class 'float'>, <class 'NoneType'>)
    """
    import inspect

    entry = denoisers.get(name)
    target = entry.__init__ if isinstance(entry, type) else entry
    hints = _type_hints(target)
    settings = {}
    for param in inspect.signature(entry).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            continue
        settings[param.name] = _setting_types(hints.get(param.name, param.empty), param.default)
    return settings


def _type_hints(target: Any) -> dict[str, Any]:
    """``target``'s resolved annotations; where a name in them cannot be resolved, the ones
    that are types already."""
    import typing

    try:
        return typing.get_type_hints(target)
    except Exception:  # an annotation naming something its module does not import
        raw = getattr(target, "__annotations__", {})
        return {k: v for k, v in raw.items() if not isinstance(v, str)}


def _setting_types(hint: Any, default: Any) -> tuple[type, ...]:
    import inspect
    import types
    import typing

    if hint is inspect.Parameter.empty:  # unannotated: what its default is
        if default is inspect.Parameter.empty:
            return (str,)
        if default is None:
            return (str, type(None))
        hint = type(default)
    if hint is None:
        hint = type(None)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args: tuple[Any, ...] = typing.get_args(hint)
    elif origin is typing.Literal:
        args = tuple(dict.fromkeys(type(v) for v in typing.get_args(hint)))
    else:
        args = (hint,)
    return tuple(a for a in args if a in SETTING_TYPES)


def parse_settings(name: str, items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (``lowdose denoise --set``) as the keyword settings of the
    classical denoiser ``name``, each converted to the type its constructor takes.

    Raises:
        LowdoseError: not ``KEY=VALUE``, a key the denoiser does not take, a value of the wrong
            type, or a learned denoiser (its settings are in its weight file).

    Example:
        >>> parse_settings("bm3d", ["sigma_hu=40", "profile=refilter"])
        {'sigma_hu': 40.0, 'profile': 'refilter'}
    """
    if not items:
        return {}
    if name not in denoisers or is_learned(denoisers.get(name)):
        raise LowdoseError(f"settings (--set, or {name}:key=value) apply to the classical "
                           f"denoisers (bm3d, tv), not {name!r}: a learned model's settings "
                           "are in its weight file")
    known = denoiser_settings(name)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = (part.strip() for part in item.partition("="))
        if not sep or not key:
            raise LowdoseError(f"--set {item!r}: expected KEY=VALUE, e.g. --set sigma_hu=40")
        if key not in known:
            raise LowdoseError(f"--set {key}: {name} takes {', '.join(known)}")
        if key in out:  # two values for one setting: say so rather than keep the last
            raise LowdoseError(f"--set {key}: given twice ({out[key]} and {text}); give it once")
        out[key] = _typed(key, text, known[key])
    return out


def merge_settings(name: str, named: Mapping[str, Any],
                   given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The settings of a denoiser named with some (``bm3d:sigma_hu=40``) and given others
    (``--set``), as one mapping.

    Raises:
        LowdoseError: a setting given both ways: neither may silently win over the other.

    Example:
        >>> merge_settings("bm3d", {"sigma_hu": 40.0}, {"profile": "refilter"})
        {'sigma_hu': 40.0, 'profile': 'refilter'}
    """
    given = given or {}
    for key in named:
        if key in given:
            raise LowdoseError(
                f"--set {key}={given[key]}: {key} is also given in the model name "
                f"({name}:{key}={named[key]}); give it once")
    return {**named, **given}


def split_spec(spec: str) -> tuple[str, list[str]]:
    """``"bm3d:noise_model=ct:noise_factor=1.1"`` -> ``("bm3d", ["noise_model=ct",
    "noise_factor=1.1"])``: a denoiser named with its settings (where ``lowdose compare`` and
    ``--model`` take one). An existing path is a path, whatever it holds.

    Example:
        >>> split_spec("bm3d:noise_model=ct"), split_spec("unet")
        (('bm3d', ['noise_model=ct']), ('unet', []))
    """
    if ":" not in spec or Path(spec).exists():
        return spec, []
    name, _, rest = spec.partition(":")
    return name, rest.split(":")


def _typed(key: str, text: str, types_: tuple[type, ...]) -> Any:
    if text.lower() == "none" and type(None) in types_:
        return None
    if bool in types_ and text.lower() in ("true", "yes", "1", "false", "no", "0"):
        return text.lower() in ("true", "yes", "1")
    for kind in (int, float):
        if kind in types_:
            try:
                return kind(text)
            except ValueError:
                pass
    if str in types_:
        return text
    if not types_:
        raise LowdoseError(f"--set {key}={text}: {key} takes a value --set cannot give (its "
                           "annotation is none of bool, int, float, str or None)")
    names = " or ".join("none" if t is type(None) else t.__name__ for t in types_)
    raise LowdoseError(f"--set {key}={text}: expected {names}")


def load_denoiser(
    name_or_path: str | Path | None = None,
    device: str | torch.device | None = None,
    trust_pickle: bool = False,
    self_ensemble: bool = False,
    strength: float = 1.0,
    precision: str = "fp32",
    settings: Mapping[str, Any] | None = None,
) -> Denoiser:
    """A ready denoiser: a registered name (learned ones with shipped weights) or a weight file.

    Args:
        name_or_path: a name from ``denoisers.names()`` (default :data:`DEFAULT_DENOISER`),
            with settings after it if any (``"bm3d:noise_model=ct"``, :func:`split_spec`), a
            ``.safetensors`` file, a training checkpoint folder, or a pickle (with
            ``trust_pickle``).
        device: where a network runs (default: a CUDA GPU if present, else the CPU).
        trust_pickle: allow loading a pickle checkpoint (it can run arbitrary code).
        self_ensemble: a learned model averages its outputs over the 8 flips and quarter
            turns of each slice (8x the time; see :mod:`lowdose.models.network`).
        strength: a learned model's change to the input is scaled by this (1: as trained).
        precision: a learned model's arithmetic, ``"fp32"`` or ``"bf16"`` (see
            :class:`lowdose.models.network.NetworkDenoiser`).
        settings: a classical denoiser's keyword settings (:func:`parse_settings`).

    Example:
        >>> load_denoiser("bm3d").noise_factor > 0
        True
        >>> load_denoiser("bm3d", settings={"sigma_hu": 40.0}).sigma_hu
        40.0
    """
    from lowdose.device import pick_device

    name, named_settings = split_spec(str(name_or_path or DEFAULT_DENOISER))
    if named_settings:
        settings = merge_settings(name, parse_settings(name, named_settings), settings)
    if name in denoisers and not Path(name).exists():
        cls = denoisers.get(name)
        if is_learned(cls):
            if settings:
                raise LowdoseError(f"settings (--set, or {name}:key=value) apply to the "
                                   f"classical denoisers (bm3d, tv), not {name!r}: a learned "
                                   "model's settings are in its weights")
            return cls(device=pick_device(str(device) if device else None),
                       self_ensemble=self_ensemble, strength=strength, precision=precision)
        if self_ensemble or strength != 1.0 or precision != "fp32":
            raise LowdoseError(f"{name}: --self-ensemble, --strength and --precision apply to "
                               "learned denoisers only (BM3D and TV take their strength in HU: "
                               "--set sigma_hu=40, --set weight_hu=20)")
        try:
            made = cls(**(settings or {}))
        except (TypeError, ValueError) as exc:
            raise LowdoseError(f"{name}: {exc}") from None
        if not isinstance(made, Denoiser):  # a factory function's result
            raise LowdoseError(f"{name}: its registered factory returned a "
                               f"{type(made).__name__}, not a Denoiser")
        return made
    if settings:
        raise LowdoseError(f"--set applies to the classical denoisers (bm3d, tv), not the "
                           f"weight file {name}")
    path = Path(name)
    if not path.exists():
        raise LowdoseError(
            f"{name}: neither a known denoiser ({', '.join(denoisers.names())}) nor a file"
        )
    state, config = read_weights(path, trust_pickle=trust_pickle)
    model = config.get("model")
    if config.get("format") is not None and model not in denoisers:
        raise LowdoseError(f"{path}: unknown model {model!r} in its config")
    if model is None:
        raise LowdoseError(f"{path}: config names no model")
    cls = denoisers.get(model)
    if not is_learned(cls):
        raise LowdoseError(f"{path}: {model!r} is not a learned denoiser")
    loaded = build_from_weights(cls, state, config, path)
    return cls(
        loaded.net,
        arch=loaded.arch,
        hu_range=loaded.hu_range,
        device=pick_device(str(device) if device else None),
        self_ensemble=self_ensemble,
        strength=strength,
        precision=precision,
        metadata=loaded.metadata,
    )
