"""One erasure in a fresh process, either side: the authors' script (run from the folder the user fetched it into)
or ``erasekit erase``. Writes ``result.json`` (wall seconds, peak memory, the weights or patch file) in ``--out``.

The authors' code is run, never copied: this file only makes settings their scripts hard-code settable at run time
(the model folder, the device, the image size, the seed) and, for the 2023 UCE release, calls its editing function
with the arguments its command line would build (that release's command line cannot take a preserve list: it adds
a list to a string). Nothing of their code is modified on disk.

Sides:
    authors-uce       trainscripts/uce_sd_erase.py (rohitgandikota/unified-concept-editing, 2025)
    authors-uce-2023  train-scripts/train_erase.py of the same repository at commit bd5fb51 (2023)
    authors-esd       esd_sd.py (rohitgandikota/erasing, diffusers version)
    erasekit          ``erasekit erase`` with a YAML config
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import runpy
import sys
import time
from pathlib import Path

SD14 = "CompVis/stable-diffusion-v1-4"  # the hub id the authors' scripts load; redirected to --model


def _peak_memory(device: str) -> dict:
    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    gpu = torch.cuda.max_memory_allocated() if device.startswith("cuda") and torch.cuda.is_available() else None
    return {"peak_rss_bytes": rss, "peak_gpu_bytes": gpu}


def _redirect_hub_id(model: str) -> None:
    """``from_pretrained("CompVis/stable-diffusion-v1-4", ...)`` loads the local pipeline folder instead."""
    from diffusers import DiffusionPipeline, UNet2DConditionModel

    for cls in (UNet2DConditionModel, DiffusionPipeline):  # StableDiffusionPipeline inherits the latter's
        original = cls.from_pretrained.__func__

        def patched(klass, path, *args, _original=original, **kwargs):
            return _original(klass, model if str(path) == SD14 else path, *args, **kwargs)

        cls.from_pretrained = classmethod(patched)


def _force_dtype(dtype_name: str) -> None:
    """Load and keep every model in ``dtype_name`` whatever dtype the script asks for (a diagnostic run only)."""
    import torch
    from diffusers import DiffusionPipeline, ModelMixin

    dtype = getattr(torch, dtype_name)
    for cls in (ModelMixin, DiffusionPipeline):
        load, move = cls.from_pretrained.__func__, cls.to

        def loaded(klass, *a, _load=load, **k):
            k.pop("torch_dtype", None)
            return _load(klass, *a, **{**k, "dtype": dtype})

        def moved(self, *a, _move=move, **k):
            a = tuple(x for x in a if not isinstance(x, torch.dtype))
            k.pop("dtype", None)
            k.pop("torch_dtype", None)
            return _move(self, *a, **k)

        cls.from_pretrained, cls.to = classmethod(loaded), moved


def _run_authors_uce(args) -> Path:
    script = Path(args.code) / "trainscripts" / "uce_sd_erase.py"
    argv = [str(script), "--model_id", args.model, "--device", args.device, "--concept_type", args.concept_type]
    argv += ["--edit_concepts", args.concept, "--guide_concepts", args.guide, "--lamb", str(args.lam)]
    argv += ["--expand_prompts", "true" if args.expand != "none" else "false"]
    if args.preserve:
        argv += ["--preserve_concepts", ";".join(args.preserve)]
    argv += ["--save_dir", str(args.out), "--exp_name", "authors_uce"]
    sys.argv = argv
    os.chdir(script.parent)
    runpy.run_path(str(script), run_name="__main__")
    return Path(args.out) / "authors_uce.safetensors"


def _run_authors_uce_2023(args) -> Path:
    """The 2023 release's ``edit_model`` with the arguments its command line builds (guide, '' + preserve list)."""
    import torch
    import transformers
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    # Its module loads a CLIP judge from the hub at import time, used only by a helper erasure never calls.
    for cls in (transformers.CLIPModel, transformers.CLIPProcessor):
        cls.from_pretrained = classmethod(lambda klass, *a, **k: None)
    script = Path(args.code) / "train-scripts" / "train_erase.py"
    module = runpy.run_path(str(script), run_name="uce_2023")
    pipe = StableDiffusionPipeline.from_pretrained(args.model).to(args.device)
    templates = {
        "style": ["painting by {}", "art by {}", "artwork by {}", "picture by {}", "style of {}"],
        "object": ["image of {}", "photo of {}", "portrait of {}", "picture of {}", "painting of {}"],
    }.get(args.expand, [])
    old = [args.concept] + [t.format(args.concept) for t in templates]  # that release expands the concept only
    new = [args.guide or " "] * len(old)  # its stand-in for the empty guide
    retain = [""] + list(args.preserve)
    scale = args.preserve_scale if args.preserve_scale is not None else max(0.1, 1 / len(retain))
    with torch.no_grad():
        module["edit_model"](
            ldm_stable=pipe,
            old_text_=old,
            new_text_=new,
            add=False,
            retain_text_=retain,
            lamb=args.lam,
            erase_scale=1,
            preserve_scale=scale,
            technique="replace",
        )
    out = Path(args.out) / "authors_uce_2023.safetensors"
    weights = {
        k: v.detach().cpu().contiguous()
        for k, v in pipe.unet.state_dict().items()
        if ".attn2.to_k." in k or ".attn2.to_v." in k
    }
    save_file(weights, str(out))
    return out


def _run_authors_esd(args) -> Path:
    import torch

    code = Path(args.code)
    sys.path.insert(0, str(code))
    os.chdir(code)
    if args.force_dtype:
        _force_dtype(args.force_dtype)
    _redirect_hub_id(args.model)
    import utils.sd_utils as sd_utils  # their module; its sampler is wrapped so the image size is ours

    original = sd_utils.esd_sd_call

    def sized_call(self, *a, **k):
        k["height"] = k["width"] = args.size
        return original(self, *a, **k)

    sd_utils.esd_sd_call = sized_call
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    save = Path(args.out) / "esd"
    sys.argv = [str(code / "esd_sd.py"), "--erase_concept", args.concept, "--train_method", f"esd-{args.variant}"]
    sys.argv += ["--iterations", str(args.iterations), "--lr", str(args.lr)]
    sys.argv += ["--negative_guidance", str(args.negative_guidance), "--num_inference_steps", str(args.steps)]
    sys.argv += ["--guidance_scale", str(args.guidance), "--device", args.device, "--save_path", str(save)]
    runpy.run_path(str(code / "esd_sd.py"), run_name="__main__")
    (found,) = save.glob("*.safetensors")
    return found


def _run_erasekit(args) -> Path:
    from erasekit.cli.main import main

    out = Path(args.out) / "erasekit.safetensors"
    argv = ["erase", "--model", args.model, "--method", args.method, "--concept", args.concept]
    argv += ["--config", args.config, "--out", str(out)]
    if args.device != "auto":
        argv += ["--device", args.device]
    if main(argv) != 0:
        raise SystemExit(f"erasekit erase failed: {argv}")
    return out


SIDES = {
    "authors-uce": _run_authors_uce,
    "authors-uce-2023": _run_authors_uce_2023,
    "authors-esd": _run_authors_esd,
    "erasekit": _run_erasekit,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--side", required=True, choices=sorted(SIDES))
    p.add_argument("--out", required=True, help="folder for the weights / patch and result.json")
    p.add_argument("--model", required=True, help="pipeline folder (authors) or model spec (erasekit)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--concept", required=True)
    p.add_argument("--code", help="authors' code folder")
    p.add_argument("--concept-type", default="art", choices=("art", "object"), help="UCE: the authors' kind")
    p.add_argument("--guide", default="", help="UCE: the guide concept")
    p.add_argument("--preserve", nargs="*", default=[], help="UCE: preserved concepts")
    p.add_argument("--preserve-scale", type=float, default=None, help="UCE 2023: default max(0.1, 1/n) as there")
    p.add_argument("--lam", type=float, default=0.5, help="UCE: lambda")
    p.add_argument("--expand", default="none", choices=("none", "style", "object"), help="UCE: prompt expansion")
    p.add_argument("--variant", default="x", choices=("x", "u"), help="ESD variant")
    p.add_argument("--iterations", type=int, default=200, help="ESD iterations")
    p.add_argument("--lr", type=float, default=5e-5, help="ESD learning rate")
    p.add_argument("--negative-guidance", type=float, default=2.0, help="ESD: their parameterisation")
    p.add_argument("--steps", type=int, default=50, help="ESD: sampler steps")
    p.add_argument("--guidance", type=float, default=3.0, help="ESD: CFG scale of the partial sampling")
    p.add_argument("--size", type=int, default=64, help="ESD: image size of the partial sampling")
    p.add_argument("--seed", type=int, default=0, help="ESD: seed of python's and torch's generators")
    p.add_argument(
        "--force-dtype", default=None, help="ESD diagnostic: keep the models in this dtype (e.g. float32), not theirs"
    )
    p.add_argument("--method", default="uce", help="erasekit: method name")
    p.add_argument("--config", help="erasekit: YAML config")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out = str(Path(args.out).resolve())
    Path(args.out).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    weights = SIDES[args.side](args)
    result = {"side": args.side, "seconds": time.perf_counter() - started, "weights": str(weights)}
    result.update(_peak_memory(args.device))
    Path(args.out, "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
