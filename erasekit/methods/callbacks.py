"""Training-loop callbacks: progress bar, periodic checkpoints, loss history. Any callback may stop the run."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


class Callback:
    """Hooks called by the shared loop. Set ``state.should_stop = True`` to end training early."""

    def on_train_start(self, state) -> None: ...

    def on_step_end(self, state, logs: dict) -> None: ...

    def on_train_end(self, state) -> None: ...


class ProgressBar(Callback):
    """A tqdm bar over the steps, showing the latest loss terms."""

    def __init__(self, desc: str = "erasing"):
        self.desc = desc
        self.bar = None

    def on_train_start(self, state) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.total_steps, initial=state.step, desc=self.desc, unit="step", dynamic_ncols=True)

    def on_step_end(self, state, logs: dict) -> None:
        self.bar.update(1)
        if state.step % max(1, state.total_steps // 100) == 0 or state.step == state.total_steps:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()}, refresh=False)

    def on_train_end(self, state) -> None:
        if self.bar is not None:
            self.bar.close()


class Checkpointer(Callback):
    """Save a resumable checkpoint every ``every`` steps (and at a non-finite stop) into ``directory``."""

    def __init__(self, directory: str | Path, every: int):
        self.directory = Path(directory)
        self.every = every

    def on_step_end(self, state, logs: dict) -> None:
        if self.every and state.step % self.every == 0 and state.step < state.total_steps:
            from .checkpoint import save_checkpoint

            path = save_checkpoint(state, self.directory)
            logger.info("checkpoint at step %d: %s", state.step, path)


class LossHistory(Callback):
    """Keeps every step's logged values in ``self.history`` (a list of dicts)."""

    def __init__(self):
        self.history: list[dict] = []

    def on_step_end(self, state, logs: dict) -> None:
        self.history.append({"step": state.step, **logs})
