"""The docs build renders Sphinx roles as cross-references and loads its math renderer from the site
itself, not a CDN (issue 14). Fast: unit tests of docs/sphinx_roles.py and a read of mkdocs.yml/docs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
griffe = pytest.importorskip("griffe")


def _roles():
    spec = importlib.util.spec_from_file_location("sphinx_roles", ROOT / "docs" / "sphinx_roles.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _link(path, title):
    return f'<autoref identifier="{path}" optional><code>{title}</code></autoref>'


def test_convert_forms():
    R = _roles()
    known = {"sample": "sdekit.sampling.sample", "sdekit.noise.BrownianNoise": "sdekit.noise.BrownianNoise",
             "sdekit.kernels": "sdekit.kernels", "Solver.step": "sdekit.solvers.base.Solver.step"}
    conv = lambda text: R.convert(text, known.get)  # noqa: E731
    assert conv("see :func:`sample`.") == f"see {_link('sdekit.sampling.sample', 'sample')}."
    assert conv(":class:`~sdekit.noise.BrownianNoise`") == _link("sdekit.noise.BrownianNoise", "BrownianNoise")
    assert conv(":py:mod:`sdekit.kernels`") == _link("sdekit.kernels", "sdekit.kernels")
    assert conv(":meth:`the step <Solver.step>`") == _link("sdekit.solvers.base.Solver.step", "the step")
    assert conv(":func:`sample()`") == _link("sdekit.sampling.sample", "sample()")
    assert conv(":func:`!sample`") == "`sample`"  # Sphinx's "do not link"
    assert conv(":mod:`torch`, :data:`nope`") == "`torch`, `nope`"  # not found: plain code, no raw role
    # code is left alone: a role shown as an example stays as written
    assert conv("``:func:`sample```") == "``:func:`sample```"
    assert conv("```\n:func:`sample`\n```") == "```\n:func:`sample`\n```"


def test_every_sdekit_docstring_is_converted_and_resolved():
    R = _roles()
    loader = griffe.GriffeLoader(extensions=griffe.load_extensions(R.SphinxRoles), search_paths=[str(ROOT)])
    pkg = loader.load("sdekit")
    left, links = [], {}
    for obj in R._walk(pkg):
        if obj.docstring is None:
            continue
        text = R._CODE.sub("", obj.docstring.value)
        left += [f"{obj.path}: {m.group(0)}" for m in R.ROLE.finditer(text)]
        for m in re.finditer(r'<autoref identifier="([^"]+)" optional><code>([^<]*)</code>', text):
            links.setdefault(obj.path, []).append(m.group(1))
    assert not left, left[:10]
    assert len(links) > 30
    # resolved the way Python would: imports of the module, members of the class, aliases to their targets
    assert "sdekit.stepping.FixedGrid" in links["sdekit.integrate"]  # :class:`~sdekit.stepping.FixedGrid`
    assert "sdekit.sampling.solve" in links["sdekit.integrate.Solution"]  # :func:`sdekit.solve`
    assert "sdekit.sde.SDE.alpha" in links["sdekit.sde.SDE"]  # :meth:`alpha`


def test_mkdocs_loads_the_roles_extension_and_no_cdn():
    yml = (ROOT / "mkdocs.yml").read_text()
    assert "docs/sphinx_roles.py:SphinxRoles" in yml
    urls = re.findall(r"https?://[^\s\"')]+", yml)
    assert all("github.com" in u for u in urls), urls  # repo_url only: no script or style from a CDN
    for path in (ROOT / "docs").rglob("*"):
        if path.suffix in {".md", ".js", ".css", ".html", ".py", ".yml"}:
            assert not re.search(r"cdn\.|jsdelivr|unpkg|cdnjs", path.read_text(errors="ignore")), path


def test_math_renderer_is_shipped_with_the_site():
    yaml = pytest.importorskip("yaml")
    yml = (ROOT / "mkdocs.yml").read_text()
    # mkdocs.yml has !!python tags in some setups; only the plain keys are read here
    cfg = yaml.load(yml, Loader=yaml.BaseLoader)
    assets = list(cfg.get("extra_javascript", [])) + list(cfg.get("extra_css", []))
    assert any("katex.min.js" in a for a in assets) and any("katex.min.css" in a for a in assets), assets
    for asset in assets:
        assert not re.match(r"https?://", asset), asset
        assert (ROOT / "docs" / asset).is_file(), asset
    css = (ROOT / "docs" / "vendor" / "katex" / "katex.min.css").read_text()
    woff2 = set(re.findall(r"url\((fonts/[^)]+\.woff2)\)", css))
    assert woff2 and all((ROOT / "docs" / "vendor" / "katex" / f).is_file() for f in woff2)
    assert cfg["theme"].get("font") == "false"  # no Google Fonts request either
