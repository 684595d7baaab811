"""``lowdose study`` and ``lowdose train classifier`` through the CLI entry point."""

from __future__ import annotations

import json

import pytest
import torch

from lowdose.cli.main import main
from lowdose.models.classifiers import ClassifierSpec, build_classifier, save_classifier

torch.set_num_threads(1)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture()
def tiny_config(tmp_path):
    torch.manual_seed(0)
    net = build_classifier("resnet18", ClassifierSpec(arch="resnet18", input_size=32))
    clf = save_classifier(net, tmp_path / "clf.safetensors")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "phantom: {n_train: 4, n_valid: 4, n_test: 8, size: 48}\n"
        "slice_size: 48\nn_boot: 20\nchunk: 4\ngrid_slices: 2\n"
        f"classifier: {clf}\n")
    return cfg


def test_study_cli_writes_results_and_report(tmp_path, capsys, tiny_config) -> None:
    out = tmp_path / "study"
    rc, stdout, err = run(["study", "--config", str(tiny_config), "--out", str(out),
                           "--doses", "0.5,0.25", "--methods", "image-poisson",
                           "--denoisers", "tv", "--quiet"], capsys)
    assert rc == 0, err
    results = json.loads((out / "results.json").read_text())
    assert {(c["dose"], c["denoiser"]) for c in results["cells"]} == {
        (0.5, "none"), (0.5, "tv"), (0.25, "none"), (0.25, "tv")}
    assert (out / "report.html").stat().st_size > 10_000
    assert "full dose: accuracy" in stdout and "results.json" in stdout


def test_study_cli_extra_classifier_files(tmp_path, capsys, tiny_config) -> None:
    torch.manual_seed(1)
    net = build_classifier("resnet18", ClassifierSpec(arch="resnet18", input_size=32))
    other = save_classifier(net, tmp_path / "other.safetensors")
    out = tmp_path / "study"
    rc, stdout, err = run(["study", "--config", str(tiny_config), "--out", str(out),
                           "--doses", "0.25", "--methods", "image-poisson", "--denoisers", "tv",
                           "--extra-classifiers", str(other), "--quiet"], capsys)
    assert rc == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["extra_classifiers"] == [str(other)]
    assert [e["label"] for e in results["extra_classifiers"]] == ["other.safetensors"]
    assert all(c["across_classifiers"]["n_classifiers"] == 2 for c in results["cells"])
    assert "full dose, classifier other.safetensors: accuracy" in stdout


@pytest.mark.parametrize(("args", "needle"), [
    (["--extra-classifiers", "1,1"], "repeated"),
    (["--doses", "0,0.5"], "must lie in (0, 1]"),
    (["--methods", "no-such-method"], "unknown simulator 'no-such-method'"),
    (["--config", "missing.yaml"], "missing.yaml: no such config file"),
])
def test_study_cli_bad_input_is_one_error_line(tmp_path, capsys, tiny_config, args, needle
                                               ) -> None:
    argv = ["study", "--config", str(tiny_config), "--out", str(tmp_path / "o"), "--quiet",
            *args]
    rc, out, err = run(argv, capsys)
    assert rc != 0
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and needle in lines[-1], err
    assert "Traceback" not in err
    assert "accuracy" not in out  # refused before the classifier trained (--methods was not)


def test_train_classifier_cli_refuses_unknown_class_folder(tmp_path, capsys) -> None:
    from lowdose.io.phantom import write_phantom_dataset

    root = tmp_path / "data"
    write_phantom_dataset(root, 8, size=32, seed=0)
    (root / "train" / "mesothelioma").mkdir()
    rc, _, err = run(["train", "classifier", str(root), "--out", str(tmp_path / "run"),
                      "--quiet"], capsys)
    assert rc != 0 and "mesothelioma" in err and "not a known class" in err


def test_train_classifier_help_has_an_example(capsys) -> None:
    rc, out, _ = run(["train", "classifier", "--help"], capsys)
    assert rc == 0 and "Example: lowdose train classifier" in out


@pytest.mark.parametrize(("extra", "needle"), [
    (["--intensity", "sharpen"], "intensity 'sharpen'"),
    (["--window", "-1024"], "--window '-1024'"),
])
def test_train_classifier_cli_bad_intensity_or_window_is_one_error_line(
        tmp_path, capsys, extra, needle) -> None:
    (tmp_path / "data").mkdir()
    rc, _, err = run(["train", "classifier", str(tmp_path / "data"), "--out",
                      str(tmp_path / "run"), "--quiet", *extra], capsys)
    lines = err.strip().splitlines()
    assert rc != 0 and lines[-1].startswith("error: ") and needle in lines[-1], err
