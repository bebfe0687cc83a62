#!/usr/bin/env node
// Checks, with a real @xmtp/node-sdk 5.5.0 client, that a Clawx account's XMTP identity is
// published the way XMTP clients expect:
//
//   node agent-identity.mjs --url http://127.0.0.1:PORT --address 0x... --inbox <inbox id>
//
// A throwaway node-sdk user finds that canMessage(address) is true and that the address's inbox
// id is the account's (looked up, and computed offline), then opens a DM with the account's inbox and sends a text: node-sdk
// checks the inbox's identity updates (wallet and installation signatures) and the key package
// when it creates the DM and its welcome. With --await-reply TEXT it then reads the account's
// reply in that DM. The last line printed is "PASS ..." or "FAIL ...".
import { ApiUrls, Client, generateInboxId, getInboxIdForIdentifier } from "@xmtp/node-sdk";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { hexToBytes } from "viem";

const IDENTIFIER_KIND_ETHEREUM = 0;

function arg(name) {
  const index = process.argv.indexOf(`--${name}`);
  if (index < 0 || index + 1 >= process.argv.length) {
    console.log(`FAIL agent-identity: missing --${name}`);
    process.exit(2);
  }
  return process.argv[index + 1];
}

const url = arg("url").replace(/\/$/, "");
const address = arg("address").toLowerCase();
const inbox = arg("inbox");
const text = process.argv.includes("--text") ? arg("text") : "hello agent";
// With --await-reply, the user then waits for that text from the account in the DM.
const awaitReply = process.argv.includes("--await-reply") ? arg("await-reply") : null;
// node-sdk 5.5.0 looks inbox ids up at ApiUrls.local whatever apiUrl says: point it at the node.
ApiUrls.local = url;

function fail(message) {
  console.log(`FAIL agent-identity: ${message}`);
  process.exit(1);
}

const timer = setTimeout(() => fail("timed out after 90 s"), 90_000);
try {
  const account = privateKeyToAccount(generatePrivateKey());
  const signer = {
    type: "EOA",
    getIdentifier: () => ({ identifier: account.address.toLowerCase(), identifierKind: IDENTIFIER_KIND_ETHEREUM }),
    signMessage: async (message) => hexToBytes(await account.signMessage({ message })),
  };
  const client = await Client.create(signer, { env: "local", apiUrl: url, dbPath: null, disableDeviceSync: true, historySyncUrl: null });
  const agent = { identifier: address, identifierKind: IDENTIFIER_KIND_ETHEREUM };
  const reachable = await client.canMessage([agent]);
  const canMessage = [...reachable.values()][0];
  if (canMessage !== true) fail(`canMessage(${address}) is ${canMessage}`);
  const found = await getInboxIdForIdentifier(agent, "local");
  if (found !== inbox) fail(`getInboxIdForIdentifier(${address}) is ${found}, expected ${inbox}`);
  const offline = generateInboxId(agent);
  if (offline !== inbox) fail(`generateInboxId(${address}) is ${offline}, expected ${inbox}`);
  const dm = await client.conversations.createDmWithIdentifier(agent);
  await dm.sendText(text);
  console.log(`SENDER ${client.inboxId}`);
  console.log("SENT");
  if (awaitReply !== null) {
    const until = Date.now() + 60_000;
    for (;;) {
      await dm.sync();
      const texts = (await dm.messages()).filter((m) => m.senderInboxId === inbox && m.content === awaitReply);
      if (texts.length === 1) break;
      if (texts.length > 1) fail(`the reply arrived ${texts.length} times`);
      if (Date.now() > until) fail(`no reply "${awaitReply}" from ${inbox} within 60 s`);
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
  }
  console.log(`PASS agent-identity: canMessage true, inbox ${found}, DM ${dm.id} created and text sent${awaitReply === null ? "" : ", reply read"}`);
  clearTimeout(timer);
  process.exit(0);
} catch (error) {
  fail(error?.stack || String(error));
}
