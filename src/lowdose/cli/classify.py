"""``lowdose classify``: per-image class probabilities of CT slices (CSV)."""

from __future__ import annotations

from pathlib import Path

import typer


def check_csv_out(out: Path) -> None:
    """Refuse ``--out`` unless it can take the CSV: a ``.csv`` file path, not a folder; its
    folder is made if missing (as the other commands' outputs are).

    Raises:
        LowdoseError: one line naming ``out`` and what to give instead.

    Example:
        >>> check_csv_out(Path("/tmp") / "probs.txt")
        Traceback (most recent call last):
        ...
        lowdose.errors.LowdoseError: --out /tmp/probs.txt: must be a .csv file path (e.g. probs.csv)
    """
    from lowdose.errors import LowdoseError

    if out.is_dir():
        raise LowdoseError(f"--out {out}: is a folder; --out must be a .csv file path "
                           f"(e.g. {out / 'probs.csv'})")
    if out.suffix.lower() != ".csv":
        raise LowdoseError(f"--out {out}: must be a .csv file path (e.g. probs.csv)")
    blocker = next((p for p in out.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise LowdoseError(f"--out {out}: {blocker} is a file, not a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # no permission, a read-only file system, ...
        raise LowdoseError(f"--out {out}: cannot make its folder {out.parent}: "
                           f"{exc.strerror or exc}") from None


def register(app: typer.Typer) -> None:
    """Add ``classify`` to ``app``."""

    @app.command("classify")
    def classify(
        input: Path = typer.Argument(..., help="An image (PNG, JPEG, DICOM, NIfTI, npy) or a "
                                     "folder of them (searched recursively); a volume gives "
                                     "one row per slice, named FILE[k] (k from 0)."),
        model: Path = typer.Option(
            ..., "--model", "-m", help="Trained classifier: its .safetensors (with the .json "
            "beside it), its training run folder, or a checkpoint folder of that run "
            "(checkpoints/step-N)."),
        out: Path | None = typer.Option(
            None, "--out", "-o",
            help="CSV file to write, e.g. probs.csv (default: print to stdout)."),
        device: str | None = typer.Option(None, help="cpu, cuda, ... (default: best)."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ) -> None:
        """Write one CSV row per slice: path, predicted class, then each class's probability.

        8-bit images are mapped to HU through the window the model was trained with (stored
        in it: the lung window [-1350, 150] HU by default, [-1024, 476] HU for the Kaggle
        study's) and prepared like its training slices (clipped at -1024 HU, body crop,
        squared). A volume (NIfTI, 3D npy) gives one row per slice, named FILE[k].
        Unreadable files get a row with an error and no probabilities.

        Example: lowdose classify scans/ --model runs/densenet/classifier.safetensors
        --out probs.csv
        """
        from lowdose.evaluation.classify import classify_paths, write_probabilities_csv

        if out is not None:
            check_csv_out(out)  # before the work, not after classifying every image
        rows, classes = classify_paths(input, model, device=device, progress=not quiet)
        text = write_probabilities_csv(rows, classes, out)
        if out is None:
            typer.echo(text, nl=False)
        else:
            n_bad = sum(1 for r in rows if r.get("error"))
            typer.echo(f"wrote {out}: {len(rows) - n_bad} slice(s) classified"
                       + (f", {n_bad} unreadable" if n_bad else ""), err=True)
