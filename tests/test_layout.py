"""The package's layout: no import cycle, and the runtime a host loads imports nothing from data, training or
evaluation."""
import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "prompt_expander"
RUNTIME = ("model", "expansion", "host")  # with the top-level modules: what ComfyUI and A1111 load
OFFLINE = ("data", "train", "evaluation")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every prompt_expander module `path` imports, at the top or inside a function."""
    me = module_name(path).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            found.add(target)
            if not node.module:
                found.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prompt_expander"):
            found.add(node.module)
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules and m != module_name(path)}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_no_import_cycle():
    g = graph()
    # a package's __init__ re-exporting its modules is not a cycle of code; every module-to-module edge counts
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in g.items()}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in edges.get(m, ()):
            assert state.get(t) != "open", "import cycle: " + " -> ".join(stack[stack.index(t):] + [t])
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_the_runtime_imports_nothing_from_data_training_or_evaluation():
    g = graph()
    runtime = [m for m in g if m.count(".") == 1 and m.split(".")[1] not in (*OFFLINE, "cli", "__main__")
               or any(m.startswith(f"prompt_expander.{r}") for r in RUNTIME)]
    for m in runtime:
        seen, todo = set(), [m]
        while todo:
            for t in g.get(todo.pop(), ()):
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        bad = sorted(t for t in seen if any(t.startswith(f"prompt_expander.{o}") for o in OFFLINE))
        assert not bad, f"{m} imports {bad}"


def test_an_expansion_loads_no_offline_module(tiny_model_dir):
    code = ("import sys, prompt_expander as pe; pe.expand('a castle', seed=1, model=%r); "
            "print(sorted(m for m in sys.modules if m.split('.')[:2][-1] in ('data', 'train', 'evaluation')"
            " and m.startswith('prompt_expander')))" % str(tiny_model_dir))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(PACKAGE.parent))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"
