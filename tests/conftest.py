"""Fixtures shared by the test tiers."""
from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def lspci() -> str:
    path = shutil.which("lspci")
    if path is None:
        pytest.fail("lspci (pciutils) is missing: run 'make deps' as root")
    return path
