"""Presets that build on another (``base:``): merge rules, errors, and the shipped chains."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowdose.errors import LowdoseError
from lowdose.training.presets import merge_settings, read_preset


def _locate_in(folder: Path):
    def locate(name: str) -> Path:
        path = folder / f"{name}.yaml"
        if not path.is_file():
            raise LowdoseError(f"{name}: no such preset")
        return path

    return locate


def test_merge_settings_merges_mappings_and_replaces_everything_else() -> None:
    base = {"model": {"a": 1, "b": {"c": 2, "d": 3}}, "steps": [1, 2], "x": 1}
    over = {"model": {"b": {"d": 4}}, "steps": [5], "y": None}
    assert merge_settings(base, over) == {
        "model": {"a": 1, "b": {"c": 2, "d": 4}}, "steps": [5], "x": 1, "y": None,
    }
    assert base["model"]["b"]["d"] == 3  # the inputs are left as they were


def test_a_chain_of_bases_resolves_from_the_root_up(tmp_path: Path) -> None:
    (tmp_path / "root.yaml").write_text("model: {lr: 1, depth: 4}\ntrainer: {steps: 100}\n")
    (tmp_path / "mid.yaml").write_text("base: root\nmodel: {lr: 2}\n")
    (tmp_path / "leaf.yaml").write_text("base: mid\ntrainer: {steps: 7}\n")
    leaf = read_preset(tmp_path / "leaf.yaml", _locate_in(tmp_path))
    assert leaf == {"model": {"lr": 2, "depth": 4}, "trainer": {"steps": 7}}


def test_a_yaml_base_is_read_beside_the_preset_that_names_it(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "root.yaml").write_text("a: 1\nb: 2\n")
    (tmp_path / "sub" / "leaf.yaml").write_text("base: root.yaml\nb: 3\n")
    assert read_preset(tmp_path / "sub" / "leaf.yaml", _locate_in(tmp_path)) == {"a": 1, "b": 3}


@pytest.mark.parametrize(("files", "error"), [
    ({"one": "base: two\n", "two": "base: one\n"}, "cycle: one -> two -> one"),
    ({"one": "base: missing\n"}, "missing: no such preset"),
    ({"one": "- 1\n- 2\n"}, "must be a mapping"),
    ({"one": "a: [1, 2\n"}, "invalid YAML"),
])
def test_cycles_unknown_bases_and_bad_files_are_clear_errors(
    tmp_path: Path, files: dict[str, str], error: str
) -> None:
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    with pytest.raises(LowdoseError, match=error):
        read_preset(tmp_path / "one.yaml", _locate_in(tmp_path))


def test_shipped_presets_that_build_on_another_keep_their_recipes() -> None:
    from lowdose.training import denoising, gan

    sr = gan.load_preset("gan-circle-semi-sr-cpu")
    semi = gan.load_preset("gan-circle-semi-cpu")
    assert sr["model"] == {**semi["model"], "scale": 2, "lambda_supervised": 64.0}
    assert sr["data"] == semi["data"]
    assert sr["trainer"] == {**semi["trainer"], "max_steps": 1200, "num_threads": 2}
    s1 = gan.load_preset("gan-circle-semi-cpu-s1")
    assert s1["family"] == "gan-circle" and s1["model"]["stride"] == 1
    assert s1["model"]["jst_tau"] == 0.5  # from gan-circle-semi-cpu, two bases up
    assert s1["model"]["gp_weight"] == 10.0  # from gan-circle-cpu, three bases up
    # The shipped semi weights' stages: the same G (f0 128) and pool, L1 first, then the GAN,
    # then more L1 steps at half the rate and the same GAN stage again.
    l1 = gan.load_preset("gan-circle-semi-f128-l1-cpu")
    gan2 = gan.load_preset("gan-circle-semi-f128-cpu")
    l1_ft = gan.load_preset("gan-circle-semi-f128-l1-ft-cpu")
    assert l1["model"]["l1_only"] and not gan2["model"].get("l1_only", False)
    assert l1["model"]["f0"] == gan2["model"]["f0"] == 128 and gan2["model"]["stride"] == 1
    assert gan2["model"]["lr_generator"] < l1["model"]["lr_generator"]
    assert gan2["data"] == s1["data"] and l1["data"] == {**s1["data"], "patch": 96}
    assert l1_ft["model"] == {**l1["model"], "lr_generator": 1.5e-4, "lr_decay": [1000, 3000]}
    assert l1_ft["data"] == l1["data"] and l1_ft["trainer"] == l1["trainer"]
    tune, long = denoising.load_preset("cpu-finetune"), denoising.load_preset("cpu-long")
    assert tune.data == long.data and tune.optim.lr == long.optim.lr / 4


def test_a_user_study_file_builds_on_a_builtin_preset(tmp_path: Path) -> None:
    from lowdose.evaluation.study import StudyConfig

    mine = tmp_path / "mine.yaml"
    mine.write_text("base: demo\ndoses: [1.0, 0.25]\n")
    cfg, demo = StudyConfig.from_yaml(mine), StudyConfig.from_yaml("demo")
    assert cfg.doses == [1.0, 0.25] and cfg.phantom == demo.phantom and cfg.preset == "demo"
    with pytest.raises(LowdoseError, match="built-in presets: demo, kaggle"):
        StudyConfig.from_yaml(tmp_path / "nothing.yaml")


def test_every_shipped_training_preset_opens_with_a_summary_and_a_known_base() -> None:
    from lowdose.training.presets import shipped_training_presets

    entries = shipped_training_presets()
    names = {e.name for e in entries}
    assert {"cpu", "cpu-finetune", "gan-circle-sr-cpu", "cyclegan-unpaired-cpu"} <= names
    for entry in entries:
        assert 20 <= len(entry.summary) <= 90, entry
        assert entry.max_steps and entry.max_steps > 0, entry
        assert entry.base is None or entry.base in names, entry
    gan_models = {e.model for e in entries if e.name.startswith(("gan", "cyclegan"))}
    assert gan_models == {"gan-circle", "cyclegan"}


def test_cli_lists_the_presets_with_their_bases(capsys) -> None:
    from tests.cli.cli_helpers import run

    rc, out, _ = run(["train", "denoiser", "--list-presets"], capsys)
    assert rc == 0
    rows = {line.split()[0]: line for line in out.splitlines()}
    assert "base gan-circle-semi-sr-cpu" in rows["gan-circle-sr-cpu"]
    assert "base cpu-long" in rows["cpu-finetune"] and "4000 steps" in rows["cpu-finetune"]
