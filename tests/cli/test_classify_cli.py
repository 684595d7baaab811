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


def test_train_classifier_bare_resume_takes_the_runs_data_and_options(tmp_path, capsys) -> None:
    """`train classifier --out R --resume --epochs 2`: DATA, the model and the preset are the
    run's (OUT/command.json); before, DATA was required and the rest took their defaults."""
    import json

    from lowdose.io.phantom import write_phantom_dataset

    data = tmp_path / "data"
    write_phantom_dataset(data, 12, size=32, seed=0)
    out = tmp_path / "run"
    assert main(["train", "classifier", str(data), "-m", "resnet18", "--preset", "demo",
                 "--input-size", "32", "--out", str(out), "--device", "cpu", "--quiet",
                 "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(["train", "classifier", "--out", str(out), "--resume", "--epochs", "2",
                 "--quiet"]) == 0
    stdout, err = capsys.readouterr()
    assert "resuming with the run's options" in err and "--model resnet18" in err
    assert stdout.startswith("resnet18: best epoch")
    assert json.loads((out / "train_summary.json").read_text())["epochs_run"] == 2
    assert main(["train", "classifier", "--out", str(tmp_path / "new")]) == 2
    assert "DATA: give the class-folder dataset" in capsys.readouterr().err


def test_train_classifier_out_inside_the_data_is_refused(tmp_path, capsys) -> None:
    """--out data/train wrote checkpoints into the train split: the audit then failed on a
    class folder 'checkpoints'."""
    from lowdose.io.phantom import write_phantom_dataset

    data = tmp_path / "data"
    write_phantom_dataset(data, 12, size=32, seed=0)
    before = sorted(data.rglob("*"))
    assert main(["train", "classifier", str(data), "--out", str(data / "train"),
                 "--quiet"]) == 2
    assert "is inside the data folder" in capsys.readouterr().err
    assert sorted(data.rglob("*")) == before


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
    assert main([*base, "--patience", "0", "--resume"]) == 2
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


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_classify_model_errors_name_the_given_file_and_the_reason(tmp_path, capsys) -> None:
    """A truncated weight file, a cut spec, a pickle and a folder without a classifier are each
    one line naming the file at fault and why: no raw exception name, no file never given."""
    model, data = _untrained_model_and_phantoms(tmp_path, 1)
    spec = model.with_suffix(".json")
    cut_weights = tmp_path / "cut.safetensors"
    cut_weights.write_bytes(model.read_bytes()[:100_000])
    (tmp_path / "cut.json").write_text(spec.read_text())
    cut_spec = tmp_path / "cutspec.safetensors"
    cut_spec.write_bytes(model.read_bytes())
    (tmp_path / "cutspec.json").write_text(spec.read_text()[:120])
    pickle = tmp_path / "u.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, pickle)
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (cut_weights, str(cut_weights), "not a readable safetensors weight file"),
        (cut_spec, str(tmp_path / "cutspec.json"), "not valid JSON"),
        (tmp_path / "cutspec.json", str(tmp_path / "cutspec.json"), "not valid JSON"),
        (pickle, str(pickle), "a pickle file, refused"),
        (empty, str(empty), "no classifier.safetensors"),
        (tmp_path / "none.safetensors", str(tmp_path / "none.safetensors"), "no such"),
    ]
    for given, named, reason in cases:
        rc = main(["classify", str(data), "--model", str(given), "--quiet"])
        _, err = capsys.readouterr()
        line = _one_error_line(err)
        assert rc == 2 and line.startswith(f"error: {named}: "), (given, line)
        assert reason in line, (given, line)
        assert "Error:" not in line and "u.safetensors" not in line, line
    main(["classify", str(data), "--model", str(pickle), "--quiet"])
    _, err = capsys.readouterr()
    assert "arbitrary code" in err and "--trust-pickle" in err and "safetensors" in err


def test_a_classifier_run_and_its_checkpoints_classify_and_refuse_denoise(tmp_path,
                                                                          capsys) -> None:
    """``classify --model`` takes a run's checkpoint folder (``checkpoints/step-N``, its
    weight average) as it takes the run; ``denoise --model`` says the run is a classifier."""
    from lowdose.io.phantom import write_phantom_dataset

    data = tmp_path / "data"
    write_phantom_dataset(data, 12, size=32, seed=0)
    run = tmp_path / "run"
    rc = main(["train", "classifier", str(data), "-m", "resnet18", "--preset", "demo",
               "--input-size", "32", "--epochs", "1", "--out", str(run), "--device", "cpu",
               "--quiet"])
    _, err = capsys.readouterr()
    assert rc == 0, err
    step = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    assert (step / "model.safetensors").is_file() and (step / "config.json").is_file()
    assert not list(step.glob("classifier*"))
    tables = {}
    for given in (run, run / "classifier.safetensors", step, run / "checkpoints"):
        rc = main(["classify", str(data), "--model", str(given), "--quiet"])
        stdout, err = capsys.readouterr()
        assert rc == 0, (given, err)
        tables[given] = stdout
    # One epoch: the checkpoint's weight average is the run's best (and only) epoch.
    n_images = len(list(data.rglob("*.png")))
    assert len(set(tables.values())) == 1 and tables[run].count("\n") == 1 + n_images
    for given in (run, run / "classifier.safetensors", step):
        rc = main(["denoise", str(next(data.rglob("*.png"))), str(tmp_path / "out.png"),
                   "--model", str(given)])
        _, err = capsys.readouterr()
        line = _one_error_line(err)
        assert rc == 2 and "a classifier checkpoint, not a denoiser" in line, line
        assert "lowdose classify --model" in line


def test_train_classifier_refuses_a_bad_input_size_before_reading_data(tmp_path,
                                                                        capsys) -> None:
    """--input-size 0 or below is one clear error before any image is read or written."""
    from lowdose.errors import LowdoseError
    from lowdose.io.phantom import write_phantom_dataset
    from lowdose.training.classifier import preset

    data = tmp_path / "data"
    write_phantom_dataset(data, 4, size=32, seed=0)
    for size in ("0", "-5"):
        out = tmp_path / f"run{size}"
        rc = main(["train", "classifier", str(data), "-m", "resnet18", "--epochs", "1",
                   "--input-size", size, "--out", str(out), "--device", "cpu", "--quiet"])
        _, err = capsys.readouterr()
        line = _one_error_line(err)
        assert rc == 2 and f"input_size {size} (--input-size): use a whole number" in line, line
        assert not out.exists()  # no config, no data cache
    for bad in ({"slice_size": 0}, {"input_size": 1.5}):
        try:
            preset("demo", **bad)
        except LowdoseError as exc:
            assert str(next(iter(bad))) in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")


def test_classify_a_volume_gives_one_row_per_slice(tmp_path, capsys) -> None:
    """A NIfTI volume is classified slice by slice, rows named FILE[k], with the probabilities
    each slice gets on its own."""
    import numpy as np

    from lowdose.image import CTImage
    from lowdose.io.phantom import phantom_slice
    from lowdose.io.read import write_ct

    model, _ = _untrained_model_and_phantoms(tmp_path, 1)
    stack = np.stack([phantom_slice(label, 48, seed=k)
                      for k, label in enumerate(("normal", "adenocarcinoma", "normal"))])
    volume = write_ct(CTImage(stack, spacing=(2.0, 0.7, 0.7)), tmp_path / "vol" / "v.nii.gz")
    for k, hu in enumerate(stack):
        write_ct(CTImage(hu, spacing=(0.7, 0.7)), tmp_path / "slices" / f"s{k}.npy")
    out = tmp_path / "probs.csv"
    rc = main(["classify", str(volume), "--model", str(model), "--out", str(out), "--quiet"])
    _, err = capsys.readouterr()
    assert rc == 0 and "3 slice(s) classified" in err and "unreadable" not in err, err
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows] == [f"{volume}[{k}]" for k in range(3)]
    assert all(not r["error"] and r["predicted"] in CLASSES for r in rows)
    rc = main(["classify", str(tmp_path / "slices"), "--model", str(model), "--quiet"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    alone = list(csv.DictReader(io.StringIO(stdout)))
    for row, single in zip(rows, alone, strict=True):
        for c in CLASSES:
            assert abs(float(row[f"p_{c}"]) - float(single[f"p_{c}"])) < 1e-5
