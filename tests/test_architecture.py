"""Import rules of docs/ARCHITECTURE.md, checked with an AST walk."""
from __future__ import annotations

import ast
import os

SRC = os.path.join(os.path.dirname(__file__), "..", "src", "cfgaudit")


def _imports(path: str) -> set[str]:
    tree = ast.parse(open(path).read())
    mod = os.path.relpath(path, SRC).replace(os.sep, ".")[:-3]
    pkg = mod.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                if not node.module:
                    out.update(".".join(base + [a.name]) for a in node.names)
                    continue
                name = ".".join(base + [node.module])
            else:
                name = node.module or ""
                if not name.startswith("cfgaudit"):
                    out.add("ext:" + name)
                    continue
                name = name[len("cfgaudit."):] if name != "cfgaudit" else ""
            out.add(name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                out.add("ext:" + a.name)
    return out


def _modules():
    for dp, _, files in os.walk(SRC):
        for f in files:
            if f.endswith(".py"):
                p = os.path.join(dp, f)
                yield os.path.relpath(p, SRC).replace(os.sep, "."), p


def test_import_rules() -> None:
    for mod, path in _modules():
        imps = {i for i in _imports(path) if not i.startswith("ext:")}
        top = {i.split(".")[0] for i in imps}
        if mod in ("events.py", "errors.py"):
            assert top <= {"errors"}, (mod, imps)
        if mod.startswith("regions."):
            assert not top & {"probes", "analyze", "report", "api", "cli"}, (mod, imps)
        if mod.startswith("probes."):
            assert not top & {"regions", "analyze", "report", "api", "cli"}, (mod, imps)
        if mod.startswith("report."):
            assert "probes" not in top, (mod, imps)
        if mod == "cli.py":
            assert top <= {"api", "errors"}, (mod, imps)


def test_bcc_only_in_live_probe() -> None:
    for mod, path in _modules():
        if mod == "probes.live.py":
            continue
        assert "ext:bcc" not in _imports(path), mod
