"""The ``lowdose`` app: every command registered, and its help free of hard line breaks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import typer

from lowdose.cli.main import build_app, unwrap_paragraphs
from tests.cli.cli_helpers import assert_one_error_line, run


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


COMMANDS = dict(_commands(typer.main.get_command(build_app())))


def test_every_command_module_registers_its_commands():
    names = {" ".join(path) for path in COMMANDS}
    assert {"info", "simulate", "calibrate", "denoise", "upscale", "score", "classify", "study",
            "data phantom", "data audit", "train denoiser", "train classifier"} <= names


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_help_paragraphs_are_one_line_each(path):
    """typer keeps a docstring's line breaks and then wraps again: the paragraphs arrive
    unwrapped, so the terminal wraps them once."""
    help_text = COMMANDS[path].help or ""
    assert help_text.strip(), f"{' '.join(path)} has no help"
    for paragraph in help_text.split("\n\n"):
        lines = paragraph.splitlines()
        assert all(line.startswith((" ", "-", "*")) for line in lines[1:]), paragraph


def test_unwrap_keeps_list_items_and_paragraphs():
    text = """Intro line
        continues here.

        - item one
        - item two
          wrapped

        Example: a
        b
        """
    assert unwrap_paragraphs(text) == (
        "Intro line continues here.\n\n- item one\n- item two\n  wrapped\n\nExample: a b")


@pytest.mark.parametrize("error", [
    lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't "
                         "allocate memory: you tried to allocate 40000000000000 bytes."),
    lambda: MemoryError(),
], ids=["cuda", "cpu-allocator", "python"])
def test_out_of_memory_is_one_line_with_the_way_out(tmp_path, capsys, monkeypatch, error):
    from lowdose.cli import denoise

    def fail(*args, **kwargs):
        raise error()

    monkeypatch.setattr(denoise, "denoise_path", fail)
    rc, _, err = run(["denoise", str(tmp_path / "in.nii.gz"), str(tmp_path / "out.nii.gz")],
                     capsys)
    assert_one_error_line(rc, err, "out of ", "memory", "--batch-size")
    assert ("--device cpu" in err) == ("CUDA" in str(error()))  # the CPU way out on a GPU only


@pytest.mark.parametrize(("raised", "code"), [
    (KeyboardInterrupt, 130), (lambda: typer.Exit(3), 3), (lambda: typer.Exit(), 0),
], ids=["ctrl-c", "exit-3", "exit-0"])
def test_exit_codes_reach_the_shell(tmp_path, capsys, monkeypatch, raised, code):
    # typer, not standalone, returns an Exit's code (Ctrl-C: 130) instead of raising it
    from lowdose.cli import denoise

    def stop(*args, **kwargs):
        raise raised()

    monkeypatch.setattr(denoise, "denoise_path", stop)
    rc, _, err = run(["denoise", str(tmp_path / "in.nii.gz"), str(tmp_path / "out.nii.gz")],
                     capsys)
    assert rc == code
    assert ("error: interrupted" in err) == (code == 130)


PLUGIN = '''
import torch

from lowdose.models.base import Denoiser, denoisers


@denoisers.register("plugin-halve")
class Halve(Denoiser):
    """Halves every HU value (a plugin test)."""

    def __init__(self, factor: float = 0.5) -> None:
        self.factor = factor

    def denoise(self, hu: torch.Tensor) -> torch.Tensor:
        return hu * self.factor
'''


def test_plugins_named_in_lowdose_plugins_reach_the_cli(tmp_path, capsys, monkeypatch):
    import sys

    import numpy as np

    from lowdose.models.base import denoisers

    denoisers.names()
    monkeypatch.setattr(denoisers, "_entries", dict(denoisers._entries))
    module = f"_lowdose_plugin_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("LOWDOSE_PLUGINS", f" {module} ,")
    try:
        rc, out, _ = run(["denoise", "--list"], capsys)
        assert rc == 0 and "plugin-halve" in out and "[--set factor]" in out
        np.save(tmp_path / "a.npy", np.full((8, 8), 40.0, np.float32))
        rc, _, err = run(["denoise", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"),
                          "-m", "plugin-halve"], capsys)
        assert rc == 0, err
        assert np.load(tmp_path / "b.npy").max() == 20.0
    finally:
        sys.modules.pop(module, None)


@pytest.mark.parametrize(("value", "needles"), [
    ("no_such_plugin_module", ("LOWDOSE_PLUGINS: plugin module 'no_such_plugin_module' failed "
                               "to import: ModuleNotFoundError",)),
    ("../evil.py", ("LOWDOSE_PLUGINS: '../evil.py' is not a module name",)),
])
def test_a_bad_lowdose_plugins_is_one_error_line(capsys, monkeypatch, value, needles):
    monkeypatch.setenv("LOWDOSE_PLUGINS", value)
    rc, _, err = run(["denoise", "--list"], capsys)
    assert_one_error_line(rc, err, *needles)


SLEEPY = '''
import time
from pathlib import Path

from lowdose.models.base import Denoiser, denoisers


@denoisers.register("sleepy")
class Sleepy(Denoiser):
    """Says it started, then takes a minute."""

    def denoise(self, hu):
        Path(__file__).with_name("started").touch()
        time.sleep(60)
        return hu
'''


def test_sigterm_stops_a_run_as_ctrl_c_does(tmp_path: Path) -> None:
    """SIGTERM (a scheduler's, `docker stop`'s) killed the process at once: exit -15, no
    message, and the partial outputs of the moment left behind."""
    import os
    import signal
    import subprocess
    import time

    import numpy as np

    from lowdose.image import CTImage
    from lowdose.io import write_ct

    (tmp_path / "sleepy_plugin.py").write_text(SLEEPY)
    source = write_ct(CTImage(np.zeros((2, 16, 16), np.float32), spacing=(1.0, 1.0, 1.0)),
                      tmp_path / "in.nii.gz")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "LOWDOSE_PLUGINS": "sleepy_plugin"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from lowdose.cli.main import main; "
         "sys.exit(main())", "denoise", str(source), str(tmp_path / "out.nii.gz"),
         "-m", "sleepy"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "error: terminated (SIGTERM)"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.nii.gz", "sleepy_plugin.py", "started"]


def test_debug_after_the_command_is_taken(tmp_path, capsys) -> None:
    """`lowdose simulate a b --debug` printed a traceback of 'No such option: --debug'."""
    with pytest.raises(Exception) as raised:  # --debug: the error itself, not one line
        run(["simulate", str(tmp_path / "none.nii.gz"), str(tmp_path / "x.nii.gz"), "--debug"],
            capsys)
    assert "no such file" in str(raised.value) and "No such option" not in str(raised.value)


def test_a_broken_plugin_setting_leaves_help_and_version_reachable(capsys, monkeypatch) -> None:
    """LOWDOSE_PLUGINS=nosuchmod made --help and --version an error."""
    from lowdose.cli.main import main

    monkeypatch.setenv("LOWDOSE_PLUGINS", "nosuchmod")
    assert main(["--version"]) == 0
    captured = capsys.readouterr()
    assert "nosuchmod" in captured.err and captured.out.strip()
    assert main(["denoise", "--list"]) == 2  # a command that would run without it: refused


def test_a_warning_during_a_progress_bar_gets_a_line_of_its_own() -> None:
    """Printed at the end of the bar's line, the next redraw hid it (a tree's colour warnings
    vanished that way)."""
    import io

    from tqdm import tqdm

    from lowdose.cli.main import _show_warning

    buf = io.StringIO()
    with tqdm(total=3, file=buf, desc="simulate") as bar:
        bar.update(1)
        _show_warning("x.png: coloured", UserWarning, "f.py", 1, file=buf)
        bar.update(1)
    lines = [line.strip() for line in buf.getvalue().replace("\r", "\n").splitlines()]
    assert "warning: x.png: coloured" in lines
