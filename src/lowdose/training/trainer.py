"""The one trainer: every learned family (denoisers, GANs, classifiers) trains through it.

The family (:class:`lowdose.training.base.TrainingFamily`) owns networks and losses; the
trainer owns the rest: the data stream, devices, bf16 autocast on GPU, data-parallel training
under ``torchrun``, logs (progress bar, CSV, TensorBoard), checkpoints and resume.

Why plain PyTorch and not Lightning Fabric, Accelerate or MONAI's Ignite engines: none of them
is installed (each would be a new dependency of 5-30 MB plus its own pins), and what they would
save here is small. The GAN families need several optimisers stepped in a fixed order with
their own losses, gradient penalties (double back-prop) and an EMA copy updated between
optimiser steps; that is a plain loop in any of those libraries too. What remains (autocast,
a gradient all-reduce, atomic checkpoints) is a few dozen lines that we test directly.

Data parallelism: under ``torchrun`` (``WORLD_SIZE`` > 1) every process initialises
``torch.distributed`` from the environment (NCCL on GPU, gloo on CPU), draws its own share of
each step's batches, and after every backward pass the gradients of the stepped optimiser are
averaged across processes with one flattened all-reduce, before the step. That is the
arithmetic of ``DistributedDataParallel``; it is done explicitly rather than with the DDP
wrapper because GAN families call the same module several times per step, run discriminators
with frozen parameters inside the generator's loss, and call their modules directly (not
through the wrapper), each of which breaks DDP's bucket bookkeeping.

Reproducibility: the data order is a pure function of ``(seed, step, rank)`` (a permutation per
epoch seeded by the epoch) and the global torch RNG is reseeded from ``(seed, step, rank)`` at
every step, so a run resumed from a checkpoint continues exactly as an uninterrupted run.

Learning rates: before every optimiser step the trainer sets each parameter group's rate to the
rate the family's ``configure_optimizers`` gave it times ``family.lr_factor(name, step)``. The
rate is a function of the configuration and the step, never of saved scheduler state, so a resume
continues on the same curve (and a resume with an edited schedule follows the new one).

Optional family hooks, found by name like ``on_step_end(step)`` and ``state_dict()``:
``run_settings(config) -> dict`` names the settings of a family config (saved or current) that
define the run's data and model, keyed by their option (``{"--dose": 0.25, ...}``): a resume
that changes one is refused (:func:`refuse_changed_settings`; the supervised and GAN families
have it; without it the scale and pairing of a ``training`` section, and always the seed, are
compared).
``should_stop(step) -> str | None`` ends training early.
The trainer asks it after every step; on a reason (early stopping on a validation score) it
writes a checkpoint at that step and ends the run (``TrainResult.stopped``). Under ``torchrun``
only rank 0's answer counts and is broadcast, so every process stops at the same step (a family
that validates on rank 0 only, like the classifiers, decides there). A run resumed from a
stopped checkpoint asks again before its first step and trains no further.

Checkpoints: every ``checkpoint_every`` steps, a folder ``checkpoints/step-NNNNNNNN`` with
``model.safetensors`` (every module's weights, keys ``<module>.<param>``, the family config in
its metadata), ``config.json``, ``trainer_state.json`` and ``training_state.pt`` (optimiser
and family state: tensors and plain values only, read back with
``torch.load(weights_only=True)``). The folder is written under a temporary name and renamed,
then ``checkpoints/latest`` is replaced atomically: a process killed at any moment leaves the
previous checkpoint intact and at most a ``.tmp-*`` folder, removed at the next start.

Logs on resume: ``trainer_state.json`` also holds the loss values since the last log row, so a
resumed run logs the same rows as an uninterrupted one; rows and TensorBoard points a killed run
logged after its checkpoint are dropped (TensorBoard: ``purge_step``). A resume of a finished
run (:func:`finished_run`) trains, validates and logs nothing again: ``TrainResult.finished``
says so.

Example:
    >>> from lowdose.training.trainer import TrainerConfig
    >>> TrainerConfig(max_steps=10).precision
    'auto'
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lowdose.errors import LowdoseError
from lowdose.settings import checked_bool, checked_choice, checked_float, checked_int, checked_text
from lowdose.training.base import TrainingFamily

CHECKPOINTS = "checkpoints"
LATEST = "latest"
BEST = "best"


@dataclass
class TrainerConfig:
    """Settings of the loop itself (the family has its own).

    Attributes:
        max_steps: optimiser steps (one batch each) to train for.
        batch_size: samples per process per step.
        num_workers: DataLoader worker processes (0: load in the training process).
        seed: seeds the data order and the per-step RNG; the same seed reproduces a run.
        checkpoint_every: steps between checkpoints (and one at the end).
        keep_checkpoints: how many recent checkpoint folders to keep.
        log_every: steps between log rows (running means of the losses).
        val_every: steps between validations (0: only at the end, if a validation set is given).
        precision: ``"auto"`` (bf16 autocast on CUDA, fp32 on CPU), ``"bf16"`` or ``"fp32"``.
        grad_clip: clip the gradient norm per optimiser (0: off).
        device: ``"cpu"``, ``"cuda"``, ... (default: best available; ``cuda:LOCAL_RANK`` under
            torchrun).
        num_threads: CPU threads for torch (0: torch's default).
        tensorboard: also write TensorBoard event files under ``<out>/tensorboard``.
        progress: show a progress bar (rank 0 only).
        channels_last: use channels-last memory format for 4D tensors (faster convolutions on
            CPU and on tensor cores).
        best_metric: a validation metric (e.g. ``psnr_full``): whenever a validation improves
            on it, the weights are also written to ``<out>/best`` (``model.safetensors`` +
            ``config.json``, loadable like the run folder), so pruning checkpoints never loses
            the best state. None: off.
        best_mode: ``"max"`` or ``"min"``: which way ``best_metric`` improves.
    """

    max_steps: int = 1000
    batch_size: int = 16
    num_workers: int = 0
    seed: int = 0
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    log_every: int = 20
    val_every: int = 0
    precision: str = "auto"
    grad_clip: float = 0.0
    device: str | None = None
    num_threads: int = 0
    tensorboard: bool = True
    progress: bool = True
    channels_last: bool = True
    best_metric: str | None = None
    best_mode: str = "max"

    def __post_init__(self) -> None:
        # Checked here, when a preset is loaded: a wrong type or range otherwise fails (or
        # silently misbehaves) only after minutes of data work, without naming the setting.
        self.precision = checked_choice(self.precision, "trainer.precision",
                                        ("auto", "bf16", "fp32"))
        self.best_mode = checked_choice(self.best_mode, "trainer.best_mode", ("max", "min"))
        for name, minimum in (("max_steps", 1), ("batch_size", 1), ("num_workers", 0),
                              ("seed", 0), ("checkpoint_every", 1), ("keep_checkpoints", 1),
                              ("log_every", 1), ("val_every", 0), ("num_threads", 0)):
            setattr(self, name, checked_int(getattr(self, name), f"trainer.{name}", minimum))
        self.grad_clip = checked_float(self.grad_clip, "trainer.grad_clip", 0)
        for name in ("tensorboard", "progress", "channels_last"):
            setattr(self, name, checked_bool(getattr(self, name), f"trainer.{name}"))
        self.device = checked_text(self.device, "trainer.device")
        self.best_metric = checked_text(self.best_metric, "trainer.best_metric")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainerConfig:
        """Build from a dict (e.g. a YAML preset section), rejecting unknown keys and, by
        ``__post_init__``, values of the wrong type or range (naming ``trainer.<key>``).

        Example:
            >>> TrainerConfig.from_dict({"max_steps": "1e3"}).max_steps
            1000
        """
        if not isinstance(data, dict):
            raise LowdoseError(f"trainer: {data!r} is not a mapping of settings")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LowdoseError(f"trainer config: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**data)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    step: int
    out_dir: Path
    checkpoint: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None
    stopped: str | None = None
    """Why the family stopped the run before ``max_steps`` (``None``: it ran to the end)."""
    finished: str | None = None
    """A resume of a run that was already finished: one line saying so (:func:`finished_run`);
    nothing was trained, validated, logged or written again. ``None``: the run trained."""


# ---------------------------------------------------------------- distributed helpers


@dataclass(frozen=True)
class DistEnv:
    """The process's place in a ``torchrun`` job (world size 1 when run directly)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistEnv:
    """Initialise ``torch.distributed`` from torchrun's environment when ``WORLD_SIZE`` > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistEnv(rank, local, world)


def _barrier(env: DistEnv) -> None:
    if env.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def _agree_on_stop(reason: str | None, env: DistEnv) -> str | None:
    """Rank 0's stop decision on every process (one broadcast; other ranks' answers are ignored).

    Example:
        >>> _agree_on_stop("no better validation score", DistEnv())
        'no better validation score'
    """
    if env.world_size <= 1:
        return reason
    import torch.distributed as dist

    flag = torch.tensor([1 if (env.is_main and reason) else 0], dtype=torch.int64)
    dist.broadcast(flag, src=0)
    if not int(flag.item()):
        return None
    return reason if env.is_main else "stopped by rank 0"


def _average_gradients(params: list[nn.Parameter], world_size: int) -> None:
    """Average gradients across processes with one flattened all-reduce (DDP's arithmetic)."""
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def _broadcast_modules(modules: dict[str, nn.Module]) -> None:
    """Start every process from rank 0's weights and buffers."""
    import torch.distributed as dist

    for module in modules.values():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


# ---------------------------------------------------------------- data stream


class StepSampler(torch.utils.data.Sampler[int]):
    """Indices for steps ``start_step, start_step + 1, ...`` of one process, forever.

    The stream is a concatenation of permutations (one per epoch, seeded by ``seed`` and the
    epoch); step ``s`` of rank ``r`` takes positions ``[(s * world + r) * batch, ... + batch)``.
    It depends on nothing but its arguments, so a resumed run sees the same batches.
    """

    def __init__(self, length: int, batch_size: int, seed: int, start_step: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if length < 1:
            raise LowdoseError("training data: the dataset is empty")
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size
        self._perm_epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _at(self, position: int) -> int:
        epoch, offset = divmod(position, self.length)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.length, generator=g), epoch
        return int(self._perm[offset])

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        while True:
            base = (step * self.world_size + self.rank) * self.batch_size
            for j in range(self.batch_size):
                yield self._at(base + j)
            step += 1

    def __len__(self) -> int:  # an endless stream; DataLoader only needs a number
        return 2**62


def _to_device(batch: Any, device: torch.device, channels_last: bool) -> Any:
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.ndim == 4 and batch.is_floating_point():
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, dict):
        return {k: _to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device, channels_last) for v in batch)
    return batch


# ---------------------------------------------------------------- checkpoints


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder under ``out_dir``, or ``None``."""
    pointer = Path(out_dir) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    folder = pointer.parent / pointer.read_text().strip()
    return folder if (folder / "trainer_state.json").is_file() else None


def _fsync_files(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def load_module_weights(modules: dict[str, nn.Module], tensors: dict[str, torch.Tensor],
                        source: str, hint: str = "") -> None:
    """Load each module from the ``<module>.<key>`` tensors a checkpoint's ``model.safetensors``
    holds (as :meth:`Trainer._write_weights` writes them).

    Raises:
        LowdoseError: a module without tensors (``hint`` says what to give instead) or whose
            tensors do not fit it.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> load_module_weights({"g": net}, {f"g.{k}": v for k, v in net.state_dict().items()}, "x")
    """
    for name, module in modules.items():
        prefix = f"{name}."
        part = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not part:
            raise LowdoseError(f"{source}: no {name!r} weights{hint}")
        try:
            module.load_state_dict(part)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise LowdoseError(f"{source}: module {name!r} does not match: {first}") from None


def saved_run_config(out_dir: str | Path) -> tuple[Path, dict[str, Any], dict[str, Any]] | None:
    """The latest checkpoint of ``out_dir`` with its family config and trainer settings, or
    ``None`` when it has none: what a ``--resume`` continues, read before any data work.

    Example:
        >>> saved_run_config("no/such/run") is None
        True
    """
    folder = latest_checkpoint(out_dir)
    if folder is None:
        return None
    try:
        family = json.loads((folder / "config.json").read_text())
        trainer = json.loads((folder / "trainer_state.json").read_text()).get("trainer", {})
    except (OSError, ValueError) as exc:
        raise LowdoseError(f"{folder}: unreadable checkpoint: {exc}") from None
    return folder, family, trainer


def finished_run(out_dir: str | Path, max_steps: int, stopped: str | None = None) -> str | None:
    """One line saying that ``out_dir`` holds a finished run that a ``--resume`` to
    ``max_steps`` would not train further, or ``None`` when there is nothing finished there or
    the resume trains on.

    Finished: the latest checkpoint is at ``max_steps`` or beyond (or the family stopped the
    run: ``stopped``, its reason) and the run's final weights and metrics were written after it
    (``config.json`` holds ``metrics`` only then: a run writes it without them at its start).
    A run killed between its last checkpoint and that export is not finished: its resume
    validates and exports.

    Raises:
        LowdoseError: the latest checkpoint's ``trainer_state.json`` is unreadable.

    Example:
        >>> finished_run("no/such/run", 1000) is None
        True
    """
    out = Path(out_dir)
    folder = latest_checkpoint(out)
    if folder is None:
        return None
    try:
        step = int(json.loads((folder / "trainer_state.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LowdoseError(f"{folder}: unreadable checkpoint: {exc}") from None
    if (step < max_steps and not stopped) or _exported_metrics(out) is None:
        return None
    why = (f"stopped early: {stopped}" if stopped else
           f"--steps {max_steps}; a --steps above {step} trains on")
    return f"{out}: already finished at step {step} ({why}); weights {out / 'model.safetensors'}"


def finished_result(out_dir: str | Path, max_steps: int, stopped: str | None = None
                    ) -> TrainResult | None:
    """The :class:`TrainResult` of a run in ``out_dir`` that a ``--resume`` to ``max_steps``
    would not train further (:func:`finished_run`; ``stopped``: why its family stopped it), or
    ``None``. :meth:`Trainer.fit` returns it before training; a caller may ask first, to say
    so before its data work.

    Example:
        >>> finished_result("no/such/run", 1000) is None
        True
    """
    finished = finished_run(out_dir, max_steps, stopped)
    if finished is None:
        return None
    out = Path(out_dir)
    folder = latest_checkpoint(out)
    step = int(json.loads((folder / "trainer_state.json").read_text())["step"])
    return TrainResult(step, out, folder, _exported_metrics(out) or {}, step, stopped, finished)


def _exported_metrics(out_dir: Path) -> dict[str, float] | None:
    """The metrics of a run's final export (``config.json`` + ``model.safetensors``), or
    ``None`` when the run has not ended with one."""
    try:
        summary = json.loads((out_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(summary, dict) and isinstance(summary.get("metrics"), dict)
            and (out_dir / "model.safetensors").is_file()):
        return None
    return summary["metrics"]


def shown_setting(value: Any) -> str:
    """A setting's value as it is typed on the command line (lists comma-separated)."""
    if isinstance(value, list | tuple):
        return ",".join(shown_setting(v) for v in value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def refuse_changed_settings(out_dir: str | Path, saved: dict[str, Any],
                            current: dict[str, Any]) -> None:
    """Refuse a ``--resume`` that changes a setting defining the run's data or model.

    ``saved`` and ``current`` map a setting's name (its option, e.g. ``--dose``, or its preset
    key) to its value in the checkpoint and in the resuming command. A setting the checkpoint
    does not hold (written by an older version) is not compared. Without this a resumed run
    trains on other data than its first steps did, and its config.json records only the new
    value, so the weights' provenance is wrong.

    The message names what to pass to resume: the run's value (the CLI takes an option left
    out on ``--resume`` from the run's ``command.json``, or, for a run started before it was
    recorded, from its default).

    Raises:
        LowdoseError: the first setting whose value differs, with both values and what to
            pass, and the run's other settings that differ (a preset's among them says that a
            --preset was left out).

    Example:
        >>> refuse_changed_settings("runs/u", {"--dose": 0.25}, {"--dose": 0.25, "--seed": 0})
    """
    changed = [(name, _plain(saved[name]), _plain(value)) for name, value in current.items()
               if name in saved and _plain(saved[name]) != _plain(value)]
    if not changed:
        return
    name, before, now = changed[0]
    others = "; ".join(f"{n} {shown_setting(b)} (now {shown_setting(w)})"
                       for n, b, w in changed[1:])
    raise LowdoseError(
        f"{out_dir}: --resume with {name} {shown_setting(now)}, but the run was trained with "
        f"{name} {shown_setting(before)}; {resume_advice(name, before)}, or start a new --out"
        + (f" (the run's other settings that differ: {others})" if others else "")
    )


def resume_advice(name: str, value: Any) -> str:
    """What to pass on ``--resume`` to get the run's ``value`` of the setting ``name`` (an
    option such as ``--model``, a preset key such as ``arch (preset)``, or an argument such as
    ``DATA``), as :func:`refuse_changed_settings` words it.

    Example:
        >>> resume_advice("--model", "gan-circle")
        "pass the run's --model gan-circle"
        >>> resume_advice("--init", None)
        'leave out --init, as the run did'
    """
    if name.endswith(" (preset)"):
        key = name.removesuffix(" (preset)")
        return f"resume with the run's --preset (its {key} is {shown_setting(value)})"
    if not name.startswith("--"):
        return f"give {name} {shown_setting(value)} again"
    if value is None:
        return f"leave out {name}, as the run did"
    if isinstance(value, bool):  # a flag pair (--relative-dose/--calibrated-dose): name the state
        return f"set {name} {shown_setting(value)} again, as the run did"
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        # a repeatable option (--data)
        return "pass the run's " + " ".join(f"{name} {v}" for v in value)
    return f"pass the run's {name} {shown_setting(value)}"


def refuse_changed_resume(out_dir: str | Path,
                          run_settings: Callable[[dict[str, Any]], dict[str, Any]],
                          planned: dict[str, Any], seed: int | None = None
                          ) -> dict[str, Any] | None:
    """Before any data work: refuse to resume ``out_dir``'s latest checkpoint with a
    ``planned`` family config whose ``run_settings`` differ from the checkpoint's
    (:func:`refuse_changed_settings`). ``seed``: the planned trainer seed, compared with the
    checkpoint's where ``run_settings`` hold none.

    Returns:
        The checkpoint's family config, or ``None`` when there is nothing to resume.

    Example:
        >>> refuse_changed_resume("no/such/run", dict, {"dose": 0.25}) is None
        True
    """
    saved = saved_run_config(out_dir)
    if saved is None:  # nothing to resume: a fresh start
        return None
    _, family, trainer = saved
    before, now = run_settings(family), run_settings(planned)
    if seed is not None:
        now.setdefault("--seed", seed)
        if trainer.get("seed") is not None:  # an older checkpoint: its trainer settings hold it
            before.setdefault("--seed", trainer["seed"])
    refuse_changed_settings(out_dir, before, now)
    return family


def _plain(value: Any) -> Any:
    """``value`` as JSON holds it (tuples as lists), so saved and current values compare."""
    return json.loads(json.dumps(value, default=_jsonable))


def default_run_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings defining a run of a family without a ``run_settings`` hook, read from its
    config: the scale and the ``training`` section's pairing (the GAN families).

    Example:
        >>> default_run_settings({"scale": 2, "training": {"paired_fraction": 0.5}})
        {'--scale': 2, '--paired-fraction': 0.5}
    """
    training = config.get("training") or {}
    settings: dict[str, Any] = {}
    if "scale" in config:
        settings["--scale"] = config["scale"]
    for key, name in (("paired_fraction", "--paired-fraction"), ("l1_only", "l1_only (preset)")):
        if key in training:
            settings[name] = training[key]
    return settings


class Trainer:
    """Trains a :class:`TrainingFamily` on a map-style dataset.

    Args:
        family: the model family (networks, optimisers, losses).
        dataset: a ``torch.utils.data.Dataset`` whose items collate into the family's batches.
        config: the loop settings.
        out_dir: where checkpoints, logs and the final weights go.
        val_dataset: optional validation items, evaluated with ``family.validation_step``.
        resume: continue from ``out_dir``'s latest checkpoint (a fresh start if there is none).
        collate_fn: batch collation (default: torch's).

    Example:
        >>> cfg = TrainerConfig(max_steps=100)
        >>> Trainer(family, dataset, cfg, "runs/x").fit().step  # doctest: +SKIP
        100
    """

    def __init__(
        self,
        family: TrainingFamily,
        dataset: torch.utils.data.Dataset,
        config: TrainerConfig,
        out_dir: str | Path,
        val_dataset: torch.utils.data.Dataset | None = None,
        resume: bool = False,
        collate_fn: Any = None,
    ) -> None:
        self.family, self.dataset, self.config = family, dataset, config
        self.val_dataset, self.resume, self.collate_fn = val_dataset, resume, collate_fn
        self.out_dir = Path(out_dir)
        self.env = init_distributed()
        if config.device:
            from lowdose.device import check_device

            self.device = check_device(config.device)
        elif torch.cuda.is_available():
            self.device = torch.device("cuda", self.env.local_rank)
        else:
            self.device = torch.device("cpu")
        if config.num_threads > 0 and self.device.type == "cpu":
            torch.set_num_threads(config.num_threads)
        use_bf16 = config.precision == "bf16" or (
            config.precision == "auto" and self.device.type == "cuda"
        )
        self.autocast_dtype = torch.bfloat16 if use_bf16 else None

    # -------------------------------------------------------------- helpers

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _order(self, optimizers: dict[str, torch.optim.Optimizer]) -> list[str]:
        order = getattr(self.family, "optimizer_order", None)
        return [n for n in order if n in optimizers] if order else list(optimizers)

    def _family_config(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.family.config(), default=_jsonable))

    def _loader(self, start_step: int) -> Iterator[Any]:
        cfg = self.config
        sampler = StepSampler(len(self.dataset), cfg.batch_size, cfg.seed, start_step,
                              self.env.rank, self.env.world_size)
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=cfg.batch_size, sampler=sampler,
            num_workers=cfg.num_workers, collate_fn=self.collate_fn,
            persistent_workers=cfg.num_workers > 0,
        )
        return iter(loader)

    # -------------------------------------------------------------- checkpoints

    def save_checkpoint(self, step: int, optimizers: dict[str, torch.optim.Optimizer],
                        metrics: dict[str, float],
                        running: dict[str, list[tuple[int, float]]] | None = None) -> Path | None:
        """Write a complete checkpoint folder atomically (rank 0) and point ``latest`` at it.

        ``running``: the values logged since the last ``log_every`` step, as ``(step, value)``
        per name, kept in ``trainer_state.json`` so a resume logs the same means as an
        uninterrupted run.
        """
        if not self.env.is_main:
            return None
        from lowdose.io.atomic import atomic_write_text

        root = self.out_dir / CHECKPOINTS
        root.mkdir(parents=True, exist_ok=True)
        name = f"step-{step:08d}"
        tmp = root / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        config = self._write_weights(tmp)
        state: dict[str, Any] = {"optimizers": {n: o.state_dict() for n, o in optimizers.items()}}
        if hasattr(self.family, "state_dict"):
            state["family"] = self.family.state_dict()
        torch.save(state, tmp / "training_state.pt")
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        trainer_state = {
            "step": step, "time": time.time(), "metrics": metrics,
            "running": {k: [list(pair) for pair in v] for k, v in (running or {}).items()},
            "trainer": asdict(self.config), "world_size": self.env.world_size,
        }
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2) + "\n")
        _fsync_files(tmp)
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        atomic_write_text(root / LATEST, name + "\n")
        # prune: keep the newest `keep_checkpoints` complete folders
        done = sorted(p for p in root.glob("step-*") if p.is_dir())
        for old in done[: max(0, len(done) - max(1, self.config.keep_checkpoints))]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _write_weights(self, folder: Path) -> dict[str, Any]:
        """Every module's tensors to ``folder/model.safetensors`` (the family config in its
        metadata); returns that config."""
        from safetensors.torch import save_file

        config = self._family_config()
        tensors = {
            f"{mname}.{k}": v.detach().to("cpu").contiguous()
            for mname, module in self.family.modules.items()
            for k, v in module.state_dict().items()
        }
        save_file(tensors, str(folder / "model.safetensors"),
                  metadata={"lowdose_config": json.dumps(config)})
        return config

    def _summary(self, metrics: dict[str, Any]) -> str:
        """The ``config.json`` of a loadable weights folder (the run folder, ``best``)."""
        final = {"family": self._family_config(), "trainer": asdict(self.config),
                 "metrics": metrics}
        return json.dumps(final, indent=2) + "\n"

    def keep_best(self, step: int, val: dict[str, float]) -> bool:
        """Write the current weights to ``<out>/best`` if ``val`` improves ``best_metric``."""
        name, cfg = self.config.best_metric, self.config
        if not name or not self.env.is_main or name not in val:
            return False
        best = self.out_dir / BEST
        if (best / "config.json").is_file():
            before = json.loads((best / "config.json").read_text())["metrics"][f"val/{name}"]
            if (val[name] <= before) if cfg.best_mode == "max" else (val[name] >= before):
                return False
        tmp = self.out_dir / f".tmp-{BEST}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        self._write_weights(tmp)
        metrics = {"step": step, **{f"val/{k}": v for k, v in val.items()}}
        (tmp / "config.json").write_text(self._summary(metrics))
        _fsync_files(tmp)
        old = self.out_dir / f".old-{BEST}-{os.getpid()}"
        if best.exists():
            os.replace(best, old)
        os.replace(tmp, best)
        shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(self.out_dir)
        return True

    def load_checkpoint(self, folder: Path, optimizers: dict[str, torch.optim.Optimizer]) -> int:
        """Restore modules, optimisers and family state; returns the step.

        A checkpoint written before learning rates came from ``lr_factor`` also holds scheduler
        state; it is not needed (the rate follows from the step) and is ignored.
        """
        from safetensors.torch import load_file

        saved = json.loads((folder / "config.json").read_text())
        current = self._family_config()
        for key in ("model", "family", "arch"):
            if key in saved and key in current and saved[key] != current[key]:
                raise LowdoseError(
                    f"{folder}: --resume: checkpoint {key} {saved[key]!r} differs from this "
                    f"run's {current[key]!r}; use another --out"
                )
        self.check_resume_settings(folder, saved)
        try:
            tensors = load_file(str(folder / "model.safetensors"))
            state = torch.load(folder / "training_state.pt", map_location="cpu",
                               weights_only=True)
        except Exception as exc:
            raise LowdoseError(f"{folder}: unreadable checkpoint: {exc}") from None
        load_module_weights(self.family.modules, tensors, str(folder))
        for n, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][n])
        if "family" in state and hasattr(self.family, "load_state_dict"):
            self.family.load_state_dict(state["family"])
        return int(json.loads((folder / "trainer_state.json").read_text())["step"])

    def run_settings(self, family_config: dict[str, Any], seed: int | None) -> dict[str, Any]:
        """The settings that define a run with ``family_config`` and trainer ``seed``, by name:
        the family's ``run_settings(config)`` hook (else :func:`default_run_settings`) and the
        seed (None: unknown), which draws the data order and every random augmentation."""
        hook = getattr(self.family, "run_settings", None)
        settings = dict(hook(family_config) if hook is not None
                        else default_run_settings(family_config))
        if seed is not None:
            settings.setdefault("--seed", seed)
        return settings

    def check_resume_settings(self, folder: Path, saved: dict[str, Any]) -> None:
        """Refuse to resume the checkpoint ``folder`` (its family config ``saved``) with other
        settings of the run's data or model (:func:`refuse_changed_settings`); the run length,
        threads, device and logging may change."""
        state = json.loads((folder / "trainer_state.json").read_text())
        before = self.run_settings(saved, state.get("trainer", {}).get("seed"))
        now = self.run_settings(self._family_config(), self.config.seed)
        refuse_changed_settings(self.out_dir, before, now)

    # -------------------------------------------------------------- the loop

    def _resumed_logs(self, folder: Path, start: int
                      ) -> tuple[dict[str, list[tuple[int, float]]], dict[str, float]]:
        """The running values and last logged metrics a resume from checkpoint ``folder`` (at
        step ``start``) continues with, so its log rows match an uninterrupted run's: the saved
        running values after the last ``log_every`` step before ``start``. A checkpoint from
        before they were saved (or one whose run logged at another ``log_every`` and so kept
        fewer steps) holds fewer: the first row then averages fewer steps."""
        state = json.loads((folder / "trainer_state.json").read_text())
        since = start - start % self.config.log_every
        running = {k: [(int(s), float(x)) for s, x in v if since < int(s) <= start]
                   for k, v in (state.get("running") or {}).items()}
        return {k: v for k, v in running.items() if v}, dict(state.get("metrics") or {})

    def _validate(self) -> dict[str, float]:
        if self.val_dataset is None or len(self.val_dataset) == 0:
            return {}
        loader = torch.utils.data.DataLoader(
            self.val_dataset, batch_size=self.config.batch_size, collate_fn=self.collate_fn
        )
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for module in self.family.modules.values():
            module.eval()
        with torch.no_grad(), self._autocast():
            for batch in loader:
                for k, v in self.family.validation_step(
                    _to_device(batch, self.device, self.config.channels_last)
                ).items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                    counts[k] = counts.get(k, 0) + 1
        for module in self.family.modules.values():
            module.train()
        return {k: sums[k] / counts[k] for k in sums}

    def fit(self) -> TrainResult:
        """Train to ``max_steps`` (resuming when asked) and return where it ended."""
        cfg, env = self.config, self.env
        root = self.out_dir / CHECKPOINTS
        existing = latest_checkpoint(self.out_dir)
        if existing is not None and not self.resume:
            raise LowdoseError(
                f"{self.out_dir}: holds checkpoints already; pass --resume to continue, "
                "or choose another --out"
            )
        if env.is_main and root.is_dir():
            for stale in root.glob(".tmp-*"):  # a checkpoint interrupted mid-write
                shutil.rmtree(stale, ignore_errors=True)

        torch.manual_seed(cfg.seed)
        for module in self.family.modules.values():
            module.to(self.device)
            if cfg.channels_last:
                module.to(memory_format=torch.channels_last)
            module.train()
        optimizers = self.family.configure_optimizers()
        # The configured rates, before a checkpoint's saved (scheduled) rates replace them.
        base_lrs = {n: [g["lr"] for g in opt.param_groups] for n, opt in optimizers.items()}
        start, resumed_from = 0, None
        running: dict[str, list[tuple[int, float]]] = {}  # (step, value) since the last log step
        last_metrics: dict[str, float] = {}
        if existing is not None:
            start = resumed_from = self.load_checkpoint(existing, optimizers)
            running, last_metrics = self._resumed_logs(existing, start)
        if env.world_size > 1:
            _broadcast_modules(self.family.modules)
        order = self._order(optimizers)
        params = {n: [p for g in optimizers[n].param_groups for p in g["params"]] for n in order}
        should_stop = getattr(self.family, "should_stop", None)

        def stop_reason(at: int) -> str | None:
            answer = should_stop(at) if should_stop is not None else None
            return _agree_on_stop(str(answer) if answer else None, env)

        stopped = stop_reason(start) if resumed_from is not None else None
        done = (finished_result(self.out_dir, cfg.max_steps, stopped)
                if resumed_from is not None else None)
        if done is not None:  # nothing to train: log, validate and write nothing again
            return done

        self.out_dir.mkdir(parents=True, exist_ok=True)
        # TensorBoard hides the points a killed run logged after its last checkpoint (steps
        # above `start`, as the CSV drops them), so the resumed run's points are the only ones.
        log = _Log(self.out_dir, cfg.tensorboard, env.is_main, purge_step=start + 1)
        log.truncate_after(start)  # rows a killed run logged after its last checkpoint
        if env.is_main:
            (self.out_dir / "config.json").write_text(json.dumps(
                {"family": self._family_config(), "trainer": asdict(cfg)}, indent=2) + "\n")
        batches = self._loader(start)
        bar = None
        if env.is_main and cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_steps, initial=start, desc="train", unit="step",
                       dynamic_ncols=True)
        checkpoint = existing
        step = start
        on_step_end = getattr(self.family, "on_step_end", None)
        try:
            while step < cfg.max_steps and stopped is None:
                batch = _to_device(next(batches), self.device, cfg.channels_last)
                torch.manual_seed((cfg.seed * 1_000_003 + step) * 4099 + env.rank)
                for name in order:
                    opt = optimizers[name]
                    factor = self.family.lr_factor(name, step)
                    for group, base_lr in zip(opt.param_groups, base_lrs[name], strict=True):
                        group["lr"] = base_lr * factor
                    opt.zero_grad(set_to_none=True)
                    with self._autocast():
                        out = self.family.training_step(batch, name, step)
                    if not out or "loss" not in out:
                        continue  # the family skips this optimiser on this step
                    loss = out["loss"]
                    if not torch.isfinite(loss.detach()).all():
                        raise LowdoseError(
                            f"training: non-finite {name} loss at step {step}; lower the "
                            "learning rate or check the data"
                        )
                    loss.backward()
                    if env.world_size > 1:
                        _average_gradients(params[name], env.world_size)
                    if cfg.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(params[name], cfg.grad_clip)
                    opt.step()
                    prefix = f"{name}/" if len(order) > 1 else ""
                    for k, v in out.items():
                        running.setdefault(prefix + k, []).append(
                            (step + 1, float(v.detach().float())))
                if on_step_end is not None:
                    on_step_end(step)
                step += 1
                if bar is not None:
                    bar.update(1)
                if step % cfg.log_every == 0 or step == cfg.max_steps:
                    last_metrics = {k: sum(x for _, x in v) / len(v) for k, v in running.items()}
                    lrs = {f"lr/{n}": optimizers[n].param_groups[0]["lr"] for n in order}
                    log.write(step, "train", {**last_metrics, **lrs})
                    if bar is not None and "loss" in last_metrics:
                        bar.set_postfix(loss=f"{last_metrics['loss']:.3g}")
                    if step % cfg.log_every == 0:
                        # Kept at a last step off the grid: a longer resume's next row averages
                        # the same steps as a longer uninterrupted run's.
                        running = {}
                if cfg.val_every and step % cfg.val_every == 0 and step < cfg.max_steps:
                    val = self._validate()
                    log.write(step, "val", val)
                    self.keep_best(step, val)
                stopped = stop_reason(step)
                if step % cfg.checkpoint_every == 0 or step == cfg.max_steps or stopped:
                    checkpoint = self.save_checkpoint(step, optimizers, last_metrics, running)
                    _barrier(env)
        finally:
            if bar is not None:
                bar.close()
        val = self._validate()
        if val:
            log.write(step, "val", val)
            self.keep_best(step, val)
            last_metrics.update({f"val/{k}": v for k, v in val.items()})
        if env.is_main and checkpoint is not None:
            self._export(checkpoint, last_metrics)
        log.close()
        return TrainResult(step, self.out_dir, checkpoint, last_metrics, resumed_from, stopped)

    def _export(self, checkpoint: Path, metrics: dict[str, float]) -> None:
        """Copy the final weights and config to ``<out>/model.safetensors`` + ``config.json``."""
        from lowdose.io.atomic import atomic_path, atomic_write_text

        with atomic_path(self.out_dir / "model.safetensors") as tmp:
            shutil.copyfile(checkpoint / "model.safetensors", tmp)
        atomic_write_text(self.out_dir / "config.json", self._summary(metrics))


class _Log:
    """CSV (long format: step, split, name, value) and optional TensorBoard, rank 0 only."""

    def __init__(self, out_dir: Path, tensorboard: bool, active: bool,
                 purge_step: int | None = None) -> None:
        """``purge_step``: TensorBoard hides the points of earlier event files at this step and
        after (``SummaryWriter``'s ``purge_step``), so a resumed run's points replace them."""
        self.active = active
        self.path = out_dir / "metrics.csv"
        self.tb = None
        if not active:
            return
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=purge_step)
            except ImportError:  # tensorboard is a declared dependency; tolerate its absence
                self.tb = None

    def truncate_after(self, step: int) -> None:
        """Drop CSV rows past ``step`` (atomically), so a resumed run logs each step once."""
        if not self.active or not self.path.is_file():
            return
        from lowdose.io.atomic import atomic_write_text

        lines = self.path.read_text().splitlines(keepends=True)
        kept = lines[:1] + [r for r in lines[1:] if r.split(",", 1)[0].isdigit()
                            and int(r.split(",", 1)[0]) <= step]
        if len(kept) != len(lines):
            atomic_write_text(self.path, "".join(kept))

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self.active or not values:
            return
        new = not self.path.is_file()
        with open(self.path, "a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(["step", "split", "name", "value", "time"])
            now = f"{time.time():.1f}"
            for k, v in values.items():
                if isinstance(v, float) and math.isnan(v):
                    continue
                writer.writerow([step, split, k, f"{v:.6g}", now])
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
