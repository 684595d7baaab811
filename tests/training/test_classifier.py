"""The classifier family: slice preparation, augmentation, and a short training on phantoms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowdose.errors import LowdoseError
from lowdose.training.classifier import (
    ClassifierFamily,
    augment_hu,
    check_split_labels,
    class_weights,
    prepare_slice,
    preset,
    train_classifier,
)

torch.set_num_threads(1)


def test_prepare_slice_crops_body_and_squares() -> None:
    hu = np.full((100, 160), -1350.0, np.float32)  # wide export, body off-centre
    hu[30:70, 20:100] = 40.0
    out = prepare_slice(hu, 64)
    assert out.shape == (64, 64)
    # The 40 x 80 body fills the width after cropping (margin 4%): most columns are body.
    assert (out[32] > -500).mean() > 0.8
    # Without the crop the body keeps its place in a padded square.
    assert (prepare_slice(hu, 64, crop_body=False)[32] > -500).mean() < 0.6


def test_augmentation_is_seeded_and_keeps_hu_range() -> None:
    cfg = preset("demo")
    hu = torch.full((4, 1, 32, 32), -1000.0)
    hu[:, :, 8:24, 8:24] = 40.0
    a = augment_hu(hu, cfg, torch.Generator().manual_seed(3))
    b = augment_hu(hu, cfg, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert a.shape == hu.shape
    assert float(a.min()) >= cfg.window[0] - 1e-3 and float(a.max()) <= cfg.window[1] + 1e-3


def test_class_weights_and_missing_classes() -> None:
    w = class_weights(np.array([0, 0, 0, 1]), 3)
    np.testing.assert_allclose(w.numpy(), [4 / 3 / 2, 4 / 1 / 2, 0.0])
    with pytest.raises(LowdoseError, match="train split"):
        check_split_labels(np.array([0, 1]), ["a", "b", "c"], "train")
    assert check_split_labels(np.array([0, 1]), ["a", "b", "c"], "test") == [
        "test split has no images of class c"]


def test_family_learning_rate_schedule() -> None:
    from lowdose.models.classifiers import build_classifier

    cfg = preset("demo", arch="resnet18", input_size=16, epochs=10, lr=1e-3, warmup_epochs=1)
    fam = ClassifierFamily(build_classifier("resnet18", cfg.spec()), cfg, steps_per_epoch=10)
    assert fam.lr_factor("classifier", 0) == pytest.approx(0.1)
    assert fam.lr_factor("classifier", 9) == pytest.approx(1.0)
    assert fam.lr_factor("classifier", 99) == pytest.approx(0.01, rel=0.05)


def _two_class_phantoms(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from lowdose.io.phantom import phantom_batch

    hu, names = phantom_batch(n * 3, 64, seed)
    keep = [i for i, c in enumerate(names) if c in ("normal", "large.cell.carcinoma")][:n]
    return hu[keep], np.array([0 if names[i] == "normal" else 1 for i in keep])


def test_short_training_beats_chance_on_phantoms(tmp_path) -> None:
    """Normal vs large-cell carcinoma (a bulky mass) at 64 px: chance is 0.5."""
    hu, y = _two_class_phantoms(96, seed=1)
    vh, vy = _two_class_phantoms(32, seed=2)
    th, ty = _two_class_phantoms(48, seed=3)
    cfg = preset("demo", arch="resnet18", input_size=64, slice_size=64, epochs=10, lr=2e-3,
                 crop_body=False, classes=["normal", "large.cell.carcinoma"], rotate_deg=0,
                 scale=(1.0, 1.0), shift=0.0, flip=False, gamma=(1.0, 1.0), gain=(1.0, 1.0))
    model, summary = train_classifier(hu, y, vh, vy, cfg, tmp_path / "run", progress=False)
    probs = model.predict_proba(torch.from_numpy(th)[:, None]).numpy()
    acc = float((probs.argmax(1) == ty).mean())
    assert acc >= 0.65, (acc, summary["history"])
    assert (tmp_path / "run" / "classifier.safetensors").is_file()
    assert summary["best_epoch"] == max(summary["history"], key=lambda h: (
        h["balanced_accuracy"], -h["loss"]))["epoch"]
    # A finished run is returned as it is on resume; a fresh run into the same folder is refused.
    again, _ = train_classifier(hu, y, vh, vy, cfg, tmp_path / "run", resume=True,
                                progress=False)
    torch.testing.assert_close(again.predict_proba(torch.from_numpy(th)[:, None]),
                               torch.from_numpy(probs))
    with pytest.raises(LowdoseError, match="resume"):
        train_classifier(hu, y, vh, vy, cfg, tmp_path / "run", progress=False)


def test_early_stopping_through_the_trainer_hook(tmp_path) -> None:
    """lr 0 (only batch-norm statistics move): patience 1 stops one epoch after the best."""
    from lowdose.training.trainer import latest_checkpoint

    hu, y = _two_class_phantoms(16, seed=1)
    cfg = preset("demo", arch="resnet18", input_size=32, slice_size=64, epochs=6, lr=0.0,
                 patience=1, batch_size=8, crop_body=False,
                 classes=["normal", "large.cell.carcinoma"])
    _, summary = train_classifier(hu, y, hu, y, cfg, tmp_path / "run", progress=False)
    ran = summary["epochs_run"]
    assert ran < 6 and ran == summary["best_epoch"] + 1
    assert summary["early_stop"] == "no better validation score for 1 epochs"
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt is not None and ckpt.name == f"step-{2 * ran:08d}"  # 2 steps per epoch
    (tmp_path / "run" / "classifier.safetensors").unlink()  # as if killed before the export
    _, again = train_classifier(hu, y, hu, y, cfg, tmp_path / "run", resume=True, progress=False)
    assert again["epochs_run"] == ran and again["early_stop"] == summary["early_stop"]


def test_equalize_intensity_ignores_monotonic_grey_changes() -> None:
    """Histogram equalisation: a gamma change of the displayed grey levels gives the same input."""
    from lowdose.models.classifiers import ClassifierSpec, build_classifier

    net = build_classifier("resnet18", ClassifierSpec(arch="resnet18", input_size=32,
                                                     intensity="equalize"))
    g = torch.Generator().manual_seed(0)
    u = torch.rand(2, 1, 32, 32, generator=g)
    lo, hi = net.spec.window
    a = net.preprocess(lo + u * (hi - lo))
    b = net.preprocess(lo + u ** 1.7 * (hi - lo))
    torch.testing.assert_close(a, b)
    assert a.mean().abs() < 0.05  # ranks are uniform: mean 0.5 before standardising


def test_weight_average_is_what_is_validated_saved_and_resumed(tmp_path) -> None:
    """With ema_decay the selected weights are the average, not the last raw weights."""
    from lowdose.models.classifiers import load_classifier
    from lowdose.training.trainer import latest_checkpoint

    hu, y = _two_class_phantoms(16, seed=1)
    cfg = preset("demo", arch="resnet18", input_size=32, slice_size=64, epochs=1, lr=1e-2,
                 batch_size=8, crop_body=False, ema_decay=0.5,
                 classes=["normal", "large.cell.carcinoma"])
    model, _ = train_classifier(hu, y, hu, y, cfg, tmp_path / "run", progress=False)
    from safetensors.torch import load_file

    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt is not None
    state = load_file(str(ckpt / "model.safetensors"))  # the average travels with checkpoints
    key = "backbone.fc.weight"
    raw, avg = state[f"classifier.{key}"], state[f"classifier_ema.module.{key}"]
    assert not torch.allclose(raw, avg)
    best = load_classifier(tmp_path / "run" / "best.safetensors")
    torch.testing.assert_close(best.state_dict(), model.state_dict())
    torch.testing.assert_close(model.state_dict()[key], avg)  # one epoch: it is selected
    fam = ClassifierFamily(model, cfg, steps_per_epoch=2)
    assert fam.evaluated is not model and "classifier_ema" in fam.modules
    for bad in (1.0, -0.5):
        with pytest.raises(LowdoseError, match="ema_decay"):
            preset("demo", ema_decay=bad)


def test_ema_update_moves_the_average_toward_the_trained_weights() -> None:
    from lowdose.models.classifiers import build_classifier

    cfg = preset("demo", arch="resnet18", input_size=16, ema_decay=0.9)
    net = build_classifier("resnet18", cfg.spec())
    fam = ClassifierFamily(net, cfg, steps_per_epoch=1)
    before = fam.evaluated.backbone.fc.weight.clone()
    with torch.no_grad():
        net.backbone.fc.weight.add_(1.0)
    fam.on_step_end(0)
    moved = (fam.evaluated.backbone.fc.weight - before).mean().item()
    assert 0.0 < moved < 1.0  # part of the way, not all of it


def test_resume_refuses_changed_input_or_data_even_for_a_finished_run(tmp_path) -> None:
    """A resume at another input size or on other images is refused, naming both values."""
    hu, y = _two_class_phantoms(8, seed=1)
    cfg = preset("demo", arch="resnet18", input_size=32, slice_size=32, epochs=1,
                 classes=["normal", "large.cell.carcinoma"], crop_body=False)
    source = {"data": "set-a", "manifest": None}
    train_classifier(hu, y, hu, y, cfg, tmp_path / "run", progress=False, source=source)
    bigger = preset("demo", arch="resnet18", input_size=48, slice_size=32, epochs=2,
                    classes=["normal", "large.cell.carcinoma"], crop_body=False)
    with pytest.raises(LowdoseError, match=r"--input-size 48, but the run was trained with "
                       r"--input-size 32;.*start a new --out"):
        train_classifier(hu, y, hu, y, bigger, tmp_path / "run", resume=True, progress=False,
                         source=source)
    with pytest.raises(LowdoseError, match="DATA set-b, but the run was trained with DATA set-a"):
        train_classifier(hu, y, hu, y, cfg, tmp_path / "run", resume=True, progress=False,
                         source={"data": "set-b", "manifest": None})
    with pytest.raises(LowdoseError, match=r"^--device gpu: not a device"):
        train_classifier(hu, y, hu, y, cfg, tmp_path / "other", device="gpu", progress=False)
    # The same settings with more epochs resume (the run length may change).
    longer = preset("demo", arch="resnet18", input_size=32, slice_size=32, epochs=2,
                    classes=["normal", "large.cell.carcinoma"], crop_body=False)
    (tmp_path / "run" / "classifier.safetensors").unlink()  # unfinished: trains on
    _, summary = train_classifier(hu, y, hu, y, longer, tmp_path / "run", resume=True,
                                  progress=False, source=source)
    assert summary["epochs_run"] == 2



def test_resume_of_a_finished_run_trains_on_to_more_epochs(tmp_path) -> None:
    """A finished run resumed with a larger --epochs trains on, on the longer run's schedule;
    resumed with the same --epochs it is returned as it is, with a note saying so."""
    import csv
    import json
    from dataclasses import replace

    from lowdose.models.classifiers import build_classifier
    from lowdose.training.classifier import finished_classifier_run
    from lowdose.training.trainer import latest_checkpoint

    hu, y = _two_class_phantoms(8, seed=1)
    cfg = preset("demo", arch="resnet18", input_size=32, slice_size=32, epochs=1, batch_size=8,
                 crop_body=False, classes=["normal", "large.cell.carcinoma"])
    run = tmp_path / "run"
    _, first = train_classifier(hu, y, hu, y, cfg, run, progress=False)
    assert first["epochs_run"] == 1
    note = finished_classifier_run(run, cfg)
    assert note is not None and "already finished (1 epochs run, --epochs 1" in note
    assert "\n" not in note

    longer = replace(cfg, epochs=3)
    assert finished_classifier_run(run, longer) is None
    _, summary = train_classifier(hu, y, hu, y, longer, run, resume=True, progress=False)
    assert summary["epochs_run"] == 3
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]
    assert summary["history"][0] == first["history"][0]  # the first epoch is kept, not redone
    assert json.loads((run / "train_summary.json").read_text())["epochs_run"] == 3
    ckpt = latest_checkpoint(run)
    assert ckpt is not None and ckpt.name == "step-00000003"  # one step per epoch
    # The resumed steps follow the 3-epoch warm-up + cosine curve (as a longer --steps does
    # for the denoisers), not the finished 1-epoch curve's floor.
    fam = ClassifierFamily(build_classifier("resnet18", longer.spec()), longer, 1)
    with (run / "metrics.csv").open() as fh:
        lrs = {int(r["step"]): float(r["value"]) for r in csv.DictReader(fh)
               if r["split"] == "train" and r["name"].startswith("lr")}
    for step in (2, 3):  # logged after optimiser steps 1 and 2
        assert lrs[step] == pytest.approx(longer.lr * fam.lr_factor("classifier", step - 1),
                                          rel=1e-4)

    # The same --epochs again: finished, returned as it is, nothing trained or rewritten.
    stamp = (run / "classifier.safetensors").stat().st_mtime_ns
    _, again = train_classifier(hu, y, hu, y, longer, run, resume=True, progress=False)
    assert again == json.loads(json.dumps(summary, default=str))  # the saved summary
    assert (run / "classifier.safetensors").stat().st_mtime_ns == stamp
    assert "already finished (3 epochs run" in (finished_classifier_run(run, longer) or "")


def test_finished_run_note_follows_epochs_and_patience(tmp_path) -> None:
    """Whether a finished run trains on: more epochs do, unless its early stop still holds
    under the (possibly larger) patience; with nothing to continue from it is refused."""
    import json

    from lowdose.training.classifier import finished_classifier_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "classifier.safetensors").write_bytes(b"")
    (run / "train_summary.json").write_text(json.dumps({
        "epochs_run": 5, "best_epoch": 2, "best_score": 0.75,
        "early_stop": "no better validation score for 3 epochs", "weights": "w.safetensors"}))
    stopped = finished_classifier_run(run, preset("demo", epochs=20, patience=3))
    assert stopped is not None and "stopped early: no better validation score" in stopped
    assert stopped.endswith("best epoch 2 (valid balanced accuracy 0.750); weights "
                            f"{run / 'classifier.safetensors'}")
    assert "already finished (5 epochs run" in (
        finished_classifier_run(run, preset("demo", epochs=5, patience=9)) or "")
    # A larger patience lifts the stop: it would train on, but there is no checkpoint.
    with pytest.raises(LowdoseError, match="no checkpoint to continue to 20"):
        finished_classifier_run(run, preset("demo", epochs=20, patience=9))
    assert finished_classifier_run(tmp_path / "none", preset("demo")) is None
