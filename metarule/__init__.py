"""metarule: meta-learned unsupervised learning rules (Metz et al., ICLR 2019) in JAX."""
from metarule import base_model, meta_objective
from metarule.config import BaseModelConfig, ConfigError, RuleConfig, preset

__all__ = [
    "BaseModelConfig",
    "ConfigError",
    "RuleConfig",
    "base_model",
    "meta_objective",
    "preset",
]
