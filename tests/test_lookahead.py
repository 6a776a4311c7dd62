"""callbacks=[default,lookahead]: every k optimiser steps the weights are pulled back towards a slow copy."""

from pathlib import Path

import pytest
import torch
from conftest import TINY, assert_resume_matches_straight
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.demos.boring_classes import BoringModel

from wycifar.callbacks.lookahead import Lookahead
from wycifar.errors import ConfigError


class RecordWeights(Callback):
    def __init__(self):
        self.seen: list[torch.Tensor] = []

    def on_fit_start(self, trainer, pl_module):
        self.seen.append(self.flat(pl_module))

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.seen.append(self.flat(pl_module))

    @staticmethod
    def flat(pl_module) -> torch.Tensor:
        return torch.cat([p.detach().flatten().clone() for p in pl_module.parameters()])


def test_every_kth_step_lands_alpha_of_the_way_from_the_slow_weights(tmp_path: Path):
    before, after = RecordWeights(), RecordWeights()
    # callbacks run in list order: `before` sees the optimiser's (fast) weights, `after` what Lookahead leaves
    trainer = Trainer(
        default_root_dir=tmp_path,
        max_steps=4,
        callbacks=[before, Lookahead(k=2, alpha=0.25), after],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(BoringModel())
    start, fast, kept = before.seen[0], before.seen[1:], after.seen[1:]
    assert torch.equal(kept[0], fast[0])  # step 1: no sync
    slow = start + 0.25 * (fast[1] - start)  # step 2: a quarter of the way from the start
    assert torch.allclose(kept[1], slow)
    assert not torch.allclose(kept[1], fast[1])
    assert torch.equal(kept[2], fast[2])
    assert torch.allclose(kept[3], slow + 0.25 * (fast[3] - slow))  # step 4: from the new slow weights


def test_a_resumed_run_keeps_the_slow_weights(tmp_path: Path, tiny_data: Path):
    # 5 steps per epoch, a sync every 3: the step-6 sync of the resumed run needs the step-3 slow weights
    overrides = [*TINY, f"data.root={tiny_data}", "callbacks=[default,lookahead]", "callbacks.lookahead.k=3"]
    first = assert_resume_matches_straight(tmp_path, overrides)
    state = next(v for k, v in torch.load(first, weights_only=True)["callbacks"].items() if k.startswith("Lookahead"))
    assert state["synced_step"] == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "callbacks.lookahead.k=0 is not allowed; it must be a whole number >= 1"),
        ({"k": 2.5}, "callbacks.lookahead.k=2.5 is not allowed; it must be a whole number >= 1"),
        ({"alpha": 0.0}, "callbacks.lookahead.alpha=0.0 is invalid: allowed 0 < alpha <= 1"),
        ({"alpha": 1.5}, "callbacks.lookahead.alpha=1.5 is invalid: allowed 0 < alpha <= 1"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        Lookahead(**kwargs)
