"""Typer commands: parse, call the Python API, print. Nothing else."""
