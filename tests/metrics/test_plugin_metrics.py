"""Plugin image metrics: ``metric(pred, target) -> float`` (design.md), with or without
``data_range``; a callable that breaks the contract is refused when registered."""

from __future__ import annotations

import numpy as np
import pytest

from lowdose import CTImage
from lowdose.evaluation.score import score_images
from lowdose.metrics.image import image_metrics, image_quality, resolve_range, takes_data_range
from lowdose.registry import RegistryError


@pytest.fixture
def metrics(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(image_metrics, "_entries", dict(image_metrics._entries))
    return image_metrics


def test_metric_without_a_range_is_called_once_under_its_name(metrics):
    calls = []

    @metrics.register("mae_hu")
    def mae_hu(pred, target) -> float:
        calls.append(1)
        return float(np.mean(np.abs(np.asarray(pred) - target)))

    @metrics.register("mae")
    def mae(pred, target, data_range="full") -> float:
        w = resolve_range(data_range)
        return float(np.mean(np.abs(w.to_unit(pred) - w.to_unit(target))))

    ref = np.zeros((16, 16), np.float32)
    out = image_quality(ref + 4.0, ref)
    assert out["mae_hu"] == pytest.approx(4.0) and len(calls) == 1
    assert "mae_hu_full" not in out
    assert out["mae_window"] == pytest.approx(0.01) and out["mae_full"] == pytest.approx(4 / 4096)
    assert out["psnr_window"] == pytest.approx(40.0, abs=1e-4)
    image = CTImage(ref, (1.0, 1.0))
    scores = score_images(image, {"plus4": image.with_pixels(ref + 4.0)})["plus4"]
    assert scores["mae_hu"] == pytest.approx(4.0) and "mae_window" in scores


def test_metric_that_cannot_be_called_so_is_refused_at_registration(metrics):
    with pytest.raises(RegistryError, match=r"image metric 'one' \(.*\) takes \(pred\); a metric "
                       r"is metric\(pred, target\) -> float"):
        metrics.register("one")(lambda pred: 0.0)
    with pytest.raises(RegistryError, match="is not callable"):
        metrics.register("number")(3.0)
    assert "one" not in metrics and "number" not in metrics


def test_takes_data_range():
    assert takes_data_range(lambda pred, target, **kw: 0.0)
    assert not takes_data_range(lambda pred, target, scale=1: 0.0)
