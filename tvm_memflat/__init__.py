"""tvm_memflat: flatten the activation-memory peaks of CNNs in Apache TVM (Relax).

Public API (see ``docs/architecture.md``):

* :func:`profile` — per-layer activation memory, peak, MACs, TVM's real allocation, and
  the device bytes predicted for our build;
* :class:`FlattenMemoryPeaks` — the Relax module pass;
* :func:`optimize`, :func:`plan` — the workflows of ``memflat optimize`` / ``plan``;
* :func:`load_model` — ONNX file or zoo name to a static-shape Relax IRModule;
* :func:`build` — compile with our pipeline: concatenations in place, one offset-planned arena;
* :mod:`tvm_memflat.zoo` — the five paper models built in code with seeded weights.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from .errors import MemflatError

# The one version source is setup.cfg; the installed distribution's metadata carries it.
try:
    __version__ = _metadata.version("tvm_memflat")
except _metadata.PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["FlattenMemoryPeaks", "MemflatError", "build", "load_model", "load_spec", "optimize",
           "plan", "profile", "zoo", "__version__"]


def __getattr__(name):
    # TVM takes ~1 s to import: load it only when an API that needs it is used,
    # so that `memflat --help` and the zoo stay fast.
    if name == "profile":
        from .workflows import profile

        return profile
    if name in ("optimize", "plan"):
        from . import workflows

        return getattr(workflows, name)
    if name == "FlattenMemoryPeaks":
        from .passes import FlattenMemoryPeaks

        return FlattenMemoryPeaks
    if name == "build":
        from .targets.build import build

        return build
    if name == "load_spec":
        from .spec import load_spec

        return load_spec
    if name == "load_model":
        from .frontend import load_model

        return load_model
    if name == "zoo":
        import importlib

        return importlib.import_module(".zoo", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
