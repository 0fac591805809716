"""The admin side never imports the composition root or a channel library (arrows: admin ->
flows, storage); it gets what it needs through admin/cli/runtime.py and admin/web/ports.py."""

from __future__ import annotations

import ast
from pathlib import Path

ADMIN = Path(__file__).resolve().parents[2] / "admin"
FORBIDDEN = ("bot", "channels", "telegram", "twilio")


def test_admin_imports_only_flows_and_storage_of_ours() -> None:
    problems = []
    files = sorted(ADMIN.rglob("*.py"))
    assert len(files) > 10
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in FORBIDDEN:
                    problems.append(f"{path.relative_to(ADMIN.parent)} imports {name}")
    assert problems == []
