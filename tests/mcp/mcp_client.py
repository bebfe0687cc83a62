"""Drives Clawx's MCP endpoint (`/mcp`, Streamable HTTP) with the official MCP Python SDK.

Usage: mcp_client.py <base URL of a running clawx gateway, e.g. http://127.0.0.1:8080>

Creates two accounts over REST, then, as MCP clients of each (alice through the 2025-11-25
`initialize` handshake, bob through the 2026-07-28 `server/discover`): list the tools (each with
an input schema, REST bodies' tools with the REST body's schema), DM each other with send_dm and
read it with read_inbox, wait_for_messages returning a message sent during the wait and nothing on
timeout, a `subscriptions/listen` on clawx://inbox notified of a new message, a tool error carrying
the Clawx code, a revoked key ending a subscription and a wait at once and refused at the next
request, and a bad key refused before any MCP message is read. Exits non-zero on the first failure.
"""

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
from contextlib import asynccontextmanager

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import listen
from mcp.shared.exceptions import MCPError
from mcp.shared._httpx_utils import create_mcp_http_client

BASE = sys.argv[1].rstrip("/")
MCP_URL = f"{BASE}/mcp"

NEGOTIATED = set()

EXPECTED_TOOLS = {
    "whoami", "send_dm", "read_inbox", "read_conversation", "sync_xmtp", "wait_for_messages", "find_users", "get_user",
    "register_handle", "update_profile", "list_groups", "get_group", "create_group", "join_group", "leave_group",
    "post_group_message", "read_group_messages", "verify_start", "verify_complete", "verify_status", "check_spam",
}


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok - {what}")


def rest(method, path, body=None, key=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{BASE}{path}", data=data, method=method)
    request.add_header("content-type", "application/json")
    if key:
        request.add_header("x-api-key", key)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def new_account(handle):
    created = rest("POST", "/account/create", {})
    key = created["api_key"]
    rest("POST", "/account/register", {"handle": handle, "name": f"MCP test {handle}"}, key)
    return key


@asynccontextmanager
async def connect(key, modern=False):
    """A client session: the 2025-11-25 `initialize` handshake, or (modern) the 2026-07-28
    `server/discover`, which `subscriptions/listen` needs."""
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    async with http, streamable_http_client(MCP_URL, http_client=http) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            if modern:
                await session.discover()
            else:
                await session.initialize()
            NEGOTIATED.add(session.protocol_version)
            yield session


async def _drain(subscription):
    return [event async for event in subscription]


async def next_inbox_update(subscription, seconds):
    """The URI of the next resource update on `subscription`, or None after `seconds`."""
    try:
        event = await asyncio.wait_for(subscription.__anext__(), seconds)
    except asyncio.TimeoutError:
        return None
    return str(event.uri)


def payload(result):
    """The JSON a tool answered, from its structured content or else its text."""
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


async def call(session, name, arguments=None):
    result = await session.call_tool(name, arguments or {})
    return bool(result.is_error), payload(result)


async def main():
    suffix = str(int(time.time() * 1000))[-8:]
    alice_handle, bob_handle = f"mcpa{suffix}", f"mcpb{suffix}"
    alice_key, bob_key = new_account(alice_handle), new_account(bob_handle)

    async with connect(alice_key) as alice, connect(bob_key, modern=True) as bob:
        tools = (await alice.list_tools()).tools
        names = {tool.name for tool in tools}
        check(EXPECTED_TOOLS <= names, f"tools/list names the tools ({sorted(names)})")
        check(all(tool.input_schema.get("type") == "object" for tool in tools), "every tool has an object input schema")
        check(all(tool.description for tool in tools), "every tool has a description")
        send_schema = next(tool for tool in tools if tool.name == "send_dm").input_schema
        check({"to", "message"} <= set(send_schema.get("required", [])), "send_dm requires to and message")
        # Tools that take a REST body have that body's schema: its fields, formats and limits.
        register_schema = next(tool for tool in tools if tool.name == "register_handle").input_schema
        handle_schema = register_schema["properties"]["handle"]
        check(set(register_schema.get("required", [])) == {"handle", "name"}, "register_handle requires handle and name, as POST /account/register does")
        check(handle_schema.get("pattern") and handle_schema.get("maxLength") == 32, f"register_handle's handle has the REST format ({handle_schema})")
        check(register_schema.get("additionalProperties") is False, "register_handle refuses unknown fields, as the REST body does")
        complete_schema = next(tool for tool in tools if tool.name == "verify_complete").input_schema
        check(set(complete_schema["properties"]) == {"tweetUrl"}, "verify_complete takes the REST body's tweetUrl")

        failed, me = await call(alice, "whoami")
        check(not failed and me["handle"] == alice_handle, "whoami answers the key's account")

        failed, sent = await call(alice, "send_dm", {"to": bob_handle, "message": "hello bob", "idempotency_key": f"k-{suffix}"})
        check(not failed and sent["message"]["content"] == "hello bob", "send_dm by handle stores the message")
        first_id = sent["message"]["id"]
        failed, again = await call(alice, "send_dm", {"to": bob_handle, "message": "hello bob", "idempotency_key": f"k-{suffix}"})
        check(not failed and again["message"]["id"] == first_id, "a retried send_dm with the same idempotency key answers the first message")

        failed, inbox = await call(bob, "read_inbox")
        contents = [(message["sender_handle"], message["content"]) for message in inbox["conversations"]]
        check(not failed and (alice_handle, "hello bob") in contents, "bob's read_inbox shows alice's message")

        failed, replied = await call(bob, "send_dm", {"to": alice_handle, "message": "hi alice"})
        check(not failed, "bob replies with send_dm")
        failed, conversation = await call(alice, "read_conversation", {"with": bob_handle})
        check(not failed and [m["content"] for m in conversation["messages"]][:2] == ["hi alice", "hello bob"], "read_conversation lists both, newest first")

        # A wait that gets a message sent while it waits.
        cursor = replied["message"]["id"]
        started = time.monotonic()
        waiting = asyncio.create_task(call(bob, "wait_for_messages", {"after": cursor, "timeout_seconds": 20}))
        await asyncio.sleep(1.5)
        failed, _ = await call(alice, "send_dm", {"to": bob_handle, "message": "are you there?"})
        check(not failed, "alice sends while bob waits")
        failed, waited = await waiting
        check(not failed and [m["content"] for m in waited["messages"]] == ["are you there?"], "wait_for_messages answers the message sent during the wait")
        check(time.monotonic() - started < 15, "the wait ended with the message, not at its timeout")
        check(waited["next_after"] > cursor, "wait_for_messages answers a newer cursor")

        failed, empty = await call(bob, "wait_for_messages", {"after": waited["next_after"], "timeout_seconds": 1})
        check(not failed and empty["messages"] == [] and empty["next_after"] == waited["next_after"], "wait_for_messages answers [] on timeout")

        # A subscription to the inbox is told of a new message.
        async with listen(bob, resource_subscriptions=["clawx://inbox", "clawx://nothing"]) as subscription:
            honored = list(subscription.honored.resource_subscriptions or [])
            check(honored == ["clawx://inbox"], f"subscriptions/listen accepts clawx://inbox and nothing unknown ({honored})")
            check(await next_inbox_update(subscription, 1) is None, "no update before a message arrives")
            failed, _ = await call(alice, "send_dm", {"to": bob_handle, "message": "ping for the subscription"})
            check(not failed, "alice sends while bob listens")
            check(await next_inbox_update(subscription, 15) == "clawx://inbox", "the subscription gets notifications/resources/updated for clawx://inbox")
        # A subscription to nothing Clawx announces ends at once instead of holding a connection.
        async with listen(bob, resource_subscriptions=["clawx://nothing"]) as idle:
            events = await asyncio.wait_for(_drain(idle), 5)
        check(events == [], "a subscription naming nothing Clawx announces ends at once, empty")
        inbox_after = json.loads((await bob.read_resource("clawx://inbox")).contents[0].text)
        check(any(m["content"] == "ping for the subscription" for m in inbox_after["conversations"]), "reading clawx://inbox after the update shows the message")

        failed, error = await call(alice, "send_dm", {"to": f"nobody{suffix}", "message": "hello?"})
        check(failed and error["code"] == "NOT_FOUND", f"a tool error carries the Clawx code ({error})")
        failed, error = await call(alice, "send_dm", {"to": "x", "message": "hello?"})
        check(failed and error["code"] == "VALIDATION_FAILED" and error.get("field") == "to", f"a bad handle names the field ({error})")

        failed, found = await call(alice, "find_users", {"search": suffix})
        check(not failed and {alice_handle, bob_handle} <= {user["handle"] for user in found["users"]}, "find_users finds both accounts")
        failed, user = await call(alice, "get_user", {"handle": bob_handle})
        check(not failed and user["handle"] == bob_handle, "get_user answers bob's profile")

        # Resources: the caller's profile and inbox.
        uris = {str(resource.uri) for resource in (await bob.list_resources()).resources}
        check({"clawx://me", "clawx://inbox"} <= uris, f"resources/list names clawx://me and clawx://inbox ({sorted(uris)})")
        me_resource = json.loads((await bob.read_resource("clawx://me")).contents[0].text)
        check(me_resource["handle"] == bob_handle, "resources/read clawx://me answers the caller's profile")
        inbox_resource = json.loads((await bob.read_resource("clawx://inbox")).contents[0].text)
        check(any(m["content"] == "ping for the subscription" for m in inbox_resource["conversations"]), "resources/read clawx://inbox answers the caller's inbox")
        try:
            await bob.read_resource("clawx://nothing")
            check(False, "an unknown resource is an error")
        except MCPError as error:
            check(error.data and error.data.get("code") == "NOT_FOUND", f"an unknown resource is an error carrying NOT_FOUND ({error.data})")

        failed, synced = await call(bob, "sync_xmtp")
        check(not failed and isinstance(synced["synced"], int), "sync_xmtp answers a count")
        failed, updated = await call(alice, "update_profile", {"description": "an agent under test"})
        check(not failed and updated["description"] == "an agent under test", "update_profile changes only what it is given")
        failed, error = await call(alice, "register_handle", {"handle": f"again{suffix}", "name": "again"})
        check(failed and error["code"].isupper(), f"register_handle twice is a tool error with a code ({error})")
        failed, status = await call(alice, "verify_status")
        check(not failed and status["verified"] is False, "verify_status answers unverified")
        failed, started = await call(alice, "verify_start")
        check(not failed and started["verificationCode"].startswith("CLAW-") and started["verificationCode"] in started["tweetText"], "verify_start answers a code and its tweet")
        failed, error = await call(alice, "verify_complete", {"tweetUrl": "https://example.com/not-a-tweet"})
        check(failed and error["code"] == "INVALID_TWEET" and error.get("field") == "tweetUrl", f"verify_complete refuses a URL that is not a tweet ({error})")
        failed, error = await call(alice, "register_handle", {"handle": "a b", "name": "x"})
        check(failed and error["code"] == "VALIDATION_FAILED" and error.get("field") == "handle", f"a REST body's format check is a tool error naming the field ({error})")
        failed, error = await call(alice, "update_profile", {"nickname": "x"})
        check(failed and error["code"] == "VALIDATION_FAILED" and error.get("field") == "nickname", f"an unknown field is a tool error naming it ({error})")
        failed, verdict = await call(alice, "check_spam", {"address": user["wallet_address"]})
        check(not failed and verdict["isSpam"] is False, "check_spam answers a verdict")
        failed, error = await call(alice, "check_spam", {"address": "0x12"})
        check(failed and error["code"] == "VALIDATION_FAILED" and error.get("field") == "address", "check_spam names a bad address")

        # Groups: create, find, join, post, read, leave.
        failed, group = await call(alice, "create_group", {"title": f"MCP group {suffix}", "description": "tools for agents"})
        check(not failed and group["member_count"] == 1, "create_group makes alice its only member")
        group_id = group["id"]
        failed, listed = await call(bob, "list_groups", {"search": f"group {suffix}"})
        check(not failed and [g["id"] for g in listed["groups"]] == [group_id], "list_groups finds it")
        failed, error = await call(bob, "post_group_message", {"group_id": group_id, "message": "hi all"})
        check(failed and error["code"] == "FORBIDDEN", f"a non-member cannot post ({error})")
        failed, joined = await call(bob, "join_group", {"group_id": group_id})
        check(not failed and joined["joined"] and joined["member_count"] == 2, "join_group adds bob")
        failed, posted = await call(bob, "post_group_message", {"group_id": group_id, "message": "hi all"})
        check(not failed and posted["message"]["content"] == "hi all", "post_group_message posts")
        failed, chat = await call(alice, "read_group_messages", {"group_id": group_id})
        check(not failed and [m["content"] for m in chat["messages"]] == ["hi all"], "read_group_messages reads it")
        failed, detail = await call(alice, "get_group", {"group_id": group_id})
        check(not failed and len(detail["members"]) == 2, "get_group lists both members")
        failed, left = await call(bob, "leave_group", {"group_id": group_id})
        check(not failed and left["member_count"] == 1, "leave_group removes bob")
        failed, error = await call(alice, "get_group", {"group_id": "0" * 24})
        check(failed and error["code"] == "NOT_FOUND", "get_group of no group is NOT_FOUND")

    # A key revoked while its client is connected ends its subscription and its wait at once, and
    # is refused at the next request.
    second = rest("POST", "/account/keys", {"name": "mcp"}, alice_key)
    async with connect(second["api_key"], modern=True) as session:
        failed, me = await call(session, "whoami")
        check(not failed and me["handle"] == alice_handle, "a second key works over MCP")
        ended = {}

        async def follow():
            try:
                async with listen(session, resource_subscriptions=["clawx://inbox"]) as subscription:
                    ended["listening"] = True
                    async for _ in subscription:
                        pass
                ended["how"] = "closed"
            except Exception as error:  # the SDK reports the server's error or a lost stream
                ended["how"] = f"error: {error}"

        following = asyncio.create_task(follow())
        waiting = asyncio.create_task(call(session, "wait_for_messages", {"timeout_seconds": 50}))
        for _ in range(50):
            if ended.get("listening"):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)
        started = time.monotonic()
        revoke = urllib.request.Request(f"{BASE}/account/keys/{second['id']}", method="DELETE", headers={"x-api-key": alice_key})
        urllib.request.urlopen(revoke, timeout=10).close()
        await asyncio.wait_for(following, 10)
        check(time.monotonic() - started < 10 and "how" in ended, f"revoking the key ends its subscription at once ({ended.get('how')})")
        failed, answer = await asyncio.wait_for(waiting, 10)
        check(failed and answer.get("code") == "UNAUTHORIZED", f"revoking the key ends its wait at once with UNAUTHORIZED ({answer})")
        refused_after_revoke = False
        try:
            failed, answer = await call(session, "whoami")
            refused_after_revoke = failed and answer.get("code") == "UNAUTHORIZED"
        except Exception:  # the SDK raises on the HTTP 401
            refused_after_revoke = True
        check(refused_after_revoke, "a revoked key is refused at once on an open connection")

    # A bad key is refused before any MCP message is read.
    request = urllib.request.Request(
        MCP_URL,
        data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode(),
        method="POST",
        headers={"content-type": "application/json", "accept": "application/json, text/event-stream", "authorization": "Bearer clawx_not_a_key"},
    )
    try:
        urllib.request.urlopen(request, timeout=10)
        check(False, "a bad key is refused")
    except urllib.error.HTTPError as refused:
        body = json.loads(refused.read())
        check(refused.code == 401 and body["code"] == "UNAUTHORIZED", f"a bad key is refused with 401 UNAUTHORIZED ({body})")
    # DNS-rebinding protection: a Host that is not allowed (loopback by default) is refused.
    rebound = urllib.request.Request(
        MCP_URL,
        data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode(),
        method="POST",
        headers={"content-type": "application/json", "accept": "application/json, text/event-stream", "authorization": f"Bearer {alice_key}", "host": "rebound.example"},
    )
    try:
        urllib.request.urlopen(rebound, timeout=10)
        check(False, "a foreign Host is refused")
    except urllib.error.HTTPError as refused:
        check(refused.code == 403, "a foreign Host is refused with 403 (DNS-rebinding protection)")
    refused_by_sdk = False
    try:
        async with connect("clawx_not_a_key"):
            pass
    except Exception:  # the SDK raises its own error types for an HTTP 401
        refused_by_sdk = True
    check(refused_by_sdk, "the SDK cannot initialize with a bad key")
    print(f"negotiated protocol revisions: {sorted(NEGOTIATED)}")
    print("all MCP checks passed")


asyncio.run(main())
