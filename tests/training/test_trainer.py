"""The one trainer: loss goes down, checkpoints round-trip, resume is exact, kills leave no
corrupt file, and the data-parallel path (gloo, 2 processes) keeps replicas identical."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lowdose.errors import LowdoseError
from lowdose.training.trainer import StepSampler, Trainer, TrainerConfig, latest_checkpoint
from tests.training._tiny_family import NoisyPairs, TinyFamily

REPO = Path(__file__).resolve().parents[2]


def _cfg(**kw: object) -> TrainerConfig:
    base = dict(max_steps=30, batch_size=4, checkpoint_every=10, log_every=5,
                tensorboard=False, progress=False, num_threads=1)
    base.update(kw)
    return TrainerConfig(**base)  # type: ignore[arg-type]


def _weights(family: TinyFamily) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in family.modules["net"].parameters()])


def test_loss_goes_down_and_logs(tmp_path: Path) -> None:
    family = TinyFamily()
    data = NoisyPairs()
    before = family.validation_step({"x": data.x, "y": data.y})["mse"]
    result = Trainer(family, data, _cfg(tensorboard=True), tmp_path, val_dataset=data).fit()
    after = family.validation_step({"x": data.x, "y": data.y})["mse"]
    assert result.step == 30 and after < 0.3 * before
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,split,name,value,time" and any(",val,mse," in r for r in rows)
    assert list((tmp_path / "tensorboard").iterdir())
    assert (tmp_path / "model.safetensors").is_file()


@pytest.mark.parametrize(("mode", "best_step"), [("min", 30), ("max", 10)])
def test_best_validation_weights_are_kept_past_checkpoint_pruning(
    tmp_path: Path, mode: str, best_step: int
) -> None:
    """The loss falls, so the lowest mse is the last validation and the highest the first."""
    from safetensors.torch import load_file

    data = NoisyPairs()
    cfg = _cfg(val_every=10, keep_checkpoints=1, best_metric="mse", best_mode=mode)
    Trainer(TinyFamily(), data, cfg, tmp_path / "run", val_dataset=data).fit()
    best = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert best["metrics"]["step"] == best_step
    mses = {}
    for line in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]:
        step, split, name, value, _ = line.split(",")
        if split == "val" and name == "mse":
            mses[int(step)] = float(value)
    assert best["metrics"]["val/mse"] == pytest.approx(mses[best_step], rel=1e-5)
    assert mses[30] < mses[20] < mses[10]  # the premise: validation mse falls
    # the state of step 10 is gone from checkpoints/ (keep 1) but kept in best/
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*")] == ["step-00000030"]
    replay = TinyFamily()
    Trainer(replay, data, _cfg(max_steps=best_step), tmp_path / "replay").fit()
    tensors = load_file(str(tmp_path / "run" / "best" / "model.safetensors"))
    assert torch.equal(tensors["net.weight"], replay.modules["net"].weight.detach())
    with pytest.raises(LowdoseError, match="best_mode"):
        TrainerConfig(best_mode="lowest")


def test_checkpoint_round_trip_and_exact_resume(tmp_path: Path) -> None:
    full = TinyFamily()
    Trainer(full, NoisyPairs(), _cfg(), tmp_path / "a").fit()
    half = TinyFamily()
    Trainer(half, NoisyPairs(), _cfg(max_steps=20), tmp_path / "b").fit()
    ckpt = latest_checkpoint(tmp_path / "b")
    assert ckpt is not None and ckpt.name == "step-00000020"
    assert set(os.listdir(ckpt)) == {"model.safetensors", "training_state.pt", "config.json",
                                     "trainer_state.json"}
    resumed = TinyFamily()
    result = Trainer(resumed, NoisyPairs(), _cfg(), tmp_path / "b", resume=True).fit()
    assert result.resumed_from == 20
    rows = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    assert sum(r.startswith("25,train,loss,") for r in rows) == 1  # logged once across runs
    assert torch.allclose(_weights(resumed), _weights(full), atol=1e-6)
    # only the newest two checkpoints are kept
    kept = sorted(p.name for p in (tmp_path / "b" / "checkpoints").glob("step-*"))
    assert kept == ["step-00000020", "step-00000030"]


class _HalvingFamily(TinyFamily):
    """Two parameter groups (rates 0.1 and 0.01), halved at every step; records the rates used."""

    def __init__(self) -> None:
        super().__init__()
        self.used: list[list[float]] = []

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        net = self.modules["net"]
        self._opt = torch.optim.SGD([{"params": [net.weight], "lr": 0.1},
                                     {"params": [net.bias], "lr": 0.01}])
        return {"net": self._opt}

    def lr_factor(self, optimizer_name: str, step: int) -> float:
        return 0.5 ** step

    def training_step(self, batch, optimizer_name: str, step: int) -> dict[str, torch.Tensor]:
        self.used.append([g["lr"] for g in self._opt.param_groups])
        return super().training_step(batch, optimizer_name, step)


def test_learning_rate_is_the_configured_rate_times_lr_factor_also_after_resume(
    tmp_path: Path,
) -> None:
    first = _HalvingFamily()
    Trainer(first, NoisyPairs(), _cfg(max_steps=2, checkpoint_every=2), tmp_path).fit()
    resumed = _HalvingFamily()  # the checkpoint holds the rates of step 1; step 2 uses its own
    Trainer(resumed, NoisyPairs(), _cfg(max_steps=4, checkpoint_every=2), tmp_path,
            resume=True).fit()
    expected = [r for s in range(4) for r in (0.1 * 0.5 ** s, 0.01 * 0.5 ** s)]
    assert [r for rates in first.used + resumed.used for r in rates] == pytest.approx(expected)


def test_refuses_to_overwrite_and_mismatched_resume(tmp_path: Path) -> None:
    Trainer(TinyFamily(), NoisyPairs(), _cfg(max_steps=10), tmp_path).fit()
    with pytest.raises(LowdoseError, match="--resume"):
        Trainer(TinyFamily(), NoisyPairs(), _cfg(), tmp_path).fit()
    other = TinyFamily()
    other.config = lambda: {"family": "tiny", "model": "other"}  # type: ignore[method-assign]
    with pytest.raises(LowdoseError, match="differs"):
        Trainer(other, NoisyPairs(), _cfg(), tmp_path, resume=True).fit()


def test_killed_training_resumes_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "run"
    script = [sys.executable, "-m", "tests.training._tiny_family", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*script, "400", "0", "0.01"], cwd=REPO, env=env)
    deadline = time.time() + 300  # generous: a loaded machine starts Python and torch slowly
    while time.time() < deadline and proc.poll() is None:
        ck = latest_checkpoint(out)
        if ck is not None and int(ck.name.split("-")[1]) >= 6:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # at an arbitrary moment, possibly mid-checkpoint
    proc.wait()
    ck = latest_checkpoint(out)
    assert ck is not None
    json.loads((ck / "trainer_state.json").read_text())  # complete, parseable
    # resume in this process (same code path as the CLI's --resume)
    from tests.training._tiny_family import main as run_tiny

    run_tiny(str(out), 30, resume=True)
    final = latest_checkpoint(out)
    assert final is not None and final.name == "step-00000030"
    assert not list((out / "checkpoints").glob(".tmp-*"))
    # same weights as an uninterrupted run
    ref = TinyFamily()
    Trainer(ref, NoisyPairs(), _cfg(checkpoint_every=2), tmp_path / "ref").fit()
    from safetensors.torch import load_file

    got = load_file(str(final / "model.safetensors"))
    assert torch.allclose(got["net.weight"], ref.modules["net"].weight.detach(), atol=1e-6)


def test_step_sampler_is_a_function_of_step_and_rank() -> None:
    a = StepSampler(10, 4, seed=1, start_step=0)
    it = iter(a)
    first_three = [next(it) for _ in range(12)]
    b = iter(StepSampler(10, 4, seed=1, start_step=2))
    assert [next(b) for _ in range(4)] == first_three[8:12]
    r0 = iter(StepSampler(10, 2, seed=1, rank=0, world_size=2))
    r1 = iter(StepSampler(10, 2, seed=1, rank=1, world_size=2))
    assert [next(r0), next(r0), next(r1), next(r1)] == first_three[:4]


def _join_two_process_group(rank: int, port: str) -> None:
    """The environment torchrun gives process ``rank`` of 2 on this machine, one thread each."""
    os.environ.update({"WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
    torch.set_num_threads(1)


def _run_then_exit(rank: int, worker, out: str, port: str) -> None:
    """Run ``worker`` and leave without the interpreter's C++ teardown.

    After a gloo process group, that teardown sometimes aborts ("terminate called without an
    active exception", no Python frame left; about 1 run in 40 here) once every result is
    written. A worker that raises still fails the test: only a clean return exits early.
    """
    worker(rank, out, port)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _spawn_two(worker, out: Path) -> None:
    """Run ``worker(rank, str(out), port)`` in 2 processes on a free local port."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    mp.spawn(_run_then_exit, args=(worker, str(out), port), nprocs=2, join=True)


def _ddp_worker(rank: int, out: str, init: str) -> None:
    _join_two_process_group(rank, init)
    family = TinyFamily()
    if rank == 1:  # different init: the trainer must broadcast rank 0's weights
        torch.nn.init.normal_(family.modules["net"].weight)
    Trainer(family, NoisyPairs(), _cfg(max_steps=8, checkpoint_every=4), out).fit()
    torch.save(_weights(family), Path(out) / f"weights-{rank}.pt")
    import torch.distributed as dist

    dist.destroy_process_group()


def test_data_parallel_gloo_two_processes(tmp_path: Path) -> None:
    _spawn_two(_ddp_worker, tmp_path)
    w0 = torch.load(tmp_path / "weights-0.pt")
    w1 = torch.load(tmp_path / "weights-1.pt")
    assert torch.allclose(w0, w1, atol=1e-6)
    assert latest_checkpoint(tmp_path).name == "step-00000008"  # type: ignore[union-attr]


class _StopAt(TinyFamily):
    """Asks to stop once ``at`` steps are done; counts how often it was asked."""

    def __init__(self, at: int, only_rank0: bool = False) -> None:
        super().__init__()
        self.at, self.only_rank0, self.asked = at, only_rank0, 0

    def should_stop(self, step: int) -> str | None:
        self.asked += 1
        if self.only_rank0 and os.environ.get("RANK", "0") != "0":
            return None  # like a family that validates on rank 0 only
        return f"enough at {step}" if step >= self.at else None


def test_should_stop_ends_training_with_a_checkpoint(tmp_path: Path) -> None:
    family = _StopAt(7)
    result = Trainer(family, NoisyPairs(), _cfg(checkpoint_every=5), tmp_path).fit()
    assert result.step == 7 and result.stopped == "enough at 7"
    assert latest_checkpoint(tmp_path).name == "step-00000007"  # type: ignore[union-attr]
    # a resumed run asks before its first step and trains no further
    again = _StopAt(7)
    resumed = Trainer(again, NoisyPairs(), _cfg(checkpoint_every=5), tmp_path, resume=True).fit()
    assert resumed.step == 7 and resumed.resumed_from == 7 and again.asked == 1
    assert resumed.stopped == "enough at 7"
    # a family without the hook runs to max_steps
    assert Trainer(TinyFamily(), NoisyPairs(), _cfg(), tmp_path / "plain").fit().stopped is None


def _stop_worker(rank: int, out: str, init: str) -> None:
    _join_two_process_group(rank, init)
    result = Trainer(_StopAt(5, only_rank0=True), NoisyPairs(),
                     _cfg(max_steps=20, checkpoint_every=4), out).fit()
    (Path(out) / f"result-{rank}.json").write_text(json.dumps([result.step, result.stopped]))
    import torch.distributed as dist

    dist.destroy_process_group()


def test_stop_decision_of_rank_0_reaches_every_process(tmp_path: Path) -> None:
    _spawn_two(_stop_worker, tmp_path)
    r0 = json.loads((tmp_path / "result-0.json").read_text())
    r1 = json.loads((tmp_path / "result-1.json").read_text())
    assert r0 == [5, "enough at 5"] and r1 == [5, "stopped by rank 0"]
    assert latest_checkpoint(tmp_path).name == "step-00000005"  # type: ignore[union-attr]


def test_resume_refuses_a_changed_seed_or_pairing_but_may_run_longer(tmp_path: Path) -> None:
    """The seed draws the data order: a resume with another one would mix two runs."""
    Trainer(TinyFamily(), NoisyPairs(), _cfg(max_steps=4, checkpoint_every=2), tmp_path).fit()
    with pytest.raises(LowdoseError, match=r"--resume with --seed 1, but the run was trained "
                       r"with --seed 0;.*start a new --out"):
        Trainer(TinyFamily(), NoisyPairs(), _cfg(max_steps=6, seed=1), tmp_path,
                resume=True).fit()
    # A family without a run_settings hook (the GANs): its training section's pairing counts.
    paired = TinyFamily()
    paired.config = lambda: {"family": "tiny", "model": "tiny",  # type: ignore[method-assign]
                             "training": {"paired_fraction": 0.5}}
    Trainer(paired, NoisyPairs(), _cfg(max_steps=2), tmp_path / "gan").fit()
    unpaired = TinyFamily()
    unpaired.config = lambda: {"family": "tiny", "model": "tiny",  # type: ignore[method-assign]
                               "training": {"paired_fraction": 0.0}}
    with pytest.raises(LowdoseError,
                       match=r"--paired-fraction 0\.0, but .* --paired-fraction 0\.5"):
        Trainer(unpaired, NoisyPairs(), _cfg(max_steps=4), tmp_path / "gan", resume=True).fit()
    # More steps, other logging and checkpointing: a plain resume.
    result = Trainer(TinyFamily(), NoisyPairs(), _cfg(max_steps=6, log_every=1,
                                                      checkpoint_every=3),
                     tmp_path, resume=True).fit()
    assert result.resumed_from == 4 and result.step == 6


def test_a_device_this_machine_lacks_is_refused_by_the_trainer(tmp_path: Path) -> None:
    with pytest.raises(LowdoseError, match=r"^--device gpu: not a device"):
        Trainer(TinyFamily(), NoisyPairs(), _cfg(device="gpu"), tmp_path)


def _rows(run: Path) -> list[tuple[str, ...]]:
    """metrics.csv without its time column."""
    lines = (run / "metrics.csv").read_text().splitlines()[1:]
    return [tuple(line.split(",")[:4]) for line in lines]


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every TensorBoard scalar as TensorBoard shows it: (step, value) per tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _interrupted_at(run: Path, step: int) -> None:
    """Leave ``run`` as a kill after checkpoint ``step`` does: ``latest`` points at it, and the
    logs hold what came after it; TensorBoard's next event file sorts after the old ones."""
    (run / "checkpoints" / "latest").write_text(f"step-{step:08d}\n")
    config = json.loads((run / "config.json").read_text())
    config.pop("metrics")  # as the killed run left it: written at its start
    (run / "config.json").write_text(json.dumps(config))
    time.sleep(1.1)  # event file names hold the second they were opened


def test_a_resume_off_the_log_grid_logs_what_an_uninterrupted_run_logs(tmp_path: Path) -> None:
    """A checkpoint at step 21 (log rows every 5): the row of step 25 averages steps 21-25
    as in an uninterrupted run, not only 22-25, and the weights stay identical."""
    data = NoisyPairs()
    cfg = _cfg(checkpoint_every=7, keep_checkpoints=10)
    ref = TinyFamily()
    Trainer(ref, data, cfg, tmp_path / "ref", val_dataset=data).fit()
    Trainer(TinyFamily(), data, cfg, tmp_path / "run", val_dataset=data).fit()
    _interrupted_at(tmp_path / "run", 21)
    resumed = TinyFamily()
    result = Trainer(resumed, data, cfg, tmp_path / "run", val_dataset=data, resume=True).fit()
    assert _rows(tmp_path / "run") == _rows(tmp_path / "ref")
    assert result.resumed_from == 21
    assert torch.equal(_weights(resumed), _weights(ref))
    # A finished run off the grid (32 steps), resumed to 40, logs step 35 over steps 31-35.
    Trainer(TinyFamily(), data, _cfg(max_steps=40), tmp_path / "ref40").fit()
    Trainer(TinyFamily(), data, _cfg(max_steps=32), tmp_path / "run40").fit()
    Trainer(TinyFamily(), data, _cfg(max_steps=40), tmp_path / "run40", resume=True).fit()
    assert [r for r in _rows(tmp_path / "run40") if int(r[0]) > 32] == \
        [r for r in _rows(tmp_path / "ref40") if int(r[0]) > 32]


def test_tensorboard_after_a_kill_shows_one_point_per_step(tmp_path: Path) -> None:
    """The killed run's points after its checkpoint are hidden (purge_step), as the CSV drops
    them: each step has one point, the uninterrupted run's."""
    data = NoisyPairs()
    cfg = _cfg(checkpoint_every=10, keep_checkpoints=10, tensorboard=True)
    Trainer(TinyFamily(), data, cfg, tmp_path / "ref", val_dataset=data).fit()
    Trainer(TinyFamily(), data, cfg, tmp_path / "run", val_dataset=data).fit()
    _interrupted_at(tmp_path / "run", 20)
    Trainer(TinyFamily(), data, cfg, tmp_path / "run", val_dataset=data, resume=True).fit()
    assert len(list((tmp_path / "run" / "tensorboard").iterdir())) == 2  # the premise
    got, ref = _scalars(tmp_path / "run"), _scalars(tmp_path / "ref")
    assert [s for s, _ in got["train/loss"]] == [5, 10, 15, 20, 25, 30]
    assert [s for s, _ in got["val/mse"]] == [30]
    assert got == ref


def test_resuming_a_finished_run_says_so_and_logs_nothing_again(tmp_path: Path) -> None:
    data = NoisyPairs()
    cfg = _cfg(max_steps=10, tensorboard=True)
    first = Trainer(TinyFamily(), data, cfg, tmp_path, val_dataset=data).fit()
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    again = Trainer(TinyFamily(), data, cfg, tmp_path, val_dataset=data, resume=True).fit()
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # no validation rows, no new event file, config.json as it was
    from lowdose.training.trainer import finished_run

    assert again.finished == finished_run(tmp_path, 10)
    assert again.finished == (f"{tmp_path}: already finished at step 10 (--steps 10; a --steps "
                              f"above 10 trains on); weights {tmp_path / 'model.safetensors'}")
    assert again.step == 10 and again.resumed_from == 10 and again.metrics == first.metrics
    # Fewer steps: nothing either; more steps train on.
    assert "above 10 trains on" in str(finished_run(tmp_path, 4))
    assert finished_run(tmp_path, 12) is None
    longer = Trainer(TinyFamily(), data, _cfg(max_steps=12, tensorboard=True), tmp_path,
                     val_dataset=data, resume=True).fit()
    assert longer.step == 12 and longer.finished is None
    # Killed after its last checkpoint, before the final validation and export: not finished.
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("metrics")
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert finished_run(tmp_path, 12) is None
    ended = Trainer(TinyFamily(), data, _cfg(max_steps=12), tmp_path, val_dataset=data,
                    resume=True).fit()
    assert ended.finished is None and "val/mse" in ended.metrics
    assert "metrics" in json.loads((tmp_path / "config.json").read_text())


def test_a_stopped_run_resumed_says_it_is_finished(tmp_path: Path) -> None:
    data = NoisyPairs()
    Trainer(_StopAt(7), data, _cfg(checkpoint_every=5), tmp_path, val_dataset=data).fit()
    rows = (tmp_path / "metrics.csv").read_text()
    assert ",val,mse," in rows  # the premise: the stopped run validated once
    result = Trainer(_StopAt(7), data, _cfg(checkpoint_every=5), tmp_path, val_dataset=data,
                     resume=True).fit()
    assert (tmp_path / "metrics.csv").read_text() == rows
    assert result.step == 7 and result.stopped == "enough at 7"
    assert result.finished is not None and "(stopped early: enough at 7)" in result.finished


@pytest.mark.parametrize(("name", "saved", "current", "advice"), [
    ("--model", "gan-circle", "unet", "pass the run's --model gan-circle, or start"),
    ("--dose", [0.15, 0.25, 0.4], 0.25, "pass the run's --dose 0.15,0.25,0.4,"),
    ("--data", ["a/", "b/"], ["a/"], "pass the run's --data a/ --data b/,"),
    ("--init", None, "unet", "leave out --init, as the run did"),
    ("--relative-dose", True, False, "set --relative-dose on again, as the run did"),
    ("arch (preset)", {"f0": 8}, {"f0": 16}, "resume with the run's --preset (its arch is "
     "{'f0': 8})"),
    ("DATA", "set-a", "set-b", "give DATA set-a again"),
])
def test_resume_refusal_names_what_to_pass(name: str, saved: object, current: object,
                                           advice: str) -> None:
    """The message says to pass the run's value, never to drop the option (a run started
    before command.json takes an option left out at its default)."""
    from lowdose.training.trainer import refuse_changed_settings

    with pytest.raises(LowdoseError) as err:
        refuse_changed_settings("runs/g", {name: saved}, {name: current})
    message = str(err.value)
    assert advice in message and message.endswith(", or start a new --out"), message
    assert "drop" not in message and "\n" not in message


def test_resume_refusal_lists_every_setting_that_differs() -> None:
    """Resumed without its custom --preset, a run differs in an option the preset set and in a
    preset setting: the first is named with what to pass, the others beside it, so the missing
    preset shows."""
    from lowdose.training.trainer import refuse_changed_settings

    saved = {"--method": "image-poisson", "--dose": 0.25, "data.patch_size (preset)": 32}
    current = {"--method": "projection", "--dose": 0.25, "data.patch_size (preset)": 64}
    with pytest.raises(LowdoseError) as err:
        refuse_changed_settings("runs/g", saved, current)
    message = str(err.value)
    assert message.startswith("runs/g: --resume with --method projection, but the run was "
                              "trained with --method image-poisson; pass the run's --method "
                              "image-poisson"), message
    assert message.endswith("(the run's other settings that differ: data.patch_size (preset) "
                            "32 (now 64))"), message
    assert "--dose" not in message


@pytest.mark.parametrize(("settings", "error"), [
    ({"max_steps": "abc"}, "trainer.max_steps: 'abc' is not an integer"),
    ({"max_steps": 2.5}, "trainer.max_steps: 2.5 is not an integer"),
    ({"max_steps": 0}, r"trainer.max_steps: 0 is out of range; use an integer >= 1"),
    ({"batch_size": 0}, r"trainer.batch_size: 0 is out of range; use an integer >= 1"),
    ({"batch_size": True}, "trainer.batch_size: True is not an integer"),
    ({"num_workers": -1}, "trainer.num_workers: -1 is out of range"),
    ({"seed": "x"}, "trainer.seed: 'x' is not an integer"),
    ({"grad_clip": "much"}, "trainer.grad_clip: 'much' is not a number"),
    ({"grad_clip": -1}, r"trainer.grad_clip: -1 is out of range; use a number >= 0"),
    ({"tensorboard": "no"}, "trainer.tensorboard: 'no' is not true or false"),
    ({"precision": "fp16"}, "trainer.precision: 'fp16' is not one of auto, bf16, fp32"),
    ({"device": 0}, "trainer.device: 0 is not a string"),
])
def test_trainer_config_refuses_a_wrong_type_or_range_naming_the_key(
    settings: dict, error: str
) -> None:
    with pytest.raises(LowdoseError, match=error):
        TrainerConfig.from_dict(settings)


def test_trainer_config_takes_yaml_spellings_of_numbers() -> None:
    # PyYAML reads 1e4 as a string (YAML 1.1 floats need a dot); a whole float is a count.
    cfg = TrainerConfig.from_dict({"max_steps": "1e4", "batch_size": 8.0, "grad_clip": 1})
    assert (cfg.max_steps, cfg.batch_size, cfg.grad_clip) == (10000, 8, 1.0)
    assert isinstance(cfg.max_steps, int) and isinstance(cfg.grad_clip, float)
    with pytest.raises(LowdoseError, match="trainer: 5 is not a mapping"):
        TrainerConfig.from_dict(5)  # type: ignore[arg-type]
