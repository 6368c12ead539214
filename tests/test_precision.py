"""The precision policy: which arithmetic each device trains in, fp16 gradient scaling, one device everywhere."""

from __future__ import annotations

import pytest
import torch
from test_train import Tiny, _loaders, _StopAfter
from torch import nn

from cifar import s10, train
from cifar.dataset import AlbumentationsDataset, make_loader
from cifar.scheduler import make_optimizer, one_cycle
from cifar.utils import autocast_dtype, describe_device, grad_scaler, needs_grad_scaler, seed_everything, seed_loader

CPU = torch.device("cpu")


def _fake_gpu(monkeypatch, capability: tuple[int, int]) -> None:
    """A CUDA card of ``capability`` that, like every real one, says bf16 is supported (emulated below 8.0)."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)


def _fake_cpu(monkeypatch, amx: bool, avx512_bf16: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)


@pytest.mark.parametrize(
    "hardware, dtype, scaled",
    [
        ("T4", torch.float16, True),  # compute capability 7.5: bf16 only emulated
        ("V100", torch.float16, True),
        ("A100", torch.bfloat16, False),
        ("H100", torch.bfloat16, False),
        ("CPU with AMX", torch.bfloat16, False),
        ("CPU with AVX512-BF16", torch.bfloat16, False),
        ("CPU without either", None, False),
        ("MPS", None, False),
    ],
)
def test_precision_policy(monkeypatch, hardware, dtype, scaled):
    capabilities = {"T4": (7, 5), "V100": (7, 0), "A100": (8, 0), "H100": (9, 0)}
    if hardware in capabilities:
        _fake_gpu(monkeypatch, capabilities[hardware])
        device = torch.device("cuda")
    elif hardware.startswith("CPU"):
        _fake_cpu(monkeypatch, amx="AMX" in hardware, avx512_bf16="AVX512" in hardware)
        device = CPU
    else:
        device = torch.device("mps")
    assert autocast_dtype(device) == dtype
    assert needs_grad_scaler(autocast_dtype(device)) is scaled


def test_grad_scaler_is_enabled_for_fp16_only():
    assert grad_scaler(CPU, torch.float16).is_enabled()
    assert not grad_scaler(CPU, torch.bfloat16).is_enabled() and not grad_scaler(CPU, None).is_enabled()


def _one_batch_loader(n_batches: int = 2):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4 * n_batches, 32, 32, 3), dtype=torch.uint8).numpy()
    labels = torch.randint(0, 10, (4 * n_batches,)).numpy()
    return make_loader(AlbumentationsDataset(images, labels), 4, train=False, device=CPU)


def test_scaler_skips_an_infinite_step_then_recovers():
    seed_everything(0)
    model = Tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    calls = []
    model.fc.weight.register_hook(lambda grad: grad * float("inf") if len(calls) == 1 else grad)
    snapshots = []

    def on_step(totals):
        weights = {k: v.clone() for k, v in model.named_parameters()}
        snapshots.append((weights, scaler.get_scale(), schedule.last_epoch))

    before = {k: v.clone() for k, v in model.named_parameters()}  # the weights (batch-norm statistics move)
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    totals = train.EpochTotals()
    batches = train.ResumableBatches(_one_batch_loader(), totals, on_step=on_step)
    options = train.StepOptions(CPU, scaler=scaler)
    result = train.train_one_epoch(model, batches, optimizer, nn.CrossEntropyLoss(), schedule, options, totals)
    (first, first_scale, first_epoch), (second, second_scale, second_epoch) = snapshots
    for name, value in before.items():  # the infinite step changed nothing...
        torch.testing.assert_close(first[name], value, rtol=0, atol=0)
    assert first_scale == 65536.0 / 2 and first_epoch == 0  # ...but the scale, and the scheduler did not step
    assert not torch.equal(second["fc.weight"], first["fc.weight"])  # the next, finite step trains
    assert second_scale == first_scale and second_epoch == 1
    assert result["lrs"] == [0.1, 0.1]  # the skipped batch's LR is used again


@pytest.mark.parametrize("grad_clip", [None, 1e-3])
def test_scaled_step_equals_the_plain_step(grad_clip):
    """A power-of-two loss scale is exact in fp32: scaled and unscaled training agree, gradients clipped
    after unscaling (clipping the scaled gradients would shrink the step by the scale)."""

    def run(scaler):
        seed_everything(0)
        model = Tiny()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        options = train.StepOptions(CPU, None, grad_clip=grad_clip, scaler=scaler)
        train.train_one_epoch(model, _one_batch_loader(3), optimizer, nn.CrossEntropyLoss(), options=options)
        return model.state_dict()

    scaled, plain = run(torch.amp.GradScaler("cpu", init_scale=1024.0)), run(None)
    for name, value in plain.items():
        torch.testing.assert_close(scaled[name], value, rtol=0, atol=0)


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16])
def test_without_fp16_the_step_is_unchanged(amp_dtype):
    """bf16 and fp32 train exactly as a plain loop does: the disabled scaler is a no-op."""
    train_loader, _ = _loaders(n=48)

    def model_and_optimizer():
        seed_everything(0)
        model = Tiny().to(memory_format=torch.channels_last)
        return model, make_optimizer("sgd", model.parameters(), 0.05)

    model, optimizer = model_and_optimizer()
    seed_loader(train_loader, 1)
    options = train.StepOptions(CPU, amp_dtype, grad_clip=0.5)
    train.train_one_epoch(model, train_loader, optimizer, nn.CrossEntropyLoss(), options=options)
    reference, reference_optimizer = model_and_optimizer()
    seed_loader(train_loader, 1)
    reference.train()
    for inputs, targets in train_loader:
        inputs = inputs.to(memory_format=torch.channels_last)  # normalized floats: no uint8 to scale
        with torch.autocast("cpu", dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = nn.functional.cross_entropy(reference(inputs), targets)
        reference_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_value_(reference.parameters(), 0.5)
        reference_optimizer.step()
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)


class _ScaledLoss(nn.Module):
    """Cross-entropy x 100: its fp16 gradients overflow at the scaler's first scales, so a run skips a few
    steps until the scale has come down (to 2048 on these batches)."""

    def forward(self, outputs, targets):
        return 100 * nn.functional.cross_entropy(outputs, targets)


def test_fp16_resume_restores_the_scaler_exactly(tmp_path):
    def run(folder, stop_after=None):
        seed_everything(0)
        model = Tiny()
        train_loader, test_loader = _loaders()  # 6 batches an epoch
        if stop_after is not None:
            train_loader = _StopAfter(train_loader, stop_after)
        optimizer = make_optimizer("sgd", model.parameters(), 0.01)
        schedule = one_cycle(optimizer, 0.001, 2, 6)
        options = train.FitOptions(
            device=CPU,
            loss_fn=_ScaledLoss(),
            seed=5,
            checkpoint_dir=folder,
            config={"epochs": 2},
            amp_dtype=torch.float16,
            progress=False,
            checkpoint_minutes=0,
            log=lambda *_: None,
        )
        result = train.fit(model, train_loader, test_loader, optimizer, schedule, 2, options)
        return model, result

    straight, straight_result = run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "interrupted", stop_after=8)  # in epoch 2, after its batch 2
    state = torch.load(tmp_path / "interrupted" / train.CHECKPOINT_NAME, weights_only=False)
    assert state["partial"]["steps"] == 2 and state["scaler"]["scale"] == 2048.0  # five steps skipped so far
    resumed, resumed_result = run(tmp_path / "interrupted")  # a fresh scaler would start at 65536 and skip again
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert straight_result.lrs == resumed_result.lrs
    assert [row["train_loss"] for row in straight_result.history] == [
        row["train_loss"] for row in resumed_result.history
    ]
    final = torch.load(tmp_path / "straight" / train.CHECKPOINT_NAME, weights_only=False)
    assert final["scaler"]["scale"] == 2048.0


def test_a_bf16_checkpoint_has_no_scaler_state(tmp_path):
    seed_everything(0)
    model, (train_loader, test_loader) = Tiny(), _loaders(n=16)
    optimizer = make_optimizer("sgd", model.parameters(), 0.01)
    options = train.FitOptions(
        device=CPU, checkpoint_dir=tmp_path, amp_dtype=torch.bfloat16, progress=False, log=lambda *_: None
    )
    train.fit(model, train_loader, test_loader, optimizer, None, 1, options)
    assert torch.load(tmp_path / train.CHECKPOINT_NAME, weights_only=False)["scaler"] == {}


def test_describe_device_names_mps_and_cpu():
    mps = describe_device(torch.device("mps"))
    assert "MPS" in mps and "CPU" not in mps
    assert describe_device(CPU).startswith("CPU")
    assert describe_device(torch.device("mps"), None).endswith(", fp32")


def test_loaders_follow_the_given_device():
    dataset = AlbumentationsDataset(torch.zeros(4, 8, 8, 3, dtype=torch.uint8).numpy(), torch.zeros(4).numpy())
    cuda = make_loader(dataset, 2, train=True, device=torch.device("cuda"))
    cpu = make_loader(dataset, 2, train=True, device="cpu")
    assert (cuda.num_workers, cuda.pin_memory) == (2, True)
    assert (cpu.num_workers, cpu.pin_memory) == (0, False)


def test_s10_data_takes_the_device_given(monkeypatch):
    from cifar import dataset

    def no_choosing():
        raise AssertionError("the device was chosen again instead of taken from the caller")

    def random_cifar10(split, root=None, download=False):
        images = torch.randint(0, 256, (100, 32, 32, 3), dtype=torch.uint8).numpy()
        return images, (torch.arange(100) % 10).numpy()

    monkeypatch.setattr(s10, "get_device", no_choosing)
    monkeypatch.setattr(dataset, "get_device", no_choosing)
    monkeypatch.setattr(s10, "load_cifar10", random_cifar10)
    for recipe in ("short", "lesson"):  # the tensor loader and the albumentations one
        data = s10.s10_data(s10.s10_config(fast=True, recipe=recipe), device=CPU)
        assert getattr(data.train_loader, "device", CPU) == CPU and data.test_loader.num_workers == 0


def test_raccoon_metrics_are_in_the_precision_fit_tested_in(monkeypatch):
    from cifar.raccoon import raccoon_config, train_raccoon
    from cifar.utils import data_dir

    folder = data_dir("raccoon")
    if folder is None or not (folder / "train_labels.csv").is_file():
        pytest.skip("raccoon data absent: set CIFAR_DATA_DIR to a folder holding raccoon/train_labels.csv")
    _fake_cpu(monkeypatch, amx=False, avx512_bf16=True)  # bf16 autocast, as on the course's CPU
    run = train_raccoon(raccoon_config(fast=True), device=CPU, progress=False, log=lambda *_: None)
    assert run.metrics["test_loss"] == run.history[-1]["test_loss"]  # the same predictions, not fp32 ones
