"""Configuration as frozen dataclasses: the base model and the learned rule's hyper-parameters."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

ACTIVATIONS = ("relu", "leaky_relu", "swish", "tanh", "sigmoid", "elu", "softplus", "step",
               "identity")


class ConfigError(ValueError):
    """A configuration that cannot describe a valid model or rule."""


@dataclass(frozen=True)
class BaseModelConfig:
    """The MLP the rule trains (App. G.2): input -> hidden widths -> embedding."""
    input_dim: int
    hidden: tuple[int, ...] = (128, 128, 128, 128)
    embedding: int = 32              # N_embedding, fixed at 32 in the paper
    activation: str = "relu"
    permute_inputs: bool = False     # fixed random input permutation drawn at init
    w_init_std: float = 0.01         # as the authors' code; batch norm makes the scale moot
    b_init_std: float = 0.1

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.input_dim < 1:
            raise ConfigError(f"input_dim must be >= 1, got {self.input_dim}")
        if any(h < 1 for h in self.hidden) or self.embedding < 1:
            raise ConfigError(f"layer widths must be >= 1, got hidden={self.hidden} "
                              f"embedding={self.embedding}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; choose one of "
                              f"{', '.join(ACTIVATIONS)}")

    @property
    def widths(self) -> tuple[int, ...]:
        """N^0 .. N^L: every layer's unit count, input units included."""
        return (self.input_dim, *self.hidden, self.embedding)


@dataclass(frozen=True)
class RuleConfig:
    """Hyper-parameters (the lambdas of App. G) of UnsupervisedUpdate."""
    delta_dims: int = 32          # lambda_deltadims: channels of the top-down signal d
    h_size: int = 64              # lambda_hsize = lambda_computehsize: channels of h (App.96-104)
    grad_channels: int = 4        # lambda_gradC: rank of each low-rank readout (App.42)
    top_delta_size: int = 64      # lambda_topdeltasize (App.67)
    inner_batch: int = 128        # B of the unlabeled batches
    inner_lr: float = 3e-4        # lambda_philr (App.5-6)
    norm_eps: float = 1.0         # the 1 in x / sqrt(1 + E[x^2]) (App.59, App.62)
    bn_eps: float = 1e-5

    def __post_init__(self):
        for name in ("delta_dims", "h_size", "grad_channels", "top_delta_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.inner_batch < 2:
            raise ConfigError(f"inner_batch must be >= 2 (batch norm needs a batch), "
                              f"got {self.inner_batch}")
        if not 0.0 < self.inner_lr < 1.0:
            raise ConfigError(f"inner_lr must be in (0, 1), got {self.inner_lr}")

    def replace(self, **changes) -> "RuleConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, RuleConfig] = {
    # App. G and the authors' defaults.
    "paper": RuleConfig(),
    # Small enough for meta-training on 2 CPU cores; the choice is measured in docs/rule.md.
    "cpu": RuleConfig(delta_dims=8, h_size=16, grad_channels=4, top_delta_size=16,
                      inner_batch=64, inner_lr=3e-3),
    # For tests and smoke runs only: seconds to compile, meaningless to meta-train.
    "tiny": RuleConfig(delta_dims=4, h_size=8, grad_channels=2, top_delta_size=8,
                       inner_batch=16, inner_lr=1e-2),
}


def preset(name: str) -> RuleConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
