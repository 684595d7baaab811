"""Plugin denoisers: factory functions, --set typing from annotations and defaults, the label
of a denoiser without a name, and autograd inside ``denoise``."""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
import pytest
import torch

from lowdose import CTImage, LowdoseError
from lowdose.cli.denoise import list_denoisers
from lowdose.models.base import Denoiser, denoisers
from lowdose.models.classical import TotalVariation
from lowdose.models.loading import denoiser_settings, load_denoiser, parse_settings


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch):
    denoisers.names()  # the built-ins first, then the plugins into a copy
    monkeypatch.setattr(denoisers, "_entries", dict(denoisers._entries))
    return denoisers


def test_a_factory_function_is_listed_and_loaded(plugins):
    @plugins.register("tv-strong")
    def tv_strong(weight_hu: float = 60.0) -> TotalVariation:
        """TV with a strong fixed weight."""
        return TotalVariation(weight_hu=weight_hu)

    @plugins.register("not-a-denoiser")
    def wrong() -> str:
        return "no"

    rows = dict(list_denoisers())
    assert rows["tv-strong"] == "TV with a strong fixed weight. [--set weight_hu]"
    assert "--set" not in rows["not-a-denoiser"]
    assert load_denoiser("tv-strong").weight_hu == 60.0
    assert load_denoiser("tv-strong:weight_hu=20").weight_hu == 20.0
    assert parse_settings("tv-strong", ["weight_hu=30"]) == {"weight_hu": 30.0}
    with pytest.raises(LowdoseError, match="not-a-denoiser: its registered factory returned a "
                       "str, not a Denoiser"):
        load_denoiser("not-a-denoiser")


class _Blur(Denoiser):
    """Settings typed every way a plugin may type them."""

    def __init__(self, sigma: Optional[float] = None, passes=1, mode=None,  # noqa: UP045
                 scale: float | None = 1.0, edge: Literal["reflect", "wrap"] = "reflect",
                 **extra) -> None:
        self.sigma, self.passes, self.mode, self.scale, self.edge = sigma, passes, mode, scale, edge

    def denoise(self, hu: torch.Tensor) -> torch.Tensor:
        return hu


def test_settings_typed_by_optional_union_literal_and_defaults(plugins):
    plugins.register("blur-opt")(_Blur)
    none = type(None)
    assert denoiser_settings("blur-opt") == {
        "sigma": (float, none), "passes": (int,), "mode": (str, none), "scale": (float, none),
        "edge": (str,)}
    assert parse_settings("blur-opt", ["sigma=2", "passes=3", "mode=none", "scale=none"]) == {
        "sigma": 2.0, "passes": 3, "mode": None, "scale": None}
    assert parse_settings("blur-opt", ["sigma=none", "mode=x"]) == {"sigma": None, "mode": "x"}
    with pytest.raises(LowdoseError, match=r"--set sigma=big: expected float or none$"):
        parse_settings("blur-opt", ["sigma=big"])
    with pytest.raises(LowdoseError, match=r"--set passes=2\.5: expected int$"):
        parse_settings("blur-opt", ["passes=2.5"])
    assert load_denoiser("blur-opt:passes=2").passes == 2


def test_a_denoiser_without_a_name_is_labelled_by_its_registry_name(plugins):
    class Identity(Denoiser):
        def denoise(self, hu):
            return hu

    assert Identity.name == "Identity"  # before it is registered: its class name
    plugins.register("identity")(Identity)
    den = load_denoiser("identity")
    assert den.name == "identity"
    out = den.denoise_image(CTImage(np.zeros((8, 8), np.float32), (1.0, 1.0)))
    assert out.metadata["denoiser"] == "identity"
    assert TotalVariation.name == "tv"  # a name of its own is kept


def test_autograd_inside_denoise_as_the_base_class_says():
    class GradSteps(Denoiser):
        def denoise(self, hu):
            with torch.inference_mode(False), torch.enable_grad():
                target = hu.clone()
                x = hu.clone().requires_grad_(True)
                opt = torch.optim.SGD([x], lr=0.1)
                for _ in range(3):
                    opt.zero_grad()
                    loss = ((x - target) ** 2).sum() + ((x[..., 1:, :] - x[..., :-1, :]) ** 2).sum()
                    loss.backward()
                    opt.step()
            return x.detach()

    hu = np.full((16, 16), 40.0, np.float32)
    hu[::2] += 10.0
    out = GradSteps().denoise_image(CTImage(hu, (1.0, 1.0))).hu
    assert out.shape == (16, 16) and out.std() < hu.std()


def test_learned_denoisers_still_refuse_settings():
    with pytest.raises(LowdoseError, match="not 'unet'"):
        parse_settings("unet", ["strength=2"])


class _Flat(Denoiser):
    """A plugin's bug: drops the channel axis."""

    name = "flat"

    def denoise(self, hu: torch.Tensor) -> torch.Tensor:
        return hu[:, 0]


class _Unit(Denoiser):
    """A plugin's bug: returns its network's [0, 1] scale, not HU."""

    name = "unit"

    def denoise(self, hu: torch.Tensor) -> torch.Tensor:
        return ((hu.clamp(-1024, 3072) + 1024) / 4096).clone()


def test_a_denoiser_returning_another_shape_or_not_hu_is_said() -> None:
    """Another shape ended in numpy's broadcast error; a [0, 1] output was written as HU."""
    image = CTImage(np.linspace(-1000, 400, 2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16),
                    spacing=(1.0, 0.7, 0.7))
    with pytest.raises(LowdoseError, match=r"denoiser flat: returned \(2, 16, 16\) for input of "
                                           r"shape \(2, 1, 16, 16\)"):
        _Flat().denoise_image(image)
    with pytest.warns(UserWarning, match=r"denoiser unit: returned values in .* denoise must "
                                         "return HU"):
        _Unit().denoise_image(image)
