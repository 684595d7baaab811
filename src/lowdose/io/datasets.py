"""Class-folder datasets in the Kaggle Chest CT-Scan layout: labels, splits and manifests.

The layout is ``ROOT/{train,valid,test}/<class folder>/<image>`` (a ``ROOT/Data/`` level above
the splits is found too). Class folders may carry staging suffixes
(``adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib``): :func:`canonical_label` maps every folder to
one of :data:`CLASSES`. A manifest CSV ``path,label,split`` (paths relative to ROOT) lists
exactly the images to use, e.g. the de-duplicated split that ``lowdose data audit`` writes.

Example:
    >>> canonical_label("large.cell.carcinoma_left.hilum_T2_N2_M0_IIIa")
    'large.cell.carcinoma'
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lowdose.errors import LowdoseError

CLASSES: tuple[str, ...] = (
    "adenocarcinoma",
    "large.cell.carcinoma",
    "normal",
    "squamous.cell.carcinoma",
)
SPLITS: tuple[str, ...] = ("train", "valid", "test")
SPLIT_ALIASES: dict[str, str] = {
    "train": "train", "training": "train",
    "valid": "valid", "val": "valid", "validation": "valid",
    "test": "test", "testing": "test",
}
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy")
MANIFEST_COLUMNS: tuple[str, ...] = ("path", "label", "split")

_SEPARATORS = re.compile(r"[\s_\-]+")


def absolute(path: str | os.PathLike[str]) -> Path:
    """An absolute, normalised path that keeps symbolic links (unlike ``Path.resolve``), so
    a linked image stays inside the dataset folder it was found in."""
    return Path(os.path.abspath(path))


def _normalise(name: str) -> str:
    return _SEPARATORS.sub(".", name.strip().lower())


def canonical_label(folder_name: str) -> str:
    """The class of a class folder: the known class its name starts with.

    Staging suffixes after ``_`` are ignored and spaces, ``_`` and ``-`` count as ``.``, so
    ``adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib``, ``Adenocarcinoma`` and
    ``large cell carcinoma`` all resolve.

    Raises:
        LowdoseError: the name matches no class (the message lists the known ones).

    Example:
        >>> canonical_label("adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib")
        'adenocarcinoma'
    """
    norm = _normalise(folder_name)
    for label in sorted(CLASSES, key=len, reverse=True):
        if norm == label or norm.startswith(label + "."):
            return label
    raise LowdoseError(
        f"{folder_name!r}: not a known class folder; known classes: {', '.join(CLASSES)}"
    )


def canonical_split(name: str) -> str:
    """``train``, ``valid`` or ``test`` for a split folder or manifest value (``val`` ok)."""
    try:
        return SPLIT_ALIASES[name.strip().lower()]
    except KeyError:
        raise LowdoseError(f"{name!r}: not a split; expected one of {', '.join(SPLITS)}") from None


@dataclass(frozen=True)
class DatasetItem:
    """One image of a class-folder dataset.

    Attributes:
        path: the image file (absolute when found by :func:`scan_class_folders`).
        label: canonical class, one of :data:`CLASSES`.
        split: ``train``, ``valid`` or ``test``.
    """

    path: Path
    label: str
    split: str


def dataset_root(root: str | Path) -> Path:
    """The folder that holds the split folders: ``root`` itself or ``root/Data``."""
    root = Path(root)
    if not root.exists():
        raise LowdoseError(f"{root}: no such folder")
    if not root.is_dir():
        raise LowdoseError(f"{root}: not a folder (expected {{train,valid,test}}/<class>/)")
    if _split_dirs(root):
        return root
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name.lower() == "data" and _split_dirs(child):
            return child
    if not any(root.iterdir()):
        raise LowdoseError(f"{root}: folder is empty")
    raise LowdoseError(
        f"{root}: no split folders; expected {{train,valid,test}}/<class>/ images inside"
    )


def _split_dirs(folder: Path) -> list[tuple[str, Path]]:
    found = []
    for child in sorted(folder.iterdir()):
        split = SPLIT_ALIASES.get(child.name.lower())
        if split and child.is_dir():
            found.append((split, child))
    return found


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and (
        path.suffix.lower() in IMAGE_SUFFIXES
    )


def scan_class_folders(
    root: str | Path, manifest: str | Path | None = None, *, require_all_classes: bool = False
) -> list[DatasetItem]:
    """Every image of a class-folder dataset with its canonical label and official split.

    Args:
        root: the dataset folder (``{train,valid,test}/<class>/`` inside, or under ``Data/``).
        manifest: a CSV ``path,label,split`` (paths relative to ``root``); when given, exactly
            its rows are used and each file must exist.
        require_all_classes: raise instead of warning when a split lacks a class that the
            dataset has.

    Returns:
        Items sorted by split (train, valid, test) then path; paths are absolute.

    Raises:
        LowdoseError: missing or empty folder, unknown class folder, no images, a manifest
            row naming a missing file.

    Example:
        >>> import tempfile, pathlib
        >>> r = pathlib.Path(tempfile.mkdtemp())
        >>> for s in ("train", "test"):
        ...     (r / s / "normal").mkdir(parents=True); (r / s / "normal" / "a.png").touch()
        >>> [(i.split, i.label) for i in scan_class_folders(r)]
        [('train', 'normal'), ('test', 'normal')]
    """
    root = Path(root)
    if manifest is not None:
        if not root.is_dir():
            raise LowdoseError(f"{root}: no such folder (the manifest's paths are relative to it)")
        items = read_manifest(manifest, root=root)
        for item in items:
            if not item.path.is_file():
                raise LowdoseError(f"{manifest}: row {item.path.relative_to(root)}: no such file")
    else:
        base = dataset_root(root)
        items = []
        for split, split_dir in _split_dirs(base):
            class_dirs = [d for d in sorted(split_dir.iterdir()) if d.is_dir()]
            stray = [p.name for p in split_dir.iterdir() if _is_image(p)]
            if stray:
                warnings.warn(f"{split_dir}: {len(stray)} image(s) outside a class folder "
                              f"ignored (e.g. {stray[0]})", stacklevel=2)
            for class_dir in class_dirs:
                try:
                    label = canonical_label(class_dir.name)
                except LowdoseError:
                    raise LowdoseError(f"{class_dir}: not a known class folder; known classes: "
                                       f"{', '.join(CLASSES)}") from None
                files = sorted(p for p in class_dir.rglob("*") if p.is_file())
                images = [p for p in files if _is_image(p)]
                skipped = [p for p in files if not _is_image(p) and not p.name.startswith(".")]
                if skipped:
                    warnings.warn(f"{class_dir}: {len(skipped)} non-image file(s) skipped "
                                  f"(e.g. {skipped[0].name})", stacklevel=2)
                items.extend(DatasetItem(absolute(p), label, split) for p in images)
        if not items:
            raise LowdoseError(f"{root}: no images in {{train,valid,test}}/<class>/ folders "
                               f"(looked for {', '.join(IMAGE_SUFFIXES)})")
    check_splits(items, where=str(manifest or root), strict=require_all_classes)
    order = {s: i for i, s in enumerate(SPLITS)}
    return sorted(items, key=lambda it: (order[it.split], str(it.path)))


def check_splits(items: Iterable[DatasetItem], where: str = "dataset",
                 strict: bool = False) -> dict[str, dict[str, int]]:
    """Counts per split and class; warn (or raise when ``strict``) where a split lacks a class.

    Returns:
        ``{split: {label: count}}`` for the splits present.
    """
    counts: dict[str, dict[str, int]] = {}
    for item in items:
        counts.setdefault(item.split, {}).setdefault(item.label, 0)
        counts[item.split][item.label] += 1
    labels = sorted({lab for c in counts.values() for lab in c})
    for split in SPLITS:
        if split not in counts:
            continue
        missing = [lab for lab in labels if lab not in counts[split]]
        if missing:
            message = f"{where}: split {split} has no images of class {', '.join(missing)}"
            if strict:
                raise LowdoseError(message)
            warnings.warn(message, stacklevel=3)
    return counts


def _relative(path: str, manifest: Path, line: int) -> PurePosixPath:
    rel = PurePosixPath(path.strip().replace("\\", "/"))
    if not path.strip():
        raise LowdoseError(f"{manifest}: line {line}: empty path")
    if rel.is_absolute() or ".." in rel.parts:
        raise LowdoseError(f"{manifest}: line {line}: path {path!r} must be relative to the "
                           "dataset folder, without '..'")
    return rel


def read_manifest(path: str | Path, root: str | Path | None = None) -> list[DatasetItem]:
    """Rows of a manifest CSV ``path,label,split`` as :class:`DatasetItem`.

    Labels are canonicalised (a class folder name is accepted) and splits checked. Paths are
    relative to the dataset folder; with ``root`` they are joined to it.

    Raises:
        LowdoseError: missing file, missing columns, a bad row or a path listed twice.
    """
    path = Path(path)
    if not path.is_file():
        raise LowdoseError(f"{path}: no such manifest file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise LowdoseError(f"{path}: not a UTF-8 CSV file") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in MANIFEST_COLUMNS if c not in columns]
    if missing:
        raise LowdoseError(f"{path}: missing column(s) {', '.join(missing)}; a manifest has "
                           f"the header {','.join(MANIFEST_COLUMNS)}")
    reader.fieldnames = columns
    items: list[DatasetItem] = []
    seen: set[PurePosixPath] = set()
    for line, row in enumerate(reader, start=2):
        if not any((v or "").strip() for v in row.values()):
            continue
        rel = _relative(row["path"] or "", path, line)
        if rel in seen:
            raise LowdoseError(f"{path}: line {line}: {rel} is listed twice")
        seen.add(rel)
        try:
            label = canonical_label(row["label"] or "")
            split = canonical_split(row["split"] or "")
        except LowdoseError as exc:
            raise LowdoseError(f"{path}: line {line}: {exc}") from None
        full = Path(root) / Path(*rel.parts) if root is not None else Path(*rel.parts)
        items.append(DatasetItem(full, label, split))
    if not items:
        raise LowdoseError(f"{path}: manifest has no rows")
    return items


def write_manifest(items: Iterable[DatasetItem], path: str | Path,
                   root: str | Path | None = None) -> Path:
    """Write ``items`` as a manifest CSV ``path,label,split`` (atomically).

    Paths are written relative to ``root`` (POSIX separators); items with relative paths are
    written as they are.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "m.csv"
        >>> _ = write_manifest([DatasetItem(Path("test/normal/a.png"), "normal", "test")], out)
        >>> out.read_text().splitlines()
        ['path,label,split', 'test/normal/a.png,normal,test']
    """
    from lowdose.io.atomic import atomic_write_text

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    base = absolute(root) if root is not None else None
    for item in items:
        p = Path(item.path)
        if base is not None and p.is_absolute():
            try:
                p = absolute(p).relative_to(base)
            except ValueError:
                raise LowdoseError(f"{item.path}: not inside the dataset folder {root}") from None
        if item.label not in CLASSES:
            raise LowdoseError(f"{item.path}: label {item.label!r} is not canonical")
        writer.writerow([p.as_posix(), item.label, canonical_split(item.split)])
    return atomic_write_text(path, buf.getvalue())
