"""Security rules checked on the source itself (AST), so a regression fails CI.

- no eval/exec anywhere (model output is text, never code);
- torch.load only with weights_only=True; no pickle except the restricted unpickler;
- no shell=True / os.system: user text (instructions, paths) never reaches a shell.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    p
    for d in ("lens_ros", "training", "bench", "launch", "scripts")
    for p in (ROOT / d).rglob("*")
    if p.is_file() and (p.suffix == ".py" or p.parent.name == "scripts") and "__pycache__" not in p.parts
)
# The one module allowed to touch pickle: it subclasses pickle.Unpickler and admits
# only plain containers and scalars (RefCOCO's refs(unc).p).
PICKLE_ALLOWED = {ROOT / "training" / "data" / "refer.py"}


def calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            yield node, owner, name


def parsed():
    for path in SOURCES:
        yield path, ast.parse(path.read_text(), filename=str(path))


def test_sources_were_found():
    assert len(SOURCES) > 10, "the security scan found almost no sources: the glob is wrong"


def test_no_eval_or_exec():
    # The builtins only: nn.Module.eval() (an attribute call) is fine.
    offenders = [
        f"{p.relative_to(ROOT)}:{n.lineno}"
        for p, t in parsed()
        for n, owner, name in calls(t)
        if name in ("eval", "exec") and (isinstance(n.func, ast.Name) or owner == "builtins")
    ]
    assert not offenders, f"eval/exec found: {offenders}"


def test_torch_load_only_with_weights_only():
    offenders = []
    for path, tree in parsed():
        for node, owner, name in calls(tree):
            if owner == "torch" and name == "load":
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                if not ok:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


def test_pickle_only_in_the_restricted_unpickler():
    offenders = []
    for path, tree in parsed():
        if path in PICKLE_ALLOWED:
            continue
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(n.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"pickle imported outside the restricted unpickler: {offenders}"


def test_restricted_unpickler_refuses_code(tmp_path):
    import pickle

    from lens_training.data.refer import load_plain_pickle

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": 1}, Evil()]))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global builtins.print"):
        load_plain_pickle(path)
    path.write_bytes(pickle.dumps([{"ref_id": 1, "sentences": [{"sent": "left cup"}]}, {1, 2}]))
    assert load_plain_pickle(path) == [{"ref_id": 1, "sentences": [{"sent": "left cup"}]}, {1, 2}]


def test_no_shell_invocation():
    offenders = []
    for path, tree in parsed():
        for node, owner, name in calls(tree):
            if owner == "os" and name in ("system", "popen"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} os.{name}")
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} shell=")
    assert not offenders, f"shell invocation found: {offenders}"
