"""Class indices and official splits (UCF101, HMDB51) as the data sets ship them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.dataset_splits import (
    SplitFileError,
    assign_to_splits,
    default_class_order,
    read_class_index,
    read_official_splits,
)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_default_order_ignores_case_as_ucf101s_class_index() -> None:
    # plain sorted() gives HammerThrow before Hammering and JumpRope before JumpingJack
    names = ["JumpRope", "HammerThrow", "JumpingJack", "Hammering", "apply"]
    assert default_class_order(names) == [
        "apply", "Hammering", "HammerThrow", "JumpingJack", "JumpRope"
    ]  # fmt: skip
    assert default_class_order(["b", "B", "a", "b"]) == ["a", "B", "b"]


def test_class_index_formats(tmp_path: Path) -> None:
    one_based = _write(tmp_path / "classInd.txt", "2 Hammering\r\n1 Archery\n\n3 HammerThrow\n")
    assert read_class_index(one_based) == ("Archery", "Hammering", "HammerThrow")
    zero_based = _write(tmp_path / "zero.txt", "0 b\n1 a\n")
    assert read_class_index(zero_based) == ("b", "a")
    names = _write(tmp_path / "names.txt", "walk\nrun\n")
    assert read_class_index(names) == ("walk", "run")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 a\nb\n", "every line"),
        ("1 a\n3 b\n", "without gaps"),
        ("2 a\n3 b\n", "without gaps"),
        ("1 a\n2 a\n", "more than once"),
        ("a b c\n", "white space"),
        ("\n", "no class names"),
    ],
)
def test_bad_class_index_names_file_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path / "index.txt", text)
    with pytest.raises(SplitFileError, match=message) as caught:
        read_class_index(path)
    assert str(path) in str(caught.value)


def test_ucf101_split_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ucfTrainTestlist"
    _write(folder / "classInd.txt", "1 Hammering\n2 HammerThrow\n")
    _write(folder / "trainlist01.txt", "Hammering/v_Hammering_g08_c01.avi 1\n")
    _write(folder / "testlist01.txt", "HammerThrow/v_HammerThrow_g01_c01.avi\n")
    _write(folder / "trainlist02.txt", "HammerThrow/v_HammerThrow_g01_c01.avi 2\n")
    _write(folder / "testlist02.txt", "Hammering/v_Hammering_g08_c01.avi\n")
    splits = read_official_splits(folder)
    assert splits.dataset == "ucf101" and splits.class_index == ("Hammering", "HammerThrow")
    assert list(splits.splits) == ["train_split1", "test_split1", "train_split2", "test_split2"]
    assert splits.splits["test_split1"] == ("HammerThrow/v_HammerThrow_g01_c01.avi",)


def test_hmdb51_split_folder_keeps_train_and_test_codes(tmp_path: Path) -> None:
    folder = tmp_path / "testTrainMulti_7030_splits"
    _write(folder / "kick_ball_test_split1.txt", "a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    _write(folder / "kick_test_split1.txt", "d.avi 2\n")
    splits = read_official_splits(folder)
    assert splits.dataset == "hmdb51" and splits.class_index is None
    assert dict(splits.splits) == {"train_split1": ("a.avi",), "test_split1": ("b.avi", "d.avi")}
    _write(folder / "kick_test_split2.txt", "e.avi 3\n")
    with pytest.raises(SplitFileError, match=r"kick_test_split2.txt, line 1"):
        read_official_splits(folder)


def test_folder_without_split_files_is_refused(tmp_path: Path) -> None:
    _write(tmp_path / "notes.txt", "x\n")
    with pytest.raises(SplitFileError, match="no split files"):
        read_official_splits(tmp_path)


def test_entries_match_input_paths_by_their_last_components() -> None:
    videos = {  # video id -> input path; ids may carry a suffix that tells clashing inputs apart
        "UCF-101/HandstandPushups/v_HandStandPushups_g01_c01": (
            "UCF-101/HandstandPushups/v_HandStandPushups_g01_c01.avi"
        ),
        "UCF-101/Archery/v_a_g01_mp4": "UCF-101/Archery/v_a_g01.mp4",
    }
    ids = list(videos)
    splits = {
        # UCF101's lists spell the class folder differently from the folder itself
        "train_split1": ("HandStandPushups/v_HandStandPushups_g01_c01.avi", "Archery/v_x.avi"),
        "test_split1": ("v_a_g01.avi",),  # transcoded to .mp4: matched without extension
    }
    members = assign_to_splits(videos, splits)
    assert members.members == {"train_split1": (ids[0],), "test_split1": (ids[1],)}
    assert members.unmatched == {"train_split1": ("Archery/v_x.avi",), "test_split1": ()}
    with pytest.raises(SplitFileError, match="matches 2 videos"):
        assign_to_splits(
            {"a/clip": "a/clip.avi", "b/clip": "b/clip.avi"}, {"train_split1": ("clip",)}
        )
