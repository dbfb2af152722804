"""The demo under load, over plain HTTP on loopback: several sessions at once (gradio_client, one client per browser
tab), jobs queued with bounded concurrency, sessions isolated, Stop and failures leaving the app usable, and the
memory bounds (patches kept per session, sessions kept per server, idle sessions closed).
"""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time

import pytest

from erasekit.demo import DemoServer, Limits, ModelCatalog, ModelChoice
from erasekit.demo import callbacks as cb
from erasekit.models import load_model

pytest.importorskip("gradio", reason="the demo extra is not installed: pip install -e '.[demo]'")
gradio_client = pytest.importorskip("gradio_client")

TIMEOUT = 180  # seconds for one job on a busy 2-core machine
ESD = "ddim_steps=2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JobLog:
    """Wraps ``cb.erase``/``cb.compare`` (the app looks them up at call time) to record when each job ran."""

    def __init__(self, monkeypatch):
        self.lock, self.active, self.most, self.runs = threading.Lock(), 0, 0, []
        self.started = threading.Event()
        for name in ("erase", "compare"):
            monkeypatch.setattr(cb, name, self._wrap(name, getattr(cb, name)))

    def _wrap(self, name, fn):
        def wrapped(server, session, *args, **kwargs):
            with self.lock:
                self.active += 1
                self.most = max(self.most, self.active)
            self.started.set()
            try:
                result = fn(server, session, *args, **kwargs)
                outcome = "ok"
                return result
            except Exception as err:
                outcome = type(err).__name__
                raise
            finally:
                with self.lock:
                    self.active -= 1
                    self.runs.append((name, session.id if isinstance(session, cb.DemoSession) else None, outcome))

        return wrapped


@pytest.fixture
def app(tiny_pipe, tmp_path, monkeypatch):
    """The demo on 127.0.0.1 (tiny-sd), one job at a time, small memory bounds; yields (url, server, job log)."""
    from erasekit.demo.app import serve

    catalog = ModelCatalog([ModelChoice("tiny-sd", "tiny-sd", "diffusion", lambda: load_model(tiny_pipe))])
    limits = Limits(keep_patches=2, max_sessions=3, concurrent_jobs=1, max_queue=8)
    server = DemoServer(catalog, limits, root=tmp_path / "server")
    jobs = JobLog(monkeypatch)
    port = _free_port()
    demo = serve(server, "127.0.0.1", port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/", server, jobs
    finally:
        demo.close()
        server.close()


def tab(url: str):
    """A new browser tab: its own gradio session, loaded like the page does."""
    client = gradio_client.Client(url, verbose=False)
    client.predict(api_name="/on_load")
    return client


def erase(client, concept: str, steps: int = 2):
    """Erase over HTTP; returns (status message, names offered in the Compare tab)."""
    status, _, _, names, _ = client.predict("esd", concept, "", steps, 0.01, 0, 4, ESD, api_name="/on_erase")
    return status, [value for value, _ in names["choices"]]


def compare(client, names):
    return client.predict("a cat", 0, 1, 2, 7.5, names, 1.0, api_name="/on_compare")[0]


def session_of(server: DemoServer, concept_word: str) -> cb.DemoSession:
    return next(s for s in server.sessions() if any(concept_word in n for n in s.patches))


def test_two_tabs_at_once_queue_their_jobs_and_never_see_each_others_patches(app):
    url, server, jobs = app
    cat, dog = tab(url), tab(url)
    assert len(server.sessions()) == 2
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # both tabs press Erase at once, twice each
        futures = [pool.submit(erase, client, concept) for client, concept in [(cat, "a cat"), (dog, "a dog")] * 2]
        results = [f.result(timeout=TIMEOUT) for f in futures]
    assert all("Error" not in status for status, _ in results), results
    assert jobs.most == 1 and len(jobs.runs) == 4  # queued: one job ran at a time
    assert sorted(session_of(server, "cat").patches) == ["esd-a-cat", "esd-a-cat-2"]
    assert sorted(session_of(server, "dog").patches) == ["esd-a-dog", "esd-a-dog-2"]
    for (_, names), word in zip(results, ["cat", "dog"] * 2, strict=True):  # each page lists its own patches only
        assert names and all(word in name for name in names), names
    with pytest.raises(Exception, match="not in the list of choices"):  # the other tab's name: refused by gradio
        compare(cat, ["esd-a-dog"])
    with pytest.raises(ValueError, match="No patch named 'esd-a-dog'"):  # and by the server, were it let through
        cb.compare(server, session_of(server, "cat"), "a cat", steps=2, patch_names=["esd-a-dog"])
    assert "1 patch(es)" in compare(dog, ["esd-a-dog"])


def test_stop_and_failures_leave_the_app_usable(app):
    url, server, jobs = app
    busy, other = tab(url), tab(url)
    job = busy.submit("esd", "a cat", "", 1000, 0.01, 0, 4, ESD, api_name="/on_erase")
    assert jobs.started.wait(TIMEOUT)
    queued = other.submit("esd", "a dog", "", 2, 0.01, 0, 4, ESD, api_name="/on_erase")  # waits for the slot
    time.sleep(0.5)
    assert "Stopping" in busy.predict(api_name="/cancel")  # the Stop button: outside the queue
    assert "Stopped; nothing was kept" in job.result(timeout=TIMEOUT)[0]
    assert "Error" not in queued.result(timeout=TIMEOUT)[0]  # the waiting job ran once the stopped one ended
    assert [outcome for _, _, outcome in jobs.runs] == ["JobCancelled", "ok"]
    stopped = next(s for s in server.sessions() if not s.patches)
    assert list(stopped.folder.iterdir()) == []  # nothing of the stopped job kept
    status, _ = erase(busy, "")  # a failing job: a message, no patch
    assert "The concept is empty" in status
    status, names = erase(busy, "a cat")  # and the tab keeps working
    assert "Error" not in status and names == ["esd-a-cat"]
    assert jobs.most == 1


def test_memory_is_bounded_per_session_and_per_server(app):
    url, server, _ = app
    first = tab(url)
    for concept in ("a cat", "a dog", "a cow"):  # keep_patches=2: the oldest is dropped with its files
        status, names = erase(first, concept)
        assert "Error" not in status
    assert names == ["esd-a-dog", "esd-a-cow"]
    session = server.sessions()[0]
    assert sorted(p.name for p in session.folder.iterdir()) == sorted(
        f"{n}{suffix}" for n in names for suffix in (".safetensors", "_lora.safetensors")
    )
    with pytest.raises(Exception, match="not in the list of choices"):
        compare(first, ["esd-a-cat"])
    with pytest.raises(ValueError, match="was dropped: a session keeps its newest patches"):
        cb.compare(server, session, "a cat", steps=2, patch_names=["esd-a-cat"])
    tabs = [tab(url) for _ in range(3)]  # max_sessions=3: the least recently used session is closed
    assert len(server.sessions()) == 3 and session.closed and not session.folder.exists()
    assert "reload the page" in compare(first, [])
    assert "Error" not in compare(tabs[0], [])


def test_idle_sessions_are_closed_and_new_ones_evict_the_least_recently_used(tmp_path, tiny_pipe):
    catalog = ModelCatalog([ModelChoice("tiny-sd", "tiny-sd", "diffusion", lambda: load_model(tiny_pipe))])
    server = DemoServer(catalog, Limits(max_sessions=2, session_idle_seconds=60), root=tmp_path / "server")
    a, b = server.new_session(), server.new_session()
    a.last_used -= 30
    b.last_used -= 20
    cb.methods_for(server, a)  # using a session makes it the most recent
    c = server.new_session()
    assert b.closed and not a.closed and server.sessions() == [a, c]
    a.last_used -= 120  # idle for longer than the limit
    d = server.new_session()
    assert a.closed and server.sessions() == [c, d]
    with pytest.raises(ValueError, match="reload the page"):
        cb.methods_for(server, a)
    server.close()
    assert server.sessions() == [] and c.closed and d.closed
    with pytest.raises(ValueError, match="keep_patches must be a whole number >= 1"):
        Limits(keep_patches=0)
