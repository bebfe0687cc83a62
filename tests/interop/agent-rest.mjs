#!/usr/bin/env node
// Clawx agents and real @xmtp/node-sdk 5.5.0 users DM each other: the agent uses only Clawx's
// REST API, the users only XMTP (through Clawx's node on the same port).
//
//   node agent-rest.mjs --phase first  --url http://localhost:5556 --state DIR
//   (restart Clawx on the same data)
//   node agent-rest.mjs --phase second --url http://localhost:5556 --state DIR
//
// first:  a new account's wallet can be messaged on XMTP with the account's inbox id; user U
//         opens a DM with it and writes -> the text is in the agent's REST inbox, conversation
//         and event stream (sender_address U, sender_handle null); the agent answers with
//         POST /messages/dm/address -> U reads it; the agent writes to a fresh user V by
//         address -> V reads it and replies -> the agent has the reply after
//         /messages/xmtp/sync and on its stream.
// second: after the restart U writes in the same DM -> the agent has it; the agent answers ->
//         U reads it in the same conversation.
// replicas (with --rest-urls URL1,URL2: two gateways, each in front of its own messaging
//         replica on the same database): rounds of U writing, the agent reading through one
//         gateway and answering through both at once; U reads every answer in the same DM.
//
// The last line printed is "PASS ..." or "FAIL ...".
import { ApiUrls, Client } from "@xmtp/node-sdk";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { hexToBytes, toHex } from "viem";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

const ETHEREUM = 0;
function arg(name) {
  const index = process.argv.indexOf(`--${name}`);
  if (index < 0 || index + 1 >= process.argv.length) {
    console.log(`FAIL agent-rest: missing --${name}`);
    process.exit(2);
  }
  return process.argv[index + 1];
}
const phase = arg("phase");
const url = arg("url").replace(/\/$/, "");
const stateDir = path.resolve(arg("state"));
ApiUrls.local = url;
const started = Date.now();
const log = (message) => console.log(`[agent-rest ${phase} +${((Date.now() - started) / 1000).toFixed(1)}s] ${message}`);
function fail(message) {
  console.log(`FAIL agent-rest phase=${phase}: ${message}`);
  process.exit(1);
}
setTimeout(() => fail("timed out after 150 s"), 150_000);
process.on("unhandledRejection", (error) => fail(error?.stack || String(error)));

// ------------------------------------------------------------------ REST
async function restAt(base, method, route, key, body) {
  const headers = { "content-type": "application/json" };
  if (key) headers["x-api-key"] = key;
  const response = await fetch(base + route, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = await response.json().catch(() => null);
  if (!response.ok) fail(`${method} ${base}${route}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}
const rest = (method, route, key, body) => restAt(url, method, route, key, body);

/** Reads the agent's SSE stream into `events` until closed. */
function openStream(key) {
  const controller = new AbortController();
  const events = [];
  const done = (async () => {
    const response = await fetch(url + "/messages/stream", { headers: { "x-api-key": key, accept: "text/event-stream" }, signal: controller.signal });
    if (!response.ok) fail(`GET /messages/stream: ${response.status}`);
    const decoder = new TextDecoder();
    let buffer = "";
    for await (const chunk of response.body) {
      buffer += decoder.decode(chunk, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trim()).join("\n");
        if (data) {
          try { events.push(JSON.parse(data)); } catch { /* keep-alive or non-JSON */ }
        }
      }
    }
  })().catch((error) => { if (error.name !== "AbortError") fail(`stream: ${error}`); });
  return { events, close: () => { controller.abort(); return done; } };
}

async function until(what, seconds, probe) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const result = await probe();
    if (result) return result;
    if (Date.now() > deadline) fail(`${what} within ${seconds} s`);
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
}

// ------------------------------------------------------------------ XMTP users
function newWallet() {
  return { privateKey: generatePrivateKey(), dbEncryptionKey: toHex(crypto.randomBytes(32)) };
}
function options(name, wallet) {
  return {
    env: "local", apiUrl: url, dbPath: path.join(stateDir, `${name}.db3`), dbEncryptionKey: hexToBytes(wallet.dbEncryptionKey),
    disableDeviceSync: true, historySyncUrl: null, appVersion: "clawx-agent-interop/1",
  };
}
function identifierOf(wallet) {
  return { identifier: privateKeyToAccount(wallet.privateKey).address.toLowerCase(), identifierKind: ETHEREUM };
}
async function openUser(name, wallet, create) {
  const account = privateKeyToAccount(wallet.privateKey);
  const signer = {
    type: "EOA",
    getIdentifier: () => identifierOf(wallet),
    signMessage: async (message) => hexToBytes(await account.signMessage({ message })),
  };
  return create ? Client.create(signer, options(name, wallet)) : Client.build(identifierOf(wallet), options(name, wallet));
}
/** Waits until `client`'s DM with `peerInboxId` holds `text` (exactly once); the DM. */
async function readText(client, peerInboxId, text) {
  return until(`"${text}" from ${peerInboxId} read by ${client.inboxId}`, 60, async () => {
    await client.conversations.sync();
    const dm = (await client.conversations.listDms()).find((conversation) => conversation.peerInboxId === peerInboxId);
    if (!dm) return null;
    await dm.sync();
    const found = (await dm.messages()).filter((message) => message.senderInboxId === peerInboxId && message.content === text);
    if (found.length > 1) fail(`"${text}" arrived ${found.length} times`);
    return found.length === 1 ? dm : null;
  });
}

/** Waits until the agent's conversation with `address` holds `text` from that wallet; the message. */
async function agentHas(key, address, text, base = url) {
  return until(`"${text}" from ${address} in the agent's conversation`, 60, async () => {
    const { messages } = await restAt(base, "GET", `/messages/address/${address}`, key);
    const found = messages.filter((message) => message.content === text);
    if (found.length > 1) fail(`"${text}" stored ${found.length} times`);
    return found[0] ?? null;
  });
}

function checkInbound(message, address, agentId) {
  if (message.sender_address !== address) fail(`sender_address ${message.sender_address}, expected ${address}`);
  if (message.sender_handle !== null && message.sender_handle !== undefined) fail(`sender_handle ${message.sender_handle}, expected null`);
  if (message.recipient_id !== agentId) fail(`recipient_id ${message.recipient_id}, expected ${agentId}`);
}

// ------------------------------------------------------------------ phases
const stateFile = path.join(stateDir, "agent-rest.json");
if (phase === "first") {
  fs.mkdirSync(stateDir, { recursive: true });
  const created = await rest("POST", "/account/create");
  const key = created.api_key;
  const handle = `agent${crypto.randomBytes(4).toString("hex")}`;
  await rest("POST", "/account/register", key, { handle, name: "Interop agent" });
  const me = await rest("GET", "/account/me", key);
  const agent = { identifier: me.wallet_address.toLowerCase(), identifierKind: ETHEREUM };
  log(`agent ${handle} ${agent.identifier} inbox ${me.xmtp_inbox_id}`);

  const userWallet = newWallet();
  const user = await openUser("user", userWallet, true);
  const userAddress = identifierOf(userWallet).identifier;
  await until("the agent's wallet can be messaged", 30, async () => [...(await user.canMessage([agent])).values()][0] === true);
  const inboxId = await user.fetchInboxIdByIdentifier(agent);
  if (inboxId !== me.xmtp_inbox_id) fail(`the agent's inbox on XMTP is ${inboxId}, its account says ${me.xmtp_inbox_id}`);
  log("canMessage true, inbox id matches");

  const stream = openStream(key);
  await new Promise((resolve) => setTimeout(resolve, 500));
  const dm = await user.conversations.createDmWithIdentifier(agent);
  await dm.sendText("hello agent");
  const inbound = await agentHas(key, userAddress, "hello agent");
  checkInbound(inbound, userAddress, me.id);
  const { conversations } = await rest("GET", "/messages/inbox", key);
  if (!conversations.some((message) => message.id === inbound.id)) fail("the user's message is not in the agent's inbox");
  await until("the user's message on the agent's stream", 20, async () => stream.events.some((event) => event.id === inbound.id));
  log("the user's text reached the agent's inbox, conversation and stream");

  const answer = await rest("POST", "/messages/dm/address", key, { wallet_address: userAddress, message: "hello human" });
  await readText(user, me.xmtp_inbox_id, "hello human");
  await until("the answer marked sent", 30, async () => {
    const { messages } = await rest("GET", `/messages/address/${userAddress}`, key);
    return messages.find((message) => message.id === answer.message.id)?.delivery === "sent";
  });
  log("the agent's answer reached the user");

  const otherWallet = newWallet();
  const other = await openUser("other", otherWallet, true);
  const otherAddress = identifierOf(otherWallet).identifier;
  await rest("POST", "/messages/dm/address", key, { wallet_address: otherAddress, message: "hi, I am an agent" });
  const otherDm = await readText(other, me.xmtp_inbox_id, "hi, I am an agent");
  await otherDm.sendText("hi agent");
  const synced = await until("the reply pulled by /messages/xmtp/sync", 60, async () => {
    const result = await rest("GET", "/messages/xmtp/sync", key);
    if (result.message !== `${result.synced} messages synced from XMTP`) fail(`sync message: ${JSON.stringify(result)}`);
    const { messages } = await rest("GET", `/messages/address/${otherAddress}`, key);
    return messages.find((message) => message.content === "hi agent") ?? null;
  });
  checkInbound(synced, otherAddress, me.id);
  const again = await rest("GET", "/messages/xmtp/sync", key);
  if (again.synced !== 0) fail(`a second sync stored ${again.synced} more`);
  await until("the reply on the agent's stream", 20, async () => stream.events.some((event) => event.id === synced.id));
  await stream.close();
  log("the agent's DM to a fresh user was read and answered");

  fs.writeFileSync(stateFile, JSON.stringify({ key, agentId: me.id, inboxId: me.xmtp_inbox_id, agent, userWallet }));
  console.log("PASS agent-rest phase=first");
  process.exit(0);
} else if (phase === "second") {
  const state = JSON.parse(fs.readFileSync(stateFile, "utf8"));
  const user = await openUser("user", state.userWallet, false);
  const userAddress = identifierOf(state.userWallet).identifier;
  await user.conversations.sync();
  const dm = (await user.conversations.listDms()).find((conversation) => conversation.peerInboxId === state.inboxId);
  if (!dm) fail("the user's DM with the agent is gone after the restart");
  await dm.sendText("still there?");
  checkInbound(await agentHas(state.key, userAddress, "still there?"), userAddress, state.agentId);
  await rest("POST", "/messages/dm/address", state.key, { wallet_address: userAddress, message: "still here" });
  const read = await readText(user, state.inboxId, "still here");
  if (read.id !== dm.id) fail(`the answer came in another conversation (${read.id}, not ${dm.id})`);
  console.log("PASS agent-rest phase=second");
  process.exit(0);
} else if (phase === "replicas") {
  // Two messaging replicas on one database, each behind its own gateway: the agent reads and
  // answers through one, then the other, while the user writes in the same DM; whichever
  // replica pulls or sends, the MLS group must not fork, so the user reads every answer.
  const bases = arg("rest-urls").split(",").map((base) => base.replace(/\/$/, ""));
  const state = JSON.parse(fs.readFileSync(stateFile, "utf8"));
  const user = await openUser("user", state.userWallet, false);
  const userAddress = identifierOf(state.userWallet).identifier;
  await user.conversations.sync();
  const dm = (await user.conversations.listDms()).find((conversation) => conversation.peerInboxId === state.inboxId);
  if (!dm) fail("the user's DM with the agent is gone");
  for (let round = 0; round < 4; round++) {
    const base = bases[round % bases.length];
    await dm.sendText(`round ${round}: are you there?`);
    checkInbound(await agentHas(state.key, userAddress, `round ${round}: are you there?`, base), userAddress, state.agentId);
    // Two answers at once, one through each replica.
    await Promise.all(bases.map((other, index) =>
      restAt(other, "POST", "/messages/dm/address", state.key, { wallet_address: userAddress, message: `round ${round}: answer ${index}` })));
    for (let index = 0; index < bases.length; index++) {
      const read = await readText(user, state.inboxId, `round ${round}: answer ${index}`);
      if (read.id !== dm.id) fail(`round ${round}: answer ${index} came in another conversation`);
    }
    log(`round ${round}: read through ${base}, both answers read by the user`);
  }
  console.log(`PASS agent-rest phase=replicas through ${bases.join(" and ")}`);
  process.exit(0);
} else {
  fail(`unknown phase ${phase}`);
}
