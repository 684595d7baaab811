"""``lowdose classify``: per-image class probabilities of CT slices (CSV)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add ``classify`` to ``app``."""

    @app.command("classify")
    def classify(
        input: Path = typer.Argument(..., help="An image (PNG, JPEG, DICOM, NIfTI, npy) or a "
                                     "folder of them (searched recursively)."),
        model: Path = typer.Option(..., "--model", "-m",
                                   help="Trained classifier (.safetensors with its .json)."),
        out: Path | None = typer.Option(
            None, "--out", "-o", help="CSV to write (default: print to stdout)."),
        device: str | None = typer.Option(None, help="cpu, cuda, ... (default: best)."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ) -> None:
        """Write one CSV row per image: path, predicted class, then each class's probability.

        8-bit images are mapped to HU through the window the model was trained with (stored
        in it: the lung window [-1350, 150] HU by default, [-1024, 476] HU for the Kaggle
        study's) and prepared like its training slices (clipped at -1024 HU, body crop,
        squared). Unreadable files get a row
        with an error and no probabilities.

        Example: lowdose classify scans/ --model runs/densenet/classifier.safetensors
        --out probs.csv
        """
        from lowdose.evaluation.classify import classify_paths, write_probabilities_csv

        rows, classes = classify_paths(input, model, device=device, progress=not quiet)
        text = write_probabilities_csv(rows, classes, out)
        if out is None:
            typer.echo(text, nl=False)
        else:
            n_bad = sum(1 for r in rows if r.get("error"))
            typer.echo(f"wrote {out}: {len(rows) - n_bad} image(s) classified"
                       + (f", {n_bad} unreadable" if n_bad else ""), err=True)
