"""Class-folder datasets: canonical labels, official splits, manifests."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowdose import LowdoseError
from lowdose.io.datasets import (
    CLASSES,
    DatasetItem,
    canonical_label,
    read_manifest,
    scan_class_folders,
    write_manifest,
)

KAGGLE_FOLDERS = {
    "adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib": "adenocarcinoma",
    "large.cell.carcinoma_left.hilum_T2_N2_M0_IIIa": "large.cell.carcinoma",
    "squamous.cell.carcinoma_left.hilum_T1_N2_M0_IIIa": "squamous.cell.carcinoma",
    "normal": "normal",
    "adenocarcinoma": "adenocarcinoma",
    "large.cell.carcinoma": "large.cell.carcinoma",
    "squamous.cell.carcinoma": "squamous.cell.carcinoma",
    "Adenocarcinoma": "adenocarcinoma",
    "large cell carcinoma": "large.cell.carcinoma",
    "squamous_cell_carcinoma": "squamous.cell.carcinoma",
    "NORMAL": "normal",
}


@pytest.mark.parametrize(("folder", "label"), sorted(KAGGLE_FOLDERS.items()))
def test_canonical_label(folder, label):
    assert canonical_label(folder) == label


@pytest.mark.parametrize("folder", ["cats", "normality", "adeno", "large.cell", ""])
def test_unknown_folder_lists_the_classes(folder):
    with pytest.raises(LowdoseError) as err:
        canonical_label(folder)
    assert "not a known class folder" in str(err.value)
    assert all(c in str(err.value) for c in CLASSES)


def make_layout(root: Path, layout: dict[str, dict[str, int]]) -> None:
    for split, classes in layout.items():
        for folder, n in classes.items():
            d = root / split / folder
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (d / f"img{i}.png").write_bytes(b"not decoded here")


KAGGLE_LIKE = {
    "train": {"adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib": 3, "normal": 2,
              "large.cell.carcinoma_left.hilum_T2_N2_M0_IIIa": 1,
              "squamous.cell.carcinoma_left.hilum_T1_N2_M0_IIIa": 1},
    "valid": {"adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib": 1, "normal": 1,
              "large.cell.carcinoma_left.hilum_T2_N2_M0_IIIa": 1,
              "squamous.cell.carcinoma_left.hilum_T1_N2_M0_IIIa": 1},
    "test": {"adenocarcinoma": 2, "normal": 1, "large.cell.carcinoma": 1,
             "squamous.cell.carcinoma": 1},
}


def test_scan_keeps_official_split_and_canonical_labels(tmp_path):
    make_layout(tmp_path, KAGGLE_LIKE)
    items = scan_class_folders(tmp_path)
    assert len(items) == 16
    assert [i.split for i in items] == ["train"] * 7 + ["valid"] * 4 + ["test"] * 5
    assert {i.label for i in items} == set(CLASSES)
    adeno_train = [i for i in items if i.split == "train" and i.label == "adenocarcinoma"]
    assert len(adeno_train) == 3
    assert all(i.path.is_absolute() and i.path.is_file() for i in items)
    assert all(i.path.parent.parent.name == i.split for i in items)


def test_scan_finds_a_data_level_and_skips_other_files(tmp_path):
    make_layout(tmp_path / "Data", {"train": {"normal": 2}, "test": {"normal": 1}})
    (tmp_path / "Data" / "train" / "normal" / "readme.txt").write_text("x")
    (tmp_path / "Data" / "train" / "normal" / ".DS_Store").write_text("x")
    with pytest.warns(UserWarning, match="non-image"):
        items = scan_class_folders(tmp_path)
    assert [(i.split, i.path.name) for i in items] == [
        ("train", "img0.png"), ("train", "img1.png"), ("test", "img0.png")]


def test_missing_class_in_a_split_warns_or_raises(tmp_path):
    make_layout(tmp_path, {"train": {"normal": 1, "adenocarcinoma": 1}, "test": {"normal": 1}})
    with pytest.warns(UserWarning, match="split test has no images of class adenocarcinoma"):
        scan_class_folders(tmp_path)
    with pytest.raises(LowdoseError, match="split test has no images of class adenocarcinoma"):
        scan_class_folders(tmp_path, require_all_classes=True)


def test_bad_folders_are_one_line_errors(tmp_path):
    with pytest.raises(LowdoseError, match="no such folder"):
        scan_class_folders(tmp_path / "missing")
    with pytest.raises(LowdoseError, match="empty"):
        scan_class_folders(tmp_path)
    (tmp_path / "stuff").mkdir()
    with pytest.raises(LowdoseError, match="no split folders"):
        scan_class_folders(tmp_path)
    make_layout(tmp_path, {"train": {"cats": 1}})
    with pytest.raises(LowdoseError, match=r"train/cats: not a known class folder"):
        scan_class_folders(tmp_path)


def test_split_without_images_is_an_error(tmp_path):
    (tmp_path / "train" / "normal").mkdir(parents=True)
    with pytest.raises(LowdoseError, match="no images"):
        scan_class_folders(tmp_path)


def test_manifest_round_trip_and_scan_uses_exactly_its_rows(tmp_path):
    make_layout(tmp_path, KAGGLE_LIKE)
    items = scan_class_folders(tmp_path)
    chosen = [i for i in items if i.path.name != "img1.png"]
    manifest = tmp_path.parent / f"{tmp_path.name}-manifest.csv"
    write_manifest(chosen, manifest, root=tmp_path)
    lines = manifest.read_text().splitlines()
    assert lines[0] == "path,label,split"
    assert lines[1] == (
        "train/adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib/img0.png,adenocarcinoma,train")
    assert len(lines) == len(chosen) + 1
    again = scan_class_folders(tmp_path, manifest=manifest)
    assert [(i.path, i.label, i.split) for i in again] == [
        (i.path, i.label, i.split) for i in chosen]
    relative = read_manifest(manifest)
    assert not relative[0].path.is_absolute()


def test_manifest_labels_are_canonicalised(tmp_path):
    make_layout(tmp_path, {"train": {"normal": 1}})
    m = tmp_path.parent / "m.csv"
    m.write_text("path,label,split\ntrain/normal/img0.png,"
                 "adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib,val\n")
    (item,) = read_manifest(m, root=tmp_path)
    assert item == DatasetItem(tmp_path / "train" / "normal" / "img0.png", "adenocarcinoma",
                               "valid")


@pytest.mark.parametrize(("text", "message"), [
    ("file,label\nx.png,normal\n", "missing column"),
    ("path,label,split\n", "no rows"),
    ("path,label,split\na.png,normal,train\na.png,normal,train\n", "listed twice"),
    ("path,label,split\n/abs/a.png,normal,train\n", "must be relative"),
    ("path,label,split\n../a.png,normal,train\n", "must be relative"),
    ("path,label,split\na.png,dog,train\n", "line 2: 'dog': not a known class"),
    ("path,label,split\na.png,normal,holdout\n", "line 2: 'holdout': not a split"),
])
def test_bad_manifests_name_file_and_reason(tmp_path, text, message):
    m = tmp_path / "m.csv"
    m.write_text(text)
    with pytest.raises(LowdoseError, match=message) as err:
        read_manifest(m)
    assert str(m) in str(err.value)


def test_manifest_row_without_file_is_an_error(tmp_path):
    make_layout(tmp_path, {"train": {"normal": 1}})
    m = tmp_path.parent / "m2.csv"
    m.write_text("path,label,split\ntrain/normal/gone.png,normal,train\n")
    with pytest.raises(LowdoseError, match=r"gone\.png: no such file"):
        scan_class_folders(tmp_path, manifest=m)
    with pytest.raises(LowdoseError, match="no such manifest"):
        scan_class_folders(tmp_path, manifest=tmp_path / "none.csv")


def test_write_manifest_is_atomic_and_checks_paths(tmp_path):
    target = tmp_path / "m.csv"
    target.write_text("old")
    with pytest.raises(LowdoseError, match="not inside the dataset folder"):
        write_manifest([DatasetItem(Path("/elsewhere/a.png"), "normal", "train")], target,
                       root=tmp_path)
    assert target.read_text() == "old"
    assert not [p for p in tmp_path.iterdir() if p.name != "m.csv"]  # no partial file left
