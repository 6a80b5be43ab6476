"""tvm_memflat: flatten the activation-memory peaks of CNNs in Apache TVM (Relax).

Public API (see ``docs/architecture.md``):

* :func:`profile` — per-layer activation memory, peak, MACs, and TVM's real allocation;
* :func:`load_model` — ONNX file or zoo name to a static-shape Relax IRModule;
* :func:`build` — compile with our pipeline: concatenations in place, one offset-planned arena;
* :mod:`tvm_memflat.zoo` — the five paper models built in code with seeded weights.
"""

from __future__ import annotations

from .errors import MemflatError

__version__ = "0.1.0"

__all__ = ["FlattenMemoryPeaks", "MemflatError", "build", "load_model", "load_spec", "profile",
           "zoo", "__version__"]


def __getattr__(name):
    # TVM takes ~1 s to import: load it only when an API that needs it is used,
    # so that `memflat --help` and the zoo stay fast.
    if name == "profile":
        from .analysis import profile

        return profile
    if name == "FlattenMemoryPeaks":
        from .transform import FlattenMemoryPeaks

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
