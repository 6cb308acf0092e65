"""The command line refuses bad arguments before any work (issue 14), the solver listing tells the truth,
and the packaging metadata carries no deprecated form. All in-process and fast."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import sdekit
from sdekit import cli, demo
from sdekit.solvers import available, resolve

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the demo starts sampling."""

    def boom(*args, **kwargs):
        raise AssertionError("the demo started work before refusing the arguments")

    monkeypatch.setattr(demo, "sweep", boom)
    monkeypatch.setattr(demo, "problems", boom)


def _refused(capsys, argv, *needles):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, no traceback, no usage block
    assert lines[0].startswith("sdekit demo: error: argument "), err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


@pytest.mark.parametrize("argv, needles", [
    (["--samples", "0"], ["--samples", ">= 2", "got 0"]),
    (["--samples", "1"], ["--samples", ">= 2"]),
    (["--samples", "many"], ["--samples", "'many'"]),
    (["--solvers", "unipx"], ["--solvers", "unknown solver 'unipx'", "unipc"]),
    (["--solvers", "langevin"], ["--solvers", "corrector", 'solver="pc", corrector="langevin"']),
    (["--solvers", "pc", "pc"], ["--solvers", "repeat"]),
    (["--nfe", "0"], ["--nfe", ">= 1"]),
    (["--nfe", "-3"], ["--nfe", ">= 1"]),
    (["--nfe", "10", "10"], ["--nfe", "repeat"]),
    (["--nfe", "2", "--solvers", "ode_rk4"], ["--nfe", "ode_rk4", "5 score evaluations"]),
])
def test_demo_refuses_bad_arguments_before_work(capsys, no_work, tmp_path, argv, needles):
    _refused(capsys, ["demo", "--out", str(tmp_path / "o"), *argv], *needles)


def test_demo_refuses_an_out_that_is_a_file(capsys, no_work, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    _refused(capsys, ["demo", "--out", str(f)], "--out", "not a folder")
    _refused(capsys, ["demo", "--out", str(f / "sub")], "--out", "cannot write")


def test_demo_library_entry_point_checks_too(no_work, tmp_path):
    with pytest.raises(ValueError, match="samples"):
        demo.main(str(tmp_path), (10,), 0, None)
    with pytest.raises(ValueError, match="corrector"):
        demo.main(str(tmp_path), (10,), 100, ["langevin"])


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"sdekit {sdekit.__version__}"


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for default in ("(default: sdekit- demo)", "(default: [10, 30, 100])", "(default: 5000)",
                    "(default: every solver)"):
        assert default.replace("- ", "-") in out.replace("- ", "-"), out
    assert "(default: None)" not in out


def _fake_rows():
    return [demo.Row("gmm2d-vp", "ode_euler", n, n, n - 1, 1.0 / n, 0.1, 0.05, 0.0, 0.01) for n in (10, 30)]


def test_demo_says_when_the_plot_is_skipped(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setattr(demo, "sweep", lambda *a, **k: _fake_rows())
    assert cli.main(["demo", "--out", str(tmp_path), "--samples", "10", "--nfe", "10", "--solvers",
                     "ode_euler"]) == 0
    err = capsys.readouterr().err
    assert "matplotlib is not installed" in err and 'pip install ".[bench]"' in err, err
    assert not (tmp_path / "demo.png").exists() and (tmp_path / "demo.md").exists()


def test_floor_is_a_band_with_its_spread():
    prob = demo.problems((2,), ("vp",), samples=50)[0]
    mean, sd = prob.floor_band()
    assert sd > 0 and mean > 0
    assert mean == pytest.approx(prob.floor(demo.FLOOR_DRAWS))
    table = demo.format_table(_fake_rows())
    assert "0.05 ± 0.01" in table and "below the floor's mean" in table


def test_demo_plot_band_and_legend_outside(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    captured = {}
    orig = plt.Figure.savefig

    def spy(fig, *a, **k):
        captured["fig"] = fig
        return orig(fig, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plt.Figure, "savefig", spy)
        mp.setattr(plt, "close", lambda *a: None)
        assert demo.plot(_fake_rows(), tmp_path / "p.png") is not None
    fig = captured["fig"]
    ax = fig.axes[0]
    assert ax.get_legend() is None and len(fig.legends) == 1  # a figure legend, not one on the data
    fig.canvas.draw()
    leg = fig.legends[0].get_window_extent()
    assert leg.x0 >= ax.get_window_extent().x1 - 1  # right of the axes
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("mean ± s.d." in t for t in labels)
    plt.close(fig)


# ---------------------------------------------------------------- the solver listing (sdekit/solvers/base.py)

def test_corrector_as_solver_says_how_to_use_it():
    with pytest.raises(ValueError, match=r'corrector.*solver="pc", corrector="langevin"'):
        resolve("langevin")
    with pytest.raises(ValueError, match="unknown solver 'nope'"):
        resolve("nope")


def test_available_reports_the_nfe_a_step_spends():
    info = {i.name: i for i in available()}
    assert info["pc"].nfe_per_step == 2  # reverse_diffusion + one langevin step
    assert info["torchdiffeq"].nfe_per_step is None  # torchdiffeq picks its own steps
    assert "nfe/step=var" in str(info["torchdiffeq"])
    assert info["ode_rk4"].nfe_per_step == 4 and info["srk"].nfe_per_step == resolve("srk").nfe_per_step
    for i in info.values():
        if i.nfe_per_step is not None and i.kind != "corrector" and not i.adaptive:
            assert resolve(i.name).nfe_for(3) == 3 * i.nfe_per_step, i.name


# ---------------------------------------------------------------- packaging (pyproject.toml)

def test_pyproject_license_is_an_spdx_string_with_urls_and_classifiers():
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = meta["project"]
    assert project["license"] == "MIT"  # the table form is deprecated by setuptools
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # refused with an SPDX string
    assert any(c.startswith("Programming Language :: Python :: 3") for c in project["classifiers"])
    assert "Source" in project["urls"]
    req = [r for r in meta["build-system"]["requires"] if r.startswith("setuptools")]
    assert req and int(req[0].split(">=")[1].split(".")[0]) >= 77  # SPDX strings need setuptools >= 77
