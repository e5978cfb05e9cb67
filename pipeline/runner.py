"""Running the stages over videos: order, timing, progress, error capture, metadata.

A video's output folder is complete only when its ``meta.json`` exists with
``"status": "ok"``: it is written last, atomically, after every other output was closed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
import traceback
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import torch
from tqdm import tqdm

from models.kernel_choice import KERNELS
from stages.clip_features import ClipFeatureStage
from stages.decode import DecodeError, iter_chunks, open_video
from stages.decoding.frames_folder import list_images
from stages.devices import cpu_info, precision_name
from stages.flow import FlowStage
from stages.warp_stage import WarpStage
from stages.writers import FlowWriters

from .allocator import set_large_block_reuse
from .config import RunConfig, config_to_dict
from .json_files import write_json
from .kernel_cache import load_kernel_choices, save_kernel_choices
from .logs import VERBOSE, quiet_libraries
from .manifest import Outcome
from .model_choice import ModelChoice, choose_model
from .overlap import OutputStages, Prefetcher
from .progress import ShowProgress, progress_bar
from .run_start import Estimator, check_loaded_checkpoint, results_hash, results_key

logger = logging.getLogger(__name__)


@dataclass
class VideoResult(Outcome):
    """What happened to one input (``ok`` unless said otherwise), and the summary figures of
    its outputs."""

    status: str = "ok"
    summary: dict[str, dict] = field(default_factory=dict)


@dataclass
class FlowSession:
    """The loaded flow stage and what the run metadata records about it."""

    stage: FlowStage
    estimator: Estimator
    device: str
    precision: str

    @property
    def choice(self) -> ModelChoice:
        return self.estimator.choice


def build_flow_session(config: RunConfig, estimator: Estimator | None = None) -> FlowSession:
    """Loads the model once and returns the ready stage.

    ``estimator``: the one the run resolved (:func:`pipeline.run_start.resolve_estimator`);
    the session uses exactly it and raises :class:`models.CheckpointError` when the checkpoint
    file found here hashes differently. Without it, ``auto`` is resolved here. The stage gets
    the ``flow`` section with the model resolved, and backward flow when the warp stage's
    occlusion test needs it.
    """
    quiet_libraries()  # also in worker processes, which configure their own logging
    load_kernel_choices()
    flow = config.flow
    choice = estimator.choice if estimator is not None else choose_model(flow)
    resolved = dataclasses.replace(
        flow,
        model=choice.model,
        checkpoint=choice.checkpoint,
        backward=flow.backward or (config.warp.enabled and config.warp.occlusion),
    )
    stage = FlowStage(resolved, keep_features=config.features.enabled)
    stage.setup()
    device = stage.device
    info = getattr(stage.network, "checkpoint_info", None)
    if estimator is None:
        sha256 = info.sha256 if info is not None else None
        estimator = Estimator(choice.model, choice.checkpoint, sha256, choice.notice, device.type)
    else:
        check_loaded_checkpoint(estimator, info)
    return FlowSession(stage, estimator, str(device), precision_name(stage.autocast))


def make_video_stages(config: RunConfig, out_dir: Path, video_id: str, fps: float) -> list:
    """The per-video stages that follow the flow stage, in order (writers first)."""
    stages: list = [
        FlowWriters(
            out_dir, config.output, fps, write_backward=config.flow.backward, gap=config.flow.gap
        )
    ]
    if config.features.enabled:
        stages.append(ClipFeatureStage(out_dir, video_id, config.features))
    if config.warp.enabled:
        stages.append(WarpStage(out_dir, config.warp, fps))
    return stages


def advance(bar: tqdm, frames: int) -> None:
    """Moves a frame bar on; a total that proves too small (a header that undercounts, a
    variable frame rate) grows with the count instead of running past 100 %."""
    if bar.total is not None and bar.n + frames > bar.total:
        bar.total = bar.n + frames
    bar.update(frames)


def complete(bar: tqdm) -> None:
    """Ends a frame bar at 100 % whatever the estimate was (fewer frames than announced) and
    shows it (a fast bar may not have refreshed since its start), unless it is a bar whose
    ``delay`` has not passed yet (in a log, see :mod:`pipeline.progress`)."""
    if bar.total != bar.n:
        bar.total = bar.n
    if not bar.disable and bar.format_dict["elapsed"] >= bar.delay:
        bar.refresh()


def _timed(iterator: Iterator, seconds: dict[str, float], key: str) -> Iterator:
    while True:
        start = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            return
        finally:
            seconds[key] += time.perf_counter() - start
        yield item


def process_video(
    path: Path,
    out_dir: Path,
    video_id: str,
    config: RunConfig,
    session: FlowSession,
    *,
    progress: ShowProgress = None,
) -> VideoResult:
    """Decodes one video, estimates flow chunk by chunk, writes every output, then meta.json.

    Never raises for a bad video: the error is recorded on the returned result.
    """
    result = VideoResult(path=str(path), video_id=video_id)
    seconds: dict[str, float] = defaultdict(float)
    stages: list = []
    started = time.perf_counter()
    try:
        fingerprint = input_fingerprint(path)  # before decoding: what the outputs come from
        with open_video(path, config.decode) as reader:
            info = reader.info
            if session.device == "cpu":  # see pipeline.allocator
                set_large_block_reuse(
                    info.width * info.height <= config.flow.on_demand_above_pixels
                )
            fps = config.decode.selected_fps(info.fps)  # the previews' frame rate
            stages = make_video_stages(config, out_dir, video_id, fps)
            writers = stages[0]
            for stage in stages:
                stage.setup()
            chunks = iter_chunks(
                reader, video_id, config.decode.chunk_size, overlap=config.flow.gap
            )
            bar = progress_bar(
                show=progress,
                detail=True,
                total=reader.expected_frames(),
                desc=video_id,
                unit="frame",
                leave=False,
            )

            prefetch = Prefetcher(_timed(chunks, seconds, "decode"), depth=1)
            outputs = OutputStages(
                stages, seconds, lambda chunk: advance(bar, chunk.num_frames - chunk.overlap)
            )
            try:
                with bar:
                    for chunk in prefetch:
                        tick = time.perf_counter()
                        session.stage.process(chunk)
                        seconds[session.stage.name] += time.perf_counter() - tick
                        outputs.submit(chunk)
                    outputs.close()
                    complete(bar)
            except BaseException:
                outputs.cancel()
                raise
            finally:
                prefetch.close()
            result.warnings.extend(reader.warnings)
        result.frames, result.pairs = writers.num_frames, writers.num_pairs
        if writers.num_pairs == 0:
            raise DecodeError(
                str(path), f"only {writers.num_frames} frame(s) decoded: flow needs at least "
                f"{config.flow.gap + 1}",
            )  # fmt: skip
        for stage in stages:
            tick = time.perf_counter()
            result.outputs.update(stage.finish())
            seconds[stage.name] += time.perf_counter() - tick
            if getattr(stage, "summary", None):
                result.summary[stage.name] = stage.summary
        result.seconds = {k: round(v, 4) for k, v in seconds.items()}
        result.seconds["total"] = round(time.perf_counter() - started, 4)
        save_kernel_choices()
        _write_meta(out_dir, result, config, session, info, fingerprint)
        if result.warnings:
            logger.warning("%s: %s", path, "; ".join(result.warnings))
        logger.log(
            VERBOSE,
            "%s: %d frames, %d pairs in %.1f s (%s)",
            video_id,
            result.frames,
            result.pairs,
            result.seconds["total"],
            ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items() if k != "total"),
        )
    except Exception as exc:  # one video's failure must not stop the batch
        for stage in stages:
            try:
                stage.teardown()
            except Exception as cleanup:  # a folder made read-only: report the first error
                logger.debug("%s: teardown of %s failed: %s", path, stage.name, cleanup)
        result.status = "failed"
        result.error_type = type(exc).__name__
        result.error = str(exc) or repr(exc)
        if isinstance(exc, OSError) and exc.filename is None:
            result.error += f" (while writing to {out_dir})"  # e.g. ENOSPC from a library
        logger.error("%s failed: %s: %s", path, result.error_type, result.error)
        logger.debug("traceback for %s:\n%s", path, traceback.format_exc())
    return result


def input_fingerprint(path: str | Path) -> dict[str, int]:
    """Size and modification time of an input (a frame folder: of its images together), so
    that ``--resume`` can tell an input replaced since its outputs were made. A file swapped for
    one of the same size and time (``cp -p``) passes; the content is not read."""
    if os.path.isdir(path):
        stats = [image.stat() for image in list_images(path)]
        return {
            "images": len(stats),
            "size": sum(st.st_size for st in stats),
            "mtime_ns": max((st.st_mtime_ns for st in stats), default=0),
        }
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def output_sizes(outputs: dict[str, str]) -> dict[str, int]:
    """Bytes of each output that is a file (folders of images are left out), so that
    ``--resume`` can tell a finished video whose files were deleted or cut short since."""
    return {name: os.path.getsize(path) for name, path in outputs.items() if os.path.isfile(path)}


def output_root(out_dir: Path, video_id: str) -> Path:
    """The run's output folder, from a video's folder and its id (``OUT/a/b`` and ``a/b``)."""
    depth = len(PurePosixPath(video_id).parts)
    return Path(out_dir).parents[depth - 1] if depth else Path(out_dir)


def relative_path(path: str | Path, root: Path) -> str:
    """``path`` relative to ``root`` with POSIX separators, as meta.json stores paths: they
    stay right when the output folder moves (with the inputs, for input paths)."""
    return os.path.relpath(os.path.abspath(path), os.path.abspath(root)).replace(os.sep, "/")


def _write_meta(
    out_dir: Path, result: VideoResult, config, session: FlowSession, info, fingerprint: dict
) -> None:
    stage = session.stage
    key = results_key(config, session.estimator)
    checkpoint = None
    if stage.network is not None and getattr(stage.network, "checkpoint_info", None):
        checkpoint = stage.network.checkpoint_info.__dict__
    root = output_root(out_dir, result.video_id)
    meta = {
        "status": "ok",
        "video": relative_path(result.path, root),
        "video_absolute": os.path.abspath(result.path),
        "input": fingerprint,
        "video_id": result.video_id,
        "frames": result.frames,
        "pairs": result.pairs,
        "width": info.width,
        "height": info.height,
        "source_size": [info.source_width, info.source_height],
        "rotation": info.rotation,
        "fps": info.fps,
        "codec": info.codec,
        "decoder": info.backend,
        "model": stage.config.model,
        "checkpoint": checkpoint,
        "model_notice": session.choice.notice,
        "iters": stage.config.iters if stage.is_network else None,
        "refine": stage.refine if stage.is_network else None,
        "gap": stage.config.gap,
        "device": session.device,
        "precision": session.precision,
        "seconds": result.seconds,
        "outputs": {name: relative_path(path, root) for name, path in result.outputs.items()},
        "output_sizes": output_sizes(result.outputs),
        "summary": result.summary,
        "warnings": result.warnings,
        "config_hash": results_hash(key),
        "results_key": key,
        "config": config_to_dict(config),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "machine": {**cpu_info(), "torch_threads": torch.get_num_threads()},
        "kernels": KERNELS.used(),
    }
    write_json(out_dir / "meta.json", meta)
    result.outputs["meta"] = str(out_dir / "meta.json")
