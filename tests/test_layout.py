"""The layout holds: every package is installed under `vlmq`, imports go one way, docs match code."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = {"api": "vlmq.api", "tasks": "vlmq.tasks", "cache": "vlmq.cache", "frontend": "vlmq.frontend",
         "client": "vlmq.client", "cli": "vlmq.cli"}
# who may import whom (besides the shared core, vlmq/, which everyone may import): the core imports no
# part, the client only the core, the entry points (cli/) anything; nothing imports cli/.
ALLOWED = {
    "api": {"vlmq.cache", "vlmq.tasks.app", "vlmq.api"},
    "tasks": {"vlmq.tasks"},
    "cache": {"vlmq.cache"},
    "frontend": {"vlmq.frontend", "vlmq.client"},
    "client": {"vlmq.client"},
    "cli": {"vlmq.cli", "vlmq.api", "vlmq.tasks", "vlmq.cache", "vlmq.frontend", "vlmq.client"},
    "vlmq": set(),
}


def _package_dirs() -> dict[str, Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = config["package-dir"]
    dirs = {}
    for package in config["packages"]:
        parts = package.split(".")
        for depth in range(len(parts), 0, -1):
            prefix = ".".join(parts[:depth])
            if prefix in mapping:
                dirs[package] = ROOT / mapping[prefix] / Path(*parts[depth:])
                break
    return dirs


def test_every_package_folder_is_installed() -> None:
    listed = {path.resolve() for path in _package_dirs().values()}
    on_disk = {init.parent.resolve() for top in ("vlmq", *PARTS) for init in (ROOT / top).rglob("__init__.py")}
    assert on_disk == listed, f"not in pyproject packages: {on_disk - listed}; missing: {listed - on_disk}"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at top level?) for every `vlmq...` import of a file."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vlmq"):
            found.append((node.module, id(node) in top_level))
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in top_level) for a in node.names if a.name.startswith("vlmq")]
    return found


def test_imports_go_one_way() -> None:
    bad = []
    for top in ("vlmq", *PARTS):
        for path in (ROOT / top).rglob("*.py"):
            for module, _at_top in _imports(path):
                owner = next((p for p, ns in PARTS.items() if module == ns or module.startswith(ns + ".")), None)
                if owner is None:
                    continue  # a shared vlmq module
                if not any(module == a or module.startswith(a + ".") for a in ALLOWED[top]):
                    bad.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not bad, "\n".join(bad)


def test_status_table_in_the_api_doc_is_the_enum() -> None:
    from vlmq.jobs import FINAL_STATUSES, JobStatus

    doc = (ROOT / "docs" / "api.md").read_text()
    section = doc.split("## Job statuses", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| .* \| (yes|no) \|$", section, re.MULTILINE)
    assert [name for name, _ in rows] == [s.value for s in JobStatus]
    assert {name for name, final in rows if final == "yes"} == {s.value for s in FINAL_STATUSES}


def test_every_route_is_in_the_api_doc() -> None:
    from vlmq.api.main import create_app

    doc = (ROOT / "docs" / "api.md").read_text()
    def shape(path: str) -> str:
        return re.sub(r"\{[^}]+\}", "{}", path)

    documented = {(m, shape(p)) for m, p in re.findall(r"^\| `(GET|POST|DELETE|PUT) (/[^`]*)` \|", doc, re.MULTILINE)}
    served = {("GET", "/metrics")}  # served outside the OpenAPI schema
    for path, methods in create_app().openapi()["paths"].items():
        served |= {(method.upper(), shape(path)) for method in methods}
    assert served == documented, f"undocumented: {served - documented}; not served: {documented - served}"


def test_every_redis_key_is_named_in_the_keyspace_module() -> None:
    """A string that looks like a vlmq Redis key ("vlmq:<word>...") only in vlmq/keyspace.py."""
    key = re.compile(r"^vlmq:[a-z_]+")
    found = []
    for top in ("vlmq", *PARTS):
        for path in (ROOT / top).rglob("*.py"):
            if path == ROOT / "vlmq" / "keyspace.py":
                continue
            tree = ast.parse(path.read_text())
            docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                          if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                          and node.body and isinstance(node.body[0], ast.Expr)}
            for node in ast.walk(tree):
                if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                        and key.match(node.value) and " " not in node.value):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "\n".join(found)


def test_the_gpu_benchmark_maps_every_part_on_a_bare_python(tmp_path: Path) -> None:
    """benchmarks/gpu.py runs vlmq from this checkout on a machine where it is not installed: its link
    tree must hold every part (it once lacked cli/, and the lent GPU machine's run would have died)."""
    import subprocess
    import sys

    script = (
        "import sys, pathlib; sys.path.insert(0, 'benchmarks'); import gpu; "
        f"gpu.bootstrap(None, pathlib.Path({str(tmp_path)!r})); "
        "import importlib; names = " + repr(sorted(PARTS.values())) + "; "
        "print('\\n'.join(importlib.import_module(n).__file__ for n in names))"
    )
    out = subprocess.run([sys.executable, "-c", script], check=False, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    files = out.stdout.split()
    assert len(files) == len(PARTS) and all(f.startswith(str(tmp_path / "src" / "vlmq")) for f in files), files
