"""Fixtures shared by the test tiers. Helpers (constants, builders) are in the `support` package."""
from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture(scope="session")
def lspci() -> str:
    """The system's lspci, the independent oracle for capability walks.

    As root it must be there (`make test` installs pciutils through scripts/deps.sh): a failure, not
    a skip. Without root nothing can install it, so the oracle tests are skipped, saying so.
    """
    path = shutil.which("lspci")
    if path is None:
        if os.geteuid() == 0:
            pytest.fail("lspci (pciutils) is missing: run 'make deps' as root (make test does)")
        pytest.skip("lspci (pciutils) is missing and this is not root: 'sudo make deps' installs it")
    return path
