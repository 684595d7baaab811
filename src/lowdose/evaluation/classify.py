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


def classify_paths(input_path: str | Path, model_path: str | Path, device: str | None = None,
                   progress: bool = True, batch_size: int = 16
                   ) -> tuple[list[dict[str, Any]], list[str]]:
    """Class probabilities of every image under ``input_path``.

    Returns:
        Rows ``{"path", "predicted", "probs": [...], "error": str | None}`` in path order, and
        the class names (the model's logit order).
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

    for path in tqdm(_inputs(Path(input_path)), desc="classify", disable=not progress):
        row: dict[str, Any] = {"path": str(path), "predicted": "", "probs": None, "error": None}
        rows.append(row)
        try:
            img = read_ct(path, window=window)
            slices = img.slices()
            if slices.shape[0] != 1:
                raise LowdoseError(f"{path}: a volume of {slices.shape[0]} slices; give slices")
            # Prepared as the study prepares its slices: clipped at the HU floor (a window
            # whose black lies below air maps dark grey levels to values no scanner stores).
            pending.append((len(rows) - 1, np.maximum(
                prepare_slice(slices[0], size, spec.crop_body), HU_MIN)))
        except Exception as exc:  # listed in the CSV, never silently dropped
            row["error"] = str(exc) or type(exc).__name__
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
        if any(out.resolve() == Path(r["path"]).resolve() for r in rows):
            raise LowdoseError(f"{out}: would overwrite an input")
        from lowdose.io.atomic import atomic_write_text

        atomic_write_text(out, text)
    return text
