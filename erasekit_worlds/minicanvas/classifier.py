"""The MiniCanvas evaluators: a small CNN that names the style (or the object) of a 64×64 image.

They play the UnlearnCanvas classifiers' role (a ViT-L with a linear head there): every generated image of an
evaluation grid is judged by one style and one object classifier. A classifier file is one ``.safetensors`` with the
architecture config and the label list as JSON in its header, so it loads without code from anywhere else.

Example:
    >>> clf = load_classifier(weights_dir() / "classifiers" / "style.safetensors")
    >>> clf.labels[:2], clf(images).argmax(1)  # images: [N, 3, 64, 64] in [0, 1]
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from erasekit._io import save_safetensors

from ..common import conv_stage

HEADER_KEY = "erasekit_classifier"
FORMAT_VERSION = 1


@dataclass
class ClassifierConfig:
    """Architecture of :class:`ImageClassifier`: conv stages that halve the resolution, then a linear head."""

    width: int = 24  # channels of the first stage; each later stage doubles them
    stages: int = 4  # stride-2 stages: 64 px -> 4 px
    image_size: int = 64  # the side the network expects; other sizes are resized to it
    dropout: float = 0.1  # before the linear head

    def __post_init__(self):
        if self.width < 1 or self.stages < 1 or self.image_size < 2**self.stages:
            raise ValueError(f"invalid classifier config {self}: width, stages >= 1 and image_size >= 2**stages")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_dict(cls, data: dict) -> ClassifierConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown classifier config keys {unknown}; valid keys: {sorted(known)}")
        return cls(**data)


class ImageClassifier(nn.Module):
    """A small CNN over RGB images in ``[0, 1]``; ``forward`` returns logits over :attr:`labels`.

    Args:
        config: the architecture.
        labels: class names, in logit order.

    Example:
        >>> clf = ImageClassifier(ClassifierConfig(), ["Photo", "Ink"])
        >>> clf(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 2])
    """

    def __init__(self, config: ClassifierConfig, labels: list[str]):
        super().__init__()
        if not labels or len(set(labels)) != len(labels) or not all(isinstance(x, str) for x in labels):
            raise ValueError(f"labels must be a non-empty list of distinct strings, got {labels!r}")
        self.config, self.labels = config, list(labels)
        chans = [config.width * 2**i for i in range(config.stages)]
        layers = [conv_stage(c_in, c_out) for c_in, c_out in zip([3, *chans[:-1]], chans, strict=True)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(chans[-1], len(labels)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [N, 3, H, W] in [0, 1], got shape {tuple(images.shape)}")
        x = images.to(self.head[1].weight.dtype)
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return self.head(self.features(x * 2.0 - 1.0))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> list[str]:
        """Label names for ``images`` (``[N, 3, H, W]`` in ``[0, 1]``), in eval mode, batched."""
        was_training = self.training
        self.eval()
        device = self.head[1].weight.device
        ids = [self(images[i : i + batch_size].to(device)).argmax(1) for i in range(0, len(images), batch_size)]
        self.train(was_training)
        return [self.labels[int(i)] for i in torch.cat(ids)] if ids else []

    def save(self, path: str | os.PathLike, dtype: torch.dtype = torch.float16) -> Path:
        """Write one ``.safetensors`` file atomically: weights in ``dtype`` (BatchNorm counters stay integer), the
        config and labels as JSON in the header."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"classifier files end in .safetensors, got {path.name!r}")
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in self.state_dict().items()}
        header = {"format_version": FORMAT_VERSION, "config": asdict(self.config), "labels": self.labels}
        return save_safetensors(tensors, path, metadata={HEADER_KEY: json.dumps(header), "format": "pt"})


def _read_header(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors import safe_open

    if not path.is_file():
        raise ValueError(f"no classifier file at {path}; train one with `erasekit world train minicanvas`")
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get(HEADER_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own types for truncated or garbled files
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupted?): {err}") from err
    if text is None:
        raise ValueError(f"{path} is a safetensors file but not an erasekit classifier (no {HEADER_KEY!r} header)")
    try:
        header = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} has a malformed classifier header: {err}") from err
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: classifier format {header.get('format_version')!r} is not supported (want 1)")
    return header, tensors


def load_classifier(
    path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> ImageClassifier:
    """Load a classifier written by :meth:`ImageClassifier.save`, in eval mode.

    Raises:
        ValueError: the file is missing, truncated, not a classifier, or its weights do not fit its config.

    Example:
        >>> clf = load_classifier("world/classifiers/object.safetensors")
        >>> clf.predict(images)[:3]
        ['apple', 'apple', 'house']
    """
    path = Path(path)
    header, tensors = _read_header(path)
    try:
        model = ImageClassifier(ClassifierConfig.from_dict(header["config"]), header["labels"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: the classifier header lacks or garbles {err}") from err
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: the weights do not match the config in its header: {err}") from err
    return model.to(device=device, dtype=dtype).eval()
