"""The MiniFaces attribute classifier: one small CNN with a yes/no head per binary attribute and a hair-colour head.

It judges generated faces (attribute rates before and after an erasure), so it trains on rendered faces with the
blur and grain that generated images show, and never sees a generated face. One ``.safetensors`` file holds the
weights and, as JSON in its header, the architecture and the attribute names, so it loads without other code.

Example:
    >>> clf = load_attribute_classifier(world / "classifier" / "attributes.safetensors")
    >>> flags = clf.indicators(images)          # {"glasses": BoolTensor[N], ..., "hair_red": BoolTensor[N]}
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from erasekit._io import save_safetensors

from ..common import conv_stage
from .data import BINARY_ATTRIBUTES, HAIR_COLOURS, indicators

HEADER_KEY = "erasekit_attribute_classifier"
FORMAT_VERSION = 1


@dataclass
class AttributeClassifierConfig:
    """Architecture: stride-2 conv stages (channels doubling from ``width``), then one linear head over the
    flattened 4×4 map: the head knows *where* a feature is (earrings beside the face, bangs above the eyes), which
    global pooling would throw away."""

    width: int = 16  # first-stage channels (16-32-64-128: ~0.3M parameters)
    stages: int = 4  # 64 px -> 4 px
    dropout: float = 0.1  # before the head

    def __post_init__(self):
        if self.width < 1 or not 1 <= self.stages <= 6 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"invalid classifier config {self}: width >= 1, 1 <= stages <= 6, 0 <= dropout < 1")

    @classmethod
    def from_dict(cls, data: dict) -> AttributeClassifierConfig:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown classifier config keys {unknown}")
        return cls(**data)


class AttributeClassifier(nn.Module):
    """Logits ``[N, 6 + 4]`` for images ``[N, 3, 64, 64]`` in ``[0, 1]``: one per binary attribute (in
    ``binary`` order), then the hair colours (in ``hair`` order)."""

    def __init__(self, config: AttributeClassifierConfig, binary=BINARY_ATTRIBUTES, hair=HAIR_COLOURS):
        super().__init__()
        self.config, self.binary, self.hair = config, tuple(binary), tuple(hair)
        chans = [config.width * 2**i for i in range(config.stages)]
        layers = [conv_stage(a, b) for a, b in zip([3, *chans[:-1]], chans, strict=True)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        outputs = len(self.binary) + len(self.hair)
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(chans[-1] * 16, outputs))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [N, 3, H, W] in [0, 1], got shape {tuple(images.shape)}")
        x = images.to(self.head[1].weight.dtype)
        if x.shape[-2:] != (64, 64):
            x = F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
        return self.head(self.features(x * 2.0 - 1.0))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Label vectors ``int64 [N, 7]`` (0/1 per binary attribute, then the hair index), in eval mode, batched."""
        was = self.training
        self.eval()
        device, nb = self.head[1].weight.device, len(self.binary)
        out = []
        for i in range(0, len(images), batch_size):
            logits = self(images[i : i + batch_size].to(device))
            out.append(torch.cat([(logits[:, :nb] > 0).long(), logits[:, nb:].argmax(1, keepdim=True)], 1).cpu())
        self.train(was)
        return torch.cat(out) if out else torch.zeros(0, nb + 1, dtype=torch.long)

    def indicators(self, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Boolean ``[N]`` per indicator (``"glasses"``, ..., ``"hair_red"``) for images in ``[0, 1]``."""
        return indicators(self.predict(images, batch_size))

    def save(self, path: str | os.PathLike, dtype: torch.dtype = torch.float16) -> Path:
        """Write one ``.safetensors`` file atomically: weights in ``dtype`` (BatchNorm counters stay integer),
        the config and attribute names as JSON in the header."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"classifier files end in .safetensors, got {path.name!r}")
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in self.state_dict().items()}
        header = {"format_version": FORMAT_VERSION, "config": asdict(self.config)}
        header.update({"binary": list(self.binary), "hair": list(self.hair)})
        return save_safetensors(tensors, path, metadata={HEADER_KEY: json.dumps(header), "format": "pt"})


def load_attribute_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> AttributeClassifier:
    """Load a classifier written by :meth:`AttributeClassifier.save` (fp32, eval mode).

    Raises:
        ValueError: the file is missing, truncated, not an attribute classifier, or does not fit its header.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no attribute classifier at {path}; train a world with `erasekit world train minifaces`")
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get(HEADER_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own types for truncated or garbled files
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupted?): {err}") from err
    if text is None:
        raise ValueError(f"{path} is not an erasekit attribute classifier (no {HEADER_KEY!r} header entry)")
    try:
        header = json.loads(text)
        if header.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format {header.get('format_version')!r} is not supported (want {FORMAT_VERSION})")
        model = AttributeClassifier(
            AttributeClassifierConfig.from_dict(header["config"]), header["binary"], header["hair"]
        )
        model.load_state_dict(tensors, strict=True)
    except (json.JSONDecodeError, KeyError, TypeError, RuntimeError, ValueError) as err:
        raise ValueError(f"{path}: the classifier header or weights are invalid: {err}") from err
    return model.to(device=device, dtype=torch.float32).eval()
