"""``lowdose classify``: the probabilities CSV, unreadable files, mismatched checkpoints."""

from __future__ import annotations

import csv
import io

import torch

from lowdose.cli.main import main
from lowdose.io.datasets import CLASSES
from lowdose.models.classifiers import ClassifierSpec, build_classifier, save_classifier

torch.set_num_threads(1)


def test_classify_folder_writes_one_row_per_image(tmp_path, capsys) -> None:
    from lowdose.io.phantom import write_phantom_dataset

    torch.manual_seed(0)
    net = build_classifier("resnet18", ClassifierSpec(arch="resnet18", input_size=32,
                                                      slice_size=40))
    model = save_classifier(net, tmp_path / "clf.safetensors")
    data = tmp_path / "imgs"
    write_phantom_dataset(data, 6, size=48, seed=2)
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
