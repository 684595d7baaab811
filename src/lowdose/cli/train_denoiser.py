"""``lowdose train denoiser``: supervised training of a learned denoiser (simulated/real pairs)."""

from __future__ import annotations

from pathlib import Path

import typer

from lowdose.cli.options import npy_scale_option, parse_doses
from lowdose.cli.run_options import resumable
from lowdose.errors import LowdoseError


def register(app: typer.Typer) -> None:
    """Add ``denoiser`` to the ``train`` group."""

    @app.command("denoiser")
    @resumable("train denoiser", updatable=("steps", "batch_size", "threads", "cache"))
    def denoiser(
        ctx: typer.Context,
        model: str = typer.Option("unet", "--model", "-m", help="Learned denoiser to train."),
        data: list[str] | None = typer.Option(
            None, "--data", help="Full-dose CT: file, folder or glob (repeatable)."),
        pairs: Path | None = typer.Option(
            None, "--pairs", help="Real pairs instead: low/ + full/ folders, or *_input.npy "
            "+ *_target.npy."),
        dose: str | None = typer.Option(
            None, help="Simulated dose fraction (e.g. 0.25), or several comma-separated "
            "(0.15,0.25,0.4: one model for the whole range)."),
        method: str | None = typer.Option(
            None, help="Low-dose simulator: projection (calibrated) or image-poisson."),
        relative_dose: bool | None = typer.Option(
            None, "--relative-dose/--calibrated-dose",
            help="projection: --dose is a fraction of each slice's own dose, read from its "
            "noise (3x its noise power inserted at 0.25), not of the calibration's full dose."),
        preset: str = typer.Option("cpu", help="Preset name (cpu, gpu) or a YAML file. "
                                    "gan-circle: cpu is the recipe of the shipped weights of the "
                                    "mode (unpaired, or with --scale 2|4 the upscalers'; "
                                    "--scale 2 --paired-fraction 0: the unpaired x2's first "
                                    "stage); with --paired-fraction the one-stage semi recipe "
                                    "(the shipped semi weights: presets gan-circle-semi-f128-"
                                    "l1-cpu, gan-circle-semi-f128-cpu, gan-circle-semi-f128-l1-"
                                    "ft-cpu and gan-circle-semi-f128-cpu again, each with --init "
                                    "the generator of the one before)."),
        out: Path = typer.Option(Path("runs/denoiser"), "--out", help="Output folder."),
        resume: bool = typer.Option(
            False, "--resume", help="Continue from --out's checkpoint, with the run's own "
            "options (OUT/command.json) for those left out; --steps N trains on to N."),
        steps: int | None = typer.Option(None, help="Override the preset's max_steps."),
        batch_size: int | None = typer.Option(None, help="Override the batch size."),
        seed: int | None = typer.Option(None, help="Override the seed."),
        device: str | None = typer.Option(None, help="cpu, cuda, ... (default: best)."),
        cache: Path | None = typer.Option(
            None, help="Folder caching simulated low-dose realisations (default: OUT/cache; "
            "gan-circle/cyclegan: their slice pool, default OUT); runs on the same data may "
            "share it."),
        paired_fraction: float | None = typer.Option(
            None, "--paired-fraction", help="gan-circle/cyclegan: fraction of aligned pairs "
            "(semi-supervised mode; default 0 = unpaired)."),
        scale: int | None = typer.Option(
            None, "--scale", help="gan-circle: 1 (denoising), 2 or 4 (super-resolution)."),
        split: str | None = typer.Option(
            None, "--split", help="gan-circle/cyclegan: how the unpaired halves are drawn: "
            "group (patients apart, the default) or slice (consecutive slices alternate)."),
        init: str | None = typer.Option(
            None, "--init", help="Fine-tune: start from these weights of the same model (a "
            "shipped name such as unet, a .safetensors file or a run folder; gan-circle/"
            "cyclegan: a run folder, its best/ or a checkpoint start every network, shipped "
            "or exported weights such as gan-circle-semi the generator alone)."),
        bin_: int | None = typer.Option(
            None, "--bin", min=1, help="Supervised models: average the full-dose slices over "
            "K x K pixels first, to train at K times their pixel size (for coarse data)."),
        npy_scale: str | None = npy_scale_option(),
        trust_pickle: bool = typer.Option(
            False, "--trust-pickle", help="Allow a pickle checkpoint as --init (it can run "
            "arbitrary code: only from a source you trust)."),
        threads: int | None = typer.Option(
            None, "--threads", help="CPU threads (default: OMP_NUM_THREADS when set, "
            "else the preset's trainer.num_threads); recorded in OUT/config.json."),
        list_presets: bool = typer.Option(
            False, "--list-presets", help="List the shipped presets (name, model, base, "
            "steps, summary) and exit."),
    ) -> None:
        """Train a denoiser (one command on CPU, one GPU, or `torchrun --nproc-per-node N`).

        Example: lowdose train denoiser --model unet --data ct/ --dose 0.25 --out runs/u
        """
        if list_presets:
            from lowdose.cli.options import plain_text
            from lowdose.training.presets import shipped_training_presets

            entries = shipped_training_presets()
            width = max(len(entry.name) for entry in entries)
            # A header over the columns: "base cpu-long" and "700 steps" read alone do not say
            # which column is the preset and which the preset it builds on.
            typer.echo(f"{'preset':<{width}} {'model':<11} {'base':<{width + 5}} "
                       f"{'max steps':>12}  summary")
            for entry in entries:
                base = f"base {entry.base}" if entry.base else "-"
                typer.echo(f"{entry.name:<{width}} {entry.model:<11} {base:<{width + 5}} "
                           f"{entry.max_steps or 0:>6} steps  {plain_text(entry.summary)}")
            return
        if device:  # one clear line now, not a torch assertion after the data work
            from lowdose.device import check_device

            check_device(device)
        doses = parse_doses(dose, "--dose") if dose is not None else None
        if model in ("gan-circle", "cyclegan"):  # GAN families: lowdose.training.gan
            given = {"--bin": bin_ is not None, "--npy-scale": npy_scale is not None,
                     "--trust-pickle": trust_pickle}
            refused = [option for option, used in given.items() if used]
            if refused:
                raise LowdoseError(f"{refused[0]}: supervised models only, not {model}")
            if scale is not None and scale not in (1, 2, 4):
                raise LowdoseError(f"--scale {scale}: use 1 (denoising), 2 or 4")
            if pairs is not None:  # it was ignored: the preset's sets trained instead
                raise LowdoseError(f"--pairs: supervised models only; {model} trains on "
                                   "full-dose --data and simulates its low dose")
            if doses is not None and len(doses) > 1:
                raise LowdoseError(f"--dose {dose}: {model} trains at one dose")
            from lowdose.training.gan import train_gan_cli

            result = train_gan_cli(model, out, data, preset, resume, paired_fraction, scale,
                                   doses[0] if doses else None, method, steps, batch_size,
                                   seed, device, relative_dose, split, init, threads,
                                   say=typer.echo, cache=str(cache) if cache else None)
            typer.echo(result.finished or f"trained {model} to step {result.step}: "
                       f"{result.out_dir}")
            return
        gan_only = {"--split": split is not None, "--scale": scale is not None,
                    "--paired-fraction": paired_fraction is not None}
        refused = [option for option, used in gan_only.items() if used]
        if refused:  # they were ignored: a x2 asked for, a denoiser trained
            raise LowdoseError(f"{refused[0]}: gan-circle/cyclegan only, not {model}")
        from lowdose.training.denoising import load_preset, train_denoiser

        trainer = {k: v for k, v in {"max_steps": steps, "batch_size": batch_size,
                                     "seed": seed, "device": device}.items() if v is not None}
        data_over = {k: v for k, v in {"dose": doses, "method": method,  # DataConfig normalises
                                       "relative_dose": relative_dose, "bin": bin_,
                                       "cache_dir": str(cache) if cache else None}.items()
                     if v is not None}
        cfg = load_preset(preset, model=model, trainer=trainer or None, data=data_over or None)
        result = train_denoiser(cfg, data, out, pairs=pairs, resume=resume, init=init,
                                trust_pickle=trust_pickle, npy_scale=npy_scale,
                                threads=threads, say=typer.echo)
        typer.echo(result.finished or f"trained {cfg.model} to step {result.step}: "
                   f"{result.out_dir}")
