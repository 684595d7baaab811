"""``compare_denoisers``: lower doses simulated from a full-dose scan, restored and scored."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lowdose import CTImage, LowdoseError
from lowdose.evaluation.compare import LOW_DOSE, CompareConfig, compare_denoisers, pick_slices
from lowdose.io import read_ct
from lowdose.io.phantom import phantom_slice, pixel_spacing

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def chest(n_slices: int = 2, size: int = 128) -> CTImage:
    """Phantom chest slices (full dose) on their 350 mm field of view, 2 mm apart: a chest's
    size, so the simulated dose gives a chest's noise."""
    hu = np.stack([phantom_slice("normal", size=size, seed=k) for k in range(n_slices)])
    mm = pixel_spacing(size)
    return CTImage(hu, spacing=(2.0, mm, mm), origin=(0.0, 0.0, 100.0), direction=np.eye(3),
                   metadata={"source": "phantom"})


def test_pick_slices_takes_evenly_spaced_slices_with_their_geometry() -> None:
    vol = CTImage(np.arange(10, dtype=np.float32)[:, None, None] * np.ones((10, 4, 4)),
                  spacing=(1.5, 0.7, 0.7), origin=(0.0, 0.0, -20.0), direction=np.eye(3))
    sub = pick_slices(vol, 3)
    assert sub.hu[:, 0, 0].tolist() == [0.0, 4.0, 8.0]  # every 4th
    assert sub.spacing == (6.0, 0.7, 0.7) and sub.origin == (0.0, 0.0, -20.0)
    sub = pick_slices(vol, 2)  # every 5th, centred: 2 and 7 (9 - 5 = 4 left over, 2 per side)
    assert sub.hu[:, 0, 0].tolist() == [2.0, 7.0] and sub.origin == (0.0, 0.0, -17.0)
    assert pick_slices(vol, 0) is vol and pick_slices(vol, 10) is vol
    one = CTImage(np.zeros((4, 4), np.float32), spacing=(0.7, 0.7))
    assert pick_slices(one, 3) is one


def test_every_registered_denoiser_is_compared_and_lower_doses_score_lower() -> None:
    from lowdose.models.base import denoisers

    notes: list[str] = []  # the learned models warn: 2.7 mm pixels, beyond their training
    result = compare_denoisers(chest(), CompareConfig(doses=[0.25, 0.05]), warn=notes.append)
    assert any("unet was trained on" in note for note in notes)
    assert sorted(result["notes"]) == sorted(notes) and len(set(notes)) == len(notes)
    methods = result["doses"]["0.25"]["methods"]
    assert set(methods) | set(result["skipped"]) == {LOW_DOSE, *denoisers.names()}
    assert not result["skipped"]  # every shipped model loads here
    low = {d: result["doses"][d]["methods"][LOW_DOSE] for d in ("0.25", "0.05")}
    assert low["0.05"]["psnr_full"] < low["0.25"]["psnr_full"] - 5  # 6.3x the noise power
    assert low["0.25"]["gain_db_full"] == 0 and low["0.25"]["seconds_per_slice"] == 0
    for dose in ("0.25", "0.05"):
        for name, entry in result["doses"][dose]["methods"].items():
            assert entry["gain_db_full"] == pytest.approx(
                entry["psnr_full"] - low[dose]["psnr_full"])
            assert entry["seconds_per_slice"] >= 0, name
    assert result["scored_slices"] == result["of_slices"] == 2


def test_denoisers_gain_at_a_twentieth_of_the_dose_on_a_finer_phantom() -> None:
    # 1.4 mm pixels: the projection physics' noise at dose 0.05 is what the methods remove
    # (on the 2.7 mm phantom above they blur its one-pixel vessels and lose 6-20 dB).
    cfg = CompareConfig(doses=[0.05], denoisers=["tv", "bm3d", "unet"])
    result = compare_denoisers(chest(1, size=256), cfg, warn=lambda note: None)
    for name in ("tv", "bm3d", "unet"):
        assert result["doses"]["0.05"]["methods"][name]["gain_db_full"] > 1.5, name


def test_the_seed_reproduces_the_low_dose_and_another_seed_changes_it() -> None:
    def psnr(seed: int) -> float:
        cfg = CompareConfig(doses=[0.25], denoisers=["tv"], seed=seed)
        return compare_denoisers(chest(1), cfg)["doses"]["0.25"]["methods"]["tv"]["psnr_full"]

    assert psnr(3) == psnr(3)
    assert psnr(3) != psnr(4)


def test_outputs_tables_figure_and_images(tmp_path: Path) -> None:
    cfg = CompareConfig(doses=[0.25], denoisers=["tv"], slices=2, save_images=True,
                        method="image-poisson")
    result = compare_denoisers(chest(5), cfg, out=tmp_path, warn=print)
    assert result["scored_slices"] == 2 and result["of_slices"] == 5
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["doses"]["0.25"]["methods"]["tv"]["psnr_full"] == pytest.approx(
        result["doses"]["0.25"]["methods"]["tv"]["psnr_full"])
    md = (tmp_path / "compare.md").read_text()
    assert "## Dose 0.25" in md and "| tv |" in md and "2 evenly spaced of 5 slices" in md
    assert "Low dose, middle slice: noise reading" in md
    assert set(saved["doses"]["0.25"]["low_dose_noise"]) == {"reading_hu", "texture",
                                                                 "white_hu", "correlated_hu"}
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"
    full = read_ct(tmp_path / "full-dose.nii.gz")
    assert full.shape == (2, 128, 128) and full.spacing[0] == pytest.approx(6.0)
    restored = read_ct(tmp_path / "dose-0.25" / "tv.nii.gz")
    low = read_ct(tmp_path / "dose-0.25" / "low-dose.nii.gz")
    assert restored.shape == low.shape == full.shape
    # The images written are the images scored.
    from lowdose.evaluation.score import score_images

    again = score_images(full, {"low": low, "tv": restored})
    scored = result["doses"]["0.25"]["methods"]
    assert again["low"]["psnr_full"] == pytest.approx(scored[LOW_DOSE]["psnr_full"], abs=1e-3)
    assert again["tv"]["psnr_full"] == pytest.approx(scored["tv"]["psnr_full"], abs=1e-3)


@pytest.mark.parametrize(("options", "message"), [
    ({"doses": [0.0]}, "(0, 1]"),
    ({"doses": [1.5]}, "(0, 1]"),
    ({"doses": [0.25, 0.25]}, "repeated dose"),
    ({"doses": []}, "at least one dose"),
    ({"slices": -1}, "--slices"),
    ({"method": "image-poisson", "calibration": "c.json"}, "only the projection method"),
])
def test_bad_settings_are_one_clear_error(options: dict, message: str) -> None:
    with pytest.raises(LowdoseError, match=message.replace("(", r"\(").replace("]", r"\]")):
        CompareConfig(**options)


def test_an_unknown_denoiser_named_is_an_error_not_a_skip() -> None:
    with pytest.raises(LowdoseError, match="no-such-model"):
        compare_denoisers(chest(1), CompareConfig(denoisers=["tv", "no-such-model"]))


def test_a_weight_file_beside_its_model_name_gets_its_own_row_and_file(tmp_path: Path) -> None:
    from lowdose.models.base import denoisers
    from lowdose.models.loading import shipped_path

    weights = str(shipped_path(denoisers.get("unet-fast")))
    cfg = CompareConfig(doses=[0.25], denoisers=["unet-fast", weights], method="image-poisson",
                        save_images=True)
    result = compare_denoisers(chest(1), cfg, out=tmp_path, warn=lambda note: None)
    rows = result["doses"]["0.25"]["methods"]
    assert set(rows) == {LOW_DOSE, "unet-fast", weights}
    assert rows["unet-fast"]["psnr_full"] == pytest.approx(rows[weights]["psnr_full"])
    written = sorted(p.name for p in (tmp_path / "dose-0.25").iterdir())
    assert len(written) == 3 and all("/" not in name for name in written)
    with pytest.raises(LowdoseError, match="named twice"):
        compare_denoisers(chest(1), CompareConfig(denoisers=["tv", "tv"]))


def test_a_classical_denoiser_with_settings_gets_its_own_row(tmp_path: Path) -> None:
    """``tv:weight_hu=60`` beside ``tv``: two rows, labelled by what was given, the stronger
    weight smoothing more; a learned model takes no settings."""
    cfg = CompareConfig(doses=[0.25], denoisers=["tv", "tv:weight_hu=60"],
                        method="image-poisson", save_images=True)
    result = compare_denoisers(chest(1), cfg, out=tmp_path, warn=lambda note: None)
    rows = result["doses"]["0.25"]["methods"]
    assert set(rows) == {LOW_DOSE, "tv", "tv:weight_hu=60"}
    assert rows["tv"]["psnr_full"] != pytest.approx(rows["tv:weight_hu=60"]["psnr_full"])
    assert len(list((tmp_path / "dose-0.25").iterdir())) == 3
    alone = compare_denoisers(chest(1), CompareConfig(doses=[0.25], denoisers=["tv:weight_hu=60"],
                                                      method="image-poisson"))
    assert set(alone["doses"]["0.25"]["methods"]) == {LOW_DOSE, "tv:weight_hu=60"}
    with pytest.raises(LowdoseError, match="settings are in its weight file"):
        compare_denoisers(chest(1), CompareConfig(denoisers=["unet:strength=2"]))


def test_an_earlier_comparison_in_the_folder_is_replaced_not_left_beside_the_new_one(
        tmp_path: Path) -> None:
    """A second run with fewer doses and denoisers: no image of the first run stays beside a
    report that does not list it."""
    out = tmp_path / "cmp"
    first = CompareConfig(doses=[0.25, 0.1], denoisers=["tv", "tv:weight_hu=60"],
                          method="image-poisson", save_images=True)
    compare_denoisers(chest(1, size=64), first, out=out, warn=lambda note: None)
    assert sorted(p.name for p in (out / "dose-0.25").iterdir()) == [
        "low-dose.nii.gz", "tv.nii.gz", "tv_weight_hu_60.nii.gz"]
    second = CompareConfig(doses=[0.25], denoisers=["tv"], method="image-poisson",
                           save_images=True)
    compare_denoisers(chest(1, size=64), second, out=out, warn=lambda note: None)
    assert sorted(p.name for p in out.iterdir()) == [
        "compare.json", "compare.md", "compare.png", "dose-0.25", "full-dose.nii.gz"]
    assert sorted(p.name for p in (out / "dose-0.25").iterdir()) == [
        "low-dose.nii.gz", "tv.nii.gz"]
    saved = json.loads((out / "compare.json").read_text())
    assert sorted(saved["doses"]) == ["0.25"]
    # Without images this time: the earlier images go too.
    third = CompareConfig(doses=[0.25], denoisers=["tv"], method="image-poisson")
    compare_denoisers(chest(1, size=64), third, out=out, warn=lambda note: None)
    assert sorted(p.name for p in out.iterdir()) == ["compare.json", "compare.md",
                                                     "compare.png"]


def test_a_comparison_interrupted_midway_is_replaced_by_a_rerun(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted after the earlier report was removed and some images written, the folder
    held no compare.json: the same command again was refused as a folder of the user's own."""
    from lowdose.evaluation import compare

    out = tmp_path / "cmp"
    cfg = CompareConfig(doses=[0.25], denoisers=["tv"], method="image-poisson",
                        save_images=True)
    compare_denoisers(chest(1, size=64), cfg, out=out, warn=lambda note: None)
    assert not (out / compare.IN_PROGRESS).exists()

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(compare, "write_comparison", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compare_denoisers(chest(1, size=64), cfg, out=out, warn=lambda note: None)
    assert not (out / "compare.json").exists() and (out / "dose-0.25").is_dir()
    monkeypatch.undo()
    compare_denoisers(chest(1, size=64), cfg, out=out, warn=lambda note: None)
    assert sorted(p.name for p in out.iterdir()) == [
        "compare.json", "compare.md", "compare.png", "dose-0.25", "full-dose.nii.gz"]


@pytest.mark.parametrize(("make", "message"), [
    ({"notes.txt": "mine"}, "holds what lowdose compare does not write (notes.txt)"),
    ({"full-dose.nii.gz": "mine"}, "holds no compare.json of an earlier lowdose compare"),
    ({"compare.json": "{}"}, "holds no compare.json of an earlier lowdose compare"),
    ({"compare.json": "EARLIER", "dose-0.25/notes.txt": "mine"}, "(dose-0.25)"),
    ({"compare.json": "EARLIER", "results/a.nii.gz": "mine"}, "(results)"),
])
def test_a_folder_that_is_not_an_earlier_comparison_is_refused_and_left_as_it_is(
        tmp_path: Path, make: dict[str, str], message: str) -> None:
    earlier = tmp_path / "earlier"
    compare_denoisers(chest(1, size=64), CompareConfig(denoisers=["tv"], method="image-poisson"),
                      out=earlier, warn=lambda note: None)
    out = tmp_path / "out"
    for name, text in make.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        if text == "EARLIER":
            text = (earlier / "compare.json").read_text()
        (out / name).write_text(text)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(LowdoseError, match=re.escape(message)):
        compare_denoisers(chest(1, size=64), CompareConfig(denoisers=["tv"]), out=out)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing removed


def test_an_output_holding_the_input_is_refused(tmp_path: Path) -> None:
    from lowdose.io import write_ct

    cfg = CompareConfig(denoisers=["tv"], method="image-poisson", save_images=True)
    compare_denoisers(chest(1, size=64), cfg, out=tmp_path / "cmp", warn=lambda note: None)
    full = read_ct(write_ct(chest(1, size=64), tmp_path / "cmp" / "dose-0.25" / "mine.nii.gz"))
    with pytest.raises(LowdoseError, match="must not hold the input"):
        compare_denoisers(full, cfg, out=tmp_path / "cmp")
    assert (tmp_path / "cmp" / "dose-0.25" / "mine.nii.gz").is_file()



def test_a_denoisers_first_call_cost_is_not_in_its_seconds_per_slice(monkeypatch) -> None:
    """A one-time cost on a denoiser's first call (a lazy import, say) is paid before the
    timing: the first dose's seconds per slice are not inflated by it."""
    import time

    import lowdose.evaluation.compare as compare
    from lowdose.models.base import Denoiser

    class SlowStart(Denoiser):
        name = "slow-start"
        calls = 0

        def denoise(self, hu):
            SlowStart.calls += 1
            if SlowStart.calls == 1:
                time.sleep(0.6)
            return hu

    monkeypatch.setattr(compare, "_load", lambda cfg: ({"slow-start": SlowStart()}, {}))
    cfg = CompareConfig(doses=[0.5, 0.25], method="image-poisson", denoisers=["slow-start"])
    result = compare_denoisers(chest(2, 64), cfg)
    for dose in ("0.5", "0.25"):
        assert result["doses"][dose]["methods"]["slow-start"]["seconds_per_slice"] < 0.1
