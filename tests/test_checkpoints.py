"""Every checkpoint wycifar reads, for resuming, evaluating, predicting or shipping, goes through one
loader: a damaged or foreign file is one line naming the file and what is wrong, exit status 2."""

from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_train, make_image_folder, run_main

from wycifar.cli import run_cli
from wycifar.predict import predict
from wycifar.ship import ship
from wycifar.train import main as train_main
from wycifar.training.checkpoints import load_module, read_checkpoint
from wycifar.training.evaluate import evaluate
from wycifar.training.run import train

MARKER = Path("/tmp/wycifar-checkpoint-ran-code")


class Payload:
    """Unpickling this would create MARKER."""

    def __reduce__(self):
        return (Path.touch, (MARKER,))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("checkpoints")
    data = make_image_folder(tmp / "data")
    train(compose_train(tmp / "small", [*TINY, f"data.root={data}", "trainer.max_epochs=1", "test=false"]))
    good = tmp / "small" / "run" / "checkpoints" / "last.ckpt"
    wide = [*TINY, f"data.root={data}", "trainer.max_epochs=1", "test=false", "model.base_width=12"]
    train(compose_train(tmp / "wide", wide))
    made = {"good": good, "wide": tmp / "wide" / "run" / "checkpoints" / "last.ckpt", "data": data}
    made["text"] = tmp / "notes.ckpt"
    made["text"].write_text("these are notes, not a checkpoint\n")
    made["truncated"] = tmp / "truncated.ckpt"
    made["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    made["evil"] = tmp / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": Payload()}, made["evil"])
    made["foreign"] = tmp / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, made["foreign"])
    return made


WHAT_IS_WRONG = {
    "text": "is not a PyTorch checkpoint",
    "truncated": "is not a PyTorch checkpoint or is truncated",
    "evil": "holds pickled objects that would run code when loaded (calling getattr); refused, nothing was run",
    "foreign": "is not a wycifar checkpoint: it has no state_dict and hyper_parameters",
}


def one_line_exit_2(capsys, body) -> str:
    with pytest.raises(SystemExit) as info:
        run_cli(body)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("kind", sorted(WHAT_IS_WRONG))
def test_a_damaged_file_is_one_line_wherever_it_is_read(tmp_path: Path, files, capsys, kind: str):
    MARKER.unlink(missing_ok=True)
    bad, expected = files[kind], f"checkpoint '{files[kind]}' {WHAT_IS_WRONG[kind]}"
    resume = compose_train(tmp_path / "resume", [*TINY, f"data.root={files['data']}", f"ckpt_path={bad}"])
    assert expected in one_line_exit_2(capsys, lambda: train(resume))
    assert not (tmp_path / "resume" / "run" / "checkpoints").exists()  # nothing trained, nothing written
    evaluation = compose_train(tmp_path / "eval", [f"ckpt_path={bad}", f"data.root={files['data']}"], "eval")
    assert expected in one_line_exit_2(capsys, lambda: evaluate(evaluation))
    image = next((files["data"] / "test" / "cat").iterdir())
    assert expected in one_line_exit_2(capsys, lambda: predict([str(image)], str(bad)))
    assert not MARKER.exists()  # no code ran, anywhere


@pytest.mark.parametrize("empty", ["ckpt_path=", "ckpt_path=null"])
def test_evaluating_without_a_checkpoint_is_one_line(tmp_path: Path, files, capsys, empty: str):
    evaluation = compose_train(tmp_path, [empty, f"data.root={files['data']}"], "eval")
    err = one_line_exit_2(capsys, lambda: evaluate(evaluation))
    assert "ckpt_path is empty; give the path of a .ckpt file" in err
    assert not (tmp_path / "run").exists()


def test_another_network_shape_says_which_tensors_differ(tmp_path: Path, files, capsys):
    resume = compose_train(tmp_path, [*TINY, f"data.root={files['data']}", f"ckpt_path={files['wide']}"])
    err = one_line_exit_2(capsys, lambda: train(resume))
    assert "holds a network of another shape than this run's (checkpoint vs run)" in err
    assert "net.blocks.0.units.0.conv1.layers.1.weight [12, 3, 1, 1] vs [8, 3, 1, 1]" in err
    # the same file loads for evaluation and prediction, which build the network it holds
    assert load_module(files["wide"]).net.blocks[0].units[0].conv1.layers[1].out_channels == 12


def test_shipping_reads_through_the_same_loader(tmp_path: Path, files, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best-epoch00.ckpt").write_bytes(files["truncated"].read_bytes())
    (run / "model_8005_0.5000.onnx").write_bytes(b"")
    (run / "epochs.csv").write_text("Epoch\n")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    err = one_line_exit_2(capsys, lambda: ship(run, tmp_path / "results", model=True))
    assert "is not a PyTorch checkpoint or is truncated" in err
    assert read_checkpoint(files["good"])["state_dict"]


def test_resuming_from_a_damaged_file_prints_no_traceback(files, tmp_path: Path):
    result = run_main(
        train_main,
        f"ckpt_path={files['truncated']}",
        f"data.root={files['data']}",
        f"paths.log_dir={tmp_path}",
        f"paths.cache_dir={tmp_path}/cache",
        "trainer.accelerator=cpu",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: checkpoint '{files['truncated']}' is not a")
