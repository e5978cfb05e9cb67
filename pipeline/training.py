"""The ``train`` command's engine: RAFT-family training with exact resume.

Layout of a run folder ``OUT``::

    OUT/config.yaml              the resolved configuration
    OUT/state.pt                 latest resumable state (model, optimizer, scheduler, step)
    OUT/checkpoints/step_NNNNNN.pth   weights in the official layout ("module." prefix)
    OUT/model.pth                final weights (official layout), written when training ends
    OUT/log.jsonl                one JSON record per log interval and per validation
    OUT/curves.png               training loss and validation EPE against steps
    OUT/tensorboard/             when TensorBoard is installed

Exact resume: every sample is a pure function of ``(seed, index)`` and step ``s`` trains on
indices ``[s * B, (s + 1) * B)``, the model has no random layers, and ``state.pt`` holds model,
optimizer, scheduler and step; a resumed run therefore continues with the same numbers it
would have produced without the interruption (up to the nondeterminism of parallel kernels).
SIGINT / SIGTERM save the state before the process exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import pickle
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from models import create_model
from models.atomic_files import remove_temporaries_in
from models.losses import flow_metrics, sequence_loss
from models.raft import RAFT
from stages.training.datasets import SyntheticPairs
from stages.training.readers import build_reader_dataset
from stages.training.textures import TexturePool, find_media, load_media_frames
from stages.training.validation import PHOTO, build_validation_set, resized

from .allocator import set_large_block_reuse
from .config import ConfigError, build_config, config_hash, config_to_dict, dump_config
from .devices import cpu_has_native_bf16, resolve_device
from .progress import ShowProgress, progress_bar
from .run_start import key_differences
from .train_config import TrainConfig
from .training_log import RunLog
from .training_weights import save_torch, save_weights

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
#: The tensors of a training sample (see :mod:`stages.training.datasets`).
TRAINING_KEYS = ("image1", "image2", "flow", "valid")
FINAL_WEIGHTS = "model.pth"
#: Settings that decide when a run logs and saves, or how many processes and threads compute
#: it, not what it computes: ``--resume`` accepts new values for them (more frequent
#: checkpoints for a run that keeps being stopped, another machine's core count).
BOOKKEEPING_KEYS = ("log_every", "checkpoint_every", "keep_checkpoints", "workers", "threads")


class TrainingError(RuntimeError):
    """Training cannot start or continue; the message says why."""


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or interrupted) training run produced."""

    step: int
    weights: Path | None
    interrupted: bool
    last_metrics: dict[str, float]
    #: the signal (SIGINT / SIGTERM) that stopped the run, None otherwise
    signal: int | None = None


def resolve_train_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for training; ``auto`` uses bf16 where the hardware computes it natively
    (CPUs with AVX512-BF16 / AMX, CUDA with bf16), fp16 on older CUDA GPUs, float32 otherwise."""
    if name == "fp32":
        return None
    if name == "bf16":
        if device.type == "cpu" and cpu_has_native_bf16() is False:
            raise TrainingError(
                "precision bf16 on this CPU would be emulated (no avx512_bf16 / amx_bf16): "
                "tens of times slower than fp32; use precision fp32 or auto"
            )
        return torch.bfloat16
    if name == "fp16":
        if device.type != "cuda":
            raise TrainingError("precision fp16 needs a CUDA device; use bf16, fp32 or auto")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


class MixedDataset(Dataset):
    """Samples from several data sets by weight; sample ``i`` is a pure function of
    ``(seed, i)`` (which source, which item of it, and its augmentation).

    Synthetic sources are asked for sample ``i`` itself; reader data sets (finite) for a
    random item through ``sample(item, rng)`` with a generator drawn from ``(seed, i)``, so
    that an item seen twice is augmented differently each time.
    """

    def __init__(self, sources: list[tuple[Dataset, float]], *, seed: int, length: int) -> None:
        self.sources = [s for s, _ in sources]
        weights = np.array([w for _, w in sources], np.float64)
        self.probabilities = weights / weights.sum()
        self.seed = seed
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if len(self.sources) == 1 and isinstance(self.sources[0], SyntheticPairs):
            sample = self.sources[0][index]
        else:
            rng = np.random.default_rng([self.seed, index, 7])
            source = self.sources[int(rng.choice(len(self.sources), p=self.probabilities))]
            if isinstance(source, SyntheticPairs):
                sample = source[index]
            else:
                sample = source.sample(int(rng.integers(len(source))), rng)
        # Only what every source has, so that a batch can mix them.
        return {key: sample[key] for key in TRAINING_KEYS}


def _check_media_paths(config: TrainConfig) -> None:
    """Raises :class:`TrainingError` naming every texture path (training and validation) that
    does not exist; relative paths are read from the current folder."""
    paths = [*config.textures.paths, *config.validation.textures]
    missing = [path for path in paths if not Path(path).exists()]
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        raise TrainingError(
            f"texture paths not found: {shown} (relative paths are read from "
            f"the current folder, {Path.cwd()}; the presets' ../shared/... need the "
            "repository root)"
        )


def _load_media(paths: tuple[str, ...], frames_per_video: int) -> list[np.ndarray]:
    if not paths:
        return []
    files = find_media(paths)
    if not files:
        raise TrainingError(f"no images or videos found under {', '.join(paths)}")
    frames = load_media_frames(files, frames_per_video=frames_per_video)
    if not frames:
        raise TrainingError(f"none of the {len(files)} media files under {paths} could be read")
    return frames


def build_training_data(config: TrainConfig) -> Dataset:
    """The mixture of :attr:`TrainConfig.data` as one index-addressable data set."""
    length = config.steps * config.batch_size
    sources: list[tuple[Dataset, float]] = []
    media = None
    for source in config.data:
        if source.kind == "synthetic":
            if media is None:
                media = _load_media(config.textures.paths, config.textures.frames_per_video)
            photo = source.preset == "photo"
            if photo and not media:
                raise TrainingError("data preset 'photo' needs media: set textures.paths")
            pool = TexturePool(
                media,
                media_fraction=1.0 if photo else config.textures.media_fraction,
                size=config.textures.procedural_size,
                seed=config.seed,
            )
            augment = config.augmentation(source)
            generator = resized(PHOTO, *config.crop) if photo else config.generator()
            dataset: Dataset = SyntheticPairs(
                generator,
                pool,
                seed=config.seed,
                length=length,
                augment_config=augment.__class__(**{**augment.__dict__, "spatial": False}),
            )
        else:
            try:
                dataset = build_reader_dataset(
                    source, config.augmentation(source), seed=config.seed
                )
            except (OSError, ValueError) as exc:  # a data set that is missing or malformed
                raise TrainingError(f"data set {source.kind} at {source.root}: {exc}") from None
        sources.append((dataset, source.weight))
    return MixedDataset(sources, seed=config.seed, length=length)


class _IndexRange(torch.utils.data.Sampler[int]):
    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def freeze_batchnorm(model: torch.nn.Module) -> None:
    """BatchNorm layers in eval mode (running statistics used, not updated): ``freeze_bn``."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()


def _make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    if config.optim.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    # The official schedule: OneCycleLR over steps + 100, linear, no momentum cycling.
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.optim.lr,
        total_steps=config.steps + 100,
        pct_start=config.optim.pct_start,
        cycle_momentum=False,
        anneal_strategy="linear",
    )


def _collate_validation(pairs, device) -> list[tuple[torch.Tensor, ...]]:
    out = []
    for pair in pairs:
        image1 = torch.from_numpy(pair.image1).permute(2, 0, 1)[None].float().to(device)
        image2 = torch.from_numpy(pair.image2).permute(2, 0, 1)[None].float().to(device)
        flow = torch.from_numpy(pair.flow).permute(2, 0, 1)[None].to(device)
        out.append((image1, image2, flow))
    return out


@torch.inference_mode()
def validate(model: RAFT, sets: dict[str, list], *, iters: int) -> dict[str, float]:
    """Mean EPE (px) and 1/3/5 px rates of each validation set (float32; ``estimate_flow``
    runs in eval mode and leaves each module's mode as it was, frozen BatchNorm included)."""
    model.set_fast_kernels(True)
    results: dict[str, float] = {}
    try:
        for name, pairs in sets.items():
            epes, below1 = [], []
            for image1, image2, flow_gt in pairs:
                flow = model.estimate_flow(image1, image2, iters=iters).flow
                valid = torch.ones_like(flow_gt[:, 0])
                metrics = flow_metrics(flow, flow_gt, valid)
                epes.append(metrics["epe"])
                below1.append(metrics["1px"])
            results[f"val/{name}/epe"] = float(np.mean(epes))
            results[f"val/{name}/1px"] = float(np.mean(below1))
    finally:
        model.set_fast_kernels(False)
    return results


class Trainer:
    """Trains one model as :class:`TrainConfig` says, into a run folder."""

    def __init__(self, config: TrainConfig, output: Path, *, resume: bool = False) -> None:
        self.config = config
        self.output = Path(output)
        self.resume = resume
        self._stop_signal: int | None = None

    # ------------------------------------------------------------------ set-up
    def _same_config(self, state: dict[str, Any]) -> bool:
        """Whether the run in ``state`` was made with this configuration.

        The saved configuration is read again with today's defaults first, so a key added to
        :class:`TrainConfig` after the run started (with a default that keeps the old
        behaviour) does not block ``--resume``; nor does a change of :data:`BOOKKEEPING_KEYS`.
        """
        if state.get("config_hash") == config_hash(self.config):
            return True
        saved = state.get("config")
        if not isinstance(saved, dict):
            return False
        try:
            reread = build_config(TrainConfig, saved)
        except ConfigError:
            return False
        current = {key: getattr(self.config, key) for key in BOOKKEEPING_KEYS}
        return config_hash(dataclasses.replace(reread, **current)) == config_hash(self.config)

    def _check_output(self) -> dict[str, Any] | None:
        state_path = self.output / STATE_FILE
        if self.resume:
            if not state_path.exists():
                raise TrainingError(
                    f"--resume: no {STATE_FILE} in {self.output} (the run saved no state: run "
                    "the same command without --resume to start it)"
                )
            try:  # tensors, numbers, strings: nothing in a state file needs code to load
                state = torch.load(state_path, map_location="cpu", weights_only=True)
            except (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError) as exc:
                raise TrainingError(
                    f"--resume: {state_path} cannot be read ({str(exc).splitlines()[0]}); "
                    f"the weights in {self.output / 'checkpoints'} can start a new run with "
                    "--init-checkpoint (optimizer and schedule state are lost)"
                ) from None
            if not self._same_config(state):
                now = config_to_dict(self.config)
                saved = {k: v for k, v in state.get("config", {}).items() if k in now}
                changed = [
                    change
                    for change in key_differences(saved, now)
                    if change.split(" ", 1)[0] not in BOOKKEEPING_KEYS
                ]
                raise TrainingError(
                    f"--resume: the configuration differs from the run in {self.output}: "
                    f"{'; '.join(changed) or 'unknown'}; resume without --config / --set (the "
                    f"run's {self.output / 'config.yaml'} is used) or start a new run folder"
                )
            return state
        if state_path.exists() or (self.output / FINAL_WEIGHTS).exists():
            raise TrainingError(
                f"{self.output} already holds a training run; pass --resume to continue it "
                "or choose another output folder"
            )
        return None

    def _build_model(self, device: torch.device, *, resuming: bool = False) -> RAFT:
        # A resumed run's weights come from its state.pt (loaded below): the init checkpoint
        # may have been moved, rotated out of an earlier run's checkpoints/ or need a download.
        checkpoint = self.output / STATE_FILE if resuming else self.config.init_checkpoint
        model = create_model(self.config.model, checkpoint=checkpoint, device=device)
        model.set_fast_kernels(False)
        model.train()
        if self.config.freeze_bn:
            freeze_batchnorm(model)
        return model

    def _validation_sets(self, device: torch.device) -> dict[str, list]:
        val = self.config.validation
        media = _load_media(val.textures, self.config.textures.frames_per_video)
        sets = {}
        for name in val.sets:
            label, pairs = build_validation_set(name, pairs=val.pairs, seed=val.seed,
                                                media_frames=media)  # fmt: skip
            sets[label] = _collate_validation(pairs, device)
        return sets

    def _install_signal_handlers(self) -> dict[int, Any]:
        def handler(signum, _frame):
            if self._stop_signal is not None:  # a second one: stop at once, no further save
                raise KeyboardInterrupt
            self._stop_signal = signum
            logger.warning(
                "signal %d: saving the training state after this step (again: stop at once, "
                "keeping the last saved state)",
                signum,
            )

        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                previous[signum] = signal.signal(signum, handler)
        return previous

    # ------------------------------------------------------------------ state
    def _save_state(self, model, optimizer, scheduler, scaler, step: int) -> None:
        state = {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),  # fp16's loss scale ({} when disabled)
            "config": config_to_dict(self.config),
            "config_hash": config_hash(self.config),
            "torch_rng": torch.get_rng_state(),
        }
        save_torch(state, self.output / STATE_FILE)

    def _save_checkpoint(self, model, step: int) -> Path:
        folder = self.output / "checkpoints"
        folder.mkdir(exist_ok=True)
        path = folder / f"step_{step:06d}.pth"
        save_weights(model, path)
        # by step, not by name: step_1000000.pth sorts before step_999750.pth
        kept = sorted(
            (p for p in folder.glob("step_*.pth") if p.stem[5:].isdigit()),
            key=lambda p: int(p.stem[5:]),
        )
        for old in kept[: -self.config.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path

    # ------------------------------------------------------------------ loop
    def run(self, *, stop_after: int | None = None, progress: ShowProgress = None) -> TrainResult:
        """Trains until ``config.steps`` (or ``stop_after`` more steps, for tests and pieces),
        with ``config.threads`` PyTorch threads; the caller's thread count is restored after.
        ``progress``: the step bar on stderr (see :mod:`pipeline.progress`)."""
        threads = torch.get_num_threads()
        if self.config.threads is not None:
            torch.set_num_threads(self.config.threads)
        try:
            return self._run(stop_after, progress)
        finally:
            torch.set_num_threads(threads)

    def _run(self, stop_after: int | None, progress: ShowProgress) -> TrainResult:
        config = self.config
        saved = self._check_output()
        if saved is not None:
            # temporaries of saves a killed run did not finish (a state.pt's is as large as it)
            for folder in (self.output, self.output / "checkpoints"):
                remove_temporaries_in(folder)
        try:
            device = resolve_device(config.device)
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        # Every step allocates the same large activations; reuse them instead of page-faulting
        # fresh mappings (1.59 vs 2.21 s per step measured, see pipeline.allocator).
        set_large_block_reuse(True)
        autocast = resolve_train_precision(config.precision, device)
        _check_media_paths(config)

        torch.manual_seed(config.seed)  # the initial weights are part of what the seed fixes
        model = self._build_model(device, resuming=saved is not None)
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=config.optim.lr,
            weight_decay=config.optim.weight_decay,
            eps=config.optim.epsilon,
        )
        scheduler = _make_scheduler(optimizer, config)
        scaler = torch.amp.GradScaler("cuda", enabled=autocast is torch.float16)
        step = 0
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            if saved.get("scaler"):
                scaler.load_state_dict(saved["scaler"])
            torch.set_rng_state(saved["torch_rng"])
            step = int(saved["step"])
            logger.info("resuming %s at step %d", self.output, step)
        if step >= config.steps:
            logger.info("training already finished at step %d", step)
            return self._finish(model, step, interrupted=False, metrics={})

        data = build_training_data(config)
        stop = config.steps if stop_after is None else min(config.steps, step + stop_after)
        loader = DataLoader(
            data,
            batch_size=config.batch_size,
            sampler=_IndexRange(step * config.batch_size, stop * config.batch_size),
            num_workers=config.workers,
            persistent_workers=False,
            prefetch_factor=4 if config.workers else None,
            drop_last=True,
        )
        val_sets = self._validation_sets(device)
        # nothing is written before the model, its data and its validation sets are ready: a
        # run that cannot start leaves no folder behind
        self.output.mkdir(parents=True, exist_ok=True)
        dump_config(config, self.output / "config.yaml")
        log = RunLog(self.output, from_step=step)
        logger.info(
            "training %s: steps %d-%d of %d, batch %d, crop %s, precision %s, device %s, %d threads",
            config.model, step, stop, config.steps, config.batch_size, config.crop,
            "fp32" if autocast is None else str(autocast).removeprefix("torch."), device,
            torch.get_num_threads(),
        )  # fmt: skip
        previous_handlers = self._install_signal_handlers()
        window: list[dict[str, float]] = []
        last: dict[str, float] = {}
        started, window_start = time.perf_counter(), time.perf_counter()
        interrupted = False
        try:
            bar = progress_bar(
                show=progress,
                total=config.steps,
                initial=step,
                desc="train",
                unit="step",
                dynamic_ncols=True,
            )
            for batch in loader:
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                predictions = model.flow_predictions(
                    batch["image1"], batch["image2"], iters=config.iters, autocast=autocast,
                    convex_every_iteration=config.convex_every_iteration,
                )  # fmt: skip
                loss = sequence_loss(predictions, batch["flow"], batch["valid"],
                                     gamma=config.gamma, max_flow=config.max_flow)  # fmt: skip
                if not torch.isfinite(loss):
                    raise TrainingError(f"loss became {float(loss)} at step {step + 1}")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                metrics = flow_metrics(predictions[-1].detach(), batch["flow"], batch["valid"],
                                       max_flow=config.max_flow)  # fmt: skip
                metrics["loss"] = float(loss.detach())
                window.append(metrics)
                bar.update(1)
                if step % config.log_every == 0 or step == stop:
                    elapsed = time.perf_counter() - window_start
                    last = {k: _finite_mean([m[k] for m in window]) for k in window[0]}
                    record = {"step": step, **last, "lr": scheduler.get_last_lr()[0],
                              "pairs_per_s": len(window) * config.batch_size / max(elapsed, 1e-9),
                              "time_s": time.perf_counter() - started}  # fmt: skip
                    log.write(record)
                    bar.set_postfix(loss=f"{last['loss']:.3f}", epe=f"{last['epe']:.2f}")
                    window, window_start = [], time.perf_counter()
                validation_due = step % config.validation.every == 0 or step == config.steps
                if validation_due and self._stop_signal is None:  # stopping: save first
                    val = validate(model, val_sets, iters=config.validation.iters)
                    log.write({"step": step, **val})
                    log.plot()
                    last.update(val)
                    logger.info("step %d: %s", step,
                                ", ".join(f"{k} {v:.3f}" for k, v in val.items()))  # fmt: skip
                    window_start = time.perf_counter()  # throughput excludes validation
                if step % config.checkpoint_every == 0 or step == stop:
                    self._save_state(model, optimizer, scheduler, scaler, step)
                    self._save_checkpoint(model, step)
                if self._stop_signal is not None:
                    self._save_state(model, optimizer, scheduler, scaler, step)
                    interrupted = True
                    break
            bar.close()
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
        if interrupted or step < config.steps:
            return TrainResult(step, None, interrupted, last, self._stop_signal)
        return self._finish(model, step, interrupted=False, metrics=last)

    def _finish(self, model, step: int, *, interrupted: bool, metrics) -> TrainResult:
        path = self.output / FINAL_WEIGHTS
        save_weights(model, path)
        RunLog(self.output).plot()
        return TrainResult(step, path, interrupted, metrics)


def _finite_mean(values: list[float]) -> float:
    """Mean of the finite values (a batch without valid ground truth, a sparse crop that missed
    every KITTI point, has no EPE), NaN when there is none."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def default_threads() -> int:
    """Intra-op threads for training: all CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
