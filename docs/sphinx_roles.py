"""Render the Sphinx roles of sdekit's docstrings as cross-references in the mkdocs site.

The docstrings use Sphinx's ``:func:`sample```, ``:class:`~sdekit.noise.BrownianNoise```,
``:mod:`sdekit.kernels```, ``:meth:``, ``:attr:``, ``:data:``, ``:exc:``, ``:obj:`` and ``:const:``
roles (and their ``:py:`` forms); mkdocstrings does not know them and would print them as text.
:func:`convert` rewrites each role into an mkdocs-autorefs reference to the object's full path
(found the way Python would find the name from the docstring's object: its members, its module's
imports, its parents; then a unique public name anywhere in the package), shown as code. A role
whose target is not found (an outside library such as ``torch``, or a typo) becomes plain code.
The references are *optional* autorefs: one to an object that the reference pages do not render
(a private module, an undocumented attribute) shows as code with the full path as its tooltip
instead of breaking ``mkdocs build --strict``.

Two users: :class:`SphinxRoles`, a griffe extension that mkdocstrings loads (``extensions:`` in
``mkdocs.yml``), converts every docstring of the API reference, and ``docs/gen_pages.py`` calls
:func:`convert_docstring` for the module and class docstrings that it copies into the per-solver
pages. Sphinx's title forms are understood: ``~a.b.c`` shows ``c``, ``!a.b`` does not link, and
``title <a.b>`` shows ``title``.
"""

from __future__ import annotations

import html
import logging
import re
from typing import Callable, Iterator, Optional

import griffe

__all__ = ["ROLE", "convert", "convert_docstring", "SphinxRoles"]

_log = logging.getLogger("mkdocs.plugins.sdekit.sphinx_roles")

#: a Sphinx Python-domain role: ``:func:`x```, ``:py:class:`~a.B```, ``:meth:`title <a.B.m>```.
ROLE = re.compile(r":(?:py:)?(?P<role>func|class|mod|data|meth|attr|exc|obj|const):`(?P<body>[^`\n]+)`")
_CODE = re.compile(r"(```.*?```|``.+?``)", re.DOTALL)
_EXPLICIT = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$")

Resolver = Callable[[str], Optional[str]]


def _parse(body: str) -> tuple[str, str, bool]:
    """Split a role's body into (target, title, link?)."""
    body = body.strip()
    m = _EXPLICIT.match(body)
    if m and m["title"]:
        return m["target"].strip().lstrip("~"), m["title"], True
    link = not body.startswith("!")
    target = body.lstrip("!")
    short = target.startswith("~")
    target = target.lstrip("~")
    bare = target[:-2] if target.endswith("()") else target
    title = bare.rsplit(".", 1)[-1] + target[len(bare):] if short else target
    return bare.lstrip("."), title, link


def convert(text: str, resolve: Resolver) -> str:
    """Rewrite every Sphinx role in ``text`` (markdown) into an optional autorefs cross-reference.

    Args:
        text: a docstring (markdown).
        resolve: maps a role's target as written (``"sample"``, ``"sdekit.noise.BrownianNoise"``)
            to the object's full path, or ``None`` where there is no such object.

    Returns:
        ``text`` with each role replaced by ``<autoref identifier="full.path" optional><code>title</code></autoref>``,
        or by ``` `title` ``` where the target is not found or the role starts with ``!``.
    """

    def one(m: re.Match) -> str:
        target, title, link = _parse(m["body"])
        path = resolve(target) if link and target else None
        if path is None:
            if link:
                _log.debug("sphinx role target not found, shown as code: %s", m.group(0))
            return f"`{title}`"
        return f'<autoref identifier="{html.escape(path)}" optional><code>{html.escape(title)}</code></autoref>'

    parts = _CODE.split(text)  # odd items are code (fenced blocks, ``double-backtick`` spans): left alone
    return "".join(part if i % 2 else ROLE.sub(one, part) for i, part in enumerate(parts))


# ---------------------------------------------------------------- griffe: names resolved in the object tree

def _walk(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)  # type: ignore[arg-type]


def _find(collection: griffe.ModulesCollection, path: str) -> str | None:
    try:
        obj = collection[path]
        return obj.final_target.path if obj.is_alias else obj.path
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _short_names(pkg: griffe.Module) -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for obj in _walk(pkg):
        if not any(part.startswith("_") and not part.startswith("__") for part in obj.path.split(".")):
            index.setdefault(obj.name, []).append(obj.path)
    return index


def _resolver(obj: griffe.Object, collection: griffe.ModulesCollection, index: dict[str, list[str]]) -> Resolver:
    def resolve(target: str) -> str | None:
        head, _, rest = target.partition(".")
        candidates = [target]
        for scope in (obj, *(p for p in _parents(obj))):
            try:
                base = scope.resolve(head)
            except (griffe.NameResolutionError, KeyError, ValueError, griffe.AliasResolutionError):
                continue
            candidates.insert(0, f"{base}.{rest}" if rest else base)
            break
        if obj.is_class:  # methods and attributes of this class or a base class
            try:
                bases = [b.path for b in obj.mro()]  # type: ignore[attr-defined]
            except Exception:  # an unresolvable base (outside the package): its own members only
                bases = []
            candidates[1:1] = [f"{path}.{target}" for path in (obj.path, *bases)]
        for path in candidates:
            found = _find(collection, path)
            if found is not None:
                return found
        matches = index.get(target, []) if "." not in target else []
        return matches[0] if len(matches) == 1 else None

    return resolve


def _parents(obj: griffe.Object) -> Iterator[griffe.Object]:
    while obj.parent is not None:
        obj = obj.parent
        yield obj


def convert_docstring(obj: griffe.Object, collection: griffe.ModulesCollection,
                      index: dict[str, list[str]] | None = None, *, text: str | None = None) -> str:
    """The docstring of ``obj`` (or ``text``, read in ``obj``'s scope) with its roles converted."""
    text = (obj.docstring.value if obj.docstring is not None else "") if text is None else text
    pkg = collection[obj.path.split(".", 1)[0]]
    return convert(text, _resolver(obj, collection, index or _short_names(pkg)))


class SphinxRoles(griffe.Extension):
    """Griffe extension: convert the Sphinx roles of every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        index = _short_names(pkg)
        for obj in _walk(pkg):
            if obj.docstring is not None and ROLE.search(obj.docstring.value):
                obj.docstring.value = convert_docstring(obj, loader.modules_collection, index)
                obj.docstring.__dict__.pop("parsed", None)  # drop a cached parse of the old text
