from __future__ import annotations

import numpy as np
import pytest

from lowdose import CTImage, LowdoseError, Window
from lowdose.cli.main import main
from lowdose.io.atomic import atomic_path, atomic_write_json
from lowdose.registry import Registry


def test_window_roundtrip_and_named():
    w = Window.named("abdomen")
    assert (w.lo, w.hi) == (-160.0, 240.0)
    hu = np.array([-500.0, -160.0, 40.0, 240.0, 900.0], np.float32)
    np.testing.assert_allclose(w.to_unit(hu), [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(w.from_unit(w.to_unit(hu)), [-160, -160, 40, 240, 240])
    with pytest.raises(ValueError):
        Window(10, 10)
    with pytest.raises(ValueError, match="known"):
        Window.named("nope")


def test_ctimage_slices_and_with_pixels():
    img = CTImage(np.zeros((8, 8)), spacing=(0.5, 0.5), metadata={"source": "x"})
    assert img.hu.dtype == np.float32 and not img.is_volume
    out = img.with_pixels(img.slices() + 10)
    assert out.shape == (8, 8) and out.hu[0, 0] == 10 and out.metadata["source"] == "x"
    with pytest.raises(ValueError):
        CTImage(np.zeros((8, 8)), spacing=(1.0,))


@pytest.mark.parametrize(("row", "col", "plane"), [
    ((1, 0, 0), (0, 1, 0), "axial"),
    ((1, 0, 0), (0, 0, -1), "coronal"),
    ((0, 1, 0), (0, 0, -1), "sagittal"),
    ((0, -1, 0), (-1, 0, 0), "axial"),  # flipped axes: still axial
    ((1, 0, 0), (0, np.cos(0.7), -np.sin(0.7)), "oblique"),  # tilted 40 degrees
    ((1, 0, 0), (0, np.cos(0.5), -np.sin(0.5)), "axial"),  # a gantry tilt of 29 degrees
])
def test_ctimage_orientation_from_its_direction(row, col, plane):
    direction = np.column_stack([row, col, np.cross(row, col)])
    img = CTImage(np.zeros((2, 4, 4)), spacing=(1.0, 0.5, 0.5), direction=direction)
    assert img.orientation == plane
    assert CTImage(np.zeros((4, 4)), spacing=(0.5, 0.5)).orientation is None


def test_registry_register_get_and_unknown():
    reg: Registry[int] = Registry("thing")
    reg.register("a")(1)
    assert reg.get("a") == 1 and "a" in reg and reg.names() == ["a"]
    with pytest.raises(LowdoseError, match="unknown thing 'b'; known: a"):
        reg.get("b")
    with pytest.raises(ValueError):
        reg.register("a")(2)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_atomic_write_json_is_strict_json(tmp_path):
    import json

    record = {"psnr": [float("inf"), 41.5], "rmse": {"bone": float("nan")}, "n": (1, 2)}
    path = atomic_write_json(tmp_path / "scores.json", record)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text and text.endswith("}\n")
    assert json.loads(text) == {"psnr": [None, 41.5], "rmse": {"bone": None}, "n": [1, 2]}


def test_cli_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert "lowdose" in capsys.readouterr().out
    assert main(["--help"]) == 0


def test_atomic_path_gives_the_umask_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "report.html") as tmp:
            tmp.write_text("<html></html>")
    finally:
        os.umask(mask)
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o644


def test_ctimage_takes_a_tensor_that_requires_grad() -> None:
    """np.asarray refused it ('Can't call numpy() on Tensor that requires grad')."""
    import torch

    hu = torch.zeros(4, 4, requires_grad=True)
    image = CTImage(hu * 2, spacing=(1.0, 1.0))
    assert image.hu.dtype == np.float32 and image.hu.shape == (4, 4)
