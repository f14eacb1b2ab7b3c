"""UnsupervisedUpdate(phi, x; theta): the learned, neuron-local update rule of App. G.1, G.4-G.8.

Read top to bottom: the building blocks (soft normalisation; the 1-D convolutions over the batch
or the unit axis and the batch norm are in kernels.py), then topD (G.7), computeH (G.8), the
backward pass (G.4.1), the low-rank readouts and weight-update planes (G.5), their merge and
post-processing (G.6), and finally the step itself (App.5-6). Shapes use B = batch, N = units of a layer, D = delta dims,
H = h size, C = grad channels.

Every design choice where the paper is ambiguous is listed in docs/rule.md.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from metarule import base_model
from metarule.config import RuleConfig
from metarule.kernels import batch_norm, bn_relu, conv1d
from metarule.runtime import all_finite

Array = jax.Array
Theta = dict  # a pytree of arrays; see init_theta for its layout

# The weight-update planes of App.44-57, then three fixed decorrelation planes of our own that let
# classic rules (Oja, Sanger, Foldiak) be written exactly (docs/rule.md).
PLANES = (
    "w_hat",           # App.44
    "w_hat_sq_sign",   # App.45
    "zero",            # App.46  lowRR
    "rbf",             # App.47  exp(-W^2) * lowRR
    "first",           # App.48  W * lowRR
    "hebbian",         # App.49  centred covariance of pre- and post-synaptic activity
    "lin_lower_symm",  # App.50-51
    "sqr_lower_symm",  # App.52-53
    "lin_upper_symm",  # App.54-55
    "sqr_upper_symm",  # App.56-57
    "oja",             # W_hat C_yy: Oja's subspace-rule decay term
    "sanger",          # W_hat triu(C_yy): Sanger's generalised Hebbian decay term
    "lateral",         # W_hat offdiag(C_yy): anti-Hebbian lateral decorrelation (Foldiak)
)
# Learned low-rank readouts: which h each side reads (App.46-57). "lower" = h^{l-1}, "upper" = h^l.
READOUTS = (
    ("zero", "lower", "upper"),
    ("rbf", "lower", "upper"),
    ("first", "lower", "upper"),
    ("lin_lower_symm", "lower", "lower"),
    ("sqr_lower_symm", "lower", "lower"),
    ("lin_upper_symm", "upper", "upper"),
    ("sqr_upper_symm", "upper", "upper"),
)
N_WEIGHT_STATS = 8  # Stats of incoming and outgoing weights, 4 each (App.85-92)


# ----------------------------------------------------------------------------- building blocks
# conv1d(m, w, axis): circular 1-D convolution of m (B, N, C_in) along the batch (axis 0,
# ConvBatch) or unit axis (1, ConvUnit), taps stacked in w (K * C_in, C_out); circular because
# neither axis has edges (batch order is arbitrary, unit positions lie on a circle, App.81-82).
# batch_norm(m, eps): per channel over batch and units, no affine; bn_relu = relu(batch_norm).
# Both are in kernels.py with hand-written gradients.

def unit_rms(w: Array) -> Array:
    """W / RMS(W) (App.43): batch norm makes the weight scale meaningless to the base model, so
    nothing the rule computes from W should depend on it."""
    return w * jax.lax.rsqrt(jnp.mean(jnp.square(w)) + 1e-12)


def soft_normalize(x: Array, eps: float) -> Array:
    """x / sqrt(eps + E[x^2]) (App.59, App.62): bounds the norm without amplifying small x."""
    return x * jax.lax.rsqrt(eps + jnp.mean(jnp.square(x)))


def conv_bn_relu(m: Array, w: Array, axis: int, eps: float) -> Array:
    return bn_relu(conv1d(m, w, axis), eps)


# ----------------------------------------------------------------------------- topD (G.7)

def top_d(x_top: Array, theta: Theta, cfg: RuleConfig) -> Array:
    """topD(x^L): (B, N^L) -> (B, N^L, D), convolutions over batch and units (App.65-79)."""
    p = theta["top_d"]
    m = x_top[..., None]                                   # App.66   (B, N, 1)
    m = conv_bn_relu(m, p["batch1"], 0, cfg.bn_eps)        # App.67-68
    m = conv_bn_relu(m, p["unit1"], 1, cfg.bn_eps)         # App.70-71
    m = conv_bn_relu(m, p["unit2"], 1, cfg.bn_eps)         # App.72-73
    m = conv_bn_relu(m, p["batch2"], 0, cfg.bn_eps)        # App.74-75
    m = conv_bn_relu(m, p["batch3"], 0, cfg.bn_eps)        # App.76-77
    return conv1d(m, p["out"], 0) + p["out_b"]             # App.78-79  (B, N, D)


# ----------------------------------------------------------------------------- computeH (G.8)

def weight_stats(w: Array, axis: int) -> Array:
    """Stats_axis(w) (App.85-90): L1, RMS, mean and std over `axis` of W / RMS(W), one row per
    remaining unit."""
    w = unit_rms(w)
    mean = jnp.mean(w, axis=axis)
    return jnp.stack([jnp.mean(jnp.abs(w), axis=axis),
                      jnp.sqrt(jnp.mean(jnp.square(w), axis=axis)),
                      mean,
                      jnp.std(w, axis=axis)], axis=-1)


def unit_position(n: int, dtype) -> Array:
    """sin/cos of the unit index on a circle (App.81-82): (N, 2)."""
    angle = 2.0 * math.pi * jnp.arange(n, dtype=dtype) / n
    return jnp.stack([jnp.sin(angle), jnp.cos(angle)], axis=-1)


def input_conv_batch(stats: Array, pos: Array, xzd: Array, w: Array) -> Array:
    """ConvBatch (App.96) of computeH's input, whose channels -- the rows of each tap of w -- are
    [stats, x, z, sin, cos, d] (App.95): (B, N, H).

    stats (N, 9) and pos = (sin, cos) (N, 2) are the same for every example, so every tap of a
    convolution over the batch reads the same row of them: their share is one (N, 11) product
    with the taps summed, rather than B broadcast copies through the full product.
    """
    s = stats.shape[-1]
    taps = w.reshape(-1, s + 2 + xzd.shape[-1], w.shape[-1])             # (K, C_in, H)
    per_unit_taps = jnp.concatenate([taps[:, :s], taps[:, s + 2:s + 4]], 1)
    per_example_taps = jnp.concatenate([taps[:, s:s + 2], taps[:, s + 4:]], 1)
    return (conv1d(xzd, per_example_taps.reshape(-1, w.shape[-1]), 0)
            + jnp.concatenate([stats, pos], -1) @ jnp.sum(per_unit_taps, 0))


def compute_h(d: Array, x: Array, z: Array, w_in: Array, w_out: Array, b: Array,
              theta: Theta, cfg: RuleConfig) -> Array:
    """computeH (App.80-104): the per-unit state h^l, (B, N, H).

    Args:
      d: (B, N, D) top-down signal; x, z: (B, N) post- and pre-activations;
      w_in: (N^{l-1}, N) incoming weights; w_out: (N, N^{l+1}) outgoing weights; b: (N,) bias.
    """
    p = theta["compute_h"]
    stats = jnp.concatenate([weight_stats(w_in, 0), weight_stats(w_out, 1), b[:, None]], -1)
    xzd = jnp.concatenate([x[..., None], z[..., None], d], -1)            # App.83-84
    xzd = batch_norm(xzd, cfg.bn_eps)                                     # App.93
    # App.93 normalises every channel over (batch, units); sin/cos are the same for every
    # example, so normalising them over the units alone is the same.
    pos = batch_norm(unit_position(x.shape[1], x.dtype)[None], cfg.bn_eps)[0]  # App.81-82
    m = input_conv_batch(stats, pos, xzd, p["batch1"])                    # App.91-96
    m = bn_relu(m, cfg.bn_eps)                                            # App.97
    m = conv_bn_relu(m, p["unit1"], 1, cfg.bn_eps)                        # App.98-99
    m = conv_bn_relu(m, p["batch2"], 0, cfg.bn_eps)                       # App.100-101
    return conv_bn_relu(m, p["unit2"], 1, cfg.bn_eps)                     # App.102-104


# ----------------------------------------------------------------------------- backward pass (G.4.1)

def error_signal(d: Array, z: Array, h: Array, theta: Theta) -> Array:
    """delta = d * sigmoid(z) + h theta_W + theta_b (App.33), all on the upper layer's units."""
    return d * jax.nn.sigmoid(z)[..., None] + h @ theta["error_w"] + theta["error_b"]


def propagate_down(delta: Array, v: Array) -> Array:
    """d^l = delta V^T scaled to unit second moment (App.34-35): (B, N^{l+1}, D) -> (B, N^l, D)."""
    d = jnp.einsum("bjd,mj->bmd", delta, v)
    return d * jax.lax.rsqrt(jnp.mean(jnp.square(d)) + 1e-12)


def compute_all_h(acts: base_model.Activations, params: base_model.Params, theta: Theta,
                  cfg: RuleConfig) -> list[Array]:
    """h^L, h^{L-1}, ..., h^0 by the recursion of App.31-36; returned in layer order h^0..h^L.

    The input units (l = 0) have no pre-activation, bias or incoming weights: z^0 = x^0, b^0 = 0,
    and the outgoing weights stand in for the missing incoming ones (and vice versa at the top).
    """
    layers = params.layers
    n_layers = len(layers)
    d = top_d(acts.xs[-1], theta, cfg)                                    # App.31
    hs = [None] * (n_layers + 1)
    for l in range(n_layers, -1, -1):
        w_in = layers[l - 1].w if l > 0 else layers[0].w.T
        w_out = layers[l].w if l < n_layers else layers[-1].w.T
        z = acts.zs[l - 1] if l > 0 else acts.xs[0]
        b = layers[l - 1].b if l > 0 else jnp.zeros_like(acts.xs[0][0])
        hs[l] = compute_h(d, acts.xs[l], z, w_in, w_out, b, theta, cfg)    # App.36
        if l > 0:
            delta = error_signal(d, z, hs[l], theta)                      # App.33
            d = propagate_down(delta, layers[l - 1].v)                    # App.34-35
    return hs


# ----------------------------------------------------------------------------- weight updates (G.5)

def low_rank_readout(r_a: Array, r_b: Array) -> Array:
    """lowRR (App.37-42) from readouts r_a (B, N_a, C), r_b (B, N_b, C): (N_a, N_b),
    averaged over the batch and the C channels."""
    bsz, _, c = r_a.shape
    return jnp.einsum("bic,bjc->ij", r_a, r_b) / (bsz * c)


def readouts(h_lower: Array, h_upper: Array, theta: Theta) -> dict[str, Array]:
    """Every learned lowRR term of a layer, keyed by plane name.

    Each side's readouts are one (B*N, H) x (H, 7*C) product: XLA's CPU backend runs fourteen
    thin H -> C products, and above all their gradients, several times slower.
    """
    weights = {"lower": [], "upper": []}  # the readout matrices that read each side, in order
    for i, (_, a, b) in enumerate(READOUTS):
        weights[a].append(theta["readout_a"][i])
        weights[b].append(theta["readout_b"][i])
    h = {"lower": h_lower, "upper": h_upper}
    r = {side: iter(jnp.unstack(jnp.einsum("bnh,khc->bnkc", h[side], jnp.stack(w)), axis=2))
         for side, w in weights.items()}
    return {name: low_rank_readout(next(r[a]), next(r[b])) for name, a, b in READOUTS}


def centred_cov(a: Array, b: Array) -> Array:
    """E_b[(a - E a)^T (b - E b)]: (N_a, N_b)."""
    a = a - jnp.mean(a, axis=0)
    b = b - jnp.mean(b, axis=0)
    return a.T @ b / a.shape[0]


def weight_planes(w: Array, x_lower: Array, x_upper: Array, h_lower: Array, h_upper: Array,
                  theta: Theta) -> Array:
    """The weight-update planes Delta W_i of a layer (App.43-57 and the fixed decorrelation
    planes): (len(PLANES), N^{l-1}, N^l)."""
    n_lower, n_upper = w.shape
    w_hat = unit_rms(w)                                                      # App.43
    sqr_w = jnp.sign(w_hat) * (jnp.sqrt(1.0 + jnp.square(w_hat)) - 1.0)      # App.53, App.57
    rr = readouts(h_lower, h_upper, theta)
    off_lower = 1.0 - jnp.eye(n_lower, dtype=w.dtype)
    off_upper = 1.0 - jnp.eye(n_upper, dtype=w.dtype)

    def symm(s, off, n):  # [(S + S^T) * (1 - I)] / sqrt(2), with S scaled by 1/sqrt(N)
        s = s / math.sqrt(n)
        return (s + s.T) * off / math.sqrt(2.0)

    c_yy = centred_cov(x_upper, x_upper)
    planes = {
        "w_hat": w_hat,                                                      # App.44
        "w_hat_sq_sign": jnp.square(w_hat) * jnp.sign(w_hat),                # App.45
        "zero": rr["zero"],                                                  # App.46
        "rbf": jnp.exp(-jnp.square(w_hat)) * rr["rbf"],                      # App.47
        "first": w_hat * rr["first"],                                        # App.48
        "hebbian": centred_cov(x_lower, x_upper),                            # App.49
        "lin_lower_symm": symm(rr["lin_lower_symm"], off_lower, n_lower) @ w_hat,   # App.50-51
        "sqr_lower_symm": symm(rr["sqr_lower_symm"], off_lower, n_lower) @ sqr_w,   # App.52-53
        "lin_upper_symm": w_hat @ symm(rr["lin_upper_symm"], off_upper, n_upper),   # App.54-55
        "sqr_upper_symm": sqr_w @ symm(rr["sqr_upper_symm"], off_upper, n_upper),   # App.56-57
        "oja": w_hat @ c_yy,
        "sanger": w_hat @ jnp.triu(c_yy),
        "lateral": w_hat @ (c_yy * off_upper),
    }
    return jnp.stack([planes[name] for name in PLANES])


# ----------------------------------------------------------------------------- merge (G.6)

def merge_planes(planes: Array, theta: Theta, eps: float) -> Array:
    """Normalise each plane, weight it by theta_mergeW and average (App.59-60)."""
    mean_sq = jnp.mean(jnp.square(planes), axis=(1, 2), keepdims=True)
    normalized = planes * jax.lax.rsqrt(eps + mean_sq)                      # App.59
    return jnp.einsum("p,pij->ij", theta["merge"], normalized) / planes.shape[0]  # App.60


def no_shrink(delta: Array, w: Array) -> Array:
    """Remove the part of delta along W that would shrink W under W - lr * delta (App.61)."""
    w_unit = w * jax.lax.rsqrt(jnp.sum(jnp.square(w)) + 1e-12)
    return delta - w_unit * jax.nn.relu(jnp.sum(delta * w_unit))


def final_weight_delta(planes: Array, w: Array, theta: Theta, cfg: RuleConfig) -> Array:
    """Delta W_final of App.59-62."""
    merged = merge_planes(planes, theta, cfg.norm_eps)
    return soft_normalize(no_shrink(merged, w), cfg.norm_eps)               # App.61-62


def bias_delta(h: Array, theta: Theta, eps: float) -> Array:
    """Constrained bias update (App.63-64).

    The batch-mean readout of h; then its mean over units is clamped to be >= 0, so that under
    b - lr * delta the update can never raise the biases on average (the pathology of App.64:
    pushing every unit into its linear regime); finally soft-normalised like the weights.
    """
    base = jnp.mean(h @ theta["bias_readout"], axis=0)                      # App.63
    constrained = base - jnp.minimum(jnp.mean(base), 0.0)                   # App.64
    return soft_normalize(constrained, eps)


# ----------------------------------------------------------------------------- the update (G.1)

def compute_delta_weight(params: base_model.Params, acts: base_model.Activations, theta: Theta,
                         cfg: RuleConfig):
    """computeDeltaWeight (App.4): (Delta W_final^l, Delta b^l) for l = 1..L."""
    hs = compute_all_h(acts, params, theta, cfg)
    deltas = []
    for l, layer in enumerate(params.layers, start=1):
        planes = weight_planes(layer.w, acts.xs[l - 1], acts.xs[l], hs[l - 1], hs[l], theta)
        deltas.append((final_weight_delta(planes, layer.w, theta, cfg),
                       bias_delta(hs[l], theta, cfg.norm_eps)))
    return deltas


def unsupervised_update(theta: Theta, params: base_model.Params, x: Array, cfg: RuleConfig,
                        activation: str = "relu"):
    """phi_{t+1} = UnsupervisedUpdate(phi_t, x_t; theta) (App.1-6).

    The forward and backward weights receive the same Delta W (as the authors' code); each
    parameter moves as an exponential moving average: p <- p (1 - lr) - lr * Delta (App.5-6).
    """
    acts = base_model.apply(params, x, activation)                          # App.2-3
    deltas = compute_delta_weight(params, acts, theta, cfg)
    lr = cfg.inner_lr
    layers = tuple(
        base_model.Layer(w=layer.w * (1 - lr) - lr * dw,                    # App.5
                         b=layer.b * (1 - lr) - lr * db,                    # App.6
                         v=layer.v * (1 - lr) - lr * dw)
        for layer, (dw, db) in zip(params.layers, deltas))
    return params._replace(layers=layers)


# ----------------------------------------------------------------------------- theta

def _dense(key: Array, fan_in: int, fan_out: int, dtype) -> Array:
    return jax.random.normal(key, (fan_in, fan_out), dtype) / math.sqrt(fan_in)


def init_theta(key: Array, cfg: RuleConfig, dtype=jnp.float32) -> Theta:
    """The paper's initialisation: random conv nets and readouts, every merge weight 0.1 (as the
    authors' Linear(planes -> 1)), zero error-propagation and bias readouts' offsets."""
    t, h, dd, c = cfg.top_delta_size, cfg.h_size, cfg.delta_dims, cfg.grad_channels
    h_in = N_WEIGHT_STATS + 1 + 4 + dd
    k = iter(jax.random.split(key, 16))
    return {
        "top_d": {
            "batch1": _dense(next(k), 5 * 1, t, dtype),
            "unit1": _dense(next(k), 3 * t, t, dtype),
            "unit2": _dense(next(k), 3 * t, t, dtype),
            "batch2": _dense(next(k), 3 * t, t, dtype),
            "batch3": _dense(next(k), 3 * t, t, dtype),
            "out": _dense(next(k), 3 * t, dd, dtype),
            "out_b": jnp.zeros((dd,), dtype),
        },
        "compute_h": {
            "batch1": _dense(next(k), 3 * h_in, h, dtype),
            "unit1": _dense(next(k), 3 * h, h, dtype),
            "batch2": _dense(next(k), 3 * h, h, dtype),
            "unit2": _dense(next(k), 3 * h, h, dtype),
        },
        "error_w": _dense(next(k), h, dd, dtype),
        "error_b": jnp.zeros((dd,), dtype),
        "readout_a": jax.random.normal(next(k), (len(READOUTS), h, c), dtype) / math.sqrt(h),
        "readout_b": jax.random.normal(next(k), (len(READOUTS), h, c), dtype) / math.sqrt(h),
        "merge": jnp.full((len(PLANES),), 0.1, dtype),
        "bias_readout": jax.random.normal(next(k), (h,), dtype) / math.sqrt(h),
    }


# ----------------------------------------------------------------------------- input checks

def check_inputs(theta: Theta, params: base_model.Params, x) -> None:
    """Raise ValueError unless `x` (..., B, N^0) fits the base model and theta, params and x are
    all finite. Call it before the rule's jitted functions (never inside them): there a wrong
    width fails deep in XLA, and a NaN or inf silently turns every parameter into NaN."""
    n_in = params.layers[0].w.shape[0]
    shape = getattr(x, "shape", ())
    if len(shape) < 2 or shape[-1] != n_in:
        raise ValueError(f"the base model takes inputs of {n_in} features, shaped (batch, "
                         f"{n_in}); got an array of shape {tuple(shape)}")
    for what, tree in (("x", x), ("the base model's parameters", params), ("theta", theta)):
        if not all_finite(tree):
            raise ValueError(f"{what} holds NaN or inf; the rule would turn every parameter "
                             f"into NaN: pass finite values")
