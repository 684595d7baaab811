"""The study's data stage on tiny PNG class folders: a cache that follows the files, the
duplicates and the held-out valid split it states, and the checks on config and classifier."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lowdose.errors import LowdoseError
from lowdose.evaluation.study import StudyConfig, load_study_data, run_study
from lowdose.models.classifiers import ClassifierSpec, build_classifier, save_classifier

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def png_root(tmp_path_factory) -> Path:
    """24 phantom PNGs in the Kaggle layout (train, valid, test; four classes); copied per test."""
    from lowdose.io.phantom import write_phantom_dataset

    root = tmp_path_factory.mktemp("png") / "data"
    write_phantom_dataset(root, 24, size=48, seed=1)
    return root


def _copy(png_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(png_root, root)
    return root


def _cfg(root: Path, out: Path, **kw) -> StudyConfig:
    base = {"data": str(root), "out": str(out), "slice_size": 48, "doses": [0.5],
            "denoisers": [], "methods": ["image-poisson"], "n_boot": 20, "chunk": 8,
            "grid_slices": 2}
    base.update(kw)
    return StudyConfig.from_dict(base)


def _manifest(root: Path, path: Path, drop_label: str | None = None) -> Path:
    from lowdose.io.datasets import DatasetItem, scan_class_folders, write_manifest

    items = [DatasetItem(i.path.relative_to(root), i.label, i.split)
             for i in scan_class_folders(root)
             if not (i.label == drop_label and i.split == "test")]
    return write_manifest(items, path)


def test_data_cache_follows_the_manifest_and_the_image_files(png_root, tmp_path) -> None:
    """Rows dropped from the manifest or files deleted rebuild the data (said once), and the
    classifier and cells that depend on them get other cache keys; unchanged data is read
    from the cache, and a cache written before input hashes were kept is adopted."""
    from lowdose.evaluation.study import _cells_dir

    root = _copy(png_root, tmp_path)
    manifest = _manifest(root, tmp_path / "all.csv")
    cache = tmp_path / "cache"
    cfg = _cfg(root, tmp_path / "out", manifest=str(manifest))
    first = load_study_data(cfg, cache, progress=False)
    assert not first.cached and first.revision is None
    again = load_study_data(cfg, cache, progress=False)
    assert again.cached and again.revision is None and again.warnings == first.warnings
    n_all = sum(len(v) for v in first.labels.values())

    _manifest(root, manifest, drop_label="normal")  # the same file, no normal test rows
    dropped = load_study_data(cfg, cache, progress=False)
    assert not dropped.cached and dropped.revision is not None
    assert "changed since the data stage was cached" in dropped.warnings[0]
    assert 2 not in dropped.labels["test"].tolist() and 2 in first.labels["test"]  # normal
    assert sum(len(v) for v in dropped.labels.values()) < n_all
    summary = {"path": "clf.safetensors"}
    assert _cells_dir(cache, cfg, dropped, summary) != _cells_dir(cache, cfg, first, summary)
    rerun = load_study_data(cfg, cache, progress=False)
    assert rerun.cached and rerun.revision == dropped.revision
    assert not any("changed since" in w for w in rerun.warnings)

    _manifest(root, manifest)  # back to every row: the first cache keys again
    assert load_study_data(cfg, cache, progress=False).revision is None

    plain = _cfg(root, tmp_path / "out")  # no manifest: a deleted file is noticed
    n_test = len(load_study_data(plain, cache, progress=False).labels["test"])
    victim = sorted((root / "test").rglob("*.png"))[0]
    victim.unlink()
    after = load_study_data(plain, cache, progress=False)
    assert not after.cached and len(after.labels["test"]) == n_test - 1
    assert str(victim) not in after.paths["test"]

    # A cache from before the input hashes: adopted while it lists the same images...
    meta_path = next(p for p in cache.glob("data-*.json")
                     if json.loads(p.read_text())["inputs"] == after.inputs)
    meta = json.loads(meta_path.read_text())
    for key in ("inputs", "first_inputs", "revision"):
        meta.pop(key)
    meta_path.write_text(json.dumps(meta))
    assert load_study_data(plain, cache, progress=False).cached
    # ... and rebuilt once it lists a deleted one.
    meta_path.write_text(json.dumps(meta))
    sorted((root / "train").rglob("*.png"))[0].unlink()
    assert not load_study_data(plain, cache, progress=False).cached


def test_duplicates_held_out_valid_and_loaded_classifier_are_stated(png_root, tmp_path) -> None:
    """A test image copied from train and a train image filed in two classes are counted (one
    warning, the report's audit table, a pointer to the audit's manifest); a missing valid
    split held out of train is said and recorded; a loaded classifier trained on other
    slices is flagged and the unused training settings are not shown beside it."""
    root = _copy(png_root, tmp_path)
    shutil.rmtree(root / "valid")
    src = sorted((root / "train" / "normal").glob("*.png"))[0]
    shutil.copy(src, root / "test" / "normal" / "copy-of-train.png")
    other = sorted((root / "train" / "adenocarcinoma").glob("*.png"))[0]
    shutil.copy(other, root / "train" / "normal" / "also-normal.png")
    torch.manual_seed(0)
    spec = ClassifierSpec(arch="resnet18", input_size=32, slice_size=64,
                          window=(-1024.0, 476.0))
    clf = save_classifier(build_classifier("resnet18", spec), tmp_path / "clf.safetensors")
    said: list[str] = []
    results = run_study(_cfg(root, tmp_path / "out", classifier=str(clf)), progress=False,
                        log=said.append)

    counts = results["audit"]["duplicates_in_use"]
    assert counts["test_in_train"] == 1 and counts["in_two_classes"] == 2
    dup = [w for w in said if "have a copy" in w]
    assert len(dup) == 1 and "lowdose data audit DATA --write-manifest" in dup[0]
    assert dup[0].startswith("warning: 1 of ")
    held = results["data"]["valid_held_out_of_train"]
    assert held and sum(held.values()) == results["data"]["n"]["valid"]
    assert any(w.startswith("warning: no valid split in the data: ") for w in said)

    note = results["classifier"]["preparation_note"]
    assert "64 px slices" in note and "[-1024, 476] HU" in note and "48 px slices" in note
    assert f"warning: {note}" in said
    html = (tmp_path / "out" / "report.html").read_text()
    assert "1 of " in html and "--write-manifest dedup.csv" in html
    assert "valid_held_out_of_train" in html and "64 px slices" in html
    assert "&quot;preset&quot;" not in html and "&quot;train&quot;" not in html


def test_a_typo_in_the_train_block_is_refused_up_front(tmp_path) -> None:
    with pytest.raises(LowdoseError, match=r"train: unknown keys \['epoch'\]; known: .*epochs"):
        StudyConfig.from_dict({"train": {"epoch": 2}})
    path = tmp_path / "s.yaml"
    path.write_text("base: demo\ntrain: {epoch: 2}\n")
    with pytest.raises(LowdoseError, match="unknown keys"):
        StudyConfig.from_yaml(path)
    assert StudyConfig.from_dict({"train": {"epochs": 2}}).train == {"epochs": 2}


def test_a_cached_rerun_keeps_the_measured_timings(tmp_path) -> None:
    """Cached stages report the time they took when computed, and are listed as cached."""
    cfg = StudyConfig.from_dict({
        "out": str(tmp_path / "out"), "doses": [0.5], "denoisers": ["tv"], "slice_size": 32,
        "phantom": {"n_train": 4, "n_valid": 4, "n_test": 4, "size": 32}, "n_boot": 10,
        "chunk": 4, "grid_slices": 2, "methods": ["image-poisson"],
        "train": {"arch": "resnet18", "epochs": 1, "input_size": 32, "batch_size": 4}})
    first = run_study(cfg, progress=False, log=None)["timings_s"]
    assert first["cached"] == []
    again = run_study(cfg, progress=False, log=None)["timings_s"]
    cells = list(first["cells_each"])
    assert sorted(again["cached"]) == sorted(["data", "classifier", "full-dose", *cells])
    for tag in cells:
        assert again["cells_each"][tag] == pytest.approx(first["cells_each"][tag], abs=0.02)
    assert again["classifier"] >= first["classifier"] - 0.05 > 0
    assert again["data"] == pytest.approx(first["data"], abs=0.02)


def test_a_class_missing_from_a_split_is_said_once(png_root, tmp_path) -> None:
    """The folder scan's warning and the study's own (of the images read) named the same gap
    in two wordings; the study's alone remains."""
    import warnings

    root = _copy(png_root, tmp_path)
    shutil.rmtree(root / "test" / "normal")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_study_data(_cfg(root, tmp_path / "out"), tmp_path / "cache", progress=False)
    assert [w for w in data.warnings if "normal" in w] == [
        "test split has no images of class normal"]
    assert not [w for w in caught if "no images of class" in str(w.message)]
