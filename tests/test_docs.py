"""The docs keep up with the code: every public function is documented with its equation."""

import inspect
import pathlib
import re

import pytest

import arraycurv as ac

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def _public_callables():
    names = []
    for name in dir(ac):
        if name.startswith("_"):
            continue
        obj = getattr(ac, name)
        if inspect.ismodule(obj):
            continue
        if callable(obj) and getattr(obj, "__module__", "").startswith("arraycurv"):
            names.append(name)
    return sorted(names)


def test_every_public_function_is_in_the_equation_map():
    text = (DOCS / "equations.md").read_text()
    missing = [n for n in _public_callables() if not re.search(rf"\b{re.escape(n)}\b", text)]
    assert not missing, f"docs/equations.md does not mention: {missing}"


def test_every_public_function_has_a_docstring():
    missing = [n for n in _public_callables() if not inspect.getdoc(getattr(ac, n))]
    assert not missing, f"no docstring: {missing}"


def test_docs_index_links_exist():
    index = (DOCS / "index.md").read_text()
    for link in re.findall(r"\(([\w_]+\.md)\)", index):
        assert (DOCS / link).exists(), f"docs/index.md links to missing page {link}"


def test_equation_map_is_current():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_equations", DOCS / "make_equations.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (DOCS / "equations.md").read_text() == mod.equation_map_text(), (
        "docs/equations.md is stale: run python docs/make_equations.py"
    )


# ------------------------------------------------------------------- runnable examples
_PAGES = [DOCS.parent / "README.md"] + sorted(DOCS.glob("*.md"))
_WITH_CODE = [p for p in _PAGES if "```python" in p.read_text()]


@pytest.mark.parametrize("page", _WITH_CODE, ids=[p.name for p in _WITH_CODE])
def test_documented_examples_run(page, tmp_path, monkeypatch):
    """Every ```python block of a page runs (the blocks of one page share a namespace, in
    order, like a reader pasting them into one session); files they write go to tmp."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__docs__"}
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S)):
        exec(compile(block, f"{page.name}[block {i}]", "exec"), namespace)
