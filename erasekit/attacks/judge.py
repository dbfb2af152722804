"""What decides whether an image shows the concept: the suite's classifier, or a CLIP judge.

Both give a hard decision for rates (:meth:`Judge.rate`) and a differentiable log-probability for attacks that
optimise against the judge (:meth:`Judge.log_prob`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


class Judge:
    """Base class: ``log_prob(images) -> [N]`` (differentiable) and ``hits(images) -> BoolTensor[N]``."""

    name = ""

    def log_prob(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def hits(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.log_prob(images).cpu() > -0.6931  # probability above one half

    def rate(self, images: torch.Tensor) -> float:
        """The fraction of ``images`` judged to show the concept."""
        if not len(images):
            raise ValueError("No images to judge.")
        return float(self.hits(images).float().mean())


class ClassifierJudge(Judge):
    """A multi-class classifier (logits over ``classifier.labels``): the concept is shown when ``label`` wins."""

    name = "classifier"

    def __init__(self, classifier: torch.nn.Module, label: str):
        labels = list(classifier.labels)
        if label not in labels:
            raise ValueError(f"The classifier has no label {label!r}; its labels are {labels[:8]}.")
        self.classifier, self.index = classifier, labels.index(label)

    def log_prob(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.classifier.parameters()).device
        return self.classifier(images.to(device)).float().log_softmax(-1)[:, self.index]

    def hits(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.classifier.parameters()).device
        with torch.no_grad():
            out = [
                self.classifier(images[i : i + 128].to(device)).argmax(-1).cpu() for i in range(0, len(images), 128)
            ]
        return torch.cat(out) == self.index


class AttributeJudge(Judge):
    """A MiniFaces-style attribute classifier (``binary`` yes/no heads, then ``hair`` colours)."""

    name = "attribute_classifier"

    def __init__(self, classifier: torch.nn.Module, indicator: str):
        binary, hair = list(getattr(classifier, "binary", ())), list(getattr(classifier, "hair", ()))
        self.classifier, self.indicator = classifier, indicator
        if indicator in binary:
            self.index, self.hair = binary.index(indicator), None
        elif indicator.startswith("hair_") and indicator[5:] in hair:
            self.index, self.hair = len(binary), (len(binary), hair.index(indicator[5:]))
        else:
            raise ValueError(f"The attribute classifier has no indicator {indicator!r}.")

    def log_prob(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(images.to(next(self.classifier.parameters()).device)).float()
        if self.hair is None:
            return F.logsigmoid(logits[:, self.index])
        start, which = self.hair
        return logits[:, start:].log_softmax(-1)[:, which]

    def hits(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.indicators(images)[self.indicator].cpu()


class ClipJudge(Judge):
    """Zero-shot CLIP: the concept is shown when its text is the most similar among ``texts`` (concept first)."""

    name = "clip"

    def __init__(self, model, processor, texts: Sequence[str], temperature: float = 100.0):
        from ..eval.features import clip_text_features

        if len(texts) < 2:
            raise ValueError("A CLIP judge needs the concept's text and at least one alternative.")
        self.model = model.eval()
        ip = processor.image_processor
        crop = ip.crop_size
        self.size = (crop["height"], crop["width"]) if isinstance(crop, dict) else (int(crop), int(crop))
        self.mean = torch.tensor(ip.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(ip.image_std).view(1, 3, 1, 1)
        self.text = F.normalize(clip_text_features(model, processor, list(texts)).float(), dim=-1)
        self.temperature = temperature

    def log_prob(self, images: torch.Tensor) -> torch.Tensor:
        from ..models.clip import feature_tensor

        device = next(self.model.parameters()).device
        x = F.interpolate(images.float(), size=self.size, mode="bicubic", align_corners=False).clamp(0, 1)
        pixels = ((x - self.mean.to(x.device)) / self.std.to(x.device)).to(device)
        image = F.normalize(feature_tensor(self.model.get_image_features(pixel_values=pixels)).float(), dim=-1)
        return (self.temperature * image @ self.text.to(image.device).T).log_softmax(-1)[:, 0]
