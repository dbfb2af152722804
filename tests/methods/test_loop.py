"""The shared training loop: NaN/Inf guard, checkpoints and resume, callbacks."""

import pytest
import torch
from conftest import FAST_CONFIGS, assert_bit_equal, state_of

import erasekit
from erasekit.methods import Callback, LossHistory, NonFiniteError
from erasekit.methods.esd import ESD

FAST_LR = 1e-5
FAST = {**FAST_CONFIGS["esd"], "steps": 4, "lr": FAST_LR}  # the bounds below are in units of this lr


def test_non_finite_loss_stops_and_keeps_last_good_state(tiny_pipe, tmp_path, monkeypatch):
    real_step = ESD.training_step

    def poisoned(self, state):
        loss, logs = real_step(self, state)
        return (loss * float("nan"), logs) if state.step == 2 else (loss, logs)

    monkeypatch.setattr(ESD, "training_step", poisoned)
    before = state_of(tiny_pipe.unet)
    with pytest.raises(NonFiniteError, match="non-finite loss or gradient at step 2") as err:
        erasekit.erase(tiny_pipe, "esd", "a cat", checkpoint_dir=str(tmp_path), **FAST)
    assert err.value.patch is not None and err.value.patch.metadata["stats"]["steps_run"] == 2
    assert all(torch.isfinite(d.to_dense()).all() for d in err.value.patch.deltas.values())
    assert (tmp_path / "checkpoint.safetensors").is_file()
    assert_bit_equal(state_of(tiny_pipe.unet), before)
    monkeypatch.setattr(ESD, "training_step", real_step)
    two = erasekit.erase(tiny_pipe, "esd", "a cat", **{**FAST, "steps": 2})
    for k, d in two.deltas.items():  # the last good state is exactly the state after two clean steps
        assert torch.equal(err.value.patch.deltas[k].to_dense(), d.to_dense())


class _Crash(Callback):
    def on_step_end(self, state, logs):
        if state.step == 3:
            raise KeyboardInterrupt


def test_resume_after_interruption_gives_the_uninterrupted_result(tiny_pipe, tmp_path):
    full = erasekit.erase(tiny_pipe, "esd", "a cat", **FAST)
    ckpt = {"checkpoint_dir": str(tmp_path), "checkpoint_every": 2}
    with pytest.raises(KeyboardInterrupt):
        erasekit.erase(tiny_pipe, "esd", "a cat", callbacks=[_Crash()], **FAST, **ckpt)
    history = LossHistory()
    resumed = erasekit.erase(tiny_pipe, "esd", "a cat", callbacks=[history], resume=True, **FAST, **ckpt)
    assert [h["step"] for h in history.history] == [3, 4]
    assert resumed.deltas.keys() == full.deltas.keys()
    for k, d in full.deltas.items():
        assert torch.equal(resumed.deltas[k].to_dense(), d.to_dense()), k


def test_checkpoint_of_another_run_is_refused(tiny_pipe, tmp_path):
    ckpt = {"checkpoint_dir": str(tmp_path), "checkpoint_every": 1}
    with pytest.raises(KeyboardInterrupt):
        erasekit.erase(tiny_pipe, "esd", "a cat", callbacks=[_Crash()], **FAST, **ckpt)
    with pytest.raises(ValueError, match="different run"):
        erasekit.erase(tiny_pipe, "esd", "a dog", resume=True, **FAST, **ckpt)


def test_callback_can_stop_early(tiny_pipe):
    class StopAtOne(Callback):
        def on_step_end(self, state, logs):
            state.should_stop = True

    patch = erasekit.erase(tiny_pipe, "esd", "a cat", callbacks=[StopAtOne()], **FAST)
    assert patch.metadata["stats"]["steps_run"] == 1


def test_checkpointing_needs_a_folder(tiny_pipe):
    with pytest.raises(ValueError, match="checkpoint_dir"):
        erasekit.erase(tiny_pipe, "esd", "a cat", checkpoint_every=1, **FAST)


def test_concept_without_tokens_is_refused_before_work(tiny_pipe):
    with pytest.raises(ValueError, match="concept is empty"):
        erasekit.erase(tiny_pipe, "esd", "  ", **FAST)
    with pytest.raises(ValueError, match="at most"):
        erasekit.erase(tiny_pipe, "esd", "cat " * 80, **FAST)


def test_gradient_checkpointing_gives_the_same_patch(tiny_pipe):
    plain = erasekit.erase(tiny_pipe, "esd", "a cat", **FAST)
    ckpt = erasekit.erase(tiny_pipe, "esd", "a cat", gradient_checkpointing=True, **FAST)
    for k, d in plain.deltas.items():  # recomputation runs with the trained tensors, so the result is identical
        assert torch.equal(ckpt.deltas[k].to_dense(), d.to_dense()), k
    assert not tiny_pipe.unet.is_gradient_checkpointing


def test_reference_style_full_optimizer_states_give_the_same_patch(tiny_pipe):
    plain = erasekit.erase(tiny_pipe, "esd", "a cat", **FAST)
    full = erasekit.erase(tiny_pipe, "esd", "a cat", optimizer_states="full", **FAST)
    for k, d in plain.deltas.items():
        assert torch.equal(full.deltas[k].to_dense(), d.to_dense()), k


def test_bf16_autocast_and_channels_last_run_and_stay_close(tiny_pipe):
    plain = erasekit.erase(tiny_pipe, "esd", "a cat", **FAST)
    fast = erasekit.erase(tiny_pipe, "esd", "a cat", mixed_precision="bf16", channels_last=True, sync_every=2, **FAST)
    assert fast.deltas.keys() == plain.deltas.keys()
    assert tiny_pipe.unet.conv_in.weight.is_contiguous()  # the caller's memory format is restored
    for k, d in plain.deltas.items():  # Adam steps are ~lr whatever the precision; signs may flip on tiny grads
        assert (fast.deltas[k].to_dense() - d.to_dense()).abs().max() <= 2 * FAST["steps"] * FAST_LR


@pytest.mark.slow
def test_compiled_unet_gives_the_same_patch(tiny_pipe):
    plain = erasekit.erase(tiny_pipe, "esd", "a cat", **FAST)
    compiled = erasekit.erase(tiny_pipe, "esd", "a cat", compile=True, **FAST)
    for k, d in plain.deltas.items():
        torch.testing.assert_close(compiled.deltas[k].to_dense(), d.to_dense(), rtol=0, atol=0.1 * FAST_LR)


@pytest.mark.parametrize("method", ["esd", "salun", "doco"])
def test_the_callers_parameters_get_no_gradients_and_keep_their_flags(method, tiny_pipe):
    tiny_pipe.vae.requires_grad_(False)  # a caller's own setting, to be kept as it was
    erasekit.erase(tiny_pipe, method, "a cat", **{**FAST_CONFIGS[method], "steps": 2})
    for name in ("unet", "text_encoder", "vae"):
        module = getattr(tiny_pipe, name)
        assert all(p.grad is None for p in module.parameters()), name
        assert all(p.requires_grad == (name != "vae") for p in module.parameters()), name
