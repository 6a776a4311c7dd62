"""module.compile=true: the same fit as eager, only fused (what makes GELU affordable on the CPU)."""

from pathlib import Path

import onnxruntime as ort
import pytest
import torch
from conftest import TINY, compose_train

from wycifar.training.checkpoints import load_module, slim_checkpoint
from wycifar.training.run import train


@pytest.mark.slow  # two compilations of the network, ~1-2 min on 2 cores
def test_compiled_fit_matches_eager_and_saves_the_plain_network(tmp_path: Path, tiny_data: Path):
    runs = {}
    for compiled in (False, True):
        # no dropout: a compiled network draws its masks from its own generator
        overrides = [
            *TINY,
            f"data.root={tiny_data}",
            "model.activation=gelu",
            "model.dropout=0",
            f"module.compile={compiled}",
            # fp32 on every CPU: under bf16-mixed (the default with AVX512-BF16) two epochs of
            # differently rounded steps drift past these tolerances
            "trainer.precision=32-true",
        ]
        metrics, _ = train(compose_train(tmp_path / str(compiled), overrides))
        state = torch.load(tmp_path / str(compiled) / "run" / "checkpoints" / "last.ckpt", weights_only=True)
        runs[compiled] = metrics, state["state_dict"]
    (eager_metrics, eager_state), (compiled_metrics, compiled_state) = runs[False], runs[True]
    # Checkpoints hold the network's own keys, not the compiled wrapper's (`_orig_mod.`).
    assert compiled_state.keys() == eager_state.keys()
    assert not any("_orig_mod" in key for key in compiled_state)
    # Fusion reorders float arithmetic, so two epochs drift a little, but no further.
    assert compiled_metrics["train/loss"] == pytest.approx(eager_metrics["train/loss"], rel=2e-2)
    for key, value in eager_state.items():
        if value.is_floating_point():
            assert torch.allclose(compiled_state[key], value, rtol=5e-2, atol=5e-3), key
    # The exported model is the plain network: it runs in onnxruntime.
    (onnx_path,) = (tmp_path / "True" / "run").glob("model_*.onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: torch.zeros(1, 3, 32, 32).numpy()})
    assert logits.shape == (1, 10)


def test_a_run_trained_compiled_is_loaded_and_shipped_uncompiled(tmp_path: Path, tiny_data: Path, monkeypatch):
    """Compiling is how a run went, not part of the model: evaluation and prediction of a shipped
    model must not start a compiler (a minute, and a C++ compiler on the CPU)."""
    train(compose_train(tmp_path, [*TINY, f"data.root={tiny_data}", "trainer.max_epochs=1", "test=false"]))
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["compile"] = True  # as module.compile=true writes it
    trained_compiled = tmp_path / "compiled.ckpt"
    torch.save(checkpoint, trained_compiled)

    module = load_module(trained_compiled).eval()
    assert module.hparams.compile is False

    def no_compiler(*args, **kwargs):
        raise AssertionError("torch.compile was called")

    monkeypatch.setattr(torch, "compile", no_compiler)
    with torch.no_grad():
        logits = module(torch.zeros(2, 3, 32, 32))  # runs eagerly: no compiler started
    assert torch.equal(logits, module.net(torch.zeros(2, 3, 32, 32)))
    monkeypatch.undo()
    assert load_module(trained_compiled, compile=True).hparams.compile is True  # when asked

    shipped = torch.load(slim_checkpoint(trained_compiled, tmp_path / "shipped.ckpt"), weights_only=True)
    assert shipped["hyper_parameters"]["compile"] is False
    assert shipped["hyper_parameters"]["net"] == checkpoint["hyper_parameters"]["net"]
