"""Adaptive layer choice of StyleGAN-NADA (Gal et al., arXiv 2108.00946), as Text-to-Unlearn uses it (arXiv
2504.01218): train only the synthesis layers whose W+ codes move most when the codes themselves are optimised along
the text direction.

Layers are addressed by erasekit's StyleGAN2 parameter names, ``generator.synthesis.b<res>.<conv0|conv1|torgb>.*``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

_LAYER = re.compile(r"generator\.synthesis\.b(\d+)\.(conv0|conv1|torgb)\..*")


def layer_w_index(resolutions: Sequence[int]) -> dict[tuple[int, str], int]:
    """Which W+ code each synthesis layer reads: b4.conv1 -> 0, b4.torgb -> 1, b8.conv0 -> 1, b8.conv1 -> 2, ...

    Example:
        >>> layer_w_index([4, 8])
        {(4, 'conv1'): 0, (4, 'torgb'): 1, (8, 'conv0'): 1, (8, 'conv1'): 2, (8, 'torgb'): 3}
    """
    table, i = {(resolutions[0], "conv1"): 0, (resolutions[0], "torgb"): 1}, 1
    for res in resolutions[1:]:
        table.update({(res, "conv0"): i, (res, "conv1"): i + 1, (res, "torgb"): i + 2})
        i += 2
    return table


def code_movement(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """``[num_ws]``: mean absolute change of each W+ code between ``[N, num_ws, w_dim]`` batches.

    Example:
        >>> code_movement(torch.zeros(1, 2, 2), torch.tensor([[[1.0, 3.0], [0.0, -1.0]]]))
        tensor([2.0000, 0.5000])
    """
    return (after.detach() - before).abs().mean(dim=(0, 2))


def rank_layers(movement: torch.Tensor, names: Sequence[str], resolutions: Sequence[int], k: int) -> list[str]:
    """The ``names`` that belong to the ``k`` synthesis layers whose W+ codes moved most (``movement [num_ws]``).

    Ties go to the lower resolution, then conv0 < conv1 < torgb; names outside the synthesis layers are dropped.

    Example:
        >>> names = ["generator.synthesis.b4.conv1.weight", "generator.synthesis.b8.conv1.weight"]
        >>> rank_layers(torch.tensor([0.1, 0.0, 0.9, 0.0]), names, [4, 8], 1)
        ['generator.synthesis.b8.conv1.weight']
    """
    index, layer_of = layer_w_index(resolutions), {}
    for n in names:
        m = _LAYER.fullmatch(n)
        if m:
            layer_of[n] = (int(m.group(1)), m.group(2))
    if not layer_of:
        raise ValueError("layers=adaptive needs synthesis-layer targets (e.g. synthesis_conv); none matched.")
    ranked = sorted(set(layer_of.values()), key=lambda key: (-float(movement[index[key]]), key))
    keep = set(ranked[:k])
    return [n for n in names if layer_of.get(n) in keep]
