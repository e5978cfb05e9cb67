"""Input discovery (folders, symlinks, lists, frame folders) and the frame-folder reader."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.discovery import VideoJob, assign_ids, find_inputs
from stages.decode import DecodeConfig, DecodeError, open_video
from stages.decoding.frames_folder import FrameFolderReader, natural_key
from tests.media import pattern_frame, read_frame_index, write_video


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _write_png(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _ids(jobs: list[VideoJob]) -> dict[str, str]:
    return {job.rel_path: job.video_id for job in jobs}


def test_folder_is_searched_recursively_with_readable_ids(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for rel in (
        "b.mp4",
        "a/clip.MKV",
        "a/deeper/x.webm",
        "été 2024/vidéo de plage.mov",
        "notes.txt",
        "a/cover.jpg",
        ".hidden.mp4",
        "._b.mp4",
        ".cache/inside.mp4",
    ):
        _touch(root / rel)
    jobs = find_inputs(root).jobs
    assert _ids(jobs) == {
        "a/clip.MKV": "a/clip",
        "a/deeper/x.webm": "a/deeper/x",
        "b.mp4": "b",
        "été 2024/vidéo de plage.mov": "été 2024/vidéo de plage",
    }
    assert [job.rel_path for job in jobs] == sorted(job.rel_path for job in jobs)
    assert all(job.problem is None and job.kind == "video" for job in jobs)
    assert all(job.path == root / job.rel_path for job in jobs)


def test_what_a_folder_scan_cannot_use_is_said(tmp_path: Path, monkeypatch, caplog) -> None:
    """Transport-stream videos are videos; a folder with one image (a frame folder needs two)
    is named in a warning; a folder that cannot be listed becomes a failed job, so what it
    holds is not lost without a word. (Tests run as root, whom permissions do not stop, so
    the listing error is raised for that folder here.)"""
    root = tmp_path / "in"
    _touch(root / "camera.MTS")
    _touch(root / "broadcast.ts")
    _write_png(root / "poster" / "0001.png", pattern_frame(0, 64, 48))
    _touch(root / "locked" / "inside.mp4")
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr("pipeline.discovery.os.scandir", scandir)
    jobs = {job.rel_path: job for job in find_inputs(root).jobs}
    assert sorted(jobs) == ["broadcast.ts", "camera.MTS", "locked"]
    locked = jobs["locked"]
    assert (locked.problem, locked.problem_type) == (
        "cannot read the folder: Permission denied",
        "OSError",
    )
    assert any("poster holds 1 image(s) and no video" in r.message for r in caplog.records)


def test_single_file_input(tmp_path: Path) -> None:
    video = _touch(tmp_path / "My Clip.MP4")
    found = find_inputs(video)
    assert found.root == tmp_path
    assert [(j.rel_path, j.video_id) for j in found.jobs] == [("My Clip.MP4", "My Clip")]
    with pytest.raises(FileNotFoundError, match="input not found"):
        find_inputs(tmp_path / "missing.mp4")


def test_symlinks_are_followed_without_loops_and_broken_ones_fail(tmp_path: Path) -> None:
    root = tmp_path / "in"
    outside = tmp_path / "elsewhere"
    _touch(root / "sub" / "v.mp4")
    _touch(outside / "w.mkv")
    os.symlink("..", root / "sub" / "loop")  # a folder link to its own ancestor
    os.symlink(root / "sub", root / "again")  # a second way into an already scanned folder
    os.symlink(outside, root / "linked")  # a linked folder: followed
    os.symlink(outside / "w.mkv", root / "alias.mkv")  # a linked file: a video of its own
    os.symlink(tmp_path / "gone.mp4", root / "dead.mp4")  # broken: a failed job
    os.symlink(tmp_path / "gone.txt", root / "dead.txt")  # broken, not a video: ignored
    os.symlink("self.mp4", root / "self.mp4")  # a link to itself
    jobs = find_inputs(root).jobs
    by_rel = {job.rel_path: job for job in jobs}
    assert sorted(by_rel) == ["alias.mkv", "dead.mp4", "linked/w.mkv", "self.mp4", "sub/v.mp4"]
    assert "broken symbolic link" in by_rel["dead.mp4"].problem
    assert "gone.mp4" in by_rel["dead.mp4"].problem
    assert "loop" in by_rel["self.mp4"].problem
    assert by_rel["sub/v.mp4"].problem is None and by_rel["linked/w.mkv"].problem is None


def test_ids_never_collide_nor_nest() -> None:
    rels = [
        "clip.mkv",
        "clip.mp4",
        "a.mp4",
        "a/b.mp4",
        "config.yaml.mp4",
        "x.MP4",
        "x.mp4",
        "frames",
        "frames.mp4",
    ]
    jobs = [VideoJob(Path(rel), "", rel, "frames" if rel == "frames" else "video") for rel in rels]
    ids = [job.video_id for job in assign_ids(jobs)]
    assert ids == [
        "clip_mkv",
        "clip_mp4",
        "a_mp4",
        "a/b",
        "config.yaml_mp4",
        "x_mp4",
        "x_mp4_2",
        "frames_frames",
        "frames_mp4",
    ]
    assert len(set(ids)) == len(ids)


def test_ids_one_folder_on_macos_or_windows_clash() -> None:
    """``Clip`` and ``CLIP``, or ``café`` written NFC and NFD, are one folder on a file system
    that ignores case or normalisation: they get suffixes as any clash, wherever the run is."""
    nfc, nfd = "caf\u00e9.mp4", "cafe\u0301.mkv"
    rels = ["Clip.mp4", "CLIP.mp4", nfc, nfd, "A/x.mp4", "a/x.mkv", "a.mp4", "Classes.txt.mp4"]
    ids = [job.video_id for job in assign_ids([VideoJob(Path(r), "", r) for r in rels])]
    assert ids == ["Clip_mp4", "CLIP_mp4_2", "caf\u00e9_mp4", "cafe\u0301_mkv", "A/x_mp4",
                   "a/x_mkv", "a_mp4", "Classes.txt_mp4"]  # fmt: skip


def test_run_level_file_names_are_never_video_ids() -> None:
    """A video named after a file the run writes at the output root (a list, a table, the lock)
    gets another id, so neither can replace the other."""
    from pipeline import annotations, annotations_cmd, batch, manifest, tables
    from pipeline.discovery import RESERVED_IDS, is_reserved

    written = {
        manifest.MANIFEST_CSV, manifest.MANIFEST_PARQUET, batch.CONFIG_NAME, batch.LOCK_NAME,
        *tables.FEATURE_TABLES, annotations.FLOW_LIST, annotations.RGB_LIST, annotations.CLASSES,
        annotations.MMACTION2_SNIPPET, annotations_cmd.OPTIONS_FILE,
        "rawframes_flow_trainlist01.txt", "rawframes_rgb_testlist03.txt", ".x.tmp",
    }  # fmt: skip
    assert all(is_reserved(name) for name in written)
    assert written >= RESERVED_IDS
    assert not any(is_reserved(name) for name in ("clip", "a/classes.txt", "x.txt", "_clip"))
    rels = ["classes.txt.mp4", ".motionpipe.lock.mp4", ".hidden.mp4", "_hidden.mp4",
            "features.parquet.mp4", "rawframes_flow_split1.txt.mkv", "sub/.x.mp4"]  # fmt: skip
    ids = [job.video_id for job in assign_ids([VideoJob(Path(r), "", r) for r in rels])]
    assert ids == ["classes.txt_mp4", "_motionpipe.lock", "_hidden_mp4", "_hidden_mp4_2",
                   "features.parquet_mp4", "rawframes_flow_split1.txt_mkv", "sub/.x"]  # fmt: skip


def test_a_named_pipe_fails_at_once_instead_of_hanging_the_batch(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    write_video(root / "a.mkv", num_frames=3, codec="ffv1")
    os.mkfifo(root / "pipe.mp4")
    os.mkfifo(tmp_path / "listed.mp4")
    (tmp_path / "list.txt").write_text("in/a.mkv\nlisted.mp4\n")
    for given, name in ((root, "pipe.mp4"), (tmp_path / "list.txt", "listed.mp4")):
        jobs = {Path(job.rel_path).name: job for job in find_inputs(given).jobs}
        assert jobs["a.mkv"].problem is None
        assert "named pipe (FIFO)" in jobs[name].problem
        assert jobs[name].problem_type == "NotARegularFile"
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["run", str(root), "-o", str(out), "--model", "dis", "--no-progress", "--workers", "0"],
    )
    assert result.exit_code == 1, result.output
    assert "pipe.mp4" in result.output and "named pipe" in result.output
    assert (out / "a" / "meta.json").is_file() and not (out / "pipe").exists()


def test_frame_folders_count_as_one_video(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for n in (1, 2, 10):
        _touch(root / "shots" / "s1" / f"img_{n}.png")
    _touch(root / "shots" / "s1" / "._img_3.png")
    _touch(root / "single" / "cover.jpg")  # one image is a picture, not a video
    _touch(root / "mixed" / "poster.jpg")
    _touch(root / "mixed" / "poster2.jpg")
    _touch(root / "mixed" / "film.mp4")  # a folder with a video is not a frame folder
    jobs = find_inputs(root).jobs
    assert [(j.rel_path, j.video_id, j.kind) for j in jobs] == [
        ("mixed/film.mp4", "mixed/film", "video"),
        ("shots/s1", "shots/s1", "frames"),
    ]
    # the input itself may be a frame folder
    found = find_inputs(root / "shots" / "s1")
    assert found.root == root / "shots"
    assert [(j.rel_path, j.kind) for j in found.jobs] == [("s1", "frames")]


def test_text_and_csv_lists(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _touch(data / "one.mp4")
    _touch(data / "two words.mkv")
    _touch(data / "nested" / "three.avi")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "videos.txt").write_text(
        "# my selection\n"
        "../data/one.mp4\n"
        "\n"
        f"  {data / 'two words.mkv'}  \n"
        "../data/nested\n"
        "../data/one.mp4\n"
        "../data/missing.mp4\n",
        encoding="utf-8",
    )
    found = find_inputs(lists / "videos.txt")
    assert found.root == tmp_path
    assert [(j.rel_path, j.video_id) for j in found.jobs] == [
        ("data/missing.mp4", "data/missing"),
        ("data/nested/three.avi", "data/nested/three"),
        ("data/one.mp4", "data/one"),
        ("data/two words.mkv", "data/two words"),
    ]
    missing = found.jobs[0]
    assert missing.problem == "file not found: '../data/missing.mp4' (listed in videos.txt, line 7)"

    (data / "list.csv").write_text(
        'label,path\nsign,one.mp4\nother,"two words.mkv"\n', encoding="utf-8"
    )
    found = find_inputs(data / "list.csv")
    assert found.root == data
    assert [(j.rel_path, j.video_id) for j in found.jobs] == [
        ("one.mp4", "one"),
        ("two words.mkv", "two words"),
    ]
    (data / "bad.csv").write_text("file,label\none.mp4,x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'path' column"):
        find_inputs(data / "bad.csv")


def test_natural_order() -> None:
    names = ["f10.png", "f2.png", "F1.png", "f1b.png", "f1.png"]
    assert sorted(names, key=natural_key) == ["F1.png", "f1.png", "f1b.png", "f2.png", "f10.png"]


def test_frame_folder_reader(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    for n in range(12):  # names sort wrongly as plain strings: 10, 11 before 2
        _write_png(folder / f"frame_{n}.png", pattern_frame(n, 64, 48))
    _touch(folder / ".DS_Store")
    with open_video(folder, DecodeConfig(stride=2)) as reader:
        assert isinstance(reader, FrameFolderReader)
        assert (reader.info.width, reader.info.height, reader.info.fps) == (64, 48, 25.0)
        assert reader.info.header_frame_count == 12 and reader.info.backend == "frames"
        frames = list(reader.frames())
    assert [read_frame_index(f.rgb) for f in frames] == [0, 2, 4, 6, 8, 10]
    assert [f.index for f in frames] == list(range(6))
    np.testing.assert_allclose([f.pts for f in frames], [n / 25 for n in (0, 2, 4, 6, 8, 10)])
    np.testing.assert_array_equal(frames[0].rgb, pattern_frame(0, 64, 48))

    with FrameFolderReader(str(folder), DecodeConfig(max_side=32, start=0.2), fps=10) as reader:
        frames = list(reader)
    assert [read_frame_index(f.rgb) for f in frames] == list(range(2, 12))
    assert frames[0].rgb.shape == (24, 32, 3) and frames[0].pts == pytest.approx(0.2)


def test_frame_folder_awkward_images(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    _write_png(folder / "0.png", pattern_frame(0, 64, 48))
    gray16 = (pattern_frame(1, 64, 48)[..., 0].astype(np.uint16) * 257)[..., None]
    assert cv2.imwrite(str(folder / "1.png"), gray16)  # 16-bit gray
    _write_png(folder / "2.png", pattern_frame(2, 80, 60))  # another size
    _touch(folder / "3.png", b"not an image")
    _write_png(folder / "4.png", pattern_frame(4, 64, 48))
    with open_video(folder, DecodeConfig(keep_incomplete=True)) as reader:
        frames = list(reader.frames())
        warnings = reader.warnings
    with (
        open_video(folder) as reader,
        pytest.raises(DecodeError, match=r"incomplete video: image '3.png' cannot be read; 3 fr"),
    ):
        assert len(list(reader.frames())) == 3
    assert [f.rgb.shape for f in frames] == [(48, 64, 3)] * 3
    assert all(f.rgb.dtype == np.uint8 for f in frames)
    assert read_frame_index(frames[1].rgb) == 1 and read_frame_index(frames[2].rgb) == 2
    assert any("'3.png' cannot be read" in w and "after 3 frames" in w for w in warnings)
    assert any("1 images differ" in w and "resized" in w for w in warnings)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DecodeError, match=r"no \.jpg or \.png image"):
        open_video(empty)


def test_run_on_a_frame_folder_and_a_list(tmp_path: Path) -> None:
    """End to end, with the overall and per-video progress bars on."""
    root = tmp_path / "in"
    for n in range(6):
        _write_png(root / "shot one" / f"{n:03d}.png", pattern_frame(n, 96, 72, (2.0, 0.0)))
    write_video(root / "clip.mkv", width=96, height=72, num_frames=4, codec="ffv1")
    (tmp_path / "list.txt").write_text("in/shot one\nin/clip.mkv\n", encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["-q", "run", str(tmp_path / "list.txt"), "-o", str(out), "--model", "dis",
         "--workers", "0", "--progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "in" / "shot one" / "meta.json").read_text())
    assert (meta["frames"], meta["pairs"], meta["decoder"], meta["fps"]) == (6, 5, "frames", 25.0)
    flow = np.load(out / "in" / "shot one" / "flow.npy")
    assert flow.shape == (5, 72, 96, 2)
    band = 72 // 8 + 4  # below the frame-index band, the texture moves 2 px right per frame
    assert abs(float(np.median(flow[:, band:-4, 4:-4, 0])) - 2.0) < 0.25
    timestamps = np.loadtxt(out / "in" / "shot one" / "timestamps.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(timestamps[:, 1], np.arange(6) / 25, atol=1e-6)
    assert (out / "in" / "clip" / "meta.json").is_file()
