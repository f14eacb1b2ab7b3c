"""metarule: meta-learned unsupervised learning rules (Metz et al., ICLR 2019) in JAX."""
from importlib import metadata as _metadata

from metarule import base_model, meta, meta_objective
from metarule.config import BaseModelConfig, ConfigError, RuleConfig, preset
from metarule.catalog import load_rule, shipped_rules


def _version() -> str:
    """The installed distribution's version; from a source tree, pyproject.toml's."""
    try:
        return _metadata.version("metarule")
    except _metadata.PackageNotFoundError:
        import tomllib
        from pathlib import Path
        with open(Path(__file__).parents[1] / "pyproject.toml", "rb") as f:
            return tomllib.load(f)["project"]["version"]


__version__ = _version()

__all__ = [
    "BaseModelConfig",
    "ConfigError",
    "Embedder",
    "RuleConfig",
    "__version__",
    "base_model",
    "load_rule",
    "meta",
    "meta_objective",
    "preset",
    "shipped_rules",
]


def __getattr__(name):
    # Embedder imports scikit-learn: loaded on first use, so `import metarule` stays light.
    if name == "Embedder":
        from metarule.sklearn_api import Embedder
        return Embedder
    raise AttributeError(f"module 'metarule' has no attribute {name!r}")
