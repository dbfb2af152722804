"""Export a patch as a LoRA in the diffusers/peft key format, so ``pipe.load_lora_weights(path)`` accepts it.

Each Linear/Conv2d weight delta becomes ``<component>.<module>.lora_A.weight`` and ``...lora_B.weight`` (rank
inferred from the shapes, alpha = rank, so the LoRA scale is 1). Dense and sparse deltas are factorised by a
truncated SVD (exact for matrices up to 256 on their smaller side, randomized above), whose relative Frobenius error
is reported; low-rank deltas of rank <= the requested rank are exact.
Deltas LoRA cannot express (biases, norms, embeddings, the VAE, SD3's T5) are dropped and reported.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .._io import save_safetensors
from .deltas import Delta, LowRankDelta

logger = logging.getLogger(__name__)

# the components diffusers' load_lora_weights reads ("<component>." key prefixes): SD's and SDXL's UNet, SD3's
# transformer, the CLIP text encoders (SD3's T5 has no LoRA loader)
LORA_COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2")
_EMBEDDING = re.compile(r".*(token_embedding|position_embedding)\.weight")


@dataclass
class LoraExport:
    """What an export wrote and how close it is: ``relative_error`` = ‖Δ − BA‖_F / ‖Δ‖_F over exported keys."""

    path: str
    rank: int
    relative_error: float
    exported: int
    dropped: list[str] = field(default_factory=list)
    dropped_norm_share: float = 0.0  # ‖dropped Δ‖ / ‖all Δ‖
    per_key_error: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _factorise(delta: Delta, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(up [out, r], down [r, in*k*k])`` approximating the delta as a matrix."""
    if isinstance(delta, LowRankDelta) and delta.rank <= rank:
        return delta.up.float(), delta.down.float()
    matrix = delta.to_dense().reshape(delta.shape[0], -1)
    r = min(rank, *matrix.shape)
    u, s, vh = _top_singular(matrix, r)
    root = s[:r].sqrt()
    return u[:, :r] * root, root[:, None] * vh[:r]


# exact SVD up to this smaller side (every tiny test model); above it, a randomized one for the top r only
# (Halko, Martinsson and Tropp, arXiv 0909.4061)
EXACT_SVD_MAX_DIM = 256
_OVERSAMPLE, _POWER_ITERATIONS = 8, 4


def _top_singular(matrix: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """At least the top ``r`` singular triplets ``(u, s, vh)`` of ``matrix``, largest first.

    A full SVD of one of Stable Diffusion's 1280 x 11520 conv weights takes ~10 s of CPU (far more when the CPU's
    cores are shared); the randomized SVD with a few power iterations takes a fraction of that and is accurate for
    the leading singular vectors (within 0.1 % of the optimal error on the deltas tried). It is
    seeded, so an export is reproducible, and the reported error is measured on the factors it returns either way.
    """
    if min(matrix.shape) <= EXACT_SVD_MAX_DIM or r + _OVERSAMPLE >= min(matrix.shape):
        return torch.linalg.svd(matrix, full_matrices=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        u, s, v = torch.svd_lowrank(matrix, q=r + _OVERSAMPLE, niter=_POWER_ITERATIONS)
    return u, s, v.T


def _lora_pair(key: str, delta: Delta, rank: int) -> tuple[dict[str, torch.Tensor], float, float]:
    """The two LoRA tensors for one weight delta, the squared error and the squared norm of the delta."""
    up, down = _factorise(delta, rank)
    dense = delta.to_dense().reshape(delta.shape[0], -1)
    err2 = float((dense - up @ down).pow(2).sum())
    module = key[: -len(".weight")]
    if len(delta.shape) == 4:  # Conv2d: A keeps the kernel, B is a 1x1 conv
        down = down.reshape(down.shape[0], *delta.shape[1:])
        up = up[:, :, None, None]
    tensors = {f"{module}.lora_A.weight": down.contiguous(), f"{module}.lora_B.weight": up.contiguous()}
    return tensors, err2, float(dense.pow(2).sum())


def _exportable(key: str, delta: Delta) -> bool:
    return (
        key.split(".", 1)[0] in LORA_COMPONENTS
        and key.endswith(".weight")
        and len(delta.shape) in (2, 4)
        and not _EMBEDDING.fullmatch(key)
    )


LORA_FORMATS = ("peft", "kohya")


def export_lora(
    patch, path: str | Path, rank: int = 8, dtype: torch.dtype = torch.float32, key_format: str = "peft"
) -> LoraExport:
    """Write ``patch`` as a LoRA ``.safetensors`` file (atomically) and report the approximation error.

    Args:
        key_format: ``"peft"`` (diffusers/peft keys, the default) or ``"kohya"`` (``lora_unet_…`` / ``lora_te_…``
            with ``alpha``, the format AUTOMATIC1111 and ComfyUI load; :mod:`erasekit.interop.kohya`). diffusers'
            ``load_lora_weights`` reads both.

    Example:
        >>> report = patch.save_lora("erase_vangogh_lora.safetensors", rank=16)
        >>> pipe.load_lora_weights("erase_vangogh_lora.safetensors")
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}.")
    if key_format not in LORA_FORMATS:
        raise ValueError(f"Unknown LoRA format {key_format!r}; choose one of {', '.join(LORA_FORMATS)}.")
    tensors, errors, dropped = {}, {}, []
    err_total = norm_total = dropped_norm = 0.0
    for key, delta in patch.deltas.items():
        if not _exportable(key, delta):
            dropped.append(key)
            dropped_norm += float(delta.to_dense().pow(2).sum())
            continue
        pair, err2, norm2 = _lora_pair(key, delta, rank)
        tensors.update({k: v.to(dtype) for k, v in pair.items()})
        errors[key] = math.sqrt(err2 / norm2) if norm2 > 0 else 0.0
        err_total, norm_total = err_total + err2, norm_total + norm2
    if not tensors:
        raise ValueError(
            "No delta of this patch can be expressed as a LoRA (only Linear/Conv2d weights of the UNet or SD3 "
            "transformer and of the CLIP text encoders can); keep using the patch file."
        )
    report = LoraExport(
        path=str(path),
        rank=rank,
        relative_error=math.sqrt(err_total / norm_total) if norm_total else 0.0,
        exported=len(errors),
        dropped=dropped,
        dropped_norm_share=math.sqrt(dropped_norm / (dropped_norm + norm_total)) if dropped_norm else 0.0,
        per_key_error=errors,
    )
    if dropped:
        logger.warning(
            "LoRA export dropped %d tensors LoRA cannot express (e.g. %s), %.2f%% of the delta norm.",
            len(dropped),
            dropped[0],
            100 * report.dropped_norm_share,
        )
    if key_format == "kohya":
        from ..interop.kohya import to_kohya

        tensors = to_kohya(tensors)
    meta = {
        "erasekit_lora": json.dumps({"source": patch.metadata, "export": report.to_dict()}, default=str),
        "format": "pt",
    }
    save_safetensors(tensors, path, metadata=meta)
    return report
