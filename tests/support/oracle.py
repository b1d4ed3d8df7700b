"""The system's lspci as an independent oracle (the `lspci` fixture in tests/conftest.py finds it)."""
from __future__ import annotations

import subprocess


def lspci_caps(lspci_path: str, args: list[str]) -> dict[str, list[tuple[str, int, str]]]:
    """Run lspci -vvv -D and return {bdf: [(space, offset, text), ...]} for real capability lines."""
    p = subprocess.run([lspci_path, "-vvv", "-D", *args], capture_output=True, text=True, check=True)
    out: dict[str, list[tuple[str, int, str]]] = {}
    cur = None
    for line in p.stdout.splitlines():
        if line and not line[0].isspace():
            cur = line.split()[0]
            out[cur] = []
            continue
        s = line.strip()
        if cur is None or not s.startswith("Capabilities: ["):
            continue
        inside, _, rest = s[len("Capabilities: ["):].partition("]")
        if rest.strip().startswith("<"):
            continue  # <chain looped>, <chain broken>
        off_txt = inside.split()[0]
        space = "ext" if (len(off_txt) == 3 or " v" in inside) else "std"
        out[cur].append((space, int(off_txt, 16), rest.strip()))
    return out
