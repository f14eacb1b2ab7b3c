"""Where the outer step's time goes: a per-operation profile of truncated.meta_grad.

Run alone on an idle machine, e.g.
    python benchmarks/profile_outer.py --preset paper --width 128 --calls 2

Traces `--calls` outer steps (U = 8, remat) with jax.profiler, reads the per-operation events of
XLA's CPU runtime from the trace, and names each operation by the JAX source of the compiled HLO
(dumped by XLA next to the trace). Prints milliseconds per outer step summed over the runtime's
threads (so the total exceeds the wall time when two operations run at once), grouped by the
part of the rule they belong to, then the slowest single operations.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

OUT = tempfile.mkdtemp(prefix="profile_outer_")
# The HLO dump must be requested before jax is imported.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + f" --xla_dump_to={OUT}/hlo --xla_dump_hlo_as_text").strip()

import jax  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import bench_rule  # noqa: E402

from metarule import truncated  # noqa: E402
from metarule.config import preset  # noqa: E402

# The einsums of metarule/rule.py, by the term of the paper they compute.
SOURCES = {
    "p...c,p...d->pcd": "conv weight-gradient products",
    "pk,pcd->kcd": "conv weight-gradient products",
    "p...c,pcd->p...d": "conv products (recompute + input gradient)",
    "bnh,khc->bnkc": "readouts and lowRR",
    "bic,bjc->ij": "readouts and lowRR",
    "bjd,mj->bmd": "propagate_down",
}
SHAPING = ("stack", "unstack", "concatenate", "_roll_static")


def hlo_sources(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> the op_name JAX recorded for it."""
    return {m.group(1): m.group(2) for m in re.finditer(
        r"%(\S+) = [^\n]*?metadata=\{op_name=\"([^\"]+)\"", hlo_text)}


def group(name: str, op_name: str) -> str:
    is_product = name.startswith(("ynn_fusion", "dot", "xnn_fusion"))
    if "transpose(" not in op_name:
        return "forward scan: " + ("products" if is_product else "other")
    last = re.sub(r".*(checkpoint|rematted_computation|while/body)/", "", op_name).split("/")[0]
    if last in SOURCES:
        return "backward: " + SOURCES[last]
    if last in SHAPING:
        return "backward: stacking / transposes"
    return "backward: other " + ("products and reductions" if is_product else "elementwise")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()

    cfg = preset(args.preset)
    theta, params, _, batches, labeled = bench_rule.inputs(cfg, args.width)
    step_args = (theta, params, batches, labeled, cfg)
    jax.block_until_ready(truncated.meta_grad(*step_args))  # compile outside the trace
    jax.profiler.start_trace(f"{OUT}/trace")
    for _ in range(args.calls):
        jax.block_until_ready(truncated.meta_grad(*step_args))
    jax.profiler.stop_trace()

    trace = glob.glob(f"{OUT}/trace/plugins/profile/*/*.trace.json.gz")
    hlo = glob.glob(f"{OUT}/hlo/*jit_meta_grad*after_optimizations.txt")
    if not trace or not hlo:
        sys.exit(f"error: no trace or HLO dump under {OUT}; is XLA_FLAGS overridden?")
    sources = hlo_sources(open(hlo[0]).read())
    per_op = collections.defaultdict(float)
    with gzip.open(trace[0]) as f:
        for event in json.load(f)["traceEvents"]:
            if event.get("ph") == "X" and event["name"] in sources:
                per_op[event["name"]] += event["dur"] / 1e3 / args.calls  # ms per outer step
    groups = collections.defaultdict(float)
    for name, ms in per_op.items():
        groups[group(name, sources[name])] += ms
    total = sum(groups.values())
    print(f"{args.preset} preset, 196→4×{args.width}→32, outer step U = {bench_rule.UNROLL}: "
          f"{total:.0f} ms of operations per step (summed over threads)")
    print("| part | ms | share |\n|---|---|---|")
    for name, ms in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {ms:.0f} | {100 * ms / total:.0f} % |")
    print(f"\nslowest operations (ms per outer step, summed over its {bench_rule.UNROLL} steps):")
    for name, ms in sorted(per_op.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"  {ms:7.1f}  {name:28s} {sources[name][-90:]}")
    print(f"(trace and HLO in {OUT})")


if __name__ == "__main__":
    main()
