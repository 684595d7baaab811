"""A training run's own options, recorded in its folder so that ``--resume`` alone goes on.

A training command records the options it started a run with in ``OUT/command.json``. A
``--resume`` of that run takes every option it leaves out from there, not from the command's
defaults: ``lowdose train denoiser --out runs/u --resume`` continues the run as it was started
(its model, preset, data, dose and length), and an option typed on the resume overrides the
record (a changed data or model setting is then refused by the trainer's resume check, as
before). The options that only lengthen a run or say where it runs (``--steps``, ``--epochs``,
``--threads``, ...) are updated in the record by a resume, so the next one goes on to them too.
"""

from __future__ import annotations

import functools
import json
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

COMMAND_FILE = "command.json"

# Never recorded: where and how this invocation runs, and a trust decision that is typed
# each time (a pickle can run code).
NOT_RECORDED = frozenset({"ctx", "out", "resume", "device", "quiet", "trust_pickle",
                          "list_presets"})


def recorded_options(out: str | Path, command: str) -> dict[str, Any] | None:
    """The options ``command`` recorded in ``out``'s ``command.json``, or ``None`` when it
    holds none for that command (a run started by an older lowdose, or none at all).

    Example:
        >>> recorded_options("no/such/run", "train denoiser") is None
        True
    """
    try:
        record = json.loads((Path(out) / COMMAND_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(record, dict) and record.get("command") == command
            and isinstance(record.get("options"), dict)):
        return None
    return record["options"]


def _recorded_cwd(out: Path) -> str | None:
    """The folder the run in ``out`` was started in, where its record says."""
    try:
        return json.loads((out / COMMAND_FILE).read_text()).get("cwd")
    except (OSError, ValueError, AttributeError):
        return None


def write_options(out: str | Path, command: str, options: dict[str, Any],
                  cwd: str | None = None) -> None:
    """Record ``options`` (name -> value, JSON-able) as ``command``'s in ``out``, with the
    folder it runs in (``cwd``, default the current one), against which relative paths read."""
    import os

    from lowdose.io.atomic import atomic_write_text

    Path(out).mkdir(parents=True, exist_ok=True)
    record = {"command": command, "cwd": cwd or os.getcwd(), "options": options}
    text = json.dumps(record, indent=2, default=str)
    atomic_write_text(Path(out) / COMMAND_FILE, text + "\n")


def _shown(name: str, value: Any) -> str:
    """An option as it would be typed (``--bin_`` is ``--bin``; a list repeats or joins)."""
    flag = "--" + name.rstrip("_").replace("_", "-")
    if isinstance(value, bool):
        return flag if value else f"{flag} off"
    if isinstance(value, list):
        return " ".join(f"{flag} {v}" for v in value)
    return f"{flag} {value}"


def resume_options(command: str, values: dict[str, Any], typed: Iterable[str],
                   updatable: Iterable[str], say: Callable[[str], None] | None = None
                   ) -> dict[str, Any]:
    """The option values a training ``command`` runs with, after recording them.

    ``values`` maps each option's parameter name to its value in this invocation (``out`` and
    ``resume`` among them); ``typed`` names the options given on the command line. With
    ``--resume`` and a checkpoint in ``out`` to go on from, an option not typed takes the
    value ``command.json`` recorded (``say`` is told which, where it differs from the
    default), and the ``updatable`` options typed (run length, threads) update the record. A
    fresh run (no checkpoint) records all its options.

    Raises:
        LowdoseError: ``out`` holds checkpoints and ``resume`` is off (said before any data
            work; the trainer would refuse it after).

    Example:
        >>> import tempfile
        >>> run = Path(tempfile.mkdtemp()) / "run"
        >>> resume_options("train denoiser", {"out": run, "resume": False, "dose": 0.25},
        ...                [], [])  # doctest: +ELLIPSIS
        {'out': PosixPath('...'), 'resume': False, 'dose': 0.25}
        >>> recorded_options(run, "train denoiser")
        {'dose': 0.25}
    """
    from lowdose.training.trainer import latest_checkpoint

    out, typed = Path(values["out"]), set(typed)
    recordable = {k: _plain(v) for k, v in values.items() if k not in NOT_RECORDED}
    if latest_checkpoint(out) is None:
        write_options(out, command, recordable)
        return values
    if not values.get("resume"):  # refused before any data work, and the record kept
        from lowdose.errors import LowdoseError

        raise LowdoseError(f"{out}: holds checkpoints already; pass --resume to continue, "
                           "or choose another --out")
    record = recorded_options(out, command)
    started_in = _recorded_cwd(out)
    if record is not None and started_in and Path(started_in) != Path.cwd():
        relative = [p for p in relative_paths(record) if p]
        if relative and not all(k in typed for k in record if k in PATH_OPTIONS
                                and record[k] is not None):
            from lowdose.errors import LowdoseError

            raise LowdoseError(
                f"{out}: the run was started in {started_in}, and its relative paths "
                f"({', '.join(relative[:3])}) are read from the folder a command runs in: "
                f"resume from {started_in}, or give them again")
    if record is None:
        if say is not None:
            say(f"note: {out} holds no {COMMAND_FILE} (a run started by an older lowdose): "
                "options left out on --resume take their defaults, not the run's")
        return values
    taken = {k: v for k, v in record.items() if k in values and k not in typed
             and k not in NOT_RECORDED}
    shown = [("DATA " + str(v) if k == "data" and command == "train classifier" else
              _shown(k, v)) for k, v in taken.items() if v is not None and v != recordable.get(k)]
    if shown and say is not None:
        say(f"resuming with the run's options ({out / COMMAND_FILE}): {' '.join(shown)}")
    merged = {**values, **taken}
    update = {k: recordable[k] for k in updatable if k in typed and k in recordable}
    if update:
        write_options(out, command, {**record, **update}, started_in)
    return merged


def refuse_out_in_data(out: Path, sources: list[Any], option: str = "--out") -> None:
    """Raise when the run folder ``out`` lies inside a data folder among ``sources`` (paths,
    lists of them, or ``None``): the run's checkpoints and cached low-dose draws would be read
    as data by the next run on that folder (a classifier's as a class folder).

    Example:
        >>> refuse_out_in_data(Path("runs/u"), [["ct/"], None])
    """
    from lowdose.errors import LowdoseError

    target = out.resolve()
    for source in sources:
        for spec in source if isinstance(source, list | tuple) else [source]:
            folder = Path(spec) if spec is not None else None
            if folder is not None and folder.is_dir() and (
                    target == folder.resolve() or folder.resolve() in target.parents):
                raise LowdoseError(f"{option} {out}: is inside the data folder {spec}; its "
                                   "checkpoints and cached draws would be read as data by the "
                                   "next run; put it elsewhere")


#: Options that are paths (or globs), or a path or a name (a shipped preset or model).
PATH_OPTIONS = frozenset({"data", "pairs", "cache", "manifest"})
PATH_OR_NAME_OPTIONS = frozenset({"init", "preset", "weights"})


def relative_paths(options: dict[str, Any]) -> list[str]:
    """The relative paths among ``options`` (``--data ct``, a preset file ``my.yaml``): read
    from the folder a command runs in, so a resume must run where the run started.

    Example:
        >>> relative_paths({"data": ["ct", "/abs/ct"], "preset": "cpu", "dose": "0.25"})
        ['ct']
    """
    found = []
    for name, value in options.items():
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str) or Path(item).is_absolute():
                continue
            if name in PATH_OPTIONS or (name in PATH_OR_NAME_OPTIONS and Path(item).exists()):
                found.append(item)
    return found


def _plain(value: Any) -> Any:
    """``value`` as JSON holds it (paths as strings, tuples as lists)."""
    return json.loads(json.dumps(value, default=str))


def resumable(command: str, updatable: Iterable[str] = ()) -> Callable[[Callable[..., Any]],
                                                                       Callable[..., Any]]:
    """Decorate a typer training command so that ``--resume`` takes the run's recorded options
    for those left out (:func:`resume_options`); placed under ``@app.command``. The command
    takes a ``ctx: typer.Context`` (which options were typed) and an ``out`` and ``resume``
    option. A recorded path comes back as the option's type (a ``Path`` option gets a ``Path``).

    Example:
        >>> @resumable("train demo", updatable=("steps",))  # doctest: +SKIP
        ... def demo(ctx: typer.Context, out: Path = Path("runs/d"), resume: bool = False,
        ...          steps: int = 10) -> None: ...
    """
    updatable = tuple(updatable)

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(func)
        paths = [name for name, hint in hints.items()
                 if hint is Path or Path in typing.get_args(hint)]

        @functools.wraps(func)
        def run(**kwargs: Any) -> Any:
            import typer

            from lowdose.errors import LowdoseError

            ctx = kwargs.get("ctx")
            if kwargs.get("list_presets") or ctx is None:
                return func(**kwargs)
            # By the source's name: typer's click is private to it since typer 0.20.
            typed = [name for name in kwargs if name != "ctx" and getattr(
                ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"]
            from lowdose.training.trainer import latest_checkpoint

            out = Path(kwargs["out"])
            record, created = out / COMMAND_FILE, not out.exists()
            before = record.read_text() if record.is_file() else None
            merged = dict(kwargs)
            try:
                merged = resume_options(command, kwargs, typed, updatable,
                                        say=lambda line: typer.echo(line, err=True))
                for name in paths:  # JSON holds a path as a string
                    if merged.get(name) is not None and not isinstance(merged[name], Path):
                        merged[name] = Path(merged[name])
                sources = [merged.get(name) for name in ("data", "pairs")]
                refuse_out_in_data(out, sources)
                if merged.get("cache") is not None:  # its draws, read as data by the next run
                    refuse_out_in_data(Path(merged["cache"]), sources, "--cache")
                return func(**merged)
            except BaseException as exc:
                if latest_checkpoint(out) is None:
                    # A run that never reached a checkpoint (refused, or stopped early) has
                    # nothing to resume: no record of it, nor a folder made only for it.
                    record.unlink(missing_ok=True)
                    if created and out.is_dir() and not any(out.iterdir()):
                        out.rmdir()
                elif isinstance(exc, LowdoseError) and before is not None:
                    # A refused resume (a changed setting) leaves the run's record as it was;
                    # a resume killed while training keeps its longer --steps for the next.
                    from lowdose.io.atomic import atomic_write_text

                    atomic_write_text(record, before)
                raise

        return run

    return decorate
