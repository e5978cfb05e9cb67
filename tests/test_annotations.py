"""Action-recognition lists: one `run` over a class-per-folder tree feeds mmaction2's loader.

Two checks of every listed frame: a re-implementation of only the documented path rule of
mmaction2's ``RawframeDataset`` / ``RawFrameDecode`` (always runs), and mmaction2's own code
(``SampleFrames`` -> ``RawFrameDecode`` on ``RawframeDataset.get_data_info``) where mmaction2
1.x is installed (``pip install -e ".[mmaction]"``; skipped otherwise).
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pipeline.annotations import class_of, flow_filename_template
from pipeline.cli import main
from stages.flow_jpeg import FLOW_JPEG_PRESETS
from tests.conftest import REPO_ROOT
from tests.media import pattern_frame, write_video

# class -> clips (frames); a space in a file name cannot be listed (mmaction2 splits on it)
TREE = {"jump": {"j1": 6, "j2": 5}, "wave": {"w1": 7}}
FRAME_TEMPLATE = {"mmaction2": "{}_{:05d}.jpg", "tsn": "flow_{}_{:05d}.jpg"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ucf") / "videos"
    for label, clips in TREE.items():
        for stem, frames in clips.items():
            (root / label).mkdir(parents=True, exist_ok=True)
            write_video(root / label / f"{stem}.mkv", width=64, height=48, num_frames=frames)
    return root


def _run(tree: Path, out: Path, *extra: str):
    result = CliRunner().invoke(
        main,
        ["-q", "run", str(tree), "-o", str(out), "--config", "configs/action-recognition.yaml",
         "--model", "dis", "--workers", "0", "--no-progress", *extra],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result


def _read_list(path: Path) -> list[tuple[str, int, int | None]]:
    """mmaction2's parsing of an annotation line: split on white space."""
    rows = []
    for line in path.read_text().splitlines():
        parts = line.strip().split()
        rows.append((parts[0], int(parts[1]), int(parts[2]) if len(parts) > 2 else None))
    return rows


def _frame_paths(data_prefix: Path, frame_dir: str, tmpl: str, start: int, total: int, flow):
    """The files RawFrameDecode opens for indices start .. start + total - 1: RGB
    ``tmpl.format(i)``, Flow ``tmpl.format('x', i)`` and ``tmpl.format('y', i)``."""
    for i in range(start, start + total):
        if flow:
            yield [data_prefix / frame_dir / tmpl.format(axis, i) for axis in ("x", "y")]
        else:
            yield [data_prefix / frame_dir / tmpl.format(i)]


@pytest.mark.parametrize("preset", ["mmaction2", "tsn", "denseflow"])
def test_every_listed_frame_resolves_with_the_loader_path_rule(tree, tmp_path, preset) -> None:
    out = tmp_path / "out"
    result = _run(tree, out, "--set", f"output.jpg_preset={preset}")
    assert "action-recognition lists" in result.output and "2 classes" in result.output
    layout = FLOW_JPEG_PRESETS[preset]
    assert (out / "classes.txt").read_text() == "jump\nwave\n"
    flow_rows, rgb_rows = (
        _read_list(out / "rawframes_flow.txt"),
        _read_list(out / "rawframes_rgb.txt"),
    )
    expected = sorted(
        (f"{label}/{stem}/rawframes", frames, n)
        for n, (label, clips) in enumerate(sorted(TREE.items()))
        for stem, frames in clips.items()
    )
    assert flow_rows == [(d, frames - 1, label) for d, frames, label in expected]
    # tsn (dense_flow) writes the frame ending each pair, one per flow; the others every frame
    rgb_less = 1 if layout.rgb_ends_pairs else 0
    assert rgb_rows == [(d, frames - rgb_less, label) for d, frames, label in expected]
    flow_tmpl = flow_filename_template(layout)
    if preset in FRAME_TEMPLATE:
        assert flow_tmpl == FRAME_TEMPLATE[preset]
    for rows, tmpl, flow in ((flow_rows, flow_tmpl, True), (rgb_rows, "img_{:05d}.jpg", False)):
        for frame_dir, total, _ in rows:
            start = layout.index_base
            paths = list(_frame_paths(out, frame_dir, tmpl, start, total, flow))
            assert all(p.is_file() for group in paths for p in group), frame_dir
            # total_frames is the whole count: the next index has no file
            beyond = next(_frame_paths(out, frame_dir, tmpl, start + total, 1, flow))
            assert not any(p.exists() for p in beyond)
    snippet = (out / "mmaction2_rawframes.py").read_text()
    assert f"filename_tmpl={flow_tmpl!r}" in snippet
    assert f"start_index={layout.index_base}" in snippet and "num_classes = 2" in snippet


def test_label_level_and_trees_without_class_folders(tree, tmp_path) -> None:
    out = tmp_path / "flat"
    result = _run(tree / "jump", out)  # the clips lie at the input root: no class folder
    assert [r[2] for r in _read_list(out / "rawframes_flow.txt")] == [-1, -1]
    assert not (out / "classes.txt").exists()
    assert "without labels" not in result.output  # an unlabelled tree: no warning (-q shows them)
    out = tmp_path / "none"
    _run(tree, out, "--label-level", "0")
    assert [r[2] for r in _read_list(out / "rawframes_flow.txt")] == [-1] * 3
    # the annotations command rewrites the lists of a finished run without computing flow
    result = CliRunner().invoke(main, ["annotations", str(out), "--label-level", "1"])
    assert result.exit_code == 0, result.output
    assert [r[2] for r in _read_list(out / "rawframes_flow.txt")] == [0, 0, 1]
    assert class_of("a/b/c", 2) == "a" and class_of("c", 1) is None


def test_video_ids_with_spaces_are_left_out_with_a_warning(tmp_path) -> None:
    root = tmp_path / "in"
    (root / "wave").mkdir(parents=True)
    write_video(root / "wave" / "ok.mkv", width=64, height=48, num_frames=4)
    write_video(root / "wave" / "two words.mkv", width=64, height=48, num_frames=4)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["run", str(root), "-o", str(out), "--config", "configs/action-recognition.yaml",
         "--model", "dis", "--workers", "0", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "white space" in result.output and "two words" in result.output
    assert _read_list(out / "rawframes_flow.txt") == [("wave/ok/rawframes", 3, 0)]


@pytest.mark.parametrize("preset", ["mmaction2", "tsn"])
def test_mmaction2_loads_every_listed_frame(tree, tmp_path, preset) -> None:
    """mmaction2's own RawframeDataset, SampleFrames and RawFrameDecode read every frame."""
    pytest.importorskip("mmaction", reason="mmaction2 not installed (pip install '.[mmaction]')")
    from mmaction.datasets import RawframeDataset
    from mmaction.datasets.transforms import RawFrameDecode, SampleFrames

    out = tmp_path / "out"
    _run(tree, out, "--set", f"output.jpg_preset={preset}")
    settings: dict = {}
    exec((out / "mmaction2_rawframes.py").read_text(), settings)  # the snippet, as written
    for key, modality in (("flow_dataset", "Flow"), ("rgb_dataset", "RGB")):
        options = {k: v for k, v in settings[key].items() if k != "type"}
        dataset = RawframeDataset(pipeline=[], **options)
        assert dataset.modality == modality and len(dataset) == 3
        for index in range(len(dataset)):
            info = dataset.get_data_info(index)
            total = info["total_frames"]
            # one single-frame clip per frame: test-mode sampling then covers every index
            sampled = SampleFrames(clip_len=1, frame_interval=1, num_clips=total, test_mode=True)
            results = RawFrameDecode().transform(sampled.transform(dict(info)))
            start = info["start_index"]
            assert list(results["frame_inds"]) == list(range(start, start + total))
            images = results["imgs"]
            assert len(images) == total
            first = Path(info["frame_dir"])
            if modality == "Flow":
                assert images[0].shape == (48, 64, 2)
                x = cv2.imread(str(first / info["filename_tmpl"].format("x", start)), 0)
                np.testing.assert_array_equal(images[0][..., 0], x)
            else:
                assert images[0].shape == (48, 64, 3)


def test_tsn_rgb_frames_end_each_pair_as_dense_flow_writes_them(tmp_path) -> None:
    """dense_flow stores, beside flow n, the frame that ends the pair: img_00001 is frame 1."""
    (tmp_path / "in" / "wave").mkdir(parents=True)
    clip = write_video(tmp_path / "in" / "wave" / "c.mkv", num_frames=5, velocity=(4.0, 0.0))
    out = tmp_path / "out"
    _run(clip.parent.parent, out, "--set", "output.jpg_preset=tsn")
    frames = tmp_path / "out" / "wave" / "c" / "rawframes"
    names = sorted(p.name for p in frames.glob("img_*.jpg"))
    assert names == [f"img_{n:05d}.jpg" for n in range(1, 5)]
    with av.open(str(clip)) as container:
        decoded = [f.to_ndarray(format="rgb24").astype(float) for f in container.decode(video=0)]
    for n in range(1, 5):
        written = cv2.cvtColor(cv2.imread(str(frames / f"img_{n:05d}.jpg")), cv2.COLOR_BGR2RGB)
        errors = [np.abs(written - frame).mean() for frame in decoded]
        assert int(np.argmin(errors)) == n, errors


def test_denseflow_names_a_gap_as_denseflow_does(tree, tmp_path) -> None:
    out = tmp_path / "out"
    _run(tree / "wave", out, "--set", "output.jpg_preset=denseflow", "--gap", "2")
    frames = out / "w1" / "rawframes"
    assert (frames / "flow_x_p2_00000.jpg").is_file() and (frames / "flow_y_p2_00004.jpg").is_file()
    assert not list(frames.glob("flow_x_0*.jpg")) and (frames / "img_00006.jpg").is_file()
    assert _read_list(out / "rawframes_flow.txt") == [("w1/rawframes", 5, -1)]
    assert "filename_tmpl='flow_{}_p2_{:05d}.jpg'" in (out / "mmaction2_rawframes.py").read_text()


@pytest.fixture(scope="module")
def ucf_tree(tmp_path_factory) -> tuple[Path, Path]:
    """A UCF101-like tree (class names whose plain sort differs from classInd.txt) and its
    split folder; one test entry names a video that is not there."""
    base = tmp_path_factory.mktemp("ucf101")
    root = base / "UCF-101"
    clips = {"Hammering": ["v_Hammering_g01_c01", "v_Hammering_g08_c01"],
             "HammerThrow": ["v_HammerThrow_g01_c01", "v_HammerThrow_g08_c01"]}  # fmt: skip
    for label, stems in clips.items():
        (root / label).mkdir(parents=True)
        for stem in stems:
            write_video(root / label / f"{stem}.avi", width=32, height=32, num_frames=3)
    lists = base / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Hammering\n2 HammerThrow\n")
    (lists / "trainlist01.txt").write_text(
        "Hammering/v_Hammering_g08_c01.avi 1\nHammerThrow/v_HammerThrow_g08_c01.avi 2\n"
    )
    (lists / "testlist01.txt").write_text(
        "Hammering/v_Hammering_g01_c01.avi\nHammerThrow/v_HammerThrow_g01_c01.avi\n"
        "HammerThrow/v_HammerThrow_g02_c01.avi\n"
    )
    return root, lists


def test_official_ucf101_splits_and_class_numbers(ucf_tree, tmp_path) -> None:
    root, lists = ucf_tree
    out = tmp_path / "out"
    result = _run(root, out, "--splits", str(lists))
    assert "splits train_split1, test_split1" in result.output
    assert (out / "classes.txt").read_text() == "Hammering\nHammerThrow\n"
    assert _read_list(out / "rawframes_flow_train_split1.txt") == [
        ("HammerThrow/v_HammerThrow_g08_c01/rawframes", 2, 1),
        ("Hammering/v_Hammering_g08_c01/rawframes", 2, 0),
    ]
    assert [r[0].split("/")[1] for r in _read_list(out / "rawframes_rgb_test_split1.txt")] == [
        "v_HammerThrow_g01_c01", "v_Hammering_g01_c01"
    ]  # fmt: skip
    assert "split test_split1: 1 of its 3 videos" in result.output
    assert "v_HammerThrow_g02_c01" in result.output
    assert "rawframes_flow_train_split1.txt" in (out / "mmaction2_rawframes.py").read_text()
    splits_before = sorted(p.name for p in out.glob("rawframes_*split*.txt"))
    # --resume and the annotations command keep the options the lists were written with
    for again in (["run", str(root), "-o", str(out), "--config", "configs/action-recognition.yaml",
                   "--model", "dis", "--workers", "0", "--no-progress", "--resume"],
                  ["annotations", str(out)]):  # fmt: skip
        result = CliRunner().invoke(main, again)
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in out.glob("rawframes_*split*.txt")) == splits_before
    # another class index replaces the saved options: its numbers, no split lists
    index = tmp_path / "names.txt"
    index.write_text("HammerThrow\nHammering\n")
    result = CliRunner().invoke(main, ["annotations", str(out), "--class-index", str(index)])
    assert result.exit_code == 0, result.output
    assert (out / "classes.txt").read_text() == "HammerThrow\nHammering\n"
    assert not list(out.glob("rawframes_*split*.txt"))
    # without any option saved or given, classes sort ignoring case: classInd.txt's order
    (out / "annotation_options.json").unlink()
    result = CliRunner().invoke(main, ["annotations", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "classes.txt").read_text() == "Hammering\nHammerThrow\n"


def test_split_entries_match_inputs_whose_ids_carry_a_suffix(tmp_path) -> None:
    """A video file and a frame folder of the same name get suffixed ids; split entries name
    the input files, and an entry matching two inputs stops the run before any work."""
    root = tmp_path / "in"
    (root / "Archery" / "v_a").mkdir(parents=True)
    write_video(root / "Archery" / "v_a.mp4", width=32, height=32, num_frames=3)
    for t in range(3):
        Image.fromarray(pattern_frame(t, 32, 32)).save(root / "Archery" / "v_a" / f"{t}.png")
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "trainlist01.txt").write_text("Archery/v_a.mp4 1\n")
    (lists / "testlist01.txt").write_text("")
    out = tmp_path / "out"
    result = _run(root, out, "--splits", str(lists))
    assert "split test_split1 lists no videos" in result.output
    (train,) = _read_list(out / "rawframes_flow_train_split1.txt")
    assert train[0].startswith("Archery/v_a_") and train[0].endswith("/rawframes")
    hmdb = tmp_path / "hmdb"
    hmdb.mkdir()
    (hmdb / "Archery_test_split1.txt").write_text("v_a.avi 1\n")  # a bare name: both inputs
    result = CliRunner().invoke(main, ["run", str(root), "-o", str(tmp_path / "o2"), "--config",
                                       "configs/action-recognition.yaml", "--model", "dis",
                                       "--splits", str(hmdb)])  # fmt: skip
    assert result.exit_code == 1 and "matches 2 videos" in result.output
    assert not (tmp_path / "o2").exists()


def test_a_class_missing_from_the_class_index_stops_the_run_before_any_work(
    ucf_tree, tmp_path
) -> None:
    root, _ = ucf_tree
    index = tmp_path / "classes.txt"
    index.write_text("Hammering\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["run", str(root), "-o", str(out), "--config", "configs/action-recognition.yaml",
         "--model", "dis", "--workers", "0", "--no-progress", "--class-index", str(index)],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "not in the class index: HammerThrow" in result.output
    assert not out.exists() or not any(out.iterdir())
    bad = tmp_path / "bad.txt"
    bad.write_text("1 a\n1 b\n")
    result = CliRunner().invoke(main, ["run", str(root), "-o", str(out), "--class-index", str(bad)])
    assert result.exit_code == 2 and "bad.txt" in result.output


def test_annotations_refuses_videos_written_with_an_older_frame_layout(tree, tmp_path) -> None:
    """A tsn folder made before the RGB frames ended each pair has other files than today's
    lists would name: the command says so instead of writing wrong lists."""
    out = tmp_path / "out"
    _run(tree / "wave", out, "--set", "output.jpg_preset=tsn")
    assert CliRunner().invoke(main, ["annotations", str(out)]).exit_code == 0
    meta_path = out / "w1" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["results_key"]["output"]["rgb_ends_pairs"]  # as an earlier version wrote it
    meta_path.write_text(json.dumps(meta))
    result = CliRunner().invoke(main, ["annotations", str(out)])
    assert result.exit_code == 1 and "earlier motionpipe" in result.output
    assert "--resume" in result.output


def test_class_numbers_cover_failed_videos_in_a_relative_output_folder(
    tmp_path, monkeypatch
) -> None:
    """A class whose only video failed keeps its number, so --resume after fixing it does not
    renumber the others; stale split lists go also when OUTPUT is a relative path."""
    for label in ("Archery", "Bowling"):
        (tmp_path / "videos" / label).mkdir(parents=True)
    broken = tmp_path / "videos" / "Archery" / "a.mkv"
    broken.write_bytes(b"not a video")
    write_video(tmp_path / "videos" / "Bowling" / "b.mkv", width=32, height=32, num_frames=3)
    monkeypatch.chdir(tmp_path)
    config = str(REPO_ROOT / "configs" / "action-recognition.yaml")
    command = ["-q", "run", "videos", "-o", "out", "--config", config, "--model", "dis",
               "--workers", "0", "--no-progress"]  # fmt: skip
    assert CliRunner().invoke(main, command).exit_code == 1  # Archery's video failed
    assert Path("out/classes.txt").read_text() == "Archery\nBowling\n"
    assert _read_list(Path("out/rawframes_flow.txt")) == [("Bowling/b/rawframes", 2, 1)]
    write_video(broken, width=32, height=32, num_frames=3)
    assert CliRunner().invoke(main, [*command, "--resume"]).exit_code == 0
    assert _read_list(Path("out/rawframes_flow.txt")) == [
        ("Archery/a/rawframes", 2, 0), ("Bowling/b/rawframes", 2, 1)
    ]  # fmt: skip
    Path("out/rawframes_flow_train_split1.txt").write_text("left by an earlier run\n")
    result = CliRunner().invoke(main, ["annotations", "out"])
    assert result.exit_code == 0, result.output
    assert not list(Path("out").glob("rawframes_*split*.txt"))


def test_annotations_keeps_all_digit_video_ids(tmp_path) -> None:
    """A flat folder of 001.mkv, 002.mkv: the annotations command lists 001/rawframes, as run
    does, not the integers pandas reads the manifest's ids as (1/rawframes: no such folder)."""
    (tmp_path / "in").mkdir()
    for stem, frames in (("001", 3), ("002", 4)):
        write_video(tmp_path / "in" / f"{stem}.mkv", width=32, height=32, num_frames=frames)
    out = tmp_path / "out"
    _run(tmp_path / "in", out)
    written_by_run = (out / "rawframes_flow.txt").read_text()
    result = CliRunner().invoke(main, ["annotations", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "rawframes_flow.txt").read_text() == written_by_run
    rows = _read_list(out / "rawframes_flow.txt")
    assert rows == [("001/rawframes", 2, -1), ("002/rawframes", 3, -1)]
    for frame_dir, total, _ in rows:
        paths = _frame_paths(out, frame_dir, "{}_{:05d}.jpg", 1, total, flow=True)
        assert all(p.is_file() for group in paths for p in group), frame_dir
