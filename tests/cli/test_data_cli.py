"""``lowdose data phantom`` and ``lowdose data audit`` through the CLI entry point."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from lowdose.io.datasets import CLASSES
from tests.cli.cli_helpers import assert_one_error_line, run


def test_phantom_writes_the_kaggle_layout(tmp_path, capsys):
    out = tmp_path / "ph"
    rc, stdout, err = run(["data", "phantom", str(out), "--n", "12", "--size", "48",
                           "--seed", "4"], capsys)
    assert rc == 0, err
    assert "wrote 12 phantom slices (48x48" in stdout
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["seed"] == 4 and meta["n"] == 12 and meta["format"] == "png"
    files = list(out.glob("*/*/*.png"))
    assert len(files) == 12
    assert {f.parent.name for f in files} == set(CLASSES)
    assert {f.parent.parent.name for f in files} <= {"train", "valid", "test"}


def test_phantom_says_a_split_too_small_for_every_class(tmp_path, capsys):
    """--n 20 over four classes at 0.7/0.1/0.2 leaves the valid split empty: said, where it
    was written silently; a large enough --n says nothing."""
    rc, _, err = run(["data", "phantom", str(tmp_path / "small"), "--n", "20", "--size", "32"],
                     capsys)
    assert rc == 0, err
    assert "warning: split valid holds no slice of any class (--n 20" in err
    rc, _, err = run(["data", "phantom", str(tmp_path / "big"), "--n", "40", "--size", "32"],
                     capsys)
    assert rc == 0 and "warning" not in err, err


def test_phantom_npy_format(tmp_path, capsys):
    out = tmp_path / "ph"
    rc, _, err = run(["data", "phantom", str(out), "--n", "4", "--size", "32",
                      "--format", "npy"], capsys)
    assert rc == 0, err
    assert len(list(out.glob("*/*/*.npy"))) == 4


def test_phantom_refuses_to_overwrite_without_flag(tmp_path, capsys):
    out = tmp_path / "ph"
    assert run(["data", "phantom", str(out), "--n", "4", "--size", "32"], capsys)[0] == 0
    rc, _, err = run(["data", "phantom", str(out), "--n", "4", "--size", "32"], capsys)
    assert_one_error_line(rc, err, str(out), "--overwrite")
    rc, _, err = run(["data", "phantom", str(out), "--n", "8", "--size", "32", "--overwrite"],
                     capsys)
    assert rc == 0, err
    assert len(list(out.glob("*/*/*.png"))) == 8


@pytest.mark.parametrize(("args", "needle"), [
    (["--format", "jpg"], "unknown phantom format 'jpg'"),
    (["--window", "lungs"], "--window 'lungs'"),
    (["--splits", "a,b,c"], "--splits 'a,b,c'"),
    (["--splits", "0.5,0.5"], "splits (0.5, 0.5)"),
])
def test_phantom_bad_options(tmp_path, capsys, args, needle):
    rc, _, err = run(["data", "phantom", str(tmp_path / "ph"), "--n", "4", *args], capsys)
    assert_one_error_line(rc, err, needle)


@pytest.fixture()
def dataset_with_copies(tmp_path, capsys):
    ds = tmp_path / "ds"
    assert run(["data", "phantom", str(ds), "--n", "20", "--size", "64"], capsys)[0] == 0
    train_normal = sorted((ds / "train" / "normal").glob("*.png"))
    shutil.copyfile(train_normal[0], ds / "test" / "normal" / "seen_in_train.png")
    shutil.copyfile(train_normal[1], ds / "train" / "adenocarcinoma" / "two_classes.png")
    return ds


def test_audit_writes_json_and_manifest(dataset_with_copies, tmp_path, capsys):
    ds = dataset_with_copies
    report, manifest = tmp_path / "audit.json", tmp_path / "manifest.csv"
    rc, out, err = run(["data", "audit", str(ds), "--json", str(report),
                        "--write-manifest", str(manifest)], capsys)
    assert rc == 0, err
    assert "22 files" in out and "filed under 2 classes" in out
    js = json.loads(report.read_text())
    assert js["n_files"] == 22 and js["n_unique"] == 20
    first, second = sorted((ds / "train" / "normal").glob("*.png"))[:2]
    assert sorted(js["duplicate_groups"]) == sorted([
        sorted([f"train/normal/{first.name}", "test/normal/seen_in_train.png"]),
        sorted([f"train/normal/{second.name}", "train/adenocarcinoma/two_classes.png"]),
    ])
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "label", "split"]
    paths = {r["path"] for r in rows}
    assert "test/normal/seen_in_train.png" not in paths  # a test image seen in train
    assert "train/adenocarcinoma/two_classes.png" not in paths  # label conflict
    assert len(rows) == 19
    assert {r["label"] for r in rows} <= set(CLASSES)


def test_audit_missing_and_empty_folder(tmp_path, capsys):
    rc, _, err = run(["data", "audit", str(tmp_path / "nope")], capsys)
    assert_one_error_line(rc, err, str(tmp_path / "nope"), "no such folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = run(["data", "audit", str(empty)], capsys)
    assert_one_error_line(rc, err, str(empty), "empty")


def test_audit_never_writes_into_the_input(dataset_with_copies, capsys):
    ds = dataset_with_copies
    before = sorted(p.relative_to(ds) for p in ds.rglob("*"))
    rc, _, err = run(["data", "audit", str(ds), "--write-manifest", str(ds / "m.csv")], capsys)
    assert_one_error_line(rc, err, "--write-manifest", "inside the audited folder")
    assert sorted(p.relative_to(ds) for p in ds.rglob("*")) == before


def test_audit_unknown_class_folder(tmp_path, capsys):
    (tmp_path / "train" / "dogs").mkdir(parents=True)
    (tmp_path / "train" / "dogs" / "a.png").write_bytes(b"x")
    rc, _, err = run(["data", "audit", str(tmp_path)], capsys)
    assert_one_error_line(rc, err, "train/dogs", "not a known class folder", "normal")


def test_data_group_help(capsys):
    rc, out, _ = run(["data", "--help"], capsys)
    assert rc == 0 and "phantom" in out and "audit" in out
