"""``cutover plan export``: the effective plan written back as TOML, the file's comments and layout kept.

The file's text is edited, not regenerated (tomlkit keeps comments, order and
formatting): each route whose mode differs from what the file says gets its
new mode (a string, or its table's ``mode`` and ``percent``); a route the file
does not name is added at the end of ``[routes]``; a task whose owner moved
gets the new owner. Everything else stays byte for byte.
"""

from __future__ import annotations

from typing import Any

import tomlkit
from tomlkit.items import InlineTable, Table

from .plan import Plan, Route

__all__ = ["export_toml"]


def export_toml(text: str, plan: Plan) -> str:
    """``text`` (the plan file) with ``plan``'s route modes and task owners written in."""
    document = tomlkit.parse(text)
    base = Plan.parse(text)
    if plan.routes and "routes" not in document:
        document.add("routes", tomlkit.table())
    routes: Any = document.get("routes")
    for route in plan.routes:
        written = base.find(route.method, route.template)
        if written is None:
            routes[route.key] = _value(route)
            continue
        if (written.mode, written.percent) == (route.mode, route.percent):
            continue
        current = routes[written.key]
        if isinstance(current, InlineTable | Table | dict):
            current["mode"] = route.mode
            if route.mode == "canary":
                current["percent"] = _number(route.percent)
            elif "percent" in current:
                del current["percent"]
        else:
            routes[written.key] = _value(route)
    moved = {task: owner for task, owner in plan.tasks.items() if base.tasks.get(task) != owner}
    if moved:
        if "tasks" not in document:
            document.add("tasks", tomlkit.table())
        tasks: Any = document["tasks"]
        for task, owner in moved.items():
            tasks[task] = owner
    return tomlkit.dumps(document)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _value(route: Route) -> Any:
    if route.mode != "canary":
        return route.mode
    table = tomlkit.inline_table()
    table.update({"mode": "canary", "percent": _number(route.percent)})
    return table
