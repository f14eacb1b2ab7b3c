"""Bad input through the command line: one line on stderr saying what is wrong and what to do,
a non-zero exit status, no traceback, and no file created or changed. Also the CLI's contract
with scripts: --json results and errors, --force, python -m metarule, signals."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from metarule import base_model, cli, rule, train
from metarule.config import BaseModelConfig

ROOT = Path(__file__).resolve().parents[1]


def make_inputs(d: Path) -> None:
    """The bad (and a few good) files the cases below refer to, all inside `d`."""
    rng = np.random.default_rng(0)
    np.savez(d / "good.npz", x=rng.random((40, 6), np.float32), y=np.arange(40) % 4)
    (d / "empty.npz").write_bytes(b"")
    good = (d / "good.npz").read_bytes()
    (d / "truncated.npz").write_bytes(good[:len(good) // 2])
    np.savez(d / "objects.npz", x=np.array([[1, "a"]] * 8, dtype=object), y=np.arange(8) % 2)
    meta = {"card": {"name": "no-cfg"}, "planes": list(rule.PLANES)}
    np.savez(d / "no_cfg.npz", theta=np.zeros(3, np.float32),
             meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    (d / "bc.csv").write_text("a,b,cls\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n")
    for run, blob in (("run_list", [1, 2]), ("run_no_config", {"state": None})):
        (d / run).mkdir()
        (d / run / "checkpoint.pkl").write_bytes(pickle.dumps(blob))
    params = base_model.init(jax.random.PRNGKey(0), BaseModelConfig(input_dim=196, hidden=(8,)))
    train.save_model(d / "model196", params, {"activation": "relu"})
    (d / "taken").mkdir()
    (d / "taken" / "keep.txt").write_text("an earlier result\n")
    (d / "a_file").write_text("not a folder\n")


def snapshot(d: Path) -> dict:
    """Every path under `d` (hidden ones included) with its bytes: what 'unchanged' means."""
    return {str(p.relative_to(d)): p.read_bytes() if p.is_file() else None
            for p in sorted(d.rglob("*"))}


TRAIN = ["train", "--rule", "init:oja", "--preset", "tiny", "--steps", "2", "--widths", "8"]

# (argv with {d} for the folder of make_inputs, exit status, what the one line must say)
CASES = {
    "empty npz as data": (TRAIN + ["--data", "{d}/empty.npz", "--out", "{d}/o"], 2,
                          "unreadable .npz (an empty file)"),
    "truncated npz as data": (TRAIN + ["--data", "{d}/truncated.npz", "--out", "{d}/o"], 2,
                              "truncated.npz: unreadable .npz ("),
    "empty npz as rule": (["train", "--data", "{d}/good.npz", "--rule", "{d}/empty.npz",
                           "--steps", "2", "--out", "{d}/o"], 2,
                          "cannot read rule file {d}/empty.npz (an empty file)"),
    "truncated npz as rule": (["train", "--data", "{d}/good.npz", "--rule",
                               "{d}/truncated.npz", "--steps", "2", "--out", "{d}/o"], 2,
                              "cannot read rule file {d}/truncated.npz"),
    "rule metadata without cfg": (["train", "--data", "{d}/good.npz", "--rule",
                                   "{d}/no_cfg.npz", "--steps", "2", "--out", "{d}/o"], 2,
                                  "has no rule config in its metadata"),
    "checkpoint that is a list": (["meta-train", "--resume", "--out", "{d}/run_list"], 2,
                                  "is not a metarule checkpoint"),
    "checkpoint dict without config": (["meta-train", "--resume", "--out",
                                        "{d}/run_no_config"], 2,
                                       "is not a metarule checkpoint"),
    "model on data of another width": (["eval", "--model", "{d}/model196", "--data",
                                        "{d}/good.npz", "--shots", "2"], 2,
                                       "takes 196 inputs but"),
    "negative hours": (["meta-train", "--hours", "-1", "--out", "{d}/o"], 2,
                       "--hours: must be a positive number"),
    "empty data name": (TRAIN + ["--data", "", "--out", "{d}/o"], 2, "the dataset is empty"),
    "object-dtype npz": (["eval", "--model", "random", "--data", "{d}/objects.npz"], 2,
                         "holds Python objects (dtype object)"),
    "csv without the label column": (TRAIN + ["--data", "{d}/bc.csv", "--out", "{d}/o"], 2,
                                     "{d}/bc.csv: no 'label' column"),
    "csv error names the flag": (["eval", "--model", "random", "--data", "{d}/bc.csv"], 2,
                                 "--label-column NAME"),
    "csv label column that is not there": (["data", "show", "{d}/bc.csv", "--label-column",
                                            "kind", "--out", "{d}/bc.png"], 2,
                                           "no 'kind' column"),
    "existing --out": (TRAIN + ["--data", "{d}/good.npz", "--out", "{d}/taken"], 2,
                       "{d}/taken already exists; pass --force"),
    "--out that is a file": (TRAIN + ["--data", "{d}/good.npz", "--out", "{d}/a_file",
                                      "--force"], 2, "is a file"),
    "empty --out": (TRAIN + ["--data", "{d}/good.npz", "--out", ""], 2,
                    "the output folder is empty"),
}


@pytest.fixture
def inputs(tmp_path):
    make_inputs(tmp_path)
    return tmp_path


def one_line(err: str) -> str:
    """stderr's single line; a first-use 'building DATASET' notice may precede it."""
    lines = [l for l in err.strip().splitlines() if "(first use only)" not in l]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_one_line_nothing_changed(case, as_json, inputs, capsys, monkeypatch):
    argv, status, message = CASES[case]
    argv = [a.format(d=inputs) for a in argv] + (["--json"] if as_json else [])
    monkeypatch.chdir(inputs)  # a relative path that slipped through would land here too
    before = snapshot(inputs)
    assert cli.main(argv) == status
    out, err = capsys.readouterr()
    line = one_line(err)
    if as_json:
        line = json.loads(line)["error"]
    assert message.format(d=inputs) in line
    assert out == ""
    assert snapshot(inputs) == before


def test_data_show_prints_the_file_it_wrote(inputs, capsys):
    assert cli.main(["data", "show", "moons", "--out", str(inputs / "grid")]) == 0
    assert f"-> {inputs / 'grid.png'}" in capsys.readouterr().out
    assert (inputs / "grid.png").is_file() and not (inputs / "grid").exists()
    assert cli.main(["data", "show", "moons", "--out", str(inputs / "taken"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["png"] == str(inputs / "taken" / "moons.png") and Path(shown["png"]).is_file()


def test_label_column_reads_the_csv(inputs, capsys):
    assert cli.main(["data", "show", str(inputs / "bc.csv"), "--label-column", "cls",
                     "--out", str(inputs / "bc.png"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["classes"], shown["input_dim"]) == (2, 2)


def test_train_json_refuses_existing_out_and_force_replaces_it(inputs, capsys):
    out = inputs / "model"
    argv = TRAIN + ["--data", str(inputs / "good.npz"), "--out", str(out), "--json"]
    assert cli.main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["out"] == str(out) and record["steps"] == 2
    assert json.loads((out / "record.json").read_text())["date"] == record["date"]
    before = snapshot(inputs)
    assert cli.main(argv) == 2
    assert "already exists; pass --force" in json.loads(one_line(capsys.readouterr().err))["error"]
    assert snapshot(inputs) == before
    assert cli.main(argv[:-1] + ["--seed", "1", "--force"]) == 0
    assert json.loads((out / "record.json").read_text())["seed"] == 1
    assert sorted(p.name for p in inputs.iterdir()) == sorted(
        Path(p).name for p in before if "/" not in p)  # no temporary folder left


def write(folder: Path, text: str) -> None:
    (folder / "a.txt").write_text(text)
    (folder / "b.txt").write_text(text)


def test_two_writers_never_mix(tmp_path):
    out = tmp_path / "out"
    first, second = train.atomic_dir(out), train.atomic_dir(out)
    a, b = first.__enter__(), second.__enter__()  # both pass the checks before either ends
    write(a, "first")
    write(b, "second")
    first.__exit__(None, None, None)
    with pytest.raises(train.OutputError, match="appeared while this command ran"):
        second.__exit__(None, None, None)
    assert {p.name: p.read_text() for p in out.iterdir()} == {"a.txt": "first",
                                                              "b.txt": "first"}
    with train.atomic_dir(out, replace=True) as c:
        write(c, "third")
    assert {p.name: p.read_text() for p in out.iterdir()} == {"a.txt": "third",
                                                              "b.txt": "third"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failed_work_leaves_no_folder(tmp_path):
    with pytest.raises(RuntimeError), train.atomic_dir(tmp_path / "out") as d:
        write(d, "half")
        raise RuntimeError("the work failed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("raised,status,message", [
    (SystemExit("meta-train stopped by SIGTERM; its checkpoint is in r"), 1,
     "metarule: meta-train stopped by SIGTERM; its checkpoint is in r"),
    (KeyboardInterrupt(), 130, "interrupted by Ctrl-C"),
    (train.TrainError("diverged"), 1, "metarule: error: diverged"),
])
def test_stops_exit_status(raised, status, message, monkeypatch, capsys):
    def stop(args):
        raise raised
    monkeypatch.setattr(cli, "cmd_meta_train", stop)
    assert cli.main(["meta-train", "--steps", "1", "--out", "r"]) == status
    assert message in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("argv", [["data", "list"], ["data", "show", "moons", "--out", "x"],
                                  TRAIN + ["--data", "moons", "--out", "o"],
                                  ["eval", "--model", "random", "--data", "moons"],
                                  ["experiment", "datasets"], ["report"], ["demo"],
                                  ["meta-train"]])
def test_every_command_takes_json_and_documents_its_inputs(argv, capsys):
    assert cli.build_parser().parse_args(argv + ["--json"]).json
    verb = argv[:2] if argv[0] == "data" else argv[:1]
    assert cli.main(verb + ["--help"]) == 0
    text = capsys.readouterr().out
    assert "example:\n  metarule " + " ".join(verb) in text
    if "--data" in argv or verb == ["data", "show"]:
        assert "FILE.csv" in text and "--label-column NAME" in text
        assert "docs/data/README.md" in text


def test_data_list_json(monkeypatch, capsys):
    from metarule import data
    monkeypatch.setattr(data, "list_datasets", lambda: ["moons"])
    assert cli.main(["data", "list", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["name"], row["classes"], row["input_dim"]) == ("moons", 2, 2)


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_python_m_metarule_is_the_cli():
    done = subprocess.run([sys.executable, "-m", "metarule", "meta-train", "--hours", "-1",
                           "--json"], capture_output=True, text=True, env=env(), timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert "--hours: must be a positive number" in json.loads(done.stderr)["error"]


@pytest.mark.parametrize("signum,status,message", [
    (signal.SIGTERM, 1, "metarule: stopped by SIGTERM before finishing"),
    (signal.SIGINT, 130, "metarule: interrupted by Ctrl-C"),
])
def test_signal_stops_train_with_one_line(signum, status, message, tmp_path):
    """Sent once the command has started work (its temporary output folder exists)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "metarule", "train", "--data", "moons", "--rule", "init:oja",
         "--preset", "tiny", "--steps", "100000000", "--widths", "8", "--out",
         str(tmp_path / "o"), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    deadline = time.monotonic() + 300
    while not any(tmp_path.iterdir()) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == status, err
    assert json.loads(one_line(err))["error"].startswith(message.removeprefix("metarule: "))
    assert out == "" and list(tmp_path.iterdir()) == []
