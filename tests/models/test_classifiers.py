"""Classifiers: registry, HU preprocessing, weights save/load and strict pretrained loading."""

from __future__ import annotations

import pytest
import torch

from lowdose.errors import LowdoseError
from lowdose.models.base import classifiers
from lowdose.models.classifiers import (
    ClassifierSpec,
    build_classifier,
    load_backbone_weights,
    load_classifier,
    save_classifier,
)

torch.set_num_threads(1)


@pytest.mark.parametrize("arch", ["densenet121", "resnet18"])
def test_registered_archs_give_logits_from_hu(arch: str) -> None:
    assert arch in classifiers.names()
    net = build_classifier(arch, ClassifierSpec(arch=arch, input_size=32)).eval()
    hu = torch.full((2, 1, 40, 50), -1000.0)
    assert net(hu).shape == (2, 4)
    first = next(net.backbone.parameters())
    assert first.shape[1] == 1  # one input channel


def test_preprocess_window_and_percentile() -> None:
    spec = ClassifierSpec(arch="resnet18", input_size=8, intensity="window")
    net = build_classifier("resnet18", spec)
    hu = torch.tensor([-2000.0, -1350.0, -600.0, 150.0, 1000.0]).view(1, 1, 1, 5)
    hu = hu.expand(1, 1, 8, 5)
    x = net.preprocess(hu)  # window [-1350, 150] -> [0, 1], then (x - .5) / .25
    assert x.shape == (1, 1, 8, 8)
    assert float(x.min()) == pytest.approx(-2.0) and float(x.max()) == pytest.approx(2.0)
    # Percentile mode removes a global gain/offset of the displayed intensities.
    spec_p = ClassifierSpec(arch="resnet18", input_size=16, intensity="percentile")
    net_p = build_classifier("resnet18", spec_p)
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 1, 16, 16, generator=g) * 600 - 1000
    dim = (img + 1350) * 0.7 - 1350  # a darker export of the same slice
    torch.testing.assert_close(net_p.preprocess(img), net_p.preprocess(dim), atol=1e-4, rtol=0)


def test_save_load_round_trip_and_class_mismatch(tmp_path) -> None:
    torch.manual_seed(0)
    net = build_classifier("resnet18", ClassifierSpec(arch="resnet18", input_size=32)).eval()
    path = save_classifier(net, tmp_path / "clf.safetensors", card={"note": "test"})
    again = load_classifier(path, device="cpu")
    x = torch.randn(2, 1, 32, 32) * 300 - 500
    torch.testing.assert_close(net(x), again(x))
    with pytest.raises(LowdoseError, match="4 classes"):
        load_classifier(path, device="cpu", expected_classes=["a", "b"])
    (tmp_path / "clf.json").unlink()
    with pytest.raises(LowdoseError, match="json"):
        load_classifier(path)


def test_pretrained_weights_strict_mapping(tmp_path) -> None:
    from safetensors.torch import save_file

    spec = ClassifierSpec(arch="resnet18", input_size=32)
    net = build_classifier("resnet18", spec)
    # An ImageNet-like file: 3-channel stem, 1000-class head, "module." prefix.
    src = {f"module.{k}": v.clone() for k, v in net.backbone.state_dict().items()}
    src["module.conv1.weight"] = torch.ones(64, 3, 7, 7)
    src["module.fc.weight"] = torch.zeros(1000, 512)
    src["module.fc.bias"] = torch.zeros(1000)
    save_file(src, str(tmp_path / "w.safetensors"))
    kept = load_backbone_weights(net, tmp_path / "w.safetensors")
    assert sorted(kept) == ["fc.bias", "fc.weight"]
    assert torch.all(net.backbone.conv1.weight == 3.0)  # colour channels summed
    bad = dict(src)
    bad.pop("module.layer1.0.conv1.weight")
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(LowdoseError, match="missing"):
        load_backbone_weights(net, tmp_path / "bad.safetensors")
    torch.save({k: v for k, v in src.items()}, tmp_path / "w.pt")
    with pytest.raises(LowdoseError, match="trust-pickle"):
        load_backbone_weights(net, tmp_path / "w.pt")
    assert sorted(load_backbone_weights(net, tmp_path / "w.pt", trust_pickle=True)) == sorted(kept)


def test_load_classifier_reads_a_training_checkpoint_and_refuses_other_files(tmp_path) -> None:
    """A checkpoint's weight average is loaded (its raw weights when it keeps none), with the
    spec from its config; a denoiser's file and a pickle are refused, naming the file."""
    from lowdose.models.loading import save_weights
    from lowdose.training.classifier import preset

    spec = ClassifierSpec(arch="resnet18", input_size=32)
    torch.manual_seed(0)
    raw = build_classifier("resnet18", spec).eval()
    torch.manual_seed(1)
    averaged = build_classifier("resnet18", spec).eval()
    config = {"family": "classifier", **preset("demo", arch="resnet18", input_size=32).to_dict()}
    state = {**{f"classifier.backbone.{k}": v for k, v in raw.backbone.state_dict().items()},
             **{f"classifier_ema.module.backbone.{k}": v
                for k, v in averaged.backbone.state_dict().items()},
             "classifier_ema.updates": torch.tensor(3)}
    step = tmp_path / "checkpoints" / "step-00000003"
    save_weights(state, config, step / "model.safetensors")
    (tmp_path / "checkpoints" / "latest").write_text("step-00000003")
    x = torch.randn(2, 1, 40, 40) * 300 - 500
    for given in (step, step / "model.safetensors", tmp_path / "checkpoints"):
        loaded = load_classifier(given, device="cpu")
        assert loaded.spec.input_size == 32 and loaded.spec.slice_size == 96
        torch.testing.assert_close(loaded(x), averaged(x))
    no_average = {k: v for k, v in state.items() if k.startswith("classifier.")}
    save_weights(no_average, config, tmp_path / "plain" / "model.safetensors")
    torch.testing.assert_close(load_classifier(tmp_path / "plain", device="cpu")(x), raw(x))
    denoiser = save_weights({"w": torch.zeros(1)}, {"format": "lowdose", "model": "unet"},
                            tmp_path / "unet.safetensors")
    with pytest.raises(LowdoseError, match=r"unet.safetensors: a 'unet' model, not a classifier"):
        load_classifier(denoiser)
    torch.save(raw.backbone.state_dict(), tmp_path / "weights.pth")
    with pytest.raises(LowdoseError, match=r"weights.pth: a pickle file, refused"):
        load_classifier(tmp_path / "weights.pth")
