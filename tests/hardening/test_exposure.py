"""What an attacker can reach: the admin API's token checks, the default bind, and code that runs request data.

tests/cutover already checks no token (401), a wrong bearer token (401), a
``token`` query parameter (400) and the X-Cutover-Token header; here every
admin route is checked, with the other ways a token can be mis-sent, plus
bodies that are too big or too deep for the admin API, and an admin API with
no token configured. The constant-time comparison and the absence of
eval/unpickling of request data are checked on the source, by AST.
"""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn

from bridge.host import admin
from bridge.host.runtime import HostSettings
from bridge.testing import asyncio_test
from legacy import LegacySettings
from modern import ModernSettings
from tests.conftest import WAIT, until
from tests.cutover.conftest import TOKEN
from tests.hardening.conftest import Door
from tests.reliability import record

ROOT = Path(__file__).resolve().parents[2]
GUARDED = [
    ("GET", "/_cutover/api"), ("POST", "/_cutover/api/routes"), ("POST", "/_cutover/api/tasks"),
    ("POST", "/_cutover/api/reload"), ("GET", "/_cutover/api/mismatches"), ("GET", "/_cutover/api/mismatches/1"),
    ("GET", "/_cutover/metrics"),
]


@asyncio_test
async def test_every_admin_route_refuses_missing_wrong_and_misplaced_tokens(doors: dict[str, Door]) -> None:
    door = doors["modern"]  # the admin API sits in front of both stacks; which one answers routes does not matter
    wrong = [
        ({}, {}, 401),  # no token
        ({"Authorization": "Bearer " + "x" * len(TOKEN)}, {}, 401),  # same length, every byte wrong
        ({"Authorization": "Bearer " + TOKEN[:-1]}, {}, 401),  # a prefix of the token
        ({"Authorization": "Bearer " + TOKEN + "x"}, {}, 401),  # the token plus one byte
        ({"Authorization": "Bearer"}, {}, 401),  # no token after the scheme
        ({"X-Cutover-Token": "x"}, {}, 401),  # the other header, wrong
        ({"Authorization": "Basic " + TOKEN}, {}, 401),  # the wrong scheme
        ({"Authorization": "Bearer " + TOKEN}, {"token": TOKEN}, 400),  # in the URL, even alongside the header
        ({"Authorization": "Bearer " + TOKEN}, {"access_token": TOKEN}, 400),
        ({}, {"access_token": TOKEN}, 400),
    ]
    failures: list[str] = []
    tried = 0
    async with httpx.AsyncClient(base_url=door.url, timeout=WAIT) as http:
        for method, path in GUARDED:
            for headers, params, status in wrong:
                tried += 1
                response = await http.request(method, path, headers=headers, params=params)
                code = response.json().get("error", {}).get("code") if response.status_code >= 400 else None
                expected = "token_in_query" if status == 400 else "unauthorized"
                if (response.status_code, code) != (status, expected):
                    failures.append(f"{method} {path} {headers} {params}: {response.status_code} {response.text[:100]}")
        authorised = {"Authorization": f"Bearer {TOKEN}"}
        # with the token, bodies the admin API does not want are refused cleanly, not read whole or crashed on
        deep = await http.post("/_cutover/api/routes", content=b"[" * 50_000, headers={**authorised, "content-type": "application/json"})
        big = await http.post("/_cutover/api/routes", content=b" " * (admin.ADMIN_MAX_BODY + 1), headers=authorised)
        tried += 2
        for response, status, code in ((deep, 400, "malformed_json"), (big, 413, "body_too_large")):
            if response.status_code != status or response.json()["error"]["code"] != code:
                failures.append(f"admin body: {response.status_code} {response.text[:100]}")
    record("hostile input", "admin API: missing, wrong or misplaced token; deep and big bodies", tried=tried,
           survived=tried - len(failures), detail=f"{len(GUARDED)} routes x {len(wrong)} ways, 401/400; deep JSON 400, big body 413")
    assert not failures, "\n".join(failures)


@asyncio_test
async def test_with_no_token_configured_the_admin_api_is_off(doors: dict[str, Door]) -> None:
    app = admin.admin_app(doors["modern"].host, None)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning"))
    serving = asyncio.ensure_future(server.serve())
    try:
        await until(lambda: server.started or serving.done(), "the admin app to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=WAIT) as http:
            for method, path in GUARDED:
                response = await http.request(method, path, headers={"Authorization": "Bearer anything"})
                assert response.status_code == 403, (path, response.text)
                assert response.json()["error"]["code"] == "admin_disabled"
    finally:
        server.should_exit = True
        await serving


def test_the_token_is_compared_in_constant_time() -> None:
    """``_authorised`` compares with hmac/secrets.compare_digest, and never with == or != on the token."""
    tree = ast.parse(Path(admin.__file__).read_text())
    check = next(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "_authorised")
    secrets_named = {"token", "given"}

    def names(node: ast.AST) -> set[str]:
        return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}

    digests = [
        call for call in ast.walk(check)
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "compare_digest"
        and isinstance(call.func.value, ast.Name) and call.func.value.id in ("hmac", "secrets")
    ]
    assert digests and all(names(call) >= secrets_named for call in digests), "the token must go through compare_digest"
    plain = [
        ast.unparse(node) for node in ast.walk(check)
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops)
        and names(node) & secrets_named and not all(isinstance(c, ast.Constant) and not c.value for c in node.comparators)
    ]
    assert not plain, f"comparisons that leak the token's bytes through timing: {plain}"


def test_everything_binds_to_loopback_by_default() -> None:
    assert HostSettings().host == LegacySettings().host == ModernSettings().host == "127.0.0.1"
    shown = subprocess.run([sys.executable, "-m", "bridge.cli", "serve", "--help"], cwd=ROOT, capture_output=True,
                           text=True, timeout=WAIT, check=True).stdout
    assert "(default: 127.0.0.1)" in " ".join(shown.split())
    for stack in ("legacy", "modern"):
        source = (ROOT / stack / "__main__.py").read_text()
        assert 'parser.add_argument("--host", default="127.0.0.1")' in source, stack


# ---------------------------------------------------------------- code that would run request data

PACKAGES = ("bridge", "legacy", "modern", "workloads")
#: Calls that run or unpickle their argument: eval/exec, and deserialisers that can build arbitrary objects.
DANGEROUS = {
    "eval", "exec", "compile", "__import__",
    "pickle.loads", "pickle.load", "pickle.Unpickler", "_pickle.loads", "cPickle.loads",
    "marshal.loads", "marshal.load", "shelve.open", "dill.loads", "dill.load", "cloudpickle.loads",
    "jsonpickle.decode", "yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load",
}
#: Where such a call is allowed, and why: file -> {call: reason}.
ALLOWED = {
    "bridge/pool/protocol.py": {
        "pickle.loads": "results from the pool's own worker processes (local pipe or our own Dask workers); "
                        "never request data",
    },
    "bridge/pool/local.py": {
        "pickle.loads": "results from the pool's own worker processes over their private pipes (the hot path "
                        "of protocol.py's decode_result, inlined); never request data",
    },
    "bridge/pool/dask.py": {
        "pickle.loads": "the initializer this process pickled, run on our own Dask workers; a Dask cluster runs "
                        "pickled code by design, so it must be private",
    },
    "bridge/pool/worker.py": {
        "pickle.loads": "the call and initializer our own parent process pickled, over a private pipe; and a "
                        "round trip of the worker's own exception to check that it unpickles",
    },
}


def dangerous_calls(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    aliases: dict[str, str] = {}  # local name -> dotted origin, from `import x as y` / `from x import y`
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name):
            name = aliases.get(func.id, func.id)
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            name = f"{aliases.get(func.value.id, func.value.id)}.{func.attr}"
        else:
            continue
        name = name.removeprefix("builtins.")
        if name.startswith("yaml.") and any(k.arg == "Loader" and "Safe" in ast.unparse(k.value) for k in node.keywords):
            continue  # yaml.load(..., Loader=SafeLoader) builds plain data only
        if name in DANGEROUS:
            yield node.lineno, name


def test_no_eval_exec_or_unpickling_outside_the_pools_own_ipc() -> None:
    found: dict[str, set[str]] = {}
    refused: list[str] = []
    scanned = 0
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            scanned += 1
            relative = path.relative_to(ROOT).as_posix()
            for line, name in dangerous_calls(path):
                found.setdefault(relative, set()).add(name)
                if name not in ALLOWED.get(relative, {}):
                    refused.append(f"{relative}:{line}: {name}(...)")
    stale = [f"{file}: {name}" for file, calls in ALLOWED.items() for name in calls
             if (ROOT / file).exists() and name not in found.get(file, set())]
    record("hostile input", "eval/exec/unpickling calls in shipped code (AST)", tried=scanned,
           survived=scanned - len({r.split(':')[0] for r in refused}),
           detail=f"{scanned} files scanned; allowed: pickle.loads in the pool's worker IPC only" if not refused else "; ".join(refused))
    assert not refused, "request data must never reach these:\n" + "\n".join(refused)
    assert not stale, f"allow-list entries that no longer match any call (remove them): {stale}"
