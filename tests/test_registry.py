"""Registry: a name clash during the built-ins' loading, replace=True, names the CLI can spell."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from lowdose.errors import LowdoseError
from lowdose.registry import Registry, RegistryError

BUILTINS = '''
from _lowdose_test_holder import REG

@REG.register("alpha")
class Alpha: ...

@REG.register("tv")
class TV: ...
'''


@pytest.fixture
def builtins_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """A registry whose autoload module (a file made here) registers ``alpha`` and ``tv``."""
    module = f"_lowdose_test_builtins_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(BUILTINS)
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[type] = Registry("thing", autoload=[module])
    holder = types.ModuleType("_lowdose_test_holder")
    holder.REG = reg  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "_lowdose_test_holder", holder)
    yield reg
    sys.modules.pop(module, None)


def test_clash_while_loading_names_both_and_leaves_nothing_half_loaded(builtins_registry):
    reg = builtins_registry

    @reg.register("tv")
    class MyTV: ...

    for _ in range(2):  # every lookup tries the loading again and says why it fails
        with pytest.raises(RegistryError, match=r"thing 'tv' is registered twice: first by "
                           r"tests\.test_registry\..*MyTV, then by _lowdose_test_builtins.*TV; "
                           r".*replace=True"):
            reg.names()
    with pytest.raises(RegistryError):
        "alpha" in reg  # noqa: B015 (the lookup is the test)


def test_replace_before_loading_keeps_the_plugin_and_loads_the_rest(builtins_registry):
    reg = builtins_registry

    @reg.register("tv", replace=True)
    class MyTV: ...

    assert reg.names() == ["alpha", "tv"] and reg.get("tv") is MyTV


def test_clash_after_loading_is_a_one_line_lowdose_error(builtins_registry):
    reg = builtins_registry
    reg.names()
    with pytest.raises(LowdoseError, match=r"first by _lowdose_test_builtins.*TV, then by"):
        reg.register("tv")(type("Other", (), {}))
    with pytest.raises(ValueError):  # a RegistryError is a ValueError too
        reg.register("alpha")(1)


def test_a_definition_imported_again_is_no_clash():
    reg: Registry[type] = Registry("thing")
    first = type("Same", (), {"__module__": "pkg.mod"})
    again = type("Same", (), {"__module__": "pkg.mod"})  # the module run again
    reg.register("same")(first)
    reg.register("same")(again)
    assert reg.get("same") is again


@pytest.mark.parametrize("name", ["my:median", "a,b", "", "two words"])
def test_names_the_cli_cannot_spell_are_refused(name):
    reg: Registry[int] = Registry("denoiser")
    with pytest.raises(RegistryError, match=f"denoiser name {name!r} refused"):
        reg.register(name)
    assert reg.names() == []


def test_plugin_denoiser_clashing_with_a_builtin_before_the_first_lookup():
    """The QA repro (t4_clash): a plugin's 'tv' registered before the built-ins load."""
    code = """
from lowdose.models.base import Denoiser, denoisers
from lowdose.models.loading import load_denoiser

@denoisers.register("tv")
class MyTV(Denoiser):
    def denoise(self, hu): return hu

for _ in range(2):
    try:
        load_denoiser("unet")
    except Exception as exc:
        print(type(exc).__name__, exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and lines[0] == lines[1], out.stdout
    assert lines[0].startswith("RegistryError denoiser 'tv' is registered twice: first by "
                               "__main__.MyTV, then by lowdose.models.classical.TotalVariation")
