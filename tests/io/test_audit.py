"""Dataset audit on a phantom folder with planted duplicates, and on the real Kaggle images."""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lowdose import LowdoseError
from lowdose.io.audit import NearDuplicateRule, audit_dataset, phash64
from lowdose.io.datasets import scan_class_folders
from lowdose.io.phantom import write_phantom_dataset

ADENO, LARGE, SQUAM = "adenocarcinoma", "large.cell.carcinoma", "squamous.cell.carcinoma"


def _first(folder: Path, k: int = 0) -> Path:
    return sorted(folder.glob("*.png"))[k]


def _grey(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict:
    """40 distinct phantom PNGs plus planted copies; returns the folder and what was planted."""
    ds = tmp_path_factory.mktemp("audit") / "ds"
    write_phantom_dataset(ds, n=40, size=128, seed=3)
    p: dict[str, tuple[Path, Path]] = {}

    def plant(name: str, src: Path, dst: Path, data: bytes | None = None) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            shutil.copyfile(src, dst)
        else:
            dst.write_bytes(data)
        p[name] = (src, dst)

    def png(arr: np.ndarray, mode: str = "L") -> bytes:
        buf = io.BytesIO()
        Image.fromarray(arr).convert(mode).save(buf, format="PNG")
        return buf.getvalue()

    a = _first(ds / "train" / "normal")
    plant("exact_bytes", a, ds / "test" / "normal" / f"{a.stem}_copy.png")
    b = _first(ds / "train" / "normal", 1)
    plant("exact_pixels_rgba", b, ds / "valid" / "normal" / f"{b.stem}_rgba.png",
          png(_grey(b), "RGBA"))
    c = _first(ds / "train" / ADENO)
    small = Image.open(c).convert("L").resize((96, 96), Image.Resampling.LANCZOS)
    plant("near_resized", c, ds / "test" / ADENO / f"{c.stem}_small.png", png(np.asarray(small)))
    d = _first(ds / "train" / LARGE)
    noise = np.random.default_rng(0).normal(0, 3, (128, 128))
    noisy = np.clip(_grey(d) + noise, 0, 255).astype(np.uint8)
    plant("near_noisy", d, ds / "valid" / LARGE / f"{d.stem}_noisy.png", png(noisy))
    e = _first(ds / "test" / SQUAM)
    buf = io.BytesIO()
    Image.open(e).convert("L").save(buf, format="JPEG", quality=90)
    plant("near_jpeg_named_png", e, ds / "test" / SQUAM / f"{e.stem}_jpeg.png", buf.getvalue())
    f = _first(ds / "train" / ADENO, 1)
    plant("cross_class", f, ds / "train" / SQUAM / f"{f.stem}_conflict.png")
    broken = ds / "test" / "normal" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    result = audit_dataset(ds)
    return {"root": ds, "planted": p, "result": result, "json": result.to_json()}


def rel(planted: dict, path: Path) -> str:
    return path.relative_to(planted["root"]).as_posix()


def test_counts(planted):
    js = planted["json"]
    assert js["n_files"] == 47 and js["n_readable"] == 46
    assert js["n_unique"] == 43  # the three exact copies count once
    assert js["n_unique_near"] == 40  # and the three near copies too: the 40 originals
    assert js["n_redundant"] == 3 and js["n_redundant_near"] == 6
    assert [u["path"] for u in js["unreadable"]] == ["test/normal/broken.png"]


def test_exact_groups(planted):
    groups = {tuple(g) for g in planted["json"]["duplicate_groups"]}
    expected = {tuple(sorted(rel(planted, x) for x in planted["planted"][name]))
                for name in ("exact_bytes", "exact_pixels_rgba", "cross_class")}
    assert groups == expected
    assert planted["json"]["n_unique_bytes"] == 44  # the RGBA re-save differs in bytes only


def test_near_groups_resize_noise_and_jpeg_named_png(planted):
    groups = {tuple(g) for g in planted["json"]["near_duplicate_groups"]}
    expected = {tuple(sorted(rel(planted, x) for x in planted["planted"][name]))
                for name in ("near_resized", "near_noisy", "near_jpeg_named_png")}
    assert groups == expected
    for pair in planted["json"]["near_duplicate_pairs"]:
        assert pair["phash_distance"] <= 12 and pair["detail_correlation"] >= 0.8


def test_cross_split_and_cross_class(planted):
    js = planted["json"]
    cross_split = {tuple(g["paths"]) for g in js["cross_split_groups"]}
    assert len(cross_split) == 4
    (conflict,) = js["cross_class_groups"]
    assert conflict["labels"] == [ADENO, SQUAM] and conflict["kind"] == "exact"
    assert js["overlap"]["test_in_train"] == 2 and js["overlap_exact"]["test_in_train"] == 1
    assert js["overlap"]["valid_in_train"] == 2 and js["overlap_exact"]["valid_in_train"] == 1
    normal_test = js["per_split_class"]["test"]["normal"]
    assert normal_test["with_exact_copy_in"] == {"train/normal": 1}


def test_an_exact_copy_among_near_ones_is_called_exact_and_near(tmp_path):
    """An image filed under a second class byte for byte, and a noisy copy of it: the group
    was called `near`, which hid that one of the class conflicts is an exact copy."""
    write_phantom_dataset(tmp_path, n=12, size=128, seed=2)
    src = _first(tmp_path / "train" / "normal")
    (tmp_path / "train" / ADENO).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, tmp_path / "train" / ADENO / "same.png")
    noisy = np.clip(_grey(src) + np.random.default_rng(1).normal(0, 3, (128, 128)), 0, 255)
    Image.fromarray(noisy.astype(np.uint8)).save(tmp_path / "train" / "normal" / "noisy.png")
    result = audit_dataset(tmp_path)
    (conflict,) = result.to_json()["cross_class_groups"]
    assert len(conflict["paths"]) == 3 and conflict["kind"] == "exact and near"
    assert "filed under 2 classes (exact and near)" in result.summary()
    assert conflict["paths"] in result.to_json()["near_duplicate_groups"]


def test_manifest_rules(planted, tmp_path):
    result, p = planted["result"], planted["planted"]
    kept = {it.path.as_posix() for it in result.manifest_items()}
    assert len(kept) == 39  # 40 originals less the one filed under two classes
    for name in ("exact_bytes", "exact_pixels_rgba", "near_resized", "near_noisy"):
        original, copy = p[name]
        assert rel(planted, original) in kept  # train keeps its image
        assert rel(planted, copy) not in kept  # the later split loses the copy
    original, copy = p["near_jpeg_named_png"]
    assert rel(planted, original) in kept and rel(planted, copy) not in kept
    for x in p["cross_class"]:
        assert rel(planted, x) not in kept  # label unknown: dropped everywhere
    assert "test/normal/broken.png" not in kept
    drops = {d["path"]: d for d in planted["json"]["dropped"]}
    assert drops[rel(planted, p["exact_bytes"][1])]["reason"] == "cross-split"
    assert drops[rel(planted, p["exact_bytes"][1])]["kept"] == rel(planted, p["exact_bytes"][0])
    assert drops[rel(planted, p["near_jpeg_named_png"][1])]["reason"] == "within-split"
    assert drops[rel(planted, p["cross_class"][0])]["reason"] == "label-conflict"
    # The CSV is a manifest the dataset scanner (and so the training commands) accepts.
    csv = result.write_manifest(tmp_path / "manifest.csv")
    items = scan_class_folders(planted["root"], manifest=csv)
    assert len(items) == 39
    assert Counter(i.split for i in items) == Counter(
        planted["json"]["manifest"]["per_split_class"] and {
            s: sum(c.values()) for s, c in planted["json"]["manifest"]["per_split_class"].items()})


def test_json_paths_are_relative_and_serialisable(planted, tmp_path):
    out = planted["result"].write_json(tmp_path / "audit.json")
    js = json.loads(out.read_text())
    for group in js["duplicate_groups"]:
        assert all(isinstance(x, str) and not x.startswith("/") for x in group)
        assert all((planted["root"] / x).is_file() for x in group)
    summary = planted["result"].summary()
    assert "47 files (readable: train " in summary and "filed under 2 classes" in summary
    assert "unreadable" in summary


def test_stricter_rule_finds_no_near_duplicates(planted):
    strict = audit_dataset(planted["root"], rule=NearDuplicateRule(detail_corr_min=1.01))
    assert strict.n_unique_near == strict.n_unique == 43
    assert strict.near_pairs == []


def test_phash_survives_resize_not_content_change():
    rng = np.random.default_rng(1)
    base = (np.add.outer(np.arange(128), np.arange(128)) % 256).astype(np.uint8)
    img = Image.fromarray(base)
    assert phash64(img) == phash64(img.resize((200, 200)))
    other = Image.fromarray(rng.integers(0, 256, (128, 128), dtype=np.uint8))
    assert bin(phash64(img) ^ phash64(other)).count("1") > 12


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(LowdoseError, match="no such folder"):
        audit_dataset(tmp_path / "none")
    with pytest.raises(LowdoseError, match="empty"):
        audit_dataset(tmp_path)


def test_a_missing_or_emptied_split_is_said(tmp_path):
    """No valid folder, and a test split whose every image is a copy of a train one: the
    summary used to say 'manifest: ... (train 6)' and nothing else."""
    write_phantom_dataset(tmp_path, n=12, size=64, seed=1)
    shutil.rmtree(tmp_path / "valid")
    shutil.rmtree(tmp_path / "test")
    for k, src in enumerate(sorted((tmp_path / "train").rglob("*.png"))[:2]):
        (tmp_path / "test" / src.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, tmp_path / "test" / src.parent.name / f"copy{k}.png")
    warnings = [line.strip() for line in audit_dataset(tmp_path).summary().splitlines()
                if "warning" in line]
    assert warnings == [
        "warning: no valid images: training holds out a share of train instead",
        "warning: the manifest keeps none of the 2 test images (all copies of others or "
        "unreadable): the study needs a train and a test split"]


def test_only_broken_images_is_an_error(tmp_path):
    d = tmp_path / "train" / "normal"
    d.mkdir(parents=True)
    (d / "a.png").write_bytes(b"garbage")
    with pytest.raises(LowdoseError, match=r"none of the 1 image files could be decoded"):
        audit_dataset(tmp_path)


@pytest.mark.integration
@pytest.mark.slow
def test_real_kaggle_chest_ct_images(shared_data, tmp_path):
    root = shared_data / "chest-ctscan-images"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    result = audit_dataset(root)
    js = result.to_json()
    assert js["n_files"] == 1000 and js["n_readable"] == 1000
    assert js["n_unique"] == 847 and js["n_unique_bytes"] == 847  # 153 redundant files
    test_normal = js["per_split_class"]["test"]["normal"]
    assert test_normal["files"] == 54
    assert test_normal["with_exact_copy_in"]["train/normal"] == 46
    assert test_normal["with_copy_in"]["train/normal"] >= 46
    # The data's README: 47 of 315 test and 10 of 72 valid images have a copy in train.
    assert js["overlap"]["test_in_train"] == 47 and js["overlap"]["valid_in_train"] == 10
    (conflict,) = js["cross_class_groups"]
    assert [Path(x).name for x in conflict["paths"]] == ["l4.png", "sq2.png"]
    assert 800 <= js["n_unique_near"] <= 847
    # Manifest: no test image with a copy in train, one image per group, labels canonical.
    manifest = result.write_manifest(tmp_path / "manifest.csv")
    items = scan_class_folders(root, manifest=manifest)
    assert len(items) == js["n_unique_near"] - 1  # the two-class group is dropped whole
    kept = {i.path.relative_to(root).as_posix() for i in items}
    for group in result.groups:
        paths = [result.files[i].path for i in group]
        assert len(kept & set(paths)) <= 1
        if any(result.files[i].split == "train" for i in group):
            assert not any(result.files[i].split == "test" and result.files[i].path in kept
                           for i in group)


def test_colour_marks_are_counted_and_a_marked_png_warns_at_read(tmp_path):
    """A purple annotation line on a grey screenshot (24 of the Kaggle images carry one) was
    read as grey levels, silently: HU that are not the patient's."""
    from lowdose.io import read_ct

    write_phantom_dataset(tmp_path, n=12, size=64, seed=4)
    src = _first(tmp_path / "train" / "normal")
    rgb = np.stack([_grey(src)] * 3, axis=-1)
    rgb[32, :] = (120, 60, 200)  # a line across the slice
    Image.fromarray(rgb).save(src)
    summary = audit_dataset(tmp_path).summary()
    assert "colour marks (an annotation line?) on 1 images, e.g. train/normal/" in summary
    with pytest.warns(UserWarning, match=r"1.6% of the pixels are coloured"):
        read_ct(src)
