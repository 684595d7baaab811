"""The study end to end on a tiny phantom set, its cache, resume and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lowdose.errors import LowdoseError
from lowdose.evaluation.study import StudyConfig, run_study
from lowdose.models.base import Denoiser
from lowdose.models.classifiers import ClassifierSpec, build_classifier, save_classifier
from lowdose.physics.base import simulators

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory) -> str:
    """An untrained ResNet-18 at 32 px: the study's plumbing, not its accuracy, is under test."""
    torch.manual_seed(0)
    net = build_classifier("resnet18", ClassifierSpec(arch="resnet18", input_size=32))
    return str(save_classifier(net, tmp_path_factory.mktemp("clf") / "clf.safetensors"))


def _cfg(out, classifier_file: str, **kw) -> StudyConfig:
    base = {"out": str(out), "doses": [1.0, 0.25], "denoisers": ["tv"],
            "classifier": classifier_file, "slice_size": 48,
            "phantom": {"n_train": 4, "n_valid": 4, "n_test": 10, "size": 48},
            "n_boot": 50, "chunk": 4, "grid_slices": 3, "methods": ["image-poisson"]}
    base.update(kw)
    return StudyConfig.from_dict(base)


def test_study_end_to_end_every_cell(tmp_path, classifier_file) -> None:
    # Every registered method (the default) with TV: results.json and report.html hold every
    # dose x method x denoiser cell.
    methods = simulators.names()
    cfg = _cfg(tmp_path / "out", classifier_file, methods=None)
    results = run_study(cfg, progress=False, log=None)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["methods"] == methods
    cells = {(c["method"], c["dose"], c["denoiser"]) for c in saved["cells"]}
    assert cells == {(m, d, n) for m in methods for d in (1.0, 0.25) for n in ("none", "tv")}
    for c in saved["cells"]:
        assert 0.0 <= c["accuracy"]["value"] <= 1.0 and len(c["accuracy"]["ci95"]) == 2
        for key in ("ssim_full", "ssim_window", "rmse_hu"):
            assert np.isfinite(c["image"][key])
        for key in ("psnr_full", "psnr_window"):  # null only for an unchanged image
            value = c["image"][key]
            assert (value is None and c["image"]["rmse_hu"] == 0) or np.isfinite(value)
        assert sum(map(sum, c["task"]["confusion_matrix"])) == 10
        # The paired count against full dose explains the change of accuracy exactly.
        paired = c["paired_vs_full_dose"]
        change = c["accuracy"]["value"] - saved["full_dose"]["accuracy"]["value"]
        assert (paired["gained"] - paired["lost"]) / paired["n"] == pytest.approx(change)
        assert 0.0 < paired["p_value"] <= 1.0
    assert "paired_vs_full_dose" not in saved["full_dose"]
    # A restored cell's count against its raw low dose explains their difference of accuracy.
    raw = {(c["method"], c["dose"]): c for c in saved["cells"] if c["denoiser"] == "none"}
    for c in saved["cells"]:
        if c["denoiser"] == "none":
            assert "paired_vs_raw" not in c
            continue
        vs_raw = c["paired_vs_raw"]
        change = c["accuracy"]["value"] - raw[(c["method"], c["dose"])]["accuracy"]["value"]
        assert (vs_raw["gained"] - vs_raw["lost"]) / vs_raw["n"] == pytest.approx(change)
    # Lower dose, noisier image; TV restores part of it.
    by = {(c["method"], c["dose"], c["denoiser"]): c["image"] for c in saved["cells"]}
    m = methods[0]
    assert by[(m, 0.25, "none")]["rmse_hu"] > by[(m, 1.0, "none")]["rmse_hu"]
    assert by[(m, 0.25, "tv")]["psnr_window"] > by[(m, 0.25, "none")]["psnr_window"]
    assert saved["data"]["png_window_hu"] == [-1350.0, 150.0]
    assert saved["read_failures"]["count"] == 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4
    for m in methods:
        assert f"Simulation {m}, display window" in html
    assert "display window lung [-1350, 150] HU" in html
    assert results["full_dose"]["task"]["n"] == 10


class _CountingTV(Denoiser):
    """TV that counts its calls and can fail after a number of them (an interrupted run)."""

    calls = 0
    fail_after: int | None = None

    def denoise(self, hu: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        if self.fail_after is not None and type(self).calls > self.fail_after:
            raise KeyboardInterrupt
        from lowdose.models.loading import load_denoiser

        return load_denoiser("tv").denoise(hu)


def test_interrupted_study_resumes_from_cache(tmp_path, classifier_file, monkeypatch) -> None:
    import lowdose.evaluation.study as study

    def fake_list(cfg):
        return [("tv", _CountingTV())], []

    monkeypatch.setattr(study, "_denoiser_list", fake_list)
    cfg = _cfg(tmp_path / "out", classifier_file)
    _CountingTV.calls, _CountingTV.fail_after = 0, 4  # 10 slices / chunk 4 = 3 calls per cell
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, progress=False, log=None)
    assert not (tmp_path / "out" / "results.json").exists()
    _CountingTV.calls, _CountingTV.fail_after = 0, None
    resumed = run_study(cfg, progress=False, log=None)
    # 2 cells x 3 chunks = 6 calls in all; 4 were done before the interrupt.
    assert _CountingTV.calls == 2
    _CountingTV.calls = 0
    fresh = run_study(_cfg(tmp_path / "fresh", classifier_file), progress=False, log=None)
    assert _CountingTV.calls == 6
    strip = lambda r: [(c["method"], c["dose"], c["denoiser"], c["accuracy"], c["image"])  # noqa: E731
                       for c in r["cells"]]
    assert strip(resumed) == strip(fresh)  # resumed = uninterrupted, to the last digit
    _CountingTV.calls = 0
    run_study(cfg, progress=False, log=None)  # all cached: no denoising at all
    assert _CountingTV.calls == 0


def test_unloadable_denoiser_is_skipped_and_reported(tmp_path, classifier_file, monkeypatch
                                                     ) -> None:
    import lowdose.models.loading as loading

    real = loading.load_denoiser

    def load(name, device=None, trust_pickle=False):
        if name == "broken":
            raise LowdoseError("broken.safetensors: shipped weights are missing")
        return real(name, device=device)

    monkeypatch.setattr(loading, "load_denoiser", load)
    cfg = _cfg(tmp_path / "out", classifier_file, denoisers=["broken", "tv"], doses=[0.5])
    results = run_study(cfg, progress=False, log=None)
    assert results["denoisers"]["used"] == ["none", "tv"]
    assert results["denoisers"]["skipped"][0]["name"] == "broken"
    assert "broken" in (tmp_path / "out" / "report.html").read_text()


def test_a_denoiser_named_with_settings_is_a_row_of_its_own(tmp_path, classifier_file) -> None:
    cfg = _cfg(tmp_path / "out", classifier_file, doses=[0.25],
               denoisers=["tv", "tv:weight_hu=60"])
    run_study(cfg, progress=False, log=None)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    psnr = {c["denoiser"]: c["image"]["psnr_full"] for c in saved["cells"]}
    assert set(psnr) == {"none", "tv", "tv:weight_hu=60"}
    assert psnr["tv:weight_hu=60"] < psnr["tv"] - 1  # 60 HU over-smooths this phantom
    fingerprints = saved["denoisers"]["fingerprints"]
    assert fingerprints["tv"] != fingerprints["tv:weight_hu=60"]


def test_bad_config_and_classifier_with_other_classes(tmp_path) -> None:
    with pytest.raises(LowdoseError, match="unknown keys"):
        StudyConfig.from_dict({"dosez": [1]})
    with pytest.raises(LowdoseError, match="dose"):
        StudyConfig.from_dict({"doses": [0.0]})
    net = build_classifier("resnet18", ClassifierSpec(arch="resnet18", input_size=32,
                                                      classes=["a", "b"]))
    path = save_classifier(net, tmp_path / "two.safetensors")
    with pytest.raises(LowdoseError, match="2 classes"):
        run_study(_cfg(tmp_path / "o", str(path)), progress=False, log=None)


def test_precision_reaches_the_learned_denoisers_only(monkeypatch) -> None:
    import lowdose.device
    from lowdose.evaluation import study

    with pytest.raises(LowdoseError, match="precision"):
        StudyConfig.from_dict({"precision": "fp16"})
    cfg = StudyConfig.from_dict({"precision": "bf16", "denoisers": ["tv", "unet"],
                                 "device": "cpu"})
    monkeypatch.setattr(lowdose.device, "cpu_has_bf16", lambda: False)
    with pytest.raises(LowdoseError, match="no native bf16"):
        study._denoiser_list(cfg)  # refused before any cell runs
    monkeypatch.setattr(lowdose.device, "cpu_has_bf16", lambda: True)
    loaded, skipped = study._denoiser_list(cfg)
    assert not skipped and [n for n, _ in loaded] == ["tv", "unet"]
    assert not hasattr(loaded[0][1], "precision") and loaded[1][1].precision == "bf16"
    fp32 = study._denoiser_list(StudyConfig.from_dict({"denoisers": ["unet"]}))[0][0][1]
    assert study.denoiser_fingerprint(fp32) != study.denoiser_fingerprint(loaded[1][1])


def test_folder_data_with_unreadable_image(tmp_path, classifier_file) -> None:
    """PNG class folders (mapped to HU through the lung window); a broken file is listed."""
    from lowdose.io.phantom import write_phantom_dataset

    root = tmp_path / "data"
    write_phantom_dataset(root, 24, size=48, seed=1)
    victim = sorted((root / "test").rglob("*.png"))[0]
    victim.write_bytes(b"not a png")
    cfg = _cfg(tmp_path / "out", classifier_file, data=str(root), doses=[0.5], denoisers=[])
    results = run_study(cfg, progress=False, log=None)
    assert results["read_failures"]["count"] == 1
    assert results["read_failures"]["files"][0]["path"].endswith(victim.name)
    assert "Images that failed to read: 1" in (tmp_path / "out" / "report.html").read_text()
    assert results["data"]["n"]["test"] == len(list((root / "test").rglob("*.png"))) - 1


def test_png_through_the_lung_window_is_clipped_at_hu_min(tmp_path, classifier_file) -> None:
    """Black in a lung-window PNG is -1350 HU: clipped at -1024 so the physics accepts it."""
    from PIL import Image

    for split in ("train", "valid", "test"):
        for k, label in enumerate(("adenocarcinoma", "large.cell.carcinoma", "normal",
                                   "squamous.cell.carcinoma")):
            folder = tmp_path / "data" / split / label
            folder.mkdir(parents=True)
            for i in range(2):
                img = np.zeros((64, 80), np.uint8)  # black surround (-1350 HU)
                img[12:52, 10:70] = 90 + 20 * k + i  # a grey "body"
                img[25:40, 20:35] = 30  # a dark "lung"
                Image.fromarray(img).save(folder / f"{i}.png")
    cfg = _cfg(tmp_path / "out", classifier_file, data=str(tmp_path / "data"), doses=[0.25],
               denoisers=[], methods=None)
    results = run_study(cfg, progress=False, log=None)
    assert len(results["cells"]) == len(simulators.names())
    assert "clipped at -1024 HU" in results["data"]["png_note"]


def test_cell_psnr_pools_the_squared_error_over_slices() -> None:
    """One slice identical to its reference must not make the cell's PSNR infinite."""
    from lowdose.evaluation.study import _cell_summary

    y = np.array([0, 1])
    probs = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1]])
    res = {"probs": probs, "m_rmse_window": np.array([0.0, 0.1]),
           "m_psnr_window": np.array([np.inf, 20.0]), "m_ssim_window": np.array([1.0, 0.8])}
    image = _cell_summary(y, res, n_boot=10, seed=0)["image"]
    assert image["psnr_window"] == pytest.approx(-10 * np.log10(0.005))  # 23.01 dB
    assert image["ssim_window"] == pytest.approx(0.9)
    same = {**res, "m_rmse_window": np.zeros(2), "m_psnr_window": np.full(2, np.inf)}
    assert _cell_summary(y, same, n_boot=10, seed=0)["image"]["psnr_window"] is None


def test_cached_cells_of_a_changed_denoiser_are_recomputed(tmp_path) -> None:
    """New weights (or settings) under the same denoiser name drop only that denoiser's cells."""
    from lowdose.evaluation.study import _forget_changed_denoisers, denoiser_fingerprint

    class Den:
        def __init__(self, strength: float) -> None:
            self.strength = strength
            self.net = torch.nn.Linear(2, 2)

    a, b = Den(1.0), Den(1.0)
    torch.nn.init.zeros_(b.net.weight)
    torch.nn.init.zeros_(a.net.weight)
    torch.nn.init.zeros_(a.net.bias)
    torch.nn.init.zeros_(b.net.bias)
    assert denoiser_fingerprint(a) == denoiser_fingerprint(b)
    names = ["image-poisson_0.25_gan-circle-abc123.npz", "projection_1_gan-circle-abc123.npz",
             "image-poisson_0.25_gan-circle-semi-abc123.npz", "image-poisson_0.25_none-abc123.npz"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    said: list[str] = []
    _forget_changed_denoisers(tmp_path, [("gan-circle", a), ("gan-circle-semi", b)], said.append)
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == sorted(names) and not said
    with torch.no_grad():
        a.net.weight.add_(0.5)  # new weights for gan-circle only
    _forget_changed_denoisers(tmp_path, [("gan-circle", a), ("gan-circle-semi", b)], said.append)
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == sorted(names[2:])
    assert said == ["denoiser gan-circle changed since its 2 cached cell(s): recomputing"]
    before = denoiser_fingerprint(b)
    b.tile_batch = 8  # how many tiles run at once: the same output, the same cells
    assert denoiser_fingerprint(b) == before
    b.strength = 2.0  # a setting counts too
    assert denoiser_fingerprint(b) != before
    before = denoiser_fingerprint(b)
    Den.revision = "2"  # new code that returns other output for the same settings
    assert denoiser_fingerprint(b) != before


def test_finished_study_needs_the_same_config_and_denoiser_weights(tmp_path, classifier_file,
                                                                   monkeypatch) -> None:
    """A rerun may reuse a finished study only if neither its settings nor any denoiser's
    weights changed: new weights under the same name make it unfinished."""
    import lowdose.evaluation.study as study
    from lowdose.models.classical import TotalVariation

    tv = TotalVariation(weight_hu=20.0)
    monkeypatch.setattr(study, "_denoiser_list", lambda cfg: ([("tv", tv)], []))
    cfg = _cfg(tmp_path / "out", classifier_file)
    assert study.finished_study(cfg) is None  # nothing run yet
    results = run_study(cfg, progress=False, log=None)
    assert results["denoisers"]["fingerprints"] == {"tv": study.denoiser_fingerprint(tv)}
    assert study.finished_study(cfg) == json.loads((tmp_path / "out" / "results.json").read_text())
    assert study.finished_study(_cfg(tmp_path / "out", classifier_file, doses=[1.0])) is None
    tv.weight_hu = 30.0  # "new weights" under the same name
    assert study.finished_study(cfg) is None
    tv.weight_hu = 20.0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    older = {**saved, "format": "lowdose-study/1"}
    (tmp_path / "out" / "results.json").write_text(json.dumps(older))
    assert study.finished_study(cfg) is None  # an older format: no paired counts in its cells
    del saved["denoisers"]["fingerprints"]  # a study written before fingerprints were recorded
    (tmp_path / "out" / "results.json").write_text(json.dumps(saved))
    assert study.finished_study(cfg) is None


def test_learned_denoiser_outside_its_training_scale_is_flagged(tmp_path, classifier_file,
                                                                monkeypatch) -> None:
    """The study's pixel size (field of view / slice size) is checked against what each
    learned denoiser was trained on; the warning reaches the log, results.json and the report."""
    import lowdose.evaluation.study as study
    from lowdose.models.unet import ResUNetDenoiser

    unet = ResUNetDenoiser.untrained({"channels": [4, 8]}, metadata={"train_pixel_mm": [0.6, 0.8]})
    monkeypatch.setattr(study, "_denoiser_list", lambda cfg: ([("unet", unet)], []))
    said: list[str] = []
    cfg = _cfg(tmp_path / "out", classifier_file, doses=[0.25])  # 350 mm / 48 px = 7.3 mm
    results = run_study(cfg, progress=False, log=said.append)
    note = results["denoisers"]["pixel_size_notes"]["unet"]
    assert "7.29 mm pixels, outside its training scale" in note
    assert f"warning: {note}" in said
    assert "Denoisers used outside their training scale" in (tmp_path / "out" / "report.html"
                                                               ).read_text()
    cfg.fov_mm = 48 * 0.7  # 0.7 mm pixels: inside
    assert study.run_study(cfg, progress=False, log=None)["denoisers"]["pixel_size_notes"] == {}


@pytest.fixture(scope="module")
def other_classifier_files(tmp_path_factory) -> list[str]:
    """Two more untrained 32 px ResNet-18s, from other initial weights."""
    folder = tmp_path_factory.mktemp("clf-more")
    files = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = build_classifier("resnet18", ClassifierSpec(arch="resnet18", input_size=32))
        files.append(str(save_classifier(net, folder / f"clf-{seed}.safetensors")))
    return files


def test_extra_classifiers_judge_the_same_images(tmp_path, classifier_file,
                                                 other_classifier_files, monkeypatch) -> None:
    """Extra classifiers see each chunk restored once; added to a finished study they leave its
    own cells as they were; the pooled counts and accuracies follow from the per-classifier
    ones; a copy of the study's own classifier pools to its McNemar test."""
    import lowdose.evaluation.study as study

    monkeypatch.setattr(study, "_denoiser_list", lambda cfg: ([("tv", _CountingTV())], []))
    _CountingTV.calls, _CountingTV.fail_after = 0, None
    alone = run_study(_cfg(tmp_path / "out", classifier_file), progress=False, log=None)
    assert _CountingTV.calls == 6 and alone["extra_classifiers"] == []
    assert all("across_classifiers" not in c for c in alone["cells"])
    _CountingTV.calls = 0
    cfg = _cfg(tmp_path / "out", classifier_file, extra_classifiers=other_classifier_files)
    both = run_study(cfg, progress=False, log=None)
    assert _CountingTV.calls == 6  # once more for the new classifiers together, not per one
    for a, b in zip(alone["cells"], both["cells"], strict=True):
        assert a["accuracy"] == b["accuracy"] and a["paired_vs_full_dose"] == b[
            "paired_vs_full_dose"]
    assert [e["label"] for e in both["extra_classifiers"]] == ["clf-1.safetensors",
                                                              "clf-2.safetensors"]
    for c in both["cells"]:
        accs = [c["accuracy"]["value"]] + [e["accuracy"] for e in c["extra_classifiers"]]
        pooled = c["across_classifiers"]
        assert pooled["n_classifiers"] == 3
        assert pooled["accuracy_mean"] == pytest.approx(np.mean(accs))
        fds = [both["full_dose"]["accuracy"]["value"]] + [
            e["full_dose"]["accuracy"] for e in both["extra_classifiers"]]
        assert pooled["vs_full_dose"]["change"] == pytest.approx(np.mean(accs) - np.mean(fds))
        lost = [c["paired_vs_full_dose"]["lost"]] + [
            e["paired_vs_full_dose"]["lost"] for e in c["extra_classifiers"]]
        assert pooled["vs_full_dose"]["lost"] == pytest.approx(np.mean(lost))
        assert 0 < pooled["vs_full_dose"]["p_value"] <= pooled["vs_full_dose"]["p_holm"] <= 1
        assert ("vs_raw" in pooled) == (c["denoiser"] != "none")
    assert len({e["accuracy"] for c in both["cells"] for e in c["extra_classifiers"]}) > 1
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Across classifiers" in html
    assert "Over all 3 classifiers, image-poisson dose 0.25" in html
    _CountingTV.calls = 0
    again = run_study(cfg, progress=False, log=None)  # every classifier's cells cached
    assert _CountingTV.calls == 0
    assert [c["across_classifiers"] for c in again["cells"]] == [
        c["across_classifiers"] for c in both["cells"]]
    # Twin classifiers that read the noise (a slice's standard deviation), so that low dose
    # changes their answers: pooled over the two, the counts and p are the study's own.
    def std_classifier(cfg, data, cache, resume, progress=True):
        class ByStd:
            def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
                cls = (x.std(dim=(1, 2, 3)) / 2.0).long() % 4
                return torch.nn.functional.one_hot(cls, 4).double()

        return ByStd(), {"source": "loaded", "path": cfg.classifier}

    monkeypatch.setattr(study, "get_classifier", std_classifier)
    same = run_study(_cfg(tmp_path / "twin-out", "a.safetensors",
                          extra_classifiers=["b.safetensors"]), progress=False, log=None)
    assert any(c["paired_vs_full_dose"]["lost"] + c["paired_vs_full_dose"]["gained"]
               for c in same["cells"])  # the comparison below is not between empty counts
    for c in same["cells"]:
        own, pooled = c["paired_vs_full_dose"], c["across_classifiers"]["vs_full_dose"]
        assert (pooled["lost"], pooled["gained"]) == (own["lost"], own["gained"])
        assert pooled["p_value"] == pytest.approx(own["p_value"], rel=1e-12)


def test_extra_classifier_seeds_train_like_the_first(tmp_path, monkeypatch) -> None:
    """An integer trains one more classifier with that seed (its own cache), then judges."""
    import lowdose.evaluation.study as study

    monkeypatch.setattr(study, "_denoiser_list", lambda cfg: ([], []))
    train = {"arch": "resnet18", "epochs": 1, "input_size": 32, "batch_size": 4}
    cfg = _cfg(tmp_path / "out", None, classifier=None, train=train, doses=[0.25],
               extra_classifiers=[3])
    results = run_study(cfg, progress=False, log=None)
    (extra,) = results["extra_classifiers"]
    assert extra["label"] == "seed 3" and extra["classifier"]["config"]["seed"] == 3
    assert results["classifier"]["config"]["seed"] == 0
    assert len(list((tmp_path / "out" / "cache").glob("classifier-*"))) == 2
    assert len(list((tmp_path / "out" / "cache").glob("cells-*"))) == 2
    with pytest.raises(LowdoseError, match="repeated"):
        StudyConfig.from_dict({"extra_classifiers": [1, 1]})
    with pytest.raises(LowdoseError, match="own classifier seed"):
        StudyConfig.from_dict({"extra_classifiers": [0]})
    with pytest.raises(LowdoseError, match="the study's own classifier"):
        StudyConfig.from_dict({"classifier": "a.safetensors",
                               "extra_classifiers": ["a.safetensors"]})
    # One file spelt two ways is still one classifier.
    with pytest.raises(LowdoseError, match="the study's own classifier"):
        StudyConfig.from_dict({"classifier": "./a.safetensors",
                               "extra_classifiers": ["a.safetensors"]})
    with pytest.raises(LowdoseError, match="repeated"):
        StudyConfig.from_dict({"extra_classifiers": ["a.safetensors", "./a.safetensors"]})
    assert StudyConfig.from_dict({"extra_classifiers": [2, "2.safetensors"]}).extra_classifiers \
        == [2, "2.safetensors"]
    with pytest.raises(LowdoseError, match="fixes the seed"):
        StudyConfig.from_dict({"extra_classifiers": [1], "train": {"seed": 4}})


@pytest.mark.parametrize(("settings", "error"), [
    ({"grid_window": "lungg"}, "study grid_window: 'lungg' is not a window's name; known: "
                               "abdomen, bone, full, lung"),
    ({"slice_size": -4}, "study slice_size: -4 is out of range; use an integer >= 1"),
    ({"slice_size": 0}, "study slice_size: 0 is out of range"),
    ({"slice_size": "big"}, "study slice_size: 'big' is not an integer"),
    ({"n_boot": 0}, "study n_boot: 0 is out of range; use an integer >= 1"),
    ({"fov_mm": -1}, "study fov_mm: -1 is out of range; use a number > 0"),
    ({"png_window": [150, -1350]}, r"study png_window: \[150, -1350\] is reversed or empty"),
    ({"png_window": "lungg"}, "study png_window: unknown window 'lungg'"),
    ({"valid_fraction": 1.5}, r"study valid_fraction: 1.5 is out of range; use a number in "
                              r"\(0, 1\)"),
    ({"valid_fraction": 0}, "study valid_fraction: 0 is out of range"),
    ({"crop_body": "maybe"}, "study crop_body: 'maybe' is not true or false"),
    ({"methods": ["poison"]}, "study methods: unknown simulator 'poison'; known: image-poisson"),
    ({"phantom": {"n_trian": 3}}, r"study phantom: unknown keys \['n_trian'\]; known: n_train"),
    ({"phantom": {"size": 8}}, "study phantom.size: 8 is out of range; use an integer >= 32"),
    ({"doses": ["half"]}, r"study doses \['half'\]: each must lie in \(0, 1\]"),
    ({"train": 5}, "study train: 5 is not a mapping"),
])
def test_a_bad_study_setting_is_refused_when_the_config_is_built(settings, error) -> None:
    """Before, a bad grid window failed only at the end of the study (no results.json), and
    the others late or never."""
    with pytest.raises(LowdoseError, match=error):
        StudyConfig.from_dict(settings)


def test_study_config_normalises_a_bare_dose_and_names() -> None:
    cfg = StudyConfig.from_dict({"doses": 0.5, "methods": "image-poisson", "denoisers": "tv",
                                 "png_window": "lung", "fov_mm": 350, "phantom": None})
    assert (cfg.doses, cfg.methods, cfg.denoisers) == ([0.5], ["image-poisson"], ["tv"])
    assert cfg.png_window == (-1350.0, 150.0) and cfg.fov_mm == 350.0
    assert cfg.phantom == StudyConfig().phantom
    for name in ("demo", "kaggle"):  # the shipped ones still load
        StudyConfig.from_yaml(name)


def test_fingerprint_counts_settings_held_in_lists_arrays_and_dicts() -> None:
    from lowdose.evaluation.study import denoiser_fingerprint

    class Median(Denoiser):
        name = "median-test"

        def __init__(self, size=(3, 3), kernel=(1, 2, 1), extra=None) -> None:
            self.size = list(size)
            self.kernel = np.asarray(kernel)
            self.extra = dict(extra or {"mode": "reflect"})
            self._cache: dict = {}

        def denoise(self, hu):
            return hu

    base = denoiser_fingerprint(Median())
    assert denoiser_fingerprint(Median()) == base
    assert denoiser_fingerprint(Median(size=(7, 7))) != base
    assert denoiser_fingerprint(Median(kernel=(1, 8, 1))) != base
    assert denoiser_fingerprint(Median(kernel=np.array([1, 2, 1], np.float32))) != base
    assert denoiser_fingerprint(Median(extra={"mode": "wrap"})) != base
    used = Median()
    used._cache["x"] = np.ones(3)  # private state filled as it runs is no setting
    assert denoiser_fingerprint(used) == base


def test_fingerprints_of_scalar_settings_and_network_records_are_unchanged() -> None:
    """Study caches are keyed by fingerprints: settings hashed before (scalars, tuples) hash
    as they did, and a network denoiser's arch and metadata (which come with its hashed
    weights) stay out, so the shipped denoisers keep their fingerprints."""
    import hashlib

    from lowdose.evaluation.study import denoiser_fingerprint
    from lowdose.models.unet import ResUNetDenoiser

    class Scalars:
        def __init__(self) -> None:
            self.weight_hu, self.mode, self.span, self.tile_batch = 60.0, "ct", (1, 2), 4

    cls = Scalars
    old = hashlib.sha256(f"{cls.__module__}.{cls.__qualname__}".encode())
    for key, value in sorted({"mode": "ct", "span": (1, 2), "weight_hu": 60.0}.items()):
        old.update(f"{key}={value!r};".encode())
    assert denoiser_fingerprint(Scalars()) == old.hexdigest()[:12]
    torch.manual_seed(0)
    net = ResUNetDenoiser.untrained({"channels": [4, 8], "blocks": 1, "bottom_blocks": 1})
    before = denoiser_fingerprint(net)
    net.metadata["steps"] = 5
    assert denoiser_fingerprint(net) == before


def test_a_factory_function_in_the_registry_joins_the_study(monkeypatch) -> None:
    """A registry entry may be a function that returns a denoiser (Registry's docstring)."""
    from lowdose.evaluation import study
    from lowdose.models.base import denoisers
    from lowdose.models.classical import TotalVariation

    def tv_strong() -> TotalVariation:
        return TotalVariation(weight_hu=60.0)

    denoisers.names()  # the built-in entries first
    monkeypatch.setitem(denoisers._entries, "tv-strong-test", tv_strong)
    loaded, skipped = study._denoiser_list(StudyConfig.from_dict(
        {"denoisers": ["tv-strong-test"], "device": "cpu"}))
    assert not skipped, skipped
    assert [n for n, _ in loaded] == ["tv-strong-test"] and loaded[0][1].weight_hu == 60.0


def test_the_study_counts_images_with_colour_marks_in_one_line(tmp_path) -> None:
    """Each marked PNG warned at read: a line per image in the study's output."""
    import warnings

    import numpy as np
    from PIL import Image

    from lowdose.evaluation.study import StudyConfig, load_study_data
    from lowdose.io.phantom import write_phantom_dataset

    data = tmp_path / "data"
    write_phantom_dataset(data, 12, size=48, seed=0)
    for src in sorted((data / "train").rglob("*.png"))[:2]:
        rgb = np.stack([np.asarray(Image.open(src).convert("L"))] * 3, axis=-1)
        rgb[20, :] = (120, 60, 200)
        Image.fromarray(rgb).save(src)
    cfg = StudyConfig(data=str(data), out=str(tmp_path / "out"), slice_size=48)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_study_data(cfg, tmp_path / "cache", progress=False)
    assert not [w for w in caught if "coloured" in str(w.message)]
    (line,) = [w for w in loaded.warnings if "colour marks" in w]
    assert line.startswith("2 image(s) carry colour marks (an annotation line?)")
