"""Where the served model comes from, and the holder that loads it off the request path.

- `FolderSource`: a saved detector's folder or an MLflow model folder (SageMaker's
  /opt/ml/model); served as it is.
- `RegistrySource`: a registered version (models:/NAME/N, models:/NAME@ALIAS), or the champion
  (models:/NAME@champion), which is followed: a new champion is loaded in the background and
  swapped into the engine between two requests.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from firepipe.core.serving.engine import ScoringEngine
from firepipe.core.serving.scoring import ServingModel, load_serving_model

if TYPE_CHECKING:
    from firepipe.resources.registry import ModelRegistry

log = logging.getLogger("firepipe.serve")

_MODELS_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))")


class NoModelError(ValueError):
    """The source has no model to serve (no champion yet)."""


class ModelSource(Protocol):
    description: str  # for people: what is served, e.g. the URI
    follows: bool  # whether `current` may change while serving

    def current(self) -> str:
        """The version to serve now (the model_version of its predictions)."""
        ...

    def load(self, version: str) -> ServingModel: ...


class FolderSource:
    follows = False

    def __init__(self, folder: Path, version: str | None = None) -> None:
        """`version`: what predictions name as their model (the registered version a
        SageMaker model was made from); the folder by default."""
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a folder holding a model")
        self.folder, self.version = folder, version or str(folder)
        self.description = str(folder)

    def current(self) -> str:
        return self.version

    def load(self, version: str) -> ServingModel:
        from firepipe.resources.registry import detector_directory

        return load_serving_model(detector_directory(self.folder), version)


class RegistrySource:
    def __init__(self, registry: ModelRegistry, uri: str) -> None:
        from firepipe.resources.registry import CHAMPION_ALIAS

        found = _MODELS_URI.fullmatch(uri)
        if found is None:
            raise ValueError(f"{uri!r} is not models:/NAME/VERSION or models:/NAME@ALIAS")
        self.registry, self.description = registry, uri
        self.name, self._version, self._alias = found["name"], found["version"], found["alias"]
        self.follows = self._alias == CHAMPION_ALIAS

    def current(self) -> str:
        if self._version is not None:
            return f"{self.name}/{self._version}"
        if not self.follows:  # another alias is served as it is at the start
            return f"{self.name}@{self._alias}"
        champion = self.registry.champion(self.name)
        if champion is None:
            raise NoModelError(
                f"{self.name} has no champion yet (`make run` trains and promotes one)"
            )
        return f"{self.name}/{champion.version}"

    def load(self, version: str) -> ServingModel:
        uri = f"models:/{version}"  # NAME/N or NAME@ALIAS
        with tempfile.TemporaryDirectory(prefix="firepipe-serve-") as scratch:
            # The scorer keeps what it needs in memory (and its own copy of a compiled
            # library), so the download can go once the model is loaded.
            folder = self.registry.download_model(uri, Path(scratch))
            return load_serving_model(folder, version)


class ModelHolder:
    """The engine once a model is loaded (None before). `start` loads in a background thread
    when nothing is loaded yet and, for a source that follows a champion, checks it every
    `poll_s` seconds, loading a new one there and swapping it in: a request never waits for
    a load, and one in flight finishes with the model it started with."""

    def __init__(self, source: ModelSource, *, poll_s: float = 10.0) -> None:
        self.source, self.poll_s = source, poll_s
        self.engine: ScoringEngine | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load_now(self) -> ServingModel:
        """Load the source's current model in this thread (a start that fails early)."""
        model = self.source.load(self.source.current())
        self._serve(model)
        return model

    def _serve(self, model: ServingModel) -> None:
        if self.engine is None:
            self.engine = ScoringEngine(model)
        else:
            self.engine.swap(model)
        log.info("serving %s (%s)", model.version, model.scorer.backend)

    def start(self) -> None:
        if self._thread is None and (self.engine is None or self.source.follows):
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="firepipe-model", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            if self.engine is not None and not self.source.follows:
                return
            self._stop.wait(self.poll_s)

    def refresh(self) -> None:
        """Load the source's current model if it is not the one served; a failure is logged
        and tried again at the next poll, the served model stays."""
        try:
            version = self.source.current()
            if self.engine is None or version != self.engine.model_version:
                self._serve(self.source.load(version))
        except NoModelError as e:
            log.warning("%s", e)
        except Exception:
            log.exception("cannot load the model from %s", self.source.description)
