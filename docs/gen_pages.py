"""Generate the per-solver pages, the benchmark page and the API reference at build time (mkdocs-gen-files).

Everything listed here comes from the live package: a solver registered later, or a new module under
``sdekit/``, appears in the docs on the next build without editing this script.
"""

from __future__ import annotations

import inspect
import pkgutil
import sys
from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "docs"))

import griffe  # noqa: E402
import sphinx_roles  # noqa: E402

import sdekit  # noqa: E402
from sdekit.solvers import base  # noqa: E402

_griffe = griffe.GriffeLoader(search_paths=[str(ROOT)])
_griffe.load("sdekit")


def doc(obj: object) -> str:
    """``inspect.getdoc(obj)`` with its Sphinx roles as cross-references (as the API reference shows them)."""
    path = obj.__name__ if inspect.ismodule(obj) else f"{obj.__module__}.{obj.__qualname__}"
    return sphinx_roles.convert_docstring(_griffe.modules_collection[path], _griffe.modules_collection,
                                          text=inspect.getdoc(obj) or "")


# ---------------------------------------------------------------- one page per solver
infos = sdekit.solvers.available()
nfe_text = {s.name: "varies" if s.nfe_per_step is None else str(s.nfe_per_step) for s in infos}
index = ["# Solvers", "",
         "Generated from `sdekit.solvers.available()` when the docs are built. Order is the strong order for SDE",
         "solvers (additive noise) and the classical order for ODE solvers; NFE per step excludes the final",
         "denoising step.", "",
         "| solver | kind | order | weak order | NFE / step | stochastic | adaptive | summary |",
         "|---|---|---|---|---|---|---|---|"]
for s in infos:
    cls = base._REGISTRY[s.name]
    index.append(f"| [`{s.name}`]({s.name}.md) | {s.kind} | {s.order:g} | {s.weak_order:g} | {nfe_text[s.name]} | "
                 f"{'yes' if s.stochastic else 'no'} | {'yes' if s.adaptive else 'no'} | {s.summary} |")
    page = [f"# `{s.name}`", "",
            "| property | value |", "|---|---|",
            f"| kind | {s.kind} |", f"| order | {s.order:g} |", f"| weak order | {s.weak_order:g} |",
            f"| NFE per step | {nfe_text[s.name]} |", f"| stochastic | {'yes' if s.stochastic else 'no'} |",
            f"| adaptive | {'yes' if s.adaptive else 'no'} |",
            f"| reads the SDE's alpha, sigma | {'yes' if getattr(cls, 'needs_sde', False) else 'no'} |",
            f"| default schedule | `{getattr(cls, 'default_schedule', '')}` |",
            f"| default steps | {getattr(cls, 'default_steps', '')} |", "",
            "```python", (f'x = sdekit.sample(score_fn, sde, "pc", corrector="{s.name}", shape=shape, nfe=100)'
                          f'  # a corrector runs inside the predictor-corrector solver' if s.kind == "corrector" else
                          f'x = sdekit.sample(score_fn, sde, "{s.name}", shape=shape, nfe=100)'), "```", "",
            "## Method, order and reference", "",
            "(The docstrings of the solver's module and class; API: "
            f"[`{cls.__module__}`](../reference/{cls.__module__}.md).)", "",
            doc(sys.modules[cls.__module__]), "", doc(cls), ""]
    with mkdocs_gen_files.open(f"solvers/{s.name}.md", "w") as f:
        f.write("\n".join(page))
with mkdocs_gen_files.open("solvers/index.md", "w") as f:
    f.write("\n".join(index) + "\n")

# ---------------------------------------------------------------- benchmark page (results as committed)
res = ROOT / "benchmarks" / "results"
bench = ["# Benchmarks", "",
         "Results committed under `benchmarks/results/`, included here when the docs are built.", ""]
for md in sorted(res.glob("*.md")) if res.exists() else []:
    text = md.read_text()
    text = "\n".join(("##" + line[1:]) if line.startswith("# ") else line for line in text.splitlines())
    bench += [f"<!-- {md.name} -->", text, ""]
    png = md.with_suffix(".png")
    if png.exists():
        with mkdocs_gen_files.open(f"img/{png.name}", "wb") as f:
            f.write(png.read_bytes())
        bench += [f"![{png.stem}](img/{png.name})", ""]
if len(bench) == 4:
    bench.append("No results are committed yet: run `python benchmarks/nfe_vs_fid.py`.")
with mkdocs_gen_files.open("benchmarks.md", "w") as f:
    f.write("\n".join(bench) + "\n")

# ---------------------------------------------------------------- pages another change may not have landed yet
for name, title, module in (("likelihood.md", "Likelihood", "sdekit.likelihood"),
                            ("guidance.md", "Guidance and inpainting", "sdekit.guidance")):
    if not (ROOT / "docs" / name).exists():
        have = module.rsplit(".", 1)[1] in {m.name for m in pkgutil.iter_modules(sdekit.__path__)}
        with mkdocs_gen_files.open(name, "w") as f:
            f.write(f"# {title}\n\n" + (f"::: {module}\n" if have else
                    f"!!! note \"Planned\"\n    `{module}` is not part of this build yet.\n"))

# ---------------------------------------------------------------- API reference, one page per module
mods = ["sdekit"]
for m in pkgutil.walk_packages(sdekit.__path__, prefix="sdekit."):
    if not m.name.rsplit(".", 1)[-1].startswith("_"):
        mods.append(m.name)
ref = ["# API reference", "", "Generated from the docstrings of every public module.", ""]
for name in mods:
    path = f"reference/{name}.md"
    ref.append(f"- [`{name}`]({name}.md)")
    with mkdocs_gen_files.open(path, "w") as f:
        f.write(f"# `{name}`\n\n::: {name}\n")
        if name == "sdekit":
            f.write("    options:\n      members: false\n")
with mkdocs_gen_files.open("reference/index.md", "w") as f:
    f.write("\n".join(ref) + "\n")

