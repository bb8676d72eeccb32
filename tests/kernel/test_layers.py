"""The house has three floors and every import points down (ARCHITECTURE.md, STYLE.md "Layout").

- the kernel (``ragkit.types``, ``errors``, ``config``, ``registry``, ``protocols``, ``checks``,
  ``tokenizers``, ``loaders``, ``testing``, ``_deps``) imports nothing of ours above it;
- strategies (``ragkit.chunkers``, ``ragkit.retrieval``, ``ragkit.generation``) import the kernel
  and their own package, never another strategy package (an LLM chunker reaches a model through
  the registry and a kernel protocol, never through a backend module) and never an application;
- applications (pipeline, cli, ingest, evaluation, bench, serve, integrations) compose them.

The graph is read from the source with ``ast``, so imports inside functions count too. A new
module must be placed on a floor here; a new upward import fails with the line to look at.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# the import root and the folder each package lives in (pyproject's [tool.setuptools] package-dir)
PACKAGE_DIRS = {
    "ragkit": REPO / "ragkit",
    "ragkit.chunkers": REPO / "chunkers",
    "ragkit.retrieval": REPO / "retrieval",
    "ragkit.generation": REPO / "generation",
}

KERNEL = frozenset({
    "ragkit",  # the package facade; see FACADE_LAZY for what it may import on first use
    "ragkit._deps", "ragkit.checks", "ragkit.config", "ragkit.errors", "ragkit.loaders",
    "ragkit.protocols", "ragkit.registry", "ragkit.testing", "ragkit.tokenizers", "ragkit.types",
    "ragkit.concurrency",  # the lock every index takes
    "ragkit.view",  # the chunk view: chunkers return its Chunks list
    "ragkit.progress",  # how far a long component call has got (chunkers report, the CLI shows)
})
STRATEGIES = ("ragkit.chunkers", "ragkit.retrieval", "ragkit.generation")
APPLICATIONS = ("ragkit.pipeline", "ragkit.cli", "ragkit.cli_corpus", "ragkit.cli_generate",
                "ragkit.cli_support", "ragkit.ingest", "ragkit.evaluation",
                "ragkit.bench", "ragkit.serve", "ragkit.integrations",
                "ragkit.doclog", "ragkit.stress", "ragkit.store_repair")

# `ragkit.RAGPipeline` and `ragkit.load_documents` are resolved on first attribute access
# (PEP 562 __getattr__), so `import ragkit` stays light while the top-level names stay the same.
FACADE_LAZY = frozenset({"ragkit.pipeline", "ragkit.loaders"})

# Upward or sideways imports that exist today and cannot be removed yet, as
# (importer, imported): the reason each is here. The test fails when one disappears, so the list
# only shrinks: delete the entry together with the import.
ALLOWED: dict[tuple[str, str], str] = {}


def _module_name(path: Path, package: str, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


@cache
def modules() -> dict[str, Path]:
    """Every module of ours: dotted name -> file."""
    out: dict[str, Path] = {}
    for package, root in PACKAGE_DIRS.items():
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).parts
            if package == "ragkit" and rel[0] in {"chunkers", "retrieval", "generation"}:
                continue
            out[_module_name(path, package, root)] = path
    return out


def _target(name: str) -> str | None:
    """The module of ours that an imported dotted name lands in (``ragkit.registry`` for
    ``from ragkit import registry``), or None if it is not ours."""
    if name != "ragkit" and not name.startswith("ragkit."):
        return None
    known = modules()
    while name not in known:
        name = name.rpartition(".")[0]
    return name


@cache
def imports() -> list[tuple[str, str, int, bool]]:
    """(importer, imported module, line, at module level?) for every import of ours."""
    out = []
    for mod, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        top_level = {id(n) for n in tree.body}
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    module = ".".join([*base, node.module] if node.module else base)
                else:
                    module = node.module or ""
                names = [f"{module}.{a.name}" for a in node.names]
            for name in names:
                target = _target(name)
                if target is not None and target != mod:
                    out.append((mod, target, node.lineno, id(node) in top_level))
    return out


def floor(mod: str) -> str:
    if mod in KERNEL:
        return "kernel"
    for pkg in STRATEGIES:
        if mod == pkg or mod.startswith(pkg + "."):
            return pkg
    for app in APPLICATIONS:
        if mod == app or mod.startswith(app + "."):
            return "application"
    raise AssertionError(f"{mod} is on no floor: add it to KERNEL, STRATEGIES or APPLICATIONS in "
                         f"{Path(__file__).name} (and ARCHITECTURE.md)")


def may_import(importer: str, imported: str, top_level: bool) -> bool:
    low, high = floor(importer), floor(imported)
    if low == "application":
        return True
    if high == "kernel":
        return True
    if importer == "ragkit":
        return not top_level and imported in FACADE_LAZY
    return low == high  # a strategy may use its own package, not another one nor an application


def violations() -> dict[tuple[str, str], list[int]]:
    found: dict[tuple[str, str], list[int]] = {}
    for importer, imported, line, top_level in imports():
        if not may_import(importer, imported, top_level):
            found.setdefault((importer, imported), []).append(line)
    return found


def test_every_module_is_on_a_floor():
    for mod in modules():
        floor(mod)  # raises with the fix for a module nobody placed
    assert len(modules()) > 50  # the walk found the tree (not an empty folder)


def test_the_graph_sees_imports_inside_functions():
    lazy = [(a, b) for a, b, _, top in imports() if not top]
    assert ("ragkit", "ragkit.pipeline") in lazy  # the facade's __getattr__
    assert ("ragkit.config", "ragkit.registry") in {(a, b) for a, b, _, _ in imports()}


def test_no_import_runs_upwards():
    found = violations()
    new = {k: v for k, v in found.items() if k not in ALLOWED}
    assert not new, "imports that run upwards or sideways (importer -> imported: lines):\n" + "\n".join(
        f"  {a} -> {b}: {modules()[a].relative_to(REPO)} line {', '.join(map(str, v))}"
        for (a, b), v in sorted(new.items())
    )


def test_the_allow_list_only_shrinks():
    gone = sorted(set(ALLOWED) - set(violations()))
    assert not gone, f"these allowed imports are gone; delete them from ALLOWED: {gone}"


def test_the_rule_catches_an_upward_import():
    assert not may_import("ragkit.tokenizers", "ragkit.pipeline", True)
    assert not may_import("ragkit.chunkers.lumber", "ragkit.generation.transformers_backend", False)
    assert not may_import("ragkit.retrieval.cache", "ragkit.evaluation.chunking", False)
    assert not may_import("ragkit", "ragkit.pipeline", True)
    assert may_import("ragkit.chunkers.cluster", "ragkit.chunkers.semantic", True)
    assert may_import("ragkit.cli", "ragkit.retrieval.cache", False)


def test_import_ragkit_is_light():
    heavy = ("torch", "faiss", "chromadb", "vllm", "transformers", "sentence_transformers", "numpy")
    code = f"import sys, ragkit; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.slow
def test_an_install_puts_only_ragkit_in_site_packages(tmp_path):
    """A non-editable install of this tree puts one top-level import name, ``ragkit``, and the
    strategy folders land inside it."""
    src, target = tmp_path / "src", tmp_path / "site"
    src.mkdir()  # a copy, so the build leaves no build/ folder (nor reads a stale one) in the repo
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for folder in ("ragkit", "chunkers", "retrieval", "generation"):
        shutil.copytree(REPO / folder, src / folder, ignore=skip)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-compile", "--target", str(target), str(src)],
        check=True, capture_output=True, text=True,
    )
    top = sorted(p.name for p in target.iterdir()
                 if not p.name.endswith((".dist-info", ".egg-info")) and p.name != "bin")
    assert top == ["ragkit"]
    for sub in ("chunkers/base.py", "retrieval/memory_index.py", "generation/base.py",
                "registry.py", "protocols.py", "checks.py"):
        assert (target / "ragkit" / sub).is_file(), sub
