"""Reading one image file as the network's input size: the same for training data and prediction.

numpy and Pillow only, so that `wycifar.deploy.runtime` can use it without torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from wycifar.errors import ConfigError


def decode_image(path: Path, image_size: int) -> np.ndarray:
    """RGB uint8 HWC. Grayscale, palette and RGBA images are converted to RGB (alpha dropped);
    images of another size are resized with bilinear filtering. Unreadable files raise ConfigError."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.BILINEAR)
            return np.array(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ConfigError(f"cannot read image {path}: {error}") from None
