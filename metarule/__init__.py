"""metarule: meta-learned unsupervised learning rules (Metz et al., ICLR 2019) in JAX."""
from metarule import base_model, meta_objective
from metarule.config import BaseModelConfig, ConfigError, RuleConfig, preset
from metarule.catalog import load_rule, shipped_rules

__all__ = [
    "BaseModelConfig",
    "ConfigError",
    "Embedder",
    "RuleConfig",
    "base_model",
    "load_rule",
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
