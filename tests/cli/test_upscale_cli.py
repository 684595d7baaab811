"""``lowdose upscale`` on a small generated DICOM series: spacing halved, geometry consistent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lowdose.image import CTImage

torch.set_num_threads(1)


def _weights(tmp_path: Path, scale: int) -> Path:
    from lowdose.models.gan_circle import CircleGenerator
    from lowdose.models.loading import save_weights
    from lowdose.models.network import FORMAT

    torch.manual_seed(0)
    arch = {"scale": scale, "f0": 16}
    net = CircleGenerator(**arch)
    config = {"format": FORMAT, "format_version": 1, "model": "gan-circle", "scale": scale,
              "arch": arch, "hu_range": [-1024.0, 3072.0], "metadata": {"note": "test"}}
    return save_weights(net.state_dict(), config, tmp_path / f"tiny-x{scale}.safetensors")


def _series(tmp_path: Path) -> Path:
    from lowdose.io import write_ct

    yy, xx = np.mgrid[:32, :40]
    body = ((yy - 16) ** 2 / 196 + (xx - 20) ** 2 / 300 < 1).astype(np.float32)
    hu = np.stack([-1000 + 1040 * body + 30 * k for k in range(3)]).astype(np.float32)
    direction = np.eye(3)
    image = CTImage(hu, spacing=(2.5, 0.8, 0.7), origin=(-14.0, -12.8, 100.0),
                    direction=direction)
    return write_ct(image, tmp_path / "series")


def test_upscale_dicom_series_x2(tmp_path: Path) -> None:
    from lowdose.cli.main import main
    from lowdose.io import read_ct

    src = _series(tmp_path)
    weights = _weights(tmp_path, 2)
    dst = tmp_path / "series-x2"
    assert main(["upscale", str(src), str(dst), "--scale", "2", "--model", str(weights)]) == 0
    before, after = read_ct(src), read_ct(dst)
    assert after.shape == (3, 64, 80)
    assert np.allclose(after.spacing, (2.5, 0.4, 0.35), atol=1e-4)
    # Same field of view: the first pixel centre moves back by a quarter of an old pixel.
    assert np.allclose(after.origin, (-14.0 - 0.25 * 0.7, -12.8 - 0.25 * 0.8, 100.0), atol=1e-3)
    assert np.allclose(after.direction, before.direction)
    # A derived series, not the input's.
    assert after.metadata["series_uid"] != before.metadata["series_uid"]
    # The body stays where it was: compare with a 2x2-binned version of the output.
    binned = after.hu.reshape(3, 32, 2, 40, 2).mean(axis=(2, 4))
    assert np.corrcoef(binned.ravel(), before.hu.ravel())[0, 1] > 0.95


def test_upscale_rejects_wrong_scale_and_overwrite(tmp_path: Path, capsys) -> None:
    from lowdose.cli.main import main

    src = _series(tmp_path)
    weights = _weights(tmp_path, 2)
    assert main(["upscale", str(src), str(tmp_path / "o"), "--scale", "4",
                 "--model", str(weights)]) == 2
    assert "not x4" in capsys.readouterr().err
    assert main(["upscale", str(src), str(src), "--model", str(weights)]) == 2
    assert main(["upscale", str(src), str(tmp_path / "o"), "--scale", "3"]) == 2
    assert "2 or 4" in capsys.readouterr().err
    assert main(["upscale", str(src), str(tmp_path / "o"), "--model", str(weights),
                 "--precision", "fp16"]) == 2
    assert "use one of fp32, bf16" in capsys.readouterr().err


@pytest.mark.parametrize("scale", [4])
def test_upscale_nifti_x4(tmp_path: Path, scale: int) -> None:
    from lowdose.cli.upscale import upscale_path
    from lowdose.io import read_ct, write_ct

    src = write_ct(CTImage(np.zeros((16, 12), np.float32) + 40, spacing=(1.0, 1.0)),
                   tmp_path / "a.nii.gz")
    [out] = upscale_path(src, tmp_path / "b.nii.gz", scale, str(_weights(tmp_path, scale)),
                         progress=False)
    img = read_ct(out)
    assert img.shape[-2:] == (64, 48)
    assert np.allclose(img.spacing[-2:], (0.25, 0.25))


def _shipped() -> list[tuple[str, int]]:
    from lowdose.models.gan_circle import shipped_upscalers

    return shipped_upscalers()


@pytest.mark.parametrize(("name", "scale"), _shipped())
def test_each_shipped_upscaler_loads_by_name_has_a_card_and_upscales(
        name: str, scale: int) -> None:
    from lowdose.models.gan_circle import load_upscaler, shipped_upscaler_path

    up = load_upscaler(name, scale=scale, device="cpu")
    assert up.scale == scale
    assert shipped_upscaler_path(name, scale).with_suffix(".md").is_file()
    hu = torch.full((1, 1, 16, 16), 40.0)
    hu[..., 4:12, 4:12] = 300.0
    out = up.upscale(hu)
    assert out.shape == (1, 1, 16 * scale, 16 * scale)
    # Same image: the mean of each s x s block follows the input within a few HU.
    blocks = out.reshape(16, scale, 16, scale).mean(dim=(1, 3))
    assert float((blocks - hu[0, 0]).abs().mean()) < 30


def test_upscale_list_names_the_shipped_upscalers_and_refuses_missing_scales(
        capsys: pytest.CaptureFixture[str]) -> None:
    from lowdose.cli.main import main
    from lowdose.errors import LowdoseError
    from lowdose.models.gan_circle import SHIPPED_UPSCALERS, load_upscaler

    assert main(["upscale", "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == [name for name, _ in _shipped()]
    assert main(["upscale"]) == 2
    assert "give an INPUT and an OUTPUT" in capsys.readouterr().err
    for name in SHIPPED_UPSCALERS:
        have = {s for n, s in _shipped() if n == name}
        for scale in {2, 4} - have:
            with pytest.raises(LowdoseError, match=f"no shipped x{scale} weights"):
                load_upscaler(name, scale=scale)
    with pytest.raises(LowdoseError, match="neither a shipped upscaler"):
        load_upscaler("gan-circle-x9", scale=2)


def test_upscale_a_folder_of_images_writes_each_under_its_name(tmp_path: Path) -> None:
    from lowdose.cli.upscale import upscale_path
    from lowdose.io import read_ct, write_ct

    folder = tmp_path / "pngs"
    for k in range(3):
        hu = np.full((12, 10), -600.0 + 100 * k, np.float32)
        write_ct(CTImage(hu, spacing=(1.4, 1.4)), folder / f"s{k}.png")
    written = upscale_path(folder, tmp_path / "out", 2, str(_weights(tmp_path, 2)),
                           progress=False)
    assert [p.name for p in written] == ["s0.png", "s1.png", "s2.png"]
    for k, path in enumerate(written):
        out = read_ct(path)
        assert out.shape == (24, 20)
        assert abs(float(np.median(out.hu)) - (-600.0 + 100 * k)) < 60


def test_upscale_warns_once_on_pixels_outside_its_training_scale_and_on_reformats(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Weights that record their inputs' pixel sizes warn on much finer slices; a coronal
    series warns that the model saw axial slices; each note once, whatever the number of
    inputs; slices inside the range and axial say nothing."""
    from lowdose.cli.main import main
    from lowdose.io import write_ct
    from lowdose.models.loading import read_weights, save_weights
    from tests.io.test_dicom import make_series

    state, config = read_weights(_weights(tmp_path, 2))
    config["metadata"]["train_pixel_mm"] = [1.2, 1.9]
    weights = save_weights(state, config, tmp_path / "px.safetensors")
    hu = np.round(np.random.default_rng(0).normal(40, 20, (2, 16, 16))).astype(np.float32)
    axial_fine = make_series(tmp_path / "ax", hu, series_uid="1.2.3.5")  # 0.8 x 0.7 mm: 0.75
    coronal = make_series(tmp_path / "cor", hu, iop=(1, 0, 0, 0, 0, -1), series_uid="1.2.3.4",
                          pixel_spacing=(1.4, 1.4))
    capsys.readouterr()
    assert main(["upscale", str(axial_fine), str(tmp_path / "a"), "-m", str(weights)]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: gan-circle x2 was trained on 1.20-1.90 mm pixels") == 1
    assert "0.75 mm pixels, outside its training scale" in err and "coronal" not in err
    assert main(["upscale", str(coronal), str(tmp_path / "c"), "-m", str(weights)]) == 0
    err = capsys.readouterr().err
    assert err.count("gan-circle x2: these slices are coronal") == 1
    assert "upscale it and reformat the result" in err and "training scale" not in err
    for k in range(3):  # three fine images in one folder: one note
        write_ct(CTImage(hu[0] + k, spacing=(0.7, 0.7)), tmp_path / "many" / f"s{k}.nii.gz")
    assert main(["upscale", str(tmp_path / "many"), str(tmp_path / "m"), "-m", str(weights)]) == 0
    assert capsys.readouterr().err.count("outside its training scale") == 1
