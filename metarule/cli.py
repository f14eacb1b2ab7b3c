"""The `metarule` command line (also `python -m metarule`). Each verb parses its arguments and
calls one library function; `--json` prints its result as one JSON object on stdout.

Every failure is one line on stderr, no traceback (under `--json`, the object {"error": "..."}).
Exit status: 0 done; 1 a run that cannot go on (the rule diverged) or a command stopped by
SIGTERM (meta-train after its final checkpoint); 2 bad input (unknown dataset, bad widths,
unreadable file, existing --out, ...); 130 interrupted by Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from metarule.config import ConfigError
from metarule.runtime import Terminated, check_stop, enable_compilation_cache, stop_signals

EXIT_USAGE, EXIT_STOPPED, EXIT_INTERRUPTED = 2, 1, 130

DATA_FORMATS = """\
--data is a registered dataset (`metarule data list`) or a path:
  FILE.npz   arrays x: (N, D), (N, H, W) or (N, H, W, C), uint8 pixels or floats,
             and y: (N,) integer or string labels
  FILE.csv   a header row, numeric feature columns and a label column
             (named `label`, or give --label-column NAME)
  FOLDER/    one sub-folder of same-sized images per class
A file is split 80/20 into train/test per class with seed 0 (docs/data/README.md).
"""


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


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


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

def emit(args, result, text: str) -> int:
    """Print a command's result: JSON under --json, else `text`."""
    print(json.dumps(result) if args.json else text)
    return 0


def cmd_data(args) -> int:
    from metarule import data
    if args.data_verb == "list":
        rows = [data.describe(name) for name in data.list_datasets()]
        return emit(args, rows, data.list_text(rows))
    shown = data.show(args.name, args.out, args.label_column)
    return emit(args, shown, data.show_text(shown))


def cmd_train(args) -> int:
    from metarule import train
    record = train.train_to_dir(args.data, args.rule, args.steps, args.out, widths=args.widths,
                                activation=args.activation, permute=args.permute,
                                seed=args.seed, preset=args.preset, progress=not args.json,
                                force=args.force, label_column=args.label_column)
    return emit(args, {**record, "out": str(args.out)},
                f"trained {record['dataset']} for {record['steps']} steps with rule "
                f"{record['rule']['name']} -> {args.out}")


def cmd_eval(args) -> int:
    from metarule import train
    result = train.evaluate_model(args.model, args.data, args.shots, args.seeds, args.readout,
                                  args.label_column)
    se = "n/a" if result["stderr"] is None else f"{100 * result['stderr']:.1f}"
    return emit(args, result, f"{result['dataset']}: {args.shots}-shot {args.readout} accuracy "
                              f"{100 * result['mean']:.1f}% ± {se} (s.e., {args.seeds} seeds)")


def cmd_experiment(args) -> int:
    from metarule import experiments
    size = "full" if args.full else "tiny" if args.tiny else "default"
    result = experiments.run_experiment(args.name, size, args.rule, args.out, args.run_dir,
                                        progress=not args.json)
    return emit(args, result, f"wrote {Path(args.out) / args.name}.json and .png "
                              f"({result['command']})")


def cmd_report(args) -> int:
    from metarule import report
    path = report.write_report(args.results)
    return emit(args, {"report": str(path)}, f"wrote {path}")


def cmd_demo(args) -> int:
    from metarule import demo
    result = demo.run(args)  # prints its table and the files it wrote, unless --json
    if args.json:
        print(json.dumps(result))
    return 0


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
                "datasets": getattr(args, "datasets", None),
                "relative_steps": getattr(args, "relative_steps", None) or None,
                "task_clip": getattr(args, "task_clip", None),
                "aug_weight": getattr(args, "aug_weight", None)}
    if getattr(args, "estimator", "tbptt") == "tbptt":
        training["draws"] = getattr(args, "draws", None)
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


ES_FLAGS = {"subspace": "subspace", "strategy": "strategy", "pairs": "pairs", "sigma": "sigma",
            "es_lr": "lr", "horizon": "horizon", "truncation": "truncation", "draws": "draws"}


def es_settings(args) -> dict:
    """The ESConfig fields the ES flags give; none may change a resumed run."""
    given = {field: getattr(args, flag) for flag, field in ES_FLAGS.items()
             if getattr(args, flag, None) is not None}
    if args.resume and given:
        raise ConfigError("ES settings cannot change a resumed run; drop them or start a new "
                          "run with another --out")
    return given


def es_config(args, cfg):
    """The ESConfig of `meta-train --estimator es|pes` around the run's MetaTrainConfig."""
    from metarule import es
    given = es_settings(args)
    tbptt_only = {"--lr": args.lr, "--budget": args.budget, "--relative-steps":
                  args.relative_steps or None, "--task-clip": args.task_clip}
    if given_tbptt := [flag for flag, v in tbptt_only.items() if v is not None]:
        raise ConfigError(f"{', '.join(given_tbptt)} set truncated backprop (--estimator "
                          f"tbptt); ES takes --es-lr and --horizon")
    return es.ESConfig(meta=cfg, estimator=args.estimator, **given)


def cmd_staged(args, cfg, settings) -> int:
    """`meta-train --recipe staged`: ES over the subspace, then truncated backprop."""
    from metarule import es, recipe
    if args.hours is None or args.steps is not None:
        raise ConfigError("--recipe staged runs for --hours (split between its stages by "
                          "--es-share); --steps does not apply")
    if args.estimator != "tbptt":
        raise ConfigError("--recipe staged runs --estimator es, then tbptt; drop --estimator")
    if args.backend != "local":
        raise ConfigError("--recipe staged runs on the local backend; run the stages "
                          "separately with --backend ray")
    staged = recipe.StagedConfig(es=es.ESConfig(meta=cfg, estimator="es", **es_settings(args)),
                                 tbptt=cfg, es_share=args.es_share)
    final = recipe.run(staged, args.out, args.hours, resume=args.resume,
                       progress=not args.json, settings=settings)
    files = ["theta.npz", "recipe.json", "es/", "tbptt/"]
    return emit(args, {"out": str(args.out), "rule": str(final), "files": files},
                f"staged run written to {args.out}: {', '.join(files)}")


def cmd_meta_train(args) -> int:
    if getattr(args, "recipe", None) == "staged" and args.init is None and not args.resume:
        from metarule import catalog
        args.init = catalog.default_rule_spec()  # the recipe fine-tunes the shipped rule
    cfg, settings = meta_train_config(args)
    if getattr(args, "recipe", None) == "staged":
        return cmd_staged(args, cfg, settings)
    if getattr(args, "estimator", "tbptt") != "tbptt":
        from metarule import es
        state = es.run(es_config(args, cfg), args.out, hours=args.hours, steps=args.steps,
                       resume=args.resume, progress=not args.json, backend=args.backend,
                       workers=args.workers, address=args.address, settings=settings)
        files = ["theta.npz", "checkpoint.pkl", "metrics.jsonl", "meta_training.png"]
        return emit(args, {"out": str(args.out), "step": int(state.generation), "files": files},
                    f"run written to {args.out}: {', '.join(files)}")
    if getattr(args, "backend", "local") == "ray":
        from metarule import distributed
        state = distributed.run(cfg, args.out, hours=args.hours, steps=args.steps,
                                resume=args.resume, workers=args.workers, address=args.address,
                                settings=settings, progress=not args.json)
    else:
        from metarule import outer
        state = outer.run(cfg, args.out, hours=args.hours, steps=args.steps,
                          resume=args.resume, settings=settings, progress=not args.json)
    files = ["theta.npz", "checkpoint.pkl", "metrics.jsonl", "meta_training.png"]
    return emit(args, {"out": str(args.out), "step": int(state.step), "files": files},
                f"run written to {args.out}: {', '.join(files)}")


# ----------------------------------------------------------------------------- parser

def verb(sub, name: str, help: str, example: str, inputs: str = "") -> Parser:
    """A sub-parser with --json, whose --help ends with its inputs and an example."""
    p = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=f"{inputs}\nexample:\n  {example}")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return p


def add_label_column(p: Parser) -> None:
    p.add_argument("--label-column", default="label", metavar="NAME",
                   help="label column of a CSV (default: label)")


def add_data(sub) -> None:
    d = sub.add_parser("data", help="list or show the datasets")
    dsub = d.add_subparsers(dest="data_verb", required=True, parser_class=Parser)
    verb(dsub, "list", "every dataset with counts, shape and source", "metarule data list")
    show = verb(dsub, "show", "save a grid of examples and print the dataset's card",
                "metarule data show glyphs14 --out glyphs14.png", DATA_FORMATS)
    show.add_argument("name", help="a registered dataset or a path (see below)")
    show.add_argument("--out", required=True, help="PNG file to write (.png is added if "
                                                  "missing; a folder gets NAME.png)")
    add_label_column(show)
    d.set_defaults(func=cmd_data)


def add_train(sub) -> None:
    from metarule.config import ACTIVATIONS
    t = verb(sub, "train", "train a base model with a rule on unlabeled data",
             "metarule train --data mnist14 --rule cpu-pes-v1 --steps 500 --out runs/model",
             DATA_FORMATS + "Only the train split's inputs are used; labels are never read.\n")
    t.add_argument("--data", required=True, help="dataset name or path (see below)")
    add_label_column(t)
    t.add_argument("--rule", required=True,
                   help="shipped rule name, .npz path, 'untrained' or 'init:NAME'")
    t.add_argument("--steps", type=count_arg, required=True, help="inner steps")
    t.add_argument("--widths", type=positive_ints("widths", "128,128"),
                   default=(128, 128, 128, 128), help="hidden widths, e.g. 128,128,128,128")
    t.add_argument("--activation", default="relu", choices=ACTIVATIONS)
    t.add_argument("--permute", action="store_true", help="fixed random input permutation")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--preset", default="cpu", help="rule config for 'untrained' / 'init:NAME'")
    t.add_argument("--out", required=True, help="model folder to write (written whole, or not "
                                                "at all)")
    t.add_argument("--force", action="store_true", help="replace an existing --out")
    t.set_defaults(func=cmd_train)


def add_eval(sub) -> None:
    e = verb(sub, "eval", "few-shot accuracy of a trained model's embedding",
             "metarule eval --model runs/model --data fashion_mnist14 --shots 10 --json",
             DATA_FORMATS + "Labeled examples are drawn from the train split, scored on the "
                            "test split.\n")
    e.add_argument("--model", required=True, help="model folder, or 'random' (untrained)")
    e.add_argument("--data", required=True, help="dataset name or path (see below)")
    add_label_column(e)
    e.add_argument("--shots", type=positive_int, default=10, help="labeled examples per class")
    e.add_argument("--seeds", type=positive_int, default=10)
    e.add_argument("--readout", default="logistic", choices=("logistic", "ridge"))
    e.set_defaults(func=cmd_eval)


def add_experiment(sub) -> None:
    from metarule.experiments import EXPERIMENTS
    x = verb(sub, "experiment", "run one of the paper's experiments",
             "metarule experiment datasets --tiny --out results",
             "Writes OUT/NAME.json and OUT/NAME.png; `metarule report` collects them.\n")
    x.add_argument("name", choices=list(EXPERIMENTS))
    x.add_argument("run_dir", nargs="?", help="meta-training run folder (meta-curves only)")
    size = x.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the paper's sizes (hours)")
    size.add_argument("--tiny", action="store_true", help="smoke-test sizes (seconds)")
    x.add_argument("--rule", default=None, help="rule spec (default: the shipped default rule, "
                                                "else 'untrained')")
    x.add_argument("--out", default="results", help="results folder")
    x.set_defaults(func=cmd_experiment)


def add_report(sub) -> None:
    r = verb(sub, "report", "write results/README.md from the results",
             "metarule report --results results",
             "Reads the NAME.json files that `metarule experiment` wrote.\n")
    r.add_argument("--results", default="results", help="results folder")
    r.set_defaults(func=cmd_report)


def add_demo(sub) -> None:
    m = verb(sub, "demo", "the main job: train a base model with a rule and score it",
             "metarule demo --steps 500 --out demo_out",
             "Uses MNIST 14x14 (installed offline, docs/data/README.md); writes "
             "first_layer_filters.png,\nembedding.png and demo.json into --out, replacing "
             "an earlier demo's; other files there stay.\n")
    m.add_argument("--rule", default=None, help="rule spec (default: the shipped default rule, "
                                                "else 'untrained')")
    m.add_argument("--steps", type=count_arg, default=None, help="inner steps")
    m.add_argument("--out", default=None, help="output folder")
    m.set_defaults(func=cmd_demo)


def add_meta_train(sub) -> None:
    mt = verb(sub, "meta-train", "meta-train a rule",
              "metarule meta-train --preset cpu --hours 1 --out runs/meta-train",
              "Meta-trains on glyphs14, patches16 and stamps16 (docs/data/README.md); held-out "
              "evaluation\nuses mnist14, fashion_mnist14 and polarity. SIGTERM or Ctrl-C stop "
              "after a final checkpoint;\n--resume continues the run.\n")
    mt.add_argument("--preset", default="cpu")
    mt.add_argument("--hours", type=positive_float, default=None, help="wall-clock budget")
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
    mt.add_argument("--relative-steps", action="store_true",
                    help="scale each theta leaf's Adam step by its RMS; --lr is then a fraction "
                         "of each leaf's size (docs/meta_training.md)")
    mt.add_argument("--task-clip", type=positive_float, default=None,
                    help="clip each task's meta-gradient to this norm before the mean")
    mt.add_argument("--aug-weight", type=float, default=None,
                    help="weight of the rotation/shift regression targets in augmented tasks' "
                         "meta-objective (default 1)")
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
    mt.add_argument("--recipe", default=None, choices=("staged",),
                    help="staged: ES over --subspace for --es-share of --hours, then truncated "
                         "backprop on the whole theta from its result (default start: "
                         "the shipped rule)")
    mt.add_argument("--es-share", type=positive_float, default=0.5,
                    help="fraction of --hours the staged recipe's ES stage gets (default 0.5)")
    mt.add_argument("--draws", type=positive_int, default=None,
                    help="support/query draws the meta-objective averages (App. H.2; default "
                         "1 for tbptt, 5 for es and pes)")
    add_es_options(mt)
    mt.set_defaults(func=cmd_meta_train)


def add_es_options(mt: Parser) -> None:
    from metarule import subspace
    es = mt.add_argument_group("evolution strategies (--estimator es|pes; docs/meta_training.md)")
    es.add_argument("--estimator", default="tbptt", choices=("tbptt", "es", "pes"),
                    help="truncated backprop (the paper's), ES or persistent ES over a subspace")
    es.add_argument("--subspace", type=subspace.parse, default=None,
                    help=f"coordinate groups that move, from {', '.join(subspace.GROUPS)} "
                         "(default merge,gains,readout_scales)")
    es.add_argument("--strategy", default=None, choices=("open_es", "snes", "cma_es",
                                                         "sep_cma_es"),
                    help="evosax search strategy for --estimator es (default open_es)")
    es.add_argument("--pairs", type=positive_int, default=None,
                    help="antithetic pairs per generation (population 2x; default 4)")
    es.add_argument("--sigma", type=positive_float, default=None,
                    help="perturbation in units of each group's scale (default 0.1)")
    es.add_argument("--es-lr", type=positive_float, default=None,
                    help="step size on the subspace coordinates (default 0.05)")
    es.add_argument("--horizon", type=range_arg, default=None,
                    help="inner steps scored, FIRST,LAST: grows over the run (default 150,500)")
    es.add_argument("--truncation", type=positive_int, default=None,
                    help="PES: inner steps per truncation (default 50)")


def build_parser() -> Parser:
    p = Parser(prog="metarule", description="Meta-learned unsupervised learning rules "
                                            "(Metz et al., ICLR 2019).",
               formatter_class=argparse.RawDescriptionHelpFormatter,
               epilog="exit status: 0 done, 1 diverged or stopped by SIGTERM, 2 bad input, "
                      "130 Ctrl-C\nexample:\n  metarule demo")
    sub = p.add_subparsers(dest="verb", required=True, parser_class=Parser)
    for add in (add_data, add_train, add_eval, add_experiment, add_report, add_demo,
                add_meta_train):
        add(sub)
    return p


# ----------------------------------------------------------------------------- errors and signals

def failure(e: BaseException) -> tuple[int, str] | None:
    """(exit status, one-line message) for an expected failure; None for a bug."""
    from metarule import catalog, data, train
    from metarule.experiments import ExperimentError
    if isinstance(e, UsageError):
        return EXIT_USAGE, str(e)
    if isinstance(e, (data.DataError, ConfigError, catalog.RuleError, train.ModelError,
                      train.OutputError, ExperimentError, OSError)):
        return EXIT_USAGE, f"metarule: error: {e}"
    if isinstance(e, train.TrainError):
        return EXIT_STOPPED, f"metarule: error: {e}"
    if isinstance(e, SystemExit):  # --help and --version: an int; a stopped run: its message
        return (e.code or 0, "") if e.code is None or isinstance(e.code, int) else \
            (EXIT_STOPPED, f"metarule: {e.code}")
    if isinstance(e, Terminated):
        return EXIT_STOPPED, "metarule: stopped by SIGTERM before finishing; rerun the command"
    if isinstance(e, KeyboardInterrupt):
        return EXIT_INTERRUPTED, ("metarule: interrupted by Ctrl-C; rerun the command "
                                  "(meta-train: add --resume to continue from its checkpoint)")
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the `metarule` command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    as_json = "--json" in argv
    with stop_signals():  # the first SIGTERM/Ctrl-C is acted on between steps (runtime)
        try:
            enable_compilation_cache()
            args = build_parser().parse_args(argv)
            status = args.func(args)
            check_stop()  # a signal that came during the last stretch of work
            return status
        except BaseException as e:  # noqa: BLE001 -- sorted by `failure`; a bug re-raises
            known = failure(e)
            if known is None:
                raise
            status, message = known
            if message:
                bare = message.removeprefix("metarule: ").removeprefix("error: ")
                print(json.dumps({"error": bare}) if as_json else message, file=sys.stderr)
            return status


if __name__ == "__main__":
    sys.exit(main())
