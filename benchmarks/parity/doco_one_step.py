"""DoCo against the authors' code: why their training script does not run on a current diffusers pipeline, and one
update step of the concept-preserving gradient surgery on the same batch, both sides.

The user fetches the authors' code (erasekit ships none of it)::

    git clone https://github.com/yongliang-wu/DoCo ref/doco
    python benchmarks/parity/doco_one_step.py --doco-code ref/doco

What runs of theirs, unmodified: ``DoCo/gan.py`` (their PatchGAN discriminator) on MiniCanvas- and SD-sized latents,
and ``DoCo/gradient_clip.py``'s ``adjust_gradient`` on the gradients of one batch. Their ``train.py`` is not run: the
script checks and reports the reasons. On one MiniCanvas batch (style:Ink: concept "Ink style", anchor "Photo
style"), two losses are formed once per side from identical tensors: the generator loss (BCE of a discriminator's
score of the concept's x̂₀ against the anchor label, as theirs) and the prior loss (MSE between the anchor
prediction and the noise, their target).
The update direction each side takes is compared over the cross-attention parameters.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).resolve().parent / "results"
MAX_GRAD_NORM = 1.0  # their train.py's --max_grad_norm default, clipped before surgery (their norm_grad)


def blockers(code: Path) -> dict:
    """What stops their train.py on this environment, checked rather than assumed."""
    import diffusers

    pinned = re.search(r"^diffusers==(\S+)", (code / "requirements.txt").read_text(), re.M)
    source = (code / "train.py").read_text()
    return {
        "diffusers_installed": diffusers.__version__,
        "diffusers_pinned": pinned.group(1) if pinned else None,
        "imports_diffusers_models_cross_attention": "diffusers.models.cross_attention" in source,
        "diffusers_models_cross_attention_exists": importlib.util.find_spec("diffusers.models.cross_attention")
        is not None,
        "needs_patched_scheduler_step_batch": "step_batch" in source,
        "installed_ddpm_has_step_batch": hasattr(diffusers.DDPMScheduler, "step_batch"),
        "openai_clip_importable": importlib.util.find_spec("clip") is not None,
        "cv2_importable": importlib.util.find_spec("cv2") is not None,
    }


def their_discriminator(code: Path):
    """Their PatchGAN class from DoCo/gan.py, imported from the user's folder."""
    spec = importlib.util.spec_from_file_location("doco_gan", code / "DoCo" / "gan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def discriminator_shapes(gan, channels: int, sides: tuple[int, ...]) -> dict:
    torch.manual_seed(0)
    disc = gan.PatchGANDiscriminator(channels).eval()
    out = {}
    for side in sides:
        try:
            with torch.no_grad():
                out[f"{side}x{side}"] = list(disc(torch.randn(2, channels, side, side)).shape)
        except RuntimeError as err:  # too small for its four stride-2 blocks and final 4x4 convolution
            out[f"{side}x{side}"] = f"error: {err}"
    return out


def one_batch(handle, plan: tuple[str, str], seed: int):
    """x_t, t and noise of one anchor sample, and the two losses' inputs (same tensors for both sides)."""
    concept, anchor = plan
    g = torch.Generator().manual_seed(seed)
    c, side, _ = handle.latent_shape()
    x0 = torch.randn(2, c, side, side, generator=g)
    noise = torch.randn(2, c, side, side, generator=g)
    t = torch.tensor([300, 700])
    x_t = handle.add_noise(x0, noise, t)
    emb = handle.encode_prompts([concept, concept]), handle.encode_prompts([anchor, anchor])
    return x_t, t, noise, emb


def losses(handle, disc, x_t, t, noise, emb, params):
    concept_emb, anchor_emb = emb
    fake = handle.predicted_x0(x_t, t, handle.predict_noise(x_t, t, concept_emb, params=params))
    score = disc(fake)
    loss_a = F.binary_cross_entropy_with_logits(score, torch.zeros_like(score))  # "anchor" label, as theirs
    loss_b = F.mse_loss(handle.predict_noise(x_t, t, anchor_emb, params=params), noise)
    return loss_a, loss_b


class _Backward:
    """The one method of ``accelerate.Accelerator`` their function calls."""

    sync_gradients = True

    @staticmethod
    def backward(loss, **kwargs):
        loss.backward(**kwargs)


class _Capture:
    """An optimiser stand-in: ``step`` records the gradients their function leaves for the update."""

    def __init__(self, params: dict[str, torch.Tensor]):
        self.params, self.grads = params, {}

    def zero_grad(self):
        for p in self.params.values():
            p.grad = None

    def step(self):
        self.grads = {k: None if p.grad is None else p.grad.clone() for k, p in self.params.items()}


def authors_update(code, handle, disc, batch, clip: bool) -> dict[str, torch.Tensor]:
    spec = importlib.util.spec_from_file_location("doco_gradient_clip", code / "DoCo" / "gradient_clip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    unet = handle.pipe.unet
    params = {n: p for n, p in unet.named_parameters() if "attn2" in n}
    for n, p in unet.named_parameters():
        p.requires_grad_("attn2" in n)
    optim = _Capture(params)

    def norm_grad():  # their norm_grad for parameter_group cross-attn
        if clip:
            torch.nn.utils.clip_grad_norm_(list(params.values()), MAX_GRAD_NORM)

    loss_a, loss_b = losses(handle, disc, *batch, params=None)
    module.adjust_gradient(unet, optim, _Backward(), norm_grad, loss_a, loss_b, lambda_=1.0)
    for p in unet.parameters():
        p.requires_grad_(False)
    return {f"unet.{k}": v for k, v in optim.grads.items()}


def erasekit_update(handle, disc, batch, mode: str, clip: bool) -> dict[str, dict[str, torch.Tensor]]:
    from erasekit.ops import combine_gradients, surgery

    params = {
        k: v.detach().clone().requires_grad_(True) for k, v in handle.named_parameters().items() if ".attn2." in k
    }
    loss_a, loss_b = losses(handle, disc, *batch, params=params)
    keys = list(params)
    g_a = dict(zip(keys, torch.autograd.grad(loss_a, [params[k] for k in keys], allow_unused=True), strict=True))
    g_b = dict(zip(keys, torch.autograd.grad(loss_b, [params[k] for k in keys], allow_unused=True), strict=True))
    if clip:  # the same clipping theirs applies to each gradient before surgery, for a like-for-like comparison
        g_a, g_b = _clipped(g_a), _clipped(g_b)
    combined, _ = combine_gradients(g_a, g_b, mode, 1.0)
    surgery_only = {k: None if g_a[k] is None else surgery(g_a[k], g_b[k], mode, 1.0) for k in keys}
    return {"update": combined, "surgery_only": surgery_only, "g_a": g_a, "g_b": g_b}


def _clipped(grads: dict) -> dict:
    present = [g for g in grads.values() if g is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in present]))
    scale = min(1.0, MAX_GRAD_NORM / (float(norm) + 1e-6))
    return {k: None if g is None else g * scale for k, g in grads.items()}


def _norm_range(grads: dict) -> list[float]:
    norms = [float(g.norm()) for g in grads.values() if g is not None]
    return [min(norms), max(norms)]


def rel_diff(a: dict, b: dict) -> float:
    """max |a − b| / max |b| over the tensors both hold."""
    num = max(float((a[k] - b[k]).abs().max()) for k in b if b[k] is not None and a.get(k) is not None)
    den = max(float(b[k].abs().max()) for k in b if b[k] is not None)
    return num / den


def main(argv: list[str] | None = None) -> int:
    import erasekit
    from erasekit.plugins import get_world

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--doco-code", required=True, help="the authors' DoCo repository (yongliang-wu/DoCo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "doco_one_step.json"))
    args = p.parse_args(argv)
    code = Path(args.doco_code)
    torch.manual_seed(args.seed)
    handle = erasekit.load_model("minicanvas")
    for prm in handle.pipe.unet.parameters():
        prm.requires_grad_(False)
    concept, anchor, _ = get_world("minicanvas").plan("doco", "style:Ink")
    gan = their_discriminator(code)
    channels, side, _ = handle.latent_shape()
    result = {
        "blockers": blockers(code),
        "their_discriminator_output_shape": discriminator_shapes(gan, channels, (side, 64)),
    }
    # A discriminator that reads MiniCanvas latents: theirs without its last downsampling block would still be
    # theirs in spirit but not in code, so both sides share one small seeded PatchGAN built here.
    torch.manual_seed(args.seed)
    disc = torch.nn.Sequential(
        torch.nn.Conv2d(channels, 16, 4, 2, 1), torch.nn.LeakyReLU(0.2), torch.nn.Conv2d(16, 1, 3, 1, 1)
    )
    batch = one_batch(handle, (concept, anchor), args.seed)
    for clip in (False, True):
        theirs = authors_update(code, handle, disc, batch, clip)
        for mode in ("reference", "pcgrad"):
            ours = erasekit_update(handle, disc, batch, mode, clip)
            key = f"{mode}{'_clipped' if clip else ''}"
            result[key] = {
                "surgery_only_vs_theirs": rel_diff(ours["surgery_only"], theirs),
                "update_vs_theirs": rel_diff(ours["update"], theirs),
                "prior_gradient_vs_theirs": rel_diff(ours["g_b"], theirs),
                # their normalisation adds 1e-8 to each norm: relative to ‖g_a‖ that is their round-off here
                "unlearning_gradient_norm_min_max": _norm_range(ours["g_a"]),
            }
    result["batch"] = {"concept": concept, "anchor": anchor, "timesteps": batch[1].tolist(), "seed": args.seed}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
