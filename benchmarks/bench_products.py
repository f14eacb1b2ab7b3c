"""What computeH's convolutions cost, piece by piece, and whether bfloat16 products help.

    python benchmarks/bench_products.py            # docs/performance.md

Part 1 times one (rows, 64) x (64, 64) product -- the shape of computeH's Winograd products at
the paper preset (4096 rows at 196 -> 4x128 -> 32, batch 128) -- in float32, under
jax.default_matmul_precision("bfloat16"), and with bfloat16 inputs. Part 2 times the pieces of
one paper-preset convolution (128, 128, 64) -> 64 along each axis. Medians of repeated calls
after a compile call; run on an idle machine.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from metarule import kernels, rule


def median_s(f, *args, calls: int) -> float:
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def products(calls: int, rounds: int) -> None:
    key_a, key_w = jax.random.split(jax.random.PRNGKey(0))
    w = jax.random.normal(key_w, (64, 64))
    f32 = jax.jit(lambda a, w: a @ w)
    bf16_in = jax.jit(lambda a, w: jnp.dot(a.astype(jnp.bfloat16), w.astype(jnp.bfloat16),
                                           preferred_element_type=jnp.float32))
    bf16_all = jax.jit(lambda a, w: a.astype(jnp.bfloat16) @ w.astype(jnp.bfloat16))
    with jax.default_matmul_precision("bfloat16"):
        low_precision = jax.jit(lambda a, w: a @ w)
    print("product (rows, 64) x (64, 64), GFLOP/s per round:")
    for rows in (4096, 16384, 65536):
        a = jax.random.normal(key_a, (rows, 64))
        flop = 2 * rows * 64 * 64
        with jax.default_matmul_precision("bfloat16"):
            diff = float(jnp.max(jnp.abs(low_precision(a, w) - f32(a, w))))
        for name, f in (("float32", f32), ("precision=bfloat16", low_precision),
                        ("bf16 in, f32 out", bf16_in), ("bf16 in and out", bf16_all)):
            if name == "precision=bfloat16":
                with jax.default_matmul_precision("bfloat16"):
                    rates = [flop / median_s(f, a, w, calls=calls) / 1e9 for _ in range(rounds)]
            else:
                rates = [flop / median_s(f, a, w, calls=calls) / 1e9 for _ in range(rounds)]
            extra = f"  (max |diff| from float32: {diff:.1e})" if name.startswith("prec") else ""
            print(f"  {rows:6d} rows  {name:20s} " + " ".join(f"{r:5.0f}" for r in rates) + extra)


def convolution_pieces(calls: int) -> None:
    b, n, h = 128, 128, 64
    key_m, key_w = jax.random.split(jax.random.PRNGKey(1))
    m = jax.random.normal(key_m, (b, n, h))
    w = 0.1 * jax.random.normal(key_w, (3 * h, h))
    u = jax.random.normal(key_m, (6, b * n // 4, h))
    u_w = jax.random.normal(key_w, (6, h, h))
    batched = jax.jit(lambda u, u_w: jnp.einsum("prc,pcd->prd", u, u_w))
    print(f"Winograd products alone (6, {b * n // 4}, {h}) x (6, {h}, {h}): "
          f"{2 * u.size * h / median_s(batched, u, u_w, calls=calls) / 1e9:.0f} GFLOP/s")
    print(f"elementwise pass over ({b}, {n}, {h}): "
          f"{1e3 * median_s(jax.jit(lambda m: 2.0 * m), m, calls=calls):.2f} ms")
    for axis, name in ((0, "batch"), (1, "unit")):
        loss = lambda m, w: jnp.sum(jnp.square(rule.conv_bn_relu(m, w, axis, 1e-5)))  # noqa: E731
        pieces = {
            "Winograd conv": (jax.jit(lambda m, w: kernels.conv1d(m, w, axis)), (m, w)),
            "stacked-product conv": (jax.jit(
                lambda m, w: kernels.circular_neighbours(m, 3, axis) @ w), (m, w)),
            "input transform": (jax.jit(lambda m: kernels.winograd_input(m, axis, 4)), (m,)),
            "bn_relu": (jax.jit(lambda m: kernels.bn_relu(m, 1e-5)), (m,)),
            "conv + bn_relu": (jax.jit(lambda m, w: rule.conv_bn_relu(m, w, axis, 1e-5)),
                               (m, w)),
            "forward + gradient": (jax.jit(jax.grad(loss, argnums=(0, 1))), (m, w)),
        }
        times = {k: 1e3 * median_s(f, *a, calls=calls) for k, (f, a) in pieces.items()}
        print(f"{name} axis: " + ", ".join(f"{k} {v:.2f} ms" for k, v in times.items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    products(args.calls, args.rounds)
    convolution_pieces(args.calls)


if __name__ == "__main__":
    main()
