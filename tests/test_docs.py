"""Docs stay current with the code."""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_rules_doc_is_current() -> None:
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import gen_rules_doc

    with open(os.path.join(ROOT, "docs", "rules.md")) as fh:
        assert fh.read() == gen_rules_doc.render(), "run scripts/gen_rules_doc.py"


def test_readme_quick_start_is_two_commands() -> None:
    text = open(os.path.join(ROOT, "README.md")).read()
    block = text.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    cmds = [l.split("#")[0].strip() for l in block.strip().splitlines()]
    assert cmds == ["make demo", "make test"]


def test_readme_commands_exist() -> None:
    from cfgaudit.cli import cli

    text = open(os.path.join(ROOT, "README.md")).read()
    for name in cli.commands:
        assert f"cfgaudit {name}" in text, f"README does not mention 'cfgaudit {name}'"
