"""The speed benchmark runs and reports; the batched on-device augmentation does what it says."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cifar import bench
from cifar.dataset import BatchAugment, TensorBatches, augment_batch


def test_augment_batch_crops_flips_and_cuts():
    images = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 1, 32, 32).repeat(64, 3, 1, 1).to(torch.uint8)
    out, holes = augment_batch(images, torch.Generator().manual_seed(0), pad=4, cutout=8)
    assert out.shape == (64, 3, 32, 32) and holes.shape == (64, 1, 32, 32)
    assert not torch.equal(out, images.float())  # something moved
    areas = holes.sum((1, 2, 3))
    assert (areas <= 64).all() and (areas == 0).any() and (areas == 64).any()
    plain, no_holes = augment_batch(images[:4], torch.Generator().manual_seed(0), pad=0, cutout=0)
    assert not no_holes.any()
    for a, b in zip(plain, images[:4].float()):
        assert torch.equal(a, b) or torch.equal(a, b.flip(2))  # without padding: identity or a flip


def test_tensor_batches_normalize_shuffle_and_reproduce():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    test = TensorBatches(images, np.arange(10), 4, (0.5,) * 3, (0.25,) * 3, train=False)
    batches = list(test)
    assert [len(y) for _, y in batches] == [4, 4, 2] and len(test) == 3
    expected = (torch.from_numpy(images[:4]).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(batches[0][0], expected)
    train = TensorBatches(images, np.arange(10), 4, (0.5,) * 3, (0.25,) * 3, train=True, augment=BatchAugment(seed=3))
    first = [y.tolist() for _, y in train]
    train.generator.manual_seed(3)
    assert first == [y.tolist() for _, y in train]
    assert sorted(sum(first, [])) == list(range(10))


def test_fast_is_the_short_run_and_quick_its_hidden_old_name(capsys):
    assert bench.parse_args(["--fast"]).fast and bench.parse_args(["--quick"]).fast and not bench.parse_args([]).fast
    with pytest.raises(SystemExit):
        bench.parse_args(["--help"])
    usage = capsys.readouterr().out
    assert "--fast" in usage and "--quick" not in usage


def test_benchmark_fast_runs_and_reports(capsys):
    results = bench.main(["--fast", "--batch-size", "16", "--repeats", "1", "--device", "cpu"])
    printed = capsys.readouterr().out.strip().splitlines()
    record = json.loads(printed[-1])
    for key in ("device", "baseline_img_s", "default_img_s", "speedup", "eval_img_s", "bound_tflops"):
        assert key in record
    assert record["speedup"] == round(results["default_img_s"] / results["baseline_img_s"], 4)
    assert all(record[k] > 0 for k in ("baseline_img_s", "default_img_s", "tensor_img_s", "eval_img_s"))
    assert 0.3 < record["gmac_per_image"] < 0.45  # about 0.38 GMAC per 32x32 image
    assert any("baseline" in line for line in printed)
    for path in ("baseline", "default", "tensor"):  # one timed step: its wait for data and its compute make its rate
        data_ms, step_ms = results[f"{path}_data_ms"], results[f"{path}_step_ms"]
        assert data_ms >= 0 and step_ms > 0
        assert results[f"{path}_img_s"] == pytest.approx(16 / ((data_ms + step_ms) / 1000), rel=1e-6)


def test_precision_equivalence_trains_both_paths_on_the_same_batches(tmp_path, capsys):
    plot, saved = tmp_path / "equivalence.png", tmp_path / "records" / "equivalence.json"
    results = bench.main(["--equivalence", "6", "--batch-size", "8", "--device", "cpu", "--test-images", "40",
                          "--plot", str(plot), "--precision", "bf16", "--record", str(saved)])  # fmt: skip
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == f"record: {saved}"
    record = json.loads(printed[-2])
    assert record["autocast"] == "bfloat16" and record["reference"] == "float32"  # forced, whatever the CPU has
    kept = json.loads(saved.read_text())  # the record keeps the curves (the figure can be drawn from it)
    assert kept["command"].startswith("python -m cifar.bench --equivalence 6") and kept["torch"] == torch.__version__
    assert kept["fp32_losses"] == results["fp32_losses"] and kept["default_test_acc"] == results["default_test_acc"]
    assert "fp32_losses" not in record and record["steps"] == 6 and record["test_images"] == 40
    fp32, fast = results["fp32_losses"], results["default_losses"]
    assert len(fp32) == len(fast) == 6 and all(np.isfinite(fp32 + fast))
    # same initial weights and the same first batch: the first losses differ only by the precision
    assert abs(fp32[0] - fast[0]) < 0.05
    assert 0 <= record["fp32_test_acc"] <= 100 and 0 <= record["default_test_acc"] <= 100
    assert plot.is_file() and plot.stat().st_size > 1000


def test_benchmark_images_are_a_random_draw_of_all_classes(cifar10_root, monkeypatch):
    monkeypatch.setenv("CIFAR_DATA_DIR", str(cifar10_root.parent))
    images, labels, source = bench._images(200)
    assert source == "real CIFAR-10" and images.shape == (200, 32, 32, 3)
    assert len(np.unique(labels)) == 10  # the archive is sorted by class: the first 200 would be one class


def test_table_names_the_precision_each_path_used():
    results = {"device": "CPU", "batch_size": 8, "baseline_img_s": 10.0, "default_img_s": 20.0, "tensor_img_s": 20.0,
               "eval_img_s": 50.0, "reached_tflops": 0.1, "gmac_per_image": 0.38, "bound_tflops": 0.2,
               "fraction_of_bound": 0.5}  # fmt: skip
    paths = ("baseline", "default", "tensor")
    results.update({f"{path}_{key}": 1.0 for path in paths for key in ("data_ms", "step_ms")})
    with_bf16 = bench.format_table({**results, "autocast": "bfloat16"})
    assert "default: bfloat16 autocast, channels-last" in with_bf16
    assert "0.20 TFLOP/s bfloat16 matmul bound" in with_bf16
    without = bench.format_table({**results, "autocast": "none (fp32)"})  # a CPU without native bf16
    assert "default: fp32 (no autocast), channels-last" in without and "0.20 TFLOP/s float32 matmul bound" in without
    assert "None" not in without and "2.00x" in without
    assert "data ms" in without.splitlines()[1] and "keeps up" in without


def test_photo_loader_rates_time_the_lessons_loaders(tmp_path, capsys):
    """--time-loader times the raccoon and fish training loaders: at most 2 batches after the first, in fast mode."""
    from cifar import fish, raccoon

    root = os.environ.get("CIFAR_DATA_DIR")
    if not root or not all((Path(root) / name).is_dir() for name in ("raccoon", "fish_egu2017")):
        pytest.skip("the raccoon and fish photos are absent: set CIFAR_DATA_DIR to a folder holding both")
    saved = tmp_path / "fish_loader.json"
    results = {
        **raccoon.main(["--time-loader", "--fast"]),
        **fish.main(["--time-loader", "--fast", "--record", str(saved)]),
    }
    record = json.loads(saved.read_text())
    assert record["command"] == f"python -m cifar.fish --time-loader --fast --record {saved}"
    assert record["fish_img_s"] == results["fish_img_s"]
    assert results["raccoon_images"] == 2 * 16 and results["fish_images"] == 2 * 128  # their lessons' batch sizes
    assert results["raccoon_img_s"] > 0 and results["fish_img_s"] > 0
    out = capsys.readouterr().out
    assert "raccoon photos' training loader, 2 workers:" in out and "fish photos' training loader" in out


def test_loader_rate_counts_every_batch_after_the_first(capsys):
    results = bench.main(["--loader", "--fast", "--batch-size", "8"])
    assert results["images"] == 8 * 4 and results["workers"] == 2 and results["loader_img_s"] > 0
    assert "images/s over 32 images" in capsys.readouterr().out


def test_benchmark_record_holds_the_table_and_the_command(tmp_path, capsys):
    saved = tmp_path / "bench.json"
    args = ["--fast", "--batch-size", "8", "--repeats", "1", "--device", "cpu", "--precision", "fp32"]
    results = bench.main([*args, "--record", str(saved)])
    record = json.loads(saved.read_text())
    assert record["command"] == "python -m cifar.bench " + " ".join(args) + f" --record {saved}"
    assert record["autocast"] == "none (fp32)" and record["default_img_s"] == results["default_img_s"]
    assert {"date", "python", "torch", "device"} <= set(record)
    table = bench.format_table(record)  # the page's table is the record's
    assert f"{record['baseline_img_s']:.0f}" in table
