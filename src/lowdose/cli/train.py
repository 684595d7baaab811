"""``lowdose train denoiser|classifier``: the group; each command lives in its own module."""

from __future__ import annotations

import typer

from lowdose.cli import train_classifier, train_denoiser


def register(app: typer.Typer) -> None:
    """Add the ``train`` group to ``app``."""
    train_app = typer.Typer(help="Train a denoiser or a classifier.", no_args_is_help=True)
    train_denoiser.register(train_app)
    train_classifier.register(train_app)
    app.add_typer(train_app, name="train")
