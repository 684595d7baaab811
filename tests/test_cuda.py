"""The GPU path: every shipped learned model gives the CPU's restoration on CUDA (fp32 and bf16),
the x2 upscaler too, and the one trainer trains a supervised and a GAN family there in mixed
precision, checkpoints and resumes.

Skipped without a CUDA GPU (CI has none): ``benchmarks/gpu_check.sh`` runs them on a lent GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lowdose.io.phantom import phantom_slice
from lowdose.models.loading import WEIGHTS_DIR, shipped_learned

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"),
]


def _noisy_slice(size: int = 256) -> torch.Tensor:
    """A phantom chest slice with 40 HU of white noise, ``(1, 1, size, size)`` HU."""
    hu = torch.from_numpy(phantom_slice("adenocarcinoma", size, seed=3))
    noise = torch.randn(hu.shape, generator=torch.Generator().manual_seed(0))
    return (hu + 40.0 * noise)[None, None]


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).pow(2).mean().sqrt())


@pytest.mark.parametrize("name", shipped_learned())
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_restoration_matches_the_cpu(name: str, precision: str) -> None:
    """The GPU's output differs from the CPU's fp32 output by a small share of the change the
    model makes (TF32 convolutions and bf16 autocast round differently, the restoration stays)."""
    from lowdose.models.loading import load_denoiser

    hu = _noisy_slice()
    cpu = load_denoiser(name, device="cpu").denoise(hu)
    gpu = load_denoiser(name, device="cuda", precision=precision).denoise(hu.cuda())
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    change = _rms(cpu, hu)
    assert change > 5.0  # the model does restore this slice
    limit = 0.05 if precision == "fp32" else 0.15
    assert _rms(gpu.cpu(), cpu) < limit * change, (name, precision, _rms(gpu.cpu(), cpu), change)


def test_cuda_upscale_matches_the_cpu() -> None:
    from lowdose.models.gan_circle import load_upscaler

    if not (WEIGHTS_DIR / "gan-circle-x2.safetensors").is_file():
        pytest.skip("x2 weights not shipped")
    hu = _noisy_slice(128)
    cpu = load_upscaler(scale=2, device="cpu").upscale(hu)
    gpu = load_upscaler(scale=2, device="cuda", precision="bf16").upscale(hu.cuda())
    assert gpu.shape == cpu.shape == (1, 1, 256, 256)
    bicubic = torch.nn.functional.interpolate(hu, scale_factor=2, mode="bicubic")
    assert _rms(gpu.cpu(), cpu) < 0.15 * _rms(cpu, bicubic)


def _phantom_full_dose(n: int = 6, size: int = 96) -> list[np.ndarray]:
    return [phantom_slice("normal", size, seed=k).astype(np.float32) for k in range(n)]


def test_supervised_training_in_bf16_on_cuda_lowers_the_loss_and_resumes(tmp_path: Path) -> None:
    from lowdose.models.unet import ResUNetDenoiser
    from lowdose.training.denoising import OptimConfig, PairedPatches, SupervisedDenoiserFamily
    from lowdose.training.trainer import Trainer, TrainerConfig

    full = _phantom_full_dose()
    g = np.random.default_rng(0)
    low = [(f + 60.0 * g.standard_normal((4, *f.shape))).astype(np.float32) for f in full]
    data = PairedPatches(full, low, 48, 10_000, 0, 0.0)

    def run(steps: int, resume: bool) -> tuple[SupervisedDenoiserFamily, object]:
        family = SupervisedDenoiserFamily(
            ResUNetDenoiser.untrained({"channels": [8, 16, 32]}),
            OptimConfig(lr=2e-3, warmup_steps=5), 60, {})
        cfg = TrainerConfig(max_steps=steps, batch_size=8, checkpoint_every=20, log_every=5,
                            progress=False, tensorboard=False, device="cuda")
        trainer = Trainer(family, data, cfg, tmp_path / "run", resume=resume)
        assert trainer.autocast_dtype == torch.bfloat16  # "auto" precision on CUDA
        return family, trainer.fit()

    _, first = run(40, resume=False)
    assert first.step == 40
    family, result = run(60, resume=True)
    assert result.resumed_from == 40 and result.step == 60
    import csv

    with open(tmp_path / "run" / "metrics.csv") as fh:
        losses = [float(r["value"]) for r in csv.DictReader(fh)
                  if r["name"] == "loss" and r["split"] == "train"]
    assert losses[-1] < 0.5 * losses[0], losses
    assert next(family.modules["net"].parameters()).device.type == "cuda"


def test_gan_circle_training_in_bf16_on_cuda(tmp_path: Path) -> None:
    """Adversarial steps with the gradient penalty (a double backward) under bf16 autocast."""
    from lowdose.training.gan import (
        GanCircleConfig,
        GanCircleFamily,
        SlicePool,
        UnpairedPatches,
        degrade,
    )
    from lowdose.training.trainer import Trainer, TrainerConfig

    full = torch.from_numpy(np.stack(_phantom_full_dose(8, 64)))
    noisy = degrade(full[:4, None], 0.25, 1, "image-poisson", 0)[:, 0]
    pool = SlicePool(full[:4], noisy, full[4:], {"scale": 1, "dose": 0.25})
    data = UnpairedPatches(pool, patch=32, length=1000, min_mean_hu=-2000)
    family = GanCircleFamily(GanCircleConfig(f0=8, critic_base=8, lr_generator=1e-3,
                                             lr_critic=1e-3, pool_size=4, ema_decay=0.9))
    cfg = TrainerConfig(max_steps=20, batch_size=4, checkpoint_every=10, log_every=1,
                        progress=False, tensorboard=False, device="cuda")
    result = Trainer(family, data, cfg, tmp_path / "gan").fit()
    assert result.step == 20
    assert all(torch.isfinite(v).all() for v in
               [p.detach() for m in family.modules.values() for p in m.parameters()])
    from lowdose.models.loading import load_denoiser

    d = load_denoiser(str(tmp_path / "gan"), device="cuda")
    out = d.denoise(_noisy_slice(64).cuda())
    assert out.shape == (1, 1, 64, 64) and torch.isfinite(out).all()
