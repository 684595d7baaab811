"""GAN families for the one trainer: GAN-CIRCLE and CycleGAN, their losses and helpers.

Both families plug into :mod:`lowdose.training.trainer` through :class:`TrainingFamily`: two
optimisers, ``generator`` then ``critic`` (``discriminator`` for CycleGAN), stepped in that order on
every batch, as in both reference codes (one critic step per generator step). ``n_critic`` and
``critic_warmup`` (both families) let the critics take several steps per generator step, and
train alone first (the generator's optimiser skips those steps). The generator step caches its
fakes; the critic step reuses them (detached, through a history pool when enabled).
Learning rates are constant, or decay linearly to zero with ``lr_decay`` (the family's
``lr_factor``, applied by the trainer from the step alone: a run resumed with a schedule added
stays on its curve).

Batches are dicts of ``(B, 1, P, P)`` HU tensors: ``low`` (low-dose, and for super-resolution
also blurred, downsampled and put back on the fine grid) and ``high`` (full dose), drawn from
different slices or patients (unpaired). In the semi-supervised mode a boolean ``paired`` of
shape ``(B,)`` marks the samples whose ``low`` is the degraded copy of their ``high``; only those
enter the supervised term.

Loss units (GAN-CIRCLE): the reference code sums absolute errors over batch and pixels and divides
by 128; the paper writes norms. Here an image term is the per-image L1 norm (or TV) on a 64x64
reference patch, averaged over the batch: ``mean * 4096``. On that scale the code's effective
weights are: cycle 1 per direction (code: 0.5, counted twice), identity 0.25, JST 3.2 split by
``tau`` = 0.1, supervised 0.25, adversarial 1 (mean critic score). Critic losses are means.

Example:
    >>> x = torch.rand(2, 1, 8, 8)
    >>> float(cycle_loss(x, x)), float(total_variation(torch.ones(2, 1, 8, 8)))
    (0.0, 0.0)
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from lowdose.errors import LowdoseError
from lowdose.training.base import EMA, TrainingFamily

#: Pixels of the reference patch (64x64) that turns per-pixel means into per-image norms.
REFERENCE_PIXELS = 64 * 64


# ---------------------------------------------------------------- losses


def wgan_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Wasserstein critic loss ``mean(D(fake)) - mean(D(real))`` (minimised by the critic)."""
    return fake_scores.mean() - real_scores.mean()


def wgan_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """Wasserstein generator loss ``-mean(D(fake))``."""
    return -fake_scores.mean()


def lsgan_loss(scores: torch.Tensor, target: float) -> torch.Tensor:
    """Least-squares GAN loss (CycleGAN): ``mean((D(x) - target)^2)``."""
    return ((scores - target) ** 2).mean()


def gradient_penalty(
    critic: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP penalty ``mean((||grad D(x_hat)||_2 - 1)^2)`` (Gulrajani et al. 2017).

    ``x_hat = alpha * real + (1 - alpha) * fake`` with one ``alpha ~ U(0, 1)`` per sample; ``real``
    and ``fake`` must come from the same domain (the reference code mixed domains). ``D(x)`` is
    the per-sample score the Wasserstein loss uses: the **mean** of a PatchGAN score map. (Until
    session 8 the penalty took the gradient of the map's sum, 64 times the mean for a 64x64
    patch, so it held the critic to 1/64 of the intended slope and dominated its loss: the
    critic did not even learn to tell 200 HU of added white noise apart, AUC 0.48; with the
    mean, AUC 1.00 in the same 300 steps.) The gradient norm is the full L2 norm over each
    sample's pixels (the code took it over one axis). The graph is kept (``create_graph``) so
    the penalty trains the critic.

    Example:
        >>> lin = nn.Conv2d(1, 1, 4, bias=False)
        >>> _ = nn.init.constant_(lin.weight, 0.25)  # score = sum of 16 pixels / 4: slope 1
        >>> critic = lambda x: lin(x).sum(dim=(1, 2, 3))
        >>> float(gradient_penalty(critic, torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4)).detach())
        0.0
    """
    fake = fake.detach()
    real = real.detach()
    alpha = torch.rand(
        real.shape[0], *([1] * (real.ndim - 1)), generator=generator, device="cpu"
    ).to(real.device, real.dtype)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores = critic(x_hat)
    per_sample = scores.flatten(1).mean(1) if scores.ndim > 1 else scores
    (grad,) = torch.autograd.grad(per_sample.sum(), x_hat, create_graph=True)
    norm = grad.flatten(1).norm(2, dim=1)
    return ((norm - 1) ** 2).mean()


def cycle_loss(x: torch.Tensor, x_back: torch.Tensor, pixels: int = 1) -> torch.Tensor:
    """L1 between an image and its round trip: mean absolute error times ``pixels``.

    ``pixels = 1`` gives the mean (CycleGAN); ``REFERENCE_PIXELS`` the per-image L1 norm of a
    64x64 patch (GAN-CIRCLE units, see the module docstring). Also the identity and supervised
    terms.
    """
    return (x - x_back).abs().mean() * pixels


def lowfreq_loss(
    source: torch.Tensor, output: torch.Tensor, sigma: float, pixels: int = 1
) -> torch.Tensor:
    """L1 of the low-pass part of a generator's change, ``blur(output - source)``, in the units
    of :func:`cycle_loss`: what a restoration should leave alone.

    CT noise after filtered back-projection has almost no power at the lowest frequencies (its
    spectrum rises from zero with the ramp filter), so removing or adding noise barely changes
    a Gaussian low-pass of the image; a shift of the HU level or a smooth change of the anatomy
    does. The blur is :func:`gaussian_blur` with ``sigma`` pixels.

    Example:
        >>> x = torch.zeros(1, 1, 32, 32)
        >>> round(float(lowfreq_loss(x, x + 5.0, sigma=2.0)), 4)
        5.0
    """
    return gaussian_blur(output - source, sigma).abs().mean() * pixels


def total_variation(x: torch.Tensor, pixels: int = 1) -> torch.Tensor:
    """Anisotropic L1 total variation per pixel, averaged over the batch, times ``pixels``.

    ``sum |dx| + sum |dy|`` of each image divided by its pixel count (like
    ``tf.image.total_variation`` / H*W).

    Example:
        >>> float(total_variation(torch.full((1, 1, 5, 5), 3.0)))
        0.0
    """
    h, w = x.shape[-2:]
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().sum(dim=(-2, -1))
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().sum(dim=(-2, -1))
    return ((dx + dy) / (h * w)).mean() * pixels


def jst_loss(
    source: torch.Tensor, mapped: torch.Tensor, tau: float, pixels: int = 1
) -> torch.Tensor:
    """Joint sparsifying transform: ``tau * TV(mapped) + (1 - tau) * TV(source - mapped)``.

    As in the reference code it is applied to the identity mappings (``G(y)`` for a
    high-quality ``y``): the output stays piecewise smooth and what the network removes holds
    no structure.
    """
    return tau * total_variation(mapped, pixels) + (1 - tau) * total_variation(
        source - mapped, pixels
    )


# ---------------------------------------------------------------- helpers


class HistoryPool:
    """A buffer of past generated images (Shrivastava et al. 2017, as in both reference codes).

    ``query`` returns a batch where each image is, with probability 0.5 once the pool is full,
    swapped for a stored older one. ``size = 0`` disables it.

    Example:
        >>> pool = HistoryPool(0)
        >>> x = torch.zeros(2, 1, 4, 4)
        >>> pool.query(x) is x
        True
    """

    def __init__(self, size: int = 50, seed: int = 0) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []
        self._rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size <= 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif self._rng.random() < 0.5:
                i = self._rng.randrange(self.size)
                out.append(self.images[i].to(image.device))
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        return {"images": [t.cpu() for t in self.images], "rng": self._rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.images = list(state.get("images", []))
        if "rng" in state:
            rng = state["rng"]
            self._rng.setstate((rng[0], tuple(rng[1]), rng[2]) if isinstance(rng, list) else rng)


def _unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)


def checked_lr_decay(value: Any) -> tuple[int, int] | None:
    """``lr_decay`` as ``(start, end)`` steps with ``0 <= start < end``, or None.

    Example:
        >>> checked_lr_decay([3000, 4500])
        (3000, 4500)
    """
    if value is None:
        return None
    start, end = (int(v) for v in value)
    if not 0 <= start < end:
        raise LowdoseError(
            f"lr_decay must be [start, end] steps with 0 <= start < end, got {value}")
    return start, end


def checked_count(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int if it is a whole number >= ``minimum``, else a :class:`LowdoseError`.

    Example:
        >>> checked_count(5.0, "n_critic", 1)
        5
    """
    if int(value) != value or value < minimum:
        raise LowdoseError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def check_shared_settings(cfg: Any) -> None:
    """Normalise, in place, the settings both GAN configs share: ``betas``, ``lr_decay``, the
    critic schedule (``n_critic`` >= 1, ``critic_warmup`` >= 0) and the low-frequency term
    (``lambda_lowfreq`` >= 0, ``lowfreq_sigma`` > 0 pixels)."""
    cfg.betas = (float(cfg.betas[0]), float(cfg.betas[1]))
    cfg.lr_decay = checked_lr_decay(cfg.lr_decay)
    cfg.n_critic = checked_count(cfg.n_critic, "n_critic", 1)
    cfg.critic_warmup = checked_count(cfg.critic_warmup, "critic_warmup", 0)
    cfg.lambda_lowfreq, cfg.lowfreq_sigma = float(cfg.lambda_lowfreq), float(cfg.lowfreq_sigma)
    if cfg.lambda_lowfreq < 0 or not cfg.lowfreq_sigma > 0:
        raise LowdoseError(f"lambda_lowfreq must be >= 0 and lowfreq_sigma > 0 pixels, got "
                           f"{cfg.lambda_lowfreq} and {cfg.lowfreq_sigma}")


def checked_paired_fraction(value: float) -> float:
    """``paired_fraction`` as a float in [0, 1] (the share of aligned pairs in a batch).

    Example:
        >>> checked_paired_fraction(0.5)
        0.5
    """
    if not 0.0 <= float(value) <= 1.0:
        raise LowdoseError(f"paired_fraction must be in [0, 1], got {value}")
    return float(value)


def checked_split(split: str, option: str) -> str:
    """``split`` if it is one of :data:`SPLITS`, else a :class:`LowdoseError` naming ``option``.

    Example:
        >>> checked_split("slice", "data.split")
        'slice'
    """
    if split not in SPLITS:
        raise LowdoseError(f"{option} {split!r}: unknown split; known: {', '.join(SPLITS)}")
    return split


def lr_scale(lr_decay: tuple[int, int] | None, step: int) -> float:
    """The learning-rate factor at ``step``: 1 before ``start``, linear to 0 at ``end``.

    Example:
        >>> lr_scale((100, 200), 150), lr_scale(None, 150)
        (0.5, 1.0)
    """
    if lr_decay is None:
        return 1.0
    start, end = lr_decay
    return min(1.0, max(0.0, (end - step) / (end - start)))


# ---------------------------------------------------------------- GAN-CIRCLE


@dataclass
class GanCircleConfig:
    """GAN-CIRCLE training settings (see the module docstring for the loss units).

    Defaults are the paper's where the fact sheet could confirm them, else the reference code's
    (charlesyou999648/GAN-CIRCLE): Adam(lr 1e-5, betas 0.5/0.999) for both players, one critic
    step per generator step, history pool 50, JST tau 0.1. ``gp_weight`` (code: 1, with a broken
    norm; WGAN-GP paper: 10) and ``f0`` (paper-likely 64, released 128) are the disputed values.
    ``paired_fraction`` > 0 turns on the supervised term (semi-supervised mode). Not in the
    release, off by default: ``zero_init_output`` starts both generators at the identity (zero
    last convolution); ``critic_gain`` multiplies what the critics see (and so their Lipschitz
    bound in [0, 1] units), for a critic that must pick out noise of a few thousandths. ``l1_only``
    trains ``G`` alone with the L1 term on aligned pairs (the ablation baseline of the benchmarks:
    the same network without the GAN ensemble). ``lr_decay`` ``(start, end)`` decays both
    learning rates linearly to zero between those steps (CycleGAN's schedule; None: constant,
    as in the release). ``n_critic`` > 1 steps the critics on every trainer step and the
    generators on every ``n_critic``-th only (WGAN-GP's schedule, 5 there; release: 1), so a step
    count, ``lr_decay`` and ``val_every`` count critic steps. ``critic_warmup`` trains the
    critics alone for that many first steps (the generators stay as initialised), so that the
    first generator steps follow a critic that already tells the domains apart.
    ``lambda_lowfreq`` (not in the paper; 0: off) weighs :func:`lowfreq_loss` on both generators'
    changes, Gaussian low-pass of ``lowfreq_sigma`` pixels: an unpaired critic can reward a shift
    of the HU level that tells its two sets of slices apart, which a denoiser must not make.
    """

    scale: int = 1
    f0: int = 64
    stride: int | None = None
    upsampler: str | None = None
    critic_base: int = 64
    critic_gain: float = 1.0
    zero_init_output: bool = False
    lr_generator: float = 1e-5
    lr_critic: float = 1e-5
    betas: tuple[float, float] = (0.5, 0.999)
    lambda_adv: float = 1.0
    lambda_cycle: float = 1.0
    lambda_identity: float = 0.25
    lambda_jst: float = 3.2
    jst_tau: float = 0.1
    lambda_supervised: float = 0.25
    lambda_lowfreq: float = 0.0
    lowfreq_sigma: float = 4.0
    gp_weight: float = 1.0
    paired_fraction: float = 0.0
    pool_size: int = 50
    ema_decay: float = 0.0
    lr_decay: tuple[int, int] | None = None
    n_critic: int = 1
    critic_warmup: int = 0
    l1_only: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_shared_settings(self)
        if self.l1_only and (self.n_critic != 1 or self.critic_warmup):
            raise LowdoseError("n_critic and critic_warmup need the critics: they do not apply "
                               "with l1_only")
        self.paired_fraction = 1.0 if self.l1_only else checked_paired_fraction(
            self.paired_fraction)


class _GanFamily(TrainingFamily):
    """What GAN-CIRCLE and CycleGAN share: two generators, two critics, one loop shape.

    Modules: ``g_lh`` (G, low->high quality), ``g_hl`` (F, back), ``d_high`` (scores the
    high-quality domain), ``d_low`` (the low one); with ``ema_decay > 0`` also ``g_lh_ema``, an
    average of G used for validation and export. Two optimisers, ``generator`` then the critic
    optimiser (:attr:`critic_name`), stepped on every batch. The generator step caches its fakes;
    the critic step reuses them (detached, through a history pool when enabled).

    A subclass builds its networks, maps HU to its networks' range (:meth:`_to_net`) and back to
    [0, 1] full range (:meth:`_to_unit`), and supplies the adversarial losses
    (:meth:`_adversarial_g`, :meth:`_critic_loss`), the loss weights and units, and any extra
    generator terms (:meth:`_extra_terms`).
    """

    family_name = ""
    critic_name = "critic"
    #: Pixels that turn per-pixel mean L1 terms into the family's units.
    pixels = 1
    input_scaling = ""

    def __init__(self, cfg: Any, modules: dict[str, nn.Module], arch: dict[str, Any]) -> None:
        self.cfg, self.arch = cfg, arch
        self.modules = modules
        self.init_source: str | None = None  # the run a fine-tune started from (--init)
        # The run's data settings (gan_run_data), set by train_gan: saved in every checkpoint's
        # config so that a --resume can be checked against them before the pool is built.
        self.run_data: dict[str, Any] | None = None
        if getattr(cfg, "ema_decay", 0.0) > 0:
            self.modules["g_lh_ema"] = EMA(self.modules["g_lh"], cfg.ema_decay)
        self.pool_high = HistoryPool(cfg.pool_size, cfg.seed)
        self.pool_low = HistoryPool(cfg.pool_size, cfg.seed + 1)
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def optimizer_order(self) -> tuple[str, str]:
        return ("generator", self.critic_name)

    # ---- hooks
    def _to_net(self, hu: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _to_unit(self, net: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _lr(self) -> tuple[float, float]:
        """Learning rates of the generators and the critics."""
        raise NotImplementedError

    def _weights(self) -> dict[str, float]:
        """Weights of ``adv_g``, ``cycle``, ``identity`` and ``supervised``."""
        raise NotImplementedError

    def _adversarial_g(self, critic: nn.Module, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _critic_loss(
        self, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``{"loss": ..., other logged values}`` of one critic on one domain."""
        raise NotImplementedError

    def _extra_terms(
        self, x: torch.Tensor, y: torch.Tensor, same_x: torch.Tensor, same_y: torch.Tensor
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """Further generator terms on the identity mappings, by name: ``(weight, value)``."""
        return {}

    def _uses_identity_mappings(self) -> bool:
        """Whether a weighted term needs ``G(y)`` and ``F(x)`` (the identity term here)."""
        return self._weights()["identity"] > 0

    def _wgan_gp_critic_loss(
        self, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The WGAN-GP critic loss on ``critic_gain`` times the images (both families)."""
        k = self.cfg.critic_gain
        real, fake = k * real, k * fake
        w = wgan_critic_loss(critic(real), critic(fake))
        # alpha from the global RNG, which the trainer reseeds every step (exact resume).
        gp = gradient_penalty(critic, real, fake)
        # -w is the critic's estimate of the Wasserstein distance: logged as a progress signal.
        return {"loss": w + self.cfg.gp_weight * gp, "wdist": -w, "gp": gp}

    # ---- the trainer's interface
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        m, betas = self.modules, self.cfg.betas
        lr_g, lr_d = self._lr()
        gen = [*m["g_lh"].parameters(), *m["g_hl"].parameters()]
        crit = [*m["d_high"].parameters(), *m["d_low"].parameters()]
        return {
            "generator": torch.optim.Adam(gen, lr=lr_g, betas=betas),
            self.critic_name: torch.optim.Adam(crit, lr=lr_d, betas=betas),
        }

    def lr_factor(self, optimizer_name: str, step: int) -> float:
        """Both players: constant, or the linear decay to zero of ``lr_decay``."""
        return lr_scale(self.cfg.lr_decay, step)

    def _generator_turn(self, step: int) -> bool:
        after = step - self.cfg.critic_warmup
        return after >= 0 and after % self.cfg.n_critic == 0

    def training_step(self, batch: Any, optimizer_name: str, step: int) -> dict[str, torch.Tensor]:
        if optimizer_name == "generator":
            # {} tells the trainer to skip the optimiser on this step
            return self._generator_step(batch) if self._generator_turn(step) else {}
        if optimizer_name == self.critic_name:
            return self._critic_step(batch)
        raise KeyError(f"unknown optimiser {optimizer_name!r}")

    def _generator_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        m, px, w = self.modules, self.pixels, self._weights()
        x, y = self._to_net(batch["low"]), self._to_net(batch["high"])
        g, f = m["g_lh"], m["g_hl"]
        for d in (m["d_high"], m["d_low"]):
            d.requires_grad_(False)
        fake_y, fake_x = g(x), f(y)
        adv = self._adversarial_g(m["d_high"], fake_y) + self._adversarial_g(m["d_low"], fake_x)
        cyc = cycle_loss(x, f(fake_y), px) + cycle_loss(y, g(fake_x), px)
        out = {"adv_g": adv, "cycle": cyc}
        loss = w["adv_g"] * adv + w["cycle"] * cyc
        if self._uses_identity_mappings():
            # Two more passes of each generator (a third of the step): only when a term uses them.
            same_y, same_x = g(y), f(x)
            idt = cycle_loss(y, same_y, px) + cycle_loss(x, same_x, px)
            out["identity"] = idt
            loss = loss + w["identity"] * idt
            for name, (weight, value) in self._extra_terms(x, y, same_x, same_y).items():
                out[name] = value
                loss = loss + weight * value
        if self.cfg.lambda_lowfreq > 0:
            sigma = self.cfg.lowfreq_sigma
            kept = lowfreq_loss(x, fake_y, sigma, px) + lowfreq_loss(y, fake_x, sigma, px)
            out["lowfreq"] = kept
            loss = loss + self.cfg.lambda_lowfreq * kept
        paired = batch.get("paired")
        if w["supervised"] > 0 and paired is not None and bool(paired.any()):
            mask = paired.to(x.device).bool()
            sup = cycle_loss(y[mask], fake_y[mask], px) + cycle_loss(x[mask], fake_x[mask], px)
            loss = loss + w["supervised"] * sup
            out["supervised"] = sup
        for d in (m["d_high"], m["d_low"]):
            d.requires_grad_(True)
        self._cache = {"fake_y": fake_y.detach(), "fake_x": fake_x.detach()}
        out["loss"] = loss
        return out

    def _critic_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        m = self.modules
        x, y = self._to_net(batch["low"]), self._to_net(batch["high"])
        if not self._cache:
            with torch.no_grad():
                self._cache = {"fake_y": m["g_lh"](x), "fake_x": m["g_hl"](y)}
        fake_y = self.pool_high.query(self._cache["fake_y"])
        fake_x = self.pool_low.query(self._cache["fake_x"])
        self._cache = {}
        high = self._critic_loss(m["d_high"], y, fake_y)
        low = self._critic_loss(m["d_low"], x, fake_x)
        out = {"loss": high.pop("loss") + low.pop("loss")}
        out.update({f"{k}_high": v for k, v in high.items()})
        out.update({f"{k}_low": v for k, v in low.items()})
        return out

    def on_step_end(self, step: int) -> None:
        """Called by the trainer after every optimiser of a step: update the EMA of ``G``."""
        if "g_lh_ema" in self.modules and self._generator_turn(step):
            self.modules["g_lh_ema"].update(self.modules["g_lh"])

    def validation_step(self, batch: Any) -> dict[str, float]:
        """PSNR (full range) of ``G(low)`` and of ``low`` against ``high`` on aligned pairs."""
        paired = batch.get("paired")
        if paired is None or not bool(paired.any()):
            return {}
        g = _unwrap(self.modules.get("g_lh_ema", self.modules["g_lh"]))
        mask = paired.bool()
        low, high = batch["low"][mask], batch["high"][mask]
        with torch.no_grad():
            device = next(g.parameters()).device
            out = self._to_unit(g(self._to_net(low).to(device))).clamp(0, 1).to(high.device)
        y = self._to_unit(self._to_net(high))
        x = self._to_unit(self._to_net(low))
        mse_in = ((x - y) ** 2).flatten(1).mean(1).clamp_min(1e-12)
        mse = ((out - y) ** 2).flatten(1).mean(1).clamp_min(1e-12)
        return {
            "psnr_full": float((-10 * torch.log10(mse)).mean()),
            "psnr_full_input": float((-10 * torch.log10(mse_in)).mean()),
        }

    def state_dict(self) -> dict[str, Any]:
        """Non-module state to checkpoint (history pools)."""
        return {"pool_high": self.pool_high.state_dict(), "pool_low": self.pool_low.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pool_high.load_state_dict(state.get("pool_high", {}))
        self.pool_low.load_state_dict(state.get("pool_low", {}))

    def config(self) -> dict[str, Any]:
        """A denoiser config (loadable by ``load_denoiser`` / ``load_upscaler``) plus training."""
        from lowdose.models.network import FORMAT, FORMAT_VERSION

        ema = "g_lh_ema" in self.modules
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "family": self.family_name,
            "model": self.family_name,
            "scale": int(getattr(self.cfg, "scale", 1)),
            "arch": dict(self.arch),
            "hu_range": [-1024.0, 3072.0],
            "input_scaling": self.input_scaling,
            "module_prefix": "g_lh_ema.module." if ema else "g_lh.",
            "training": asdict(self.cfg),
            **({"init": self.init_source} if self.init_source else {}),
            **({"data": self.run_data} if self.run_data is not None else {}),
        }

    def run_settings(self, config: dict[str, Any]) -> dict[str, Any]:
        """The trainer's resume check: :func:`gan_run_settings` of a family config."""
        return gan_run_settings(config)


class GanCircleFamily(_GanFamily):
    """GAN-CIRCLE as a trainer family: ``G`` (low->high), ``F`` (high->low), two WGAN critics.

    Modules as in :class:`_GanFamily`; with ``l1_only`` only ``g_lh`` (and its EMA), trained
    with the supervised L1 term alone (one optimiser).

    Example:
        >>> fam = GanCircleFamily(GanCircleConfig(f0=16, critic_base=8, pool_size=0))
        >>> list(fam.configure_optimizers())
        ['generator', 'critic']
    """

    family_name = "gan-circle"
    critic_name = "critic"
    pixels = REFERENCE_PIXELS
    input_scaling = "HU clipped to hu_range, scaled to [0, 1]"

    def __init__(self, config: GanCircleConfig | None = None, **overrides: Any) -> None:
        from lowdose.models.gan_circle import CircleGenerator, PatchCritic

        cfg = GanCircleConfig(**{**asdict(config or GanCircleConfig()), **overrides})
        torch.manual_seed(cfg.seed)
        arch = {"scale": cfg.scale, "f0": cfg.f0, "stride": cfg.stride, "upsampler": cfg.upsampler}
        init = {"zero_init_output": cfg.zero_init_output}
        modules: dict[str, nn.Module] = {"g_lh": CircleGenerator(**arch, **init)}
        if not cfg.l1_only:
            modules["g_hl"] = CircleGenerator(**arch, **init)
            modules["d_high"] = PatchCritic(base=cfg.critic_base)
            modules["d_low"] = PatchCritic(base=cfg.critic_base)
        super().__init__(cfg, modules, arch)

    @property
    def optimizer_order(self) -> tuple[str, ...]:
        return ("generator",) if self.cfg.l1_only else ("generator", "critic")

    def _to_net(self, hu: torch.Tensor) -> torch.Tensor:
        from lowdose.models.gan_circle import hu_to_net

        return hu_to_net(hu.float())

    def _to_unit(self, net: torch.Tensor) -> torch.Tensor:
        return net

    def _lr(self) -> tuple[float, float]:
        return self.cfg.lr_generator, self.cfg.lr_critic

    def _weights(self) -> dict[str, float]:
        c = self.cfg
        return {"adv_g": c.lambda_adv, "cycle": c.lambda_cycle, "identity": c.lambda_identity,
                "supervised": c.lambda_supervised}

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if self.cfg.l1_only:
            params = self.modules["g_lh"].parameters()
            return {"generator": torch.optim.Adam(params, lr=self.cfg.lr_generator,
                                                  betas=self.cfg.betas)}
        return super().configure_optimizers()

    def _generator_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.cfg.l1_only:
            x, y = self._to_net(batch["low"]), self._to_net(batch["high"])
            return {"loss": cycle_loss(y, self.modules["g_lh"](x), self.pixels)}
        return super()._generator_step(batch)

    def _adversarial_g(self, critic: nn.Module, fake: torch.Tensor) -> torch.Tensor:
        return wgan_generator_loss(critic(self.cfg.critic_gain * fake))

    def _critic_loss(
        self, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return self._wgan_gp_critic_loss(critic, real, fake)

    def _uses_identity_mappings(self) -> bool:
        return super()._uses_identity_mappings() or self.cfg.lambda_jst > 0

    def _extra_terms(
        self, x: torch.Tensor, y: torch.Tensor, same_x: torch.Tensor, same_y: torch.Tensor
    ) -> dict[str, tuple[float, torch.Tensor]]:
        c = self.cfg
        jst = jst_loss(y, same_y, c.jst_tau, self.pixels) + jst_loss(x, same_x, c.jst_tau,
                                                                      self.pixels)
        return {"jst": (c.lambda_jst, jst)}


# ---------------------------------------------------------------- CycleGAN


#: CycleGAN's games: the reference's least squares, or GAN-CIRCLE's Wasserstein with penalty.
CYCLEGAN_ADVERSARIAL = ("lsgan", "wgan-gp")


@dataclass
class CycleGanConfig:
    """CycleGAN training settings (Zhu et al. 2017; junyanz/pytorch-CycleGAN-and-pix2pix).

    LSGAN, lambda 10 per cycle, identity 0.5 x lambda, Adam(2e-4, 0.5/0.999), pool 50, critic
    loss halved. ``generator``: the reference's ResNet (``ngf``, ``n_blocks``; its default) or
    its U-Net option (``ngf``, ``num_downs``; :class:`lowdose.models.cyclegan.UnetGenerator`).
    Images are HU in [-1024, 3072] mapped to [-1, 1] (tanh output). ``residual`` and
    ``upsample`` are the generator's deviations from the reference (see
    :class:`lowdose.models.cyclegan.ResnetGenerator`); ``ema_decay`` > 0 keeps an average of G;
    ``lr_decay`` ``(start, end)``: linear decay of the learning rate to zero between those steps
    (the reference decays over its second 100 epochs; None: constant). ``adversarial``
    ``"wgan-gp"`` (not the reference's; default ``"lsgan"``) swaps the least-squares game for
    GAN-CIRCLE's Wasserstein one with its gradient penalty of weight ``gp_weight``, the same
    loss code: with LSGAN the discriminators sat at chance on the unpaired CT domains, which
    differ only in their noise, and G stayed at the identity (see the ``cyclegan`` card).
    """

    generator: str = "resnet"
    ngf: int = 64
    n_blocks: int = 9
    num_downs: int = 4
    ndf: int = 64
    residual: bool = False
    upsample: str = "deconv"
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    lambda_supervised: float = 0.0
    lambda_adv: float = 1.0
    lambda_lowfreq: float = 0.0
    lowfreq_sigma: float = 4.0
    critic_gain: float = 1.0
    adversarial: str = "lsgan"
    gp_weight: float = 10.0
    paired_fraction: float = 0.0
    pool_size: int = 50
    ema_decay: float = 0.0
    lr_decay: tuple[int, int] | None = None
    n_critic: int = 1
    critic_warmup: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        check_shared_settings(self)
        self.paired_fraction = checked_paired_fraction(self.paired_fraction)
        from lowdose.models.cyclegan import GENERATORS

        if self.generator not in GENERATORS:
            raise LowdoseError(f"generator {self.generator!r}: unknown; known: "
                               f"{', '.join(GENERATORS)}")
        if self.adversarial not in CYCLEGAN_ADVERSARIAL:
            raise LowdoseError(f"adversarial {self.adversarial!r}: unknown; known: "
                               f"{', '.join(CYCLEGAN_ADVERSARIAL)}")


class CycleGanFamily(_GanFamily):
    """CycleGAN as a trainer family: LSGAN discriminators (or WGAN-GP critics, ``adversarial``),
    L1 cycle and identity terms.

    Example:
        >>> fam = CycleGanFamily(CycleGanConfig(ngf=8, n_blocks=1, ndf=8, pool_size=0))
        >>> list(fam.configure_optimizers())
        ['generator', 'discriminator']
    """

    family_name = "cyclegan"
    critic_name = "discriminator"
    pixels = 1
    input_scaling = "HU clipped to hu_range, scaled to [-1, 1] inside the model"

    def __init__(self, config: CycleGanConfig | None = None, **overrides: Any) -> None:
        from lowdose.models.cyclegan import PatchDiscriminator, build_generator

        cfg = CycleGanConfig(**{**asdict(config or CycleGanConfig()), **overrides})
        torch.manual_seed(cfg.seed)
        arch: dict[str, Any] = {"ngf": cfg.ngf, "n_blocks": cfg.n_blocks}
        if cfg.generator == "unet":
            arch = {"generator": "unet", "ngf": cfg.ngf, "num_downs": cfg.num_downs}
        if cfg.residual or cfg.upsample != "deconv":  # older weights carry only ngf, n_blocks
            arch.update(residual=cfg.residual, upsample=cfg.upsample)
        modules: dict[str, nn.Module] = {
            "g_lh": build_generator(**arch),
            "g_hl": build_generator(**arch),
            "d_high": PatchDiscriminator(ndf=cfg.ndf),
            "d_low": PatchDiscriminator(ndf=cfg.ndf),
        }
        super().__init__(cfg, modules, arch)

    def _to_net(self, hu: torch.Tensor) -> torch.Tensor:
        from lowdose.models.cyclegan import hu_to_signed

        return hu_to_signed(hu.float())

    def _to_unit(self, net: torch.Tensor) -> torch.Tensor:
        return (net + 1) / 2

    def _lr(self) -> tuple[float, float]:
        return self.cfg.lr, self.cfg.lr

    def _weights(self) -> dict[str, float]:
        c = self.cfg
        return {"adv_g": c.lambda_adv, "cycle": c.lambda_cycle,
                "identity": c.lambda_identity * c.lambda_cycle, "supervised": c.lambda_supervised}

    def _adversarial_g(self, critic: nn.Module, fake: torch.Tensor) -> torch.Tensor:
        scores = critic(self.cfg.critic_gain * fake)
        if self.cfg.adversarial == "wgan-gp":
            return wgan_generator_loss(scores)
        return lsgan_loss(scores, 1.0)

    def _critic_loss(
        self, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        if self.cfg.adversarial == "wgan-gp":
            return self._wgan_gp_critic_loss(critic, real, fake)
        k = self.cfg.critic_gain
        loss = 0.5 * (lsgan_loss(critic(k * real), 1.0) + lsgan_loss(critic(k * fake), 0.0))
        return {"loss": loss, "d": loss.detach()}


# ---------------------------------------------------------------- data

#: The real full-dose sets GAN weights are trained on (never ``mayo-l506-pairs``: the test set).
TRAIN_SETS = ("chest-ct-dicom", "mayo-l067-full-dose", "ct-series-itkelastix-chest")
SPLITS = ("group", "slice")


def blur_downsample(hu: torch.Tensor, scale: int, sigma: float | None = None) -> torch.Tensor:
    """The stated resolution loss for super-resolution: Gaussian blur, then ``s x s`` binning.

    ``(B, 1, H, W)`` -> ``(B, 1, H / s, W / s)``. The blur is a Gaussian of standard deviation
    ``sigma`` fine pixels (default ``0.5 * s``, a scanner PSF about as wide as the coarse pixel);
    the binning averages each ``s x s`` block (detector/pixel integration), so a coarse pixel's
    centre lies at fine coordinate ``s * i + (s - 1) / 2``, the convention of bicubic
    interpolation with ``align_corners=False``.

    Example:
        >>> blur_downsample(torch.full((1, 1, 8, 8), 40.0), 2).shape
        torch.Size([1, 1, 4, 4])
    """
    import torch.nn.functional as nnf

    if scale == 1:
        return hu
    return nnf.avg_pool2d(gaussian_blur(hu, 0.5 * scale if sigma is None else sigma), scale)


def gaussian_blur(hu: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, 1, H, W)`` images, ``sigma`` in pixels, radius 3 sigma,
    edges replicated.

    Example:
        >>> x = torch.full((1, 1, 9, 9), 40.0)
        >>> torch.allclose(gaussian_blur(x, 1.0), x)
        True
    """
    import torch.nn.functional as nnf

    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=hu.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(hu.dtype)
    x = nnf.pad(hu, (radius, radius, radius, radius), mode="replicate")
    x = nnf.conv2d(x, k.view(1, 1, 1, -1))
    return nnf.conv2d(x, k.view(1, 1, -1, 1))


def degrade(
    full_dose_hu: torch.Tensor,
    dose: float,
    scale: int = 1,
    method: str = "projection",
    seed: int = 0,
    pixel_size_mm: float | None = None,
    slice_thickness_mm: float | None = None,
    relative_dose: bool = False,
) -> torch.Tensor:
    """Low-quality version of full-dose slices ``(B, 1, H, W)`` HU, on the fine grid.

    Resolution loss first (:func:`blur_downsample`), then the lower dose by the physics
    (:func:`lowdose.physics.simulate_low_dose`, ``method``) on the coarse image, as a lower-dose
    scan reconstructed on a coarser grid would give; then bicubic interpolation back to the
    fine grid, the input the same-size GAN-CIRCLE generator expects. The projection physics
    gets the slices' pixel size and thickness (the calibrated photon count scales with both),
    as for the supervised denoisers; with ``relative_dose`` the dose is a fraction of each
    (coarse) slice's own dose, read from its noise (``ProjectionSimulator.relative_to_image``).
    """
    from lowdose.models.gan_circle import to_fine_grid
    from lowdose.physics.api import relative_dose_options, simulate_low_dose

    coarse = blur_downsample(full_dose_hu.float(), scale)
    options: dict[str, Any] = {}
    if pixel_size_mm is not None and method == "projection":
        options["pixel_size_mm"] = pixel_size_mm * scale
    if slice_thickness_mm is not None and method == "projection":
        options["slice_thickness_mm"] = slice_thickness_mm
    if relative_dose:
        options.update(relative_dose_options(method, "relative_dose"))
    low = coarse
    if dose < 1:
        low = simulate_low_dose(coarse, dose, method=method, seed=seed, **options)
    return to_fine_grid(low, scale)


@dataclass
class SlicePool:
    """Full-dose slices and their degraded copies, split into two disjoint halves.

    Unpaired sampling draws low-quality patches from ``low_*`` slices and full-dose patches
    from ``high_*`` slices (other patients, or other slices of a single-patient series). Paired
    samples (semi-supervised mode) come from the low half, whose full-dose originals are kept.

    Attributes:
        low_full, low_degraded: ``(N, H, W)`` HU of the low half (original and degraded).
        high_full: ``(M, H, W)`` HU of the high half.
    """

    low_full: torch.Tensor
    low_degraded: torch.Tensor
    high_full: torch.Tensor
    info: dict[str, Any]

    def save(self, path: str | Any) -> None:
        """Write the pool as safetensors (tensors) with its info as JSON metadata."""
        from safetensors.torch import save_file

        from lowdose.io.atomic import atomic_path

        tensors = {
            "low_full": self.low_full.contiguous(),
            "low_degraded": self.low_degraded.contiguous(),
            "high_full": self.high_full.contiguous(),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"info": json.dumps(self.info)})

    @classmethod
    def load(cls, path: str | Any) -> SlicePool:
        """A pool written by :meth:`save`: its tensors and info, from one open of the file."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            t = {k: f.get_tensor(k) for k in ("low_full", "low_degraded", "high_full")}
            info = cls._info(f)
        return cls(t["low_full"], t["low_degraded"], t["high_full"], info)

    @classmethod
    def read_info(cls, path: str | Any) -> dict[str, Any]:
        """A saved pool's info, without reading its tensors."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return cls._info(f)

    @staticmethod
    def _info(opened: Any) -> dict[str, Any]:
        return json.loads((opened.metadata() or {}).get("info", "{}"))


def _axial_slices(root: Any, name: str) -> list[tuple[str, Any]]:
    """(group, CTImage slice stack) of one training set; groups are patients (or halves)."""
    from pathlib import Path

    from lowdose.io.read import read_ct

    folder = Path(root) / name
    groups: list[tuple[str, Any]] = []
    if name == "chest-ct-dicom":
        for patient in sorted(p for p in folder.iterdir() if (p / "axial").is_dir()):
            for f in sorted((patient / "axial").glob("*.dcm")):
                groups.append((patient.name, read_ct(f)))
    elif name == "ct-series-itkelastix-chest":
        image = read_ct(folder)
        stack = image.slices()
        half = len(stack) // 2
        groups.append(("itk-upper", image.with_pixels(stack[:half])))
        groups.append(("itk-lower", image.with_pixels(stack[half:])))
    else:
        for f in sorted(folder.glob("*.IMA")):
            groups.append((f.name.split(".")[3], read_ct(f)))
    return groups


def _path_groups(paths: list[str]) -> list[tuple[str, Any]]:
    """(group, CTImage) per user path; one path with several slices is split in two halves.

    A coronal, sagittal or oblique image is left out with one warning, as the supervised
    models' training data leaves it out (:data:`lowdose.training.denoising.AXIAL_NOISE`).

    Raises:
        LowdoseError: no path holds axial slices.
    """
    import warnings
    from pathlib import Path

    from lowdose.errors import LowdoseError
    from lowdose.io.read import read_ct
    from lowdose.models.base import reformat_note
    from lowdose.training.denoising import AXIAL_NOISE

    groups, reformats = [], []
    for i, p in enumerate(paths):
        image = read_ct(p)
        if reformat_note(str(p), image.orientation, AXIAL_NOISE) is not None:
            reformats.append(f"{p} ({image.orientation})")
        else:
            groups.append((f"{i:03d}-{Path(p).name}", image))
    if reformats and not groups:
        raise LowdoseError(f"no axial slice to train on, only {', '.join(reformats)}; "
                           f"{AXIAL_NOISE}")
    if reformats:
        warnings.warn(f"left out {', '.join(reformats)}: not axial; {AXIAL_NOISE}",
                      stacklevel=2)
    if len(groups) == 1 and groups[0][1].n_slices > 1:
        name, image = groups[0]
        stack = image.slices()
        half = len(stack) // 2
        groups = [(f"{name}-a", image.with_pixels(stack[:half])),
                  (f"{name}-b", image.with_pixels(stack[half:]))]
    return groups


def build_slice_pool(
    data_root: Any,
    sets: tuple[str, ...] = TRAIN_SETS,
    dose: float = 0.25,
    scale: int = 1,
    method: str = "projection",
    size: int = 512,
    seed: int = 0,
    progress: bool = True,
    paths: list[str] | None = None,
    relative_dose: bool = False,
    split: str = "group",
) -> SlicePool:
    """Read the real full-dose training sets, split them, and degrade the low half.

    ``paths`` (files, DICOM series folders, NIfTI volumes of full-dose CT) replace ``sets``:
    each path is a group; a single path is split into its upper and lower halves.

    Slices other than ``size`` x ``size`` are centre-cropped or padded with -1024 HU, and values
    below -1024 HU (the padding outside the reconstruction circle) are set to -1024. With
    ``split="group"`` groups (patients; for the single-patient series, its upper and lower
    halves; for the three Mayo L067 slices, the slices) alternate between the low and the high
    half: the halves hold different patients, whose own noise differs. With ``split="slice"``
    the slices of every group alternate instead: both halves hold every patient and scan, so
    they differ by the simulated dose reduction only (still unpaired: no slice is in both).

    Example:
        >>> pool = build_slice_pool("../shared/data", split="slice")  # doctest: +SKIP
    """
    import numpy as np

    from lowdose.errors import LowdoseError
    from lowdose.physics.projection import TEXTURE_TOLERANCE

    if "mayo-l506-pairs" in sets:
        raise ValueError("mayo-l506-pairs is the test set; never train on it")
    checked_split(split, "split")
    # group -> its slices as (HU, pixel mm, thickness mm or None), in reading order
    by_group: dict[str, list[tuple[np.ndarray, float, float | None]]] = {}
    sources = [(name, _axial_slices(data_root, name)) for name in sets] if not paths else [
        ("data", _path_groups(paths))
    ]
    for name, groups in sources:
        for group, image in groups:
            t = image.metadata.get("slice_thickness") or (
                image.spacing[0] if image.is_volume else None)
            for hu in image.slices():
                by_group.setdefault(f"{name}/{group}", []).append(
                    (_fit(hu, size), float(image.spacing[-1]), float(t) if t else None))
    names = sorted(by_group)
    if split == "slice":
        # Consecutive slices alternate; the parity runs on across groups, so that groups of one
        # slice (the Mayo L067 slices) alternate too.
        flat = [(g, item) for g in names for item in by_group[g]]
        halves = [[(f"{g}#{half}", item) for i, (g, item) in enumerate(flat) if i % 2 == half]
                  for half in (0, 1)]
    else:
        halves = [[(g, item) for g in names[half::2] for item in by_group[g]] for half in (0, 1)]
    if not halves[1]:
        raise LowdoseError("GAN training data: need at least two slices (two groups)")
    low_groups, high_groups = (list(dict.fromkeys(g for g, _ in half)) for half in halves)
    low = torch.from_numpy(np.stack([item[0] for _, item in halves[0]]))
    high = torch.from_numpy(np.stack([item[0] for _, item in halves[1]]))
    pixels = [item[1] for _, item in halves[0]]
    every_pixel = [item[1] for half in halves for _, item in half]
    thick = [item[2] for _, item in halves[0]]
    degraded = []
    steps = range(len(low))
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc=f"degrade (dose {dose}, x{scale}, {method})")
    relative = " of each slice's own dose" if relative_dose else ""
    for i in steps:
        one = degrade(low[i][None, None], dose, scale, method, seed + i, pixel_size_mm=pixels[i],
                      slice_thickness_mm=thick[i], relative_dose=relative_dose)
        degraded.append(one[0, 0])
    info = {
        "sets": list(sets), "dose": dose, "relative_dose": relative_dose, "scale": scale,
        "texture_tolerance": TEXTURE_TOLERANCE if relative_dose else None,
        "method": method, "seed": seed, "split": split, "low_groups": low_groups,
        "paths": [str(p) for p in paths] if paths else None,
        "high_groups": high_groups, "size": size,
        "calibration": _calibration_identity(method),
        "thickness_mm": sorted({t for t in thick if t is not None}),
        "pixel_mm": [min(every_pixel), max(every_pixel)],
        "degradation": f"blur sigma {0.5 * scale} px + {scale}x{scale} binning, then {method} "
        f"dose {dose}{relative}, bicubic back to the fine grid" if scale > 1
        else f"{method} dose {dose}{relative}",
    }
    return SlicePool(low, torch.stack(degraded), high, info)


def pool_split_line(pool: SlicePool, paired_fraction: float = 0.0) -> str:
    """One line on the slices a GAN run uses, as the supervised runs say theirs: the
    degraded (input) half and the full-dose half, with their groups (patients or series; with
    ``--split slice``, alternate slices), and where validation comes from.

    Example:
        >>> import torch
        >>> pool = SlicePool(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), torch.zeros(2, 8, 8),
        ...                  {"split": "group", "low_groups": ["a/1"], "high_groups": ["b/1"]})
        >>> pool_split_line(pool).split("; ")[0]
        'slices: 3 degraded input (group: a/1), 2 full-dose target (group: b/1), unpaired'
    """
    info = pool.info

    def groups(key: str) -> str:
        names = [g.split("#")[0] for g in info.get(key) or []]
        names = list(dict.fromkeys(names))
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return f"{info.get('split', 'group')}: {shown}" if shown else str(info.get("split"))

    seen = ("unseen as pairs" if paired_fraction <= 0 else
            f"{paired_fraction:g} of the training samples are such pairs")
    mode = "unpaired" if paired_fraction <= 0 else f"paired fraction {paired_fraction:g}"
    return (f"slices: {len(pool.low_full)} degraded input ({groups('low_groups')}), "
            f"{len(pool.high_full)} full-dose target ({groups('high_groups')}), {mode}; "
            f"validation: aligned patches of the input slices against their full dose (not "
            f"held out; {seen})")


def _calibration_identity(method: str) -> str:
    """The simulator's calibration as text (a cached pool is only reused with the same one)."""
    from lowdose.physics import build_simulator

    cal = getattr(build_simulator(method), "calibration", None)
    return "" if cal is None else repr(cal)


def _fit(hu: Any, size: int) -> Any:
    import numpy as np

    out = np.full((size, size), -1024.0, np.float32)
    h, w = hu.shape
    ch, cw = min(h, size), min(w, size)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    oy, ox = (size - ch) // 2, (size - cw) // 2
    # Outside the reconstruction circle scanners store -3024 or -2048: that is air here.
    out[oy : oy + ch, ox : ox + cw] = np.maximum(hu[y0 : y0 + ch, x0 : x0 + cw], -1024.0)
    return out


class UnpairedPatches(torch.utils.data.Dataset):
    """Random patch samples from a :class:`SlicePool`; item ``i`` is reproducible from the seed.

    Each item is a dict: ``low`` and ``high`` ``(1, P, P)`` HU patches and ``paired`` (bool).
    With probability ``paired_fraction`` the item is an aligned pair (same slice and crop of the
    low half); otherwise ``low`` and ``high`` come from the two disjoint halves. Patches that are
    mostly air (mean below ``min_mean_hu``) are redrawn; flips are drawn separately for the two
    domains (as in the reference code).

    Example:
        >>> z = torch.zeros(2, 64, 64)
        >>> pool = SlicePool(z, z, z, {})
        >>> UnpairedPatches(pool, 32, length=4)[0]["low"].shape
        torch.Size([1, 32, 32])
    """

    def __init__(
        self,
        pool: SlicePool,
        patch: int = 64,
        length: int = 10_000,
        paired_fraction: float = 0.0,
        seed: int = 0,
        min_mean_hu: float = -800.0,
    ) -> None:
        self.pool, self.patch, self.length = pool, patch, length
        self.paired_fraction, self.seed, self.min_mean_hu = paired_fraction, seed, min_mean_hu

    def __len__(self) -> int:
        return self.length

    def _crop(
        self, rng: random.Random, n: int, size: tuple[int, ...], images: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        h, w = size
        for _ in range(20):
            k = rng.randrange(n)
            y, x = rng.randrange(h - self.patch + 1), rng.randrange(w - self.patch + 1)
            crops = [im[k, y : y + self.patch, x : x + self.patch] for im in images]
            if float(crops[-1].mean()) >= self.min_mean_hu:
                break
        return crops

    def _flip(self, rng: random.Random, t: torch.Tensor) -> torch.Tensor:
        if rng.random() < 0.5:
            t = t.flip(-1)
        if rng.random() < 0.5:
            t = t.flip(-2)
        return t

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = random.Random(self.seed * 1_000_003 + index)
        p = self.pool
        size = tuple(p.low_full.shape[-2:])
        paired = rng.random() < self.paired_fraction
        if paired:
            low, high = self._crop(rng, len(p.low_full), size, [p.low_degraded, p.low_full])
            state = rng.getstate()
            low = self._flip(rng, low)
            rng.setstate(state)  # the same flips for both halves of a pair
            high = self._flip(rng, high)
        else:
            (low,) = self._crop(rng, len(p.low_full), size, [p.low_degraded])
            (high,) = self._crop(rng, len(p.high_full), size, [p.high_full])
            low, high = self._flip(rng, low), self._flip(rng, high)
        return {"low": low[None].clone(), "high": high[None].clone(),
                "paired": torch.tensor(paired)}


# ---------------------------------------------------------------- presets and the entry point

GAN_MODELS = ("gan-circle", "cyclegan")


def preset_path(name: str) -> Any:
    """The YAML preset ``name`` from ``lowdose/configs`` (``gan-circle``, ``cyclegan-cpu``, ...)."""
    from pathlib import Path

    from lowdose.errors import LowdoseError
    from lowdose.training.presets import CONFIG_DIR

    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    shipped = CONFIG_DIR / f"{name}.yaml"
    if not shipped.is_file():
        known = ", ".join(gan_preset_names())
        raise LowdoseError(f"{name}: no such GAN preset; known: {known}")
    return shipped


def gan_preset_names() -> list[str]:
    """The shipped GAN presets: GAN-CIRCLE's, then CycleGAN's, each sorted by name.

    Example:
        >>> gan_preset_names()[0]
        'gan-circle'
    """
    from lowdose.training.presets import CONFIG_DIR

    return [p.stem for family in ("gan-circle", "cyclegan")
            for p in sorted(CONFIG_DIR.glob(f"{family}*.yaml"), key=lambda p: p.stem)]


def load_preset(name: str, overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A preset as a dict with ``family``, ``model``, ``data`` and ``trainer`` sections.

    A preset may build on another (``base: gan-circle-semi-cpu``, see
    ``lowdose.training.presets``). ``overrides`` maps section -> {key: value}, applied on top
    (e.g. from CLI options).

    Example:
        >>> load_preset("gan-circle")["family"]
        'gan-circle'
    """
    from lowdose.errors import LowdoseError
    from lowdose.training.presets import read_preset
    from lowdose.training.trainer import TrainerConfig

    path = preset_path(name)
    data = read_preset(path, preset_path)
    if data.get("family") not in GAN_MODELS:
        raise LowdoseError(f"{path}: family must be one of {GAN_MODELS}")
    # Refused now, naming the key: train_gan reads only these sections, so a misspelt one
    # (`trainr:`) was ignored without a word, and a misspelt key failed as a raw TypeError.
    model_cls = GanCircleConfig if data["family"] == "gan-circle" else CycleGanConfig
    schemas = {"model": model_cls, "data": GanDataConfig, "trainer": TrainerConfig}
    unknown = sorted(set(data) - {"family", *schemas})
    if unknown:
        raise LowdoseError(f"{path}: unknown sections {unknown}; known: family, "
                           f"{', '.join(schemas)}")
    for section, cls in schemas.items():
        settings = data.get(section) or {}
        if not isinstance(settings, dict):
            raise LowdoseError(f"{path}: section {section!r}: {settings!r} is not a mapping "
                               "of settings")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise LowdoseError(f"{path}: section {section!r}: unknown keys {unknown}; known: "
                               f"{', '.join(sorted(known))}")
        data[section] = {**settings, **((overrides or {}).get(section) or {})}
    # The data and trainer values too (the model's are checked by build_family, when the
    # run starts and before any data work: a CLI option such as --scale may apply to one
    # family only).
    GanDataConfig(**data["data"])
    TrainerConfig.from_dict(data["trainer"])
    return data


@dataclass
class GanDataConfig:
    """Where the training patches come from (see :func:`build_slice_pool`)."""

    data_root: str | None = None
    paths: list[str] | None = None
    sets: tuple[str, ...] = TRAIN_SETS
    dose: float = 0.25
    method: str = "projection"
    relative_dose: bool = False
    split: str = "group"
    slice_size: int = 512
    patch: int = 64
    length: int = 100_000
    val_length: int = 32
    min_mean_hu: float = -800.0
    cache: str | None = None

    def __post_init__(self) -> None:
        from lowdose.physics.base import simulators
        from lowdose.physics.checks import check_dose
        from lowdose.settings import (
            checked_bool,
            checked_choice,
            checked_float,
            checked_int,
            checked_text,
        )

        checked_split(self.split, "data.split")
        # Checked when the preset is loaded, not when the pool is built or the patches drawn.
        self.dose = check_dose(self.dose, "data.dose")
        self.method = checked_choice(self.method, "data.method", simulators.names())
        self.relative_dose = checked_bool(self.relative_dose, "data.relative_dose")
        for name in ("slice_size", "patch", "length", "val_length"):
            setattr(self, name, checked_int(getattr(self, name), f"data.{name}", 1))
        self.min_mean_hu = checked_float(self.min_mean_hu, "data.min_mean_hu")
        self.data_root = checked_text(self.data_root, "data.data_root")
        self.cache = checked_text(self.cache, "data.cache")


def build_family(family: str, model: dict[str, Any]) -> TrainingFamily:
    """The GAN family named ``family`` with the ``model`` settings of a preset."""
    from lowdose.errors import LowdoseError

    try:
        if family == "gan-circle":
            return GanCircleFamily(GanCircleConfig(**model))
        if family == "cyclegan":
            return CycleGanFamily(CycleGanConfig(**model))
    except TypeError as exc:
        raise LowdoseError(f"{family}: bad model settings {sorted(model)}: {exc}") from None
    raise LowdoseError(f"unknown GAN family {family!r}; known: {', '.join(GAN_MODELS)}")


# Model settings a resume may change: the optimisers and their schedule, the loss terms and
# their weights, the critic schedule and the history pools (as the supervised family's optimiser
# and loss may change). Every other model setting (the architecture, the EMA, l1_only, the seed)
# defines the run's model and is compared.
_RESUMABLE_MODEL_KEYS = frozenset({
    "lr_generator", "lr_critic", "lr", "betas", "lr_decay", "n_critic", "critic_warmup",
    "lambda_adv", "lambda_cycle", "lambda_identity", "lambda_jst", "jst_tau",
    "lambda_supervised", "lambda_lowfreq", "lowfreq_sigma", "gp_weight", "critic_gain",
    "adversarial", "pool_size",
})
# Data settings with a CLI option (key in a run's ``data`` record -> option), in the order a
# refusal names them.
_DATA_OPTIONS = {"paths": "--data", "dose": "--dose", "method": "--method",
                 "relative_dose": "--relative-dose", "split": "--split"}
# Preset-only data settings that shape the patches (data.cache is only where the pool is kept).
_DATA_PRESET_KEYS = ("slice_size", "patch", "length", "val_length", "min_mean_hu")


def gan_run_data(data: GanDataConfig, seed: int, init: Any = None) -> dict[str, Any]:
    """The data settings a GAN run records in its family config (key ``data``): its sources,
    the degradation, the patch sampling, the seed that draws them and the ``--init`` it started
    from. Checkpoints hold it, so a ``--resume`` is checked against it (:func:`gan_run_settings`).

    Example:
        >>> gan_run_data(GanDataConfig(dose=0.1), seed=0)["dose"]
        0.1
    """
    return {
        "paths": [str(p) for p in data.paths] if data.paths else None,
        "data_root": data.data_root, "sets": list(data.sets), "dose": data.dose,
        "method": data.method, "relative_dose": data.relative_dose, "split": data.split,
        **{key: getattr(data, key) for key in _DATA_PRESET_KEYS},
        "seed": seed, "init": None if init is None else str(init),
    }


def gan_run_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that define a GAN run, by option, from its family config (saved in a
    checkpoint or planned): what a ``--resume`` may not change.

    The data (``--data``, or the preset's sets and data root), ``--dose``, ``--method``,
    ``--relative-dose``, ``--split``, ``--scale``, ``--paired-fraction``, ``--seed``,
    ``--init``, the preset's patch sampling, the architecture and every model setting but the
    optimisers, losses and critic schedule (:data:`_RESUMABLE_MODEL_KEYS`). The run length,
    batch size, threads, device and logging live in the trainer's settings and may change. A
    setting the config does not hold (a checkpoint from before runs recorded their ``data``)
    is left out, so it is not compared.

    Example:
        >>> cfg = {"model": "gan-circle", "scale": 1, "data": gan_run_data(GanDataConfig(), 0)}
        >>> s = gan_run_settings(cfg)
        >>> s["--dose"], s["--data"], s["--seed"]
        (0.25, None, 0)
    """
    data = config.get("data")
    training = config.get("training") or {}
    settings: dict[str, Any] = {}
    if "model" in config:
        settings["--model"] = config["model"]
    if data is not None:
        settings.update({opt: data[key] for key, opt in _DATA_OPTIONS.items() if key in data})
    if "scale" in config:
        settings["--scale"] = config["scale"]
    if "paired_fraction" in training:
        settings["--paired-fraction"] = training["paired_fraction"]
    if data is not None:
        settings.update({opt: data[key] for key, opt in (("seed", "--seed"), ("init", "--init"))
                         if key in data})
        keys = _DATA_PRESET_KEYS if data.get("paths") else ("data_root", "sets",
                                                             *_DATA_PRESET_KEYS)
        settings.update({f"data.{key} (preset)": data[key] for key in keys if key in data})
    if "arch" in config:
        settings["arch (preset)"] = config["arch"]
    settings.update({f"model.{key} (preset)": value for key, value in training.items()
                     if key not in _RESUMABLE_MODEL_KEYS
                     and key not in ("scale", "paired_fraction")})
    return settings


def _check_cached_pool(cache: Any, info: dict[str, Any], data: GanDataConfig, scale: int,
                       out: Any, run_config: dict[str, Any] | None) -> None:
    """Refuse a cached pool whose info says it was built with other data settings than this
    run's; the advice depends on the run: a fresh run rebuilds the pool (delete it), a resumed
    run must keep the data it trained on (``run_config``: its checkpoint's family config).

    Raises:
        LowdoseError: the first setting that differs, with both values.
    """
    from lowdose.training.trainer import refuse_changed_settings, shown_setting

    paths = [str(p) for p in data.paths] if data.paths else None
    checks = [("--scale", info.get("scale"), scale), ("--dose", info.get("dose"), data.dose),
              ("--relative-dose", bool(info.get("relative_dose", False)), data.relative_dose),
              ("--split", info.get("split", "group"), data.split)]
    if "method" in info:
        checks.append(("--method", info["method"], data.method))
    if "size" in info:
        checks.append(("data.slice_size (preset)", info["size"], data.slice_size))
    if "paths" in info:  # pools from before it was recorded cannot tell their sources
        checks.append(("--data", info["paths"], paths))
        if paths is None and info["paths"] is None and "sets" in info:
            checks.append(("data.sets (preset)", info["sets"], list(data.sets)))
    for option, built, wanted in checks:
        if built == wanted:
            continue
        if run_config is None:
            raise LowdoseError(
                f"{cache}: cached pool was built with {option} {shown_setting(built)}, not "
                f"{shown_setting(wanted)}; delete it (a pool is reused only for the same data, "
                "scale, dose, dose reference, method and split)")
        if "data" not in run_config:
            # A checkpoint from before runs recorded their data: the pool the run trained on
            # is what says which value the run was trained with.
            refuse_changed_settings(out, {option: built}, {option: wanted})
        raise LowdoseError(
            f"{cache}: cached pool was built with {option} {shown_setting(built)}, but the run "
            f"was trained with {shown_setting(wanted)}: it is not the run's pool; point "
            "data.cache at the run's pool, or start a new --out")


def _shipped_generator_path(family: Any, init: Any) -> Any:
    """The weight file a shipped name stands for (``gan-circle-semi``; an upscaler at the
    family's scale), or ``None`` when ``init`` names none."""
    from lowdose.models.base import denoisers
    from lowdose.models.gan_circle import SHIPPED_UPSCALERS, shipped_upscaler_path
    from lowdose.models.loading import shipped_path

    name, scale = str(init), int(family.arch.get("scale", 1))
    if scale > 1:
        return shipped_upscaler_path(name, scale) if name in SHIPPED_UPSCALERS else None
    if name in denoisers and getattr(denoisers.get(name), "shipped", None):
        return shipped_path(denoisers.get(name))
    return None


def load_gan_init(family: Any, init: Any) -> None:
    """Start a GAN run from earlier weights (fine-tuning, ``--init``).

    ``init`` is either a GAN run (its folder, its ``best`` folder, a checkpoint folder or their
    ``model.safetensors``), which holds both generators, both critics and the EMA, and every
    module starts from it; or a generator alone: shipped weights by name (``gan-circle-semi``,
    or an upscaler such as ``gan-circle`` at scale 2) or a file that
    :func:`export_generator` wrote. Then only ``G`` (and its EMA) starts from it; ``F`` and the
    critics start fresh, so a preset with ``critic_warmup`` steps lets the critics catch up
    before ``G`` moves. The optimisers, the learning-rate schedule and the step start afresh.

    Raises:
        LowdoseError: another family, scale or architecture, or a module missing or mismatched.

    Example:
        >>> fam = build_family("gan-circle", {"f0": 16, "critic_base": 8})
        >>> load_gan_init(fam, "runs/gan-circle/best")  # doctest: +SKIP
    """
    from pathlib import Path

    from lowdose.models.loading import read_weights
    from lowdose.training.trainer import load_module_weights

    path = Path(init)
    if not path.exists():
        path = _shipped_generator_path(family, init)
        if path is None or not path.is_file():
            raise LowdoseError(f"--init {init}: no such run folder, weight file or shipped "
                               f"{family.family_name} weights at scale "
                               f"{family.arch.get('scale', 1)}")
    state, config = read_weights(path)
    if config.get("family") != family.family_name:
        raise LowdoseError(f"--init {init}: holds {config.get('family') or config.get('model')!r}"
                           f" weights, not {family.family_name!r}")
    wanted = json.loads(json.dumps(family.arch))
    if config.get("arch") != wanted:
        raise LowdoseError(f"--init {init}: its architecture {config.get('arch')} differs from "
                           f"the preset's {wanted} (scale included)")
    if "module_prefix" in config:  # a run: every network
        load_module_weights(family.modules, state, f"--init {init}")
        family.init_source = str(init)
        return
    modules = family.modules
    load_module_weights({"g_lh": modules["g_lh"]}, {f"g_lh.{k}": v for k, v in state.items()},
                        f"--init {init}")
    if "g_lh_ema" in modules:  # the average starts where G starts
        modules["g_lh_ema"].module.load_state_dict(modules["g_lh"].state_dict())
    family.init_source = f"{init} (generator only)"


def default_data_root() -> str:
    """Where a GAN preset's training ``sets`` are found when it names no ``data_root``: the
    ``LOWDOSE_SHARED_DATA`` environment variable, else ``shared/data`` beside the project's
    checkout (as the benchmarks look for it).

    Example:
        >>> default_data_root().endswith("data")
        True
    """
    import os
    from pathlib import Path

    return os.environ.get("LOWDOSE_SHARED_DATA") or str(
        Path(__file__).resolve().parents[3].parent / "shared" / "data")


def train_gan(
    preset: str,
    out: Any,
    resume: bool = False,
    overrides: dict[str, dict[str, Any]] | None = None,
    init: Any = None,
    threads: int | None = None,
    say: Any = None,
) -> Any:
    """Train a GAN preset through the one trainer; returns its :class:`TrainResult`.

    Builds (or reuses the cached) slice pool from the real full-dose sets, the unpaired patch
    stream (with ``model.paired_fraction`` aligned pairs for the semi-supervised mode) and a
    small aligned validation set, then runs :class:`lowdose.training.trainer.Trainer`.
    ``init`` starts the modules from another run's weights (:func:`load_gan_init`). CPU
    ``threads``: as the supervised models take them
    (:func:`lowdose.training.denoising.thread_count`: given, else ``OMP_NUM_THREADS``, else the
    preset's), recorded in the run's ``config.json``. ``say`` is called with one line on the
    slices of each half and the validation (:func:`pool_split_line`) before training.

    Example:
        >>> train_gan("gan-circle-cpu", "runs/gan-circle", resume=True)  # doctest: +SKIP
    """
    from dataclasses import replace
    from pathlib import Path

    from lowdose.errors import LowdoseError
    from lowdose.physics.projection import TEXTURE_TOLERANCE
    from lowdose.training.denoising import thread_count
    from lowdose.training.trainer import (
        Trainer,
        TrainerConfig,
        finished_result,
        refuse_changed_resume,
    )

    cfg = load_preset(preset, overrides)
    model = dict(cfg["model"])
    data = GanDataConfig(**cfg["data"])
    trainer_cfg = TrainerConfig.from_dict(cfg["trainer"])
    trainer_cfg = replace(trainer_cfg,
                          num_threads=thread_count(threads, trainer_cfg.num_threads)[0])
    family = build_family(cfg["family"], model)
    family.run_data = gan_run_data(data, trainer_cfg.seed, init)
    out = Path(out)
    # Before --init's weights and the pool: a resume with other data or another model is
    # refused with the run's values, not after minutes of simulation (or silently, on the
    # pool the run cached before).
    run_config = (refuse_changed_resume(out, gan_run_settings, family.config(), trainer_cfg.seed)
                  if resume else None)
    # A finished run: said now, not after loading (or simulating) its pool for nothing.
    if resume and (done := finished_result(out, trainer_cfg.max_steps)) is not None:
        return done
    if init is not None:
        load_gan_init(family, init)
    scale = int(model.get("scale", 1))
    out.mkdir(parents=True, exist_ok=True)
    pool_name = f"pool-x{scale}.safetensors"
    cache = Path(data.cache) if data.cache else out / pool_name
    if data.cache and not data.cache.endswith(".safetensors"):  # a folder (--cache): pools
        cache = cache / pool_name  # of several scales may share it
    if cache.is_file():
        pool = SlicePool.load(cache)
        _check_cached_pool(cache, pool.info, data, scale, out, run_config)
        if data.relative_dose and pool.info.get("texture_tolerance") != TEXTURE_TOLERANCE:
            raise LowdoseError(f"{cache}: cached pool was simulated at the relative dose before "
                               "its noise texture was matched to each scan's; delete it")
        if pool.info.get("calibration") != _calibration_identity(data.method):
            raise LowdoseError(f"{cache}: cached pool was simulated with another calibration of "
                               "the physics; delete it")
    else:
        root = data.data_root or default_data_root()
        if not data.paths:
            sets = ", ".join(data.sets)
            if not all((Path(root) / name).is_dir() for name in data.sets):
                raise LowdoseError(
                    f"{root}: the preset's training sets ({sets}) are not there; give --data "
                    "(full-dose CT files or folders), or data.data_root in a preset of yours")
            if say is not None:  # no --data: say whose data trains, it is not the user's
                say(f"no --data: training on the preset's sets ({sets}) under {root}")
        pool = build_slice_pool(root, tuple(data.sets), data.dose, scale, data.method,
                                data.slice_size, trainer_cfg.seed, paths=data.paths,
                                relative_dose=data.relative_dose, split=data.split)
        cache.parent.mkdir(parents=True, exist_ok=True)
        pool.save(cache)
    paired = float(model.get("paired_fraction", 0.0)) if not model.get("l1_only") else 1.0
    train = UnpairedPatches(pool, data.patch, data.length, paired, trainer_cfg.seed,
                            data.min_mean_hu)
    val = UnpairedPatches(pool, data.patch, data.val_length, 1.0, trainer_cfg.seed + 7919,
                          data.min_mean_hu)
    if say is not None:
        say(pool_split_line(pool, paired))
    return Trainer(family, train, trainer_cfg, out, val_dataset=val, resume=resume).fit()


def export_generator(run_dir: Any, dest: Any, card: str = "", model: str | None = None) -> Any:
    """Write a finished run's low->high generator as shipped weights: safetensors + JSON + card.

    Keeps only ``G`` (its EMA copy when the run kept one), stores the denoiser config (model,
    scale, architecture, HU range) with the training settings and final metrics in its
    metadata (with the pixel sizes of G's inputs, ``train_pixel_mm``: the training slices',
    times the scale of a super-resolution run, when its pool is in ``run_dir`` or, for its
    ``best`` folder, the folder above), and writes ``card``
    as ``<dest>.md``. ``model`` renames the registered model the weights load as (e.g.
    ``gan-circle-semi``). Returns the safetensors path.

    Example:
        >>> export_generator("runs/gan-circle-x1", "weights/gan-circle")  # doctest: +SKIP
    """
    from pathlib import Path

    from lowdose.errors import LowdoseError
    from lowdose.io.atomic import atomic_write_text
    from lowdose.models.loading import read_weights, save_weights

    run_dir, dest = Path(run_dir), Path(dest)
    state, config = read_weights(run_dir)
    prefix = config.get("module_prefix", "")
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not state:
        raise LowdoseError(f"{run_dir}: no {prefix!r} weights in the run")
    summary_path = run_dir / "config.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    shipped = {k: v for k, v in config.items()
               if k not in ("module_prefix", "training", "init", "data")}
    if model:
        shipped["model"] = model
    shipped["metadata"] = {
        "training": config.get("training", {}),
        "trainer": summary.get("trainer", {}),
        "final_metrics": summary.get("metrics", {}),
        "card": dest.with_suffix(".md").name,
        **({"init": config["init"]} if config.get("init") else {}),
        **({"data": config["data"]} if config.get("data") else {}),
    }
    # The pixel sizes of the inputs G saw: the full-dose slices' (pools cached elsewhere, or
    # older ones, do not say), times the scale for super-resolution, whose degradation bins
    # them. The trainer's ``best`` folder sits inside the run folder that holds the pool.
    scale = int(shipped.get("scale", 1))
    pools = [d / f"pool-x{scale}.safetensors" for d in (run_dir, run_dir.parent)]
    pool = next((p for p in pools if p.is_file()), None)
    if pool is not None:
        pixel_mm = SlicePool.read_info(pool).get("pixel_mm")
        if pixel_mm:
            shipped["metadata"]["train_pixel_mm"] = [float(v) * scale for v in pixel_mm]
    path = save_weights(state, shipped, dest.with_suffix(".safetensors"))
    if card:
        atomic_write_text(dest.with_suffix(".md"), card)
    return path


def gan_preset_name(
    model: str, preset: str | None, paired_fraction: float | None = None, scale: int | None = None
) -> str:
    """The preset ``--preset`` names: ``gpu`` -> the faithful ``<model>``; ``cpu`` (or None) ->
    the recipe of the model's shipped CPU weights for the mode (GAN-CIRCLE:
    ``gan-circle-unpaired-cpu``, or with a paired fraction > 0 ``gan-circle-semi-cpu-s1``, the
    one-stage semi-supervised recipe (the shipped semi weights are four stages, each a preset:
    ``gan-circle-semi-f128-l1-cpu``, ``gan-circle-semi-f128-cpu``,
    ``gan-circle-semi-f128-l1-ft-cpu`` and ``gan-circle-semi-f128-cpu`` again, each with
    ``--init`` the generator of the one before); at
    scale 2 or 4 the upscalers' ``gan-circle-sr-cpu`` (x2) and ``gan-circle-sr-x4-cpu`` (x4)
    unless the paired fraction is 0, then at scale 2 the first stage of the unpaired x2,
    ``gan-circle-unpaired-x2-cpu``;
    CycleGAN: ``cyclegan-unpaired-cpu``); anything else is a preset name or a YAML file.

    Example:
        >>> gan_preset_name("gan-circle", "cpu"), gan_preset_name("gan-circle", None, 0.5)
        ('gan-circle-unpaired-cpu', 'gan-circle-semi-cpu-s1')
        >>> gan_preset_name("gan-circle", "cpu", scale=2), gan_preset_name("gan-circle", None, 0, 2)
        ('gan-circle-sr-cpu', 'gan-circle-unpaired-x2-cpu')
    """
    if preset == "gpu":
        return model
    if preset not in (None, "cpu"):
        return preset
    if model == "gan-circle":
        if scale is not None and scale > 1 and paired_fraction != 0:
            return "gan-circle-sr-x4-cpu" if scale == 4 else "gan-circle-sr-cpu"
        if scale == 2 and paired_fraction == 0:
            return "gan-circle-unpaired-x2-cpu"
        return "gan-circle-semi-cpu-s1" if paired_fraction else "gan-circle-unpaired-cpu"
    return f"{model}-unpaired-cpu"


def train_gan_cli(
    model: str,
    out: Any,
    data: list[str] | None = None,
    preset: str | None = None,
    resume: bool = False,
    paired_fraction: float | None = None,
    scale: int | None = None,
    dose: float | None = None,
    method: str | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    device: str | None = None,
    relative_dose: bool | None = None,
    split: str | None = None,
    init: str | None = None,
    threads: int | None = None,
    say: Any = None,
    cache: str | None = None,
) -> Any:
    """``lowdose train denoiser --model gan-circle|cyclegan``: the CLI options as overrides
    (``say``: told the run's data and split, :func:`train_gan`; ``cache``: a folder for the
    slice pool).

    ``preset`` is a GAN preset name or YAML (see :func:`gan_preset_name` for ``cpu`` / ``gpu``).
    ``data`` lists full-dose CT paths (default: the real full-dose sets of ``../shared/data``).

    Example:
        >>> train_gan_cli("gan-circle", "runs/gc", paired_fraction=0.5)  # doctest: +SKIP
    """
    name = gan_preset_name(model, preset, paired_fraction, scale)
    model_over: dict[str, Any] = {}
    if paired_fraction is not None:
        model_over["paired_fraction"] = paired_fraction
    if scale is not None:
        model_over["scale"] = scale
    if seed is not None:  # one seed for the whole run: the networks' start as well as the data
        model_over["seed"] = seed
    data_over = {k: v for k, v in {"paths": data or None, "dose": dose, "method": method,
                                   "relative_dose": relative_dose, "split": split,
                                   "cache": cache}.items()
                 if v is not None}
    trainer_over = {k: v for k, v in {"max_steps": steps, "batch_size": batch_size, "seed": seed,
                                      "device": device}.items() if v is not None}
    return train_gan(name, out, resume=resume, init=init, threads=threads, say=say,
                     overrides={"model": model_over, "data": data_over, "trainer": trainer_over})
