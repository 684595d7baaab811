"""How far apart the two unpaired GAN training domains are (a benchmark, not a test).

Unpaired GAN-CIRCLE and CycleGAN learn to denoise only through their critics: a critic must tell
the low-dose patches (full-dose slices of one half of the patients, degraded by the calibrated
physics) from the full-dose patches (the other half). This script measures, on the project's
real full-dose training sets (``lowdose.training.gan.TRAIN_SETS``) and for each training dose:

- the noise in flat soft tissue (high pass: image minus Gaussian blur, sigma 2 px, the convention
  of ``noise_ceiling.py``) of the degraded slices, of their own full-dose originals, and of the
  full-dose half; and ``r`` = inserted / full-dose noise power, the same ratio as on the real
  L506 pairs (``noise_ceiling.json``): a small ``r`` means the full-dose scans are themselves
  noisy next to what the dose reduction adds;
- ``feature AUC``: how well one hand-made statistic, the high-pass standard deviation of a
  64x64 patch, separates random low-domain from random full-dose-domain patches (0.5: not at
  all, 1: perfectly), an easy upper reference for what a critic sees at the start;
- ``critic AUC``: the same separation by the reference PatchGAN critic trained alone (the
  generator held at the identity) with the WGAN-GP loss for ``--critic-steps`` steps of batch 4,
  as in the shipped CPU preset, scored on held-out patches; with the critic's input multiplied
  by 1 (the reference) and by 10 (``critic_gain``).

Writes ``benchmarks/results/gan_domain_gap.{json,md}``; the GAN-CIRCLE model card quotes it.

Example:
    .venv/bin/python benchmarks/gan_domain_gap.py --settings 0.25,0.1,0.25/relative/slice

A setting is a dose, optionally followed by ``/relative`` (the dose relative to each slice's own,
``relative_dose``) and ``/slice`` (slices, not patients, alternate between the halves,
``split="slice"``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from denoise_mayo import parse_data_args, write_results
from noise_ceiling import HIGH_PASS_SIGMA_PX, flat_soft_tissue, high_pass, pair_ceiling

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PATCH = 64


def flat_tissue_noise_hu(full_hu: np.ndarray) -> float | None:
    """High-pass noise std (HU) in the flat soft tissue of one slice (None: too little of it)."""
    mask = flat_soft_tissue(full_hu)
    if mask.sum() < 1000:
        return None
    return float(np.std(high_pass(full_hu)[mask]))


def auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(a positive score > a negative score): the area under the ROC curve."""
    return float((positive[:, None] > negative[None, :]).float().mean())


def patches(dataset, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` unpaired (low, high) patch batches from item ``start`` on."""
    items = [dataset[i] for i in range(start, start + count)]
    return torch.stack([b["low"] for b in items]), torch.stack([b["high"] for b in items])


def critic_auc(pool, gain: float, steps: int, seed: int = 0, lr: float = 1e-4) -> dict[str, float]:
    """Train the reference critic alone on (full-dose: real, low-dose: fake); held-out AUC."""
    from lowdose.models.gan_circle import PatchCritic, hu_to_net
    from lowdose.training.gan import UnpairedPatches, gradient_penalty, wgan_critic_loss

    torch.manual_seed(seed)
    train = UnpairedPatches(pool, PATCH, steps * 4, 0.0, seed)
    test = UnpairedPatches(pool, PATCH, 512, 0.0, seed + 7919)
    critic = PatchCritic()
    opt = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.5, 0.999))
    for step in range(steps):
        low, high = patches(train, 4 * step, 4)
        real, fake = gain * hu_to_net(high), gain * hu_to_net(low)
        loss = wgan_critic_loss(critic(real), critic(fake)) + 10 * gradient_penalty(
            critic, real, fake)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        low, high = patches(test, 0, 512)
        s_high = critic(gain * hu_to_net(high)).mean((1, 2, 3))
        s_low = critic(gain * hu_to_net(low)).mean((1, 2, 3))
    return {"auc": auc(s_high, s_low), "wdist": float(s_high.mean() - s_low.mean())}


def measure(pool, critic_steps: int) -> dict[str, float]:
    """Noise levels, the feature AUC and the critic AUCs of one slice pool."""
    from lowdose.training.gan import UnpairedPatches

    low_rows = []
    for degraded, full in zip(pool.low_degraded.numpy(), pool.low_full.numpy(), strict=True):
        try:
            low_rows.append(pair_ceiling(degraded, full))
        except ValueError:  # a slice with too little flat soft tissue
            continue
    high_noise = [n for n in map(flat_tissue_noise_hu, pool.high_full.numpy()) if n is not None]
    low, high = patches(UnpairedPatches(pool, PATCH, 2000, 0.0, 5), 0, 2000)
    spread_low = torch.from_numpy(high_pass(low.numpy()).std(axis=(-2, -1)).ravel())
    spread_high = torch.from_numpy(high_pass(high.numpy()).std(axis=(-2, -1)).ravel())
    row = {
        "slices_low": len(pool.low_full),
        "slices_high": len(pool.high_full),
        "slices_measured_low": len(low_rows),
        "slices_measured_high": len(high_noise),
        "noise_low_degraded_hu": float(np.median([r["hp_std_low_hu"] for r in low_rows])),
        "noise_low_full_hu": float(np.median([r["hp_std_full_hu"] for r in low_rows])),
        "noise_high_full_hu": float(np.median(high_noise)),
        "ratio": float(np.median([r["ratio"] for r in low_rows])),
        "feature_auc": auc(spread_low, spread_high),
    }
    for gain in (1.0, 10.0):
        t0 = time.time()
        result = critic_auc(pool, gain, critic_steps)
        row[f"critic_auc_gain{gain:g}"] = result["auc"]
        row[f"critic_wdist_gain{gain:g}"] = result["wdist"]
        print(f"  critic gain {gain:g}: AUC {result['auc']:.3f} ({time.time() - t0:.0f} s)",
              flush=True)
    return row


def markdown(result: dict) -> str:
    l506 = result.get("l506")
    lines = [
        "# How far apart the unpaired GAN training domains are",
        "",
        "Measured by `benchmarks/gan_domain_gap.py` on the real full-dose training sets "
        f"({', '.join(result['sets'])}), split by patient into a low half (degraded by the "
        "calibrated projection physics) and a full-dose half (split `group`, as for the first "
        "shipped GAN weights), or by slice (split `slice`: consecutive slices alternate, so both "
        "halves hold every patient). Dose `relative`: a fraction of each slice's own dose. "
        f"Noise: median over slices of the high-pass std (image minus Gaussian blur, sigma "
        f"{result['high_pass_sigma_px']:g} px) in flat soft tissue. r = inserted / full-dose "
        "noise power (median over the low half's slices). Feature AUC: separation of random "
        f"{PATCH}x{PATCH} low and full-dose patches by their high-pass std alone. Critic AUC: the "
        "reference PatchGAN critic trained alone (generator = identity, WGAN-GP, "
        f"{result['critic_steps']} steps of batch 4, lr 1e-4), on 512 held-out patches per "
        "domain; gain = the factor on the critic's input (`critic_gain`). AUC 0.5 = cannot tell "
        "the domains apart.",
        "",
        "| training dose | split | noise low-dose / its full dose / full-dose half (HU) | r "
        "| feature AUC | critic AUC (gain 1) | critic AUC (gain 10) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        dose = f"{row['dose']:g}" + (" relative" if row["relative_dose"] else "")
        lines.append(
            f"| {dose} | {row['split']} | {row['noise_low_degraded_hu']:.1f} / "
            f"{row['noise_low_full_hu']:.1f} / "
            f"{row['noise_high_full_hu']:.1f} | {row['ratio']:.2f} | {row['feature_auc']:.3f} | "
            f"{row['critic_auc_gain1']:.3f} | {row['critic_auc_gain10']:.3f} |"
        )
    if l506:
        lines += ["", f"For comparison, the real L506 quarter/full-dose test pairs: r = "
                  f"{l506['ratio']:.2f} (mean over pairs, `noise_ceiling.md`)."]
    lines += ["", f"Machine: {result['machine']}. Written by benchmarks/gan_domain_gap.py."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import platform

    from lowdose.training.gan import TRAIN_SETS, build_slice_pool

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="0.25",
                        help="comma-separated DOSE[/relative][/slice] settings")
    parser.add_argument("--critic-steps", type=int, default=300,
                        help="training steps of the critic per setting (default: %(default)s)")
    args = parse_data_args(parser, argv, DEFAULT_DATA, RESULTS, needs=TRAIN_SETS)

    rows = []
    for setting in args.settings.split(","):
        dose, *flags = setting.split("/")
        unknown = set(flags) - {"relative", "slice"}
        if unknown:
            parser.error(f"setting {setting!r}: unknown {sorted(unknown)}")
        relative, split = "relative" in flags, "slice" if "slice" in flags else "group"
        t0 = time.time()
        pool = build_slice_pool(args.data, TRAIN_SETS, dose=float(dose), progress=False,
                                relative_dose=relative, split=split)
        print(f"{setting}: pool of {len(pool.low_full)} + {len(pool.high_full)} slices "
              f"({time.time() - t0:.0f} s)", flush=True)
        rows.append({"dose": float(dose), "relative_dose": relative, "split": split,
                     **measure(pool, args.critic_steps)})
    result = {
        "benchmark": "gan_domain_gap",
        "sets": list(TRAIN_SETS),
        "high_pass_sigma_px": HIGH_PASS_SIGMA_PX,
        "critic_steps": args.critic_steps,
        "rows": rows,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}",
    }
    ceiling = RESULTS / "noise_ceiling.json"
    if ceiling.is_file():
        result["l506"] = {"ratio": json.loads(ceiling.read_text())["mean"]["ratio"]}
    write_results(args.out, "gan_domain_gap", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
