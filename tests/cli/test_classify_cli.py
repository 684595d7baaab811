"""``lowdose classify``: the probabilities CSV, unreadable files, mismatched checkpoints."""

from __future__ import annotations

import csv
import io
from typing import Any

import torch

from lowdose.cli.main import main
from lowdose.io.datasets import CLASSES
from lowdose.models.classifiers import ClassifierSpec, build_classifier, save_classifier

torch.set_num_threads(1)


def _untrained_model_and_phantoms(tmp_path, n: int):
    """An untrained ResNet-18 weight file and ``n`` phantom images per class and split."""
    from lowdose.io.phantom import write_phantom_dataset

    torch.manual_seed(0)
    net = build_classifier("resnet18", ClassifierSpec(arch="resnet18", input_size=32,
                                                      slice_size=40))
    model = save_classifier(net, tmp_path / "clf.safetensors")
    write_phantom_dataset(tmp_path / "imgs", n, size=48, seed=2)
    return model, tmp_path / "imgs"


def test_classify_folder_writes_one_row_per_image(tmp_path, capsys) -> None:
    model, data = _untrained_model_and_phantoms(tmp_path, 6)
    (data / "broken.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "probs.csv"
    rc = main(["classify", str(data), "--model", str(model), "--out", str(out), "--quiet"])
    _, err = capsys.readouterr()
    assert rc == 0, err
    assert "1 unreadable" in err
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "predicted", *[f"p_{c}" for c in CLASSES], "error"]
    assert len(rows) == 7
    good = [r for r in rows if not r["error"]]
    assert len(good) == 6
    for r in good:
        probs = [float(r[f"p_{c}"]) for c in CLASSES]
        assert abs(sum(probs) - 1) < 1e-4
        assert r["predicted"] == CLASSES[probs.index(max(probs))]
    bad = next(r for r in rows if r["error"])
    assert bad["path"].endswith("broken.png") and bad["p_normal"] == ""
    # A single file, CSV on stdout.
    one = next(p for p in data.rglob("*.png") if p.name != "broken.png")
    rc = main(["classify", str(one), "--model", str(model), "--quiet"])
    stdout, _ = capsys.readouterr()
    table = list(csv.reader(io.StringIO(stdout)))
    assert rc == 0 and len(table) == 2 and table[1][0] == str(one)


def test_classify_bad_model_is_one_error_line(tmp_path, capsys) -> None:
    rc = main(["classify", str(tmp_path), "--model", str(tmp_path / "none.safetensors")])
    _, err = capsys.readouterr()
    assert rc != 0 and err.startswith("error: ") and "none.safetensors" in err


def test_classify_refuses_a_folder_or_non_csv_out_before_the_work(tmp_path, capsys,
                                                                   monkeypatch) -> None:
    """--out must be a .csv file path: a folder (or another suffix) is one error line before any
    image is classified; a missing parent folder is made."""
    import lowdose.evaluation.classify as api

    model, data = _untrained_model_and_phantoms(tmp_path, 4)
    real = api.classify_paths
    calls: list[str] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append("classify")
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "classify_paths", counted)
    folder = tmp_path / "existing"
    folder.mkdir()
    for out, needle in ((folder, "is a folder; --out must be a .csv file path"),
                        (tmp_path / "probs.txt", "must be a .csv file path")):
        rc = main(["classify", str(data), "--model", str(model), "--out", str(out), "--quiet"])
        _, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert rc != 0 and len(lines) == 1 and lines[0].startswith("error: --out "), err
        assert needle in lines[0] and "Traceback" not in err
    assert calls == [] and list(folder.iterdir()) == []  # refused before the work
    nested = tmp_path / "new" / "sub" / "probs.csv"
    rc = main(["classify", str(data), "--model", str(model), "--out", str(nested), "--quiet"])
    _, err = capsys.readouterr()
    assert rc == 0, err
    assert calls == ["classify"] and len(list(csv.DictReader(nested.open()))) == 4


def test_train_classifier_cli_resume_and_skipped_file_note(tmp_path, capsys) -> None:
    """A finished run resumed with the same --epochs says so in one line; with more it trains
    on. A skipped unreadable image is named once in the warning."""
    import json

    from lowdose.io.phantom import write_phantom_dataset

    data = tmp_path / "data"
    write_phantom_dataset(data, 12, size=32, seed=0)
    bad = data / "train" / "normal" / "corrupt.png"
    bad.write_bytes(b"\x89PNG broken")
    out = tmp_path / "run"
    base = ["train", "classifier", str(data), "-m", "resnet18", "--preset", "demo",
            "--input-size", "32", "--out", str(out), "--device", "cpu", "--quiet"]
    rc = main([*base, "--epochs", "1"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    note = next(line for line in err.splitlines() if "could not be read" in line)
    assert note.count(str(bad)) == 1, note
    rc = main([*base, "--epochs", "1", "--resume"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    assert stdout.count("\n") == 1 and "already finished (1 epochs run, --epochs 1" in stdout
    rc = main([*base, "--epochs", "2", "--resume"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    assert "already finished" not in stdout and "best epoch" in stdout
    assert json.loads((out / "train_summary.json").read_text())["epochs_run"] == 2


def test_train_classifier_cli_patience_continues_an_early_stop(tmp_path, capsys) -> None:
    """A run that stopped early is finished for --resume at its patience; a larger --patience
    trains on. A patience below 1 is one clear error."""
    import json

    from lowdose.io.phantom import write_phantom_dataset

    data = tmp_path / "data"
    write_phantom_dataset(data, 12, size=32, seed=0)
    out = tmp_path / "run"
    base = ["train", "classifier", str(data), "-m", "resnet18", "--preset", "demo",
            "--input-size", "32", "--out", str(out), "--device", "cpu", "--quiet"]
    assert main([*base, "--epochs", "1", "--patience", "1"]) == 0
    capsys.readouterr()
    summary_path = out / "train_summary.json"
    summary = json.loads(summary_path.read_text())
    # As if the first epoch had been followed by one without a better score.
    summary.update(best_epoch=0, epochs_run=1, early_stop="no better validation score for 1 "
                   "epochs")
    summary_path.write_text(json.dumps(summary))
    assert main([*base, "--epochs", "3", "--patience", "1", "--resume"]) == 0
    stdout, _ = capsys.readouterr()
    assert "stopped early" in stdout and "a larger --patience trains on" in stdout
    assert main([*base, "--epochs", "2", "--patience", "4", "--resume"]) == 0
    stdout, err = capsys.readouterr()
    assert "already finished" not in stdout and "best epoch" in stdout, err
    assert json.loads(summary_path.read_text())["epochs_run"] == 2
    assert main([*base, "--patience", "0"]) == 2
    _, err = capsys.readouterr()
    assert "patience 0: use 1 or more" in err


def test_dataset_helps_name_the_accepted_class_folders(capsys) -> None:
    """The commands reading a class-folder dataset name the classes they accept, and that
    staging suffixes are stripped, in their help (not only in an error)."""
    for argv in (["train", "classifier"], ["study"], ["data", "audit"]):
        rc = main([*argv, "--help"])
        out, _ = capsys.readouterr()
        text = " ".join(out.replace("│", " ").split())
        assert rc == 0
        for name in CLASSES:
            assert name in text, (argv, name)
        assert "_left.lower.lobe_T2_N0_M0_Ib is stripped" in text, argv
