"""The fast-training tricks: each does what it says, is off in the lesson recipe, and resumes exactly."""

from __future__ import annotations

import json
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from cifar import dataset, s10, train
from cifar.model import (
    CustomResNet,
    GhostBatchNorm2d,
    freeze_batch_norm_weights,
    init_dirac_,
    init_whitening_,
    use_ghost_batch_norm,
    whitening_filters,
)
from cifar.scheduler import make_optimizer, one_cycle, weight_and_bias_groups
from cifar.utils import count_parameters, seed_everything


def _correlated_images(n: int = 64) -> torch.Tensor:
    torch.manual_seed(0)
    base = torch.randn(n, 1, 16, 16)
    smooth = nn.functional.avg_pool2d(base, 3, stride=1, padding=1)  # neighbouring pixels correlate
    return torch.cat([smooth, 0.5 * smooth + 0.1 * torch.randn_like(smooth), torch.randn_like(smooth)], 1)


def test_whitening_filters_decorrelate_patches():
    images = _correlated_images()
    filters = whitening_filters(images, 3, eps=1e-6)
    assert filters.shape == (54, 3, 3, 3)
    torch.testing.assert_close(filters[27:], -filters[:27])
    patches = nn.functional.unfold(images, 3).transpose(1, 2).reshape(-1, 27)
    patches = patches - patches.mean(0)
    whitened = patches @ filters[:27].reshape(27, -1).T
    covariance = whitened.T @ whitened / len(whitened)
    torch.testing.assert_close(covariance, torch.eye(27), atol=1e-3, rtol=0)
    correlation = torch.corrcoef(patches.T) - torch.eye(27)
    assert correlation.abs().max() > 0.5  # the input was far from white


def test_init_whitening_sets_the_first_filters_only():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 64, 3, padding=1, bias=False)
    before = conv.weight.detach().clone()
    init_whitening_(conv, _correlated_images())
    torch.testing.assert_close(conv.weight[:54].detach(), whitening_filters(_correlated_images()))
    torch.testing.assert_close(conv.weight[54:].detach(), before[54:], rtol=0, atol=0)
    assert conv.weight.requires_grad


def test_frozen_whitening_stays_as_initialised():
    images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    data = SimpleNamespace(train_images=images, mean=(0.5,) * 3, std=(0.25,) * 3)
    model = s10.s10_model(s10.S10Config(tricks=s10.Tricks(whiten_init=True, freeze_whitening=True)), data)
    whitening, other = model.prep[0].weight, model.fc.weight
    before, other_before = whitening.detach().clone(), other.detach().clone()
    torch.testing.assert_close(before[:54], whitening_filters(s10.whitening_sample(data)))
    groups = weight_and_bias_groups(model, 5e-4, 64.0)
    assert not whitening.requires_grad and all(p is not whitening for g in groups for p in g["params"])
    optimizer = make_optimizer("sgd", groups, 0.1, 5e-4)
    model(torch.randn(8, 3, 32, 32)).logsumexp(1).mean().backward()
    optimizer.step()
    assert torch.equal(whitening, before) and not torch.equal(other, other_before)
    with pytest.raises(ValueError, match="needs tricks.whiten_init"):
        s10.s10_model(s10.S10Config(tricks=s10.Tricks(freeze_whitening=True)), data)


def test_dirac_init_passes_the_first_channels_through():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Conv2d(8, 16, 3, padding=1, bias=False))
    first = model[0].weight.detach().clone()
    init_dirac_(model, skip=(model[0],))
    torch.testing.assert_close(model[0].weight.detach(), first, rtol=0, atol=0)
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        out = model[1](x)
    torch.testing.assert_close(out[:, :8], x, rtol=0, atol=0)  # identity on the first in-channels
    assert out[:, 8:].abs().sum() > 0  # the other channels keep their random start


def test_frozen_batch_norm_weights_and_bias_groups():
    model = CustomResNet()
    frozen = freeze_batch_norm_weights(model)
    assert len(frozen) == 8 and all(not p.requires_grad and bool((p == 1).all()) for p in frozen)
    assert count_parameters(model) == 6_573_130  # the network is unchanged
    weights, biases = weight_and_bias_groups(model, 5e-4, 64.0)
    assert all(p.dim() > 1 for p in weights["params"]) and all(p.dim() == 1 for p in biases["params"])
    assert len(biases["params"]) == 8 + 1  # batch-norm biases and the classifier's
    assert (biases["weight_decay"], biases["lr_factor"]) == (5e-4 / 64, 64.0)
    optimizer = make_optimizer("sgd", [weights, biases], 0.01, 5e-4)
    schedule = one_cycle(optimizer, [0.4, 0.4 * 64], 2, 10)
    for _ in range(5):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[1]["lr"] == pytest.approx(64 * optimizer.param_groups[0]["lr"])
    single = weight_and_bias_groups(CustomResNet(), 5e-4)  # factor 1: one group, as before
    assert len(single) == 1 and len(single[0]["params"]) == len(list(CustomResNet().parameters()))


def test_ghost_batch_norm_normalizes_each_virtual_batch():
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(4)
    ghost = use_ghost_batch_norm(nn.Sequential(nn.BatchNorm2d(4)), 8)[0]
    assert isinstance(ghost, GhostBatchNorm2d) and list(ghost.state_dict()) == list(plain.state_dict())
    x = torch.randn(32, 4, 3, 3) * 3 + 1
    out = ghost(x)
    for group in range(4):  # image i belongs to virtual batch i mod 4
        part = x[group::4]
        expected = (part - part.mean((0, 2, 3), keepdim=True)) / (part.var((0, 2, 3), unbiased=False, keepdim=True)
                                                                  + ghost.eps).sqrt()  # fmt: skip
        torch.testing.assert_close(out[group::4], expected, atol=1e-5, rtol=1e-5)
    reference = nn.BatchNorm2d(4)
    for group in range(4):
        reference.running_mean.zero_(), reference.running_var.fill_(1)
        reference(x[group::4])
        if group == 0:
            means, variances = reference.running_mean.clone(), reference.running_var.clone()
        else:
            means, variances = means + reference.running_mean, variances + reference.running_var
    torch.testing.assert_close(ghost.running_mean, means / 4)
    torch.testing.assert_close(ghost.running_var, variances / 4)
    ghost.eval(), plain.load_state_dict(ghost.state_dict()), plain.eval()
    torch.testing.assert_close(ghost(x), plain(x))  # eval mode is plain batch norm
    odd = torch.randn(12, 4, 3, 3)
    ghost.train(), plain.train()
    torch.testing.assert_close(ghost(odd), plain(odd))  # a batch that doesn't split falls back


def test_weight_average_ramps_and_lookahead_pulls_back():
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    average = train.WeightAverage(model, total_steps=10, every=5, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    average.update(model, 3)  # not an averaging step
    assert average.model.weight.item() == 0.0
    average.update(model, 5)  # decay 0.5 * (5/10)**3 = 1/16
    assert average.model.weight.item() == pytest.approx(15 / 16)
    assert model.weight.item() == 1.0
    pulled = train.WeightAverage(model, total_steps=10, every=5, decay=0.5, lookahead=True)
    with torch.no_grad():
        model.weight.fill_(3.0)
    pulled.update(model, 10)  # decay 0.5 at the last step
    assert pulled.model.weight.item() == model.weight.item() == pytest.approx(2.0)


def _tiny_run(folder, average_every, stop_after=None, epochs=2):
    from test_train import Tiny, _loaders, _StopAfter

    seed_everything(0)
    model = Tiny()
    train_loader, test_loader = _loaders()
    if stop_after is not None:
        train_loader = _StopAfter(train_loader, stop_after)
    optimizer = make_optimizer("sgd", model.parameters(), 0.01)
    schedule = one_cycle(optimizer, 0.1, epochs, 6)
    average = train.WeightAverage(model, epochs * 6, every=average_every, decay=0.9) if average_every else None
    options = train.FitOptions(
        device=torch.device("cpu"),
        seed=5,
        checkpoint_dir=folder,
        config={"epochs": epochs},
        progress=False,
        checkpoint_minutes=0,
        log=lambda *_: None,
        average=average,
    )
    result = train.fit(model, train_loader, test_loader, optimizer, schedule, epochs, options)
    return model, average, result


def test_fit_tests_the_average_returns_it_and_resumes_exactly(tmp_path):
    model, average, result = _tiny_run(tmp_path / "straight", average_every=2)
    plain, _, plain_result = _tiny_run(tmp_path / "plain", average_every=None)
    for a, b in zip(model.state_dict().values(), average.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the trained model ends as its average
    assert any((a != b).any() for a, b in zip(model.state_dict().values(), plain.state_dict().values()))
    assert result.history[-1]["test_loss"] != plain_result.history[-1]["test_loss"]
    with pytest.raises(KeyboardInterrupt):
        _tiny_run(tmp_path / "interrupted", average_every=2, stop_after=9)  # in epoch 2, after batch 3
    state = torch.load(tmp_path / "interrupted" / train.CHECKPOINT_NAME, weights_only=False)
    assert state["average"] is not None
    resumed, resumed_average, resumed_result = _tiny_run(tmp_path / "interrupted", average_every=2)
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [row["test_loss"] for row in result.history] == [row["test_loss"] for row in resumed_result.history]


def test_alternating_flip_shows_each_image_both_ways(monkeypatch):
    flips = []

    def record(images, generator=None, pad=4, cutout=8, flip=None):
        flips.append(flip.clone())
        return images.float(), torch.zeros(len(images), 1, *images.shape[2:], dtype=torch.bool)

    monkeypatch.setattr(dataset, "augment_batch", record)
    images = np.zeros((20, 8, 8, 3), dtype=np.uint8)
    augment = dataset.BatchAugment(seed=1, alternating_flip=True)
    batches = dataset.TensorBatches(images, np.arange(20), 5, (0.5,) * 3, (0.25,) * 3, train=True, augment=augment)
    by_image = []
    for epoch in range(3):
        batches.set_epoch(epoch)
        flips.clear()
        index = torch.cat([labels for _, labels in batches])  # label i is image i
        by_image.append(torch.empty(20, dtype=torch.bool).index_put_((index,), torch.cat(flips)))
    assert (by_image[0] ^ by_image[1]).all() and (by_image[0] == by_image[2]).all()
    assert 0 < by_image[0].sum() < 20


def test_augment_batch_flip_override_keeps_the_other_draws():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    random_flip, holes = dataset.augment_batch(images, torch.Generator().manual_seed(3))
    flip = torch.tensor([True, False, True, False, True, False])
    chosen, chosen_holes = dataset.augment_batch(images, torch.Generator().manual_seed(3), flip=flip)
    assert torch.equal(holes, chosen_holes)
    for i in range(6):  # same crop, orientation as asked
        same = torch.equal(chosen[i], random_flip[i])
        assert same or torch.equal(chosen[i], random_flip[i].flip(2))


def test_shift_tta_averages_flips_of_the_shifted_images():
    class Centre(nn.Module):  # reads one pixel, so that every view is told apart
        def forward(self, x):
            return x[:, :, 4, 3].repeat(1, 4)

    x = torch.randn(2, 3, 8, 8)
    outputs = train.tta_outputs(Centre(), x, flip=True, shift=True)
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    views = [x, padded[..., :8, :8], padded[..., 2:, 2:]]

    def mirrored(view):
        return (view[:, :, 4, 3] + view.flip(3)[:, :, 4, 3]) / 2

    expected = mirrored(views[0]) / 2 + (mirrored(views[1]) + mirrored(views[2])) / 4
    torch.testing.assert_close(outputs, expected.repeat(1, 4))
    assert not torch.allclose(outputs, train.tta_outputs(Centre(), x, flip=True, shift=False))


def test_tricks_recipe_and_the_lesson_recipe():
    config = s10.s10_tricks_recipe()
    assert config.epochs <= 6 and config.tricks.any() and not s10.S10Config().tricks.any()
    assert s10.RECIPES["tricks"] is s10.s10_tricks_recipe
    assert "tricks" not in s10.recipe_record(s10.S10Config(), 0.1)  # a recipe without tricks records none
    assert s10.recipe_record(config, 0.4)["tricks"]["whiten_init"] is True
    short = {"loader": "tensor", "flip_tta": True, "logit_scale": 0.125}  # the short recipe's options, as recorded
    assert s10.recipe_record(config, 0.4)["extra"] == s10.recipe_record(s10.s10_short_recipe(), 0.4)["extra"] == short
    with pytest.raises(ValueError, match="needs the data"):
        s10.s10_model(config)
    plain = s10.s10_model(s10.S10Config())
    assert count_parameters(plain) == 6_573_130


def test_cli_tricks_recipe_runs_records_and_evaluates(cifar10_root, tmp_path, capsys):
    args = ["--recipe", "tricks", "--data-dir", str(cifar10_root), "--out", str(tmp_path / "run"),
            "--weights", str(tmp_path / "w.pt"), "--epochs", "1", "--batch-size", "64", "--train-subset", "640",
            "--test-subset", "100", "--precision", "fp32"]  # fmt: skip
    summary = s10.main(args)
    assert summary["device"].endswith(", fp32")
    record = json.loads((tmp_path / "w.json").read_text())
    assert record["recipe"]["tricks"] == json.loads(json.dumps(asdict(s10.s10_tricks_recipe().tricks)))
    model, _ = s10.load_s10_weights(tmp_path / "w.pt")  # a plain CustomResNet
    assert type(model) is CustomResNet and all(type(m) is not GhostBatchNorm2d for m in model.modules())
    bn_weights = [m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bool((w == 1).all()) for w in bn_weights)  # frozen at 1


def test_command_line_sets_single_tricks():
    args = s10.parse_args(["--recipe", "tricks", "--trick", "whiten_init=off", "--trick", "ghost_batch=32",
                             "--trick", "bias_lr_factor=1"])  # fmt: skip
    tricks = s10.config_from_args(args).tricks
    assert (tricks.whiten_init, tricks.ghost_batch, tricks.bias_lr_factor) == (False, 32, 1.0)
    assert tricks.dirac_init and tricks.average_every == 10  # the others as the recipe has them
    assert s10.parse_trick("average_every=none") == ("average_every", None)
    for wrong in ("whiten", "whiten_init=maybe", "ghost_batch=a lot"):
        with pytest.raises(SystemExit):
            s10.parse_args(["--trick", wrong])


def test_tensor_loader_translate_and_cutout_options():
    """``translate=0, cutout=0`` leaves only the flips; the defaults shift and cut holes."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    mean, std = (0.5,) * 3, (0.25,) * 3

    def batch(**options) -> torch.Tensor:
        augment = dataset.BatchAugment(seed=2, **options)
        loader = dataset.TensorBatches(images, np.arange(64), 64, mean, std, train=True, augment=augment)
        inputs, labels = next(iter(loader))
        return inputs[torch.argsort(labels)]

    original = (torch.from_numpy(images).permute(0, 3, 1, 2).float() - 127.5) / 63.75
    plain = batch(pad=0, cutout=0)
    as_is = torch.isclose(plain, original, atol=1e-4).flatten(1).all(1)
    mirrored = torch.isclose(plain, original.flip(3), atol=1e-4).flatten(1).all(1)
    assert (as_is | mirrored).all() and as_is.any() and mirrored.any()
    augmented = batch()
    assert not torch.isclose(augmented, plain, atol=1e-4).flatten(1).all(1).all()
    filled = torch.isclose(augmented, torch.zeros(()), atol=1e-4).all(1)  # the mean normalizes to 0
    assert filled.flatten(1).any(1).float().mean() > 0.2  # about half the images get a hole
