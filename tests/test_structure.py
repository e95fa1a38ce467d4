"""The shape of the code: the core never imports the image experiment, no module imports another's
private names, nothing points outside the repository, and every runtime import is declared."""

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ["toy", "toy.layers", "toy.mixtures", "toy.nets", "toy.prefix", "toy.guidance", "toy.diffusion", "toy.train",
        "toy.checkpoint", "toy.metrics", "toy.evaluation", "toy.mechanism", "toy.compare", "toy.plotting",
        "toy.claims", "toy.files", "toy.errors", "toy.settings", "toy.presets", "toy.plugins", "toy.cache"]


def test_core_imports_nothing_of_the_image_experiment():
    code = ("import sys; " + "; ".join(f"import {m}" for m in CORE) +
            "; print(sorted(m for m in sys.modules if m.startswith('toy.images')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def python_files():
    return sorted(p for d in ("toy", "bench") for p in (ROOT / d).rglob("*.py")) + [ROOT / "app.py"]


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(("toy", "bench")):
                bad += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_")]
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and isinstance(node.value, ast.Name) and node.value.id in {"toy", "nets", "train", "mixtures",
                                                                               "guidance", "metrics", "M", "E", "P"}:
                bad.append(f"{path.relative_to(ROOT)}: {node.value.id}.{node.attr}")
    assert not bad


def test_nothing_points_outside_the_repository():
    pattern = re.compile(r"DESIGN\.md|issue [0-9]|\.\./shared")
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in python_files() + sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits


def test_runtime_imports_are_declared():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=\[ ]", d)[0].lower().replace("-", "_") for d in declared}
    dist_of = {"sklearn": "scikit_learn", "PIL": "pillow", "yaml": "pyyaml"}
    optional = {"transformers", "playwright", "nbclient", "nbformat", "pytest", "torch"}   # extras, imported lazily
    stdlib = set(sys.stdlib_module_names)
    used = set()
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            used |= {m.split(".")[0] for m in mods}
    third = {m for m in used if m not in stdlib and m not in {"toy", "bench"} and m not in optional}
    missing = sorted(m for m in third if dist_of.get(m, m).lower().replace("-", "_") not in names)
    assert not missing, f"imported at run time but not in [project].dependencies: {missing}"


def _between(text: str, name: str) -> str:
    start = text.index(f"<!-- {name}:begin")
    return text[text.index("\n", start) + 1:text.index(f"<!-- {name}:end -->")].rstrip("\n")


def test_docs_tables_are_the_schemas_and_the_registrys():
    """README's method table and docs/cli.md's option table are generated from the registry and the
    settings schema: they cannot drift from the code."""
    from toy.__main__ import COMPARE_SETTINGS
    from toy.guidance import method_table
    from toy.settings import options_table
    root = Path(__file__).resolve().parents[1]
    assert _between((root / "README.md").read_text(), "methods") == method_table()
    assert _between((root / "docs" / "design.md").read_text(), "methods") == method_table()
    assert _between((root / "docs" / "cli.md").read_text(), "settings") == options_table(flagged=COMPARE_SETTINGS)


def test_the_ground_truth_stands_alone():
    """toy.mixtures (the closed forms) imports nothing of the network, training or guidance side."""
    code = ("import sys; import toy.mixtures; "
            "print(sorted(m for m in sys.modules if m.startswith('toy.') and m not in "
            "('toy.mixtures', 'toy.errors', 'toy.runtime')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_no_method_is_special_cased_outside_the_registry():
    """A method lives in its registry declaration only: no `method == "..."` test and no positional
    runtime array (`dyn[...]`) anywhere in the package or the app."""
    pattern = re.compile(r'method == "|dyn\[')
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in [*ROOT.glob("toy/**/*.py"), ROOT / "app.py"]
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_readme_quotes_the_bench_run():
    """README's and docs/performance.md's numbers are bench/results.json's, through one generated table."""
    import json

    from bench.__main__ import headline
    table = headline(json.loads((ROOT / "bench" / "results.json").read_text()))
    for doc in (ROOT / "README.md", ROOT / "docs" / "performance.md"):
        assert _between(doc.read_text(), "bench") == table, doc.name


def test_docs_narrate_no_history():
    """README and docs are a guide to the product as it is: no machines, runs or times of day."""
    pattern = re.compile(r"AMD|Intel machine|this session|earlier session|earlier runs?\b|at \d\d:\d\d|"
                         r"\bsession's\b|night", re.IGNORECASE)
    hits = [f"{p.relative_to(ROOT)}:{i}: {line[:80]}" for p in [ROOT / "README.md", *ROOT.glob("docs/*.md")]
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
