"""Make this interpreter look like the GPU machines' image: every installed distribution that
``bench/gpu/image-packages.txt`` does not list (Ray, vLLM, pydantic, DeepSpeed, the bundled
models' packages...) is hidden, so importing it fails as it would there. What the listed
packages themselves require here (by their installed metadata, extras left out) stays visible:
the local versions may need a dependency the image's older versions do without.

Active where this directory is on ``PYTHONPATH`` at start-up (``bash bench/gpu/run.sh
--simulate-image``). Each finder on ``sys.meta_path`` is wrapped so that it finds nothing under a
hidden top-level name: ``import ray`` raises ``ModuleNotFoundError`` and
``importlib.util.find_spec("ray")`` returns None, which is how optional imports (transformers'
availability checks among them) see a missing package. Only the modules' import is hidden;
distribution metadata stays readable. The project's own packages are never hidden.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
from pathlib import Path

_LIST = Path(__file__).resolve().parent.parent / "image-packages.txt"
_WHEELS = Path(__file__).resolve().parent.parent / "wheels"  # carried with the kit: visible
_KEEP = {"lantern_batch", "bench", "_distutils_hack"}
_ABSENT = {"ray", "vllm", "deepspeed", "pydantic", "pydantic_core", "jsonschema"}
"""Seen missing on the image: hidden even where a listed package's
local version requires one of them (typer here requires pydantic)."""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _visible() -> set[str]:
    """The image's distributions and, transitively, what they require here."""
    requires: dict[str, list[str]] = {}
    for dist in importlib.metadata.distributions():
        names = []
        for req in dist.requires or []:
            if "extra" in req.partition(";")[2]:
                continue
            m = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)
            if m:
                names.append(_norm(m.group(0)))
        requires[_norm(dist.metadata["Name"] or "")] = names
    todo = [_norm(line.strip()) for line in _LIST.read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    todo += _carried()
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(requires.get(name, ()))
    return seen


def _carried() -> list[str]:
    """Distributions with a wheel in bench/gpu/wheels (``name-version-...whl``)."""
    return [_norm(w.name.split("-")[0]) for w in _WHEELS.glob("*.whl")] if _WHEELS.is_dir() else []


def _hidden() -> frozenset[str]:
    visible = _visible()
    absent = {m for m in _ABSENT if _norm(m) not in _carried()}
    hidden = set()
    for module, dists in importlib.metadata.packages_distributions().items():
        if module in _KEEP or module.startswith("__"):
            continue
        if module in absent or not any(_norm(d) in visible for d in dists):
            hidden.add(module)
    return frozenset(hidden | absent)


class _Hide:
    """A meta-path finder that delegates to ``inner`` except for hidden top-level names."""

    def __init__(self, inner, hidden: frozenset[str]):
        self._inner = inner
        self._hidden = hidden

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self._hidden:
            return None
        find = getattr(self._inner, "find_spec", None)
        return find(name, path, target) if find is not None else None

    def __getattr__(self, attr):  # invalidate_caches, find_distributions, ...
        return getattr(self._inner, attr)


HIDDEN = _hidden()
sys.meta_path[:] = [f if isinstance(f, _Hide) else _Hide(f, HIDDEN) for f in sys.meta_path]
os.environ["LANTERN_IMAGE_SIMULATED"] = "1"
