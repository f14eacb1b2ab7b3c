"""Time of the first `Embedder().fit` in a new process, cold and warm compilation cache.

    python benchmarks/bench_first_fit.py [--rows 2000] [--steps 500]

Fits the default Embedder on the first `--rows` rows of mnist14's train split (196 features)
in fresh processes that share a new, empty $METARULE_CACHE: the first process compiles
everything (cold), the second reads the compiled programs from the cache (warm). Prints the
wall time of the import, of `fit` and of one `transform` of the fit rows, per process, and the
CPU time `fit` took (all threads): on a busy machine wall time mostly measures the others' load,
CPU time much less so.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = """
import json, resource, sys, time
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t0 = time.perf_counter()
import numpy as np
from metarule import data
from metarule.sklearn_api import Embedder
x = np.asarray(data.load("mnist14").x_train[:{rows}])
t1, c1 = time.perf_counter(), cpu()
emb = Embedder(steps={steps}).fit(x)
t2, c2 = time.perf_counter(), cpu()
emb.transform(x)
t3 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "fit_s": t2 - t1, "fit_cpu_s": c2 - c1, "transform_s": t3 - t2}}))
"""


def run_child(rows: int, steps: int, cache: str) -> dict:
    env = {**os.environ, "METARULE_CACHE": cache}
    out = subprocess.run([sys.executable, "-c", CHILD.format(rows=rows, steps=steps)],
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--steps", type=int, default=500)
    args = p.parse_args()
    from metarule.data.cache import cache_root
    with tempfile.TemporaryDirectory() as tmp:
        # Datasets are read from the usual cache; only the compiled programs start empty.
        for entry in cache_root().iterdir():
            if entry.is_dir() and entry.name != "jax":
                os.symlink(entry, os.path.join(tmp, entry.name))
        for phase in ("cold", "warm"):
            t = run_child(args.rows, args.steps, tmp)
            print(f"{phase}: import+load {t['import_s']:.1f} s, fit {t['fit_s']:.1f} s, "
                  f"transform {t['transform_s']:.2f} s (fit CPU time {t['fit_cpu_s']:.1f} s, "
                  f"load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
