"""``lowdose score``: metrics of images against a reference, by tissue, with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lowdose.image import CTImage
from lowdose.io import write_ct
from tests.cli.cli_helpers import assert_one_error_line, run


def _phantom(size: int = 64) -> np.ndarray:
    """Air around a soft-tissue disc holding a lung region and a bone spot."""
    yy, xx = np.mgrid[:size, :size]
    r2 = (yy - size / 2) ** 2 + (xx - size / 2) ** 2
    hu = np.where(r2 < (size * 0.4) ** 2, 40.0, -1000.0)
    hu[20:30, 20:30] = -750.0  # lung
    hu[40:44, 40:44] = 700.0  # bone
    return hu.astype(np.float32)


def test_scores_a_noisy_image_by_tissue_and_writes_strict_json(tmp_path: Path, capsys) -> None:
    ref = _phantom()
    noisy = ref + np.where(ref > -900, 20.0, 0.0).astype(np.float32)  # +20 HU in the body only
    write_ct(CTImage(ref, spacing=(0.7, 0.7)), tmp_path / "fd.nii.gz")
    write_ct(CTImage(noisy, spacing=(0.7, 0.7)), tmp_path / "qd.nii.gz")
    rc, out, _ = run(["score", str(tmp_path / "fd.nii.gz"), str(tmp_path / "qd.nii.gz"),
                      str(tmp_path / "fd.nii.gz"), "--json", str(tmp_path / "s.json")], capsys)
    assert rc == 0 and "soft_tissue HU" in out and "lung_and_gas HU" in out
    record = json.loads((tmp_path / "s.json").read_text())
    qd, same = (record["scores"][str(tmp_path / n)] for n in ("qd.nii.gz", "fd.nii.gz"))
    assert qd["rmse_hu_outside_body"] == pytest.approx(0.0, abs=1e-3)
    for tissue in ("lung_and_gas", "soft_tissue", "bone"):
        assert qd[f"rmse_hu_{tissue}"] == pytest.approx(20.0, abs=1e-3)
    assert qd["psnr_full"] < 60 and same["psnr_full"] is None  # identical: infinite, null
    assert same["rmse_hu"] == 0.0


@pytest.mark.parametrize(("option", "target", "said"), [
    ("--json", "fd.nii.gz", "--json {t}/fd.nii.gz: is an input"),
    ("--json", "qd.nii.gz", "--json {t}/qd.nii.gz: is an input"),
    ("--json", "fd.nii.gz/s.json", "fd.nii.gz is a file"),
    ("--diff", "qd.nii.gz", "--diff {t}/qd.nii.gz: is an input"),
    ("--json", "folder", "--json {t}/folder: is a folder"),
])
def test_an_output_over_an_input_or_misplaced_is_refused_before_scoring(
        tmp_path: Path, capsys, option: str, target: str, said: str) -> None:
    """--json fd.nii.gz wrote the scores' JSON text over the reference scan."""
    write_ct(CTImage(_phantom(), spacing=(0.7, 0.7)), tmp_path / "fd.nii.gz")
    write_ct(CTImage(_phantom() + 5, spacing=(0.7, 0.7)), tmp_path / "qd.nii.gz")
    (tmp_path / "folder").mkdir()
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.nii.gz")}
    rc, out, err = run(["score", str(tmp_path / "fd.nii.gz"), str(tmp_path / "qd.nii.gz"),
                        option, str(tmp_path / target)], capsys)
    assert_one_error_line(rc, err, said.format(t=tmp_path))
    assert out == ""  # refused before the scoring
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.nii.gz")} == before


def test_images_off_the_reference_grid_are_one_error_line(tmp_path: Path, capsys) -> None:
    ref = _phantom()
    write_ct(CTImage(ref, spacing=(0.7, 0.7)), tmp_path / "fd.nii.gz")
    write_ct(CTImage(ref[:32, :32], spacing=(0.7, 0.7)), tmp_path / "small.nii.gz")
    write_ct(CTImage(ref, spacing=(0.35, 0.35)), tmp_path / "fine.nii.gz")
    rc, _, err = run(["score", str(tmp_path / "fd.nii.gz"), str(tmp_path / "small.nii.gz")],
                     capsys)
    assert_one_error_line(rc, err, "small.nii.gz", "shape (32, 32)", "(64, 64)")
    rc, _, err = run(["score", str(tmp_path / "fd.nii.gz"), str(tmp_path / "fine.nii.gz")],
                     capsys)
    assert_one_error_line(rc, err, "fine.nii.gz", "pixel spacing")
    rc, _, err = run(["score", str(tmp_path / "fd.nii.gz"), str(tmp_path / "none.nii.gz")],
                     capsys)
    assert_one_error_line(rc, err, "none.nii.gz")


def test_scores_a_restored_dicom_series_against_its_source(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    ref = np.stack([_phantom(), _phantom()])
    noisy = ref + rng.normal(0, 30, ref.shape).astype(np.float32)
    geometry = {"spacing": (2.0, 0.7, 0.7), "origin": (0.0, 0.0, 0.0), "direction": np.eye(3)}
    src = write_ct(CTImage(ref, **geometry), tmp_path / "fd")  # DICOM series folders
    low = write_ct(CTImage(noisy, **geometry), tmp_path / "qd")
    assert run(["denoise", str(low), str(tmp_path / "tv"), "--model", "tv"], capsys)[0] == 0
    rc, out, _ = run(["score", str(src), str(low), str(tmp_path / "tv"), "--json",
                      str(tmp_path / "s.json"), "--diff", str(tmp_path / "diff")], capsys)
    assert rc == 0 and str(tmp_path / "tv") in out
    # The difference images, on the reference's geometry: what the restoration changed.
    from lowdose.io import read_ct

    for stem, source in (("qd", noisy), ("tv", None)):
        d = read_ct(tmp_path / "diff" / f"{stem}-minus-reference.nii.gz")
        assert d.shape == ref.shape and d.spacing == pytest.approx(geometry["spacing"])
        if source is not None:  # DICOM stores whole HU
            np.testing.assert_allclose(d.hu, source - ref, atol=0.51)
    scores = json.loads((tmp_path / "s.json").read_text())["scores"]
    before, after = scores[str(low)], scores[str(tmp_path / "tv")]
    assert before["rmse_hu_soft_tissue"] == pytest.approx(30.0, rel=0.1)  # DICOM rounds to 1 HU
    assert after["rmse_hu_soft_tissue"] < before["rmse_hu_soft_tissue"]
    assert after["psnr_full"] > before["psnr_full"]


@pytest.mark.integration
def test_real_mayo_pair_scores_as_the_benchmark_does(shared_data: Path, tmp_path: Path,
                                                    capsys) -> None:
    """The real L506 1 mm DICOM pair: `lowdose score` gives the input's PSNR that
    `benchmarks/denoise_mayo.py` reports for it (38.12 dB full range), and the default model
    lowers the error in every tissue."""
    folder = shared_data / "mayo-l506-pairs" / "dicom"
    qd, fd = (sorted(folder.glob(f"*_{d}_*"))[0] for d in ("QD", "FD"))
    restored = tmp_path / "restored.nii.gz"
    assert run(["denoise", str(qd), str(restored)], capsys)[0] == 0
    rc, _, _ = run(["score", str(fd), str(qd), str(restored), "--json",
                    str(tmp_path / "s.json")], capsys)
    assert rc == 0
    scores = json.loads((tmp_path / "s.json").read_text())["scores"]
    low, out = scores[str(qd)], scores[str(restored)]
    assert low["psnr_full"] == pytest.approx(38.12, abs=0.01)
    assert out["psnr_full"] > low["psnr_full"] + 4
    for tissue in ("outside_body", "lung_and_gas", "soft_tissue", "bone"):
        assert out[f"rmse_hu_{tissue}"] < low[f"rmse_hu_{tissue}"], tissue


def _mayo_pair(tmp_path: Path) -> tuple[Path, Path]:
    """Full- and quarter-dose phantom slices saved in the Mayo npy scale ((HU + 1024) / 4096)."""
    ref = _phantom()
    noisy = ref + np.random.default_rng(1).normal(0, 30, ref.shape).astype(np.float32)
    paths = tmp_path / "fd.npy", tmp_path / "qd.npy"
    for path, hu in zip(paths, (ref, noisy), strict=True):
        np.save(path, (np.clip(hu, -1024, 3072) + 1024) / 4096)
    return paths


def test_a_denoised_mayo_npy_scores_under_its_input_npy_scale(tmp_path: Path, capsys) -> None:
    fd, qd = _mayo_pair(tmp_path)
    out = tmp_path / "tv.npy"
    assert run(["denoise", str(qd), str(out), "-m", "tv", "--npy-scale", "mayo"], capsys)[0] == 0
    stored = np.load(out)
    assert stored.min() >= 0.0 and stored.max() <= 1.0  # the input's scale, not HU
    rc, _, err = run(["score", str(fd), str(qd), str(out), "--npy-scale", "mayo",
                      "--json", str(tmp_path / "s.json")], capsys)
    assert rc == 0, err
    scores = json.loads((tmp_path / "s.json").read_text())["scores"]
    assert scores[str(out)]["rmse_hu_soft_tissue"] < scores[str(qd)]["rmse_hu_soft_tissue"]


def test_mayo_npy_scored_as_hu_is_one_error_line(tmp_path: Path, capsys) -> None:
    fd, qd = _mayo_pair(tmp_path)
    rc, _, err = run(["score", str(fd), str(qd), "--npy-scale", "hu"], capsys)
    assert_one_error_line(rc, err, "fd.npy", "cannot be a CT slice in HU", "--npy-scale mayo")


def test_8bit_images_say_the_window_their_scores_rest_on(tmp_path: Path, capsys) -> None:
    """PNGs scored without --window: the default window is said, with the grey levels the
    soft-tissue metric covers, and the JSON records the window of each image; a stated window
    is recorded and its coverage said, without the default's note."""
    from PIL import Image

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (48, 48)).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "fd.png")
    Image.fromarray(np.clip(grey.astype(int) + 3, 0, 255).astype(np.uint8)).save(
        tmp_path / "qd.png")
    args = ["score", str(tmp_path / "fd.png"), str(tmp_path / "qd.png"),
            "--json", str(tmp_path / "s.json")]
    rc, _, err = run(args, capsys)
    assert rc == 0, err
    assert err.count("read as HU through the default window, lung [-1350, 150] HU") == 1
    assert ("the window metric's [-160, 240] HU covers their grey levels 202-255 only" in err)
    record = json.loads((tmp_path / "s.json").read_text())
    assert record["read_through_window_hu"] == {
        str(tmp_path / n): [-1350.0, 150.0] for n in ("fd.png", "qd.png")}
    rc, _, err = run([*args, "--window", "-160,240"], capsys)
    assert rc == 0 and "default window" not in err and "grey levels 0-255 only" in err
    assert json.loads((tmp_path / "s.json").read_text())["read_through_window_hu"][
        str(tmp_path / "qd.png")] == [-160.0, 240.0]
