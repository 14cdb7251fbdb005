"""The engine's model: loaded once (in the background if asked), its status, and switching to another.

ChatEngine inherits `ModelHolder`. Its status is what the app, the web page and the CLI show:
waiting -> loading -> ready | failed (and failed -> loading again on a retry).

A switch loads another model on a daemon thread while the current one keeps answering:

    switch = engine.switch_model("smollm2-135m", on_done=lambda s: print(s.state, s.error))
    switch.state        # "loading", then "ready" (replies use it from then on) or "failed"
    switch.wait(10)     # block until it is done (tests, the CLI)

A failed switch leaves the current model in place; a later switch supersedes an earlier one.
Loads run on daemon threads: a load can't be interrupted, and quitting mid-load must not wait for it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from .loading import LoadedModel, ModelLoadError

WAITING, LOADING, READY, FAILED = "waiting", "loading", "ready", "failed"


def load_error_line(spec: str, exc: BaseException) -> str:
    """What a failed load says in one line (ModelLoadError messages already are one)."""
    text = str(exc) if isinstance(exc, ModelLoadError) else f"cannot load model {spec!r}: {exc}"
    return (text.strip().splitlines() or [type(exc).__name__])[0]


@dataclass
class ModelSwitch:
    spec: str
    previous: str  # the spec that answers until this one is ready
    state: str = LOADING
    error: str | None = None  # one line, when failed
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def finish(self, error: str | None) -> None:
        self.state, self.error = (FAILED, error) if error else (READY, None)
        self._done.set()


class ModelHolder:
    def __init__(self, model_spec: str, loader: Callable[[str], LoadedModel]) -> None:
        self.model_spec = model_spec
        self._loader = loader
        self._loaded: LoadedModel | None = None
        self._load_lock = threading.Lock()  # held for the whole load
        self._status_lock = threading.Lock()  # held to change model_status (never for long)
        self._settled = threading.Event()  # set while no load is in progress
        self._settled.set()
        self.model_status: str = WAITING
        self.model_error: str | None = None  # one line, when model_status is "failed"
        self.model_switch: ModelSwitch | None = None  # the latest switch, while and after it loads

    def load(self) -> LoadedModel:
        """Load the model once (the first call blocks; later calls return it).

        A failed load raises (ModelLoadError, or whatever the loader raised) and may be tried again."""
        with self._load_lock:
            if self._loaded is None:
                with self._status_lock:
                    self.model_status, self.model_error = LOADING, None
                    self._settled.clear()
                try:
                    loaded = self._loader(self.model_spec)
                except Exception as exc:
                    with self._status_lock:
                        self.model_status, self.model_error = FAILED, load_error_line(self.model_spec, exc)
                        self._settled.set()
                    raise
                except BaseException:  # interrupted (ctrl-c): not loaded, not failed either
                    with self._status_lock:
                        self.model_status = WAITING
                        self._settled.set()
                    raise
                with self._status_lock:
                    self._loaded, self.model_status = loaded, READY
                    self._settled.set()
            return self._loaded

    def load_in_background(self, on_done: Callable[[], None] | None = None) -> bool:
        """Start loading the model on a daemon thread unless it is loading or loaded; `on_done` runs
        on that thread when it ends (check `model_status`). Returns whether a load was started."""
        with self._status_lock:
            if self.model_status in (LOADING, READY):
                return False
            self.model_status, self.model_error = LOADING, None
            self._settled.clear()

        def run() -> None:
            try:
                self.load()
            except Exception:  # recorded in model_status / model_error
                pass
            if on_done is not None:
                on_done()

        threading.Thread(target=run, name="moviechat-load", daemon=True).start()
        return True

    def wait_for_model(self, timeout: float | None = None) -> bool:
        """Wait until a load in progress ends (or `timeout` seconds); whether none is in progress now."""
        self._settled.wait(timeout)
        return self.model_status != LOADING

    @property
    def model_loaded(self) -> bool:
        return self.model_status == READY

    def _switch(self, spec: str, on_done: Callable[[ModelSwitch], None] | None) -> ModelSwitch:
        """Load `spec` on a daemon thread, then answer with it (see the module docstring)."""
        switch = self.model_switch = ModelSwitch(spec, previous=self.model_spec)
        current = self._loaded if spec == self.model_spec else None  # already answering: nothing to load

        def run() -> None:
            try:
                loaded = current or self._loader(spec)
            except Exception as exc:  # any broken model: reported, never raised into the app
                switch.finish(load_error_line(spec, exc))
            else:
                switch.finish(None if self._install(switch, loaded) else "superseded by a later switch")
            if on_done is not None:
                on_done(switch)

        threading.Thread(target=run, name=f"moviechat-switch-{spec}", daemon=True).start()
        return switch

    def _install(self, switch: ModelSwitch, loaded: LoadedModel) -> bool:
        with self._load_lock, self._status_lock:  # after a first load in progress, or failed: this one answers
            if self.model_switch is not switch:
                return False  # a later switch wins
            self._loaded, self.model_spec, self.model_status, self.model_error = loaded, switch.spec, READY, None
            self._settled.set()
            return True
