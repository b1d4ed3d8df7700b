"""The architecture of docs/ARCHITECTURE.md, checked against the code with an AST walk.

- the import rules: which layer may import which (leaves, probes/, regions/, analyze/, report/, the
  composing modules, cli.py), bcc only inside probes/, nothing edits sys.path;
- no mid-file imports: imports sit at the top of a module, except lazy imports of the optional heavy
  dependencies in LAZY_IMPORTS (with a comment saying so) and imports under `if TYPE_CHECKING:`;
- the docs' layout block and src/cfgaudit name the same module files.
"""
from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src", "cfgaudit")
DOC = os.path.join(ROOT, "docs", "ARCHITECTURE.md")

# Leaves: import nothing of cfgaudit but errors (and errors imports nothing of cfgaudit).
LEAVES = {"events", "errors", "files", "pci_regs", "hostpaths", "hexarrow", "ondemand"}
# The modules that compose the layers below them into the public API (fleet: issue 10).
COMPOSERS = {"inventory", "audit", "live", "record", "fleet"}
# The package root `cfgaudit` (its __init__.py, the one public API) is named "cfgaudit" below.
PKG = "cfgaudit"
# Optional heavy dependencies that may be imported lazily, inside a function, with a comment; pandas
# only in ondemand.py (test_pandas_only_on_demand); importlib.metadata (15-35 ms) for SARIF's version.
LAZY_IMPORTS = {"bcc", "duckdb", "dask", "pandas", "importlib.metadata"}


# ---------------------------------------------------------------------------- the code's modules

def _modules() -> Iterator[tuple[str, str]]:
    """(dotted name inside cfgaudit, path) for every .py file; a package's is its __init__ ("probes.__init__")."""
    for dp, dirs, files in os.walk(SRC):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py"):
                p = os.path.join(dp, f)
                yield os.path.relpath(p, SRC)[:-3].replace(os.sep, "."), p


def _is_module(dotted: str) -> bool:
    base = os.path.join(SRC, *dotted.split("."))
    return os.path.isfile(base + ".py") or os.path.isfile(os.path.join(base, "__init__.py"))


def _tree(path: str) -> ast.Module:
    with open(path) as fh:
        return ast.parse(fh.read(), path)


def _cfgaudit_imports(mod: str, tree: ast.Module) -> set[str]:
    """The cfgaudit modules `mod` imports, as dotted names inside cfgaudit ("cfgaudit" for the package root).

    `from .x import y` counts as x.y where y is a module, else as x."""
    pkg = mod.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == PKG or a.name.startswith(PKG + "."):
                    out.add(a.name[len(PKG) + 1:] or PKG)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                parts = base + (node.module.split(".") if node.module else [])
            elif node.module and (node.module == PKG or node.module.startswith(PKG + ".")):
                parts = node.module.split(".")[1:]
            else:
                continue
            for a in node.names:
                sub = ".".join(parts + [a.name])
                out.add(sub if _is_module(sub) else (".".join(parts) or PKG))
    return out


def _external_imports(tree: ast.Module) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module)
    return {n for n in out if n != PKG and not n.startswith(PKG + ".")}


def _top(name: str) -> str:
    return name.split(".")[0]


# ---------------------------------------------------------------------------- the import rules

def _layer(mod: str) -> str:
    top = _top(mod)
    if mod == "__init__":
        return "api"
    if mod == "__main__":
        return "main"
    if top in LEAVES:
        return "leaf"
    if top in COMPOSERS:
        return "composer"
    if top in ("probes", "regions", "analyze", "report", "cli"):
        return top
    return "unknown"


def _violations(mod: str, imps: set[str]) -> list[str]:
    """What `mod` may not import, of `imps` (dotted cfgaudit modules), by docs/ARCHITECTURE.md."""
    layer = _layer(mod)
    tops = {_top(i) for i in imps}

    def only(allowed: set[str], exact: frozenset[str] = frozenset()) -> list[str]:
        return sorted(i for i in imps if _top(i) not in allowed and i not in exact)

    if layer == "unknown":
        return [f"{mod} belongs to no layer of docs/ARCHITECTURE.md (leaves, probes/, regions/, analyze/, "
                f"report/, {', '.join(sorted(COMPOSERS))}, cli)"]
    if layer == "leaf":
        return only(set() if mod == "errors" else {"errors"})
    if layer == "probes":
        return only(LEAVES | {"probes"})
    if layer == "regions":
        return only(LEAVES | {"regions"})
    if layer == "analyze":
        return only(LEAVES | {"regions", "analyze"})
    if layer == "report":
        return only(LEAVES | {"report"}, frozenset({"analyze.findings"}))
    if layer in ("composer", "api"):
        return sorted(i for i in imps if _top(i) in {"cli", PKG, "__main__"})
    if layer == "cli":
        return only({PKG, "errors", "report"})
    if layer == "main":
        return only({"cli", "ondemand"})
    raise AssertionError(f"{layer}: {tops}")


@pytest.mark.parametrize("mod,path", list(_modules()), ids=[m for m, _ in _modules()])
def test_import_rules(mod: str, path: str) -> None:
    assert _layer(mod) != "unknown", _violations(mod, set())[0]
    bad = _violations(mod, _cfgaudit_imports(mod, _tree(path)))
    assert not bad, f"{mod} ({_layer(mod)}) may not import: {', '.join(bad)}"


def test_import_rules_catch_what_they_should() -> None:
    """The rules themselves, on made-up modules (so a loosened rule cannot pass silently)."""
    assert _violations("events", {"errors"}) == []
    assert _violations("errors", {"events"}) == ["events"]
    assert _violations("hexarrow", {"pci_regs"}) == ["pci_regs"]
    assert _violations("probes.syscalls", {"events", "probes.session", "hostpaths"}) == []
    assert _violations("probes.syscalls", {"regions.configspace"}) == ["regions.configspace"]
    assert _violations("regions.sources", {"probes.tracefile", "report.frames", "analyze"}) == \
        ["analyze", "probes.tracefile", "report.frames"]
    assert _violations("analyze.doe", {"regions.registry", "analyze.findings", "pci_regs"}) == []
    assert _violations("analyze.index", {"report", "probes", "audit", "cli"}) == ["audit", "cli", "probes", "report"]
    assert _violations("report.render", {"analyze.findings", "report.frames", "hexarrow"}) == []
    assert _violations("report.render", {"analyze.index", "regions", "probes"}) == ["analyze.index", "probes", "regions"]
    assert _violations("audit", {"analyze", "report.frames", "probes.replay", "regions"}) == []
    assert _violations("live", {"cli"}) == ["cli"]
    assert _violations("cli", {PKG, "errors", "report.render"}) == []
    assert _violations("cli", {"audit", "probes"}) == ["audit", "probes"]
    assert _violations("verdict", set()) != []


def test_import_resolution() -> None:
    """Relative and absolute imports resolve to the module they name (a package's attribute: the package)."""
    tree = ast.parse("from . import errors\nfrom .report import render\nfrom .hexarrow import x\nimport cfgaudit\n"
                     "from cfgaudit.regions import configspace, load_devices\nimport numpy\nfrom os import path\n")
    assert _cfgaudit_imports("audit", tree) == {"errors", "report.render", "hexarrow", PKG, "regions.configspace",
                                                "regions"}
    assert _cfgaudit_imports("probes.kernel", ast.parse("from .. import errors\nfrom .session import x\n")) == \
        {"errors", "probes.session"}
    assert _external_imports(tree) == {"numpy", "os"}


def test_bcc_only_in_probes() -> None:
    for mod, path in _modules():
        if _top(mod) == "probes":
            continue
        ext = {_top(n) for n in _external_imports(_tree(path))}
        assert "bcc" not in ext, f"{mod} imports bcc: only probes/ may (lazily)"


def test_nothing_edits_sys_path() -> None:
    """bcc (and everything else) is found without editing sys.path."""
    for mod, path in _modules():
        for node in ast.walk(_tree(path)):
            target = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                target = node.func.value
            elif isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                target = next((t for t in targets if ast.unparse(t) == "sys.path"), None)
            if target is not None and ast.unparse(target) == "sys.path":
                pytest.fail(f"{mod}:{node.lineno} edits sys.path")


# ---------------------------------------------------------------------------- start-up (issue 10)

# report/ modules cli.py may import at its top: they load neither pandas nor pyarrow. The others
# (render, frames, csvout) it reaches as `report.render`, loaded on first use.
CLI_EAGER_REPORT = {"report", "report.inventory", "report.listing", "report.live", "report.progress"}


def _cli_eager_violations(source: str) -> list[str]:
    """What cli.py (``source``) resolves at import time that start-up must not pay for: names taken
    from the package root (``from . import open_devices``: the package then loads their module at
    once), and report/ modules outside CLI_EAGER_REPORT. ``import cfgaudit`` and ``from . import
    report`` are fine: names are looked up on them when a command runs."""
    bad: list[str] = []
    tree = ast.parse(source)
    for node in tree.body:
        imps = _cfgaudit_imports("cli", ast.Module(body=[node], type_ignores=[]))
        if isinstance(node, ast.ImportFrom) and PKG in imps:
            bad += [f"{node.lineno}: from the package: {a.name}" for a in node.names if not _is_module(a.name)]
        bad += [f"{node.lineno}: {i} at import time" for i in sorted(imps)
                if _top(i) == "report" and i not in CLI_EAGER_REPORT]
    return bad


def test_cli_resolves_library_names_when_a_command_runs() -> None:
    with open(os.path.join(SRC, "cli.py")) as fh:
        bad = _cli_eager_violations(fh.read())
    assert not bad, "cli.py: " + "; ".join(bad) + " (see docs/ARCHITECTURE.md: start-up)"


def test_cli_start_up_rule_catches_what_it_should() -> None:
    ok = "import click\nimport cfgaudit\nfrom . import report\nfrom .errors import UsageError\n" \
         "from .report.listing import LISTING_FORMATS\n"
    assert _cli_eager_violations(ok) == []
    eager = "from . import open_devices, errors\nfrom .report.render import RENDERERS\nfrom .report import frames\n"
    assert _cli_eager_violations(eager) == ["1: from the package: open_devices", "2: report.render at import time",
                                            "3: report.frames at import time"]


# What `cfgaudit devices` and `regions` load (regions/ and the leaves they use): no array libraries.
ARRAY_LIBRARIES = {"numpy", "pyarrow", "pandas"}
PLAIN_MODULES = {"errors", "files", "hostpaths", "pci_regs"}


def test_regions_load_no_array_libraries() -> None:
    for mod, path in _modules():
        if _top(mod) == "regions" or mod in PLAIN_MODULES:
            ext = {_top(n) for n in _external_imports(_tree(path))} & ARRAY_LIBRARIES
            assert not ext, f"{mod} imports {sorted(ext)}: regions/ stay plain Python (docs/ARCHITECTURE.md: start-up)"
            leaves = {i for i in _cfgaudit_imports(mod, _tree(path)) if _top(i) in LEAVES}
            assert leaves <= PLAIN_MODULES, f"{mod} imports {sorted(leaves - PLAIN_MODULES)}, which load pyarrow"


# ---------------------------------------------------------------------------- no mid-file imports

def _is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _import_names(node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    return {node.module or ""} if not node.level else {"." * node.level + (node.module or "")}


def _mid_file_imports(source: str, name: str = "<src>") -> list[str]:
    """Imports that are not at the top of the module, except allowed lazy ones. Each as 'LINE: why'."""
    tree = ast.parse(source, name)
    lines = source.splitlines()
    bad: list[str] = []
    top_ok: set[int] = set()
    in_header = True
    for i, node in enumerate(tree.body):
        is_doc = i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
            and isinstance(node.value.value, str)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            top_ok.add(id(node))
            if not in_header:
                bad.append(f"{node.lineno}: import after the module's first statement")
        elif _is_type_checking(node):
            top_ok.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
        elif not is_doc:
            in_header = False
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in top_ok:
            continue
        names = _import_names(node)
        if all(n in LAZY_IMPORTS or _top(n) in LAZY_IMPORTS for n in names):
            here = lines[node.lineno - 1]
            above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
            if "#" not in here and not above.startswith("#"):
                bad.append(f"{node.lineno}: lazy import of {', '.join(sorted(names))} without a comment saying why")
            continue
        bad.append(f"{node.lineno}: mid-file import of {', '.join(sorted(names))} "
                   f"(only {', '.join(sorted(LAZY_IMPORTS))} may be imported lazily)")
    return bad


# pandas loads on demand (issue 10): one import of it, in ondemand.py; elsewhere only under
# `if TYPE_CHECKING:`, and Arrow's to_pandas() only through ondemand.frame() (pyarrow imports pandas
# itself there, which the entry point's block would refuse).
def _pandas_uses(source: str, name: str = "<src>") -> list[str]:
    """Imports of pandas outside `if TYPE_CHECKING:` and calls of .to_pandas(), each as 'LINE: what'."""
    tree = ast.parse(source, name)
    typing_only = {id(n) for node in tree.body if _is_type_checking(node) for n in ast.walk(node)}
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in typing_only \
                and any(_top(n) == "pandas" for n in _import_names(node)):
            bad.append(f"{node.lineno}: import of pandas (use ondemand.load_pandas())")
        elif isinstance(node, ast.Attribute) and node.attr == "to_pandas":
            bad.append(f"{node.lineno}: .to_pandas() (use ondemand.frame())")
    return bad


@pytest.mark.parametrize("mod,path", list(_modules()), ids=[m for m, _ in _modules()])
def test_pandas_only_on_demand(mod: str, path: str) -> None:
    if mod == "ondemand":
        return
    with open(path) as fh:
        bad = _pandas_uses(fh.read(), path)
    assert not bad, f"{mod}: {'; '.join(bad)}"


def test_pandas_rule_catches_what_it_should() -> None:
    assert _pandas_uses("import pandas as pd\n")[0].startswith("1: import of pandas")
    assert _pandas_uses("def f():\n    from pandas import DataFrame\n")[0].startswith("2: import of pandas")
    assert _pandas_uses("def f(t):\n    return t.to_pandas()\n")[0].startswith("2: .to_pandas()")
    assert _pandas_uses("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pandas as pd\n") == []


# The entry point imports the CLI inside console(), after its signal set-up (a Ctrl-C while the
# heavy modules load is then an Error line): that one import, with its comment, is allowed there.
ENTRY_LAZY = {"__main__": "from .cli import main"}


@pytest.mark.parametrize("mod,path", list(_modules()), ids=[m for m, _ in _modules()])
def test_no_mid_file_imports(mod: str, path: str) -> None:
    with open(path) as fh:
        src = fh.read()
    bad = _mid_file_imports(src, path)
    if mod in ENTRY_LAZY:
        line = next(i for i, ln in enumerate(src.splitlines(), 1) if ln.strip() == ENTRY_LAZY[mod])
        assert src.splitlines()[line - 2].strip().startswith("#"), f"{mod}:{line}: say why the import is late"
        bad = [b for b in bad if not b.startswith(f"{line}: ")]
    assert not bad, f"{mod}: " + "; ".join(bad)


def test_mid_file_rule_catches_what_it_should() -> None:
    ok = '"""Doc."""\nfrom __future__ import annotations\n\nimport os\nfrom typing import TYPE_CHECKING\n' \
         'if TYPE_CHECKING:\n    import pandas\n\nX = 1\n\ndef f():\n    # optional: only the bench needs it\n' \
         '    import duckdb\n    import bcc  # the distribution\'s, lazily\n    return duckdb, bcc\n'
    assert _mid_file_imports(ok) == []
    late = "import os\nX = 1\nimport sys\n"
    assert _mid_file_imports(late) == ["3: import after the module's first statement"]
    inner = "def f():\n    import json\n    return json\n"
    assert _mid_file_imports(inner)[0].startswith("2: mid-file import of json")
    bare = "def f():\n    import dask\n    return dask\n"
    assert "without a comment" in _mid_file_imports(bare)[0]
    tried = "try:\n    import bcc\nexcept ImportError:\n    bcc = None\n"
    assert _mid_file_imports(tried)[0].startswith("2: lazy import of bcc without a comment")


# ---------------------------------------------------------------------------- docs/ARCHITECTURE.md

def _layout_block() -> str:
    text = open(DOC).read()
    m = re.search(r"^##[^\n]*Layout[^\n]*\n(.*?)^```\n(.*?)^```", text, re.S | re.M)
    assert m, "docs/ARCHITECTURE.md has no '## Layout' section with a fenced block"
    return m[2]


def _layout_paths(block: str) -> set[str]:
    """Paths under src/cfgaudit named in the layout block, from its indentation: 'probes/kernel.py', ..."""
    out: set[str] = set()
    stack: list[tuple[int, str]] = []  # (indent, directory) from src/cfgaudit/ down
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        token = line.split()[0]
        if not re.fullmatch(r"[\w.-]+(/|\.(py|c|h))|src/cfgaudit/?", token):
            continue  # a description's continuation line, or a top-level file that is not ours
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if not stack and token.rstrip("/") != "src/cfgaudit":
            continue  # not under src/cfgaudit (pyproject.toml, tests/, ...)
        if not stack:
            stack.append((indent, ""))
            continue
        path = "/".join(d for _, d in stack[1:]) + ("/" if len(stack) > 1 else "") + token.rstrip("/")
        if token.endswith("/"):
            stack.append((indent, token.rstrip("/")))
        else:
            out.add(path)
    return out


def _code_files() -> set[str]:
    """Module files of src/cfgaudit (.py) and the BPF sources beside them (bpf/*.c, bpf/*.h)."""
    out = {os.path.relpath(p, SRC).replace(os.sep, "/") for _, p in _modules()}
    bpf = os.path.join(SRC, "bpf")
    if os.path.isdir(bpf):
        out.update(f"bpf/{f}" for f in os.listdir(bpf) if f.endswith((".c", ".h")))
    return out


def test_layout_parser() -> None:
    block = "pyproject.toml   x\nsrc/cfgaudit/\n  __init__.py  api\n  probes/   table\n    kernel.py  k\n" \
            "                more words about kernel.py\n  cli.py   c\n  bpf/   C sources (inside the package, so the\n" \
            "                        wheel ships them)\n    a.bpf.c   x\ntests/    t\n  test_x.py\n"
    assert _layout_paths(block) == {"__init__.py", "probes/kernel.py", "cli.py", "bpf/a.bpf.c"}


def test_docs_layout_names_only_files_that_exist() -> None:
    named = _layout_paths(_layout_block())
    assert named, "the layout block names no file under src/cfgaudit/"
    missing = sorted(p for p in named if not os.path.exists(os.path.join(SRC, p)))
    assert not missing, f"docs/ARCHITECTURE.md's layout names files src/cfgaudit lacks: {missing}"


def test_docs_layout_names_every_module_file() -> None:
    named = _layout_paths(_layout_block())
    unnamed = sorted(_code_files() - named)
    assert not unnamed, f"src/cfgaudit files docs/ARCHITECTURE.md's layout does not name: {unnamed}"
