"""The command line: parsing, one-line errors with exit status 2, and a train -> eval run."""
import json

import pytest

from metarule import cli


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv,message", [
    (["train", "--data", "no_such_data", "--rule", "untrained", "--steps", "2", "--out", "m"],
     "unknown dataset 'no_such_data'"),
    (["train", "--data", "moons", "--rule", "untrained", "--steps", "2", "--widths", "0,5",
      "--out", "m"], "widths must be comma-separated positive integers"),
    (["train", "--data", "moons", "--rule", "untrained", "--steps", "2", "--widths", "a",
      "--out", "m"], "widths must be"),
    (["train", "--data", "moons", "--rule", "no_such_rule", "--steps", "2", "--out", "m"],
     "unknown rule 'no_such_rule'"),
    (["eval", "--model", "no/such/dir", "--data", "moons"], "no model in no/such/dir"),
    (["eval", "--model", "random", "--data", "moons", "--shots", "0"], "positive integer"),
    (["eval", "--model", "random", "--data", "moons", "--shots", "5000"], "shots were requested"),
    (["experiment", "no-such-experiment"], "invalid choice"),
    (["meta-train", "--resume", "--init", "sanger", "--out", "m"],
     "--init cannot change a resumed run"),
    (["meta-train", "--budget", "400,100", "--out", "m"], "LO,HI with 1 <= LO <= HI"),
    (["meta-train", "--resume", "--lr", "1e-4", "--out", "m"], "--lr cannot change a resumed run"),
    (["meta-train", "--depths", "2,0", "--out", "m"],
     "depths must be comma-separated positive integers"),
    (["meta-train", "--resume", "--widths", "128", "--out", "m"],
     "--widths cannot change a resumed run"),
    (["meta-train", "--init", "no_such_rule", "--steps", "1", "--out", "m"], "unknown rule"),
    (["meta-train", "--datasets", "glyphs14=0", "--out", "m"], "positive weights"),
    (["meta-train", "--resume", "--datasets", "glyphs14", "--out", "m"],
     "--datasets cannot change a resumed run"),
    (["experiment", "meta-curves"], "needs a RUN_DIR"),
    (["experiment", "datasets", "--full", "--tiny"], "not allowed with"),
    ([], "required"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    # one error line; a first-use "building DATASET" notice may precede it on a cold cache
    lines = [l for l in err.strip().splitlines() if "(first use only)" not in l]
    assert len(lines) == 1 and "Traceback" not in err


def test_help_exits_zero(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "experiment" in out


def test_train_then_eval(capsys, tmp_path):
    model = tmp_path / "model"
    code, out, err = run(capsys, "train", "--data", "mnist14", "--rule", "init:oja", "--steps",
                         "2", "--widths", "16,16", "--out", str(model))
    assert code == 0, err
    record = json.loads((model / "record.json").read_text())
    assert record["widths"] == [16, 16] and record["rule"]["spec"] == "init:oja"
    code, out, err = run(capsys, "eval", "--model", str(model), "--data", "mnist14", "--seeds",
                         "2", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert {"dataset", "shots", "seeds", "readout", "mean", "stderr", "accuracies"} <= set(result)
    assert result["seeds"] == 2 and result["shots"] == 10


def test_eval_random_human_readable(capsys):
    code, out, _ = run(capsys, "eval", "--model", "random", "--data", "moons", "--seeds", "2",
                       "--readout", "ridge")
    assert code == 0 and out.startswith("moons: 10-shot ridge accuracy")


def test_data_show(capsys, tmp_path):
    code, out, _ = run(capsys, "data", "show", "moons", "--out", str(tmp_path / "moons.png"))
    assert code == 0 and (tmp_path / "moons.png").is_file()


def test_meta_train_arguments_parse():
    args = cli.build_parser().parse_args(
        ["meta-train", "--preset", "cpu", "--hours", "0.5", "--steps", "10", "--out", "r",
         "--resume", "--init", "oja", "--backend", "ray", "--address", "auto", "--workers", "3",
         "--tasks-per-step", "4", "--seed", "1", "--budget", "200,1000",
         "--eval-steps", "500", "--widths", "64,128", "--depths", "4",
         "--datasets", "glyphs14=2,patches16"])
    assert (args.hours, args.steps, args.resume, args.init, args.backend, args.workers,
            args.tasks_per_step, args.seed, args.budget) == (0.5, 10, True, "oja", "ray", 3, 4,
                                                             1, (200, 1000))
    assert (args.eval_steps, args.widths, args.depths) == (500, (64, 128), (4,))
    assert args.datasets == (("glyphs14", "patches16"), (2.0, 1.0))
    demo = cli.build_parser().parse_args(["demo", "--steps", "100", "--out", "d"])
    assert demo.steps == 100 and demo.rule is None  # demo.run takes the shipped rule, else untrained
