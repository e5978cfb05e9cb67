"""The ``evaluate`` command and its library: metrics, conventions, outputs, estimators."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.estimators import DisEstimator
from pipeline.evaluate import PAIR_COLUMNS, evaluate_dataset, pair_metrics, resolve_pad_mode
from stages.flow_io import write_flo, write_kitti_png
from stages.image_io import write_image
from stages.training.readers import FlowPair, open_reader
from stages.training.textures import procedural_texture

SUMMARY_METRICS = {
    "pairs", "valid_pixels", "nonfinite_pixels", "epe_pixel_mean", "epe_pair_mean",
    "outlier_1px", "outlier_3px", "outlier_5px", "fl_all", "occluded_pixels", "epe_occ",
    "epe_noc",
}  # fmt: skip


def _shifted_folder(root: Path, *, pairs: int, shift: int, height: int, width: int) -> None:
    """A ``folder`` data set: frame 2 is frame 1 moved ``shift`` px right; GT flow = shift."""
    for i in range(pairs):
        texture = procedural_texture(np.random.default_rng(i), max(height, width) + shift, "noise")
        image1 = np.ascontiguousarray(texture[:height, shift : shift + width])
        image2 = np.ascontiguousarray(texture[:height, :width])
        flow = np.zeros((height, width, 2), np.float32)
        flow[..., 0] = shift
        write_image(root / "img1" / f"p{i}.png", image1)
        write_image(root / "img2" / f"p{i}.png", image2)
        write_flo(root / "flow" / f"p{i}.flo", flow)


def test_pair_metrics_on_hand_made_flows_are_exact() -> None:
    gt = np.array([[[0, 0], [10, 0]], [[0, 0], [100, 0]]], np.float64)
    error = np.array([[[0.5, 0], [0, 2]], [[3, 4], [0, 4]]], np.float64)  # EPE 0.5, 2, 5, 4
    occluded = np.array([[False, True], [True, False]])
    m = pair_metrics(gt + error, gt, occluded=occluded)
    assert m["valid_pixels"] == 4
    assert m["epe"] == pytest.approx(11.5 / 4, abs=1e-12)
    # e = 5 is not within 5 px: 1 - outlier is RAFT's accuracy mean(e < 5), ties included
    assert (m["outlier_1px"], m["outlier_3px"], m["outlier_5px"]) == (0.75, 0.5, 0.25)
    # Fl: > 3 px and > 5 % of |gt|: EPE 5 at |gt| 0 is one; EPE 4 at |gt| 100 is not
    assert m["fl"] == 0.25
    assert m["epe_occ"] == pytest.approx(3.5, abs=1e-12)
    assert m["epe_noc"] == pytest.approx(2.25, abs=1e-12)
    assert m["occluded_pixels"] == 2 and m["has_occlusion"]

    valid = np.array([[1, 0], [1, 0]], np.float32)
    m = pair_metrics(gt + error, gt, valid, occluded)
    assert m["valid_pixels"] == 2 and m["epe"] == pytest.approx(2.75, abs=1e-12)
    assert m["fl"] == 0.5 and m["epe_occ"] == 5.0 and m["epe_noc"] == 0.5
    m = pair_metrics(gt, gt, np.zeros((2, 2)))
    assert m["valid_pixels"] == 0 and math.isnan(m["epe"]) and math.isnan(m["epe_occ"])
    with pytest.raises(ValueError, match=r"\(2, 2, 2\) and \(2, 3, 2\)"):
        pair_metrics(gt, np.zeros((2, 3, 2)))


def test_set_means_follow_both_conventions() -> None:
    """Pixel mean (Sintel) and pair mean (KITTI) differ when pairs have different valid counts."""
    image = np.zeros((2, 2, 3), np.uint8)
    first = FlowPair(image, image, np.full((2, 2, 2), [3.0, 4.0], np.float32),
                     np.ones((2, 2), np.float32), sequence="s1", frame=0)  # fmt: skip
    valid = np.zeros((2, 2), np.float32)
    valid[0, 0] = 1
    occluded = np.array([[True, False], [False, False]])
    second = FlowPair(image, image, np.full((2, 2, 2), [1.0, 0.0], np.float32), valid,
                      occluded=occluded, sequence="s2", frame=3, name="two")  # fmt: skip

    def zero(image1: np.ndarray, image2: np.ndarray) -> np.ndarray:
        return np.zeros((*image1.shape[:2], 2), np.float32)

    result = evaluate_dataset([first, second], zero, dataset="hand-made")
    m = result.summary["metrics"]
    assert m["pairs"] == 2 and m["valid_pixels"] == 5
    assert m["epe_pixel_mean"] == pytest.approx((4 * 5 + 1) / 5, abs=1e-12)
    assert m["epe_pair_mean"] == pytest.approx((5 + 1) / 2, abs=1e-12)
    assert m["fl_all"] == pytest.approx(0.8, abs=1e-12)
    assert m["outlier_3px"] == pytest.approx(0.8, abs=1e-12)
    assert m["epe_occ"] == pytest.approx(1.0) and math.isnan(m["epe_noc"])
    assert list(result.pairs.columns) == list(PAIR_COLUMNS)
    assert result.pairs["name"].tolist() == ["s1/000000", "two"]
    assert result.sequences["sequence"].tolist() == ["s1", "s2"]
    assert result.sequences["epe_pixel_mean"].tolist() == pytest.approx([5.0, 1.0])
    assert evaluate_dataset([first, second], zero, max_pairs=1).summary["pairs"] == 1


def test_nan_estimates_never_score_better_than_wrong_ones(caplog) -> None:
    """A NaN pixel is an outlier for every rate and makes the means it enters NaN (the set's
    too); a pair without valid pixels still leaves the means alone."""
    image = np.zeros((2, 2, 3), np.uint8)
    truth = np.zeros((2, 2, 2), np.float32)
    everywhere, nowhere = np.ones((2, 2), np.float32), np.zeros((2, 2), np.float32)
    wrong = FlowPair(image, image, truth, everywhere, name="wrong")
    broken = FlowPair(image, image, truth, everywhere, name="broken")
    empty = FlowPair(image, image, truth, nowhere, name="empty")
    estimates = iter([
        np.full((2, 2, 2), 5.0),  # wrong: 5 sqrt(2) px everywhere
        np.array([[[np.nan, 0], [9, 0]], [[0, np.inf], [0, 0]]]),  # broken: 2 NaN / inf pixels
        np.full((2, 2, 2), np.nan),  # empty: no valid pixel to count it at
    ])  # fmt: skip
    result = evaluate_dataset([wrong, broken, empty], lambda a, b: next(estimates))
    rows = result.pairs.set_index("name")
    assert rows.loc["broken", "nonfinite_pixels"] == 2 and math.isnan(rows.loc["broken", "epe"])
    assert rows.loc["broken", "outlier_5px"] == 0.75  # 2 non-finite + the 9 px pixel
    assert rows.loc["broken", "fl"] == 0.75 and rows.loc["empty", "nonfinite_pixels"] == 0
    m = result.summary["metrics"]
    assert m["nonfinite_pixels"] == 2
    assert math.isnan(m["epe_pixel_mean"]) and math.isnan(m["epe_pair_mean"])
    assert m["outlier_3px"] == pytest.approx(7 / 8)
    assert "1 of 3 pairs have NaN or infinite estimates at 2 valid pixels" in caplog.text
    estimates = iter([np.full((2, 2, 2), 5.0), np.full((2, 2, 2), np.nan)])
    clean = evaluate_dataset([wrong, empty], lambda a, b: next(estimates)).summary["metrics"]
    assert clean["epe_pixel_mean"] == pytest.approx(5 * 2**0.5)  # the empty pair counts for 0


def test_dis_recovers_an_integer_shift_and_the_cli_writes_the_tables(tmp_path: Path) -> None:
    _shifted_folder(tmp_path / "data", pairs=2, shift=2, height=48, width=64)
    # the library on the reader's raw pairs
    result = evaluate_dataset(open_reader("folder", tmp_path / "data"), DisEstimator())
    assert result.summary["metrics"]["epe_pixel_mean"] < 0.1
    assert result.summary["model"] == "dis"

    out = tmp_path / "eval"
    run = CliRunner().invoke(
        main,
        ["evaluate", "folder", "--root", str(tmp_path / "data"), "--model", "dis",
         "--no-progress", "-o", str(out)],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    assert "EPE, mean over pixels" in run.output
    pairs = pd.read_csv(out / "pairs.csv")
    assert list(pairs.columns) == list(PAIR_COLUMNS) and len(pairs) == 2
    assert pairs["name"].tolist() == ["p0", "p1"] and (pairs["epe"] < 0.1).all()
    assert (pairs["outlier_1px"] == 0).all()
    pd.testing.assert_frame_equal(pd.read_parquet(out / "pairs.parquet"), pairs,
                                  check_dtype=False)  # fmt: skip
    sequences = pd.read_csv(out / "sequences.csv")
    assert sequences["sequence"].tolist() == ["p0", "p1"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "folder" and summary["model"] == "dis"
    assert summary["split"] == "training" and summary["pairs"] == 2
    assert set(summary["metrics"]) == SUMMARY_METRICS
    assert summary["metrics"]["epe_occ"] is None  # no occlusion masks: JSON null, not NaN
    assert summary["seconds_per_pair"] > 0
    assert not list(out.glob(".*.tmp"))


def test_every_pixel_scores_sintel_invalid_pixels_as_raft_validate_sintel(
    tmp_path: Path,
) -> None:
    """``--pixels all`` counts Sintel's invalid pixels and huge flows against the file's values."""
    base = tmp_path / "sintel" / "training"
    for t in (1, 2):
        write_image(base / "clean" / "s" / f"frame_{t:04d}.png", np.zeros((8, 10, 3), np.uint8))
    truth = np.zeros((8, 10, 2), np.float32)
    truth[..., 0] = 1.0
    truth[:, :2, 0] = 10.0  # marked invalid below
    truth[7, 9] = (3000.0, 4000.0)  # beyond the 1000 px rule: unknown unless every pixel counts
    write_flo(base / "flow" / "s" / "frame_0001.flo", truth)
    invalid = np.zeros((8, 10), np.uint8)
    invalid[:, :2] = 255
    write_image(base / "invalid" / "s" / "frame_0001.png", invalid)

    def still(image1: np.ndarray, image2: np.ndarray) -> np.ndarray:
        return np.zeros((*image1.shape[:2], 2), np.float32)

    reader = open_reader("sintel", tmp_path / "sintel")
    valid = evaluate_dataset(reader, still)
    assert valid.summary["pixels"] == "valid"
    assert valid.summary["metrics"]["valid_pixels"] == 8 * 8 - 1
    assert valid.summary["metrics"]["epe_pixel_mean"] == pytest.approx(1.0)
    every = evaluate_dataset(reader, still, every_pixel=True)
    assert every.summary["pixels"] == "all" and every.summary["metrics"]["valid_pixels"] == 80
    expected = np.linalg.norm(truth, axis=-1).mean()  # 5000 px at one pixel, 10 px at 16
    assert every.summary["metrics"]["epe_pixel_mean"] == pytest.approx(expected)

    out = tmp_path / "eval"
    run = CliRunner().invoke(
        main,
        ["evaluate", "sintel", "--root", str(tmp_path / "sintel"), "--model", "dis",
         "--pixels", "all", "--no-progress", "-o", str(out)],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pixels"] == "all" and summary["metrics"]["valid_pixels"] == 80
    kitti = tmp_path / "kitti" / "training"
    write_image(kitti / "image_2" / "000000_10.png", np.zeros((8, 10, 3), np.uint8))
    write_image(kitti / "image_2" / "000000_11.png", np.zeros((8, 10, 3), np.uint8))
    write_kitti_png(kitti / "flow_occ" / "000000_10.png", truth[..., :2] * 0, np.ones((8, 10)))
    run = CliRunner().invoke(
        main,
        ["evaluate", "kitti", "--root", str(tmp_path / "kitti"), "--model", "dis",
         "--pixels", "all", "-o", str(tmp_path / "eval-kitti")],
    )  # fmt: skip
    assert run.exit_code == 2 and "only at its valid pixels" in run.output
    # A folder data set with one KITTI PNG among .flo files: refused before any estimate.
    folder = tmp_path / "mixed"
    _shifted_folder(folder, pairs=2, shift=1, height=8, width=10)
    (folder / "flow" / "p1.flo").unlink()
    write_kitti_png(folder / "flow" / "p1.png", np.ones((8, 10, 2)), np.ones((8, 10)))
    run = CliRunner().invoke(
        main,
        ["evaluate", "folder", "--root", str(folder), "--model", "dis", "--pixels", "all",
         "-o", str(tmp_path / "eval-mixed")],
    )  # fmt: skip
    assert run.exit_code == 2 and "p1.png: sparse ground truth (KITTI PNG)" in run.output
    assert not (tmp_path / "eval-mixed").exists()


def test_raft_small_with_random_weights_runs_through_the_cli(
    tmp_path: Path, parity_dir: Path
) -> None:
    root = tmp_path / "data"
    image = procedural_texture(np.random.default_rng(0), 136, "dead_leaves")
    write_image(root / "img1" / "a.png", image[:128, :128])
    write_image(root / "img2" / "a.png", image[4:132, 3:131])
    valid = np.zeros((128, 128), bool)
    valid[::4, ::4] = True
    write_kitti_png(root / "flow" / "a.png", np.full((128, 128, 2), -3.0), valid)
    checkpoint = parity_dir / "raft_small_random.pth"
    out = tmp_path / "eval"
    run = CliRunner().invoke(
        main,
        ["evaluate", "folder", "--root", str(root), "--model", "raft-small", "--checkpoint",
         str(checkpoint), "--iters", "2", "--device", "cpu", "--no-progress", "-o", str(out)],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "raft-small" and summary["iters"] == 2
    assert summary["pad_mode"] == "sintel"
    assert summary["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert summary["metrics"]["valid_pixels"] == 32 * 32
    assert math.isfinite(summary["metrics"]["epe_pixel_mean"])


def test_generated_sets_carry_occlusion_masks(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    run = CliRunner().invoke(
        main,
        ["evaluate", "layered", "--pairs", "1", "--model", "dis", "--no-progress",
         "-o", str(out)],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "layered" and summary["pairs"] == 1
    assert summary["metrics"]["valid_pixels"] == 320 * 448
    assert summary["metrics"]["epe_noc"] is not None


def test_pad_mode_auto_follows_the_data_set() -> None:
    assert resolve_pad_mode("auto", "kitti") == "kitti"
    assert resolve_pad_mode("auto", "hd1k") == "kitti"
    assert resolve_pad_mode("auto", "sintel") == "sintel"
    assert resolve_pad_mode("sintel", "kitti") == "sintel"


def test_cli_errors_are_one_line_and_name_the_problem(tmp_path: Path) -> None:
    runner = CliRunner()
    out = str(tmp_path / "eval")
    run = runner.invoke(main, ["evaluate", "kitti", "--model", "dis", "-o", out])
    assert run.exit_code != 0 and "needs --root" in run.output
    missing = tmp_path / "nowhere"
    run = runner.invoke(main, ["evaluate", "sintel", "--root", str(missing), "-o", out])
    assert run.exit_code != 0 and str(missing) in run.output
    run = runner.invoke(main, ["evaluate", "layered", "--model", "pwc", "-o", out])
    assert run.exit_code != 0 and "pwc" in run.output
    _shifted_folder(tmp_path / "data", pairs=1, shift=1, height=16, width=16)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    run = runner.invoke(
        main,
        ["evaluate", "folder", "--root", str(tmp_path / "data"), "--model", "raft-small",
         "--checkpoint", str(bad), "--device", "cpu", "-o", out],
    )  # fmt: skip
    assert run.exit_code == 1 and str(bad) in run.output
    assert run.output.startswith("Error:") and "Traceback" not in run.output
    assert not Path(out).exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    run = runner.invoke(main, ["evaluate", "layered", "--model", "dis", "--pairs", "1",
                               "-o", str(blocker / "eval")])  # fmt: skip
    assert run.exit_code == 1 and "is a file, not a folder" in run.output
    assert run.output.startswith("Error:")  # at once, before any pair is evaluated


def test_a_failed_rerun_leaves_no_earlier_tables(tmp_path: Path) -> None:
    """A second evaluation into the same folder that fails (a broken ground-truth file) must
    not leave the first run's complete-looking pairs.csv / summary.json behind."""
    data, out = tmp_path / "data", tmp_path / "eval"
    _shifted_folder(data, pairs=2, shift=2, height=32, width=48)
    args = ["evaluate", "folder", "--root", str(data), "--model", "dis", "--no-progress",
            "-o", str(out)]  # fmt: skip
    assert CliRunner().invoke(main, args).exit_code == 0
    assert (out / "summary.json").is_file()
    (data / "flow" / "p1.flo").write_bytes((data / "flow" / "p1.flo").read_bytes()[:100])
    run = CliRunner().invoke(main, args)
    assert run.exit_code != 0 and "p1.flo" in run.output
    assert not [p.name for p in out.iterdir()]


def test_every_pixel_refuses_non_finite_ground_truth(tmp_path: Path) -> None:
    """With --pixels all a NaN in a .npy ground truth is the data's fault, not the
    estimate's: a clear error naming the pair, not 'NaN or infinite estimates'."""
    image = procedural_texture(np.random.default_rng(0), 32, "noise")[:24, :32]
    flow = np.zeros((24, 32, 2), np.float32)
    flow[:2, :2] = np.nan
    pair = FlowPair(image, image, flow, np.ones((24, 32), np.float32), name="p0")
    with pytest.raises(ValueError, match="p0: the ground truth is NaN or infinite at 4 pixels"):
        evaluate_dataset([pair], lambda a, b: np.zeros((24, 32, 2), np.float32), every_pixel=True)
    # the valid pixels only: NaN ground truth is unknown, the pair scores
    pair = FlowPair(image, image, np.nan_to_num(flow), np.isfinite(flow).all(-1).astype(np.float32))
    result = evaluate_dataset([pair], lambda a, b: np.zeros((24, 32, 2), np.float32))
    assert result.summary["metrics"]["valid_pixels"] == 24 * 32 - 4
