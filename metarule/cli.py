"""The `metarule` command line. Each verb parses its arguments and calls one library function.

Bad input (unknown dataset, bad widths, missing model folder, ...) prints one line on stderr and
exits with status 2; no traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from metarule.config import ConfigError

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors instead of usage + error."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


def positive_ints(what: str, example: str):
    """An argparse type: 'a,b,...' -> a tuple of positive integers, named `what` in errors."""
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(","))
        except ValueError:
            values = ()
        if not values or min(values) < 1:
            raise argparse.ArgumentTypeError(
                f"{what} must be comma-separated positive integers such as {example}, "
                f"got {text!r}")
        return values
    return parse


def range_arg(text: str) -> tuple[int, int]:
    """'200,1000' -> (200, 1000): an inclusive range of positive integers, low first."""
    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        lo = hi = 0
    if not 1 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"must be LO,HI with 1 <= LO <= HI, got {text!r}")
    return lo, hi


def dataset_mix(text: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """'glyphs14=2,patches16' -> (names, weights): meta-training datasets, weight 1 by default."""
    names, weights = [], []
    for item in text.split(","):
        name, _, weight = item.partition("=")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            value = -1.0
        if not name or not value > 0:
            raise argparse.ArgumentTypeError(
                f"must be NAME[=WEIGHT],... with positive weights, such as glyphs14=2,patches16, "
                f"got {text!r}")
        names.append(name)
        weights.append(value)
    return tuple(names), tuple(weights)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def count_arg(text: str) -> int:
    """A non-negative integer (inner steps may be 0: the untrained model)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


# ----------------------------------------------------------------------------- verbs

def cmd_data(args) -> int:
    from metarule import data
    return data.cli_list() if args.data_verb == "list" else data.cli_show(args.name, args.out)


def cmd_train(args) -> int:
    from metarule import train
    record = train.train_to_dir(args.data, args.rule, args.steps, args.out, widths=args.widths,
                                activation=args.activation, permute=args.permute,
                                seed=args.seed, preset=args.preset)
    print(f"trained {record['dataset']} for {record['steps']} steps with rule "
          f"{record['rule']['name']} -> {args.out}")
    return 0


def cmd_eval(args) -> int:
    from metarule import train
    result = train.evaluate_model(args.model, args.data, args.shots, args.seeds, args.readout)
    if args.json:
        print(json.dumps(result))
    else:
        se = "n/a" if result["stderr"] is None else f"{100 * result['stderr']:.1f}"
        print(f"{result['dataset']}: {args.shots}-shot {args.readout} accuracy "
              f"{100 * result['mean']:.1f}% ± {se} (s.e., {args.seeds} seeds)")
    return 0


def cmd_experiment(args) -> int:
    from metarule import experiments
    size = "full" if args.full else "tiny" if args.tiny else "default"
    result = experiments.run_experiment(args.name, size, args.rule, args.out, args.run_dir)
    print(f"wrote {Path(args.out) / args.name}.json and .png ({result['command']})")
    return 0


def cmd_report(args) -> int:
    from metarule import report
    print(f"wrote {report.write_report(args.results)}")
    return 0


def cmd_demo(args) -> int:
    from metarule import demo
    return demo.run(args) or 0


def scaled_lr(preset: str, lr: float | None) -> tuple[float, ...] | None:
    """The preset's learning-rate schedule rescaled to start at `lr` (None: unchanged)."""
    from metarule import outer
    if lr is None:
        return None
    if not (lr >= 0 and math.isfinite(lr)):
        raise ConfigError(f"--lr must be a number >= 0 (0: a frozen-theta control), got {lr}")
    values = outer.default_config(preset).lr_values
    return tuple(v * lr / values[0] for v in values)


def meta_train_config(args):
    """The MetaTrainConfig and run settings that `metarule meta-train`'s arguments describe."""
    import jax
    from metarule import catalog, outer
    settings = {"eval_every_s": getattr(args, "eval_every_s", None),
                "snapshot_every": getattr(args, "snapshot_every", None),
                "checkpoint_every_s": getattr(args, "checkpoint_every_s", None),
                "checkpoint_every_steps": getattr(args, "checkpoint_every_steps", None)}
    training = {"init": args.init, "tasks_per_step": args.tasks_per_step,
                "lr_values": scaled_lr(args.preset or "cpu", getattr(args, "lr", None)),
                "budget": getattr(args, "budget", None),
                "widths": getattr(args, "widths", None), "depths": getattr(args, "depths", None),
                "eval_steps": getattr(args, "eval_steps", None),
                "datasets": getattr(args, "datasets", None)}
    if args.resume and (given := [k for k, v in training.items() if v is not None]):
        flag = {"lr_values": "lr"}.get(given[0], given[0]).replace("_", "-")
        raise ConfigError(f"--{flag} cannot change a resumed run; drop it "
                          f"or start a new run with another --out")
    if mix := training.pop("datasets"):
        training["datasets"], training["dataset_weights"] = mix
    cfg = outer.default_config(args.preset or "cpu", seed=args.seed, **{
        k: v for k, v in {**training, **settings}.items() if v is not None})
    if not args.resume:  # a bad --init fails before the run folder is written
        catalog.start_theta(cfg.init, cfg.rule_cfg, jax.random.PRNGKey(cfg.seed))
    return cfg, settings


def cmd_meta_train(args) -> int:
    cfg, settings = meta_train_config(args)
    if getattr(args, "backend", "local") == "ray":
        from metarule import distributed
        distributed.run(cfg, args.out, hours=args.hours, steps=args.steps, resume=args.resume,
                        workers=args.workers, address=args.address, settings=settings)
    else:
        from metarule import outer
        outer.run(cfg, args.out, hours=args.hours, steps=args.steps, resume=args.resume,
                  settings=settings)
    print(f"run written to {args.out}: theta.npz, checkpoint.pkl, metrics.jsonl, "
          f"meta_training.png")
    return 0


# ----------------------------------------------------------------------------- parser

def build_parser() -> Parser:
    from metarule.config import ACTIVATIONS
    from metarule.experiments import EXPERIMENTS

    p = Parser(prog="metarule", description="Meta-learned unsupervised learning rules "
                                            "(Metz et al., ICLR 2019).")
    sub = p.add_subparsers(dest="verb", required=True, parser_class=Parser)

    d = sub.add_parser("data", help="list or show the datasets")
    dsub = d.add_subparsers(dest="data_verb", required=True, parser_class=Parser)
    dsub.add_parser("list", help="every dataset with counts, shape and source")
    show = dsub.add_parser("show", help="save a grid of examples and print the card")
    show.add_argument("name")
    show.add_argument("--out", required=True, help="PNG file to write")
    d.set_defaults(func=cmd_data)

    t = sub.add_parser("train", help="train a base model with a rule on unlabeled data")
    t.add_argument("--data", required=True, help="dataset name or path")
    t.add_argument("--rule", required=True,
                   help="shipped rule name, .npz path, 'untrained' or 'init:NAME'")
    t.add_argument("--steps", type=count_arg, required=True, help="inner steps")
    t.add_argument("--widths", type=positive_ints("widths", "128,128"),
                   default=(128, 128, 128, 128), help="hidden widths, e.g. 128,128,128,128")
    t.add_argument("--activation", default="relu", choices=ACTIVATIONS)
    t.add_argument("--permute", action="store_true", help="fixed random input permutation")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--preset", default="cpu", help="rule config for 'untrained' / 'init:NAME'")
    t.add_argument("--out", required=True, help="model folder to write")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="few-shot accuracy of a trained model's embedding")
    e.add_argument("--model", required=True, help="model folder, or 'random' (untrained)")
    e.add_argument("--data", required=True, help="dataset name or path")
    e.add_argument("--shots", type=positive_int, default=10, help="labeled examples per class")
    e.add_argument("--seeds", type=positive_int, default=10)
    e.add_argument("--readout", default="logistic", choices=("logistic", "ridge"))
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_eval)

    x = sub.add_parser("experiment", help="run one of the paper's experiments")
    x.add_argument("name", choices=list(EXPERIMENTS))
    x.add_argument("run_dir", nargs="?", help="meta-training run folder (meta-curves only)")
    size = x.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the paper's sizes (hours)")
    size.add_argument("--tiny", action="store_true", help="smoke-test sizes (seconds)")
    x.add_argument("--rule", default=None, help="rule spec (default: the first shipped rule, "
                                                "else 'untrained')")
    x.add_argument("--out", default="results", help="results folder")
    x.set_defaults(func=cmd_experiment)

    r = sub.add_parser("report", help="write results/README.md from the results")
    r.add_argument("--results", default="results", help="results folder")
    r.set_defaults(func=cmd_report)

    m = sub.add_parser("demo", help="the main job: train a base model with a rule and score it")
    m.add_argument("--rule", default=None, help="rule spec (default: the first shipped rule, "
                                                "else 'untrained')")
    m.add_argument("--steps", type=count_arg, default=None, help="inner steps")
    m.add_argument("--out", default=None, help="output folder")
    m.set_defaults(func=cmd_demo)

    mt = sub.add_parser("meta-train", help="meta-train a rule")
    mt.add_argument("--preset", default="cpu")
    mt.add_argument("--hours", type=float, default=None, help="wall-clock budget")
    mt.add_argument("--steps", type=positive_int, default=None, help="outer steps")
    mt.add_argument("--out", default="runs/meta-train", help="run folder")
    mt.add_argument("--resume", action="store_true", help="continue from the run folder")
    mt.add_argument("--init", default=None,
                    help="initial rule: a name in catalog.INITIAL_RULES (default sanger, "
                         "docs/starts.md), or a shipped rule / rule .npz to fine-tune")
    mt.add_argument("--lr", type=float, default=None,
                    help="first meta learning rate; later pieces of the schedule keep the "
                         "preset's ratios (cpu preset: 1e-3, 3e-4, 1e-4); 0 keeps theta "
                         "fixed, a control run that draws the same tasks")
    mt.add_argument("--backend", default="local", choices=("local", "ray"))
    mt.add_argument("--address", default=None, help="Ray cluster address")
    mt.add_argument("--workers", type=positive_int, default=None)
    mt.add_argument("--tasks-per-step", type=positive_int, default=None)
    mt.add_argument("--budget", type=range_arg, default=None,
                    help="inner steps a task's base models get before new tasks are drawn, "
                         "LO,HI (cpu preset: 100,400); reach the horizon the rule is used for")
    mt.add_argument("--widths", type=positive_ints("widths", "64,128"), default=None,
                    help="hidden widths the tasks' base models draw from (cpu preset: 64)")
    mt.add_argument("--depths", type=positive_ints("depths", "2,4"), default=None,
                    help="hidden-layer counts the tasks' base models draw from (cpu preset: 2)")
    mt.add_argument("--datasets", type=dataset_mix, default=None,
                    help="meta-training datasets, NAME[=WEIGHT],... (default glyphs14=0.5,"
                         "patches16=0.25,stamps16=0.25)")
    mt.add_argument("--seed", type=int, default=0)
    mt.add_argument("--eval-every-s", type=float, default=None,
                    help="seconds between held-out evaluations (0: none; default 600)")
    mt.add_argument("--eval-steps", type=positive_int, default=None,
                    help="inner steps of each held-out evaluation's base models (default 200)")
    mt.add_argument("--snapshot-every", type=int, default=None,
                    help="keep theta every N outer steps under RUN/snapshots/")
    mt.add_argument("--checkpoint-every-s", type=float, default=None,
                    help="seconds between checkpoints (default 300); the first one always "
                         "follows the first outer step")
    mt.add_argument("--checkpoint-every-steps", type=count_arg, default=None,
                    help="outer steps between checkpoints, besides the seconds (0: none; "
                         "default 0)")
    mt.set_defaults(func=cmd_meta_train)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the `metarule` command line; returns the exit status."""
    from metarule import catalog, data, train
    from metarule.experiments import ExperimentError

    from metarule.runtime import enable_compilation_cache
    enable_compilation_cache()
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UsageError as e:
        print(e, file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except (data.DataError, ConfigError, catalog.RuleError, train.ModelError,
            ExperimentError, OSError) as e:
        print(f"metarule: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except train.TrainError as e:
        print(f"metarule: error: {e}", file=sys.stderr)
        return 1
