"""``lowdose train classifier``: DenseNet-121 / ResNet-18 on a class-folder dataset of CT slices."""

from __future__ import annotations

from pathlib import Path

import typer

from lowdose.cli.run_options import resumable
from lowdose.errors import LowdoseError


def register(app: typer.Typer) -> None:
    """Add ``classifier`` to the ``train`` group."""
    from lowdose.cli.data import CLASS_FOLDERS

    @app.command("classifier")
    @resumable("train classifier", updatable=("epochs", "patience"))
    def classifier(
        ctx: typer.Context,
        data: Path | None = typer.Argument(
            None, help=f"Class-folder dataset: {CLASS_FOLDERS}. With --resume: the run's "
            "when left out."),
        manifest: Path | None = typer.Option(
            None, "--manifest", help="CSV path,label,split (e.g. de-duplicated by the audit)."),
        model: str = typer.Option("densenet121", "--model", "-m",
                                  help="Registered classifier: densenet121, resnet18."),
        preset: str = typer.Option("cpu", "--preset", help="cpu (128 px), gpu (256 px), demo."),
        out: Path = typer.Option(Path("runs/classifier"), "--out", "-o", help="Output folder."),
        resume: bool = typer.Option(
            False, "--resume", help="Continue from --out's checkpoint, with the run's own "
            "options (OUT/command.json) for those left out; a finished run trains on to a "
            "larger --epochs (one that stopped early, with a larger --patience)."),
        weights: Path | None = typer.Option(
            None, "--weights", help="Local pretrained weights to start from (.safetensors)."),
        trust_pickle: bool = typer.Option(
            False, "--trust-pickle", help="Allow --weights to be a pickle (.pt/.pth)."),
        epochs: int | None = typer.Option(None, help="Override the preset's epochs."),
        patience: int | None = typer.Option(
            None, "--patience", help="Stop after this many epochs without a better validation "
            "score (default: the preset's); with --resume, a larger one continues a run that "
            "stopped early."),
        input_size: int | None = typer.Option(None, help="Override the network input size."),
        seed: int | None = typer.Option(None, help="Override the seed."),
        ema_decay: float | None = typer.Option(
            None, "--ema-decay", help="Validate and keep an average of the weights (e.g. 0.99; "
            "0 = the raw weights). Default: the preset's."),
        intensity: str | None = typer.Option(
            None, help="Per-image intensity normalisation: window, percentile, equalize."),
        window: str | None = typer.Option(
            None, "--window", help="HU window 'lo,hi' (or a name) that 8-bit images are mapped "
            "through and the network sees (default: lung, -1350,150; the Kaggle study chose "
            "-1024,476)."),
        device: str | None = typer.Option(None, help="cpu, cuda, ... (default: best)."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    ) -> None:
        """Train a slice classifier on full-dose images; the best validation epoch is kept.

        PNG/JPEG inputs are mapped to HU through --window (default: the lung window [-1350,
        150] HU), clipped at -1024 HU; the network sees the same window. Writes
        OUT/classifier.safetensors (+ .json spec and card) and OUT/train_summary.json.

        Example: lowdose train classifier ../shared/data/chest-ctscan-images
        --manifest dedup.csv --model densenet121 --preset cpu --out runs/densenet
        """
        from lowdose.cli.options import parse_window
        from lowdose.evaluation.study import StudyConfig, load_study_data
        from lowdose.training.classifier import (
            finished_classifier_run,
            refuse_changed_classifier_resume,
            train_classifier,
        )
        from lowdose.training.classifier import preset as make_preset

        if data is None:
            raise LowdoseError("DATA: give the class-folder dataset (a --resume of a run "
                               "started by this lowdose takes the run's)")
        if device:  # one clear line now, not a torch assertion after reading every image
            from lowdose.device import check_device

            check_device(device)
        win = parse_window(window)
        cfg = make_preset(preset, arch=model, epochs=epochs, input_size=input_size, seed=seed,
                          intensity=intensity, window=(win.lo, win.hi) if win else None,
                          ema_decay=ema_decay, patience=patience)
        cfg.spec()  # an unknown --intensity: one clear error before reading any image
        source = {"data": str(data), "manifest": str(manifest) if manifest else None,
                  **({"weights": str(weights)} if weights else {})}
        if resume:  # changed settings: refused before reading any image
            refuse_changed_classifier_resume(out, cfg, source)
            # A finished run that would train no further (same --epochs): say so and stop
            # here, without reading every image for nothing.
            finished = finished_classifier_run(out, cfg)
            if finished is not None:
                typer.echo(finished)
                return
        study = StudyConfig(data=str(data), manifest=str(manifest) if manifest else None,
                            out=str(out), slice_size=cfg.slice_size, crop_body=cfg.crop_body,
                            seed=cfg.seed, png_window=cfg.window)
        loaded = load_study_data(study, out / "data-cache", progress=not quiet)
        for w in loaded.warnings:
            typer.echo(f"warning: {w}", err=True)
        if loaded.failures:
            first = loaded.failures[0]
            # Readers' errors usually start with the path already: show it once.
            note = (first["reason"] if first["path"] in first["reason"]
                    else f"{first['path']}: {first['reason']}")
            typer.echo(f"warning: {len(loaded.failures)} image(s) could not be read, skipped "
                       f"(first: {note})", err=True)
        _, summary = train_classifier(
            loaded.hu["train"], loaded.labels["train"], loaded.hu["valid"], loaded.labels["valid"],
            cfg, out, resume=resume, device=device, progress=not quiet,
            init_weights=str(weights) if weights else None, trust_pickle=trust_pickle,
            source=source)
        typer.echo(f"{model}: best epoch {summary['best_epoch']} (valid balanced accuracy "
                   f"{summary['best_score']:.3f}); weights {summary['weights']}")
