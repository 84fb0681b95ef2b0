"""The structure the code promises: no status written outside the queue modules, and no
module much over 500 lines without a written reason.

The import layers themselves are checked by import-linter (`lint-imports`, contracts in
pyproject.toml), run by ./scripts/test before pytest.
"""

from __future__ import annotations

import ast
from pathlib import Path

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"
QUEUES = GATEWAY / "storage" / "queues"
STATUS_ENUMS = {"MessageStatus", "DeliveryStatus", "ForwardStatus"}
MODELS_WITH_STATUS = {"InboundMessage", "Delivery", "BotMailForward"}
MAX_LINES = 500
# A module may pass MAX_LINES when it says why in its docstring with this phrase.
LONG_REASON = "Why this module is long:"


def _mentions_status_enum(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id in STATUS_ENUMS for n in ast.walk(node))


def _callee(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def status_writes(source: str) -> list[int]:
    """Lines of `source` that write a status: `.values(status=…)`, a model built with a
    status, `x.status = …`, or a row `{"status": <a status enum>}`."""
    lines: list[int] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            callee = _callee(node)
            for keyword in node.keywords:
                if keyword.arg == "status" and (callee == "values" or callee in MODELS_WITH_STATUS):
                    lines.append(node.lineno)
            if callee == "values" and any(
                isinstance(a, ast.Dict)
                and any(isinstance(k, ast.Constant) and k.value == "status" for k in a.keys)
                for a in node.args
            ):
                lines.append(node.lineno)
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Attribute) and t.attr == "status" for t in targets):
                lines.append(node.lineno)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and key.value == "status"
                    and _mentions_status_enum(value)
                ):
                    lines.append(node.lineno)
    return sorted(set(lines))


def test_the_checker_finds_each_kind_of_status_write():
    source = (
        "s.execute(update(Delivery).values(status=DeliveryStatus.SENT))\n"
        "s.add(BotMailForward(bot_mail_id=1, status=QUEUED))\n"
        "row.status = 'filed'\n"
        "rows = [{'queue_id': q, 'status': MessageStatus.RECEIVED.value}]\n"
        "q = update(InboundMessage).values({'status': 'held'})\n"
        "log.info('filed', status=outcome.status().value)\n"  # a log field: not a write
        "print({'status': m.status})\n"  # a listing: not a write
    )
    assert status_writes(source) == [1, 2, 3, 4, 5]


def test_no_status_is_written_outside_the_queue_modules():
    offenders = [
        f"{path.relative_to(GATEWAY.parent)}:{line}"
        for path in sorted(GATEWAY.rglob("*.py"))
        if QUEUES not in path.parents and "migrations" not in path.parts
        for line in status_writes(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], "status written outside gateway/storage/queues/: " + ", ".join(
        offenders
    )


def test_no_module_passes_500_lines_without_saying_why():
    long = [
        f"{path.relative_to(GATEWAY.parent)} ({n} lines)"
        for path in sorted(GATEWAY.rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
        and LONG_REASON not in (ast.get_docstring(ast.parse(path.read_text())) or "")
    ]
    assert long == []
