"""load_denoiser: names, weight files, checkpoint folders, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from lowdose.errors import LowdoseError
from lowdose.models.base import denoisers
from lowdose.models.loading import load_denoiser, read_weights, save_weights
from lowdose.models.network import NetworkDenoiser


class _TinyNet(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, width, 3, padding=1)
        self.b = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(torch.relu(self.a(x)))


class _Tiny(NetworkDenoiser):
    name = "tiny-test"
    arch_class = _TinyNet
    default_arch: ClassVar[dict[str, Any]] = {"width": 4}


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> type[_Tiny]:
    denoisers.names()  # autoload first, then add the stand-in
    monkeypatch.setitem(denoisers._entries, "tiny-test", _Tiny)
    return _Tiny


def _save(tmp_path: Path, d: NetworkDenoiser, name: str = "w.safetensors") -> Path:
    return save_weights(d.net.state_dict(), d.config(), tmp_path / name)


def test_names_load_classical() -> None:
    assert load_denoiser("bm3d").name == "bm3d"
    assert load_denoiser("tv").name == "tv"


def test_settings_are_typed_by_the_constructor() -> None:
    from lowdose.models.loading import parse_settings

    assert parse_settings("bm3d", ["sigma_hu=40", "noise_model = ct", "noise_factor=none"]) == {
        "sigma_hu": 40.0, "noise_model": "ct", "noise_factor": None}
    assert parse_settings("tv", ["max_num_iter=50"]) == {"max_num_iter": 50}
    assert parse_settings("unet", []) == {}
    with pytest.raises(LowdoseError, match=r"max_num_iter=5\.5: expected int"):
        parse_settings("tv", ["max_num_iter=5.5"])
    with pytest.raises(LowdoseError, match="not 'unet'"):
        parse_settings("unet", ["strength=2"])
    assert load_denoiser("bm3d", settings={"noise_model": "ct"}).noise_factor == 1.0
    with pytest.raises(LowdoseError, match="sigma_hu applies to the white"):
        load_denoiser("bm3d", settings={"noise_model": "ct", "sigma_hu": 40.0})


def test_round_trip(tmp_path: Path, tiny: type[_Tiny]) -> None:
    d = tiny.untrained(metadata={"dose": 0.25})
    path = _save(tmp_path, d)
    assert json.loads(path.with_suffix(".json").read_text())["model"] == "tiny-test"
    loaded = load_denoiser(str(path), device="cpu")
    x = torch.randn(1, 1, 24, 24) * 50
    assert torch.allclose(loaded.denoise(x), d.denoise(x), atol=1e-4)
    assert loaded.metadata["dose"] == 0.25


def test_config_from_sidecar_json(tmp_path: Path, tiny: type[_Tiny]) -> None:
    from safetensors.torch import save_file

    d = tiny.untrained()
    state = {k: v.contiguous() for k, v in d.net.state_dict().items()}
    save_file(state, str(tmp_path / "m.safetensors"))  # no metadata
    (tmp_path / "m.json").write_text(json.dumps(d.config()))
    assert isinstance(load_denoiser(str(tmp_path / "m.safetensors")), _Tiny)


def test_unknown_name() -> None:
    with pytest.raises(LowdoseError, match="neither a known denoiser"):
        load_denoiser("no-such-model")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LowdoseError, match="no such weight file"):
        read_weights(tmp_path / "nope.safetensors")


def test_truncated_file(tmp_path: Path, tiny: type[_Tiny]) -> None:
    path = _save(tmp_path, tiny.untrained())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LowdoseError, match="truncated or corrupt"):
        load_denoiser(str(path))


def test_pickle_refused_unless_trusted(tmp_path: Path, tiny: type[_Tiny]) -> None:
    d = tiny.untrained()
    path = tmp_path / "model.pt"
    torch.save({"config": d.config(), "state_dict": d.net.state_dict()}, path)
    with pytest.raises(LowdoseError, match="pickle checkpoint refused"):
        load_denoiser(str(path))
    assert isinstance(load_denoiser(str(path), trust_pickle=True), _Tiny)


def test_other_model_or_arch(tmp_path: Path, tiny: type[_Tiny]) -> None:
    d = tiny.untrained(arch={"width": 8})
    cfg = d.config()
    # weights of a wider network under a config that says width 4
    bad = save_weights(
        d.net.state_dict(), {**cfg, "arch": {"width": 4}}, tmp_path / "a.safetensors"
    )
    with pytest.raises(LowdoseError, match="do not fit"):
        load_denoiser(str(bad))
    up = save_weights(d.net.state_dict(), {**cfg, "scale": 2}, tmp_path / "b.safetensors")
    with pytest.raises(LowdoseError, match="x2 upscaler"):
        load_denoiser(str(up))
    other = save_weights(d.net.state_dict(), {**cfg, "format": "lowdose.classifier"},
                         tmp_path / "c.safetensors")
    with pytest.raises(LowdoseError, match="not a lowdose denoiser"):
        load_denoiser(str(other))


def test_not_weights_at_all(tmp_path: Path) -> None:
    path = tmp_path / "scan.safetensors"
    path.write_text("this is a CT report, not weights")
    with pytest.raises(LowdoseError):
        load_denoiser(str(path))


def test_a_name_may_carry_its_settings(tmp_path: Path) -> None:
    from lowdose.models.loading import split_spec

    assert load_denoiser("bm3d:noise_model=ct:noise_factor=1.1").noise_factor == 1.1
    path = tmp_path / "odd:name.safetensors"
    path.write_bytes(b"")
    assert split_spec(str(path)) == (str(path), [])  # an existing path stays a path
    with pytest.raises(LowdoseError, match="tv takes"):
        load_denoiser("tv:sigma_hu=3")


def test_a_setting_in_the_name_and_given_again_is_an_error_naming_it() -> None:
    """``bm3d:sigma_hu=40`` with ``--set sigma_hu=20``: neither value silently wins."""
    with pytest.raises(LowdoseError, match=r"--set sigma_hu=20.0: sigma_hu is also given in "
                       r"the model name \(bm3d:sigma_hu=40.0\)"):
        load_denoiser("bm3d:sigma_hu=40", settings={"sigma_hu": 20.0})
    with pytest.raises(LowdoseError, match="weight_hu"):
        load_denoiser("tv:weight_hu=30", settings={"weight_hu": 30.0})  # even the same value
    # Different settings in the name and by --set combine.
    tv = load_denoiser("tv:weight_hu=30", settings={"max_num_iter": 50})
    assert (tv.weight_hu, tv.max_num_iter) == (30.0, 50)


def test_a_setting_given_twice_is_an_error() -> None:
    from lowdose.models.loading import parse_settings

    with pytest.raises(LowdoseError, match="--set sigma_hu: given twice"):
        parse_settings("bm3d", ["sigma_hu=40", "sigma_hu=20"])
    with pytest.raises(LowdoseError, match="given twice"):
        load_denoiser("bm3d:sigma_hu=40:sigma_hu=20")


def test_a_classifier_is_refused_as_a_denoiser(tmp_path: Path) -> None:
    """A classifier's weights (saved, a checkpoint's with its config in the metadata, or a
    checkpoint folder whose config.json wraps the family config) are named as a classifier."""
    from lowdose.models.classifiers import ClassifierSpec, build_classifier, save_classifier

    net = build_classifier("resnet18", ClassifierSpec(arch="resnet18", input_size=32))
    saved = save_classifier(net, tmp_path / "clf.safetensors")
    family = {"family": "classifier", "arch": "resnet18", "input_size": 32}
    state = {f"classifier.backbone.{k}": v for k, v in net.backbone.state_dict().items()}
    in_metadata = save_weights(state, family, tmp_path / "step" / "model.safetensors")
    folder = tmp_path / "run"
    folder.mkdir()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"family": family, "trainer": {}}))
    for given in (saved, in_metadata, in_metadata.parent, folder):
        with pytest.raises(LowdoseError, match="a classifier checkpoint, not a denoiser"):
            load_denoiser(str(given))
