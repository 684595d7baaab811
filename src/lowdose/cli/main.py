"""The ``lowdose`` command. Each command group lives in its own module with a ``register(app)``."""

from __future__ import annotations

import contextlib
import importlib
import sys
import warnings
from collections.abc import Iterator
from typing import TextIO

import typer

from lowdose import __version__
from lowdose.errors import LowdoseError

# Command modules, each adding its commands to the app; see each module for the commands.
COMMAND_MODULES = (
    "lowdose.cli.info",
    "lowdose.cli.data",
    "lowdose.cli.simulate",
    "lowdose.cli.train",
    "lowdose.cli.denoise",
    "lowdose.cli.upscale",
    "lowdose.cli.score",
    "lowdose.cli.compare",
    "lowdose.cli.classify",
    "lowdose.cli.study",
)


INTERRUPTED = 130  # the shell's code for a run stopped by Ctrl-C (128 + SIGINT)

#: The environment variable naming the plugin modules the CLI imports before it runs.
PLUGINS_VARIABLE = "LOWDOSE_PLUGINS"


def load_plugins(spec: str | None = None) -> list[str]:
    """Import the plugin modules named in ``spec`` (default: the ``LOWDOSE_PLUGINS``
    environment variable), comma-separated, each a module on the Python path (``PYTHONPATH``;
    the current folder is not searched unless it is on it). Their registrations
    (``denoisers.register(...)``, ...) then reach every command. Nothing is imported that the
    user did not name. Returns the names imported.

    Raises:
        LowdoseError: a name that is not a module name, or a module that fails to import.

    Example:
        >>> load_plugins("json, lowdose.errors")
        ['json', 'lowdose.errors']
        >>> load_plugins("")
        []
    """
    import os

    if spec is None:
        spec = os.environ.get(PLUGINS_VARIABLE, "")
    names = [part.strip() for part in spec.split(",") if part.strip()]
    for name in names:
        if not all(part.isidentifier() for part in name.split(".")):
            raise LowdoseError(f"{PLUGINS_VARIABLE}: {name!r} is not a module name "
                               "(module names are separated by commas: mypkg.plugins,other)")
        try:
            importlib.import_module(name)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise LowdoseError(f"{PLUGINS_VARIABLE}: plugin module {name!r} failed to import: "
                               f"{type(exc).__name__}: {first}") from exc
    return names


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lowdose {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    """Build the typer app with every command group registered."""
    app = typer.Typer(
        name="lowdose",
        help="Low-dose CT: simulate, restore, classify and evaluate by the task.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )

    @app.callback()
    def _root(
        debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version."
        ),
    ) -> None:
        """Low-dose CT: simulate, restore, classify and evaluate by the task."""

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(app)
    _unwrap_help(app)
    return app


def unwrap_paragraphs(text: str) -> str:
    r"""Join the hard-wrapped lines of each paragraph of a docstring into one line.

    typer (0.29) prints a command's help with the docstring's own line breaks, and then wraps
    those lines again at the terminal's width, which leaves ragged half-lines. Lines that start
    a list item (``-``, ``*``) or are indented keep their own line.

    Example:
        >>> unwrap_paragraphs("Score images\nagainst a reference.\n\nExample: lowdose a\nb")
        'Score images against a reference.\n\nExample: lowdose a b'
    """
    import inspect

    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not line.startswith((" ", "-", "*", "\b")):
                lines[-1] = f"{lines[-1].rstrip()} {line.strip()}"
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _unwrap_help(app: typer.Typer) -> None:
    """Set every command's help (``app`` and its groups) to its unwrapped docstring."""
    for command in app.registered_commands:
        text = command.help or (command.callback.__doc__ if command.callback else None)
        if text:
            command.help = unwrap_paragraphs(text)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            _unwrap_help(group.typer_instance)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    # Through tqdm: a warning raised while a progress bar is drawn gets a line of its own, not
    # the end of the bar's line (where the next redraw hid it).
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one ``error:`` line on stderr and exit code 2.

    The plugin modules named in ``LOWDOSE_PLUGINS`` are imported first (:func:`load_plugins`).

    Run from the shell (``argv`` None) without ``--debug``, warnings print as one
    ``warning: ...`` line each, without the Python source line that raised them.
    """
    from_shell = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:  # the app's option, taken anywhere: after a command it was an unknown option
        argv = ["--debug", *(a for a in argv if a != "--debug")]
    with warnings.catch_warnings(), _terminate_as_interrupt(from_shell):
        if from_shell and not debug:
            warnings.showwarning = _show_warning
        code = _run(argv, debug)
    if code == INTERRUPTED and _TERMINATED:
        return TERMINATED
    return code


#: The shell's code for a run stopped by SIGTERM (128 + 15): a scheduler's or `docker stop`'s.
TERMINATED = 143
_TERMINATED: list[bool] = []


@contextlib.contextmanager
def _terminate_as_interrupt(install: bool) -> Iterator[None]:
    """While a run from the shell lasts, SIGTERM stops it as Ctrl-C does: the partial outputs
    are removed on the way out (Python's default dies at once, leaving them), with one
    ``error:`` line and exit code 143."""
    import signal
    import threading

    if not install or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        _TERMINATED.append(True)
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _run(argv: list[str], debug: bool) -> int:
    try:
        try:
            load_plugins()
        except LowdoseError as exc:
            if argv and not {"--help", "-h", "--version"} & set(argv):
                raise
            # help and the version stay reachable with a stale plugin setting
            print(f"warning: {exc}", file=sys.stderr)
        # Not standalone, typer returns the code of a typer.Exit instead of raising it, and
        # turns Ctrl-C into Exit(130): a command returns None, so an int is an exit code.
        code = build_app()(args=argv, prog_name="lowdose", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        code = INTERRUPTED
    except Exception as exc:
        if debug:
            raise
        return _error_code(exc)
    if code == INTERRUPTED:
        print("error: terminated (SIGTERM)" if _TERMINATED else "error: interrupted",
              file=sys.stderr)
    return code if isinstance(code, int) else 0


def _error_code(exc: Exception) -> int:
    """Print a failed command's error as one ``error:`` line; its exit code."""
    try:
        from click import ClickException
    except ImportError:  # typer >= 0.26 vendors click instead of depending on it
        from typer._click import ClickException

    if isinstance(exc, ClickException):
        exc.show()
        return exc.exit_code
    if isinstance(exc, LowdoseError):
        message = str(exc)
    elif _out_of_memory(exc):
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        on_gpu = "cuda" in detail.lower()
        message = (f"out of {'GPU ' if on_gpu else ''}memory ({detail}); lower --batch-size "
                   "(slices at once) where the command has it"
                   + (", or run on the CPU with --device cpu" if on_gpu else ""))
    elif isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        message = f"{exc.filename}: {exc.strerror}"
    else:
        message = f"{type(exc).__name__}: {exc} (run with --debug for the traceback)"
    print(f"error: {message}", file=sys.stderr)
    return 2


def _out_of_memory(exc: BaseException) -> bool:
    """A GPU or CPU allocation failed: torch's ``OutOfMemoryError``, its CPU allocator's
    error, or Python's ``MemoryError`` (matched by name, so ``main`` needs no torch import)."""
    return (isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in str(exc))


if __name__ == "__main__":
    sys.exit(main())
