"""Class-folder datasets in the Kaggle Chest CT-Scan layout: labels, splits and manifests."""

from __future__ import annotations

CLASSES: tuple[str, ...] = (
    "adenocarcinoma",
    "large.cell.carcinoma",
    "normal",
    "squamous.cell.carcinoma",
)
