"""Baselines scored by the same few-shot protocol as the learned rule (Sec. 5.1, 5.3, App. H.3).

Each returns an `embed_fn` (numpy in, numpy out) for `evaluate.few_shot_accuracy`, with the
trained parameters and the per-step training loss. The MLPs are `base_model`'s (batch norm with
batch statistics, bias after the norm, activation on every layer including the last), so a
baseline's embedding of a batch depends on that batch, as the learned rule's does.

Trained baselines start from `base_model.init` as the rule does (weights N(0, 0.01^2)). Batch norm
makes the forward pass blind to that scale, but Adam's effective step on a normalised layer is
lr / |w|, so the scale matters for training: on MNIST 14x14 (3 seeds, 2000 steps, batch 64) the
supervised baseline scores 78.6% from this init (the authors' own measurement: 78.8) against
74.0% from a 1/sqrt(fan_in) init.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.decomposition import PCA

from metarule import base_model
from metarule.config import BaseModelConfig
from metarule.evaluate import EmbedFn, EvalResult, model_embed_fn, stderr
from metarule.runtime import check_stop

Array = jax.Array


class Baseline(NamedTuple):
    embed_fn: EmbedFn
    params: Any          # the model: a pytree, or the fitted sklearn PCA for `pca`
    losses: np.ndarray   # training loss per step; empty when nothing is trained


class Dense(NamedTuple):
    w: Array  # (n_in, n_out)
    b: Array  # (n_out,)


class Classifier(NamedTuple):
    base: base_model.Params
    head: Dense  # embedding -> class logits


class VAEParams(NamedTuple):
    encoder: base_model.Params   # input -> 3 x 128
    posterior: Dense             # 128 -> mean and log-std of q(z|x)
    decoder: base_model.Params   # latent -> 3 x 128
    likelihood: Dense            # 128 -> Bernoulli logits of the pixels


def _init_dense(key: Array, n_in: int, n_out: int) -> Dense:
    return Dense(jax.random.normal(key, (n_in, n_out)) / np.sqrt(n_in), jnp.zeros(n_out))


def _dense(p: Dense, x: Array) -> Array:
    return x @ p.w + p.b


def _fit(loss_fn: Callable, params, data, lr: float, steps: int, key: Array,
         every: int | None = None, on_eval: Callable | None = None):
    """Adam on `loss_fn(params, data, key)`: jitted steps scanned in chunks of `every` steps.

    `data` is an argument, not a closure, so the training set is not baked into the compiled
    program as a constant. `on_eval(step, params)` runs at step 0, after every `every` steps and
    at the end.

    Returns:
      (params, per-step losses as numpy).
    """
    opt = optax.adam(lr)

    @jax.jit
    def run(params, opt_state, data, keys):
        def step(carry, k):
            p, s = carry
            loss, grads = jax.value_and_grad(loss_fn)(p, data, k)
            updates, s = opt.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), loss
        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), keys)
        return params, opt_state, losses

    opt_state = opt.init(params)
    keys = jax.random.split(key, steps)
    every = every or max(steps, 1)
    losses = []
    if on_eval is not None:
        on_eval(0, params)
    for start in range(0, steps, every):
        check_stop()
        params, opt_state, chunk = run(params, opt_state, data, keys[start:start + every])
        losses.append(np.asarray(chunk))
        if on_eval is not None:
            on_eval(min(start + every, steps), params)
    return params, np.concatenate(losses) if losses else np.zeros(0, np.float32)


def _minibatch(key: Array, n: int, batch: int) -> Array:
    """`min(batch, n)` distinct indices out of n, uniformly: the top-k of n uniform keys, which is
    O(n) where a permutation would sort all n (60k per step for a VAE on MNIST)."""
    return jax.lax.top_k(jax.random.uniform(key, (n,)), min(batch, n))[1]


def random_init(input_dim: int, seed: int, widths: tuple[int, ...] = (128,) * 4,
                activation: str = "relu") -> Baseline:
    """An untrained base model (the rule's own initialisation): hidden `widths`, 32-d embedding."""
    cfg = BaseModelConfig(input_dim=input_dim, hidden=widths, activation=activation)
    params = base_model.init(jax.random.PRNGKey(seed), cfg)
    return Baseline(model_embed_fn(params, activation), params, np.zeros(0, np.float32))


def pca(x_unlabeled: np.ndarray, n_components: int = 32, seed: int = 0) -> Baseline:
    """scikit-learn PCA fit on the unlabeled training inputs; the embedding is the projection."""
    model = PCA(n_components=n_components, random_state=seed).fit(x_unlabeled)

    def embed_fn(x: np.ndarray) -> np.ndarray:
        return model.transform(x).astype(np.float32)
    return Baseline(embed_fn, model, np.zeros(0, np.float32))


def _vae_encode(params: VAEParams, x: Array) -> tuple[Array, Array]:
    h = base_model.embed(params.encoder, x)
    mean, log_std = jnp.split(_dense(params.posterior, h), 2, axis=-1)
    return mean, log_std


_vae_mean_jit = jax.jit(lambda params, x: _vae_encode(params, x)[0])


def _vae_loss(params: VAEParams, x_all: Array, key: Array, batch: int) -> Array:
    """Negative ELBO per example: Bernoulli reconstruction + KL(q(z|x) || N(0, I))."""
    k_batch, k_eps = jax.random.split(key)
    x = x_all[_minibatch(k_batch, x_all.shape[0], batch)]
    mean, log_std = _vae_encode(params, x)
    z = mean + jnp.exp(log_std) * jax.random.normal(k_eps, mean.shape)
    logits = _dense(params.likelihood, base_model.embed(params.decoder, z))
    recon = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x), axis=-1)
    kl = 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(2 * log_std) - 1 - 2 * log_std, axis=-1)
    return jnp.mean(recon + kl)


def vae(x_unlabeled: np.ndarray, steps: int, seed: int,
        hidden: tuple[int, ...] = (128, 128, 128), latent: int = 32, lr: float = 1e-4,
        batch: int = 128, eval_every: int | None = None,
        callback: Callable[[int, EmbedFn], Any] | None = None) -> Baseline:
    """Variational auto-encoder of App. H.3.1; the embedding is the posterior mean.

    Encoder: `hidden` layers (relu, batch norm between layers), then a linear projection to the
    mean and log-std of a `latent`-d Gaussian posterior; the decoder mirrors it (latent -> hidden
    -> pixels). Adam with `lr` on minibatches of `batch` unlabeled examples.

    Likelihood: Bernoulli on the pixels in [0, 1] (cross-entropy with soft targets), not the
    paper's quantised normal. Like the quantised normal, its log-likelihood is bounded above; an
    unquantised normal with a learned scale is not, and its log-std collapses on MNIST's many
    exactly-0 pixels. The Bernoulli needs no bin width, and is the usual choice for MNIST VAEs.

    Args:
      x_unlabeled: (N, D) training inputs in [0, 1]; labels are never used.
      steps: Adam steps.
      seed: seeds initialisation, minibatches and posterior samples.
      eval_every: if set, `callback(step, embed_fn)` runs at step 0, every `eval_every` steps and
        at the end, e.g. to record few-shot accuracy along training (Fig. 2 left).
    """
    k_enc, k_post, k_dec, k_out, k_train = jax.random.split(jax.random.PRNGKey(seed), 5)
    d = x_unlabeled.shape[1]
    enc_cfg = BaseModelConfig(input_dim=d, hidden=hidden[:-1], embedding=hidden[-1])
    dec_cfg = BaseModelConfig(input_dim=latent, hidden=hidden[:-1], embedding=hidden[-1])
    params = VAEParams(encoder=base_model.init(k_enc, enc_cfg),
                       posterior=_init_dense(k_post, hidden[-1], 2 * latent),
                       decoder=base_model.init(k_dec, dec_cfg),
                       likelihood=_init_dense(k_out, hidden[-1], d))

    def embed_fn_of(p: VAEParams) -> EmbedFn:
        return lambda x: np.asarray(_vae_mean_jit(p, jnp.asarray(x, jnp.float32)))

    on_eval = None
    if callback is not None:
        def on_eval(step, p):
            callback(step, embed_fn_of(p))
    loss_fn = functools.partial(_vae_loss, batch=batch)
    params, losses = _fit(loss_fn, params, jnp.asarray(x_unlabeled, jnp.float32), lr, steps,
                          k_train, eval_every if callback is not None else None, on_eval)
    return Baseline(embed_fn_of(params), params, losses)


def _supervised_loss(params: Classifier, data, key: Array, batch: int, activation: str) -> Array:
    x_all, y_all = data
    idx = _minibatch(key, x_all.shape[0], batch)
    logits = _dense(params.head, base_model.embed(params.base, x_all[idx], activation))
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y_all[idx]))


def supervised(x_labeled: np.ndarray, y_labeled: np.ndarray, steps: int = 2000, seed: int = 0,
               lr: float = 3e-3, batch: int = 64, widths: tuple[int, ...] = (128,) * 4,
               activation: str = "relu") -> Baseline:
    """Supervised training on the labeled examples only (App. H.3.2); embedding = the base output.

    The base model plus a linear layer to class logits, softmax cross-entropy, Adam. The paper
    trains up to 10k steps and notes that batch-norm noise regularises so test accuracy plateaus;
    minibatches of `batch` drawn without replacement from the ~100 examples supply that noise.
    The default 2000 steps keeps CPU runs short and loses nothing: on MNIST 14x14 (10 seeds,
    logistic readout) 2000 and 10k steps both score 77.8 +- 0.8% (the authors': 78.8 +- 0.4).
    """
    classes, y_idx = np.unique(y_labeled, return_inverse=True)
    k_base, k_head, k_train = jax.random.split(jax.random.PRNGKey(seed), 3)
    cfg = BaseModelConfig(input_dim=x_labeled.shape[1], hidden=widths, activation=activation)
    params = Classifier(base_model.init(k_base, cfg),
                        _init_dense(k_head, cfg.embedding, len(classes)))
    loss_fn = functools.partial(_supervised_loss, batch=batch, activation=activation)
    data = (jnp.asarray(x_labeled, jnp.float32), jnp.asarray(y_idx, jnp.int32))
    params, losses = _fit(loss_fn, params, data, lr, steps, k_train)
    return Baseline(model_embed_fn(params.base, activation), params, losses)


def class_table(y: np.ndarray) -> np.ndarray:
    """(classes, n_min) example indices per class, truncated to the smallest class's count, so
    episodes can be sampled inside jit with static shapes."""
    members = [np.flatnonzero(y == c) for c in np.unique(y)]
    n_min = min(len(m) for m in members)
    return np.stack([m[:n_min] for m in members])


def _prototype_logits(u_support, u_query, ways: int):
    """-squared Euclidean distance of each query to each class mean; support sorted by class.

    Array methods only, so it runs on jax arrays in training and numpy arrays in evaluation.
    """
    protos = u_support.reshape(ways, -1, u_support.shape[-1]).mean(axis=1)
    return -((u_query[:, None, :] - protos[None]) ** 2).sum(axis=-1)


def _episode_loss(params: base_model.Params, data, key: Array, ways: int, shots: int,
                  queries: int, shuffle: bool) -> Array:
    """Prototypical-network loss on one N-way K-shot episode sampled from `data`."""
    x_all, table = data
    k_cls, k_ex, k_perm = jax.random.split(key, 3)
    classes = jax.random.choice(k_cls, table.shape[0], (ways,), replace=False)
    picks = jax.vmap(lambda k: _minibatch(k, table.shape[1], shots + queries))(
        jax.random.split(k_ex, ways))
    x = x_all[table[classes[:, None], picks]]  # (ways, shots + queries, D)
    if shuffle:  # a fresh pixel permutation per episode, the same for support and query
        x = x[..., jax.random.permutation(k_perm, x.shape[-1])]
    d = x.shape[-1]
    support, query = x[:, :shots].reshape(-1, d), x[:, shots:].reshape(-1, d)
    u = base_model.embed(params, jnp.concatenate([support, query]))  # one batch-norm batch
    logits = _prototype_logits(u[:ways * shots], u[ways * shots:], ways)
    labels = jnp.repeat(jnp.arange(ways), queries)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def prototype_accuracy(embed_fn: EmbedFn, x: np.ndarray, y: np.ndarray, ways: int = 10,
                       shots: int = 10, queries: int = 15, episodes: int = 100, seed: int = 0,
                       permutation: np.ndarray | None = None, shuffle: bool = False) -> EvalResult:
    """Nearest-prototype accuracy over random N-way K-shot episodes of (x, y).

    Args:
      permutation: a fixed pixel permutation applied to every episode.
      shuffle: a fresh pixel permutation per episode (after `permutation`, if both are given).
    Returns:
      EvalResult with readout "prototype"; its `seeds` counts episodes.
    """
    rng = np.random.default_rng(seed)
    table = class_table(np.asarray(y))
    if ways > table.shape[0]:
        raise ValueError(f"{ways}-way episodes need {ways} classes, the data has {table.shape[0]}")
    if permutation is not None:
        x = x[:, permutation]
    accuracies = []
    for _ in range(episodes):
        classes = rng.choice(table.shape[0], ways, replace=False)
        picks = np.stack([rng.choice(table[c], shots + queries, replace=False) for c in classes])
        xe = x[picks]  # (ways, shots + queries, D)
        if shuffle:
            xe = xe[..., rng.permutation(xe.shape[-1])]
        d = xe.shape[-1]
        u = np.asarray(embed_fn(np.concatenate([xe[:, :shots].reshape(-1, d),
                                                xe[:, shots:].reshape(-1, d)])))
        pred = np.argmax(_prototype_logits(u[:ways * shots], u[ways * shots:], ways), axis=-1)
        accuracies.append(float(np.mean(pred == np.repeat(np.arange(ways), queries))))
    return EvalResult(shots=shots, seeds=episodes, readout="prototype",
                      mean=float(np.mean(accuracies)), stderr=stderr(accuracies),
                      accuracies=accuracies)


class ProtoNet(NamedTuple):
    embed_fn: EmbedFn
    params: base_model.Params
    losses: np.ndarray
    evaluate: Callable[..., EvalResult]  # prototype_accuracy with embed_fn bound


def protonet(x_train: np.ndarray, y_train: np.ndarray, steps: int = 2000, seed: int = 0,
             ways: int = 10, shots: int = 5, queries: int = 5, lr: float = 1e-3,
             hidden: tuple[int, ...] = (128, 128, 128), shuffle: bool = False) -> ProtoNet:
    """Prototypical networks (App. H.3.4) with the fully connected base: `hidden` layers, relu,
    batch norm, meta-trained on episodes of (x_train, y_train).

    With `shuffle`, every episode's pixels are permuted afresh, so no input structure transfers
    (Fig. 2 right). The defaults are sized for 2 CPU cores (2000 10-way 5-shot episodes of 14x14
    images train in seconds); Snell et al. train with Adam 1e-3, 15 queries per class and more
    ways than tested (e.g. 20-way 5-shot) for tens of thousands of episodes: pass those to
    approach the paper's setting. `class_table` caps each class at the smallest class's count.

    Returns:
      ProtoNet; `evaluate(x, y, ways=..., shots=..., ...)` is `prototype_accuracy` on its
      embedding.
    """
    k_init, k_train = jax.random.split(jax.random.PRNGKey(seed))
    cfg = BaseModelConfig(input_dim=x_train.shape[1], hidden=hidden[:-1], embedding=hidden[-1])
    params = base_model.init(k_init, cfg)
    loss_fn = functools.partial(_episode_loss, ways=ways, shots=shots, queries=queries,
                                shuffle=shuffle)
    data = (jnp.asarray(x_train, jnp.float32), jnp.asarray(class_table(np.asarray(y_train))))
    params, losses = _fit(loss_fn, params, data, lr, steps, k_train)
    embed_fn = model_embed_fn(params)
    return ProtoNet(embed_fn, params, losses, functools.partial(prototype_accuracy, embed_fn))
