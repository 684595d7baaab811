"""report.html from a results dict: every cell in the table, figures inline, failures listed."""

from __future__ import annotations

import re

import numpy as np

from lowdose.io.datasets import CLASSES
from lowdose.metrics.task import task_metrics
from lowdose.reporting.report import render_report, write_report


def _results() -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 5)
    cells, grid = [], {"full-dose": np.full((2, 16, 16), -800.0, np.float32)}

    def cell(noise: float) -> dict:
        logits = np.eye(4)[y] * 3 + rng.normal(0, noise, (20, 4))
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        task = task_metrics(y, p, CLASSES, n_boot=20)
        return {"accuracy": task["accuracy"], "task": task,
                "image": {"psnr_full": 40.0 - noise, "psnr_window": 30.0 - noise,
                          "ssim_full": 0.99, "ssim_window": 0.9, "rmse_hu": 10 * noise}}

    for dose in (1.0, 0.25):
        for den in ("none", "tv"):
            c = cell(3.0 if den == "none" and dose < 1 else 1.0)
            cells.append({"method": "image-poisson", "dose": dose, "denoiser": den, **c})
            if den == "tv":  # results written before the paired count have none
                cells[-1]["paired_vs_full_dose"] = {"n": 20, "lost": 3, "gained": 1,
                                                    "p_value": 0.625}
                cells[-1]["paired_vs_raw"] = {"n": 20, "lost": 0, "gained": 7,
                                              "p_value": 0.015625}
            grid[f"image-poisson_{dose:g}_{den}"] = np.full((2, 16, 16), -700.0, np.float32)
    results = {
        "created": "2026-01-01T00:00:00Z", "classes": list(CLASSES),
        "methods": ["image-poisson"], "doses": [1.0, 0.25],
        "denoisers": {"used": ["none", "tv"],
                      "skipped": [{"name": "red-cnn", "reason": "weights missing"}]},
        "full_dose": cell(0.5), "cells": cells,
        "data": {"source": "/data/kaggle", "png_window_hu": [-1350.0, 150.0],
                 "png_note": "8-bit display images are not HU: mapped through the lung window",
                 "slice_size": 16, "crop_body": True, "warnings": ["test split has no images "
                                                                   "of class normal"]},
        "audit": {"n_files": 1000, "n_unique": 847, "duplicate_groups": 59,
                  "per_split": {"train": [1, 2, 3, 4], "test": [5, 5, 5, 5]}},
        "read_failures": {"count": 1, "files": [{"path": "/data/x.png", "reason": "truncated"}]},
        "classifier": {"source": "trained", "spec": {"arch": "densenet121", "input_size": 16,
                                                     "window": [-1350, 150],
                                                     "intensity": "percentile"},
                       "best_epoch": 3, "epochs_run": 5, "best_score": 0.8,
                       "monitor": "valid balanced_accuracy"},
        "grid": {"indices": [0, 1], "labels": ["adenocarcinoma", "normal"], "window": "lung"},
        "image_metric_ranges": {"full": "[-1024, 3072]", "window": "[-160, 240]"},
        "config": {"fov_mm": 350}, "versions": {}, "seeds": {}, "timings_s": {},
        "simulator_options": {"image-poisson": {}},
    }
    return results, grid


def test_report_holds_every_cell_figures_and_failures(tmp_path) -> None:
    results, grid = _results()
    html = render_report(results, grid)
    # Table: the original row plus one row per cell.
    rows = re.findall(r"<tr class='(?:best|ref|)'>", html)
    assert len(rows) == 1 + len(results["cells"])
    # Curves, image curves, confusion matrices, two grids (lung and soft tissue).
    assert html.count("data:image/png;base64,") == 5
    assert "display window lung [-1350, 150] HU" in html
    assert "display window soft tissue [-160, 240] HU" in html
    assert "Images that failed to read: 1" in html and "/data/x.png" in html
    assert "red-cnn" in html and "weights missing" in html
    assert "lung window" in html and "test split has no images of class normal" in html
    assert "Selected epoch 3 of 5 by valid balanced accuracy 0.8" in html
    assert html.count("−3 / +1 <span class='note'>(p 0.62)</span>") == 2  # the two tv rows
    assert html.count("−0 / +7 <span class='note'>(p 0.016)</span>") == 2
    # The summary's best restoration at quarter dose, against its raw low dose.
    assert "against the raw low dose: 0 slices lost, 7 gained, McNemar p 0.016)" in html
    out = write_report(results, grid, tmp_path / "r.html")
    assert out.read_text() == html


def test_report_summary_names_a_tie_for_the_best_restoration() -> None:
    """Two restorations equally accurate at quarter dose: the summary names both, not only
    the first in table order."""
    import copy

    results, grid = _results()
    tv = next(c for c in results["cells"] if c["dose"] == 0.25 and c["denoiser"] == "tv")
    bm3d = {**copy.deepcopy(tv), "denoiser": "bm3d"}
    results["cells"].append(bm3d)
    results["denoisers"]["used"].append("bm3d")
    grid["image-poisson_0.25_bm3d"] = grid["image-poisson_0.25_tv"]
    html = render_report(results, grid)
    assert "best restoration tv <b>" in html and "McNemar p 0.016), tied with bm3d." in html
    bm3d["accuracy"] = {**bm3d["accuracy"], "value": tv["accuracy"]["value"] - 0.05}
    assert "tied with" not in render_report(results, grid)


def test_report_shows_one_grid_when_the_exported_window_is_the_display_window() -> None:
    """8-bit images exported through the lung window and a lung display window: one grid per
    method (the two were the same picture), named as both; another export window adds its own."""
    results, grid = _results()
    results["grid"]["paths"] = ["/data/a.png", "/data/b.png"]
    html = render_report(results, grid)
    assert html.count("<h3>Simulation image-poisson, display window") == 1
    assert "display window lung, as exported [-1350, 150] HU" in html
    results["data"]["png_window_hu"] = [-1000.0, 400.0]
    html = render_report(results, grid)
    assert html.count("<h3>Simulation image-poisson, display window") == 2
    assert "as exported (8-bit grey levels) [-1000, 400] HU" in html


def test_report_of_a_full_dose_only_study(tmp_path) -> None:
    """No simulation method (full-dose evaluation only): the report says so, no empty figure."""
    results, grid = _results()
    results["methods"], results["cells"] = [], []
    results["denoisers"] = {"used": ["none"], "skipped": []}
    html = render_report(results, {"full-dose": grid["full-dose"]})
    assert html.count("No low-dose cells") == 2
    assert "Full-dose test accuracy" in html and "<table" in html  # the original row stays
    write_report(results, {"full-dose": grid["full-dose"]}, tmp_path / "r.html")
    assert (tmp_path / "r.html").stat().st_size > 1000


def test_display_images_are_shown_as_exported_not_in_a_soft_tissue_band() -> None:
    """8-bit PNG slices: the second grid uses the PNG's own window, and the metric note says
    which grey levels the soft-tissue metric window covers."""
    results, grid = _results()
    results["data"]["png_window_hu"] = [-1024.0, 476.0]
    results["grid"]["paths"] = ["/data/test/a/1.png", "/data/test/b/2.png"]
    html = render_report(results, grid)
    assert "as exported (8-bit grey levels) [-1024, 476] HU" in html
    assert "soft tissue [-160, 240]" not in html
    assert "grey levels 147-215 only" in html
    results["grid"]["paths"] = ["/data/a.dcm", "/data/b.dcm"]  # HU data: soft tissue, no note
    html = render_report(results, grid)
    assert "soft tissue [-160, 240]" in html and "grey levels" not in html


def test_paired_phrase_counts_one_slice_in_the_singular() -> None:
    from lowdose.reporting.report import _paired_phrase

    assert _paired_phrase({"lost": 1, "gained": 2, "p_value": 1.0}).startswith(": 1 slice lost,")
    assert _paired_phrase({"lost": 0, "gained": 7, "p_value": 0.016}).startswith(": 0 slices")
