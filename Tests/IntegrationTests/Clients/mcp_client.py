"""An AI agent's side of /mcp, with the official MCP Python SDK as the client, for MCPTests.

    mcp_client.py http URL          (token in ROLEGATE_TOKEN; Streamable HTTP)
    mcp_client.py stdio ROLEGATE API (token in ROLEGATE_TOKEN; `rolegate mcp` over stdio)

The token is a read-only role's (events_reader: SELECT on analytics). The agent lists the
tools, reads its privileges, lists and describes tables, runs a query, and then tries every
known way out of "read only": each must fail, and nothing may change. Prints one line per
check and "mcp client: all N checks passed"; exits 1 at the first failure.
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client

mode = sys.argv[1]
token = os.environ["ROLEGATE_TOKEN"]
passed = []


def check(condition, message):
    if not condition:
        print(f"FAIL: {message}", flush=True)
        sys.exit(1)
    passed.append(message)
    print(f"ok: {message}", flush=True)


def text(result):
    return "\n".join(part.text for part in result.content if getattr(part, "type", "") == "text")


async def scenario(session):
    await session.initialize()
    tools = {tool.name for tool in (await session.list_tools()).tools}
    check(tools == {"whoami", "list_schemas", "list_tables", "describe_table", "query", "explain", "request_access",
                    "access_status"}, f"tools {tools}")

    whoami = await session.call_tool("whoami", {})
    check(not whoami.isError and "role events_reader" in text(whoami), "whoami names the role")
    check("SELECT on analytics.events" in text(whoami), f"whoami lists privileges: {text(whoami)}")

    tables = await session.call_tool("list_tables", {})
    names = {(row[0], row[1]) for row in tables.structuredContent["rows"]}
    check(("analytics", "events") in names, f"list_tables shows analytics.events: {names}")
    check(not any(schema == "billing" for schema, _ in names), "list_tables hides what the role cannot see")

    described = await session.call_tool("describe_table", {"table": "analytics.events"})
    columns = [row[0] for row in described.structuredContent["columns"]["rows"]]
    check(columns == ["id", "name"], f"describe_table's columns: {columns}")
    hidden = await session.call_tool("describe_table", {"table": "billing.customers"})
    check(hidden.isError, "describe_table refuses a table the role cannot see")

    counted = await session.call_tool("query", {"sql": "SELECT count(*) AS n FROM analytics.events"})
    before = counted.structuredContent["rows"][0][0]
    check(not counted.isError and isinstance(before, int), f"query returns typed JSON: {counted.structuredContent}")
    check("<database-result>" in text(counted), "query's text is fenced as data")
    capped = await session.call_tool("query", {"sql": "SELECT generate_series(1, 50) AS i", "max_rows": 5})
    check(len(capped.structuredContent["rows"]) == 5 and capped.structuredContent.get("truncated"), "max_rows caps rows")

    attempts = {
        "chained statements": "COMMIT; DROP TABLE analytics.events",
        "writable CTE": "WITH gone AS (DELETE FROM analytics.events RETURNING *) SELECT count(*) FROM gone",
        "server file read": "SELECT pg_read_file('/etc/passwd')",
        "comment-prefixed write": "/* x */ INSERT INTO analytics.events (name) VALUES ('x')",
        "SET ROLE": "SET ROLE rolegate_admin",
        "SECURITY DEFINER function": "CREATE FUNCTION public.escalate() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'",
    }
    for name, sql in attempts.items():
        result = await session.call_tool("query", {"sql": sql})
        check(result.isError and "ERROR" in text(result), f"{name} fails: {text(result)[:100]}")

    after = (await session.call_tool("query", {"sql": "SELECT count(*) FROM analytics.events"})).structuredContent
    check(after["rows"][0][0] == before, "nothing changed")

    plan = await session.call_tool("explain", {"sql": "SELECT * FROM analytics.events"})
    check(not plan.isError and "Plan" in plan.structuredContent["plan"][0], "explain returns the JSON plan")
    analyzed = await session.call_tool("explain", {"sql": "SELECT 1", "analyze": True})
    check(analyzed.isError and "explain_analyze" in text(analyzed), "EXPLAIN ANALYZE is off unless the policy allows it")

    # An agent may ask a person for more, and wait; it never gets the elevated token this way.
    asked = await session.call_tool("request_access", {"access": "agent-write", "duration": "10m", "reason": "backfill"})
    check(not asked.isError and asked.structuredContent["state"] == "pending", f"request_access: {text(asked)}")
    status = await session.call_tool("access_status", {"id": asked.structuredContent["id"]})
    check(status.structuredContent["state"] == "pending", "access_status follows the request")
    refused = await session.call_tool("request_access", {"access": "nope"})
    check(refused.isError and "no requestable grant" in text(refused), "an unknown grant is refused")


async def main():
    if mode == "http":
        url = sys.argv[2]
        async with streamablehttp_client(url, headers={"Authorization": f"Bearer {token}"}) as (read, write, _):
            async with ClientSession(read, write) as session:
                await scenario(session)
    else:
        rolegate, api = sys.argv[2], sys.argv[3]
        parameters = StdioServerParameters(
            command=rolegate, args=["mcp", "--api", api], env={"ROLEGATE_TOKEN": token, "PATH": os.environ["PATH"]})
        async with stdio_client(parameters) as (read, write):
            async with ClientSession(read, write) as session:
                await scenario(session)
    print(f"mcp client: all {len(passed)} checks passed ({mode})", flush=True)


asyncio.run(main())
