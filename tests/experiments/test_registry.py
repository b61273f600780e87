"""Experiments as data: the registry round-trips, configs are validated when built and
round-trip through JSON, the command line is generated from the config fields (a toy
experiment registered here gets a working subcommand), ``run_one`` is pure (writes
nothing; same config, same record) and ``report`` writes atomically."""

import argparse
import dataclasses
import json
import os

import numpy as np
import pytest

from arraycurv import cli
from arraycurv.experiments import (
    EXPERIMENTS,
    Experiment,
    ExperimentConfig,
    UsageError,
    config_dict,
    config_field,
    config_from_dict,
    get_experiment,
    register_experiment,
    registry,
    run_experiment,
    unregister_experiment,
)
from arraycurv.experiments import huh_relu_digits as relu_digits
from arraycurv.experiments import huh_teacher_student as teacher_student
from arraycurv.experiments import huh_theory as theory
from arraycurv.results import jsonable, read_json, read_npz

BUILTIN = {"theory": theory, "teacher-student": teacher_student, "relu-digits": relu_digits}

TINY_TS = teacher_student.TeacherStudentConfig(width=4, rank=1, depth=2, steps=6, num_test=10, rules=("sgd", "ngd"),
                                               q=(3.0,))
TINY_DIGITS = relu_digits.DigitsConfig(gains=(1e-2,), sizes=(64, 8, 10), steps=3, record_every=1, batch_size=16,
                                       rules=("sgd", "sqrt_ngd_d"))


# ------------------------------------------------------------------------ a toy
@dataclasses.dataclass(frozen=True)
class ToyConfig(ExperimentConfig):
    n: int = config_field(2, "number of terms", parse=registry.positive_int)
    scale: float = config_field(0.5, "scale of every term", parse=registry.positive_float)
    names: tuple = config_field(("a", "b"), "names of the terms", parse=registry.name_list, metavar="LIST")
    rates: tuple = config_field((("a", 0.1),), "rate of one name (repeatable)", option="--rate",
                                parse=registry.rule_rate, metavar="NAME=R", repeat=True)
    square: bool = config_field(False, "square the terms")
    label: str = config_field("toy", "a free-text label")

    def check(self):
        super().check()
        if self.n > 100:
            raise UsageError(f"n: expected at most 100 terms, got {self.n}")


def toy_run_one(config, *, xp=None, progress=False, checkpoint=None):
    config, xp = registry.bind_namespace(config, xp)
    terms = config.scale * xp.arange(config.n, dtype=xp.float64)
    if config.square:
        terms = terms * terms
    record = {"experiment": "toy", "config": config_dict(config), "total": float(xp.sum(terms)),
              "terms": np.asarray(terms)}
    if checkpoint is not None:
        checkpoint(record)
    return record


def toy_report(records, out_dir=None, *, progress=True, plots=True):
    from arraycurv.results import write_json, write_npz

    def one(record, out, *, progress, plots):
        summary = {k: v for k, v in record.items() if k != "terms"}
        if out is not None:
            write_npz(os.path.join(out, "terms.npz"), {"terms": record["terms"]})
            write_json(os.path.join(out, "summary.json"), summary)
        if progress:
            print(f"toy total {record['total']:g}")
        return summary

    return registry.report_each(one, records, out_dir, progress=progress, plots=plots)


TOY = Experiment("toy", ToyConfig, toy_run_one, toy_report, "a toy experiment for the tests", "no paper")


@pytest.fixture
def toy():
    exp = register_experiment(TOY)
    yield exp
    unregister_experiment("toy")


# --------------------------------------------------------------------- registry
def test_builtin_experiments_are_registered_with_their_modules():
    assert list(EXPERIMENTS)[:3] == ["theory", "teacher-student", "relu-digits"]
    for name, module in BUILTIN.items():
        exp = get_experiment(name)
        assert exp is EXPERIMENTS[name] is module.EXPERIMENT
        assert exp.config_type is module.Config
        assert exp.run_one is module.run_one and exp.report is module.report
        assert exp.help and exp.paper.startswith("Huh (2020)")
        assert issubclass(exp.config_type, ExperimentConfig)


def test_register_get_unregister_round_trip():
    assert "toy" not in EXPERIMENTS
    assert register_experiment(TOY) is TOY
    try:
        assert get_experiment("toy") is TOY and EXPERIMENTS["toy"] is TOY and list(EXPERIMENTS)[-1] == "toy"
        assert len(EXPERIMENTS) == len(list(EXPERIMENTS))
        assert "toy" in cli.command_names() and cli.command_names()[-2:] == ("all", "sweep")
    finally:
        assert unregister_experiment("toy") is TOY
    assert "toy" not in EXPERIMENTS and "toy" not in cli.command_names()
    with pytest.raises(UsageError, match=r"experiment: expected one of \('theory', .*got 'toy'"):
        get_experiment("toy")


def test_register_rejects_what_the_command_line_cannot_offer():
    @dataclasses.dataclass(frozen=True)
    class Undocumented(ExperimentConfig):
        n: int = 3

    with pytest.raises(TypeError, match=r"Undocumented.n: expected a field made by config_field"):
        register_experiment(Experiment("bad", Undocumented, toy_run_one, toy_report, "", ""))

    @dataclasses.dataclass(frozen=True)
    class Plain:
        n: int = 3

    with pytest.raises(TypeError, match="config_type: expected an ExperimentConfig subclass"):
        register_experiment(Experiment("bad", Plain, toy_run_one, toy_report, "", ""))
    with pytest.raises(ValueError, match="experiment.name"):
        register_experiment(dataclasses.replace(TOY, name="--toy"))
    with pytest.raises(TypeError, match="expected an Experiment"):
        register_experiment("toy")
    assert "bad" not in EXPERIMENTS


# ------------------------------------------------------------------------ configs
@pytest.mark.parametrize("name", list(BUILTIN))
def test_config_round_trips_through_json(name):
    ct = get_experiment(name).config_type
    for cfg in (ct(), dataclasses.replace(ct(), seed=5, dtype="float32", backend="torch")):
        text = json.dumps(config_dict(cfg), allow_nan=False)
        back = config_from_dict(ct, json.loads(text))
        assert back == cfg and hash(back) == hash(cfg)
    with pytest.raises(UsageError, match=r"config: expected fields of .*got \['nonsense'\]"):
        config_from_dict(ct, {"nonsense": 1})
    # what a process pool or a Dask worker needs: configs and experiments pickle
    import pickle

    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert pickle.loads(pickle.dumps(get_experiment(name))) == get_experiment(name)


def test_config_round_trip_keeps_pairs_and_tuples():
    cfg = dataclasses.replace(TINY_TS, lr_overrides=(("sgd", 0.02),))
    d = config_dict(cfg)
    assert d["lr_overrides"] == {"sgd": 0.02} and d["rules"] == ["sgd", "ngd"] and d["q"] == [3.0]
    assert config_from_dict(teacher_student.TeacherStudentConfig, json.loads(json.dumps(d))) == cfg
    assert relu_digits.DigitsConfig(lr={"sgd": 0.3, "ngd_d": 0.1, "sqrt_ngd_d": 0.1}).lr == (
        ("sgd", 0.3), ("ngd_d", 0.1), ("sqrt_ngd_d", 0.1))


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps: expected a positive integer, got 0"),
    ({"steps": 2.5}, "steps: expected a positive integer, got 2.5"),
    ({"eta_bar": -1.0}, r"eta_bar: expected a number > 0, got -1.0"),
    ({"noise": float("inf")}, "noise: expected a number >= 0, got inf"),
    ({"q": (0.5,)}, "q: expected values >= 1, got 0.5"),
    ({"rules": ("newton",)}, "rules: expected names among"),
    ({"dtype": "float16"}, "dtype: expected 'float64' or 'float32', got 'float16'"),
    ({"backend": "jax"}, "backend: expected one of"),
    ({"seed": "1"}, "seed: expected an integer, got '1'"),
])
def test_configs_are_validated_when_built(kwargs, message):
    """A grid of configs fails before any work starts."""
    with pytest.raises(UsageError, match=message):
        teacher_student.TeacherStudentConfig(**kwargs)
    with pytest.raises(UsageError, match=message.split(":")[0]):
        dataclasses.replace(teacher_student.TeacherStudentConfig(), **kwargs)


def test_other_configs_are_validated_when_built():
    with pytest.raises(UsageError, match="trajectory-start: expected two finite numbers"):
        theory.TheoryConfig(trajectory_start=(1.0,))
    with pytest.raises(UsageError, match="fig2-targets: expected positive finite targets"):
        theory.TheoryConfig(fig2_targets=(1.0, -2.0))
    with pytest.raises(UsageError, match="test-fraction: expected a number in"):
        relu_digits.DigitsConfig(test_fraction=1.5)
    with pytest.raises(UsageError, match="lr: expected a learning rate for rule 'ngd_d'"):
        relu_digits.DigitsConfig(lr=(("sgd", 0.1),))


def test_parse_option_uses_the_fields_parser():
    ct = teacher_student.TeacherStudentConfig
    assert registry.parse_option(ct, "eta_bar", "0.05") == 0.05
    assert registry.parse_option(ct, "rules", "sgd, ngd") == ("sgd", "ngd")
    assert registry.parse_option(ct, "q", "1,2,4") == (1.0, 2.0, 4.0)
    assert registry.parse_option(ct, "lr_overrides", "sgd=0.1") == ("sgd", 0.1)
    assert registry.parse_option(ct, "dtype", "float32") == "float32"
    assert registry.parse_option(ToyConfig, "square", "true") is True
    assert registry.parse_option(ToyConfig, "label", "x y") == "x y"
    with pytest.raises(UsageError, match="steps: expected a positive integer, got '0'"):
        registry.parse_option(ct, "steps", "0")
    with pytest.raises(UsageError, match="dtype: expected one of"):
        registry.parse_option(ct, "dtype", "float16")
    with pytest.raises(UsageError, match="name: expected a field of TeacherStudentConfig, got 'lr'"):
        registry.parse_option(ct, "lr", "0.1")


# ------------------------------------------------------------- generated command line
def _help(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", list(BUILTIN))
def test_every_config_field_is_an_option_with_its_help_and_default(name, capsys):
    out = " ".join(_help(capsys, [name, "--help"]).split())
    for spec in registry.config_options(get_experiment(name).config_type):
        assert spec["option"] in out, spec["option"]
        assert " ".join(spec["help"].split())[:40] in out, spec["name"]
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "experiment").choices[name]
    args = sub.parse_args([])
    assert cli.config_from_args(get_experiment(name).config_type, args) == get_experiment(name).config_type()


def test_registered_toy_gets_a_working_subcommand(toy, tmp_path, capsys):
    out = _help(capsys, ["toy", "--help"])
    for opt in ("--n", "--scale", "--names", "--rate", "--square", "--no-square", "--label", "--seed", "--dtype",
                "--backend", "--out", "--quiet", "--no-plots", "--threads"):
        assert opt in out, opt
    assert "number of terms (default: 2)" in " ".join(out.split())
    assert "toy" in _help(capsys, ["--help"])
    rc = cli.main(["toy", "--n", "4", "--scale", "2", "--names", "x,y", "--rate", "b=0.3", "--rate", "a=0.2",
                   "--square", "--label", "hello", "--seed", "9", "--out", str(tmp_path)])
    assert rc == 0
    assert "toy total 56" in capsys.readouterr().out  # (2 k)^2 summed over k = 0..3
    s = read_json(tmp_path / "summary.json")
    assert s["config"] == {"n": 4, "scale": 2.0, "names": ["x", "y"], "rates": {"a": 0.2, "b": 0.3},
                           "square": True, "label": "hello", "seed": 9, "dtype": "float64", "backend": "numpy"}
    np.testing.assert_array_equal(read_npz(tmp_path / "terms.npz")["terms"], [0.0, 4.0, 16.0, 36.0])
    # the default out folder and usage errors, from argparse and from the config's check
    args = cli.build_parser().parse_args(["toy"])
    assert args.out == os.path.join("results", "toy") and cli.config_from_args(ToyConfig, args) == ToyConfig()
    with pytest.raises(SystemExit) as exc:
        cli.main(["toy", "--n", "0"])
    assert exc.value.code == 2
    assert "argument --n: expected a positive integer, got '0'" in capsys.readouterr().err
    assert cli.main(["toy", "--n", "500", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "arraycurv: error: n: expected at most 100 terms, got 500\n"


def test_all_includes_a_registered_experiment(toy, tmp_path, monkeypatch):
    done = []
    for name in registry._BUILTIN:
        monkeypatch.setitem(registry._REGISTRY, name, dataclasses.replace(
            get_experiment(name), run_one=lambda cfg, name=name, **kw: done.append(name) or {},
            report=lambda records, out, **kw: {}))
    assert cli.main(["all", "--out", str(tmp_path), "--quiet", "--seed", "2"]) == 0
    assert list(dict.fromkeys(done)) == list(registry._BUILTIN)  # each with its default seeds
    assert [done.count(n) for n in registry._BUILTIN] == [get_experiment(n).default_seeds for n in registry._BUILTIN]
    assert read_json(tmp_path / "toy" / "summary.json")["config"]["seed"] == 2


def test_a_config_field_may_not_shadow_a_run_option():
    @dataclasses.dataclass(frozen=True)
    class Shadow(ExperimentConfig):
        out: str = config_field("x", "shadows --out")

    parser = argparse.ArgumentParser()
    with pytest.raises(ValueError, match="config field 'out': expected a name other than"):
        cli.add_config_options(parser, Shadow)


# ------------------------------------------------------------ run_one and report
def _without_timing(record):
    return {k: v for k, v in jsonable(record).items() if k != "timing"}


@pytest.mark.parametrize("name, config", [("teacher-student", TINY_TS), ("relu-digits", TINY_DIGITS)])
def test_run_one_is_pure_and_reproducible(name, config, tmp_path, monkeypatch):
    """No file is written (not even via arraycurv.results) and the same config gives the
    same record; the record is JSON data after jsonable."""
    import arraycurv.results

    monkeypatch.chdir(tmp_path)

    def no_writes(*args, **kwargs):
        raise AssertionError("run_one wrote a file")

    monkeypatch.setattr(arraycurv.results, "atomic_write", no_writes)
    exp = get_experiment(name)
    a = exp.run_one(config)
    b = exp.run_one(config)
    assert list(tmp_path.iterdir()) == []
    assert _without_timing(a) == _without_timing(b)
    json.dumps(jsonable(a), allow_nan=False)
    assert config_from_dict(exp.config_type, a["config"]) == config
    other = exp.run_one(dataclasses.replace(config, seed=1))
    assert _without_timing(other) != _without_timing(a)


def test_run_one_checkpoints_after_every_rule():
    seen = []
    record = teacher_student.run_one(TINY_TS, checkpoint=lambda r: seen.append(sorted(r["rules"])))
    assert seen == [["sgd"], ["ngd", "sgd"], ["ngd", "qngd_q3", "sgd"]]
    assert sorted(record["histories"]) == ["ngd", "qngd_q3", "sgd"]


def test_run_is_run_one_then_report(tmp_path):
    record = teacher_student.run_one(TINY_TS)
    s1 = teacher_student.report([record], tmp_path / "a", progress=False, plots=False)
    s2 = teacher_student.run(TINY_TS, tmp_path / "b", progress=False, plots=False)
    s3 = run_experiment("teacher-student", TINY_TS, tmp_path / "c", progress=False, plots=False)
    for s in (s2, s3):
        assert {k: v for k, v in s.items() if k != "timing"} == {k: v for k, v in s1.items() if k != "timing"}
    h1, h2 = read_npz(tmp_path / "a" / "history.npz"), read_npz(tmp_path / "b" / "history.npz")
    assert sorted(h1) == sorted(h2)
    for k in h1:
        np.testing.assert_array_equal(h1[k], h2[k])
    assert "histories" not in read_json(tmp_path / "a" / "summary.json")
    with pytest.raises(TypeError, match="config: expected a TeacherStudentConfig, got DigitsConfig"):
        teacher_student.run(TINY_DIGITS, None)


def test_report_writes_atomically(tmp_path, monkeypatch):
    """A report that fails while writing leaves the previous files intact and no
    temporary files behind."""
    record = teacher_student.run_one(TINY_TS)
    teacher_student.report([record], tmp_path, progress=False, plots=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(before) == ["history.npz", "summary.json"]
    changed = dict(record, rules={}, histories={})

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        teacher_student.report([changed], tmp_path, progress=False, plots=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_report_of_several_records_uses_numbered_folders(tmp_path):
    records = [toy_run_one(ToyConfig(seed=s, n=3)) for s in (0, 1)]
    s = toy_report(records, tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1", "summary.json"]
    assert [r["config"]["seed"] for r in s["records"]] == [0, 1]
    assert read_json(tmp_path / "summary.json")["records"][1]["config"]["seed"] == 1
    assert read_json(tmp_path / "1" / "summary.json")["total"] == 1.5
    with pytest.raises(ValueError, match="records: expected at least one record"):
        toy_report([], tmp_path)


def test_theory_accepts_its_earlier_call_form(tmp_path, monkeypatch):
    """``run(out_dir, dtype=..., seed=...)`` still works (examples and older scripts)."""
    calls = []
    monkeypatch.setattr(theory, "run_experiment", lambda exp, cfg, out, **kw: calls.append((cfg, out)) or {})
    theory.run(str(tmp_path), dtype="float32", seed=3, progress=False)
    theory.run(theory.TheoryConfig(), tmp_path)
    assert calls == [(theory.TheoryConfig(dtype="float32", seed=3), str(tmp_path)), (theory.TheoryConfig(), tmp_path)]


def test_bind_namespace_names_the_backend_of_xp(xp):
    cfg, got = registry.bind_namespace(TINY_TS, xp)
    assert got is xp
    from arraycurv import backend

    assert cfg.backend == backend.namespace_name(xp) and dataclasses.replace(cfg, backend="numpy") == TINY_TS
    cfg, got = registry.bind_namespace(TINY_TS)
    assert cfg is TINY_TS and backend.namespace_name(got) == "numpy"


# ------------------------------------------------------------------ rule registry
def test_rule_names_come_from_the_rule_registry():
    """Any registered rule of fixed q runs by name (here the block-diagonal q = 3 rule,
    which no experiment table lists), calibrated by its registry q (Huh eq 17)."""
    from arraycurv.rules import registry as rules

    cfg = dataclasses.replace(TINY_TS, rules=("qngd_d_q3",), q=(), depth=3)
    assert teacher_student.rule_q("qngd_d_q3") == rules.rule_q("qngd_d_q3") == 3.0
    summary = teacher_student.run(cfg, None, progress=False)
    assert summary["rules"]["qngd_d_q3"]["lr"] == pytest.approx(cfg.eta_bar / 3 ** (2 / 3), rel=1e-14)
    assert rules.rule_label("qngd_d_q3") in teacher_student.format_summary(summary)
    digits = dataclasses.replace(TINY_DIGITS, rules=("qngd_d_q3",), lr=(("qngd_d_q3", 0.05),))
    run = relu_digits.run_one(digits)["runs"]["qngd_d_q3@0.01"]
    assert run["damping"] == 0.0 and 0.0 <= run["final_test_accuracy"] <= 1.0
    with pytest.raises(UsageError, match="rules: expected names among"):
        relu_digits.DigitsConfig(rules=("sqrt_ngd",))  # full-curvature rules have no K-FAC form here
