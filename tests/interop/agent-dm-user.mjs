#!/usr/bin/env node
// A real @xmtp/node-sdk 5.5.0 user whom a Clawx account opens a DM with:
//
//   node agent-dm-user.mjs --url http://127.0.0.1:PORT --from <account inbox id> --expect TEXT --reply TEXT
//
// Registers a fresh wallet and prints "READY <address> <inbox id>", then syncs until a DM from
// the account's inbox holds TEXT (exactly once), replies, and prints "PASS ...". Any failure
// prints "FAIL ..." as the last line.
import { ApiUrls, Client } from "@xmtp/node-sdk";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { hexToBytes } from "viem";

function arg(name) {
  const index = process.argv.indexOf(`--${name}`);
  if (index < 0 || index + 1 >= process.argv.length) {
    console.log(`FAIL agent-dm-user: missing --${name}`);
    process.exit(2);
  }
  return process.argv[index + 1];
}
function fail(message) {
  console.log(`FAIL agent-dm-user: ${message}`);
  process.exit(1);
}

const url = arg("url").replace(/\/$/, "");
const from = arg("from");
const expected = arg("expect");
const reply = arg("reply");
ApiUrls.local = url; // node-sdk 5.5.0 looks inbox ids up there whatever apiUrl says
setTimeout(() => fail("timed out after 90 s"), 90_000);
try {
  const account = privateKeyToAccount(generatePrivateKey());
  const signer = {
    type: "EOA",
    getIdentifier: () => ({ identifier: account.address.toLowerCase(), identifierKind: 0 }),
    signMessage: async (message) => hexToBytes(await account.signMessage({ message })),
  };
  const client = await Client.create(signer, { env: "local", apiUrl: url, dbPath: null, disableDeviceSync: true, historySyncUrl: null });
  console.log(`READY ${account.address.toLowerCase()} ${client.inboxId}`);
  const until = Date.now() + 60_000;
  let dm = null;
  for (;;) {
    await client.conversations.sync();
    dm = (await client.conversations.listDms()).find((conversation) => conversation.peerInboxId === from) || null;
    if (dm) {
      await dm.sync();
      const texts = (await dm.messages()).filter((m) => m.senderInboxId === from && m.content === expected);
      if (texts.length > 1) fail(`"${expected}" arrived ${texts.length} times`);
      if (texts.length === 1) break;
    }
    if (Date.now() > until) fail(`no DM from ${from} holding "${expected}" within 60 s (DM found: ${dm !== null})`);
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  await dm.sendText(reply);
  console.log(`PASS agent-dm-user: read "${expected}" in DM ${dm.id} and replied`);
  process.exit(0);
} catch (error) {
  fail(error?.stack || String(error));
}
