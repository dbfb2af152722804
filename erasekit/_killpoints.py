"""Named kill points for the crash-and-resume tests (tests/cli/test_kill_resume.py). Not a user feature.

With ``ERASEKIT_TEST_KILL_AT=<point>:<count>`` in the environment, the process sends itself SIGKILL the
``count``-th time it reaches ``kill_point("<point>")``: no ``finally`` block, ``atexit`` handler or buffered write
runs, exactly as when the machine loses power or the OOM killer strikes. Unset (the normal case), a kill point costs
one dictionary lookup.

The points, where they sit, and what a kill there leaves behind:

- ``sample``: before each chunk of the frozen model's own samples (SalUn/DoCo data generation); nothing written yet.
- ``step``: inside a training step, after the backward pass and before the optimizer step.
- ``write:<file name>``: inside :func:`erasekit._io.atomic_path` / :func:`~erasekit._io.atomic_dir` once the
  temporary file or folder is completely written, before it is renamed onto ``<file name>`` (a checkpoint is
  ``write:checkpoint.safetensors``, ``erasekit erase --out p.safetensors`` is ``write:p.safetensors``, an
  ``erasekit apply --out DIR`` folder is ``write:DIR``'s last component).
- ``written:<file name>``: just after that rename (the output is complete; whatever the caller does next is not).
- ``swap:<folder name>``: in :func:`~erasekit._io.atomic_dir` replacing an existing folder, between moving the old
  folder aside and moving the new one in.

Example:
    >>> # ERASEKIT_TEST_KILL_AT=write:checkpoint.safetensors:2 erasekit erase ... --set checkpoint_every=1
    >>> kill_point("step")  # a no-op unless the variable names this point
"""

from __future__ import annotations

import os
import signal

ENV = "ERASEKIT_TEST_KILL_AT"

_counts: dict[str, int] = {}
_counts_pid = [0]  # a forked child counts from zero


def kill_point(name: str) -> None:
    """SIGKILL this process if ``ERASEKIT_TEST_KILL_AT`` names ``name`` and this is its ``count``-th visit."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, count = spec.rpartition(":")
    if not point or not count.isdigit() or int(count) < 1:
        raise ValueError(f"{ENV}={spec!r}: expected <point>:<count>, e.g. step:3 (count from 1).")
    if point != name:
        return
    if _counts_pid[0] != os.getpid():
        _counts.clear()
        _counts_pid[0] = os.getpid()
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == int(count):
        os.kill(os.getpid(), signal.SIGKILL)
