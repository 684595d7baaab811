"""``lowdose study``: the task-based study end to end (train, simulate, restore, judge, report)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add ``study`` to ``app``."""
    from lowdose.cli.data import CLASS_FOLDERS

    @app.command("study")
    def study(
        config: str = typer.Option(
            "demo", "--config", "-c",
            help="YAML study config, or a built-in preset name (demo, kaggle)."),
        data: Path | None = typer.Option(
            None, "--data", help=f"Class-folder dataset (Kaggle layout): {CLASS_FOLDERS}. "
            "Default: phantoms."),
        manifest: Path | None = typer.Option(
            None, "--manifest", help="CSV path,label,split (e.g. de-duplicated by the audit)."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Output folder."),
        doses: str | None = typer.Option(
            None, "--doses", help="Comma-separated dose fractions, e.g. 1,0.5,0.25,0.1."),
        methods: str | None = typer.Option(
            None, "--methods", help="Comma-separated simulators (default: all registered)."),
        denoisers: str | None = typer.Option(
            None, "--denoisers", help="Comma-separated denoisers (default: all that load)."),
        classifier: Path | None = typer.Option(
            None, "--classifier", help="A trained classifier (.safetensors) instead of training."),
        preset: str | None = typer.Option(
            None, "--preset", help="Classifier training preset: demo, cpu, gpu."),
        device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ..."),
        precision: str | None = typer.Option(
            None, "--precision",
            help="Learned denoisers in fp32 (default) or bf16 (GPU, or a CPU with native bf16)."),
        extra_classifiers: str | None = typer.Option(
            None, "--extra-classifiers",
            help="Comma-separated seeds (each trains one more classifier like the first) or "
            "classifier files; each judges every cell on the same images, and the results pool "
            "the change over all classifiers."),
        resume: bool = typer.Option(
            True, "--resume/--fresh", help="Continue from the cache (default) or start over."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    ) -> None:
        """Run the study and write OUT/results.json and OUT/report.html.

        Example: lowdose study --out demo-output  (built-in phantoms, <= 10 min on 2 CPU cores)

        Example: lowdose study -c kaggle --data ../shared/data/chest-ctscan-images
        --manifest dedup.csv --out kaggle-study --denoisers tv,bm3d --extra-classifiers 1,2
        """
        from lowdose.evaluation.study import StudyConfig, run_study

        cfg = StudyConfig.from_yaml(config)
        if data is not None:
            cfg.data = str(data)
        if manifest is not None:
            cfg.manifest = str(manifest)
        if out is not None:
            cfg.out = str(out)
        if doses:
            cfg.doses = [float(d) for d in doses.split(",") if d.strip()]
            cfg.__post_init__()
        if methods:
            cfg.methods = [m.strip() for m in methods.split(",") if m.strip()]
        if denoisers:
            cfg.denoisers = [d.strip() for d in denoisers.split(",") if d.strip()]
        if classifier is not None:
            cfg.classifier = str(classifier)
        if preset:
            cfg.preset = preset
        if device:
            cfg.device = device
        if precision:
            cfg.precision = precision
            cfg.__post_init__()
        if extra_classifiers:
            cfg.extra_classifiers = [int(t) if t.strip().isdigit() else t.strip()
                                     for t in extra_classifiers.split(",") if t.strip()]
        cfg.__post_init__()  # every override checked at once (--methods bogus: after training)
        run_study(cfg, resume=resume, progress=not quiet, log=typer.echo)
