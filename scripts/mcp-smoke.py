#!/usr/bin/env python3
"""End-to-end check of the real MCP servers promptops talks to, with a real MCP client.

Run with the mcp-atlassian venv's python (it has the `mcp` client package):

    "$(dirname "$(scripts/mcp-test-env path atlassian)")/python" scripts/mcp-smoke.py

It starts the stub Jira/Confluence (`cargo build --example stub_atlassian`, honouring
CARGO_TARGET_DIR; the previous build when the crate does not compile right now), mcp-atlassian against it and server-everything (both through
scripts/mcp-test-env, on free loopback ports), then over streamable HTTP:
  - as Alice (`Authorization: Token alice-pat`): initialize, list tools (count, annotations),
    jira_get_issue PAY-7, jira_search, jira_add_comment, confluence_get_page/search, and
    checks the stub saw `Bearer alice-pat` and which REST paths each tool called;
  - as Bob: one call, checks `Bearer bob-pat`;
  - a bad token (tool call result) and no Authorization header (HTTP status);
  - server-everything: list tools, call `echo`.
Options: --stub-bin runs that stub binary; --stub-url / --atlassian-url / --everything-url use running servers instead;
--quiet prints less. Ends with "N passed, N failed"; exit 1 when anything failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

REPO = Path(__file__).resolve().parent.parent
ENV_SCRIPT = REPO / "scripts" / "mcp-test-env"
WATCHED = ["jira_get_issue", "jira_search", "jira_add_comment", "jira_create_issue", "jira_transition_issue"]

passed = 0
failed = 0
quiet = False


def check(ok: bool, what: str) -> None:
    global passed, failed
    if ok:
        passed += 1
        print(f"  ok   {what}")
    else:
        failed += 1
        print(f"  FAIL {what}")


def say(text: str = "") -> None:
    print(text, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stub_get(stub: str, path: str):
    with urllib.request.urlopen(f"{stub}{path}", timeout=10) as r:
        return json.load(r)


@asynccontextmanager
async def mcp_session(url: str, authorization: str | None):
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=120)) as http:
        async with streamable_http_client(url, http_client=http) as (read, write, _session_id):
            async with ClientSession(read, write) as session:
                yield session


def result_text(result) -> str:
    return "\n".join(getattr(c, "text", str(c)) for c in result.content)


async def call(session, stub: str, name: str, args: dict):
    """Calls a tool; returns (result, REST requests the stub saw during the call)."""
    before = len(stub_get(stub, "/__stub/requests"))
    result = await session.call_tool(name, args)
    rest = stub_get(stub, "/__stub/requests")[before:]
    say(f"\n-- {name} {json.dumps(args)} -> isError={result.isError}")
    for r in rest:
        q = f"?{r['query']}" if r["query"] else ""
        say(f"   REST {r['method']} {r['path']}{q}  [{r['authorization']}] -> {r['status']}")
    return result, rest


def annotations(tool) -> dict:
    a = tool.annotations
    return {k: v for k, v in (a.model_dump(exclude_none=True) if a else {}).items()}


async def atlassian_checks(url: str, stub: str) -> None:
    say(f"\n== mcp-atlassian at {url} (stub {stub})")
    async with mcp_session(url, "Token alice-pat") as s:
        init = await s.initialize()
        say(f"initialize: {init.serverInfo.name} {init.serverInfo.version}, protocol {init.protocolVersion}")
        check(init.serverInfo is not None, "initialize as Alice")
        tools = (await s.list_tools()).tools
        by_name = {t.name: t for t in tools}
        jira = [t for t in tools if t.name.startswith("jira_")]
        conf = [t for t in tools if t.name.startswith("confluence_")]
        ro = [t.name for t in tools if (t.annotations and t.annotations.readOnlyHint)]
        destructive = [t.name for t in tools if (t.annotations and t.annotations.destructiveHint)]
        nondestructive = [t.name for t in tools if (t.annotations and t.annotations.destructiveHint is False)]
        unannotated = [t.name for t in tools if not (t.annotations and (t.annotations.readOnlyHint is not None
                                                                      or t.annotations.destructiveHint is not None))]
        schema_bytes = len(json.dumps([t.model_dump(exclude_none=True) for t in tools]))
        say(f"tools: {len(tools)} ({len(jira)} jira, {len(conf)} confluence), schemas {schema_bytes} bytes as JSON")
        say(f"  readOnlyHint=true: {len(ro)}; destructiveHint=true: {len(destructive)}; "
            f"destructiveHint=false: {len(nondestructive)}; neither hint: {len(unannotated)}")
        if not quiet:
            say(f"  destructive: {', '.join(sorted(destructive))}")
            if unannotated:
                say(f"  neither hint: {', '.join(sorted(unannotated))}")
        for name in WATCHED:
            say(f"  {name}: {annotations(by_name[name]) if name in by_name else 'MISSING'}")
        check(len(tools) > 0 and all(n in by_name for n in WATCHED), "tool list has the watched tools")

        result, rest = await call(s, stub, "jira_get_issue", {"issue_key": "PAY-7"})
        text = result_text(result)
        say("   result text (first 30 lines):")
        for line in text.splitlines()[:30]:
            say(f"   | {line}")
        check(not result.isError and "Payment retries fail" in text, "jira_get_issue PAY-7")
        check("PAY-9" in text, "jira_get_issue PAY-7 result names the blocker PAY-9")
        check(rest and all(r["authorization"] == "Bearer alice-pat" for r in rest), "stub saw Bearer alice-pat")

        result, rest = await call(s, stub, "jira_get_issue", {"issue_key": "PAY-7", "fields": "summary,status,issuelinks"})
        text = result_text(result)
        links = json.loads(text).get("issuelinks", []) if not result.isError else []
        say(f"   issuelinks: {json.dumps(links)[:400]}")
        check(any(l.get("type", {}).get("inward") == "is blocked by" and l.get("inward_issue", {}).get("key") == "PAY-9"
                  for l in links), "issuelinks: PAY-7 is blocked by PAY-9 (when fields asks for issuelinks)")

        result, rest = await call(s, stub, "jira_get_issue", {"issue_key": "PAY-7", "fields": "*all"})
        text = result_text(result)
        say(f"   top-level keys: {list(json.loads(text)) if not result.isError else text[:300]}")
        check(not result.isError and "issuelinks" in json.loads(text), "jira_get_issue PAY-7 fields=*all")

        result, rest = await call(s, stub, "jira_search", {"jql": "project = PAY AND status != Done ORDER BY priority DESC",
                                                           "limit": 10})
        text = result_text(result)
        keys = [i["key"] for i in json.loads(text).get("issues", [])] if not result.isError else []
        say(f"   issues: {keys}")
        check(not result.isError and "PAY-7" in keys and "PAY-8" not in keys, "jira_search")

        comment = "Checked with the vendor: SDK v5.0 is on track for 2026-04-03."
        result, rest = await call(s, stub, "jira_add_comment", {"issue_key": "PAY-7", "body": comment})
        say(f"   result: {result_text(result)[:300]}")
        posted = stub_get(stub, "/__stub/comments/PAY-7")
        check(not result.isError and posted[-1]["author"] == "alice" and "2026-04-03" in posted[-1]["body"],
              "jira_add_comment recorded as alice")
        check(any(r["method"] == "POST" and r["authorization"] == "Bearer alice-pat" for r in rest),
              "comment POST carried Bearer alice-pat")

        result, rest = await call(s, stub, "confluence_get_page", {"page_id": "98305"})
        say(f"   result: {result_text(result)[:300]}")
        check(not result.isError and "runbook" in result_text(result).lower(), "confluence_get_page 98305")
        result, rest = await call(s, stub, "confluence_search", {"query": "retries"})
        say(f"   result: {result_text(result)[:300]}")
        check(not result.isError and "98305" in result_text(result), "confluence_search")

    say("\n== as Bob (Token bob-pat)")
    async with mcp_session(url, "Token bob-pat") as s:
        await s.initialize()
        result, rest = await call(s, stub, "jira_get_issue", {"issue_key": "PAY-9"})
        check(not result.isError and rest and all(r["authorization"] == "Bearer bob-pat" for r in rest),
              "stub saw Bearer bob-pat")
        result, rest = await call(s, stub, "jira_get_issue", {"issue_key": "PAY-7", "comment_limit": 10})
        check("2026-04-03" in result_text(result), "Bob sees Alice's new comment")

    say("\n== bad token (Token wrong-pat)")
    async with mcp_session(url, "Token wrong-pat") as s:
        await s.initialize()
        n = len((await s.list_tools()).tools)
        say(f"   tools listed with a bad token: {n}")
        result, rest = await call(s, stub, "jira_get_issue", {"issue_key": "PAY-7"})
        say(f"   result: {result_text(result)[:400]}")
        check(result.isError, "bad token: call returns isError")

    say("\n== no Authorization header (raw initialize)")
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "mcp-smoke", "version": "0"}}}
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(url, json=body, headers={"Accept": "application/json, text/event-stream"})
        say(f"   HTTP {r.status_code} {r.headers.get('content-type')} {r.text[:300]}")
        say(f"   www-authenticate: {r.headers.get('www-authenticate')}")
        check(r.status_code == 401, "no Authorization: HTTP 401")
        r = await http.post(url, json=body, headers={"Accept": "application/json, text/event-stream",
                                                     "Authorization": "Token alice-pat"})
        say(f"   with Token alice-pat: HTTP {r.status_code} {r.headers.get('content-type')} "
            f"mcp-session-id={r.headers.get('mcp-session-id')}")
        check(r.status_code == 200, "raw initialize with a token: HTTP 200")

    unknown = [r for r in stub_get(stub, "/__stub/requests") if not r["known"]]
    for r in unknown:
        say(f"   UNKNOWN ROUTE {r['method']} {r['path']}?{r['query']}")
    check(not unknown, "stub: no unknown routes")


async def everything_checks(url: str) -> None:
    say(f"\n== server-everything at {url}")
    async with mcp_session(url, None) as s:
        init = await s.initialize()
        say(f"initialize: {init.serverInfo.name} {init.serverInfo.version}")
        tools = (await s.list_tools()).tools
        say(f"tools: {len(tools)}: {', '.join(t.name for t in tools)}")
        result = await s.call_tool("echo", {"message": "hello from promptops"})
        say(f"echo -> {result_text(result)}")
        check(not result.isError and "hello from promptops" in result_text(result), "server-everything echo")


def stub_binary(explicit: str | None) -> str:
    """Builds the example; falls back to the last build when the crate does not compile now."""
    if explicit:
        return explicit
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    binary = target / "debug" / "examples" / "stub_atlassian"
    say("building the stub: cargo build --example stub_atlassian")
    build = subprocess.run(["nice", "-n", "10", "cargo", "build", "--quiet", "--example", "stub_atlassian"], cwd=REPO,
                           capture_output=True, text=True)
    if build.returncode != 0:
        if not binary.exists():
            sys.exit(f"cargo build --example stub_atlassian failed:\n{build.stderr[-3000:]}")
        say(f"WARNING: the build failed; using the previous build {binary}")
    return str(binary)


def start_stub(binary: str, procs: list) -> str:
    log = os.environ.get("STUB_LOG", "/tmp/mcp-smoke-stub.log")
    p = subprocess.Popen([binary], stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
    procs.append(p.pid)
    line = p.stdout.readline().strip()
    if not line.startswith("http"):
        sys.exit(f"stub did not print its URL (got {line!r}); see {log}")
    say(f"stub on {line} (log {log})")
    return line


def start(cmd: list[str], procs: list) -> None:
    pid = subprocess.run([str(ENV_SCRIPT), *cmd], check=True, capture_output=True, text=True).stdout.strip()
    procs.append(int(pid))


def main() -> None:
    global quiet
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stub-url", help="a running stub (the stub_atlassian example)")
    ap.add_argument("--stub-bin", help="the stub_atlassian example binary to start (default: cargo build it)")
    ap.add_argument("--atlassian-url", help="mcp-atlassian's /mcp URL (must point at --stub-url)")
    ap.add_argument("--everything-url", help="server-everything's /mcp URL")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    quiet = args.quiet
    procs: list[int] = []
    try:
        stub = args.stub_url or start_stub(stub_binary(args.stub_bin), procs)
        atl = args.atlassian_url
        if not atl:
            port = free_port()
            log = f"/tmp/mcp-smoke-atlassian-{port}.log"
            start(["start-atlassian", stub, str(port), log], procs)
            atl = f"http://127.0.0.1:{port}/mcp"
            say(f"mcp-atlassian on {atl} (log {log})")
        ev = args.everything_url
        if not ev:
            port = free_port()
            log = f"/tmp/mcp-smoke-everything-{port}.log"
            start(["start-everything", str(port), log], procs)
            ev = f"http://127.0.0.1:{port}/mcp"
            say(f"server-everything on {ev} (log {log})")
        asyncio.run(atlassian_checks(atl, stub))
        asyncio.run(everything_checks(ev))
    finally:
        for pid in reversed(procs):
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
    say(f"\n{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
