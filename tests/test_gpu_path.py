"""What a GPU run depends on, shown on the CPU: the test step under CUDA graphs' output reuse, the
weight average's device and host syncs, the precision rule, cuDNN autotuning, the compiled
teacher, DDP's shared Ctrl-C and the generators a resume restores. scripts/gpu_check.sh runs the
same paths on a GPU (its CPU run is the slow test at the end)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, TINY, compose_train

from wycifar.training.builders import build_module
from wycifar.training.tta import tta_probs, views


def tiny_module(tmp_path: Path, *overrides: str):
    return build_module(compose_train(tmp_path, [*TINY, *overrides]))


class PoisonsItsLastOutput(torch.nn.Module):
    """A network that fills its previous output with NaN when called again, as a CUDA graph replay
    reuses the memory of the previous replay's output."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.inner = net
        self.last: torch.Tensor | None = None
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.last is not None:
            self.last.fill_(float("nan"))
        self.calls += 1
        self.last = self.inner(x)
        return self.last


@pytest.mark.parametrize("mode", ["none", "flip", "flip_translate"])
def test_the_test_step_reads_no_output_after_the_next_network_call(tmp_path: Path, mode: str):
    module = tiny_module(tmp_path, f"module.tta={mode}").eval()
    x, y = torch.randn(12, 3, 32, 32), torch.arange(12) % 10
    with torch.no_grad():
        logits = module.net(x)
        expected_tta = sum(w * module.net(view).softmax(1) for view, w in views(x, mode))
        module.net = PoisonsItsLastOutput(module.net)
        out = module.test_step((x, y), 0)
    assert module.net.calls == len(views(x, mode))
    assert torch.allclose(out["probs"], logits.softmax(1), atol=1e-6)
    assert torch.equal(out["target"], y)
    expected_acc = (logits.argmax(1) == y).float().mean()
    assert torch.allclose(module.test_acc.compute(), expected_acc)
    assert torch.isfinite(module.test_loss.compute())
    if mode != "none":
        assert torch.allclose(module.test_acc_tta.compute(), (expected_tta.argmax(1) == y).float().mean())


def test_tta_probs_read_each_view_before_the_next_call():
    net = PoisonsItsLastOutput(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)))
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        probs = net(x).softmax(1)
        mean = tta_probs(net, x, probs, "flip_translate")
    assert torch.isfinite(mean).all() and torch.allclose(mean.sum(1), torch.ones(4))


@contextlib.contextmanager
def counting_host_reads():
    """Counts every tensor-to-Python read (.item(), bool(), float(), int(), .tolist(), .numpy()): on
    a GPU each waits for the device."""
    reads: list[str] = []
    names = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy")
    originals = {name: getattr(torch.Tensor, name) for name in names}

    def counted(name, original):
        def read(self, *args, **kwargs):
            reads.append(name)
            return original(self, *args, **kwargs)

        return read

    for name, original in originals.items():
        setattr(torch.Tensor, name, counted(name, original))
    try:
        yield reads
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def ema_on(tmp_path: Path, device: str):
    from wycifar.callbacks.ema import WarmupEMA

    module = tiny_module(tmp_path)
    callback = WarmupEMA(decay=0.9)
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
    callback.setup(trainer, module, "fit")
    return callback, module


def test_the_weight_average_is_built_on_the_device_the_module_trains_on(tmp_path: Path):
    # setup runs before the module moves: the module is still on the CPU, the strategy's device is
    # another ("meta" stands in for a GPU)
    callback, module = ema_on(tmp_path, "meta")
    assert module.device.type == "cpu"
    average = callback._average_model.module
    assert {t.device.type for t in [*average.parameters(), *average.buffers()]} == {"meta"}


def test_the_weight_average_updates_without_reading_the_device(tmp_path: Path):
    from wycifar.callbacks.ema import warmup_ema

    callback, module = ema_on(tmp_path, "cpu")
    average = callback._average_model
    with counting_host_reads() as reads:
        for step in range(4):
            with torch.no_grad():
                for p in module.parameters():
                    p.add_(0.1 * (step + 1))
            before = {k: v.clone() for k, v in average.module.state_dict().items()}
            average.update_parameters(module)
    assert reads == []
    # the last update is the warmed-up EMA of every floating-point tensor; integer buffers copied
    current = module.state_dict()
    for key, value in average.module.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, warmup_ema(before[key], current[key], 3, decay=0.9), atol=1e-6), key
        else:
            assert torch.equal(value, current[key]), key
    assert average.count == 4 and int(average.n_averaged) == 4
    # the stock update (AveragedModel's) reads its count from the device: the counter sees it
    from torch.optim.swa_utils import AveragedModel

    with counting_host_reads() as reads:
        AveragedModel.update_parameters(average, module)
    assert reads


def test_the_weight_average_count_survives_a_checkpoint(tmp_path: Path):
    callback, module = ema_on(tmp_path / "a", "cpu")
    for _ in range(3):
        callback._average_model.update_parameters(module)
    state = callback._average_model.state_dict()
    restored, _ = ema_on(tmp_path / "b", "cpu")
    restored._average_model.load_state_dict(state)
    assert restored._average_model.count == 3


CAPABILITIES = [
    # accelerator, cuda available, cuda bf16 native, cpu bf16 native -> precision
    ("auto", True, True, False, "bf16-mixed"),  # an A100/H100 host
    ("auto", True, False, True, "32-true"),  # a T4 or V100 emulates bf16: fp32, whatever the CPU
    ("gpu", True, True, False, "bf16-mixed"),
    ("cuda", True, False, False, "32-true"),
    ("gpu", False, False, True, "32-true"),  # no GPU: builders refuses the run; the rule says fp32
    ("auto", False, False, True, "bf16-mixed"),  # a CPU with AVX512-BF16 or AMX
    ("auto", False, False, False, "32-true"),
    ("cpu", True, True, True, "bf16-mixed"),  # trainer.gpus=0 on a GPU host: the CPU's answer
    ("cpu", True, True, False, "32-true"),
    ("mps", False, False, True, "32-true"),
]


@pytest.mark.parametrize(("accelerator", "cuda", "cuda_bf16", "cpu_bf16", "expected"), CAPABILITIES)
def test_the_precision_rule_for_each_accelerator(accelerator, cuda, cuda_bf16, cpu_bf16, expected):
    from wycifar.precision import precision_rule

    assert precision_rule(accelerator, cuda_available=cuda, cuda_bf16=cuda_bf16, cpu_bf16=cpu_bf16) == expected


def test_the_precision_follows_trainer_gpus_and_counts_no_emulated_bf16(monkeypatch):
    import wycifar.precision as precision

    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        torch.cuda,
        "is_bf16_supported",
        lambda including_emulation=True: asked.append(including_emulation) or including_emulation,
    )
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.best_precision("auto", None) == "32-true"  # bf16 only emulated on this GPU
    assert asked == [False]
    assert precision.best_precision("auto", 0) == "32-true"  # trainer.gpus=0: the CPU, not asked
    assert asked == [False]
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.best_precision("auto", 0) == "bf16-mixed"
    assert precision.best_precision("gpu", None) == "32-true"


def test_the_composed_precision_is_chosen_after_trainer_gpus(tmp_path: Path, monkeypatch):
    import wycifar.precision as precision

    seen = []
    monkeypatch.setattr(precision, "precision_rule", lambda accelerator, **_: seen.append(accelerator) or "32-true")
    for overrides, accelerator in ((["trainer.gpus=0"], "cpu"), (["trainer.gpus=1"], "gpu"), ([], "auto")):
        assert compose_train(tmp_path, overrides).trainer.precision == "32-true"
        assert seen.pop() == accelerator


def test_cudnn_autotuning_is_the_same_whichever_spelling_chose_the_gpu(tmp_path: Path):
    spellings = [[], ["trainer=gpu"], ["trainer.gpus=1"], ["trainer=ddp"]]
    chosen = {str(o): compose_train(tmp_path, o).trainer.benchmark for o in spellings}
    assert set(chosen.values()) == {True}, chosen
    # a deterministic run keeps cuDNN's deterministic algorithms; null leaves torch's setting
    assert compose_train(tmp_path, ["trainer.deterministic=true"]).trainer.benchmark is False
    assert compose_train(tmp_path, ["trainer.deterministic=warn"]).trainer.benchmark is False
    assert compose_train(tmp_path, ["trainer.benchmark=null"]).trainer.benchmark is None
    for spelling in (["trainer=gpu"], ["trainer=ddp"]):
        assert (
            compose_train(tmp_path, spelling).trainer.precision
            == compose_train(tmp_path, ["trainer.accelerator=gpu"]).trainer.precision
        )


def test_the_teacher_is_compiled_with_the_student(tmp_path: Path, monkeypatch):
    from wycifar.models import WyCifarNet

    compiled = []

    def fake_compile(net, mode="default"):
        compiled.append((net, mode))
        return net

    monkeypatch.setattr(torch, "compile", fake_compile)
    teacher = WyCifarNet(base_width=8)
    cfg = compose_train(tmp_path, [*TINY, "module.compile=true", "module.compile_mode=reduce-overhead"])
    module = build_module(cfg)
    module._teacher = [teacher.eval().requires_grad_(False)]  # as build_module hands a checkpoint's
    module.training_step((torch.randn(4, 3, 32, 32), torch.arange(4)), 0)
    assert [net for net, _ in compiled] == [module.net, teacher]
    assert {mode for _, mode in compiled} == {"reduce-overhead"}
    module.training_step((torch.randn(4, 3, 32, 32), torch.arange(4)), 1)
    assert len(compiled) == 2  # compiled once each


def _rank(rank: int, store: str, flags: list[bool], results) -> None:
    import torch.distributed as dist

    from wycifar.callbacks.graceful_stop import GracefulStop

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        stop = GracefulStop(dirpath="unused")
        trainer = SimpleNamespace(world_size=2, strategy=SimpleNamespace(root_device=torch.device("cpu")))
        answers = []
        for rank0_flag, rank1_flag in flags:
            stop.interrupted = rank0_flag if rank == 0 else rank1_flag
            answers.append(stop.stop_requested(trainer))
        results[rank] = answers
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_act_on_rank_0s_ctrl_c(tmp_path: Path):
    import torch.multiprocessing as mp

    # (rank 0's flag, rank 1's flag) at successive batches
    flags = [(False, False), (False, True), (True, False), (True, True)]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank, args=(str(tmp_path / "store"), flags, results), nprocs=2, join=True)
        answers = dict(results)
    assert answers[0] == answers[1] == [False, False, True, True]


def test_a_single_process_acts_on_its_own_ctrl_c():
    from wycifar.callbacks.graceful_stop import GracefulStop

    stop = GracefulStop(dirpath="unused")
    trainer = SimpleNamespace(world_size=1)
    assert stop.stop_requested(trainer) is False
    stop.interrupted = True
    assert stop.stop_requested(trainer) is True


def test_a_resume_restores_every_generator_it_saved(tmp_path: Path, monkeypatch):
    import wycifar.training.module as module_code

    # a second generator standing in for the GPU's, saved and restored through the same table
    device_generator = torch.Generator().manual_seed(1)
    monkeypatch.setattr(
        module_code,
        "rng_generators",
        lambda device: {
            "torch": (torch.get_rng_state, torch.set_rng_state),
            "cuda": (device_generator.get_state, device_generator.set_state),
        },
    )
    module = tiny_module(tmp_path)
    module._trainer = SimpleNamespace(
        state=SimpleNamespace(fn="fit"), strategy=SimpleNamespace(root_device=torch.device("cpu")), datamodule=None
    )
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    assert set(checkpoint["rng_states"]) == {"torch", "cuda"}
    expected = torch.rand(3), torch.rand(3, generator=device_generator)
    torch.rand(5), torch.rand(5, generator=device_generator)  # the interrupted run draws on
    module.on_load_checkpoint(checkpoint)
    assert torch.equal(torch.rand(3), expected[0])
    assert torch.equal(torch.rand(3, generator=device_generator), expected[1])


def test_a_gpu_runs_generators_are_the_cpus_and_its_devices():
    from wycifar.training.module import rng_generators

    assert set(rng_generators(torch.device("cpu"))) == {"torch"}
    assert set(rng_generators(torch.device("cuda", 1))) == {"torch", "cuda"}


def test_a_checkpoint_with_the_cpu_state_alone_still_resumes(tmp_path: Path):
    module = tiny_module(tmp_path)
    module._trainer = SimpleNamespace(
        state=SimpleNamespace(fn="fit"), strategy=SimpleNamespace(root_device=torch.device("cpu"))
    )
    saved = torch.get_rng_state()
    expected = torch.rand(3)
    module.on_load_checkpoint({"torch_rng_state": saved})
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.slow
def test_gpu_check_runs_every_command_on_the_cpu(tmp_path: Path):
    """GPU_CHECK_DEVICE=cpu scripts/gpu_check.sh: every command of the GPU check composes and runs,
    at the smallest sizes, and its table has a row for each."""
    env = {**os.environ, "GPU_CHECK_DEVICE": "cpu", "PYTHON": sys.executable, "GPU_CHECK_OUT": str(tmp_path)}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    rows = [line for line in (tmp_path / "table.md").read_text().splitlines() if line.startswith("| ")][1:]
    parts = [row.split(" | ")[0].strip("| ") for row in rows]
    # a, b (two callback sets), c (benchmark null and true), d (two sweeps), e
    assert parts == ["a speedrun"] + ["b syncs"] * 2 + ["c headline"] * 2 + ["d parallel"] * 2 + ["e bench"], rows
    assert all(" | ok | " in row for row in rows), rows
    assert "test acc" in rows[0] and "with TTA" in rows[0], rows[0]
