"""GradCAM heatmaps (the grad-cam package) over a fixed set of test images, for the predicted class."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image

from wycifar.callbacks.common import class_names, image_grid, images_hwc, run_dir, save_figure, should_draw
from wycifar.data.normalize import normalize_uint8
from wycifar.models.modes import eval_mode


def fixed_test_images(datamodule, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first test image of each class in turn, so the set is the same in every run."""
    split = datamodule.test_data
    chosen: list[int] = []
    for round_ in range(count):
        for label in range(len(split.classes)):
            if len(chosen) == count:
                break
            hits = (split.labels == label).nonzero().flatten()
            if round_ < len(hits):
                chosen.append(int(hits[round_]))
    index = torch.tensor(chosen, dtype=torch.long)
    return normalize_uint8(split.images[index], datamodule.mean, datamodule.std), split.labels[index]


def gradcam_maps(net: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """(heatmaps [N, H, W] in [0, 1], class probabilities). Works inside Lightning's
    inference mode and leaves the network's train/eval state as it found it."""
    with eval_mode(net), torch.inference_mode(False), torch.enable_grad():
        x = x.clone().requires_grad_(True)
        with GradCAM(model=net, target_layers=[layer]) as cam:
            heatmaps = cam(input_tensor=x, targets=None)  # None: the predicted class
        with torch.no_grad():
            probs = net(x).float().softmax(1)
    return heatmaps, probs


class GradCAMReport(Callback):
    def __init__(self, num_images: int = 10, every_n_epochs: int = 5, filename: str = "gradcam.png") -> None:
        self.num_images, self.every_n_epochs, self.filename = num_images, every_n_epochs, filename

    def outputs(self) -> dict[str, str]:
        return {"gradcam": self.filename}

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        x, labels = fixed_test_images(datamodule, self.num_images)
        net = pl_module.net
        x = x.to(pl_module.device)
        if next(net.parameters()).is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        heatmaps, probs = gradcam_maps(net, net.gradcam_layer, x)
        images = images_hwc(x, datamodule.mean, datamodule.std)
        names = class_names(trainer, net.num_classes)
        confidence, predicted = probs.max(1)
        fig, axes = image_grid(len(images), cols=5)
        for ax, image, heat, t, p, c in zip(axes, images, heatmaps, labels, predicted.cpu(), confidence.cpu()):
            ax.imshow(show_cam_on_image(image.astype(np.float32), heat, use_rgb=True))
            ax.set_title(
                f"true: {names[t]}\npred: {names[p]} ({100 * c:.0f}%)",
                fontsize=8,
                color="black" if t == p else "crimson",
            )
        fig.suptitle(
            f"GradCAM of {type(net.gradcam_layer).__name__} (last block), predicted class, epoch {trainer.current_epoch}"
        )
        fig.tight_layout()
        save_figure(fig, run_dir(trainer) / self.filename, trainer, "report/gradcam")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not should_draw(trainer):
            return
        if trainer.state.fn == "fit" and (trainer.current_epoch + 1) % max(1, self.every_n_epochs):
            return
        self.draw(trainer, pl_module)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if should_draw(trainer):
            self.draw(trainer, pl_module)
