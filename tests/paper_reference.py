"""Appendix G of the paper written out directly as array formulas, for the tests to compare
metarule.rule against; nothing here calls metarule.

Every function takes `xp` (numpy or jax.numpy): the same formula gives float64 NumPy values for
the equation tests and a differentiable JAX reference for the gradient tests. The arithmetic is
the paper's; the layouts where the paper fixes none (the order of computeH's input channels, which
neighbour each convolution tap reads, which readout matrices a plane uses) and the choices where it
is ambiguous are those docs/rule.md states.
"""
import math

import numpy as np

BASE_BN_EPS = 1e-8  # the base model's batch-norm epsilon (docs/rule.md, App.13-15)
# theta["readout_a"][i], theta["readout_b"][i] belong to READOUT_ORDER[i]; each reads
# (h_a, h_b) from these layers (App.46-57, with App.56's h^{l-1} read as h^l).
READOUT_ORDER = ("zero", "rbf", "first", "lin_lower_symm", "sqr_lower_symm", "lin_upper_symm",
                 "sqr_upper_symm")
READOUT_SIDES = {"zero": ("lower", "upper"), "rbf": ("lower", "upper"),
                 "first": ("lower", "upper"), "lin_lower_symm": ("lower", "lower"),
                 "sqr_lower_symm": ("lower", "lower"), "lin_upper_symm": ("upper", "upper"),
                 "sqr_upper_symm": ("upper", "upper")}
TOP_D_LAYERS = (("batch1", 0), ("unit1", 1), ("unit2", 1), ("batch2", 0), ("batch3", 0))
COMPUTE_H_LAYERS = (("batch1", 0), ("unit1", 1), ("batch2", 0), ("unit2", 1))


def rms_normalise(w, xp=np):
    """W / sqrt(E_i[W_i^2]) (App.43)."""
    return w / xp.sqrt(xp.mean(w ** 2))


def soft_normalise(a, eps, xp=np):
    """a / sqrt(eps + E[a^2]) (App.59, App.62; eps = 1 in the paper)."""
    return a / xp.sqrt(eps + xp.mean(a ** 2))


def relu(m, xp=np):
    return xp.maximum(m, 0.0)


def sigmoid(z, xp=np):
    return 1.0 / (1.0 + xp.exp(-z))


def batch_norm(m, eps, xp=np, axes=(0, 1)):
    """BatchNorm(m, axes): each channel standardised over `axes`, no learned scale or shift."""
    mean = xp.mean(m, axis=axes, keepdims=True)
    var = xp.mean((m - mean) ** 2, axis=axes, keepdims=True)
    return (m - mean) / xp.sqrt(var + eps)


def conv(m, w, axis, xp=np):
    """Circular 1-D convolution of m (B, N, C_in) along `axis`: output p sums tap i, the rows
    i*C_in..(i+1)*C_in of w, applied to position p + i - K // 2."""
    c_in = m.shape[-1]
    k = w.shape[0] // c_in
    taps = w.reshape(k, c_in, -1)
    return sum(xp.roll(m, k // 2 - i, axis=axis) @ taps[i] for i in range(k))


def top_d(x_top, p, eps, xp=np):
    """topD (App.65-79): conv over the batch (k5), two over the units, three over the batch."""
    m = x_top[..., None]
    for name, axis in TOP_D_LAYERS:
        m = relu(batch_norm(conv(m, p[name], axis, xp), eps, xp), xp)
    return conv(m, p["out"], 0, xp) + p["out_b"]


def weight_stats(w, axis, xp=np):
    """Stats_axis (App.85-90) of W / RMS(W): L1, L2, mean and standard deviation over `axis`."""
    w = rms_normalise(w, xp)
    mu = xp.mean(w, axis=axis)
    sigma = xp.sqrt(xp.mean((xp.expand_dims(mu, axis) - w) ** 2, axis=axis))
    return xp.stack([xp.mean(xp.abs(w), axis=axis), xp.sqrt(xp.mean(w ** 2, axis=axis)), mu,
                     sigma], -1)


def compute_h(d, x, z, w_in, w_out, b, p, eps, xp=np):
    """computeH (App.80-104): (B, N, H). Input channels [Stats_0, Stats_1, b, x, z, sin, cos, d]."""
    bsz, n = x.shape
    angle = 2.0 * math.pi * xp.arange(n) / n                                    # App.81-82
    pos = xp.broadcast_to(xp.stack([xp.sin(angle), xp.cos(angle)], -1), (bsz, n, 2))
    m2 = batch_norm(xp.concatenate([x[..., None], z[..., None], pos.astype(x.dtype), d], -1),
                    eps, xp)                                                    # App.83-84, 93
    s = xp.concatenate([weight_stats(w_in, 0, xp), weight_stats(w_out, 1, xp), b[:, None]], -1)
    m = xp.concatenate([xp.broadcast_to(s, (bsz, n, s.shape[-1])), m2], -1)    # App.91-95
    for name, axis in COMPUTE_H_LAYERS:                                         # App.96-104
        m = relu(batch_norm(conv(m, p[name], axis, xp), eps, xp), xp)
    return m


def error_signal(d, z, h, w, b, xp=np):
    """delta = d * sigma(z) + h theta_W + theta_b (App.33)."""
    return d * sigmoid(z, xp)[..., None] + h @ w + b


def propagate_down(delta, v, xp=np):
    """d~ = delta V^T (App.34), scaled by sqrt(B N D) / ||d~||_2 (App.35)."""
    d = xp.einsum("bjd,mj->bmd", delta, v)
    return d * math.sqrt(d.size) / xp.sqrt(xp.sum(d ** 2))


def forward(layers, x, act, xp=np):
    """x^0..x^L and z^1..z^L of the base model (App.13-16), layers as (W, b, V) triples."""
    xs, zs = [x], []
    for w, b, _ in layers:
        z = batch_norm(xs[-1] @ w, BASE_BN_EPS, xp, axes=(0,)) + b
        zs.append(z)
        xs.append(act(z))
    return xs, zs


def compute_all_h(xs, zs, layers, theta, eps, xp=np):
    """h^0..h^L by the top-down recursion of App.31-36. At the edges: z^0 = x^0, b^0 = 0 and W^1
    transposed stands in for the input units' missing incoming weights; W^L transposed for the
    top units' missing outgoing ones (docs/rule.md)."""
    n_layers = len(layers)
    d = top_d(xs[-1], theta["top_d"], eps, xp)
    hs = {}
    for l in range(n_layers, -1, -1):
        w_in = layers[l - 1][0] if l > 0 else layers[0][0].T
        w_out = layers[l][0] if l < n_layers else layers[-1][0].T
        z = zs[l - 1] if l > 0 else xs[0]
        b = layers[l - 1][1] if l > 0 else xp.zeros(xs[0].shape[1], xs[0].dtype)
        hs[l] = compute_h(d, xs[l], z, w_in, w_out, b, theta["compute_h"], eps, xp)
        if l > 0:
            delta = error_signal(d, z, hs[l], theta["error_w"], theta["error_b"], xp)
            d = propagate_down(delta, layers[l - 1][2], xp)
    return [hs[l] for l in range(n_layers + 1)]


def low_rank_readout(h_a, h_b, v_a, v_b, xp=np):
    """lowRR (App.37-42): r^a = h_a V_a, r^b = h_b V_b, averaged over batch and channels."""
    r_a, r_b = h_a @ v_a, h_b @ v_b
    bsz, _, c = r_a.shape
    return xp.einsum("bic,bjc->ij", r_a, r_b) / (bsz * c)


def readouts(h_lower, h_upper, theta, xp=np):
    h = {"lower": h_lower, "upper": h_upper}
    return {name: low_rank_readout(h[READOUT_SIDES[name][0]], h[READOUT_SIDES[name][1]],
                                   theta["readout_a"][i], theta["readout_b"][i], xp)
            for i, name in enumerate(READOUT_ORDER)}


def centred_cov(a, b):
    """E_b[(a_b - E a)^T (b_b - E b)] (App.49)."""
    a, b = a - a.mean(0), b - b.mean(0)
    return a.T @ b / a.shape[0]


def weight_planes(w, x_lower, x_upper, h_lower, h_upper, theta, xp=np):
    """Delta W_i of App.44-57 and the fixed Oja, Sanger and lateral planes, by name."""
    n_lower, n_upper = w.shape
    w_hat = rms_normalise(w, xp)
    sqr_w = xp.sign(w_hat) * (xp.sqrt(1.0 + w_hat ** 2) - 1.0)
    rr = readouts(h_lower, h_upper, theta, xp)

    def symm(name, n):  # App.50-57: [(S + S^T) * (1 - I)] / sqrt(2), S = lowRR / sqrt(N)
        s = rr[name] / math.sqrt(n)
        return (s + s.T) * (1.0 - xp.eye(n)) / math.sqrt(2.0)

    c_yy = centred_cov(x_upper, x_upper)
    return {
        "w_hat": w_hat,
        "w_hat_sq_sign": w_hat ** 2 * xp.sign(w_hat),
        "zero": rr["zero"],
        "rbf": xp.exp(-w_hat ** 2) * rr["rbf"],
        "first": w_hat * rr["first"],
        "hebbian": centred_cov(x_lower, x_upper),
        "lin_lower_symm": symm("lin_lower_symm", n_lower) @ w_hat,
        "sqr_lower_symm": symm("sqr_lower_symm", n_lower) @ sqr_w,
        "lin_upper_symm": w_hat @ symm("lin_upper_symm", n_upper),
        "sqr_upper_symm": sqr_w @ symm("sqr_upper_symm", n_upper),
        "oja": w_hat @ c_yy,
        "sanger": w_hat @ xp.triu(c_yy),
        "lateral": w_hat @ (c_yy * (1.0 - xp.eye(n_upper))),
    }


def final_weight_delta(planes, w, merge, eps, xp=np):
    """App.59-62 for planes (P, N^{l-1}, N^l) and merge weights (P,)."""
    normalised = [soft_normalise(p, eps, xp) for p in planes]                      # App.59
    merged = sum(m * p for m, p in zip(merge, normalised)) / len(normalised)         # App.60
    w_unit = w / xp.sqrt(xp.sum(w ** 2))
    orth = merged - w_unit * relu(xp.sum(merged * w_unit), xp)                       # App.61
    return soft_normalise(orth, eps, xp)                                             # App.62


def bias_delta(h, readout, eps, xp=np):
    """App.63-64: the batch mean of h theta_B, its unit mean clamped to >= 0, soft-normalised."""
    base = xp.mean(h @ readout, axis=0)
    return soft_normalise(base - xp.minimum(xp.mean(base), 0.0), eps, xp)


def unsupervised_update(theta, layers, x, cfg, act, planes_order, xp=np):
    """One step of App.1-6: every (W, b, V) becomes p (1 - lr) - lr Delta, V with W's Delta."""
    xs, zs = forward(layers, x, act, xp)
    hs = compute_all_h(xs, zs, layers, theta, cfg.bn_eps, xp)
    lr = cfg.inner_lr
    new = []
    for l, (w, b, v) in enumerate(layers, start=1):
        planes = weight_planes(w, xs[l - 1], xs[l], hs[l - 1], hs[l], theta, xp)
        dw = final_weight_delta([planes[n] for n in planes_order], w, theta["merge"],
                                cfg.norm_eps, xp)
        db = bias_delta(hs[l], theta["bias_readout"], cfg.norm_eps, xp)
        new.append((w * (1 - lr) - lr * dw, b * (1 - lr) - lr * db, v * (1 - lr) - lr * dw))
    return new
