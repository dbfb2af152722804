"""MiniCanvas's training data in memory: rendered image banks and caption banks.

Images live as uint8 tensors (the whole training set is ~90 MB) and become floats one batch at a time; captions are
token ids of every (style, object, template), sampled with an explicit ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ...minicanvas.data import OBJECTS, STYLES, MiniCanvasDataset, caption, render
from ..clip import SPECIAL_TOKENS
from ..training import progress


@dataclass
class ImageBank:
    """Rendered images ``[N, 3, 64, 64]`` uint8 with their global style and object ids."""

    images: torch.Tensor
    style_ids: torch.Tensor
    object_ids: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, styles: Sequence[str], objects: Sequence[str]) -> ImageBank:
        """Only the images whose style and object are both listed."""
        keep_s = torch.tensor([STYLES.index(s) for s in styles], device=self.style_ids.device)
        keep_o = torch.tensor([OBJECTS.index(o) for o in objects], device=self.object_ids.device)
        mask = torch.isin(self.style_ids, keep_s) & torch.isin(self.object_ids, keep_o)
        return ImageBank(self.images[mask], self.style_ids[mask], self.object_ids[mask])

    def style_batch(self, n_styles: int, gen: torch.Generator) -> torch.Tensor:
        """Indices of one random image of every pair of ``n_styles`` random styles (all objects of each style).

        Such a batch gives every image many negatives of the same style and another object, the pairs a
        contrastive loss learns objects from (a random batch of 64 has about six).
        """
        styles = self.style_ids.unique()
        chosen = styles[torch.randperm(len(styles), generator=gen, device=gen.device)[: min(n_styles, len(styles))]]
        pairs = self.style_ids * len(OBJECTS) + self.object_ids
        members = [torch.nonzero(pairs == p).squeeze(1) for p in pairs[torch.isin(self.style_ids, chosen)].unique()]
        pick = [m[torch.randint(len(m), (1,), generator=gen, device=gen.device)] for m in members]
        return torch.cat(pick)

    def to(self, device: torch.device) -> ImageBank:
        """The bank on ``device``."""
        return ImageBank(self.images.to(device), self.style_ids.to(device), self.object_ids.to(device))

    def floats(self, index: torch.Tensor) -> torch.Tensor:
        """Images ``index`` as float ``[B, 3, 64, 64]`` in ``[0, 1]``."""
        return self.images[index].float().div_(255.0)


def render_bank(per_pair: int, seed: int, split: str, desc: str = "rendering") -> ImageBank:
    """Render every (style, object) pair of MiniCanvas, ``per_pair`` images each, for ``split``."""
    ds = MiniCanvasDataset(per_pair=per_pair, seed=seed, split=split)
    images = np.empty((len(ds), 64, 64, 3), dtype=np.uint8)
    style_ids, object_ids = np.empty(len(ds), np.int64), np.empty(len(ds), np.int64)
    for i in progress(range(len(ds)), desc, unit="img"):
        style, obj, index = ds.item_key(i)
        images[i] = render(style, obj, index, seed)
        style_ids[i], object_ids[i] = STYLES.index(style), OBJECTS.index(obj)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return ImageBank(tensor, torch.from_numpy(style_ids), torch.from_numpy(object_ids))


class CaptionBank:
    """Token ids of every (style, object, template) caption, ``[n_styles, n_objects, n_templates, length]``.

    Rows are padded with ``<|endoftext|>`` (CLIP's pad token) to ``length``; ``length`` leaves room for the random
    tokens :meth:`sample` may insert.
    """

    def __init__(self, tokenizer, templates: Sequence[str], length: int, device: torch.device):
        texts = [caption(s, o, t) for s in STYLES for o in OBJECTS for t in templates]
        ids = tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        shape = (len(STYLES), len(OBJECTS), len(templates), length)
        self.ids = ids.input_ids.reshape(shape).to(device)
        self.lengths = ids.attention_mask.sum(-1).reshape(shape[:-1]).to(device)  # with BOS and EOS
        if int(self.lengths.max()) >= length:
            raise ValueError(f"a caption fills all {length} token slots; raise the caption bank length")
        self.n_templates, self.length, self.device = len(templates), length, device
        self.empty = tokenizer([""], padding="max_length", max_length=length, return_tensors="pt").input_ids.to(device)
        words = {w for name in (*STYLES, *OBJECTS) for w in tokenizer(name, add_special_tokens=False).input_ids}
        pool = torch.ones(len(tokenizer), dtype=torch.bool)
        pool[list(words) + list(SPECIAL_TOKENS)] = False  # never insert a class word: that would mislabel the caption
        self.pool = pool.nonzero().squeeze(1).to(device)

    def sample(
        self,
        style_ids: torch.Tensor,
        object_ids: torch.Tensor,
        gen: torch.Generator,
        insert_prob: float = 0.0,
        drop_prob: float = 0.0,
    ) -> torch.Tensor:
        """Token ids ``[B, length]``: a random template per item, then augmentation.

        With probability ``insert_prob`` an item gets one or two random vocabulary tokens at random positions (so
        the text tower learns to ignore words it was not trained on, like a paraphrase's filler words); with
        probability ``drop_prob`` the whole caption becomes the empty string (for classifier-free guidance).
        """
        b = len(style_ids)
        pick = torch.randint(self.n_templates, (b,), generator=gen, device=self.device)
        ids = self.ids[style_ids, object_ids, pick].clone()
        lengths = self.lengths[style_ids, object_ids, pick].clone()
        chosen = torch.rand(b, generator=gen, device=self.device) < insert_prob
        two = torch.rand(b, generator=gen, device=self.device) < 0.5
        ids, lengths = self._insert(ids, lengths, chosen, gen)
        ids, lengths = self._insert(ids, lengths, chosen & two, gen)
        drop = torch.rand(b, generator=gen, device=self.device) < drop_prob
        return torch.where(drop[:, None], self.empty, ids)

    def _insert(self, ids, lengths, chosen, gen):
        b, length = ids.shape
        token = self.pool[torch.randint(len(self.pool), (b,), generator=gen, device=self.device)]
        # a position between BOS (0) and EOS (lengths-1), inclusive of the slot just before EOS
        where = 1 + (torch.rand(b, generator=gen, device=self.device) * (lengths - 1).float()).long()
        chosen = chosen & (lengths < length)
        pos = torch.arange(length, device=self.device)[None, :]
        shifted = torch.cat([ids[:, :1], ids[:, :-1]], dim=1)  # ids moved one slot right
        new = torch.where(pos < where[:, None], ids, torch.where(pos == where[:, None], token[:, None], shifted))
        return torch.where(chosen[:, None], new, ids), lengths + chosen.long()
