"""YAML presets (training recipes and study configs) that may build on another (``base: NAME``).

A preset that differs from another in a few settings names it as its ``base`` and lists only
those settings; mappings merge key by key (at any depth), anything else replaces the base's
value. The denoiser, GAN and study loaders share this reader and differ only in where a name
points (``lowdose.training.denoising.load_preset``, ``lowdose.training.gan.load_preset``,
``lowdose.evaluation.study.StudyConfig.from_yaml``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowdose.errors import LowdoseError

#: The shipped YAML presets: ``denoiser-<name>.yaml``, GAN presets, ``study-<name>.yaml``.
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def merge_settings(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` on top: nested mappings merge, other values replace.

    Example:
        >>> merge_settings({"model": {"a": 1, "b": 2}}, {"model": {"b": 3}})
        {'model': {'a': 1, 'b': 3}}
    """
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_settings(out[key], value)
        else:
            out[key] = value
    return out


def read_preset(path: Path, locate: Callable[[str], Path]) -> dict[str, Any]:
    """The settings of the YAML preset at ``path``, its ``base`` chain resolved.

    Args:
        path: the preset file.
        locate: maps a ``base`` value (a preset name or a YAML path) to its file; it raises
            ``LowdoseError`` for an unknown name.

    Returns:
        The merged settings, without the ``base`` key.

    Raises:
        LowdoseError: invalid YAML, a preset that is not a mapping, or a cycle of bases.

    Example:
        >>> from lowdose.training.gan import preset_path
        >>> read_preset(preset_path("gan-circle-semi-sr-cpu"), preset_path)["model"]["scale"]
        2
    """
    import yaml

    chain: list[Path] = []
    layers: list[dict[str, Any]] = []
    current: Path | None = Path(path)
    while current is not None:
        resolved = current.resolve()
        if resolved in chain:
            names = " -> ".join(p.stem for p in [*chain, resolved])
            raise LowdoseError(f"preset bases form a cycle: {names}")
        chain.append(resolved)
        try:
            raw = yaml.safe_load(current.read_text()) or {}
        except yaml.YAMLError as exc:
            raise LowdoseError(f"{current}: invalid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise LowdoseError(f"{current}: a preset must be a mapping of settings")
        base = raw.pop("base", None)
        layers.append(raw)
        if base is None:
            current = None
        else:
            # A YAML path is read beside the preset that names it; a name goes to ``locate``.
            beside = current.parent / str(base)
            yaml_file = str(base).endswith((".yaml", ".yml")) and beside.is_file()
            current = beside if yaml_file else locate(str(base))
    settings: dict[str, Any] = {}
    for layer in reversed(layers):
        settings = merge_settings(settings, layer)
    return settings


def shipped_names(kind: str) -> list[str]:
    """Names of the shipped presets of one kind: the files ``<kind>-NAME.yaml`` in
    ``lowdose/configs``, sorted (``denoiser`` and ``study``; the GAN presets keep their whole
    file name, see ``lowdose.training.gan.gan_preset_names``).

    Example:
        >>> shipped_names("study")
        ['demo', 'kaggle']
    """
    return sorted(p.stem.removeprefix(f"{kind}-") for p in CONFIG_DIR.glob(f"{kind}-*.yaml"))


@dataclass(frozen=True)
class PresetEntry:
    """One shipped training preset, as ``lowdose train denoiser --preset`` names it."""

    name: str
    model: str
    base: str | None
    summary: str
    max_steps: int | None


def shipped_training_presets() -> list[PresetEntry]:
    """The training presets in ``lowdose/configs``: supervised denoisers, then the GANs.

    A supervised preset serves every ``--model`` (its ``model`` is the default one); a GAN
    preset names its family. ``summary`` is the first line of the file's leading comment (every
    shipped preset opens with a one-line summary; the lines after it say why).

    Example:
        >>> [p.name for p in shipped_training_presets()][:2]
        ['cpu', 'cpu-finetune']
    """
    from lowdose.training import denoising, gan

    entries = []
    for name in shipped_names("denoiser"):
        cfg = denoising.load_preset(name)
        entries.append(PresetEntry(name, cfg.model, *_base_and_summary(denoising.preset_file(name)),
                                   max_steps=cfg.trainer.max_steps))
    for name in sorted(gan.gan_preset_names()):
        settings = gan.load_preset(name)
        entries.append(PresetEntry(name, settings["family"],
                                   *_base_and_summary(gan.preset_path(name)),
                                   max_steps=settings["trainer"].get("max_steps")))
    return entries


def _base_and_summary(path: Path) -> tuple[str | None, str]:
    """The preset file's own ``base`` and its one-line summary (its first comment line)."""
    import yaml

    text = path.read_text()
    base = (yaml.safe_load(text) or {}).get("base")
    first = text.splitlines()[:1]
    summary = first[0].lstrip("#").strip() if first and first[0].startswith("#") else ""
    return (None if base is None else str(base)), summary
