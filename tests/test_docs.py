"""Docs stay current with the code."""
from __future__ import annotations

import importlib.util
import os

from cfgaudit.cli import cli

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _load_script(name: str):
    """Load scripts/NAME.py as a module by its path (scripts/ is not a package, nor on sys.path)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", f"{name}.py"))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rules_doc_is_current() -> None:
    gen_rules_doc = _load_script("gen_rules_doc")
    with open(os.path.join(ROOT, "docs", "rules.md")) as fh:
        assert fh.read() == gen_rules_doc.render(), "run scripts/gen_rules_doc.py"


def test_readme_quick_start_is_two_commands() -> None:
    text = open(os.path.join(ROOT, "README.md")).read()
    block = text.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    cmds = [l.split("#")[0].strip() for l in block.strip().splitlines()]
    assert cmds == ["make demo", "make test"]


def test_readme_commands_exist() -> None:
    text = open(os.path.join(ROOT, "README.md")).read()
    for name in cli.commands:
        assert f"cfgaudit {name}" in text, f"README does not mention 'cfgaudit {name}'"
