"""Transfer learning: offline weights notice, freezing, fit_one_cycle's schedule, saved class names; the fish
lesson's recipes, run and command line."""

from __future__ import annotations

import copy
import json
import socket
import urllib.error
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cifar import fish, transfer
from cifar import model as cifar_model
from cifar.dataset import AlbumentationsDataset, DataError, make_loader
from cifar.fish import FishConfig, compare_seeds, fish_config, probe_seeds, run_seeds, run_transfer, seed_summary
from cifar.train import FitOptions, predict
from cifar.transfer import (
    OneCycle,
    extract_features,
    fit_one_cycle,
    freeze_backbone,
    linear_probe,
    load_classifier,
    parameter_groups,
    resnet34_classifier,
    resnet34_weights,
    s10_backbone_weights,
    s10_classifier,
    save_classifier,
    unfreeze,
)
from cifar.utils import data_dir, seed_everything

CPU = torch.device("cpu")


def _quiet(*_):
    return None


QUIET = FitOptions(device=CPU, progress=False, log=_quiet)


class TinyNet(nn.Module):
    """A backbone and an ``fc`` head, like a torchvision ResNet, in a few hundred parameters."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


def _random_loaders(n: int = 40, batch: int = 8, classes: int = 3):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, classes, n)
    train_set, test_set = AlbumentationsDataset(images, labels), AlbumentationsDataset(images[:16], labels[:16])
    return make_loader(train_set, batch, train=True, seed=1, num_workers=0), make_loader(test_set, 16, train=False)


def _fish_tree(root: Path, classes=("bream", "chub", "perch"), fish: int = 4, frames: int = 3) -> Path:
    """Class folders of fake fish photos named like the offline set: several frames per fish."""
    for c, name in enumerate(classes):
        for f in range(fish):
            for k in range(frames):
                path = root / name / f"2015{c}{f}_0000_AAAA_00408CF4B573_fish{f + 1}_frame{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                color = (80 * c, 255 - 60 * c, 20 * f + 5 * k)
                Image.new("RGB", (30 + 3 * k, 14 + f), color).save(path)
    return root


def _tiny_config(**changes) -> FishConfig:
    config = FishConfig(
        image_size=(32, 48), batch_size=8, head_epochs=1, fine_tune_epochs=1, weights=None, seed=0,
        max_steps_per_epoch=2, test_fraction=0.25,
    )  # fmt: skip
    return replace(config, **changes)


# ----------------------------------------------------------------------------- the model


def test_offline_weights_give_a_one_line_notice_and_random_weights(monkeypatch):
    def offline(weights, progress=False):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(cifar_model, "torchvision_state_dict", offline)
    messages: list[str] = []
    assert resnet34_weights("IMAGENET1K_V1", log=messages.append) == (None, "random")
    assert len(messages) == 1 and "\n" not in messages[0]
    assert "IMAGENET1K_V1 not loaded, offline: random weights" in messages[0] and "URLError" not in messages[0]
    assert resnet34_weights(None, log=messages.append) == (None, "random") and len(messages) == 1  # no attempt
    with pytest.raises(ValueError, match="weights must be"):
        resnet34_weights("IMAGENET_NONSENSE")
    model = resnet34_classifier(7)
    assert model.fc.out_features == 7 and model.fc.in_features == 512


def test_pretrained_weights_are_loaded_and_reported(monkeypatch, tmp_path):
    from torchvision.models import resnet34

    torch.manual_seed(123)
    state = resnet34().state_dict()
    monkeypatch.setattr(cifar_model, "torchvision_state_dict", lambda weights, progress=False: state)
    loaded, used = resnet34_weights("IMAGENET1K_V1", log=pytest.fail)
    assert used == "IMAGENET1K_V1" and loaded is state
    model = resnet34_classifier(3, loaded)
    assert torch.equal(model.conv1.weight, state["conv1.weight"]) and model.fc.out_features == 3
    torch.save(state, tmp_path / "resnet34-b627a593.pth")  # a local copy of the weights file
    loaded, used = resnet34_weights(tmp_path / "resnet34-b627a593.pth", log=pytest.fail)
    assert used.endswith("resnet34-b627a593.pth")
    assert torch.equal(resnet34_classifier(3, loaded).layer4[2].bn2.weight, state["layer4.2.bn2.weight"])


def test_freeze_backbone_trains_only_the_head():
    model = resnet34_classifier(4)
    freeze_backbone(model)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]
    assert len(parameter_groups(model, backbone_lr_factor=0.1)) == 1  # no trainable backbone: one group
    unfreeze(model)
    assert all(p.requires_grad for p in model.parameters())
    head, backbone = parameter_groups(model, backbone_lr_factor=0.1)
    assert len(head["params"]) == 2 and backbone["lr_factor"] == 0.1


# ----------------------------------------------------------------------------- fit_one_cycle


def test_fit_one_cycle_records_a_one_cycle_lr_per_batch_and_clips(monkeypatch):
    clips = []
    real_clip = torch.nn.utils.clip_grad_value_
    monkeypatch.setattr(
        torch.nn.utils, "clip_grad_value_", lambda params, value: clips.append(value) or real_clip(params, value)
    )
    seed_everything(0)
    model = TinyNet()
    train_loader, val_loader = _random_loaders()  # 40 images, batch 8: 5 steps per epoch
    cycle = OneCycle(torch.optim.Adam, weight_decay=1e-4)
    options = FitOptions(device=CPU, grad_clip=0.1, progress=False, log=_quiet)
    result = fit_one_cycle(4, 0.01, model, train_loader, val_loader, cycle, options)
    lrs = np.asarray(result.lrs)
    assert len(lrs) == 20 and len(result.history) == 4 and clips == [0.1] * 20
    peak = int(np.argmax(lrs))
    assert peak == 5  # OneCycleLR: the peak at step pct_start * total - 1 = 0.3 * 20 - 1
    assert lrs[peak] == pytest.approx(0.01) and lrs[0] == pytest.approx(0.01 / 25)
    assert lrs[-1] == pytest.approx(0.01 / 25 / 1e4)
    assert np.all(np.diff(lrs[: peak + 1]) > 0) and np.all(np.diff(lrs[peak:]) < 0)
    assert {"train_loss", "test_loss", "train_acc", "test_acc", "lr"} <= set(result.history[0])


def test_fit_one_cycle_with_discriminative_lrs_and_a_frozen_backbone(monkeypatch):
    seen = []
    real_fit = transfer.fit
    monkeypatch.setattr(transfer, "fit", lambda *args, **kwargs: seen.append(args[3]) or real_fit(*args, **kwargs))
    seed_everything(0)
    model = TinyNet()
    train_loader, val_loader = _random_loaders()
    fit_one_cycle(1, 0.02, model, train_loader, val_loader, OneCycle(backbone_lr_factor=0.1), QUIET)
    assert [group["max_lr"] for group in seen[0].param_groups] == pytest.approx([0.02, 0.002])
    frozen_conv = copy.deepcopy(model.conv.state_dict())
    head = model.fc.weight.detach().clone()
    freeze_backbone(model)
    fit_one_cycle(1, 0.02, model, train_loader, val_loader, OneCycle("sgd"), QUIET)
    assert len(seen[1].param_groups) == 1 and len(seen[1].param_groups[0]["params"]) == 2
    assert all(torch.equal(a, b) for a, b in zip(model.conv.state_dict().values(), frozen_conv.values()))
    assert not torch.equal(model.fc.weight, head)


# ----------------------------------------------------------------------------- saving


def test_save_and_load_classifier_keep_the_class_names(tmp_path):
    seed_everything(0)
    model = resnet34_classifier(3)
    classes = ["bream", "chub", "perch"]
    path = save_classifier(model, tmp_path / "fish.pt", classes, {"weights": "random", "image_size": [64, 96]})
    state = torch.load(path, map_location="cpu", weights_only=True)  # the course's format: an fp16 state_dict
    assert state["fc.weight"].dtype == torch.float16
    loaded, info = load_classifier(path)
    assert info["classes"] == classes and info["weights"] == "random" and info["image_size"] == [64, 96]
    assert info["mean"] == [0.485, 0.456, 0.406] and json.loads(path.with_suffix(".json").read_text()) == info
    model.eval()
    rounded = copy.deepcopy(model).half().float()  # weights are stored in fp16
    inputs = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), rounded(inputs))
        torch.testing.assert_close(loaded(inputs), model(inputs), rtol=2e-3, atol=2e-3)  # fp16 rounding
    assert not loaded.training


def test_load_classifier_refuses_other_weights(tmp_path):
    from cifar.artifacts import save_weights

    path = save_weights(nn.Linear(2, 2), tmp_path / "other.pt", {"architecture": "Linear"})
    with pytest.raises(ValueError, match="not a classifier of"):
        load_classifier(path)


# ----------------------------------------------------------------------------- the lesson run


def test_run_transfer_two_stages_saves_and_resumes(tmp_path):
    root = _fish_tree(tmp_path / "fish")
    config = _tiny_config(stages="two")
    messages: list[str] = []
    result = run_transfer(
        root, config, out=tmp_path / "run", options=FitOptions(device=CPU, progress=False, log=messages.append)
    )
    assert result.classes == ["bream", "chub", "perch"] and result.weights == "random"
    assert result.stages == ["head", "fine-tune"] and [row["stage"] for row in result.history] == result.stages
    assert [row["epoch"] for row in result.history] == [1, 2] and len(result.lrs) == 4
    assert result.split == "video" and result.leak == 0.0 and result.start == "random"
    assert result.train_images + result.test_images == 36 and result.confusion.sum() == result.test_images
    assert 0 <= result.test_accuracy <= 100
    model, info = load_classifier(tmp_path / "run" / "classifier.pt")
    assert info["classes"] == result.classes and info["weights"] == "random" and info["image_size"] == [32, 48]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["test_accuracy"] == round(result.test_accuracy, 2) and len(summary["confusion"]) == 3
    again = run_transfer(
        root, config, out=tmp_path / "run", options=FitOptions(device=CPU, progress=False, log=messages.append)
    )
    assert sum("Resumed" in m for m in messages) == 2  # both stages came back from their checkpoints
    assert again.test_accuracy == pytest.approx(result.test_accuracy) and again.lrs == result.lrs


def test_random_weights_train_all_layers_and_leaky_split_shares_fish(tmp_path):
    root = _fish_tree(tmp_path / "fish")
    config = _tiny_config(max_steps_per_epoch=1)
    fair = run_transfer(root, config, options=QUIET)
    assert fair.stages == ["all layers"] and len(fair.history) == 2  # head + fine-tune epochs, one stage
    leaky = run_transfer(root, replace(config, split="frames"), options=QUIET)
    assert leaky.split == "frames" and leaky.leak > 0.5


def test_cli_fast_run_writes_the_run_folder(tmp_path):
    root = _fish_tree(tmp_path / "fish")
    out = tmp_path / "run"
    summary = fish.main(["--data-dir", str(root), "--out", str(out), "--fast", "--weights", "none",
                         "--image-size", "32", "48"])  # fmt: skip
    assert summary["weights"] == "random" and summary["split"] == "video" and summary["image_size"] == [32, 48]
    assert summary["command"].startswith("python -m cifar.fish --data-dir ")
    assert summary["config"] == {**asdict(fish_config("random", fast=True)), "image_size": [32, 48]}
    for name in ("classifier.pt", "classifier.json", "history.csv", "curves.png", "lr_trace.png", "confusion.png"):
        assert (out / name).is_file(), name


def test_missing_data_is_explained(monkeypatch, tmp_path):
    monkeypatch.delenv("CIFAR_DATA_DIR", raising=False)  # no local copy: the download is tried, and fails here
    monkeypatch.setenv("CIFAR_CACHE_DIR", str(tmp_path / "cache"))
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("CIFAR_DOWNLOAD_MIRROR", f"http://127.0.0.1:{port}/")
    with pytest.raises(DataError, match=f"Cannot download http://127.0.0.1:{port}/kratzert/.*CIFAR_DATA_DIR"):
        run_transfer(None, _tiny_config(), options=QUIET)


def test_fast_mode_on_the_real_fish_set():
    root = data_dir("fish_egu2017")
    if root is None or not root.is_dir():
        pytest.skip("offline fish set absent: set CIFAR_DATA_DIR to a folder holding fish_egu2017/")
    config = replace(fish_config(fast=True), weights=None)
    result = run_transfer(root, config, options=QUIET)
    assert len(result.classes) == 7 and result.train_images == 56 and result.test_images == 28
    assert result.leak == 0.0 and result.seconds < 60


def test_run_seeds_gives_one_row_per_seed_and_the_summary_and_comparison_read_it(tmp_path):
    root = _fish_tree(tmp_path / "fish", fish=6)
    config = _tiny_config(max_steps_per_epoch=1, head_epochs=1, fine_tune_epochs=1, stages="two")
    lines: list[str] = []
    table = run_seeds(config, (0, 1, 2), root, name="tiny", options=FitOptions(device=CPU, log=lines.append))
    assert len(lines) == 3 and lines[0].startswith("tiny, seed 0: final ")
    assert table["seed"].tolist() == [0, 1, 2] and set(table["config"]) == {"tiny"}
    assert table["split"].eq("video").all() and table["video leak %"].eq(0.0).all() and table["epochs"].eq(2).all()
    again = run_transfer(root, replace(config, seed=1), options=QUIET)
    row = table.set_index("seed").loc[1]
    assert row["final acc %"] == round(again.test_accuracy, 2) and row["start"] == "random"
    assert row["head acc %"] == round(again.history[0]["test_acc"], 2)
    assert row["best acc %"] == round(max(r["test_acc"] for r in again.history), 2) >= row["final acc %"]
    summary = seed_summary(table)
    assert summary.loc["tiny", "seeds"] == 3
    assert summary.loc["tiny", "final acc mean"] == round(table["final acc %"].mean(), 1)
    assert summary.loc["tiny", "final acc min"] == round(table["final acc %"].min(), 1)
    assert summary.loc["tiny", "best acc max"] == round(table["best acc %"].max(), 1)


def test_compare_seeds_claims_only_what_the_spread_supports():
    import pandas as pd

    def table(a, b):
        rows = [{"config": "a", "seed": s, "final acc %": v} for s, v in zip((1, 2, 3), a)]
        return pd.DataFrame(rows + [{"config": "b", "seed": s, "final acc %": v} for s, v in zip((1, 2, 3), b)])

    supported = compare_seeds(table([50, 52, 51], [40, 42, 41]), "a", "b")
    assert "ahead on every seed and the ranges do not overlap" in supported and "+10.0, +10.0, +10.0" in supported
    assert "mean 51.0 vs 41.0" in supported
    assert "suggestive" in compare_seeds(table([50, 45, 41], [48, 43, 40]), "a", "b")
    assert "ahead on 2 of 3 seeds: within the spread" in compare_seeds(table([50, 45, 39], [48, 43, 40]), "a", "b")
    with pytest.raises(ValueError, match="no seed"):
        compare_seeds(table([50, 45, 39], [48, 43, 40]), "a", "c")


# ----------------------------------------------------------------------------- the S10 network as a backbone

S10_FILE = Path(__file__).resolve().parents[1] / "weights" / "s10_custom_resnet.pt"


def test_s10_classifier_has_a_new_head_and_takes_any_image_size():
    model = s10_classifier(7)
    assert model.fc.in_features == 512 and model.fc.out_features == 7 and model.logit_scale == 1.0
    assert isinstance(model.pool, nn.AdaptiveMaxPool2d)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 64, 96)).shape == (2, 7)
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_s10_backbone_really_loads_the_cifar10_weights(tmp_path):
    from cifar.s10 import load_s10_weights

    state, record = s10_backbone_weights(S10_FILE)
    assert record["architecture"] == "CustomResNet" and record["classes"][0] == "airplane"
    assert (tuple(record["mean"]), tuple(record["std"])) == (transfer.S10_MEAN, transfer.S10_STD)
    torch.manual_seed(0)
    model = s10_classifier(7, state).eval()
    for name, value in model.state_dict().items():  # every backbone tensor is CIFAR-10's, the head is new
        if not name.startswith("fc."):
            assert torch.equal(value, state[name]), name
    assert model.fc.weight.shape == (7, 512) and not torch.equal(model.fc.weight[:7], state["fc.weight"][:7])
    random_start = s10_classifier(7)
    assert not torch.equal(random_start.prep[0].weight, model.prep[0].weight)
    # At 32x32 the global max pool is the CIFAR-10 network's MaxPool2d(4): with its old head back, the same logits.
    cifar_model, _ = load_s10_weights(S10_FILE)
    model.fc = cifar_model.fc
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(images) * cifar_model.logit_scale, cifar_model(images))
    from cifar.artifacts import save_weights

    foreign = save_weights(nn.Linear(2, 2), tmp_path / "other.pt", {"architecture": "Linear"})
    with pytest.raises(ValueError, match="not the S10 CustomResNet"):
        s10_backbone_weights(foreign)


def test_s10_recipe_runs_from_cifar10_and_from_random_weights_with_the_same_stages(tmp_path):
    root = _fish_tree(tmp_path / "fish")
    s10 = replace(fish_config("s10", fast=True), weights=str(S10_FILE), image_size=(32, 48), batch_size=8)
    assert s10.arch == "s10" and s10.stages == "two" and s10.backbone_lr_factor is None
    pretrained = run_transfer(root, s10, out=tmp_path / "run", options=QUIET)
    scratch = run_transfer(root, replace(s10, weights=None), options=QUIET)
    assert pretrained.start == "CIFAR-10" and pretrained.weights == str(S10_FILE) and scratch.start == "random"
    assert pretrained.stages == scratch.stages == ["head", "fine-tune"]
    assert pretrained.train_images == scratch.train_images and pretrained.model.fc.out_features == 3
    model, info = load_classifier(tmp_path / "run" / "classifier.pt")  # saved and rebuilt as an s10 classifier
    assert info["architecture"] == "s10" and info["mean"] == list(transfer.S10_MEAN) and model.fc.out_features == 3
    with pytest.raises(FileNotFoundError):  # no silent fallback to random weights
        run_transfer(root, replace(s10, weights=str(tmp_path / "absent.pt")), options=QUIET)


def test_linear_probe_separates_what_is_separable_at_any_scale():
    generator = torch.Generator().manual_seed(0)
    targets = torch.arange(60) % 3
    features = torch.randn(60, 16, generator=generator) + 4 * nn.functional.one_hot(targets, 16).float()
    train, test = slice(0, 45), slice(45, 60)
    assert linear_probe(features[train], targets[train], features[test], targets[test]) == 100.0
    scaled = features * 1000 + 5  # standardized first: the scale of the features does not matter
    assert linear_probe(scaled[train], targets[train], scaled[test], targets[test]) == 100.0
    noise = torch.randn(60, 16, generator=generator)
    assert linear_probe(noise[train], targets[train], noise[test], targets[test]) < 70  # nothing to find


def test_extract_features_gives_the_heads_inputs_and_keeps_the_head():
    torch.manual_seed(0)
    model = s10_classifier(3)
    head = model.fc
    _, loader = _random_loaders()
    features, targets = extract_features(model, loader, CPU, amp_dtype=None)
    assert features.shape == (16, 512) and targets.shape == (16,) and model.fc is head
    with torch.no_grad():
        torch.testing.assert_close(head(features), predict(model, loader, CPU, None)[0], rtol=1e-4, atol=1e-4)


def test_probe_seeds_fits_one_probe_per_seed_on_that_seeds_split(tmp_path):
    root = _fish_tree(tmp_path / "fish", fish=6)
    config = replace(fish_config("s10", fast=True), weights=str(S10_FILE), image_size=(32, 48), test_fraction=0.25,
                     train_per_class=None, test_per_class=None)  # fmt: skip
    table = probe_seeds(config, (0, 1), root, name="probe", device=CPU, amp_dtype=None)
    assert table.columns.tolist() == ["config", "seed", "split", "start", "probe acc %"]
    assert table["seed"].tolist() == [0, 1] and table["start"].eq("CIFAR-10").all() and table["split"].eq("video").all()
    assert table["probe acc %"].between(0, 100).all()
    again = probe_seeds(config, (1,), root, name="probe", device=CPU, amp_dtype=None)
    assert again["probe acc %"].iloc[0] == table["probe acc %"].iloc[1]  # features and fit are deterministic
    scratch = probe_seeds(replace(config, weights=None), (0,), root, device=CPU, amp_dtype=None)
    assert scratch["start"].tolist() == ["random"] and scratch["config"].tolist() == ["s10 random"]


# ----------------------------------------------------------------------------- the lesson's recipes and command line


def test_the_recipe_follows_the_weights_the_backbone_got(tmp_path, monkeypatch):
    root = _fish_tree(tmp_path / "fish")
    pretrained = _tiny_config(weights="IMAGENET1K_V1", max_steps_per_epoch=1)
    random_start = _tiny_config(head_epochs=1, fine_tune_epochs=0, max_steps_per_epoch=1, batch_size=4)

    monkeypatch.setattr(fish, "resnet34_weights", lambda weights, log: (None, "random"))  # offline
    quick = {
        "options": FitOptions(device=CPU, amp_dtype=None, progress=False, log=_quiet),
        "random_config": random_start,
    }
    offline = run_transfer(root, pretrained, **quick)
    assert offline.config is random_start and offline.stages == ["all layers"] and len(offline.history) == 1

    from torchvision.models import resnet34

    state = resnet34().state_dict()
    monkeypatch.setattr(fish, "resnet34_weights", lambda weights, log: (state, weights))  # online
    online = run_transfer(root, pretrained, **quick)
    assert online.config is pretrained and online.weights == "IMAGENET1K_V1"
    assert online.stages == ["head", "fine-tune"] and len(online.lrs) == 2  # 1 step of 1 epoch, twice


def test_recipes():
    imagenet, random_start = fish_config("imagenet"), fish_config("random")
    assert (imagenet.batch_size, imagenet.head_epochs, imagenet.fine_tune_epochs, imagenet.max_lr) == (128, 2, 4, 0.01)
    assert imagenet.weights == "IMAGENET1K_V1" and random_start.weights is None
    assert (random_start.batch_size, random_start.head_epochs + random_start.fine_tune_epochs) == (32, 15)
    assert random_start.max_lr == 3e-3 and random_start.image_size == imagenet.image_size
    fast = fish_config("random", fast=True)
    assert (fast.image_size, fast.train_per_class, fast.max_steps_per_epoch, fast.max_lr) == ((64, 96), 8, 1, 3e-3)


@pytest.mark.parametrize(
    ("argv", "recipe", "expected"),
    [
        ([], "imagenet", {"head_epochs": 2, "fine_tune_epochs": 4, "batch_size": 128, "weights": "IMAGENET1K_V1"}),
        ([], "random", {"head_epochs": 5, "fine_tune_epochs": 10, "batch_size": 32, "weights": None}),
        (["--fast"], "imagenet", {"head_epochs": 1, "fine_tune_epochs": 1, "image_size": (64, 96)}),
        (["--fast", "--head-epochs", "3", "--fine-tune-epochs", "3"], "imagenet",
         {"head_epochs": 3, "fine_tune_epochs": 3, "image_size": (64, 96), "max_steps_per_epoch": 1}),
        (["--fast", "--fine-tune-epochs", "3", "--batch-size", "128"], "random",
         {"head_epochs": 1, "fine_tune_epochs": 3, "batch_size": 128, "train_per_class": 8}),
        (["--weights", "none", "--split", "frames", "--image-size", "32", "48", "--max-steps", "2", "--stages", "two"],
         "imagenet", {"weights": None, "split": "frames", "image_size": (32, 48), "max_steps_per_epoch": 2,
                      "stages": "two"}),
    ],
)  # fmt: skip
def test_cli_flags_override_the_fast_recipe(argv, recipe, expected):
    config = fish.config_from_args(fish.parse_args(argv), recipe)
    assert {name: getattr(config, name) for name in expected} == expected


def test_cli_missing_data_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"^error: "):
        fish.main(["--fast", "--weights", "none", "--data-dir", str(tmp_path / "absent"), "--out", str(tmp_path)])


def test_recompute_bn_statistics_averages_the_loader_and_keeps_the_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 2))
    model.train()(torch.randn(64, 3) * 5 + 9)  # running statistics from other data
    weights = copy.deepcopy(model.state_dict())
    inputs = torch.randn(40, 3) * 2 + 1
    loader = [(inputs[i : i + 10], torch.zeros(10, dtype=torch.long)) for i in range(0, 40, 10)]
    transfer.recompute_bn_statistics(model, loader, torch.device("cpu"), amp_dtype=None)
    norm = model[0]
    assert not model.training and norm.momentum == 0.1  # eval mode, momentum restored
    torch.testing.assert_close(norm.running_mean, inputs.mean(0))  # equal batches: the mean of the batch means
    assert torch.equal(model[1].weight, weights["1.weight"]) and torch.equal(norm.weight, weights["0.weight"])


def test_epoch_snapshots_keep_the_checkpointed_model_of_each_logged_epoch(tmp_path, capsys):
    model = nn.Linear(2, 2)
    checkpoint = tmp_path / "checkpoint.pt"
    keep = transfer.EpochSnapshots(checkpoint, tmp_path / "epochs")
    keep("epoch  1/3  train loss 1.0")  # no checkpoint yet: printed only
    torch.save({"model": model.state_dict(), "epoch": 1}, checkpoint)
    keep("epoch  2/3  train loss 0.9")
    keep("stage 1/1: all layers")  # not an epoch line: nothing kept
    assert sorted(path.name for path in (tmp_path / "epochs").iterdir()) == ["epoch1.pt"]
    assert "epoch  2/3" in capsys.readouterr().out
    restored = keep.load(nn.Linear(2, 2), 1)
    assert torch.equal(restored.weight, model.weight)
    assert keep.has(1) and not keep.has(2)  # the last epoch is the trained model itself
