"""Training engine: metrics, one-cycle shape, exact resume, the LR range test, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cifar import s10, train
from cifar.dataset import AlbumentationsDataset, make_loader, train_transforms
from cifar.scheduler import lr_trace, make_optimizer, one_cycle
from cifar.utils import autocast_dtype, derive_seed, seed_everything, seed_loader


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).relu().mean((2, 3)))


def _loaders(n=96, batch=16):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    train_set = AlbumentationsDataset(images, labels, train_transforms((0.5,) * 3, (0.25,) * 3))
    test_set = AlbumentationsDataset(images[:32], labels[:32])
    return make_loader(train_set, batch, train=True, seed=3, num_workers=0), make_loader(test_set, 16, train=False)


def _run(epochs, folder, stop_after=None):
    seed_everything(0)
    model = Tiny()
    train_loader, test_loader = _loaders()
    optimizer = make_optimizer("sgd", model.parameters(), 0.01)
    schedule = one_cycle(optimizer, 0.1, epochs, len(train_loader))
    options = train.FitOptions(
        device=torch.device("cpu"),
        seed=5,
        checkpoint_dir=folder,
        config={"epochs": epochs},
        progress=False,
        log=lambda *_: None,
    )
    result = train.fit(model, train_loader, test_loader, optimizer, schedule, stop_after or epochs, options)
    return model, result


def test_resume_continues_exactly(tmp_path):
    straight, straight_result = _run(3, tmp_path / "straight")
    _run(3, tmp_path / "interrupted", stop_after=1)  # "interrupted" after epoch 1
    resumed, resumed_result = _run(3, tmp_path / "interrupted")
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [r["train_loss"] for r in straight_result.history] == [r["train_loss"] for r in resumed_result.history]
    assert straight_result.lrs == resumed_result.lrs
    saved = json.loads((tmp_path / "interrupted" / "history.json").read_text())
    assert [row["epoch"] for row in saved] == [1, 2, 3]


class _StopAfter:
    """A loader that is interrupted (KeyboardInterrupt) after ``n`` batches in all, like a run stopped mid-epoch."""

    def __init__(self, loader, n: int):
        self.loader, self.n = loader, n

    def __getattr__(self, name):  # generator, dataset: what seed_loader reseeds
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            if self.n == 0:
                raise KeyboardInterrupt
            self.n -= 1
            yield batch


def test_resume_within_an_epoch_continues_exactly(tmp_path):
    def run(folder, stop_after=None):
        seed_everything(0)
        model = nn.Sequential(Tiny(), nn.Dropout(0.5))  # dropout: the global RNG must continue too
        train_loader, test_loader = _loaders()  # 6 batches an epoch
        if stop_after is not None:
            train_loader = _StopAfter(train_loader, stop_after)
        optimizer = make_optimizer("sgd", model.parameters(), 0.01)
        schedule = one_cycle(optimizer, 0.1, 2, 6)
        options = train.FitOptions(
            device=torch.device("cpu"),
            seed=5,
            checkpoint_dir=folder,
            config={"epochs": 2},
            progress=False,
            checkpoint_minutes=0,
            log=logs.append,
        )
        result = train.fit(model, train_loader, test_loader, optimizer, schedule, 2, options)
        return model, result

    logs = []
    straight, straight_result = run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "interrupted", stop_after=9)  # in epoch 2, after its batch 3
    state = torch.load(tmp_path / "interrupted" / train.CHECKPOINT_NAME, weights_only=False)
    assert state["epoch"] == 1 and state["partial"]["steps"] == 3 and len(state["partial"]["lrs"]) == 3
    resumed, resumed_result = run(tmp_path / "interrupted")
    assert "in epoch 2 of 2, after its batch 3" in logs[-2]  # the resume message, then epoch 2
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert straight_result.lrs == resumed_result.lrs and len(resumed_result.lrs) == 12
    columns = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")
    assert [[row[c] for c in columns] for row in straight_result.history] == [
        [row[c] for c in columns] for row in resumed_result.history
    ]
    assert torch.load(tmp_path / "interrupted" / train.CHECKPOINT_NAME, weights_only=False)["partial"] is None


def test_derived_seeds_are_fixed_and_apart():
    assert derive_seed(1, "epoch", 3) == derive_seed(1, "epoch", np.int64(3)) == derive_seed(1, "epoch", 3)
    seeds = {derive_seed(seed, "epoch", epoch) for seed in range(3) for epoch in range(1001)}
    seeds |= {derive_seed(seed, key) for seed in range(3) for key in ("model", "lr range test")}
    assert len(seeds) == 3 * 1001 + 6  # seed * 1000 + epoch would give seed 1's epoch 1000 seed 2's epoch 0
    assert all(0 <= seed < 2**32 for seed in seeds)


def test_seed_loader_makes_a_pass_a_function_of_the_seed():
    loader, _ = _loaders()

    def one_pass(seed):
        seed_loader(loader, seed)
        images, labels = zip(*loader)  # shuffled and augmented
        return torch.cat(images), torch.cat(labels), torch.rand(3)  # and the global RNG after it

    first, other, again = one_pass(7), one_pass(8), one_pass(7)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0]) and not torch.equal(first[1], other[1])


def test_building_a_model_leaves_the_callers_random_stream_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    model = s10.s10_model(s10.S10Config())
    assert torch.equal(torch.rand(3), expected)
    for a, b in zip(model.state_dict().values(), s10.s10_model(s10.S10Config()).state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the config's seed alone sets the weights
    other = s10.s10_model(s10.S10Config(seed=2)).prep[0].weight
    assert not torch.equal(model.prep[0].weight, other)


def test_resume_refuses_another_config(tmp_path):
    _run(2, tmp_path, stop_after=1)
    with pytest.raises(ValueError, match="different configuration"):
        _run(3, tmp_path)


def test_history_rows_and_true_mean_test_loss(tmp_path):
    model, result = _run(1, tmp_path)
    row = result.history[0]
    assert set(row) >= {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"}
    _, test_loader = _loaders()
    cpu = torch.device("cpu")
    logits, labels = train.predict(model, test_loader, cpu, autocast_dtype(cpu))  # as fit evaluates
    expected = nn.functional.cross_entropy(logits, labels, reduction="sum").item() / len(labels)
    assert row["test_loss"] == pytest.approx(expected, rel=1e-5)
    assert row["test_acc"] == pytest.approx(100 * (logits.argmax(1) == labels).float().mean().item())


def test_eval_every_tests_every_nth_epoch_and_the_last():
    from cifar.utils import plot_history

    def run(eval_every: int):
        seed_everything(0)
        model, (train_loader, test_loader) = Tiny(), _loaders()
        optimizer = make_optimizer("sgd", model.parameters(), 0.01)
        options = train.FitOptions(
            device=torch.device("cpu"), seed=5, progress=False, eval_every=eval_every, log=lambda *_: None
        )
        return train.fit(model, train_loader, test_loader, optimizer, None, 5, options)

    result, every_epoch = run(2), run(1)
    tested = [row["epoch"] for row in result.history if row["test_acc"] is not None]
    assert tested == [2, 4, 5] and all(row["test_loss"] is None for row in result.history if row["epoch"] in (1, 3))
    assert [row["test_acc"] for row in every_epoch.history if row["epoch"] in tested] == [
        row["test_acc"] for row in result.history if row["epoch"] in tested
    ]  # skipping a test leaves the training unchanged
    assert [row["train_loss"] for row in result.history] == [row["train_loss"] for row in every_epoch.history]
    assert train.first_epoch_reaching(result.history, 0.0) == 2  # an untested epoch reaches nothing
    plot_history(result.history)  # untested epochs are gaps in the plot, not an error
    with pytest.raises(ValueError, match="eval_every"):
        train.fit(Tiny(), None, None, None, None, 1, train.FitOptions(device=torch.device("cpu"), eval_every=0))


def test_one_cycle_peaks_at_epoch_5_of_24():
    lrs = lr_trace(0.01, epochs=24, steps_per_epoch=10)
    assert len(lrs) == 240
    assert int(np.argmax(lrs)) == 50 - 1 or int(np.argmax(lrs)) == 50
    assert lrs.max() == pytest.approx(0.01)
    assert lrs[0] == pytest.approx(0.01 / 100)
    assert lrs[-1] == pytest.approx(0.01 / 100 / 100, rel=0.05)
    rising, falling = np.diff(lrs[:50]), np.diff(lrs[51:])
    assert (rising > 0).all() and (falling < 0).all()
    assert np.allclose(np.diff(rising), 0, atol=1e-9)  # linear


def test_grad_clip_limits_gradients():
    model = Tiny()
    train_loader, _ = _loaders(n=16, batch=16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    options = train.StepOptions(torch.device("cpu"), grad_clip=1e-4)
    train.train_one_epoch(model, train_loader, optimizer, nn.CrossEntropyLoss(), options=options)
    assert max(p.grad.abs().max().item() for p in model.parameters()) <= 1e-4


def test_lr_range_test_suggests_and_restores(tmp_path):
    from cifar.scheduler import find_lr

    seed_everything(0)
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_loader, _ = _loaders()
    optimizer = make_optimizer("adam", model.parameters(), 1e-7)
    result = find_lr(model, optimizer, nn.CrossEntropyLoss(), train_loader, torch.device("cpu"), 0.1, 20)
    assert len(result.lrs) == 20 and result.lrs[0] < result.lrs[-1] <= 0.1
    assert 1e-7 <= result.suggested_lr <= 0.1
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_lr_range_test_prints_nothing_of_torch_lr_finder(capfd):
    """torch-lr-finder's tqdm bar (a hundred fragments in a saved notebook) and its unformatted
    ``{finder_name}`` hint are silenced; the result says how many steps ran and for how long."""
    import torch_lr_finder.lr_finder as library

    from cifar.scheduler import find_lr

    seed_everything(0)
    bar = library.tqdm
    train_loader, _ = _loaders()
    optimizer = make_optimizer("sgd", Tiny().parameters(), 1e-5)
    capfd.readouterr()
    result = find_lr(Tiny(), optimizer, nn.CrossEntropyLoss(), train_loader, torch.device("cpu"), 10.0, 12)
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)
    assert library.tqdm is bar  # the library is left as it was
    assert len(result.lrs) <= 12 and result.seconds > 0


def test_the_range_test_command_writes_a_record_that_a_restore_draws(cifar10_root, tmp_path, capsys):
    args = ["--data-dir", str(cifar10_root), "--epochs", "2", "--batch-size", "32", "--finder-iters", "10",
            "--train-subset", "320", "--test-subset", "100"]  # fmt: skip
    record = s10.main([*args, "--range-test", str(tmp_path / "range_test.json")])
    assert json.loads((tmp_path / "range_test.json").read_text()) == record
    assert record["command"].startswith("python -m cifar.s10 ") and "--range-test" in record["command"]
    assert record["steps"] == len(record["lrs"]) == len(record["losses"]) <= 10 and record["seconds"] > 0
    assert "range test of" in capsys.readouterr().out.splitlines()[-1]  # one line, no progress bar
    config = s10.config_from_args(s10.parse_args(args))
    kept = s10.recorded_range_test(tmp_path / "range_test.json", config)
    assert kept["rerun_max_lr"] == record["suggested_lr"] and kept["finder"]["lrs"] == record["lrs"]
    assert kept["range_test_from"]["record"] == "range_test.json"
    with pytest.raises(ValueError, match="another recipe"):
        s10.recorded_range_test(tmp_path / "range_test.json", s10.S10Config())


def test_range_test_points_are_torch_lr_finders_and_the_title_gives_the_lr_used():
    from cifar.scheduler import range_test_figure, range_test_points, range_test_window, suggest_lr

    lrs = list(np.geomspace(1e-5, 10, 100))
    losses = list(2.3 - 1.5 / (1 + np.exp(-4 * (np.log10(lrs) + 2))) + 3 * (np.array(lrs) > 1))
    window = range_test_window(100, len(lrs))
    assert (window.start, window.stop) == (10, 95)  # torch-lr-finder's skip_start=10, skip_end=5
    steepest, lowest = range_test_points(lrs, losses, 100)
    assert steepest == lrs[10 + int(np.gradient(np.array(losses[10:95])).argmin())]  # torch-lr-finder's point
    assert lowest == lrs[10 + int(np.argmin(losses[10:95]))]
    # a loss that blows up and falls again: the steepest point is searched before the lowest loss only
    again = list(np.array(losses) - 4 * (np.array(lrs) > 3) * np.log10(np.array(lrs) / 3))
    steepest_again, lowest_again = range_test_points(lrs, again, 100)
    assert np.argmin(np.gradient(np.array(again[10:95]))) + 10 > lrs.index(lowest_again)  # the trap is there
    assert steepest_again == steepest and steepest_again < lowest_again
    assert suggest_lr(steepest, lowest, "min/10") == lowest / 10
    assert suggest_lr(steepest, lowest, "steepest") == steepest
    figure = range_test_figure(lrs, losses, 100, 0.152)
    assert "1.52e-01" in figure.axes[0].get_title()
    assert range_test_window(100, 60).stop == 55  # a test stopped early (the loss blew up) keeps its last points out


def test_run_time_and_results_come_from_the_history():
    history = [
        {"epoch": 1, "train_acc": 50.0, "test_acc": 60.0, "seconds": 100.0, "eval_seconds": 20.0},
        {"epoch": 2, "train_acc": 80.0, "test_acc": None, "seconds": 110.0, "eval_seconds": 0.0},
        {"epoch": 3, "train_acc": 95.0, "test_acc": 91.5, "seconds": 90.0, "eval_seconds": 10.0},
    ]
    assert train.run_seconds(history) == {"training": 300.0, "testing": 30.0, "total": 330.0}
    results = s10.run_results(history)
    assert (results["final_acc"], results["best_epoch"], results["first_epoch"]) == (91.5, 3, 3)
    assert results["training_min"] == 5.0 and results["testing_min"] == 0.5 and results["total_min"] == 5.5
    report = s10.run_report(history, "CPU: test")
    assert "final test accuracy: 91.50%" in report and "5.5 min = 5.0 min training + 0.5 min testing" in report


def test_label_smoothing_floor_is_the_least_smoothed_loss():
    classes, smoothing = 10, 0.2
    floor = train.label_smoothing_floor(classes, smoothing)
    assert floor == pytest.approx(0.8669, abs=1e-4) and train.label_smoothing_floor(classes, 0.0) == 0.0
    loss = nn.CrossEntropyLoss(label_smoothing=smoothing)
    targets = torch.arange(classes)
    target = torch.full((classes, classes), smoothing / classes) + (1 - smoothing) * torch.eye(classes)
    assert loss(target.log(), targets).item() == pytest.approx(floor, rel=1e-6)  # reached by the smoothed target
    torch.manual_seed(0)
    for scale in (1.0, 10.0, 100.0):  # and never beaten, however confident the prediction
        logits = torch.randn(1000, classes) * scale
        assert loss(logits, logits.argmax(1)).item() > floor


def test_cli_fast_run_writes_everything(cifar10_root, tmp_path):
    out = tmp_path / "run"
    summary = s10.main([
        "--data-dir", str(cifar10_root), "--out", str(out), "--weights", str(tmp_path / "w.pt"),
        "--epochs", "1", "--batch-size", "32", "--finder-iters", "20", "--train-subset", "320",
        "--test-subset", "100",
    ])  # fmt: skip
    for name in ("checkpoint.pt", "history.csv", "history.json", "summary.json", "lr_finder.png", "curves.png"):
        assert (out / name).is_file(), name
    record = json.loads((tmp_path / "w.json").read_text())
    assert record["architecture"] == "CustomResNet" and record["epochs"] == 1
    assert record["train_data_sha256"] == (cifar10_root / "SHA256SUMS").read_text().split()[0]
    assert record["recipe"]["max_lr"] == summary["max_lr"]
    state = torch.load(tmp_path / "w.pt")
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())


def test_cli_without_data_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CIFAR_DATA_DIR", raising=False)
    with pytest.raises(SystemExit) as stop:
        s10.main(["--out", str(tmp_path / "run")])
    assert "CIFAR_DATA_DIR" in str(stop.value) and "--data-dir" in str(stop.value)


def test_flip_test_time_augmentation_averages_both_views():
    seed_everything(0)
    model = Tiny().eval()
    _, test_loader = _loaders()
    cpu = torch.device("cpu")
    plain, labels = train.predict(model, test_loader, cpu)
    both, _ = train.predict(model, test_loader, cpu, tta="flip")
    inputs = torch.cat([x for x, _ in test_loader]).float() / 255
    with torch.no_grad():
        mirrored = model(inputs.flip(3))
    torch.testing.assert_close(both, (plain + mirrored) / 2, atol=1e-5, rtol=1e-5)


def test_short_recipe_is_pages_resnet9_recipe():
    config = s10.s10_short_recipe()
    assert (config.epochs, config.optimizer, config.max_lr, config.label_smoothing) == (11, "sgd", 0.4, 0.2)
    assert config.eval_every == 6 and s10.S10Config().eval_every == 1  # the lesson tests every epoch
    assert (config.loader, config.flip_tta, config.logit_scale) == ("tensor", True, 0.125)
    assert s10.s10_model(config).logit_scale == 0.125
    with pytest.raises(ValueError, match="loader must be one of"):
        s10.S10Config(loader="tensors")


def test_cli_short_recipe_runs_and_records_its_recipe(cifar10_root, tmp_path):
    summary = s10.main([
        "--recipe", "short", "--data-dir", str(cifar10_root), "--out", str(tmp_path / "run"),
        "--weights", str(tmp_path / "w.pt"), "--epochs", "1", "--train-subset", "600", "--test-subset", "100",
    ])  # fmt: skip
    assert summary["max_lr"] == 0.4 and "finder" not in summary  # the recipe gives its peak LR
    record = json.loads((tmp_path / "w.json").read_text())
    assert record["recipe"]["optimizer"] == "sgd" and record["recipe"]["max_lr_from"] == "given"
    assert record["recipe"]["augmentation"] == "cifar.dataset.TensorBatches"
    model, _ = s10.load_s10_weights(tmp_path / "w.pt")
    assert model.logit_scale == 0.125

    # a run resumed on another machine says so: its timings mix two machines
    here = summary["device"]
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    (tmp_path / "run" / "summary.json").write_text(json.dumps({**saved, "device": "CPU: another machine"}))
    for _ in range(2):  # resuming twice on this machine names it once
        resumed = s10.main([
            "--recipe", "short", "--data-dir", str(cifar10_root), "--out", str(tmp_path / "run"),
            "--weights", str(tmp_path / "w.pt"), "--epochs", "1", "--train-subset", "600", "--test-subset", "100",
        ])  # fmt: skip
        assert resumed["device"] == f"CPU: another machine, resumed on {here}"
    assert json.loads((tmp_path / "w.json").read_text())["device"] == resumed["device"]


def test_recipes_and_command_line_overrides():
    lesson, original = s10.S10Config(), s10.s10_original_recipe()
    assert (lesson.optimizer, lesson.weight_decay, lesson.label_smoothing) == ("sgd", 5e-4, 0.2)
    assert (original.optimizer, original.weight_decay, original.label_smoothing) == ("adam", 1e-4, 0.0)
    assert (original.finder_start_lr, original.finder_end_lr, original.logit_scale) == (1e-7, 0.1, 1.0)
    assert (lesson.loader, lesson.flip_tta, original.loader, original.flip_tta) == ("albumentations", False) * 2
    assert (lesson.finder_rule, original.finder_rule) == ("steepest", "min/10")
    assert lesson.epochs == original.epochs == 24 and lesson.pct_start == original.pct_start == 5 / 24
    assert s10.s10_model(lesson).logit_scale == 0.125 and s10.s10_model(original).logit_scale == 1.0
    smoke = s10.s10_config(fast=True, recipe="original")
    assert (smoke.optimizer, smoke.epochs, smoke.train_subset) == ("adam", 2, 320)
    assert s10.config_from_args(s10.parse_args([])) == lesson
    assert s10.config_from_args(s10.parse_args(["--recipe", "original"])) == original
    args = s10.parse_args(["--recipe", "original", "--epochs", "3", "--label-smoothing", "0.1"])
    tuned = s10.config_from_args(args)
    assert (tuned.optimizer, tuned.epochs, tuned.label_smoothing, tuned.weight_decay) == ("adam", 3, 0.1, 1e-4)


def test_recipe_fast_is_a_hidden_alias_of_the_short_recipe(capsys):
    """`--recipe fast` (quoted by weights/s10_fast_recipe.json) gives the short recipe but is not offered."""
    short = s10.s10_short_recipe()
    for argv in ([], ["--fast"], ["--epochs", "3", "--trick", "whiten_init=on"]):
        alias = s10.config_from_args(s10.parse_args(["--recipe", "fast", *argv]))
        assert alias == s10.config_from_args(s10.parse_args(["--recipe", "short", *argv]))
    assert s10.config_from_args(s10.parse_args(["--recipe", "fast"])) == short
    assert s10.s10_config(recipe="fast") == short and s10.s10_config(True, "fast") == s10.s10_config(True, "short")
    assert "fast" not in s10.RECIPES
    with pytest.raises(SystemExit):
        s10.parse_args(["--help"])
    usage = capsys.readouterr().out
    assert "{lesson,original,short,tricks}" in usage and "fast:" not in usage
    with pytest.raises(SystemExit):
        s10.parse_args(["--recipe", "quick"])
    error = capsys.readouterr().err.splitlines()[-1]
    assert "invalid choice: 'quick'" in error and "short" in error and "fast" not in error


class _NeverIterated:
    """A loader of ``n`` batches that fails the test if anything iterates it."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        raise AssertionError("a finished run was trained again")


def test_restore_rebuilds_a_finished_run_without_training(cifar10_root, tmp_path, capsys):
    import shutil
    from types import SimpleNamespace

    args = ["--data-dir", str(cifar10_root), "--epochs", "2", "--batch-size", "32", "--finder-iters", "10",
            "--train-subset", "320", "--test-subset", "100"]  # fmt: skip
    s10.main([*args, "--out", str(tmp_path / "run"), "--weights", str(tmp_path / "w.pt")])
    summary = s10.main([*args, "--out", str(tmp_path / "restored"), "--restore", str(tmp_path / "w.pt")])
    original = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    restored = torch.load(tmp_path / "restored" / "checkpoint.pt", weights_only=False)
    assert restored["lrs"] == original["lrs"] and len(restored["lrs"]) == 2 * 10  # recomputed, batch by batch
    assert restored["history"] == original["history"] and restored["config"] == original["config"]
    assert restored["optimizer"] is None and restored["epoch"] == 2
    assert summary["max_lr"] == original["config"]["max_lr"] and summary["restored_from"] == "w.pt"
    assert summary["history"] == original["history"] and (tmp_path / "restored" / "history.csv").is_file()

    # the notebook's cells find the run finished: the recorded peak LR, nothing trained, the saved weights
    config = s10.config_from_args(s10.parse_args(args))
    model, logs = s10.s10_model(config), []
    data = SimpleNamespace(train_loader=_NeverIterated(10), test_loader=None)
    capsys.readouterr()
    max_lr, figure = s10.s10_max_lr(model, data, config, torch.device("cpu"), tmp_path / "restored")
    assert max_lr == summary["max_lr"] and figure is None and "no range-test plot" in capsys.readouterr().out
    options = train.FitOptions(log=logs.append)
    result = s10.s10_fit(model, data, config, max_lr, torch.device("cpu"), tmp_path / "restored", options)
    assert result.history == original["history"] and result.lrs == original["lrs"]
    assert "restored from w.pt" in logs[0] and "nothing left to train" in logs[0]
    assert str(cifar10_root) not in logs[0] and f"--data-dir <data>/{cifar10_root.name}" in logs[0]  # no machine path
    saved, _ = s10.load_s10_weights(tmp_path / "w.pt")
    for name, value in saved.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)

    # a range test re-run elsewhere keeps its plot and suggestion, but the peak LR stays the recorded one
    rerun = tmp_path / "rerun"
    rerun.mkdir()
    shutil.copy(tmp_path / "run" / "lr_finder.png", rerun)
    (rerun / "summary.json").write_text(json.dumps({"config": summary["config"], "max_lr": 2 * max_lr}))
    s10.restore_run(tmp_path / "w.pt", rerun, config)
    assert s10.s10_max_lr(model, data, config, torch.device("cpu"), rerun)[0] == max_lr
    assert f"re-run in this folder, which suggests {2 * max_lr:.3e}" in capsys.readouterr().out

    # it cannot be trained further, it does not overwrite a real run, and it refuses another recipe
    optimizer = make_optimizer("sgd", model.parameters(), 0.01)
    with pytest.raises(ValueError, match="cannot continue training"):
        options = train.FitOptions(
            device=torch.device("cpu"), checkpoint_dir=tmp_path / "restored", log=lambda *_: None
        )
        train.fit(model, data.train_loader, None, optimizer, None, 3, options)
    with pytest.raises(ValueError, match="own checkpoint"):
        s10.restore_run(tmp_path / "w.pt", tmp_path / "run", config)
    with pytest.raises(SystemExit, match="another recipe"):
        s10.main(["--restore", str(tmp_path / "w.pt"), "--recipe", "short", "--out", str(tmp_path / "other")])


def test_notebook_switch_trains_on_a_gpu_and_restores_elsewhere():
    assert s10.choose_run("auto", torch.device("cuda")) == "train"
    assert s10.choose_run("auto", torch.device("cpu")) == "restore"
    assert s10.choose_run("auto", torch.device("mps")) == "restore"
    assert s10.choose_run("train", torch.device("cpu")) == "train"
    assert s10.choose_run("restore", torch.device("cuda")) == "restore"
    with pytest.raises(ValueError, match="run must be one of"):
        s10.choose_run("study", torch.device("cpu"))


def test_runs_dir_follows_the_environment(monkeypatch, tmp_path):
    from cifar.utils import runs_dir

    monkeypatch.delenv("CIFAR_RUNS_DIR", raising=False)
    assert runs_dir("../runs") == Path("../runs")
    monkeypatch.setenv("CIFAR_RUNS_DIR", str(tmp_path / "drive"))
    assert runs_dir("../runs") == tmp_path / "drive"


def test_one_cycle_refuses_a_warm_up_too_short_for_torch():
    from cifar.scheduler import one_cycle

    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="warm-up of exactly 1 step"):
        one_cycle(optimizer, 0.1, epochs=1, steps_per_epoch=4, pct_start=0.25)
    for steps in (1, 8):  # a warm-up of 0.25 or 2 steps works
        assert one_cycle(optimizer, 0.1, epochs=1, steps_per_epoch=steps, pct_start=0.25).get_last_lr()[0] > 0
