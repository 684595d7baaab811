"""``lowdose compare``: a full-dose scan in, tables, figure and images out; one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lowdose.io import write_ct
from tests.cli.cli_helpers import run
from tests.evaluation.test_compare import chest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_compare_a_volume_prints_the_tables_and_writes_its_files(tmp_path: Path, capsys) -> None:
    src = write_ct(chest(4), tmp_path / "fd.nii.gz")
    rc, out, err = run(["compare", str(src), str(tmp_path / "cmp"), "--doses", "0.25,0.1",
                        "--models", "tv,bm3d", "--slices", "2", "--save-images"], capsys)
    assert rc == 0, err
    assert "## Dose 0.25" in out and "## Dose 0.1" in out and "| bm3d |" in out
    for name in ("compare.md", "compare.json", "compare.png"):
        assert f"wrote {tmp_path / 'cmp' / name}" in out
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["scored_slices"] == 2 and saved["of_slices"] == 4
    assert sorted(saved["doses"]["0.1"]["methods"]) == ["bm3d", "low-dose input", "tv"]
    assert saved["config"]["denoisers"] == ["tv", "bm3d"]
    assert (tmp_path / "cmp" / "dose-0.1" / "bm3d.nii.gz").is_file()


def test_compare_warns_once_on_a_coronal_series(tmp_path: Path, capsys) -> None:
    from tests.io.test_dicom import make_series

    hu = np.round(chest(2, size=64).hu)
    coronal = make_series(tmp_path / "cor", hu, iop=(1, 0, 0, 0, 0, -1), series_uid="1.2.3.4")
    rc, _, err = run(["compare", str(coronal), str(tmp_path / "c"), "-m", "tv"], capsys)
    assert rc == 0, err
    assert err.count("tv: these slices are coronal") == 1
    assert err.count("the projection physics simulates an axial scan") == 1


@pytest.mark.parametrize(("args", "message"), [
    (["{tmp}/none.nii.gz", "{tmp}/o"], "no such file"),
    (["{src}", "{src}"], "must not be the input"),
    (["{series}", "{series}/cmp"], "must not be the input or inside it"),
    (["{src}", "{tmp}/o", "--doses", "0.25,x"], "--doses '0.25,x'"),
    (["{src}", "{tmp}/o", "--doses", "2"], "(0, 1]"),
    (["{src}", "{tmp}/o", "-m", "tv,nope"], "nope"),
    (["{src}", "{tmp}/o", "--method", "image-poisson", "--calibration", "{src}"],
     "only the projection method"),
    (["{src}", "{tmp}"], "must not hold the input"),
    (["{src}", "{series}"], "holds what lowdose compare does not write"),
    # These three blamed a classical denoiser, named --set, or ran every denoiser.
    (["{src}", "{tmp}/o", "-m", "tv", "--precision", "bf8"], "precision 'bf8': use one of"),
    (["{src}", "{tmp}/o", "-m", "unet:strength=2"], "settings (--set, or unet:key=value)"),
    (["{src}", "{tmp}/o", "-m", ","], "-m ',': names no denoiser"),
])
def test_bad_input_is_one_error_line(tmp_path: Path, capsys, args: list[str],
                                     message: str) -> None:
    src = write_ct(chest(1, size=64), tmp_path / "fd.nii.gz")
    series = write_ct(chest(2, size=64), tmp_path / "series")
    from PIL import Image

    png = tmp_path / "plain.png"  # 8-bit grey levels, no lowdose window recorded
    Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)).save(png)
    argv = [a.format(tmp=tmp_path, src=src, series=series, png=png) for a in args]
    rc, _, err = run(["compare", *argv], capsys)
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert rc == 2 and len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_an_8bit_png_is_read_through_the_lung_window_and_the_report_says_so(
        tmp_path: Path, capsys) -> None:
    """As denoise, score and info read it (the README's convention), not refused."""
    from PIL import Image

    png = tmp_path / "plain.png"  # 8-bit grey levels, no lowdose window recorded
    Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)).save(png)
    rc, _, err = run(["compare", str(png), str(tmp_path / "c"), "-m", "tv", "--method",
                      "image-poisson"], capsys)
    assert rc == 0, err
    note = "read as HU through the default window, lung [-1350, 150] HU"
    assert note in err and note in (tmp_path / "c" / "compare.md").read_text()
    rc, _, err = run(["compare", str(png), str(tmp_path / "d"), "-m", "tv", "--method",
                      "image-poisson", "--window", "lung"], capsys)
    assert rc == 0 and "default window" not in err, err


def test_a_second_compare_into_the_same_folder_leaves_no_image_of_the_first(
        tmp_path: Path, capsys) -> None:
    src = write_ct(chest(1, size=64), tmp_path / "fd.nii.gz")
    common = ["--method", "image-poisson", "--save-images"]
    rc, _, err = run(["compare", str(src), str(tmp_path / "cmp"), "-m", "tv,tv:weight_hu=60",
                      *common], capsys)
    assert rc == 0, err
    rc, _, err = run(["compare", str(src), str(tmp_path / "cmp"), "-m", "tv", *common], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "cmp" / "dose-0.25").iterdir()) == [
        "low-dose.nii.gz", "tv.nii.gz"]


@pytest.mark.integration
def test_real_full_dose_slice(shared_data: Path, tmp_path: Path, capsys) -> None:
    fd = sorted((shared_data / "mayo-l506-pairs" / "dicom").glob("*_FD_*"))[0]
    rc, _, err = run(["compare", str(fd), str(tmp_path / "c"), "--doses", "0.1", "-m", "tv",
                      "--relative-dose"], capsys)
    assert rc == 0, err
    saved = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert saved["doses"]["0.1"]["methods"]["tv"]["gain_db_full"] > 2.0
