"""GAN families through the one trainer: unpaired steps lower the generator loss; resume."""

from __future__ import annotations

import csv
import itertools
import shutil
from pathlib import Path

import pytest
import torch

from lowdose.errors import LowdoseError
from lowdose.training.gan import (
    CycleGanConfig,
    CycleGanFamily,
    GanCircleConfig,
    GanCircleFamily,
    SlicePool,
    UnpairedPatches,
    degrade,
    load_preset,
)
from lowdose.training.trainer import Trainer, TrainerConfig

torch.set_num_threads(1)


def _pool(n: int = 4, size: int = 48, scale: int = 1) -> SlicePool:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    slices = []
    for k in range(2 * n):
        body = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 2.3) ** 2).float()
        blob = (((yy - 10 - k) ** 2 + (xx - 20) ** 2) < 30).float()
        slices.append(-1000 + 1040 * body + 200 * blob)
    full = torch.stack(slices)
    low = full[:n]
    noisy = degrade(low[:, None], 0.25, scale, "image-poisson", 0)[:, 0]
    noisy = noisy + 30 * torch.randn(noisy.shape, generator=g)
    return SlicePool(low, noisy, full[n:], {"scale": scale, "dose": 0.25})


def _circle(**kw) -> GanCircleFamily:
    base = dict(f0=8, critic_base=8, lr_generator=1e-3, lr_critic=1e-3, pool_size=4)
    return GanCircleFamily(GanCircleConfig(**{**base, **kw}))


def _cyclegan(**kw) -> CycleGanFamily:
    return CycleGanFamily(CycleGanConfig(ngf=4, n_blocks=1, ndf=4, pool_size=0, **kw))


def _trainer_cfg(**kw) -> TrainerConfig:
    base = dict(max_steps=30, batch_size=4, log_every=1, checkpoint_every=10, progress=False,
                tensorboard=False, num_threads=1)
    return TrainerConfig(**{**base, **kw})


def _metric(out: Path, name: str) -> list[float]:
    with open(out / "metrics.csv") as fh:
        return [float(r["value"]) for r in csv.DictReader(fh)
                if r["name"] == name and r["split"] == "train"]


def test_unpaired_steps_lower_the_generator_loss(tmp_path: Path) -> None:
    data = UnpairedPatches(_pool(), patch=32, length=1000, min_mean_hu=-2000)
    result = Trainer(_circle(), data, _trainer_cfg(), tmp_path / "run").fit()
    assert result.step == 30
    losses = _metric(tmp_path / "run", "generator/loss")
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    # Both critic terms and the penalty were logged; the export loads as a denoiser.
    assert _metric(tmp_path / "run", "critic/gp_high")
    from lowdose.models.loading import load_denoiser

    d = load_denoiser(str(tmp_path / "run"), device="cpu")
    assert d.name == "gan-circle"
    assert d.denoise(torch.zeros(1, 1, 40, 40)).shape == (1, 1, 40, 40)


def test_gan_training_resumes_exactly(tmp_path: Path) -> None:
    data = UnpairedPatches(_pool(), patch=32, length=1000, min_mean_hu=-2000)
    cfg = _trainer_cfg(max_steps=6, checkpoint_every=3)
    Trainer(_circle(ema_decay=0.9), data, cfg, tmp_path / "a").fit()
    Trainer(_circle(ema_decay=0.9), data, _trainer_cfg(max_steps=3, checkpoint_every=3),
            tmp_path / "b").fit()
    with pytest.raises(Exception, match="resume"):
        Trainer(_circle(ema_decay=0.9), data, cfg, tmp_path / "b").fit()
    fam = _circle(ema_decay=0.9)
    res = Trainer(fam, data, cfg, tmp_path / "b", resume=True).fit()
    assert res.resumed_from == 3 and res.step == 6
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert any(k.startswith("g_lh_ema.") for k in a)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


@pytest.mark.parametrize("family", ["gan-circle", "cyclegan"])
def test_lr_decay_follows_the_step_also_when_added_on_resume(tmp_path: Path, family: str) -> None:
    data = UnpairedPatches(_pool(), patch=32, length=1000, min_mean_hu=-2000)

    def fam(**kw):
        if family == "cyclegan":
            return CycleGanFamily(CycleGanConfig(ngf=4, n_blocks=1, ndf=4, pool_size=2, lr=1e-3,
                                                 **kw))
        return _circle(**kw)

    # Four constant steps, then resumed with a decay over steps 4..8 (the learning rate logged
    # at step s is the one used by the step s - 1).
    Trainer(fam(), data, _trainer_cfg(max_steps=4, checkpoint_every=4), tmp_path / "r").fit()
    Trainer(fam(lr_decay=(4, 8)), data, _trainer_cfg(max_steps=8, checkpoint_every=4),
            tmp_path / "r", resume=True).fit()
    lrs = _metric(tmp_path / "r", "lr/generator")
    assert lrs == pytest.approx([1e-3] * 5 + [7.5e-4, 5e-4, 2.5e-4])
    with pytest.raises(LowdoseError, match="lr_decay"):
        fam(lr_decay=(8, 4))
    with pytest.raises(LowdoseError, match="paired_fraction"):
        fam(paired_fraction=1.5)


def test_semi_supervised_and_x2_and_cyclegan_steps_run(tmp_path: Path) -> None:
    pool2 = _pool(scale=2)
    data = UnpairedPatches(pool2, patch=32, length=100, paired_fraction=0.5, min_mean_hu=-2000)
    batch = torch.utils.data.default_collate([data[i] for i in range(6)])
    assert batch["paired"].any() and not batch["paired"].all()
    fam = _circle(scale=2, paired_fraction=0.5)
    out = fam.training_step(batch, "generator", 0)
    assert "supervised" in out and float(out["supervised"].detach()) > 0
    assert float(fam.training_step(batch, "critic", 0)["gp_low"].detach()) >= 0
    cyc = CycleGanFamily(CycleGanConfig(ngf=4, n_blocks=1, ndf=4, pool_size=2))
    res = Trainer(cyc, data, _trainer_cfg(max_steps=3), tmp_path / "c").fit()
    assert res.step == 3
    assert _metric(tmp_path / "c", "discriminator/loss")
    assert _metric(tmp_path / "c", "discriminator/d_high")


def test_both_families_share_one_base() -> None:
    from lowdose.training.gan import _GanFamily

    circle = _circle()
    cyc = CycleGanFamily(CycleGanConfig(ngf=4, n_blocks=1, ndf=4, pool_size=0, ema_decay=0.9))
    assert isinstance(circle, _GanFamily) and isinstance(cyc, _GanFamily)
    assert circle.optimizer_order == ("generator", "critic")
    assert cyc.optimizer_order == ("generator", "discriminator")
    assert "g_lh_ema" in cyc.modules and cyc.config()["module_prefix"] == "g_lh_ema.module."
    assert _circle(l1_only=True).optimizer_order == ("generator",)
    with pytest.raises(KeyError):
        cyc.training_step({}, "critic", 0)


def test_identity_start_and_critic_gain() -> None:
    """zero_init_output starts G at the identity; critic_gain scales what the critics see."""
    pool = _pool()
    data = UnpairedPatches(pool, patch=32, length=20, paired_fraction=1.0, min_mean_hu=-2000)
    batch = torch.utils.data.default_collate([data[i] for i in range(4)])
    fam = _circle(zero_init_output=True, pool_size=0)
    val = fam.validation_step(batch)
    assert val["psnr_full"] == pytest.approx(val["psnr_full_input"], abs=1e-4)
    out = fam.training_step(batch, "generator", 0)
    assert float(out["cycle"].detach()) == pytest.approx(0.0, abs=1e-3)
    assert float(out["identity"].detach()) == pytest.approx(0.0, abs=1e-3)
    torch.manual_seed(0)
    w1 = float(fam.training_step(batch, "critic", 0)["wdist_high"].detach())
    fam.cfg.critic_gain = 10.0
    fam.training_step(batch, "generator", 0)
    torch.manual_seed(0)
    w10 = float(fam.training_step(batch, "critic", 0)["wdist_high"].detach())
    assert w1 != pytest.approx(w10)


@pytest.mark.parametrize("family", [_circle, _cyclegan], ids=["gan-circle", "cyclegan"])
def test_critic_gain_multiplies_what_the_critics_see(family) -> None:
    seen: list[torch.Tensor] = []

    def critic(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.detach().clone())
        return x.mean((1, 2, 3))

    fam = family(critic_gain=10.0)
    real, fake = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    fam._adversarial_g(critic, fake)
    torch.manual_seed(0)
    fam._critic_loss(critic, real, fake)
    assert torch.allclose(seen[0], 10 * fake) and torch.allclose(seen[1], 10 * real)
    assert torch.allclose(seen[2], 10 * fake)


def test_cyclegan_residual_resize_generator_starts_at_identity() -> None:
    pool = _pool()
    data = UnpairedPatches(pool, patch=32, length=20, paired_fraction=1.0, min_mean_hu=-2000)
    batch = torch.utils.data.default_collate([data[i] for i in range(4)])
    cyc = CycleGanFamily(CycleGanConfig(ngf=4, n_blocks=1, ndf=4, pool_size=0, residual=True,
                                        upsample="resize"))
    assert cyc.config()["arch"] == {"ngf": 4, "n_blocks": 1, "residual": True,
                                    "upsample": "resize"}
    val = cyc.validation_step(batch)
    assert val["psnr_full"] == pytest.approx(val["psnr_full_input"], abs=1e-4)
    # Reference layout keeps the old two-key arch, so earlier weights still load.
    assert CycleGanFamily(CycleGanConfig(ngf=4, n_blocks=1, ndf=4)).config()["arch"] == {
        "ngf": 4, "n_blocks": 1}


def test_paired_samples_are_aligned_and_unpaired_are_not() -> None:
    pool = _pool()
    paired = UnpairedPatches(pool, patch=32, length=20, paired_fraction=1.0, min_mean_hu=-2000)
    item = paired[3]
    assert bool(item["paired"])
    # The degraded patch is the noisy copy of its full-dose patch: close on average.
    assert float((item["low"] - item["high"]).abs().mean()) < 60
    unpaired = UnpairedPatches(pool, patch=32, length=20, min_mean_hu=-2000)
    assert not bool(unpaired[3]["paired"])
    assert torch.equal(unpaired[3]["low"], unpaired[3]["low"])  # reproducible per index


@pytest.mark.parametrize("family", [_circle, _cyclegan], ids=["gan-circle", "cyclegan"])
def test_n_critic_steps_the_generators_on_every_nth_step_only(tmp_path: Path, family) -> None:
    """n_critic 3 after a critic warm-up of 2: the critics change on all 8 steps, G and its EMA
    only on steps 2 and 5."""
    fam = family(n_critic=3, critic_warmup=2, ema_decay=0.5)
    critic = fam.critic_name
    names = ("g_lh", "g_lh_ema", "d_high")

    def snap() -> list[torch.Tensor]:
        return [torch.cat([p.detach().flatten() for p in fam.modules[n].parameters()]).clone()
                for n in names]

    snapshots = [snap()]
    update_ema = fam.on_step_end

    def record(step: int) -> None:
        update_ema(step)
        snapshots.append(snap())

    fam.on_step_end = record
    data = UnpairedPatches(_pool(), patch=32, length=1000, min_mean_hu=-2000)
    Trainer(fam, data, _trainer_cfg(max_steps=8), tmp_path / "nc").fit()
    changed = [[not torch.equal(a, b) for a, b in zip(before, after, strict=True)]
               for before, after in itertools.pairwise(snapshots)]
    turns = [False, False, True, False, False, True, False, False]
    assert [c[0] for c in changed] == turns
    assert [c[1] for c in changed] == turns
    assert all(c[2] for c in changed)
    assert len(_metric(tmp_path / "nc", "generator/loss")) == 2
    assert len(_metric(tmp_path / "nc", f"{critic}/loss")) == 8


@pytest.mark.parametrize("config", [GanCircleConfig, CycleGanConfig])
def test_critic_schedule_is_checked(config) -> None:
    with pytest.raises(LowdoseError, match="n_critic"):
        config(n_critic=0)
    with pytest.raises(LowdoseError, match="critic_warmup"):
        config(critic_warmup=-1)


def test_l1_only_refuses_a_critic_schedule() -> None:
    with pytest.raises(LowdoseError, match="n_critic"):
        GanCircleConfig(n_critic=2, l1_only=True)


@pytest.mark.parametrize("family", [_circle, _cyclegan], ids=["gan-circle", "cyclegan"])
def test_lowfreq_term_is_logged_and_weighted(family) -> None:
    """With lambda_lowfreq the generator loss gains exactly lambda x the logged term."""
    batch = UnpairedPatches(_pool(), patch=32, length=4, min_mean_hu=-2000)[0]
    batch = {k: v[None] for k, v in batch.items()}
    plain = family()._generator_step(batch)
    weighted = family(lambda_lowfreq=3.0, lowfreq_sigma=2.0)._generator_step(batch)
    value = {k: float(v.detach()) for k, v in weighted.items()}
    assert "lowfreq" not in plain and value["lowfreq"] > 0
    assert value["loss"] == pytest.approx(
        float(plain["loss"].detach()) + 3.0 * value["lowfreq"], rel=1e-5)
    with pytest.raises(LowdoseError, match="lowfreq_sigma"):
        family(lowfreq_sigma=0.0)


@pytest.mark.parametrize(
    ("family", "off", "on"),
    [(_circle, dict(lambda_identity=0.0, lambda_jst=0.0), dict(lambda_identity=0.0)),
     (_cyclegan, dict(lambda_identity=0.0), dict(lambda_identity=0.5))],
    ids=["gan-circle (JST on)", "cyclegan"])
def test_identity_mappings_run_only_when_a_term_uses_them(family, off, on) -> None:
    """G runs on the full-dose patches (G(y)) only for the identity term (or GAN-CIRCLE's JST):
    with their weights at 0, G runs twice per generator step (G(x), G(F(y))), not three times."""
    batch = UnpairedPatches(_pool(), patch=32, length=4, min_mean_hu=-2000)[0]
    batch = {k: v[None] for k, v in batch.items()}
    for kw, passes in ((off, 2), (on, 3)):
        fam = family(**kw)
        calls: list[int] = []
        fam.modules["g_lh"].register_forward_hook(lambda *_, seen=calls: seen.append(1))
        out = fam._generator_step(batch)
        assert len(calls) == passes
        assert ("identity" in out) == (passes == 3)
        assert torch.isfinite(out["loss"])


def test_cyclegan_wgan_gp_plays_gan_circles_game() -> None:
    """adversarial wgan-gp: the generator term is -mean(D), the critic loss GAN-CIRCLE's own
    (Wasserstein estimate and gradient penalty of the same weight); bad names are refused."""

    def critic(x: torch.Tensor) -> torch.Tensor:
        return 3.0 * x.mean((1, 2, 3))  # slope 3 / 64 per pixel of an 8x8 image

    real, fake = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    wgan = _cyclegan(adversarial="wgan-gp", gp_weight=7.0, critic_gain=2.0)
    assert float(wgan._adversarial_g(critic, fake)) == pytest.approx(-6.0 * float(fake.mean()))
    torch.manual_seed(0)
    got = wgan._critic_loss(critic, real, fake)
    torch.manual_seed(0)
    want = _circle(gp_weight=7.0, critic_gain=2.0)._critic_loss(critic, real, fake)
    assert set(got) == {"loss", "wdist", "gp"}
    for key in got:
        assert float(got[key]) == pytest.approx(float(want[key]))
    # The penalty is on the gain-scaled input: gradient norm 3 / 64 * 8 = 0.375 everywhere.
    assert float(got["gp"]) == pytest.approx((1 - 0.375) ** 2)
    assert float(got["wdist"]) == pytest.approx(6.0 * float(real.mean() - fake.mean()), rel=1e-5)
    lsgan = _cyclegan()._critic_loss(critic, real, fake)
    assert set(lsgan) == {"loss", "d"}
    with pytest.raises(LowdoseError, match="adversarial"):
        CycleGanConfig(adversarial="hinge")


def test_cyclegan_wgan_gp_trains_through_the_trainer(tmp_path: Path) -> None:
    fam = _cyclegan(adversarial="wgan-gp", n_critic=2, residual=True, upsample="resize")
    data = UnpairedPatches(_pool(), patch=32, length=1000, min_mean_hu=-2000)
    Trainer(fam, data, _trainer_cfg(max_steps=4), tmp_path / "w").fit()
    assert len(_metric(tmp_path / "w", "discriminator/gp_high")) == 4
    assert len(_metric(tmp_path / "w", "generator/adv_g")) == 2


def test_cyclegan_unet_generator_through_the_family_and_export(tmp_path: Path) -> None:
    from lowdose.models.loading import load_denoiser
    from lowdose.training.gan import export_generator

    fam = _cyclegan(generator="unet", num_downs=3, residual=True, upsample="resize",
                    ema_decay=0.9)
    assert fam.config()["arch"] == {"generator": "unet", "ngf": 4, "num_downs": 3,
                                    "residual": True, "upsample": "resize"}
    data = UnpairedPatches(_pool(), patch=32, length=100, min_mean_hu=-2000)
    Trainer(fam, data, _trainer_cfg(max_steps=2), tmp_path / "u").fit()
    d = load_denoiser(str(export_generator(tmp_path / "u", tmp_path / "w" / "cg")), device="cpu")
    assert d.name == "cyclegan" and d.multiple == 8
    assert d.denoise(torch.zeros(1, 1, 30, 42)).shape == (1, 1, 30, 42)
    with pytest.raises(LowdoseError, match="generator"):
        _cyclegan(generator="vit")


def test_cyclegan_lambda_adv_weighs_the_generators_lsgan_terms() -> None:
    assert _cyclegan()._weights()["adv_g"] == 1.0  # the reference
    assert _cyclegan(lambda_adv=4.0)._weights()["adv_g"] == 4.0


def test_l1_only_mode_trains_g_alone(tmp_path: Path) -> None:
    fam = _circle(l1_only=True)
    assert set(fam.modules) == {"g_lh"} and list(fam.configure_optimizers()) == ["generator"]
    data = UnpairedPatches(_pool(), patch=32, length=100, paired_fraction=1.0, min_mean_hu=-2000)
    assert Trainer(fam, data, _trainer_cfg(max_steps=3), tmp_path / "l1").fit().step == 3


def test_cli_preset_names_pick_the_shipped_recipe_of_the_mode() -> None:
    from lowdose.training.gan import gan_preset_name

    assert gan_preset_name("gan-circle", "cpu") == "gan-circle-unpaired-cpu"
    assert gan_preset_name("gan-circle", None, 0.0) == "gan-circle-unpaired-cpu"
    assert gan_preset_name("gan-circle", "cpu", 0.5) == "gan-circle-semi-cpu-s1"
    assert gan_preset_name("cyclegan", "cpu") == "cyclegan-unpaired-cpu"
    assert load_preset("cyclegan-unpaired-cpu")["model"]["adversarial"] == "wgan-gp"
    assert gan_preset_name("gan-circle", "gpu", 0.5) == "gan-circle"
    assert gan_preset_name("gan-circle", "gan-circle-cpu") == "gan-circle-cpu"
    assert gan_preset_name("gan-circle", "cpu", None, 2) == "gan-circle-sr-cpu"
    assert gan_preset_name("gan-circle", "cpu", None, 4) == "gan-circle-sr-x4-cpu"
    x4 = load_preset("gan-circle-sr-x4-cpu")["model"]
    assert x4["lambda_jst"] == 0 and x4["paired_fraction"] == 1 and x4.get("lambda_adv", 1) > 0
    assert gan_preset_name("gan-circle", "cpu", 0.0, 2) == "gan-circle-unpaired-x2-cpu"
    assert gan_preset_name("gan-circle", "cpu", 0.0, 4) == "gan-circle-unpaired-cpu"
    assert gan_preset_name("gan-circle", "cpu", 0.5, 1) == "gan-circle-semi-cpu-s1"
    unpaired = load_preset("gan-circle-unpaired-cpu")["model"]
    assert unpaired["n_critic"] > 1 and unpaired["paired_fraction"] == 0


def test_presets_load_and_build() -> None:
    from lowdose.training.gan import build_family, preset_path

    folder = preset_path("gan-circle").parent
    names = sorted(p.stem for p in [*folder.glob("gan-circle*.yaml"), *folder.glob("cyclegan*")])
    assert {"gan-circle", "gan-circle-cpu", "gan-circle-unpaired-cpu", "gan-circle-semi-cpu",
            "gan-circle-semi-cpu-long", "gan-circle-semi-cpu-s1", "gan-circle-sr-cpu", "cyclegan",
            "cyclegan-cpu"} <= set(names)
    for name in names:
        preset = load_preset(name)
        TrainerConfig.from_dict(preset["trainer"])
        build_family(preset["family"], {**preset["model"], "f0": 8} if preset["family"] ==
                     "gan-circle" else {**preset["model"], "ngf": 4, "n_blocks": 1, "ndf": 4})
        assert preset["data"]["method"] == "projection"
        paired = preset["model"].get("paired_fraction", 0)
        if "semi" in name:
            assert 0 < paired < 1, name
        else:  # unpaired, or the fully paired super-resolution recipe
            assert paired == (1 if name.startswith("gan-circle-sr") else 0), name
    fam = build_family("gan-circle", {**load_preset("gan-circle")["model"], "f0": 8})
    assert fam.config()["arch"]["f0"] == 8
    with pytest.raises(Exception, match="bad model settings"):
        build_family("gan-circle", {"nonsense": 1})


def test_export_generator_loads_as_denoiser_and_upscaler(tmp_path: Path) -> None:
    from lowdose.models.gan_circle import load_upscaler
    from lowdose.models.loading import load_denoiser
    from lowdose.training.gan import export_generator

    data = UnpairedPatches(_pool(), patch=32, length=100, min_mean_hu=-2000)
    Trainer(_circle(ema_decay=0.9), data, _trainer_cfg(max_steps=2), tmp_path / "r1").fit()
    path = export_generator(tmp_path / "r1", tmp_path / "w" / "gc", card="# card\n")
    assert (tmp_path / "w" / "gc.md").read_text() == "# card\n"
    d = load_denoiser(str(path), device="cpu")
    assert d.name == "gan-circle" and "training" in d.metadata
    assert "train_pixel_mm" not in d.metadata  # the pool was not built in the run folder
    pool_info = {"scale": 1, "pixel_mm": [0.6, 0.9]}
    tensors = [torch.zeros(1, 8, 8) for _ in range(3)]
    SlicePool(*tensors, pool_info).save(tmp_path / "r1" / "pool-x1.safetensors")
    pooled = export_generator(tmp_path / "r1", tmp_path / "w" / "gc2")
    assert load_denoiser(str(pooled), device="cpu").metadata["train_pixel_mm"] == [0.6, 0.9]
    best = tmp_path / "r1" / "best"  # the trainer's best-validation folder, inside the run's
    best.mkdir()
    for name in ("model.safetensors", "config.json"):
        shutil.copy(tmp_path / "r1" / name, best / name)
    from_best = export_generator(best, tmp_path / "w" / "gc3")
    assert load_denoiser(str(from_best), device="cpu").metadata["train_pixel_mm"] == [0.6, 0.9]
    semi = export_generator(tmp_path / "r1", tmp_path / "w" / "semi", model="gan-circle-semi")
    assert load_denoiser(str(semi), device="cpu").name == "gan-circle-semi"
    pool2 = _pool(scale=2)
    data2 = UnpairedPatches(pool2, patch=32, length=100, min_mean_hu=-2000)
    Trainer(_circle(scale=2), data2, _trainer_cfg(max_steps=2), tmp_path / "r2").fit()
    up = load_upscaler(str(export_generator(tmp_path / "r2", tmp_path / "w" / "x2")), scale=2)
    assert up.upscale(torch.zeros(1, 1, 16, 16)).shape == (1, 1, 32, 32)
    assert "train_pixel_mm" not in up.metadata and up.pixel_size_note(9.0) is None
    # An x2 run's pool: G saw the full-dose slices binned 2x2, so twice their pixel sizes.
    SlicePool(*tensors, {"scale": 2, "pixel_mm": [0.6, 0.9]}).save(
        tmp_path / "r2" / "pool-x2.safetensors")
    up = load_upscaler(str(export_generator(tmp_path / "r2", tmp_path / "w" / "x2p")), scale=2)
    assert up.metadata["train_pixel_mm"] == [1.2, 1.8]
    assert up.pixel_size_note(1.5) is None and "0.60 mm pixels" in up.pixel_size_note(0.6)
    with pytest.raises(Exception, match="x2"):
        load_denoiser(str(tmp_path / "w" / "x2.safetensors"), device="cpu")


def test_train_gan_on_user_paths_builds_the_pool_and_resumes(tmp_path: Path) -> None:
    import numpy as np

    from lowdose.training.gan import train_gan

    yy, xx = np.mgrid[:64, :64]
    body = ((yy - 32) ** 2 + (xx - 32) ** 2 < 26**2).astype(np.float32)
    vol = np.stack([-1000 + 1040 * body + 10 * k for k in range(4)]).astype(np.float32)
    np.save(tmp_path / "vol.npy", vol)
    over = {
        "model": {"f0": 8, "critic_base": 8},
        "data": {"paths": [str(tmp_path / "vol.npy")], "slice_size": 64, "patch": 32,
                 "method": "image-poisson", "min_mean_hu": -2000, "val_length": 4},
        "trainer": {"max_steps": 2, "batch_size": 2, "checkpoint_every": 1},
    }
    res = train_gan("gan-circle-cpu", tmp_path / "run", overrides=over)
    assert res.step == 2 and (tmp_path / "run" / "pool-x1.safetensors").is_file()
    assert "val/psnr_full" in res.metrics
    over["trainer"]["max_steps"] = 3
    res = train_gan("gan-circle-cpu", tmp_path / "run", resume=True, overrides=over)
    assert res.resumed_from == 2 and res.step == 3


def _tiny_gan_run(tmp_path: Path) -> dict[str, dict]:
    """Train a 2-step tiny GAN-CIRCLE run into ``tmp_path/run``; returns its overrides."""
    import numpy as np

    from lowdose.training.gan import train_gan

    yy, xx = np.mgrid[:64, :64]
    body = ((yy - 32) ** 2 + (xx - 32) ** 2 < 26**2).astype(np.float32)
    np.save(tmp_path / "vol.npy", np.stack([-1000 + 1040 * body + 10 * k for k in range(4)]))
    over = {
        "model": {"f0": 8, "critic_base": 8},
        "data": {"paths": [str(tmp_path / "vol.npy")], "slice_size": 64, "patch": 32,
                 "method": "image-poisson", "min_mean_hu": -2000, "val_length": 4},
        "trainer": {"max_steps": 2, "batch_size": 2},
    }
    train_gan("gan-circle-cpu", tmp_path / "run", overrides=over)
    return over


def test_gan_init_starts_every_network_from_a_run_and_refuses_what_cannot(
        tmp_path: Path) -> None:
    import json

    from lowdose.errors import LowdoseError
    from lowdose.models.loading import read_weights
    from lowdose.training.gan import build_family, load_gan_init, train_gan

    over = _tiny_gan_run(tmp_path)
    saved, _ = read_weights(tmp_path / "run")
    family = build_family("gan-circle", {"f0": 8, "critic_base": 8})
    first = next(iter(family.modules["g_hl"].state_dict()))
    assert not torch.equal(family.modules["g_hl"].state_dict()[first], saved[f"g_hl.{first}"])
    load_gan_init(family, tmp_path / "run")
    for name, module in family.modules.items():
        for key, value in module.state_dict().items():
            assert torch.equal(value, saved[f"{name}.{key}"]), f"{name}.{key}"
    res = train_gan("gan-circle-cpu", tmp_path / "tuned", overrides=over, init=tmp_path / "run")
    assert res.step == 2 and res.resumed_from is None
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert config["family"]["init"] == str(tmp_path / "run")
    with pytest.raises(LowdoseError, match="architecture"):
        load_gan_init(build_family("gan-circle", {"f0": 16, "critic_base": 8}), tmp_path / "run")
    with pytest.raises(LowdoseError, match="not 'cyclegan'"):
        load_gan_init(build_family("cyclegan", {}), tmp_path / "run")
    with pytest.raises(LowdoseError, match="no such run folder"):
        load_gan_init(build_family("gan-circle", {"f0": 8, "critic_base": 8}), "no-such-model")
    with pytest.raises(LowdoseError, match="architecture"):  # the shipped G is full size
        load_gan_init(build_family("gan-circle", {"f0": 8, "critic_base": 8}), "gan-circle")


def test_gan_init_from_a_generator_alone_starts_g_and_its_average_only(tmp_path: Path) -> None:
    import json

    from lowdose.models.loading import WEIGHTS_DIR, read_weights
    from lowdose.training.gan import build_family, export_generator, load_gan_init, train_gan

    over = _tiny_gan_run(tmp_path)
    exported, _ = read_weights(export_generator(tmp_path / "run", tmp_path / "w" / "gc"))
    family = build_family("gan-circle", {"f0": 8, "critic_base": 8, "ema_decay": 0.999})
    fresh = {name: {k: v.clone() for k, v in family.modules[name].state_dict().items()}
             for name in ("g_hl", "d_high", "d_low")}
    load_gan_init(family, tmp_path / "w" / "gc.safetensors")
    for key, value in family.modules["g_lh"].state_dict().items():
        assert torch.equal(value, exported[key]), key
    for key, value in family.modules["g_lh_ema"].module.state_dict().items():
        assert torch.equal(value, exported[key]), key
    for name, state in fresh.items():  # F and the critics keep their fresh start
        for key, value in family.modules[name].state_dict().items():
            assert torch.equal(value, state[key]), f"{name}.{key}"
    assert family.init_source.endswith("(generator only)")
    over["model"]["ema_decay"] = 0.999
    res = train_gan("gan-circle-cpu", tmp_path / "tuned", overrides=over,
                    init=tmp_path / "w" / "gc.safetensors")
    assert res.step == 2
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert config["family"]["init"].endswith("gc.safetensors (generator only)")
    _, shipped_config = read_weights(export_generator(tmp_path / "tuned", tmp_path / "w" / "t"))
    assert "init" not in shipped_config  # the start is training history: metadata only
    assert shipped_config["metadata"]["init"] == config["family"]["init"]

    # Shipped weights by name: the semi-supervised G (stride 1, f0 128) and an upscaler.
    for name, arch, file in (("gan-circle-semi", {"stride": 1, "f0": 128}, "gan-circle-semi"),
                             ("gan-circle", {"scale": 2}, "gan-circle-x2")):
        family = build_family("gan-circle", arch)
        load_gan_init(family, name)
        shipped, _ = read_weights(WEIGHTS_DIR / f"{file}.safetensors")
        for key, value in family.modules["g_lh"].state_dict().items():
            assert torch.equal(value, shipped[key]), f"{name}: {key}"
    with pytest.raises(LowdoseError, match="shipped gan-circle weights at scale 2"):
        load_gan_init(build_family("gan-circle", {"scale": 2}), "gan-circle-semi")


def test_cli_train_denoiser_routes_gan_models(tmp_path: Path) -> None:
    import numpy as np

    from lowdose.cli.main import main

    yy, xx = np.mgrid[:64, :64]
    body = ((yy - 32) ** 2 + (xx - 32) ** 2 < 26**2).astype(np.float32)
    np.save(tmp_path / "vol.npy", np.stack([-1000 + 1040 * body] * 4).astype(np.float32))
    (tmp_path / "tiny.yaml").write_text(
        "family: gan-circle\n"
        "model: {f0: 8, critic_base: 8, pool_size: 2}\n"
        "data: {slice_size: 64, patch: 32, method: image-poisson, min_mean_hu: -2000, "
        "val_length: 2}\n"
        "trainer: {max_steps: 1, batch_size: 2, progress: false, tensorboard: false}\n"
    )
    args = ["train", "denoiser", "--model", "gan-circle", "--data", str(tmp_path / "vol.npy"),
            "--preset", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "run"),
            "--paired-fraction", "0.5", "--scale", "2", "--steps", "2", "--seed", "3"]
    assert main(args) == 0
    import json

    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["family"]["scale"] == 2
    assert config["family"]["training"]["seed"] == 3 and config["trainer"]["seed"] == 3
    assert config["family"]["training"]["paired_fraction"] == 0.5
    assert config["trainer"]["max_steps"] == 2


def test_cached_pool_of_another_calibration_is_refused(tmp_path: Path) -> None:
    from lowdose.training.gan import train_gan

    pool = _pool()
    pool.info.update(method="image-poisson", calibration="an older fit")
    pool.save(tmp_path / "old.safetensors")
    over = {"model": {"f0": 8, "critic_base": 8},
            "data": {"cache": str(tmp_path / "old.safetensors"), "method": "image-poisson"},
            "trainer": {"max_steps": 1, "batch_size": 2}}
    with pytest.raises(Exception, match="another calibration"):
        train_gan("gan-circle-cpu", tmp_path / "run", overrides=over)


def test_degrade_scales_projection_noise_with_slice_thickness() -> None:
    yy, xx = torch.meshgrid(torch.arange(96), torch.arange(96), indexing="ij")
    body = (((yy - 48) ** 2 + (xx - 48) ** 2) < 40**2).float()
    hu = (-1000 + 1040 * body)[None, None]
    thin = degrade(hu, 0.25, 1, "projection", 0, pixel_size_mm=2.0, slice_thickness_mm=1.0)
    thick = degrade(hu, 0.25, 1, "projection", 0, pixel_size_mm=2.0, slice_thickness_mm=3.0)
    inner = body.bool()
    ratio = float((thin - hu)[0, 0][inner].std() / (thick - hu)[0, 0][inner].std())
    assert ratio == pytest.approx(3**0.5, rel=0.15)  # photons scale with the thickness


def test_degrade_at_the_relative_dose_and_a_pool_of_another_dose_reference(tmp_path: Path) -> None:
    from lowdose.errors import LowdoseError
    from lowdose.metrics.noise import estimate_noise_hu
    from lowdose.training.gan import train_gan

    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(128), torch.arange(128), indexing="ij")
    body = (((yy - 64) ** 2 + (xx - 64) ** 2) < 56**2).float()
    hu = (-1000 + 1040 * body + 20 * body * torch.randn(128, 128, generator=g))[None, None]
    low = degrade(hu, 0.25, 1, "projection", 0, pixel_size_mm=1.5, relative_dose=True)
    full = hu[0, 0].numpy()
    r = (estimate_noise_hu(low[0, 0].numpy() - full, tissue_of=full) / estimate_noise_hu(full)) ** 2
    assert r == pytest.approx(3.0, rel=0.05)
    with pytest.raises(LowdoseError, match="relative_dose"):
        degrade(hu, 0.25, 1, "image-poisson", 0, relative_dose=True)
    _pool().save(tmp_path / "calibrated.safetensors")  # built at the calibration's dose
    over = {"model": {"f0": 8, "critic_base": 8},
            "data": {"cache": str(tmp_path / "calibrated.safetensors"), "method": "image-poisson",
                     "relative_dose": True},
            "trainer": {"max_steps": 1, "batch_size": 2}}
    with pytest.raises(LowdoseError, match="dose reference"):
        train_gan("gan-circle-cpu", tmp_path / "run", overrides=over)
    before = _pool()  # a relative-dose pool from before the texture match
    before.info["relative_dose"] = True
    before.save(tmp_path / "calibrated.safetensors")
    with pytest.raises(LowdoseError, match="texture"):
        train_gan("gan-circle-cpu", tmp_path / "run", overrides=over)


@pytest.mark.parametrize("split", ["group", "slice"])
def test_slice_pool_split_by_group_or_by_slice(tmp_path: Path, split: str) -> None:
    import numpy as np

    from lowdose.image import CTImage
    from lowdose.io import write_ct
    from lowdose.training.gan import build_slice_pool

    paths = []
    for name, n, base in (("a", 5, 0.0), ("b", 3, 100.0)):
        # each slice carries its own id in HU: volume a 0..4, volume b 100..102
        hu = (base + np.arange(n, dtype=np.float32))[:, None, None].repeat(32, 1).repeat(32, 2)
        image = CTImage(hu, spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=np.eye(3))
        paths.append(str(write_ct(image, tmp_path / f"{name}.nii.gz")))
    pool = build_slice_pool(tmp_path, size=32, method="image-poisson", progress=False,
                            paths=paths, split=split)
    low = sorted(round(float(s[0, 0])) for s in pool.low_full)
    high = sorted(round(float(s[0, 0])) for s in pool.high_full)
    assert pool.info["split"] == split
    assert pool.info["pixel_mm"] == [1.0, 1.0]
    if split == "group":  # patients apart: each volume on one side
        assert (low, high) == ([0, 1, 2, 3, 4], [100, 101, 102])
    else:  # consecutive slices alternate, the parity running on into the next volume
        assert (low, high) == ([0, 2, 4, 101], [1, 3, 100, 102])
    with pytest.raises(LowdoseError, match="unknown split"):
        build_slice_pool(tmp_path, paths=paths, progress=False, split="patient")


def _tiny_cli_run(tmp_path: Path, **kw) -> dict:
    """Train a 2-step tiny GAN-CIRCLE run into ``tmp_path/run`` through the CLI's entry point
    (a tiny YAML preset, ``--data`` a 4-slice volume); returns the arguments it was given."""
    import numpy as np

    from lowdose.training.gan import train_gan_cli

    yy, xx = np.mgrid[:64, :64]
    body = ((yy - 32) ** 2 + (xx - 32) ** 2 < 26**2).astype(np.float32)
    for name, level in (("vol", 1040), ("other", 900)):
        np.save(tmp_path / f"{name}.npy",
                np.stack([-1000 + level * body + 10 * k for k in range(4)]).astype(np.float32))
    for name, f0 in (("tiny", 8), ("wide", 16)):
        (tmp_path / f"{name}.yaml").write_text(
            "family: gan-circle\n"
            f"model: {{f0: {f0}, critic_base: 8, pool_size: 2}}\n"
            "data: {slice_size: 64, patch: 32, method: image-poisson, min_mean_hu: -2000, "
            "val_length: 2}\n"
            "trainer: {max_steps: 2, batch_size: 2, progress: false, tensorboard: false}\n")
    args = {"model": "gan-circle", "out": tmp_path / "run", "data": [str(tmp_path / "vol.npy")],
            "preset": str(tmp_path / "tiny.yaml"), "dose": 0.25, **kw}
    assert train_gan_cli(**args).step == 2
    return args


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_gan_resume_refuses_a_changed_data_or_model_setting_before_the_pool(
        tmp_path: Path) -> None:
    """Each changed setting of the run's data or model is refused on --resume with one line
    naming it and both values, before any pool is built or read: no new pool or cache file, no
    advice to delete the cache. Fails without the check: a changed --data resumed silently on
    the cached pool, --dose was told to delete the cache, --scale built a new pool first."""
    from lowdose.training.gan import train_gan_cli

    args = _tiny_cli_run(tmp_path)
    run = tmp_path / "run"
    before = _files(run)
    assert "pool-x1.safetensors" in before
    changes = [
        ({"dose": 0.5}, "--dose 0.5", "--dose 0.25"),
        ({"method": "projection"}, "--method projection", "--method image-poisson"),
        ({"relative_dose": True}, "--relative-dose on", "--relative-dose off"),
        ({"split": "slice"}, "--split slice", "--split group"),
        ({"data": [str(tmp_path / "other.npy")]}, f"--data {tmp_path / 'other.npy'}",
         f"--data {tmp_path / 'vol.npy'}"),
        ({"scale": 2}, "--scale 2", "--scale 1"),
        ({"paired_fraction": 0.5}, "--paired-fraction 0.5", "--paired-fraction 0.0"),
        ({"seed": 3}, "--seed 3", "--seed 0"),
        ({"init": str(run)}, f"--init {run}", "--init none"),
        ({"preset": str(tmp_path / "wide.yaml")}, "arch (preset)", "'f0': 8"),
    ]
    for change, now, was in changes:
        with pytest.raises(LowdoseError) as err:
            train_gan_cli(**{**args, **change, "steps": 4}, resume=True)
        message = str(err.value)
        assert "\n" not in message and "delete" not in message, message
        assert f"--resume with {now}" in message and "but the run was trained with" in message
        assert was in message and "start a new --out" in message, message
        assert _files(run) == before, change


def test_gan_resume_with_more_steps_and_a_new_schedule_continues(tmp_path: Path) -> None:
    """More steps, another batch size and learning-rate schedule: the resume goes on (those may
    change); the run's data settings are recorded in its config (exports keep them as metadata
    only)."""
    import json

    from lowdose.models.loading import read_weights
    from lowdose.training.gan import export_generator, train_gan_cli

    args = _tiny_cli_run(tmp_path)
    (tmp_path / "tiny.yaml").write_text(
        (tmp_path / "tiny.yaml").read_text().replace("pool_size: 2}", "pool_size: 2, "
                                                     "lr_generator: 0.0001, lr_decay: [2, 6]}"))
    res = train_gan_cli(**{**args, "steps": 3, "batch_size": 4, "device": "cpu"}, resume=True)
    assert res.resumed_from == 2 and res.step == 3
    family = json.loads((tmp_path / "run" / "config.json").read_text())["family"]
    assert family["data"]["paths"] == [str(tmp_path / "vol.npy")]
    assert family["data"]["dose"] == 0.25 and family["data"]["seed"] == 0
    _, shipped = read_weights(export_generator(tmp_path / "run", tmp_path / "w" / "gc"))
    assert "data" not in shipped and shipped["metadata"]["data"]["dose"] == 0.25


def _drop_recorded_data(run: Path) -> None:
    """Make ``run``'s checkpoints look written before runs recorded their data settings."""
    import json

    for config in (run / "checkpoints").glob("step-*/config.json"):
        family = json.loads(config.read_text())
        family.pop("data", None)
        config.write_text(json.dumps(family))


def test_gan_resume_of_an_older_checkpoint_compares_what_it_holds(tmp_path: Path) -> None:
    """A checkpoint without the recorded data still resumes; a changed dose is then caught by
    the cached pool, whose message says to resume with the run's value, not to delete it."""
    from lowdose.training.gan import train_gan_cli

    args = _tiny_cli_run(tmp_path)
    run = tmp_path / "run"
    _drop_recorded_data(run)
    before = _files(run)
    with pytest.raises(LowdoseError) as err:
        train_gan_cli(**{**args, "dose": 0.5, "steps": 3}, resume=True)
    message = str(err.value)
    assert "--resume with --dose 0.5, but the run was trained with --dose 0.25" in message
    assert "delete" not in message and "start a new --out" in message
    assert _files(run) == before
    res = train_gan_cli(**{**args, "steps": 3}, resume=True)
    assert res.resumed_from == 2 and res.step == 3


def test_gan_resume_on_a_pool_that_is_not_the_runs_says_so(tmp_path: Path) -> None:
    """Same settings as the run, but its cached pool was replaced by one of another dose: the
    resume names the pool as not the run's (a fresh run is still told to delete it)."""
    from lowdose.training.gan import train_gan, train_gan_cli

    args = _tiny_cli_run(tmp_path)
    cache = tmp_path / "run" / "pool-x1.safetensors"
    pool = SlicePool.load(cache)
    pool.info["dose"] = 0.5
    pool.save(cache)
    with pytest.raises(LowdoseError, match="not the run's pool") as err:
        train_gan_cli(**{**args, "steps": 3}, resume=True)
    assert "delete" not in str(err.value)
    over = {"model": {"f0": 8, "critic_base": 8},
            "data": {"cache": str(cache), "method": "image-poisson"},
            "trainer": {"max_steps": 1, "batch_size": 2}}
    with pytest.raises(LowdoseError, match=r"built with --dose 0\.5, not 0\.25; delete it"):
        train_gan("gan-circle-cpu", tmp_path / "fresh", overrides=over)


def test_gan_training_paths_leave_out_reformats(tmp_path: Path) -> None:
    """A coronal volume among the GAN's training paths is left out with a warning, as the
    supervised models' data leaves it out; only reformats is one clear error."""
    import numpy as np

    from lowdose import CTImage, LowdoseError
    from lowdose.io import write_ct
    from lowdose.training.gan import _path_groups

    vol = np.full((4, 32, 32), 40.0, np.float32)
    vol[:, :4] = -1000.0
    axial = write_ct(CTImage(vol, (2.0, 0.8, 0.8), origin=(0, 0, 0), direction=np.eye(3)),
                     tmp_path / "axial.nii.gz")
    coronal_axes = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # rows along -z
    coronal = write_ct(CTImage(vol, (2.0, 0.8, 0.8), origin=(0, 0, 0),
                               direction=coronal_axes), tmp_path / "coronal.nii.gz")
    with pytest.warns(UserWarning, match=r"left out .*coronal.nii.gz \(coronal\): not axial"):
        groups = _path_groups([str(axial), str(coronal)])
    assert [name for name, _ in groups] == ["000-axial.nii.gz-a", "000-axial.nii.gz-b"]
    with pytest.raises(LowdoseError, match="no axial slice to train on"):
        _path_groups([str(coronal)])


@pytest.mark.usefixtures("one_torch_thread")
def test_gan_threads_follow_the_option_then_omp_num_threads(tmp_path: Path,
                                                            monkeypatch) -> None:
    """The GAN runs take CPU threads as the supervised ones do (the preset's 2 overrode a
    user's OMP_NUM_THREADS=1), and record the count used."""
    import json

    from lowdose.training.gan import train_gan

    over = _tiny_gan_run(tmp_path)
    over["trainer"]["max_steps"] = 1

    def used(run: str) -> int:
        return json.loads((tmp_path / run / "config.json").read_text())["trainer"]["num_threads"]

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    train_gan("gan-circle-cpu", tmp_path / "env", overrides=over)
    train_gan("gan-circle-cpu", tmp_path / "opt", overrides=over, threads=3)
    assert (used("env"), used("opt")) == (1, 3)


@pytest.mark.parametrize(("text", "error"), [
    ("trainr: {max_steps: 3}", r"unknown sections \['trainr'\]; known: family, model, data, "
                               "trainer"),
    ("data: {dosee: 0.1}", r"section 'data': unknown keys \['dosee'\]; known: .*dose"),
    ("model: {lambda_advv: 1}", r"section 'model': unknown keys \['lambda_advv'\]; known: "
                                ".*lambda_adv"),
    ("trainer: {max_step: 3}", r"section 'trainer': unknown keys \['max_step'\]; known: "
                               ".*max_steps"),
    ("data: 5", "section 'data': 5 is not a mapping"),
    ("data: {dose: 3}", r"data.dose: 3 is outside \(0, 1\]"),
    ("data: {patch: -3}", "data.patch: -3 is out of range; use an integer >= 1"),
    ("data: {method: poison}", "data.method: 'poison' is not one of"),
    ("trainer: {max_steps: abc}", "trainer.max_steps: 'abc' is not an integer"),
])
def test_a_gan_preset_with_an_unknown_key_or_bad_value_is_refused_when_loaded(
    tmp_path: Path, text: str, error: str
) -> None:
    """train_gan reads only the model, data and trainer sections: a misspelt section was
    ignored (the user's step limit with it), a misspelt key failed later as a TypeError."""
    path = tmp_path / "mine.yaml"
    path.write_text(f"base: gan-circle-cpu\n{text}\n")
    with pytest.raises(LowdoseError, match=error):
        load_preset(str(path))


def test_a_gan_preset_model_key_is_checked_against_its_family(tmp_path: Path) -> None:
    path = tmp_path / "cycle.yaml"
    path.write_text("base: cyclegan-cpu\nmodel: {f0: 8}\n")  # a gan-circle setting
    with pytest.raises(LowdoseError, match=r"section 'model': unknown keys \['f0'\]; known: "
                                           ".*ngf"):
        load_preset(str(path))
    # CLI options arrive as overrides (checked by build_family when the run starts).
    assert load_preset("cyclegan-cpu", {"trainer": {"max_steps": 3}})["trainer"]["max_steps"] == 3
