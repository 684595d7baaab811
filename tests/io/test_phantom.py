"""Built-in phantom: determinism, tissue HU, lesions per class, balance, dataset writing."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from lowdose import LowdoseError
from lowdose.image import Window
from lowdose.io import read_ct
from lowdose.io.datasets import CLASSES
from lowdose.io.phantom import (
    FOV_MM,
    _batch_plan,
    _Chest,
    _render,
    phantom_batch,
    phantom_slice,
    pixel_spacing,
    write_phantom_dataset,
)


@pytest.mark.parametrize("label", CLASSES)
def test_same_seed_same_slice_other_seed_differs(label):
    a = phantom_slice(label, size=96, seed=7)
    b = phantom_slice(label, size=96, seed=7)
    c = phantom_slice(label, size=96, seed=8)
    assert a.dtype == np.float32 and a.shape == (96, 96)
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 20.0


def test_tissues_have_their_hu():
    chest = _Chest(128, np.random.default_rng([3, 0]))
    hu = phantom_slice("normal", size=128, seed=3)
    lung = np.median(hu[chest.lung_mask])
    assert -900 < lung < -780
    assert np.median(hu[:4, :4]) == pytest.approx(-1000, abs=15)  # air in the corner
    assert hu.max() > 500  # cortical bone (spine, ribs)
    assert hu.min() >= -1024 and hu.max() <= 3071
    body = hu > -300
    soft = (hu > -10) & (hu < 80)
    fat = (hu > -140) & (hu < -60)
    assert soft.sum() > 0.25 * body.sum()  # muscle, heart, mediastinum
    assert fat.sum() > 0.03 * body.sum()  # subcutaneous and mediastinal fat
    # Full-dose grain: air is flat to a few HU, not noise-free, not low-dose noisy.
    assert 1.0 < hu[:16, :16].std() < 10.0


@pytest.mark.parametrize("label", [c for c in CLASSES if c != "normal"])
def test_lesion_is_local_and_dense(label):
    """Same seed: same chest, so the lesion is the only difference from the normal slice."""
    size = 128
    normal = phantom_slice("normal", size, seed=11)
    lesion, info = _render(label, size, seed=11)
    diff = np.abs(lesion - normal) > 100
    area_mm2 = diff.sum() * pixel_spacing(size) ** 2
    diameter = info["lesion"]["diameter_mm"]
    assert 0.2 * np.pi * (diameter / 2) ** 2 < area_mm2 < 4 * np.pi * (diameter / 2) ** 2 + 200
    # Where the lesion is, the lung (-860 HU) became ground glass or soft tissue.
    assert np.median(lesion[diff]) > np.median(normal[diff]) + 200 or info["lesion"].get(
        "kind") == "cavitating"


def test_lesion_types_follow_their_class():
    sizes = {c: [] for c in CLASSES if c != "normal"}
    kinds = Counter()
    for seed in range(24):
        for label in sizes:
            info = _render(label, 64, seed)[1]["lesion"]
            sizes[label].append(info["diameter_mm"])
            kinds[(label, info["kind"])] += 1
    assert np.median(sizes["adenocarcinoma"]) < np.median(sizes["squamous.cell.carcinoma"])
    assert np.median(sizes["squamous.cell.carcinoma"]) < np.median(sizes["large.cell.carcinoma"])
    assert kinds[("adenocarcinoma", "part-solid")] and kinds[("adenocarcinoma", "ground-glass")]
    assert kinds[("large.cell.carcinoma", "necrotic")]
    assert kinds[("squamous.cell.carcinoma", "cavitating")]


def test_batch_is_balanced_and_deterministic():
    hu, labels = phantom_batch(10, size=48, seed=1)
    counts = Counter(labels)
    assert hu.shape == (10, 48, 48) and set(counts) == set(CLASSES)
    assert max(counts.values()) - min(counts.values()) <= 1
    hu2, labels2 = phantom_batch(10, size=48, seed=1)
    assert labels == labels2 and np.array_equal(hu, hu2)
    assert phantom_batch(10, size=48, seed=2)[1] != labels or not np.array_equal(
        phantom_batch(10, size=48, seed=2)[0], hu)


def test_bad_arguments_are_user_errors():
    with pytest.raises(LowdoseError, match=r"unknown phantom class 'cat'.*normal"):
        phantom_slice("cat")
    with pytest.raises(LowdoseError, match="at least 32"):
        phantom_slice("normal", size=8)
    with pytest.raises(LowdoseError, match="at least 1"):
        phantom_batch(0)


def test_write_png_dataset_layout_and_metadata(tmp_path):
    out = tmp_path / "ph"
    meta_path = write_phantom_dataset(out, n=20, size=64, seed=5)
    meta = json.loads(meta_path.read_text())
    assert meta["seed"] == 5 and meta["size"] == 64 and meta["format"] == "png"
    assert meta["pixel_spacing_mm"] == [FOV_MM / 64, FOV_MM / 64]
    assert meta["window_hu"] == [-1350.0, 150.0]
    files = sorted(out.glob("*/*/*.png"))
    assert len(files) == 20
    found = Counter((f.parent.parent.name, f.parent.name) for f in files)
    for split, per_class in meta["counts"].items():
        for label, n in per_class.items():
            assert found[(split, label)] == n
            assert (out / split / label).is_dir()
    assert {f.parent.name for f in files} == set(CLASSES)
    # A PNG reads back to the phantom's HU within half an 8-bit step of the window.
    labels, seeds = _batch_plan(20, 5)
    f = files[0]
    i = int(f.stem.split("_")[1])
    assert f.parent.name == labels[i]
    ref = phantom_slice(labels[i], 64, seeds[i])
    back = read_ct(f).hu
    inside = (ref > -1350) & (ref < 150)
    step = Window.named("lung").width / 255
    assert np.abs(back - ref)[inside].max() <= step / 2 + 1e-3


def test_write_npy_keeps_hu_exactly(tmp_path):
    out = tmp_path / "ph"
    write_phantom_dataset(out, n=8, size=48, seed=2, fmt="npy")
    labels, seeds = _batch_plan(8, 2)
    for f in sorted(out.glob("*/*/*.npy")):
        i = int(f.stem.split("_")[1])
        assert np.array_equal(np.load(f), phantom_slice(labels[i], 48, seeds[i]))


def test_write_never_over_other_content(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(LowdoseError, match="not empty"):
        write_phantom_dataset(tmp_path, n=4, size=32)
    assert (tmp_path / "mine.txt").read_text() == "keep"
    out = tmp_path / "ph"
    write_phantom_dataset(out, n=8, size=32)
    with pytest.raises(LowdoseError, match="--overwrite"):
        write_phantom_dataset(out, n=8, size=32)
    write_phantom_dataset(out, n=4, size=32, overwrite=True)
    assert len(list(out.glob("*/*/*.png"))) == 4
    with pytest.raises(LowdoseError, match="unknown phantom format"):
        write_phantom_dataset(tmp_path / "x", n=4, fmt="jpg")
    with pytest.raises(LowdoseError, match="splits"):
        write_phantom_dataset(tmp_path / "y", n=4, splits=(0.5, 0.5))
