"""The docs keep up with the code: every public callable is documented with its equation
in the module-qualified equation map, the generated files are current, the layout table
of docs/design.md lists every module, and every ```python block of the docs runs."""

import importlib.util
import inspect
import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
ROOT = DOCS.parent


def _make_equations():
    spec = importlib.util.spec_from_file_location("make_equations", DOCS / "make_equations.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ME = _make_equations()


def test_equation_map_is_current():
    assert (DOCS / "equations.md").read_text() == ME.equation_map_text(), (
        "docs/equations.md is stale: run python docs/make_equations.py"
    )


def test_equation_map_keys_on_module_qualified_names_that_resolve():
    text = (DOCS / "equations.md").read_text()
    names = ME.mapped_names(text)
    assert len(names) > 100
    bad = [n for n in names if not n.startswith("arraycurv.")]
    assert not bad, f"docs/equations.md: names not module-qualified (write arraycurv.<subpackage>.<name>): {bad}"
    stale = []
    for n in names:
        try:
            ME.resolve(n)
        except (AttributeError, ImportError):
            stale.append(n)
    assert not stale, f"docs/equations.md names what does not exist: {stale}"


def test_every_public_callable_of_every_subpackage_is_mapped():
    problems = [p for p in ME.problems() if p.startswith("not mapped")]
    assert not problems, "add these to the Equation map of their docs page:\n" + "\n".join(problems)


def test_the_canonical_names_are_subpackage_qualified():
    names = ME.public_callables()
    assert "arraycurv.linalg.psd_power" in names
    assert "arraycurv.dynamics.theory.p_exponent" in names
    assert "arraycurv.curvature.ggn_vp" in names and "arraycurv.ggn_vp" not in names
    assert ME.resolve("arraycurv.dynamics.theory.p_exponent") is names["arraycurv.dynamics.theory.p_exponent"]
    with pytest.raises((AttributeError, ImportError)):
        ME.resolve("arraycurv.linalg.no_such_function")


def test_every_public_callable_has_a_docstring():
    missing = [q for q, obj in ME.public_callables().items() if not inspect.getdoc(obj)]
    assert not missing, f"no docstring: {missing}"


def test_docs_index_links_exist():
    index = (DOCS / "index.md").read_text()
    for link in re.findall(r"\(([\w_]+\.md)\)", index):
        assert (DOCS / link).exists(), f"docs/index.md links to missing page {link}"


def test_design_layout_lists_every_module_once():
    """docs/design.md's layout table has one row per module of the package."""
    text = (DOCS / "design.md").read_text()
    table = text[text.index("## Layout"):]
    table = table[: table.index("\n## ", 1)] if "\n## " in table[1:] else table
    listed = re.findall(r"^\| `(arraycurv/[\w/]+\.py)` \|", table, flags=re.M)
    modules = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "arraycurv").rglob("*.py"))
    assert sorted(set(listed)) == sorted(listed), "docs/design.md lists a module twice"
    assert sorted(listed) == modules, (
        f"docs/design.md layout: missing {sorted(set(modules) - set(listed))}, "
        f"stale {sorted(set(listed) - set(modules))}"
    )


# ------------------------------------------------------------------- runnable examples
_PAGES = [ROOT / "README.md"] + sorted(DOCS.glob("*.md"))
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
