"""Pinned numbers of every method's patch on the tiny models (diffusers' ``expected_slice`` habit): a silent change in
a method's math, its defaults, its random draws or the tiny models fails here, even where every invariant of the
method suite still holds.

Each case is the session's patch of the method suite (conftest.py: ``FAST_CONFIGS``, seed 0, concept "a cat" on the
tiny diffusion pipelines, "glasses" on the tiny StyleGAN2 with the tiny CLIP). Pinned per patch: its tensor names,
the number of values it changes, the sum of |delta| over every tensor, and for three tensors (the first, middle and
last name in sorted order) the flat positions and values of their first six non-zero entries, and the values every
step logged (the loss terms: Adam's first steps move each weight by about ±lr whatever its gradient's size, so the
losses are where a change in a small term shows).

The tolerance suits float32 on other CPUs and thread counts (kernels sum in another order, and Adam's first steps
turn a gradient's last bits into a delta's fourth digit): values agree to 1e-3 relative, or to 1e-3 of the largest
pinned value of their tensor; the |delta| sum to 1e-3 relative. A changed sign, loss term or random draw moves them by
far more (flipping the sign in any one method's core op in erasekit/ops fails that method's rows).

Regenerate after a deliberate change (and say why in the commit message)::

    python tests/methods/test_expected_slices.py    # runs these tests in print mode: paste the table over EXPECTED
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # `python tests/methods/test_expected_slices.py`: these tests in print mode
    import pytest

    os.environ["ERASEKIT_PRINT_SLICES"] = "1"
    sys.exit(pytest.main([__file__, "-q", "-s", "-p", "no:cacheprovider", "-W", "ignore"]))

import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import DIFFUSION_ARCHS, UNSUPPORTED  # noqa: E402

from erasekit.methods import get_method, list_methods  # noqa: E402

PRINT = os.environ.get("ERASEKIT_PRINT_SLICES") == "1"
# logged values not pinned: the step number, and DoCo's share of conflicting gradients (a sign test of dot products
# near zero, which another summation order flips: 0.34 with 2 threads, 0.74 with 1 on the tiny pipeline)
UNPINNED = {"step", "conflict"}

DIFFUSION_CASES = [
    (m, a)
    for a in DIFFUSION_ARCHS
    for m in list_methods()
    if "diffusion" in get_method(m).kinds and (m, a) not in UNSUPPORTED
]
GAN_CASES = [(m, "stylegan") for m in list_methods() if "stylegan" in get_method(m).kinds]


def summary(patch, losses: list[dict]) -> dict:
    """What is pinned of ``patch`` and the ``losses`` its steps logged (see the module docstring)."""
    names = sorted(patch.deltas)
    dense = {k: patch.deltas[k].to_dense().detach().double().flatten() for k in names}
    slices = {}
    for k in dict.fromkeys([names[0], names[len(names) // 2], names[-1]]):
        where = dense[k].nonzero().flatten()[:6]
        slices[k] = {"at": where.tolist(), "values": [float(f"{v:.8g}") for v in dense[k][where].tolist()]}
    return {
        "names": len(names),
        "names_hash": _names_hash(names),
        "changed": patch.num_changed,
        "abs_sum": float(f"{sum(float(d.abs().sum()) for d in dense.values()):.10g}"),
        "slices": slices,
        "losses": [{k: float(f"{v:.8g}") for k, v in step.items() if k not in UNPINNED} for step in losses],
    }


def table(rows: dict) -> str:
    """``rows`` as the source of EXPECTED (one line per pinned tensor)."""
    import json

    lines = ["# fmt: off", "EXPECTED = {"]
    for case in sorted(rows):
        row = rows[case]
        lines.append(f"    {json.dumps(case[0])}, {json.dumps(case[1])}): {{".replace("    ", "    (", 1))
        head = {k: row[k] for k in ("names", "names_hash", "changed", "abs_sum")}
        lines.append("        " + json.dumps(head)[1:-1] + ",")
        lines.append('        "slices": {')
        for name, pinned in row["slices"].items():
            lines.append(f"            {json.dumps(name)}: {json.dumps(pinned)},")
        lines.append("        },")
        lines.append(f'        "losses": {json.dumps(row["losses"])},')
        lines.append("    },")
    return "\n".join([*lines, "}", "# fmt: on"])


def _names_hash(names: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def check(case: tuple[str, str], patch, losses: list[dict]) -> None:
    got = summary(patch, losses)
    if PRINT:
        _printed[case] = got
        return
    assert case in EXPECTED, f"no pinned slice for {case}: run `python {__file__}` and add its row"
    want = EXPECTED[case]
    assert (got["names"], got["names_hash"], got["changed"]) == (want["names"], want["names_hash"], want["changed"])
    assert got["abs_sum"] == pytest.approx(want["abs_sum"], rel=1e-3)
    assert got["slices"].keys() == want["slices"].keys()
    for name, pinned in want["slices"].items():
        assert got["slices"][name]["at"] == pinned["at"], name
        expected = torch.tensor(pinned["values"], dtype=torch.float64)
        scale = float(expected.abs().max())
        actual = torch.tensor(got["slices"][name]["values"], dtype=torch.float64)
        torch.testing.assert_close(actual, expected, rtol=1e-3, atol=1e-3 * scale, msg=lambda m, n=name: f"{n}: {m}")
    assert [step.keys() for step in got["losses"]] == [step.keys() for step in want["losses"]]
    for step, (logged, pinned) in enumerate(zip(got["losses"], want["losses"], strict=True), start=1):
        for term, value in pinned.items():
            assert logged[term] == pytest.approx(value, rel=1e-3, abs=1e-6), f"step {step} {term}"


_printed: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _print_table():
    yield
    if PRINT and _printed:
        print("\n" + table(_printed))


@pytest.mark.parametrize("method, arch", [pytest.param(m, a, id=f"{m}-{a}") for m, a in DIFFUSION_CASES])
def test_diffusion_patch_matches_its_pinned_slice(method, arch, method_patches):
    check((method, arch), method_patches[method, arch], method_patches.losses[method, arch])


@pytest.mark.parametrize("method, arch", [pytest.param(m, a, id=f"{m}-{a}") for m, a in GAN_CASES])
def test_gan_patch_matches_its_pinned_slice(method, arch, gan_method_patches):
    check((method, arch), gan_method_patches[method], gan_method_patches.losses[method])


def test_every_method_has_a_pinned_slice():
    if PRINT:
        pytest.skip("print mode")
    assert set(EXPECTED) == set(DIFFUSION_CASES) | set(GAN_CASES)


# fmt: off
EXPECTED = {
    ("doco", "sd"): {
        "names": 35, "names_hash": "6472599103281d38", "changed": 1356, "abs_sum": 0.008122755389,
        "slices": {
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [5.9977174e-06, 6.005168e-06, -5.9977174e-06, -5.9977174e-06, -5.9902668e-06, 6.005168e-06]},
            "unet.up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [6.005168e-06, 6.005168e-06, -6.005168e-06, -5.9977174e-06, 6.0014427e-06, -6.005168e-06]},
            "unet.up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [-6.005168e-06, 5.9902668e-06, -5.9902668e-06, -5.9902668e-06, 5.9977174e-06, 5.9977174e-06]},
        },
        "losses": [{"loss": 0.0, "disc": 0.69314927}, {"loss": 1.8042675, "disc": 0.69314766, "adv": 0.69358695, "prior": 1.1106806}],
    },
    ("doco", "sd3"): {
        "names": 28, "names_hash": "92492018b70c95a1", "changed": 1008, "abs_sum": 0.006043973408,
        "slices": {
            "transformer.transformer_blocks.0.attn.add_k_proj.bias": {"at": [0, 1, 2, 3, 4, 5], "values": [-5.9902668e-06, -5.9902668e-06, -6.005168e-06, 6.0014427e-06, -5.9977174e-06, 5.9902668e-06]},
            "transformer.transformer_blocks.0.attn.to_v.bias": {"at": [0, 1, 2, 3, 4, 5], "values": [-6.005168e-06, 5.9902668e-06, -5.9902668e-06, -5.9902668e-06, -6.005168e-06, -5.9977174e-06]},
            "transformer.transformer_blocks.1.attn.to_v.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [5.9977174e-06, 5.9902668e-06, 5.9902668e-06, -5.9902668e-06, 6.005168e-06, -5.9902668e-06]},
        },
        "losses": [{"loss": 0.0, "disc": 0.69314957}, {"loss": 2.9111304, "disc": 0.6931479, "adv": 0.69287115, "prior": 2.2182593}],
    },
    ("doco", "sdxl"): {
        "names": 40, "names_hash": "09a8cde796f07754", "changed": 3648, "abs_sum": 0.02142281352,
        "slices": {
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [-5.9753656e-06, -5.9902668e-06, 5.9753656e-06, -5.915761e-06, 5.7518482e-06, -5.9902668e-06]},
            "unet.up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [5.9604645e-06, 5.9902668e-06, -5.9008598e-06, 5.9641898e-06, 5.7891011e-06, 5.9753656e-06]},
            "unet.up_blocks.0.attentions.1.transformer_blocks.1.attn2.to_v.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [5.9977174e-06, -5.99958e-06, 5.9977174e-06, 5.9977174e-06, 5.9977174e-06, 6.005168e-06]},
        },
        "losses": [{"loss": 0.0, "disc": 0.69315314}, {"loss": 1.818585, "disc": 0.69315314, "adv": 0.69295084, "prior": 1.1256342}],
    },
    ("esd", "sd"): {
        "names": 35, "names_hash": "6472599103281d38", "changed": 1356, "abs_sum": 0.1102859775,
        "slices": {
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [-9.1768801e-05, -8.9943409e-05, 9.0278685e-05, 9.0658665e-05, 9.149313e-05, -9.098649e-05]},
            "unet.up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [9.9316239e-05, 9.9346042e-05, -9.9509954e-05, -9.9293888e-05, 9.9223107e-05, -9.9301338e-05]},
            "unet.up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [-9.8854303e-05, 9.9033117e-05, -9.8973513e-05, -9.8973513e-05, 9.8869205e-05, 9.9025667e-05]},
        },
        "losses": [{"loss": 4.5282279e-05, "t": 1.0}, {"loss": 8.602201e-05, "t": 334.0}],
    },
    ("esd", "sd3"): {
        "names": 28, "names_hash": "92492018b70c95a1", "changed": 1008, "abs_sum": 0.09010570993,
        "slices": {
            "transformer.transformer_blocks.0.attn.add_k_proj.bias": {"at": [0, 1, 2, 3, 4, 5], "values": [-2.0235777e-05, 0.0001000762, 9.5769763e-05, -9.8012388e-05, -9.9934638e-05, 4.5150518e-05]},
            "transformer.transformer_blocks.0.attn.to_v.bias": {"at": [0, 1, 2, 3, 4, 5], "values": [0.00010001659, -9.9986792e-05, 9.5129013e-05, 0.0001000762, -9.4592571e-05, -9.9956989e-05]},
            "transformer.transformer_blocks.1.attn.to_v.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [8.8430941e-05, 7.6204538e-05, 8.7305903e-05, -9.7543001e-05, 9.983778e-05, 9.4681978e-05]},
        },
        "losses": [{"loss": 0.0045687263, "t": 8.9285717}, {"loss": 0.0055629248, "t": 751.12109}],
    },
    ("esd", "sdxl"): {
        "names": 40, "names_hash": "09a8cde796f07754", "changed": 3648, "abs_sum": 0.2598154308,
        "slices": {
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [1.7106533e-05, 3.0577183e-05, -4.0829182e-05, 1.4789402e-05, -1.4901161e-06, 2.168119e-05]},
            "unet.up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [-8.3684921e-05, -8.9734793e-05, 7.943809e-05, -7.7664852e-05, 6.262958e-05, -8.8587403e-05]},
            "unet.up_blocks.0.attentions.1.transformer_blocks.1.attn2.to_v.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [-9.3452632e-05, 9.3459152e-05, 9.2037022e-05, -9.3102455e-05, -9.3460083e-05, -9.3474984e-05]},
        },
        "losses": [{"loss": 9.6847652e-05, "t": 1.0}, {"loss": 0.00032006425, "t": 334.0}],
    },
    ("salun", "sd"): {
        "names": 242, "names_hash": "02da206eb5c6acc8", "changed": 9166, "abs_sum": 0.1378838886,
        "slices": {
            "unet.conv_in.bias": {"at": [0, 1, 2, 3], "values": [1.6972423e-05, -7.6442957e-06, -1.9289553e-05, 1.9947765e-05]},
            "unet.up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0.bias": {"at": [0, 1, 4, 6, 7], "values": [-1.6336329e-05, 1.090765e-05, -1.7382205e-05, 1.9662082e-05, 1.8088147e-05]},
            "unet.up_blocks.1.resnets.1.time_emb_proj.weight": {"at": [1, 2, 3, 8, 10, 17], "values": [1.9937754e-05, 1.7777085e-05, -5.6326389e-06, 1.6227365e-05, 1.1026859e-05, -1.9937754e-05]},
        },
        "losses": [{"loss": 0.58656055, "forget": 0.00028940887, "retain": 1.1725423}, {"loss": 0.57526278, "forget": 0.00030225949, "retain": 1.1499211}],
    },
    ("salun", "sd3"): {
        "names": 59, "names_hash": "65f1a781c9ff8bf6", "changed": 4024, "abs_sum": 0.06010222955,
        "slices": {
            "transformer.context_embedder.bias": {"at": [0, 1, 2, 3, 4, 5], "values": [-1.8015504e-05, -3.3229589e-06, 4.5672059e-06, -5.9008598e-06, 7.390976e-06, 1.9907951e-05]},
            "transformer.transformer_blocks.0.attn.to_v.weight": {"at": [0, 2, 8, 10, 11, 12], "values": [1.9878149e-05, 1.9848347e-05, -1.9289553e-05, -1.9483268e-05, 1.9073486e-05, -1.9550323e-05]},
            "transformer.transformer_blocks.1.norm1_context.linear.weight": {"at": [0, 2, 3, 5, 6, 7], "values": [-1.9390136e-05, 1.8820167e-05, 8.2552433e-06, -1.2129545e-05, 8.9257956e-06, -1.1026859e-05]},
        },
        "losses": [{"loss": 1.1188831, "forget": 0.0035147427, "retain": 2.2307367}, {"loss": 1.0992234, "forget": 0.00023129623, "retain": 2.1979842}],
    },
    ("salun", "sdxl"): {
        "names": 241, "names_hash": "14307c5d7157d843", "changed": 12688, "abs_sum": 0.1870282023,
        "slices": {
            "unet.add_embedding.linear_1.bias": {"at": [0, 1, 3, 4, 5, 6], "values": [-1.8391758e-05, -1.8819235e-05, 1.6883016e-05, -1.7823651e-05, 1.6026199e-05, 1.7479062e-05]},
            "unet.up_blocks.0.attentions.0.norm.weight": {"at": [2, 3, 4, 5, 6, 7], "values": [-1.9907951e-05, 6.9141388e-06, -9.2387199e-06, -3.3974648e-06, 3.4570694e-06, -1.9490719e-05]},
            "unet.up_blocks.1.resnets.1.time_emb_proj.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [1.9952655e-05, 1.8976629e-05, 1.8119812e-05, 1.9338448e-05, -4.6044588e-06, -1.8149614e-05]},
        },
        "losses": [{"loss": 0.57466841, "forget": 5.5494758e-05, "retain": 1.1492258}, {"loss": 0.55294508, "forget": 4.8364673e-05, "retain": 1.1057935}],
    },
    ("text_to_unlearn", "stylegan"): {
        "names": 5, "names_hash": "65e82692f300909e", "changed": 8640, "abs_sum": 25.71298453,
        "slices": {
            "generator.synthesis.b16.conv0.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [0.003780365, 0.0038640499, 0.0038873553, 0.0035859346, 0.0036147833, 0.0035734177]},
            "generator.synthesis.b4.conv1.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [-0.0029631555, 0.0035819113, -0.0034154654, -0.0030638576, 0.0026394129, 0.0020126104]},
            "generator.synthesis.b8.conv1.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [0.003121376, 0.0028374493, 0.0031781141, 0.0028914213, 0.0026163161, 0.0034579039]},
        },
        "losses": [{"loss": 0.98541218, "direction": 0.98541337, "pixel": 0.0, "feature": -1.1920929e-07, "presence": 0.98541337}, {"loss": 0.99191689, "direction": 0.99178714, "pixel": 1.1801223e-05, "feature": 1.1764865e-06, "presence": 0.99583042}],
    },
    ("uce", "sd"): {
        "names": 14, "names_hash": "a3910c2ebb6da594", "changed": 704, "abs_sum": 8.407395375,
        "slices": {
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [0.0098311221, -0.033362076, -0.0041874601, 0.00031894454, 0.010019082, -0.033768769]},
            "unet.up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [-0.012218161, 0.041462533, 0.0052041938, -0.00039638567, -0.012451758, 0.041967973]},
            "unet.up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [-0.0036853044, 0.012506141, 0.0015697156, -0.00011955987, -0.0037557632, 0.012658595]},
        },
        "losses": [],
    },
    ("uce", "sdxl"): {
        "names": 16, "names_hash": "13cd49593c7178a2", "changed": 2560, "abs_sum": 30.82662568,
        "slices": {
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [-0.026933908, -0.04724092, -0.0072736647, 0.00062538724, -0.0085599776, -0.069143489]},
            "unet.up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [0.043706719, 0.076659709, 0.011803264, -0.0010148407, 0.013890616, 0.11220188]},
            "unet.up_blocks.0.attentions.1.transformer_blocks.1.attn2.to_v.weight": {"at": [0, 1, 2, 3, 4, 5], "values": [0.0076442901, 0.013407757, 0.0020643866, -0.00017749528, 0.0024294637, 0.019624069]},
        },
        "losses": [],
    },
}
# fmt: on
