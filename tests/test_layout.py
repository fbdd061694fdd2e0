"""The architecture's rules, checked on the source: small modules, and layers that import only downward."""

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = [REPO / "policy_sampler", REPO / "envs" / "policy_sampler_envs"]
MAX_LINES = 600


def modules():
    return sorted(p for root in PACKAGES for p in root.rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_over_600_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


@pytest.mark.parametrize("path", sorted((REPO / "policy_sampler" / "preference").rglob("*.py")),
                         ids=lambda p: p.name)
def test_preference_knows_no_task(path):
    """Preference learning gets each task's features from its description, handed in by the caller."""
    bad = {m for m in imported(path) if m.split(".")[0] == "policy_sampler_envs" or m.startswith("policy_sampler.data")}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted((REPO / "policy_sampler" / "study").rglob("*.py")), ids=lambda p: p.name)
def test_study_does_not_reach_into_the_sweep_engine(path):
    """The study reads its candidate pool through the data layer (policy_sampler.data.candidates)."""
    bad = {m for m in imported(path) if m.startswith("policy_sampler.sweep")}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted((REPO / "policy_sampler").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_library_locates_no_script_by_path(path):
    """Scripts are entry points around library functions, never the other way round: no string in the
    library is a path into scripts/ (prose that names a script is fine)."""
    script_path = re.compile(r"^(\.\./)*scripts(/[\w.-]+)*/?$")
    literals = [node.value for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    assert not [v for v in literals if script_path.match(v)]


def test_tests_mirror_the_package():
    """Each folder under tests/ names a subpackage, and a test named after a subpackage's module lives in its folder."""
    subpackages = {p.name for p in (REPO / "policy_sampler").iterdir() if (p / "__init__.py").exists()} | {"envs"}
    folders = {p.name for p in (REPO / "tests").iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders <= subpackages, f"test folders without a subpackage: {sorted(folders - subpackages)}"
    nested = {p.stem: p.parent.name for p in (REPO / "policy_sampler").glob("*/*.py") if p.stem != "__init__"}
    misplaced = [f"{t.name} (belongs in tests/{nested[t.stem[5:]]}/)" for t in (REPO / "tests").glob("test_*.py")
                 if t.stem[5:] in nested and not (REPO / "policy_sampler" / f"{t.stem[5:]}.py").exists()]
    assert not misplaced, misplaced
