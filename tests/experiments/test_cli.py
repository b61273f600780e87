"""The command line: help lists every option, the default experiment, options reach the
run's config, usage errors (bad option, unavailable backend) exit with status 2 and one
line on stderr."""

import importlib
import subprocess
import sys

import pytest

from arraycurv import cli
from arraycurv.results import read_json

TS_OPTIONS = ["--out", "--seed", "--dtype", "--backend", "--quiet", "--no-plots", "--threads", "--rules", "--q",
              "--depth", "--width",
              "--rank", "--steps", "--lr", "--lr-rule", "--noise", "--init-scale", "--damping", "--clip",
              "--record-every", "--tol", "--num-test", "--seeds", "--teacher-sv", "--steps-rule", "--damping-d",
              "--step-check"]
DIGITS_OPTIONS = ["--out", "--seed", "--dtype", "--backend", "--quiet", "--no-plots", "--rules", "--gains", "--sizes",
                  "--steps",
                  "--batch-size", "--lr-rule", "--record-every"]


def _help(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_lists_experiments(capsys):
    out = _help(capsys, ["--help"])
    for name in ("teacher-student", "theory", "relu-digits", "all", "sweep"):
        assert name in out
    assert "Without an experiment name, 'teacher-student' runs" in out


@pytest.mark.parametrize("experiment, options", [("teacher-student", TS_OPTIONS), ("relu-digits", DIGITS_OPTIONS),
                                                 ("theory", TS_OPTIONS[:7]), ("all", TS_OPTIONS[:7])])
def test_experiment_help_lists_and_explains_every_option(capsys, experiment, options):
    out = _help(capsys, [experiment, "--help"])
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "experiment").choices[experiment]
    for opt in options:
        assert opt in out, opt
    for action in sub._actions:  # every option has a help text
        assert action.help, action.option_strings


def test_python_dash_m_help():
    res = subprocess.run([sys.executable, "-m", "arraycurv", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    assert "teacher-student" in res.stdout


def test_default_experiment_is_teacher_student():
    assert cli._normalize_argv([]) == ["teacher-student"]
    assert cli._normalize_argv(["--steps", "5"]) == ["teacher-student", "--steps", "5"]
    assert cli._normalize_argv(["theory", "--quiet"]) == ["theory", "--quiet"]
    args = cli.build_parser().parse_args(cli._normalize_argv(["--steps", "5"]))
    assert args.experiment == "teacher-student" and args.steps == 5


def test_options_reach_the_config(tmp_path, capsys):
    out = tmp_path / "ts"
    rc = cli.main(["--steps", "3", "--rules", "sgd,sqrt_ngd", "--q", "3", "--width", "4", "--rank", "1",
                   "--depth", "2", "--lr", "0.1", "--lr-rule", "sgd=0.02", "--noise", "0.2", "--num-test", "10",
                   "--seed", "3", "--seeds", "1", "--no-plots", "--out", str(out)])
    assert rc == 0
    captured = capsys.readouterr()
    assert "min test" in captured.out  # the summary table
    assert "step" in captured.err  # progress on stderr
    s = read_json(out / "summary.json")
    c = s["config"]
    assert (c["steps"], c["rules"], c["q"], c["width"], c["rank"], c["depth"], c["seed"]) == (
        3, ["sgd", "sqrt_ngd"], [3.0], 4, 1, 2, 3)
    assert set(s["rules"]) == {"sgd", "sqrt_ngd", "qngd_q3"}
    assert s["rules"]["sgd"]["lr"] == 0.02
    assert s["rules"]["sqrt_ngd"]["lr"] == pytest.approx(0.1 / 2**0.5)
    assert sorted(p.name for p in out.iterdir()) == ["history.npz", "summary.json"]  # --no-plots


def test_quiet_prints_nothing(tmp_path, capsys):
    rc = cli.main(["teacher-student", "--steps", "2", "--rules", "sgd", "--width", "3", "--rank", "1", "--depth", "2",
                   "--num-test", "5", "--seeds", "1", "--quiet", "--no-plots", "--out", str(tmp_path)])
    assert rc == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.npz", "summary.json"]


def _cupy_usable():
    try:
        mod = importlib.import_module("cupy")
        return mod.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@pytest.mark.skipif(_cupy_usable(), reason="CuPy with a GPU is available here")
def test_unavailable_backend_exits_2_with_one_line(capsys, tmp_path):
    rc = cli.main(["--backend", "cupy", "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("arraycurv: error: backend: 'cupy' is not available")
    res = subprocess.run([sys.executable, "-m", "arraycurv", "theory", "--backend", "cupy", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_bad_options_exit_2(capsys, tmp_path):
    for argv in (["--steps", "0"], ["--dtype", "float16"], ["--backend", "jax"], ["--lr-rule", "sgd"],
                 ["relu-digits", "--gains", "a,b"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2, argv
    capsys.readouterr()
    # settings rejected by the experiment (not by argparse) are usage errors too
    rc = cli.main(["--rank", "40", "--out", str(tmp_path)])
    assert rc == 2
    assert capsys.readouterr().err.startswith("arraycurv: error: rank: expected 1 <= rank <= width")


def test_out_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    rc = cli.main(["theory", "--out", str(f), "--quiet"])
    assert rc == 2
    assert "out: expected a folder" in capsys.readouterr().err


def test_entry_point_declared():
    from pathlib import Path

    import tomllib

    meta = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["arraycurv"] == "arraycurv.cli:main"


def test_all_runs_every_experiment_into_its_folder(tmp_path, monkeypatch):
    """``all`` runs every registered experiment (run_one then report) with its default
    config and the common options, each into its own folder."""
    import dataclasses

    from arraycurv.experiments import EXPERIMENTS, registry

    calls = []
    short = {"theory": "theory", "teacher-student": "ts", "relu-digits": "digits"}
    for name, exp in list(EXPERIMENTS.items()):
        def run_one(cfg, *, name=name, **kw):
            calls.append((short.get(name, name), cfg.dtype, cfg.seed, cfg == dataclasses.replace(
                EXPERIMENTS[name].config_type(), dtype=cfg.dtype, seed=cfg.seed)))
            return {"config": cfg}

        def report(records, out, *, name=name, **kw):
            calls.append((short.get(name, name), out, len(records)))
            return {}

        monkeypatch.setitem(registry._REGISTRY, name, dataclasses.replace(exp, run_one=run_one, report=report))
    assert cli.main(["all", "--out", str(tmp_path), "--seed", "7", "--dtype", "float32", "--quiet"]) == 0
    expected = []  # each experiment runs its default seeds (seed 7, 8, ...), then reports them
    for name, exp in EXPERIMENTS.items():
        n = exp.default_seeds
        expected += [(short.get(name, name), "float32", 7 + i, True) for i in range(n)]
        expected.append((short.get(name, name), str(tmp_path / name), n))
    assert calls == expected
    assert EXPERIMENTS["teacher-student"].default_seeds == 5


@pytest.mark.parametrize("name", ["torch", "array_api_strict"])
def test_cli_runs_on_other_backends(tmp_path, name, capsys):
    pytest.importorskip(name)
    rc = cli.main(["--backend", name, "--steps", "3", "--width", "4", "--rank", "1", "--depth", "2",
                   "--num-test", "5", "--seeds", "1", "--quiet", "--no-plots", "--out", str(tmp_path)])
    assert rc == 0
    s = read_json(tmp_path / "summary.json")
    assert s["backend"] == name and set(s["rules"]) == {"sgd", "ngd", "sqrt_ngd", "ngd_d", "sqrt_ngd_d"}
