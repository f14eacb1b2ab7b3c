"""Fig. 2 right: prototypical networks transfer features, so shuffled pixels break them; the
rule learns anew on whatever pixel order it is given."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metarule import baselines, evaluate, train
from metarule.experiments import common

FIGURE = "Fig. 2 right"
TITLE = "Prototypical networks vs shuffled pixels"
CLAIM = ("A fully connected prototypical network does well on intact inputs but much worse when "
         "pixels are shuffled per task; the learned rule's performance does not depend on pixel "
         "order.")
PAPER = ("10-way mini-ImageNet (we use stamps16 → held-out stamps16_heldout classes), "
         "fully connected 3 × 128 protonet, many thousands of episodes")
USES_RULE = True


@dataclass(frozen=True)
class Size:
    train_data: str            # protonets meta-train on its train split
    test_data: str             # episodes from its test split; the rule trains on its train split
    proto_steps: int
    episodes: int
    eval_steps: tuple[int, ...]
    ways: int = 10
    shots: int = 10
    n_train: int | None = None
    n_test: int | None = None
    widths: tuple[int, ...] = (128, 128, 128, 128)


SIZES = {
    "tiny": Size("mnist14", "mnist14", 4, 3, (0, 2, 4), ways=5, shots=5, n_train=500,
                 n_test=300, widths=(16, 16)),
    "default": Size("stamps16", "stamps16_heldout", 2000, 100, (0, 100, 300)),
    "full": Size("stamps16", "stamps16_heldout", 20_000, 600, (0, 300, 1000, 3000)),
}


def row(method: str, r: evaluate.EvalResult, **extra) -> dict:
    return {"method": method, "mean": r.mean, "stderr": common.jsonable_stderr(r.stderr),
            "episodes": r.seeds, "accuracies": r.accuracies, **extra}


def run(size: Size, ctx: common.Context) -> dict:
    tr = common.load(size.train_data, size.n_train, None)
    te = common.load(size.test_data, size.n_train, size.n_test)
    episodes = dict(ways=size.ways, shots=size.shots, episodes=size.episodes, seed=0)
    intact = baselines.protonet(tr.x_train, tr.y_train, size.proto_steps, seed=0)
    shuffled = baselines.protonet(tr.x_train, tr.y_train, size.proto_steps, seed=0, shuffle=True)
    rows = [row("protonet, intact", intact.evaluate(te.x_test, te.y_test, **episodes)),
            row("protonet trained intact, tested shuffled",
                intact.evaluate(te.x_test, te.y_test, shuffle=True, **episodes)),
            row("protonet, shuffled", shuffled.evaluate(te.x_test, te.y_test, shuffle=True,
                                                        **episodes))]

    def callback(step, params):  # the base model permutes its inputs: pixels are shuffled
        if step in size.eval_steps:
            r = baselines.prototype_accuracy(evaluate.model_embed_fn(params), te.x_test,
                                             te.y_test, **episodes)
            rows.append(row(f"rule, shuffled, {step} steps", r, steps=step))

    train.train_base_model(ctx.rule, te.x_train, max(size.eval_steps), size.widths,
                           permute=True, chunk=common.eval_chunk(size.eval_steps),
                           progress=ctx.progress, callback=callback)
    return {"train_data": size.train_data, "test_data": size.test_data, "rows": rows}


def plot(result: dict, path) -> None:
    rows = result["rows"]
    fig, ax = common.figure(figsize=(7, 4))
    colors = ["#c9b3e6", "#888888", "#5b2c8f"] + ["C0"] * (len(rows) - 3)
    ax.bar(np.arange(len(rows)), [100 * r["mean"] for r in rows],
           yerr=[100 * (r["stderr"] or 0) for r in rows], capsize=3, color=colors)
    ax.set_xticks(np.arange(len(rows)), [r["method"] for r in rows], rotation=25, ha="right",
                  fontsize=7)
    s = result["setting"]
    ax.set_ylabel(f"{s['ways']}-way {s['shots']}-shot accuracy (%)")
    ax.set_title(f"{result['train_data']} → {result['test_data']}")
    common.save(fig, path)


def summary(result: dict) -> list[str]:
    return ["| method | accuracy |", "|---|---:|"] + [
        f"| {r['method']} | {common.pct(r['mean'], r['stderr'])} |" for r in result["rows"]]


def reading(result: dict) -> str:
    intact, _, shuffled = result["rows"][:3]
    rule = [r for r in result["rows"] if "steps" in r]
    first, last = rule[0], rule[-1]
    hurt = common.clearly_above(intact, shuffled)
    return (f"Shuffling pixels costs the protonet {100 * (intact['mean'] - shuffled['mean']):.1f} "
            f"points ({'clearly, as the paper claims' if hurt else 'not clearly, unlike the paper'}"
            f"). On shuffled pixels the rule goes from {common.pct(first['mean'])} (step "
            f"{first['steps']}) to {common.pct(last['mean'])} after {last['steps']} steps: "
            f"{common.relation(last, shuffled)} the shuffled protonet and "
            f"{common.relation(last, intact)} the intact one. Whether the rule scores the same on "
            f"intact and shuffled pixels is measured in `permutation`.")
