"""``erasekit apply``: bake patches into a pipeline folder or a single-file checkpoint, or export them as a LoRA."""

from __future__ import annotations

import json

from .common import add_model_args, check_output, load_handle, load_patches, subparser

EXAMPLES = """  erasekit apply --model tiny-sd --patch p.safetensors --out erased_pipeline/
  erasekit apply --model local:/models/sd15 --patch a.safetensors --patch b.safetensors --scale 0.8 --out sd15_erased/
  erasekit apply --model tiny-sd --patch p.safetensors --lora p_lora.safetensors --rank 16
  erasekit apply --model local:/models/sd15 --patch p.safetensors --lora p_kohya.safetensors --lora-format kohya
  erasekit apply --model sd15.safetensors --model-config /models/sd15 --patch p.safetensors --single-file sd15_erased.safetensors
"""


def add_parser(sub) -> None:
    p = subparser(
        sub,
        "apply",
        "apply patches and save a pipeline folder, or export a LoRA",
        "Apply one or more patches (composed) to a model and save the result with save_pretrained (--out) or as one "
        "checkpoint file in the original LDM layout that AUTOMATIC1111 and ComfyUI read (--single-file), or export "
        "the patch as a LoRA (--lora; diffusers/peft keys, or --lora-format kohya for AUTOMATIC1111 and ComfyUI).",
        EXAMPLES,
    )
    add_model_args(p)
    p.add_argument("--patch", action="append", required=True, help="patch file (repeat to compose several)")
    p.add_argument("--scale", type=float, default=1.0, help="patch strength: 0 = base model, 1 = full erasure")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", help="folder for the patched pipeline (save_pretrained format)")
    out.add_argument("--single-file", help="write the patched model as one LDM-layout .safetensors checkpoint")
    out.add_argument("--lora", help="write a LoRA .safetensors file instead (no model folder)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank for --lora (default 8)")
    p.add_argument(
        "--lora-format",
        choices=("peft", "kohya"),
        default="peft",
        help="LoRA keys: peft (diffusers, default) or kohya (lora_unet_..., for AUTOMATIC1111 / ComfyUI)",
    )
    p.add_argument(
        "--dtype-out",
        choices=("fp32", "fp16", "bf16"),
        default=None,
        help="--single-file: store the weights in this precision (default: as loaded)",
    )
    p.add_argument("--force", action="store_true", help="apply even if the base-model fingerprint differs")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(run=run)


def run(args) -> int:
    from .._io import atomic_dir

    for option in ("out", "lora", "single_file"):
        check_output(getattr(args, option), "--" + option.replace("_", "-"))
    if args.single_file and not args.single_file.endswith(".safetensors"):
        raise ValueError(f"--single-file must end in .safetensors, got {args.single_file!r}.")
    patch = load_patches(args.patch)
    if args.lora_format != "peft" and not args.lora:
        raise ValueError("--lora-format applies to --lora; add --lora OUT.safetensors.")
    if args.lora:
        scaled = patch if args.scale == 1.0 else patch.scaled(args.scale)  # at full strength, no copy of the values
        report = scaled.save_lora(args.lora, rank=args.rank, key_format=args.lora_format)
        summary = {k: v for k, v in report.to_dict().items() if k != "per_key_error"}
        print(json.dumps(summary, indent=2))
        return 0
    handle = load_handle(args)
    patch.apply(handle, scale=args.scale, check_fingerprint=not args.force)
    if args.single_file:
        from ..interop.single_file import save_single_file
        from .common import DTYPES

        dtype = DTYPES[args.dtype_out] if args.dtype_out else None
        save_single_file(handle, args.single_file, dtype=dtype, metadata={"erasekit_patches": json.dumps(args.patch)})
        print(f"wrote the patched model to {args.single_file} (LDM single-file layout)")
        return 0
    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        handle.pipe.save_pretrained(tmp, safe_serialization=True)
    print(f"wrote the patched pipeline to {args.out}")
    return 0
