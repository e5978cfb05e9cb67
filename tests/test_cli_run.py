"""The run command end to end: every writer read back with an independent reader."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import av
import click
import cv2
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from models import create_model
from models.weights import WEIGHTS
from pipeline.cli import COMMANDS, main
from pipeline.images import read_rgb
from pipeline.startup import imports
from stages.decode import DecodeConfig, open_video
from stages.flow_jpeg import dequantize_flow
from stages.flow_viz import caption_height, legend_width
from stages.image_io import read_image
from tests.conftest import REPO_ROOT
from tests.media import pattern_frame, write_frames, write_video

WIDTH, HEIGHT, FRAMES = 96, 72, 7


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("media") / "clip.mkv"
    write_frames(
        path,
        [pattern_frame(i, WIDTH, HEIGHT) for i in range(FRAMES)],
        codec="ffv1",
        pix_fmt="yuv444p",
    )
    return path


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("MOTIONPIPE_CACHE", str(tmp_path / "empty-cache"))


def _invoke(args: list[str]):
    return CliRunner().invoke(main, ["-q", *args], catch_exceptions=False)


def test_quickstart_runs_offline_with_the_shipped_model(offline, tmp_path: Path) -> None:
    example = tmp_path / "example.mp4"
    assert _invoke(["example", str(example), "--frames", "12"]).exit_code == 0
    out = tmp_path / "out"
    result = _invoke(
        ["run", str(example), "-o", str(out), "--config", "configs/quickstart.yaml",
         "--set", "flow.download=false", "--no-progress"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "example" / "meta.json").read_text())
    assert meta["model"] == "raft-small-convex" and not meta["model_notice"]
    shipped = next(spec for spec in WEIGHTS.values() if spec.bundled)
    assert meta["checkpoint"]["sha256"] == shipped.sha256
    assert (meta["frames"], meta["pairs"]) == (12, 11)
    assert meta["machine"]["cores"] >= 1 and isinstance(meta["machine"]["flags"], list)
    flow = np.load(out / "example" / "flow.npy")
    assert flow.shape == (11, 240, 320, 2)
    # the generated background drifts right by 1 px per frame
    assert abs(float(np.median(flow[..., 0])) - 1.0) < 0.2
    assert yaml.safe_load((out / "config.yaml").read_text())["flow"]["model"] == "auto"


def test_every_writer_reads_back(clip: Path, parity_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    checkpoint = parity_dir / "raft_small_random.pth"
    result = _invoke(
        ["run", str(clip), "-o", str(out), "--model", "raft-small", "--checkpoint", str(checkpoint),
         "--iters", "2", "--formats", "flo,npy,npz,kitti,jpg,viz", "--backward", "--chunk-size", "4",
         "--decoder", "pyav", "--device", "cpu", "--set", "output.write_rgb=true", "--no-progress"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    video = out / "clip"
    stacked = np.load(video / "flow.npy")
    assert stacked.shape == (FRAMES - 1, HEIGHT, WIDTH, 2) and stacked.dtype == np.float32
    np.testing.assert_array_equal(np.load(video / "flow.npz")["flow"], stacked)
    backward = np.load(video / "flow_bw.npy")
    assert backward.shape == stacked.shape
    for t in (0, FRAMES - 2):
        np.testing.assert_array_equal(
            cv2.readOpticalFlow(str(video / "flo_bw" / f"{t:06d}.flo")), backward[t]
        )

    # pair 0 equals the model run directly on the decoded frames
    network = create_model("raft-small", checkpoint=checkpoint)
    with open_video(clip, DecodeConfig(backend="pyav")) as reader:
        decoded = [f.rgb for f in reader.frames()][:2]
    frames = [torch.from_numpy(rgb).permute(2, 0, 1)[None].float() for rgb in decoded]
    direct = network.estimate_flow(*frames, iters=2).flow[0].permute(1, 2, 0).numpy()
    assert np.abs(stacked[0] - direct).max() <= 1e-4

    for t in range(FRAMES - 1):
        flo = cv2.readOpticalFlow(str(video / "flo" / f"{t:06d}.flo"))
        np.testing.assert_array_equal(flo, stacked[t])
        kitti = cv2.imread(str(video / "kitti" / f"{t:06d}.png"), cv2.IMREAD_UNCHANGED)
        u = (kitti[..., 2].astype(np.float64) - 2**15) / 64  # BGR order: R holds u
        assert np.abs(u - np.clip(stacked[t][..., 0], -512, 511.984375)).max() <= 1 / 128 + 1e-6
        assert (kitti[..., 0] == 1).all()
        x = np.asarray(Image.open(video / "rawframes" / f"x_{t + 1:05d}.jpg"))
        assert x.shape == (HEIGHT, WIDTH) and x.dtype == np.uint8
        assert (
            np.median(np.abs(dequantize_flow(x, 20.0) - np.clip(stacked[t][..., 0], -20, 20))) < 0.5
        )
    rgb = sorted((video / "rawframes").glob("img_*.jpg"))
    assert [p.name for p in rgb] == [f"img_{i:05d}.jpg" for i in range(1, FRAMES + 1)]
    assert len(list((video / "viz").glob("*.png"))) == FRAMES - 1
    with av.open(str(video / "viz.mp4")) as container:
        previews = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    # frame | flow, each under a caption bar, then the colour key
    tall = HEIGHT + caption_height(HEIGHT)
    assert len(previews) == FRAMES - 1
    assert previews[0].shape[:2] == (tall, 2 * WIDTH + legend_width(tall))
    timestamps = np.loadtxt(video / "timestamps.csv", delimiter=",", skiprows=1)
    assert timestamps.shape == (FRAMES, 2) and np.all(np.diff(timestamps[:, 1]) > 0)
    meta = json.loads((video / "meta.json").read_text())
    assert meta["checkpoint"]["sha256"] and meta["iters"] == 2 and meta["status"] == "ok"
    assert {"npy_bw", "npz_bw", "flo_bw", "kitti_bw"} <= set(meta["outputs"])
    assert set(meta["kernels"].values()) <= {"nnpack", "onednn"}  # chosen on this machine
    assert not list(video.rglob("*.tmp"))


def test_bad_input_fails_clearly_without_meta(tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "broken.mp4").write_text("this is not a video")
    write_frames(
        folder / "good.mkv", [pattern_frame(i, WIDTH, HEIGHT) for i in range(3)], codec="ffv1"
    )
    out = tmp_path / "out"
    result = _invoke(["run", str(folder), "-o", str(out), "--model", "dis", "--no-progress"])
    assert result.exit_code == 1
    assert "broken" in result.output and "failed" in result.output
    assert (out / "good" / "meta.json").is_file()
    assert not (out / "broken" / "meta.json").exists()


def test_pair_writes_the_flow_and_its_picture(tmp_path: Path) -> None:
    images = []
    for t in (0, 1):
        path = tmp_path / f"{t}.png"
        Image.fromarray(pattern_frame(t, WIDTH, HEIGHT)).save(path)
        images.append(str(path))
    flow_file, picture = tmp_path / "flow.flo", tmp_path / "flow.png"
    result = _invoke(["pair", *images, "-o", str(flow_file), "--model", "dis",
                      "--viz", str(picture)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert cv2.readOpticalFlow(str(flow_file)).shape == (HEIGHT, WIDTH, 2)
    drawn = cv2.imread(str(picture))
    assert drawn.shape[0] == HEIGHT and drawn.shape[1] > WIDTH  # flow, then the colour key
    assert not list(tmp_path.glob(".*.tmp"))
    # --checkpoint without --model (auto) brings its own architecture, named or a file
    exported = tmp_path / "mine.pth"
    torch.save(create_model("raft-small").state_dict(), exported)
    for checkpoint in ("motionpipe-small-v3", str(exported)):
        result = _invoke(["pair", *images, "-o", str(flow_file), "--iters", "1",
                          "--checkpoint", checkpoint])  # fmt: skip
        assert result.exit_code == 0, result.output  # a file of raft-small weights loads
    refused = _invoke(["pair", *images, "-o", str(flow_file), "--checkpoint", "random"])
    assert refused.exit_code == 1 and "needs an explicit --model" in refused.output


def test_pair_and_example_refuse_unusable_output_paths_before_any_work(tmp_path: Path) -> None:
    images = []
    for t in (0, 1):
        images.append(tmp_path / f"{t}.png")
        Image.fromarray(pattern_frame(t, WIDTH, HEIGHT)).save(images[-1])
    blocker = tmp_path / "afile"
    blocker.write_text("a file, not a folder")
    pair = ["pair", *map(str, images), "--model", "dis"]
    result = _invoke([*pair, "-o", str(blocker / "flow.flo")])
    assert result.exit_code == 1 and "a file is in the way" in result.output
    result = _invoke([*pair, "-o", str(tmp_path / "flow.flo"), "--viz", str(tmp_path / "v.txt")])
    assert result.exit_code == 2 and "--viz" in result.output
    assert not (tmp_path / "flow.flo").exists()  # refused before the flow was computed
    png = tmp_path / "flow.png"
    result = _invoke([*pair, "-o", str(png), "--viz", str(tmp_path / "." / "flow.png")])
    assert result.exit_code == 2 and "also the flow file" in result.output
    before = images[0].read_bytes()
    result = _invoke([*pair, "-o", str(images[0])])  # the KITTI PNG would replace frame 1
    assert result.exit_code == 2 and "input image" in result.output
    assert images[0].read_bytes() == before and not png.exists()
    result = _invoke(["example", str(tmp_path / "clip.avi")])
    assert result.exit_code == 2 and "*.mp4" in result.output
    result = _invoke(["example", str(blocker / "clip.mp4")])
    assert result.exit_code == 1 and "a file is in the way" in result.output


def test_pair_reads_16_bit_and_exif_rotated_images_as_frame_folders_do(tmp_path: Path) -> None:
    """16-bit gray PNGs (PIV and scientific cameras) are not clipped to white, and EXIF
    orientation is applied: ``pair`` sees the image ``evaluate`` and frame folders see."""
    gray = []
    for t in (0, 1):
        path = tmp_path / f"g{t}.png"
        frame = cv2.cvtColor(pattern_frame(t, WIDTH, HEIGHT), cv2.COLOR_RGB2GRAY)
        cv2.imwrite(str(path), frame.astype(np.uint16) * 257)
        assert Image.open(path).mode.startswith("I")
        gray.append(path)
    image = read_rgb(gray[0])
    np.testing.assert_array_equal(image, read_image(gray[0]))
    assert image.std() > 10
    flow_file = tmp_path / "flow.npy"
    result = _invoke(["pair", *map(str, gray), "-o", str(flow_file), "--model", "dis"])
    assert result.exit_code == 0, result.output
    median = np.median(np.load(flow_file)[8:-8, 8:-8].reshape(-1, 2), axis=0)
    np.testing.assert_allclose(median, (2.0, 1.0), atol=0.25)  # the pattern's motion

    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: stored turned, to be shown rotated 90 degrees clockwise
    Image.fromarray(pattern_frame(0, WIDTH, HEIGHT)).save(rotated, exif=exif, quality=95)
    upright = read_rgb(rotated)
    assert upright.shape == (WIDTH, HEIGHT, 3) == read_image(rotated).shape
    assert np.abs(upright.astype(int) - read_image(rotated)).mean() < 2  # two JPEG decoders

    floats = tmp_path / "float.tif"  # 32-bit samples: OpenCV reads none, the error says why
    Image.fromarray(np.zeros((HEIGHT, WIDTH), np.float32)).save(floats)
    with pytest.raises(ValueError, match="samples are 32-bit, PIL mode F: convert it to 8 or 16"):
        read_rgb(floats)


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["run", "x.mp4", "-o", str(tmp_path), "--set", "flow.itres=3"]
    )
    assert result.exit_code != 0 and "flow.itres" in result.output


def test_config_takes_a_preset_name_as_config_show_does(tmp_path: Path) -> None:
    """``--config quickstart`` is ``configs/quickstart.yaml`` from any folder; an unknown name
    lists the presets, before anything is written."""
    video = write_video(tmp_path / "clip.mkv", width=64, height=48, num_frames=4, codec="ffv1")
    out = tmp_path / "out"
    result = _invoke(["run", str(video), "-o", str(out), "--config", "quickstart",
                      "--model", "dis", "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    preset = yaml.safe_load((REPO_ROOT / "configs" / "quickstart.yaml").read_text())
    assert saved["output"]["formats"] == preset["output"]["formats"]
    result = _invoke(["run", str(video), "-o", str(tmp_path / "other"), "--config", "nosuch"])
    assert result.exit_code == 1 and "no preset 'nosuch'" in result.output
    assert "quickstart" in result.output and not (tmp_path / "other").exists()


def _fresh_python(code: str) -> str:
    """What ``code`` prints in a new interpreter started in the repository root."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    return done.stdout


def test_the_cli_and_its_workers_start_without_matplotlib() -> None:
    """Plotting libraries load when a picture is drawn, not with every ``run`` (each worker
    process imports the pipeline again; matplotlib alone took ~0.5 s of that)."""
    loaded = _fresh_python(
        "import sys, pipeline.run_cmd, pipeline.worker_processes, pipeline.runner; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))"
    )
    assert loaded.strip() == "[]"


def test_help_lists_every_command_without_loading_torch() -> None:
    """``motionpipe --help`` reads the command table; each summary is its command's own."""
    shown = _fresh_python(
        "import sys; from pipeline.cli import main; main(['--help'], standalone_mode=False); "
        "print('torch' in sys.modules)"
    )
    assert shown.strip().endswith("False"), shown
    for name, entry in COMMANDS.items():
        command = main.get_command(click.Context(main), name)
        assert command is not None and command.name == name
        assert entry.summary == command.get_short_help_str(limit=10_000), name
        assert f"  {name} " in shown


def test_startup_imports_leave_the_collector_as_they_found_it() -> None:
    frozen = gc.get_freeze_count()
    try:
        with imports():
            assert not gc.isenabled()
            made = [[n] for n in range(1000)]  # what an import would create
        assert gc.isenabled() and gc.get_freeze_count() >= frozen + len(made)
        gc.disable()
        with imports():
            pass
        assert not gc.isenabled()  # a collector that was off stays off
    finally:
        gc.enable()
