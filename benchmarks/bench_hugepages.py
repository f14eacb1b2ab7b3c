"""The outer step with and without transparent huge pages for XLA's temporary buffers.

XLA's CPU runtime maps each call's temporary buffer afresh (476 MB for the paper preset's outer
step) and the kernel faults it in 4 KB page by page on every call. glibc >= 2.35 asks for
transparent huge pages on the mappings its malloc makes when started with
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (and the kernel's THP mode is [always] or [madvise]).
Tunables are read at process start, so each variant runs in its own child process, alternating,
`--rounds` pairs. Run alone on an idle machine, e.g.
    python benchmarks/bench_hugepages.py --preset paper --rounds 5 --repeats 7
Prints, per variant, the median over rounds of each child's median outer-step time, and the
page faults and system time per call.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

VARIANTS = ("4 KB pages", "huge pages")
TUNABLE = "glibc.malloc.hugetlb=1"


def child(preset_name: str, width: int, repeats: int) -> None:
    import jax
    from bench_rule import inputs, outer_step, timed
    from metarule.config import preset

    cfg = preset(preset_name)
    theta, params, _, batches, labeled = inputs(cfg, width)
    step_args = (theta, params, batches, labeled)
    step = outer_step(cfg).lower(*step_args).compile()
    jax.block_until_ready(step(*step_args))  # the first call: left out of the counts below
    before = resource.getrusage(resource.RUSAGE_SELF)
    median = timed(step, step_args, repeats)  # its own warm-up call is counted: repeats + 1
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"s": median,
                      "faults": (after.ru_minflt - before.ru_minflt) / (repeats + 1),
                      "sys_s": (after.ru_stime - before.ru_stime) / (repeats + 1)}))


def variant_env(huge: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    return {**env, "GLIBC_TUNABLES": TUNABLE} if huge else env


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.preset, args.width, args.repeats)
    cmd = [sys.executable, __file__, "--child", "--preset", args.preset,
           "--width", str(args.width), "--repeats", str(args.repeats)]
    runs = {v: [] for v in VARIANTS}
    for i in range(args.rounds):
        for name in VARIANTS:
            out = subprocess.run(cmd, env=variant_env(name == VARIANTS[1]), check=True,
                                 capture_output=True, text=True).stdout
            runs[name].append(json.loads(out.splitlines()[-1]))
            print(f"round {i + 1} {name}: {runs[name][-1]}", file=sys.stderr)
    base = statistics.median(r["s"] for r in runs[VARIANTS[0]])
    print(f"| preset | width | pages | outer step s (median of {args.rounds} processes) | "
          "page faults / call | system s / call | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for name in VARIANTS:
        med = {k: statistics.median(r[k] for r in runs[name]) for k in ("s", "faults", "sys_s")}
        print(f"| {args.preset} | {args.width} | {name} | {med['s']:.3f} | {med['faults']:.0f} | "
              f"{med['sys_s']:.3f} | {base / med['s']:.3f}× |")


if __name__ == "__main__":
    main()
