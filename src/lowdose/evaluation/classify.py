"""Classify CT slices from files: the API behind ``lowdose classify``.

Example:
    >>> rows, classes = classify_paths("scans/", "clf.safetensors")  # doctest: +SKIP
    >>> write_probabilities_csv(rows, classes, "probs.csv")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from lowdose.errors import LowdoseError
from lowdose.io.formats.dicom import DICOM_SUFFIXES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", *DICOM_SUFFIXES, ".npy", ".nii", ".gz", ".tif", ".tiff",
                  ".bmp")


def _inputs(path: Path) -> list[Path]:
    if not path.exists():
        raise LowdoseError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise LowdoseError(f"{path}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def slice_name(path: str | Path, index: int, n_slices: int) -> str:
    """The CSV name of slice ``index`` of a file of ``n_slices``: the path itself for a single
    slice, ``path[index]`` (0-based, in the file's slice order) for a slice of a volume.

    Example:
        >>> slice_name("vol.nii.gz", 3, 5), slice_name("a.png", 0, 1)
        ('vol.nii.gz[3]', 'a.png')
    """
    return str(path) if n_slices == 1 else f"{path}[{index}]"


def classify_paths(input_path: str | Path, model_path: str | Path, device: str | None = None,
                   progress: bool = True, batch_size: int = 16
                   ) -> tuple[list[dict[str, Any]], list[str]]:
    """Class probabilities of every slice of every image under ``input_path``.

    A volume (NIfTI, a 3D ``.npy``) gives one row per slice, named ``path[k]`` (k from 0, see
    :func:`slice_name`), as a DICOM series gives one row per file.

    Returns:
        Rows ``{"path", "file", "predicted", "probs": [...], "error": str | None}`` in path and
        slice order (``file``: the file read), and the class names (the model's logit order).
    """
    import torch
    from tqdm.auto import tqdm

    from lowdose.image import HU_MIN, Window
    from lowdose.io.read import read_ct
    from lowdose.models.classifiers import load_classifier
    from lowdose.training.classifier import prepare_slice

    model = load_classifier(model_path, device=device)
    spec = model.spec
    window = Window(*spec.window)
    size = spec.slice_size or spec.input_size
    rows: list[dict[str, Any]] = []
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        batch = torch.from_numpy(np.stack([p for _, p in pending]))[:, None]
        probs = model.predict_proba(batch, batch_size=batch_size).numpy()
        for (i, _), p in zip(pending, probs, strict=True):
            rows[i]["probs"] = [float(v) for v in p]
            rows[i]["predicted"] = spec.classes[int(np.argmax(p))]
        pending.clear()

    def new_row(name: str, path: Path) -> dict[str, Any]:
        row: dict[str, Any] = {"path": name, "file": str(path), "predicted": "", "probs": None,
                               "error": None}
        rows.append(row)
        return row

    for path in tqdm(_inputs(Path(input_path)), desc="classify", disable=not progress):
        try:
            slices = read_ct(path, window=window).slices()
        except Exception as exc:  # listed in the CSV, never silently dropped
            new_row(str(path), path)["error"] = str(exc) or type(exc).__name__
            continue
        for k, hu in enumerate(slices):
            row = new_row(slice_name(path, k, len(slices)), path)
            try:
                # Prepared as the study prepares its slices: clipped at the HU floor (a window
                # whose black lies below air maps dark grey levels to values no scanner stores).
                pending.append((len(rows) - 1, np.maximum(
                    prepare_slice(hu, size, spec.crop_body), HU_MIN)))
            except Exception as exc:
                row["error"] = f"{row['path']}: {exc}" if str(exc) else type(exc).__name__
            if len(pending) >= batch_size:
                flush()
    flush()
    return rows, list(spec.classes)


def write_probabilities_csv(rows: list[dict[str, Any]], classes: list[str],
                            out: str | Path | None = None) -> str:
    """CSV text ``path,predicted,p_<class>...,error``; written atomically to ``out`` if given."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "predicted", *[f"p_{c}" for c in classes], "error"])
    for r in rows:
        probs = r["probs"] or [None] * len(classes)
        writer.writerow([r["path"], r["predicted"],
                         *["" if p is None else f"{p:.6f}" for p in probs], r["error"] or ""])
    text = buf.getvalue()
    if out is not None:
        out = Path(out)
        if any(out.resolve() == Path(r.get("file", r["path"])).resolve() for r in rows):
            raise LowdoseError(f"{out}: would overwrite an input")
        from lowdose.io.atomic import atomic_write_text

        atomic_write_text(out, text)
    return text
