#!/usr/bin/env node
// XMTP v3 interop test: real, unmodified @xmtp/node-sdk 5.5.0 clients exchange DMs through an XMTP node.
//
//   node xmtp-dm.mjs --phase first  --url http://localhost:5556 --state /tmp/xmtp-state
//   (restart the server, keeping its data)
//   node xmtp-dm.mjs --phase second --url http://localhost:5556 --state /tmp/xmtp-state
//
// first:  wallets A, B, C register; A->B DM text 1 (B syncs), B->A text 2 (streamed to A),
//         A->B text 3 (B stays offline), A->C DM (C stays offline).
// second: A, B, C reopen from their dbs; A and B see texts 1-3 in order (B fetches text 3 from the
//         server), C fetches its welcome and A's text from the server, A->B text 4 is streamed to B.
//
// Exit codes: 0 pass, 1 test failure (assertion or client/RPC error), 2 usage or state-dir error,
// 124 phase timeout. The last line printed is always "PASS ..." or "FAIL ...". See README.md.
import { ApiUrls, Client } from "@xmtp/node-sdk";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { hexToBytes, toHex } from "viem";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

// ---------------------------------------------------------------- constants (node-bindings const enums)
const IDENTIFIER_KIND_ETHEREUM = 0; // IdentifierKind.Ethereum
const STATE_FILE = "state.json";
const STATE_VERSION = 1;

// ---------------------------------------------------------------- CLI
const USAGE = `usage: node xmtp-dm.mjs --phase first|second [--url URL] [--state DIR] [--timeout SECONDS] [--reset] [--verbose] [--any-port]
  --phase    first:  register fresh wallets A, B, C; DM A->B (B syncs), reply B->A (streamed to A),
                     leave one A->B text and an A->C DM unread on the server
             second: reopen A, B, C from --state; check A/B history (B and C fetch the unread data
                     from the server); A->B text streamed to B. Run after the server restarted.
  --url      XMTP node gRPC URL (h2c or TLS)         env XMTP_URL        default http://localhost:5556
  --state    dir for keys, db keys, client db files   env XMTP_STATE_DIR  default ./xmtp-interop-state
  --timeout  budget for the whole phase, seconds      env XMTP_TIMEOUT    default 60
  --reset    (phase first) delete this script's files in --state before starting
  --verbose  print per-client libxmtp API statistics  env XMTP_VERBOSE=1
  --any-port opt-in workaround: also point the SDK's built-in "local" URL (ApiUrls.local, used by
             node-sdk 5.5.0 for inbox-id lookups) at --url, so a node on another port works
                                                      env XMTP_ANY_PORT=1
  env XMTP_LOG_LEVEL=Error|Warn|Info|Debug|Trace turns on libxmtp's own logging (stdout)`;

function parseArgs(argv) {
  const o = {
    phase: process.env.XMTP_PHASE,
    url: process.env.XMTP_URL || "http://localhost:5556",
    state: process.env.XMTP_STATE_DIR || "./xmtp-interop-state",
    timeout: Number(process.env.XMTP_TIMEOUT || 60),
    reset: false,
    verbose: process.env.XMTP_VERBOSE === "1",
    anyPort: process.env.XMTP_ANY_PORT === "1",
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [k, inline] = a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    const val = () => { if (inline !== undefined) return inline; if (i + 1 >= argv.length) usage(`missing value for ${k}`); return argv[++i]; };
    switch (k) {
      case "--phase": o.phase = val(); break;
      case "--url": o.url = val(); break;
      case "--state": o.state = val(); break;
      case "--timeout": o.timeout = Number(val()); break;
      case "--reset": o.reset = true; break;
      case "--verbose": o.verbose = true; break;
      case "--any-port": o.anyPort = true; break;
      case "-h": case "--help": console.log(USAGE); process.exit(0);
      default: usage(`unknown argument ${a}`);
    }
  }
  if (o.phase !== "first" && o.phase !== "second") usage("--phase must be first or second");
  if (!/^https?:\/\/[^/]+\/?$/.test(o.url)) usage(`--url must look like http://host:port, got ${o.url}`);
  if (!(o.timeout > 0)) usage("--timeout must be a positive number of seconds");
  o.url = o.url.replace(/\/$/, "");
  o.state = path.resolve(o.state);
  return o;
}
function usage(msg) { console.error(`xmtp-dm: ${msg}\n${USAGE}`); console.log(`FAIL xmtp-dm: usage: ${msg}`); process.exit(2); }

const opts = parseArgs(process.argv.slice(2));

// ---------------------------------------------------------------- output, failure, deadline
const t0 = Date.now();
const el = () => ((Date.now() - t0) / 1000).toFixed(2) + "s";
const log = (msg) => console.log(`[xmtp-dm ${opts.phase} +${el()}] ${msg}`);
let stepNo = 0;
let stepDesc = "start-up";
const STREAM_WAIT_MS = 20000; // a streamed message that takes longer than this counts as not delivered
let finished = false;

class TestFailure extends Error { constructor(msg, code = 1) { super(msg); this.code = code; } }
function finish(code, msg) {
  if (finished) return; finished = true;
  if (code === 0) console.log(`PASS xmtp-dm phase=${opts.phase} in ${el()}${msg ? ": " + msg : ""}`);
  else {
    if (/tcp connect error|transport error|connection refused/i.test(msg ?? "")) {
      msg += ` [hint: is an XMTP node listening at ${opts.url}${opts.anyPort || opts.url === ApiUrls.local ? "" : ` and at ${ApiUrls.local} (inbox-id lookups)`}?]`;
    }
    console.log(`FAIL xmtp-dm phase=${opts.phase} after ${el()} (exit ${code}): ${msg}`);
  }
  // The native bindings keep threads and gRPC connections alive; exit explicitly.
  process.exit(code);
}
const deadline = t0 + opts.timeout * 1000;
const watchdog = setTimeout(() => finish(124, `phase timeout: exceeded ${opts.timeout}s overall budget during step ${stepNo} (${stepDesc})`), opts.timeout * 1000);
process.on("unhandledRejection", (e) => finish(1, `unhandled rejection: ${e?.stack || e}`));
process.on("uncaughtException", (e) => finish(1, `uncaught exception: ${e?.stack || e}`));

function withTimeout(promise, ms, what) {
  let t;
  const timer = new Promise((_, rej) => { t = setTimeout(() => rej(new TestFailure(`timeout after ${(ms / 1000).toFixed(1)}s: ${what}`, 124)), ms); });
  return Promise.race([promise, timer]).finally(() => clearTimeout(t));
}
/** Runs one numbered step; it may use at most the remaining phase budget. */
async function step(desc, fn) {
  stepNo++;
  const n = stepNo; const s = Date.now(); stepDesc = desc;
  log(`STEP ${n}: ${desc} ...`);
  const remaining = deadline - Date.now();
  if (remaining <= 0) throw new TestFailure(`phase timeout before step ${n}: ${desc}`, 124);
  try {
    const r = await withTimeout(Promise.resolve().then(fn), remaining, `step ${n}: ${desc}`);
    log(`STEP ${n}: ok (${Date.now() - s} ms)`);
    return r;
  } catch (e) {
    if (e instanceof TestFailure) throw e;
    throw new TestFailure(`step ${n} (${desc}) threw: ${e?.message || e}`);
  }
}
function check(cond, msg) { if (!cond) throw new TestFailure(`assertion failed: ${msg}`); }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- state dir
const stateFile = path.join(opts.state, STATE_FILE);
const dbFile = (who) => path.join(opts.state, `${who}.db3`);
function saveState(st) {
  const tmp = stateFile + ".tmp";
  fs.writeFileSync(tmp, JSON.stringify(st, null, 2) + "\n", { mode: 0o600 });
  fs.renameSync(tmp, stateFile);
}
function loadState() {
  if (!fs.existsSync(stateFile)) throw new TestFailure(`no ${stateFile}: run --phase first with the same --state first`, 2);
  const st = JSON.parse(fs.readFileSync(stateFile, "utf8"));
  if (st.version !== STATE_VERSION) throw new TestFailure(`unsupported state version in ${stateFile}`, 2);
  if (!st.firstPhaseCompleted) throw new TestFailure(`${stateFile}: phase first did not complete; rerun it with --reset`, 2);
  return st;
}
function ownFiles() {
  if (!fs.existsSync(opts.state)) return [];
  return fs.readdirSync(opts.state).filter((f) => f === STATE_FILE || f === STATE_FILE + ".tmp" || /^[abc]\.db3/.test(f));
}

// ---------------------------------------------------------------- XMTP helpers
function makeSigner(privateKey) {
  const account = privateKeyToAccount(privateKey);
  return {
    account,
    identifier: { identifier: account.address.toLowerCase(), identifierKind: IDENTIFIER_KIND_ETHEREUM },
    signer: {
      type: "EOA",
      getIdentifier: () => ({ identifier: account.address.toLowerCase(), identifierKind: IDENTIFIER_KIND_ETHEREUM }),
      signMessage: async (message) => hexToBytes(await account.signMessage({ message })),
    },
  };
}
function clientOptions(who, wallet) {
  const o = {
    env: "local",
    apiUrl: opts.url,
    dbPath: dbFile(who),
    dbEncryptionKey: hexToBytes(wallet.dbEncryptionKey),
    disableDeviceSync: true,
    historySyncUrl: null, // no history-sync server in this test (default for env local is localhost:5558)
    appVersion: "clawx-interop/1",
  };
  if (process.env.XMTP_LOG_LEVEL) o.loggingLevel = process.env.XMTP_LOG_LEVEL;
  return o;
}
const isText = (m) => m?.contentType?.typeId === "text" && typeof m.content === "string";
async function textsOf(conv) {
  const msgs = await conv.messages();
  return msgs.filter(isText).sort((x, y) => (x.sentAtNs < y.sentAtNs ? -1 : x.sentAtNs > y.sentAtNs ? 1 : 0));
}
function fmtTexts(list) { return JSON.stringify(list.map((m) => m.content)); }

/**
 * Starts client.conversations.streamAllMessages() and returns { waitFor(pred, what), close(), events }.
 * Stream retries are disabled: if the server ends or breaks the subscription, the test fails with a clear
 * message instead of silently waiting for the SDK's 60 s retry delay.
 */
async function openMessageStream(client, name) {
  const events = [];
  let failure = null;
  const waiters = new Set();
  const received = [];
  const notify = () => { for (const w of waiters) w(); };
  const stream = await client.conversations.streamAllMessages({
    retryOnFail: false,
    onValue: (m) => { received.push(m); notify(); },
    onError: (e) => { events.push(`error: ${e?.message || e}`); log(`${name}'s message stream reported an error: ${e?.message || e}`); failure = failure || e; notify(); },
    onFail: () => { events.push("fail"); log(`${name}'s message stream failed (server ended or broke the subscription)`); failure = failure || new Error("stream failed"); notify(); },
    onEnd: () => { events.push("end"); },
  });
  return {
    events,
    received,
    async waitFor(pred, what) {
      const until = Date.now() + STREAM_WAIT_MS;
      for (;;) {
        if (Date.now() > until) {
          throw new TestFailure(`${what} did not arrive through ${name}'s message stream within ${STREAM_WAIT_MS / 1000}s ` +
            `(${received.length} other message(s) streamed; is the server delivering live SubscribeGroupMessages items?)`);
        }
        const hit = received.find(pred);
        if (hit) return hit;
        if (failure) throw new TestFailure(`${name}'s message stream failed while waiting for ${what}: ${failure.message || failure}`);
        await new Promise((r) => { const t = setTimeout(r, 1000); waiters.add(() => { clearTimeout(t); r(); }); });
        waiters.clear();
      }
    },
    async close() { try { await withTimeout(stream.end(), 5000, "closing stream"); } catch { /* ignore */ } },
  };
}
function stats(client, who) {
  if (!opts.verbose) return;
  try { log(`${who} libxmtp API stats: ${client.debugInformation.apiAggregateStatistics().replace(/\s+/g, " ")}`); } catch (e) { log(`${who}: no stats (${e.message})`); }
}

// ---------------------------------------------------------------- phase first
async function createClient(st, who, W, name) {
  const c = await step(`create + register client ${name} (Client.create)`, () => Client.create(W.signer, clientOptions(who, st[who])));
  st[who].inboxId = c.inboxId; st[who].installationId = c.installationId; saveState(st);
  log(`${name} inbox ${c.inboxId} installation ${c.installationId} registered=${c.isRegistered}${who === "a" ? ` libxmtp=${c.libxmtpVersion}` : ""}`);
  check(c.isRegistered, `client ${name} is registered after Client.create`);
  return c;
}

async function phaseFirst() {
  if (opts.reset) {
    for (const f of ownFiles()) fs.rmSync(path.join(opts.state, f), { force: true });
  }
  const leftovers = ownFiles();
  if (leftovers.length) throw new TestFailure(`state dir ${opts.state} already holds ${leftovers.join(", ")}; use a fresh dir or --reset`, 2);
  fs.mkdirSync(opts.state, { recursive: true, mode: 0o700 });

  const runId = crypto.randomBytes(4).toString("hex");
  const wallet = () => ({ privateKey: generatePrivateKey(), dbEncryptionKey: toHex(crypto.randomBytes(32)) });
  const st = {
    version: STATE_VERSION,
    url: opts.url,
    runId,
    createdAt: new Date().toISOString(),
    a: wallet(), b: wallet(), c: wallet(),
    // the A<->B DM, in order; phase second expects exactly these (and appends one per run)
    texts: [`hello B, this is A (run ${runId}, text 1)`, `hi A, B here (run ${runId}, text 2)`, `B reads this only after the restart (run ${runId}, text 3)`],
    senders: ["a", "b", "a"],
    cText: `hello C, read me after the restart (run ${runId})`,
    firstPhaseCompleted: false,
  };
  const A = makeSigner(st.a.privateKey); const B = makeSigner(st.b.privateKey); const C = makeSigner(st.c.privateKey);
  st.a.address = A.identifier.identifier; st.b.address = B.identifier.identifier; st.c.address = C.identifier.identifier;
  saveState(st); // keys persisted before anything touches the network
  log(`node ${opts.url}, state ${opts.state}, run ${runId}`);
  log(`wallets: A ${st.a.address}, B ${st.b.address}, C ${st.c.address}`);

  const a = await createClient(st, "a", A, "A");
  const b = await createClient(st, "b", B, "B");
  const c = await createClient(st, "c", C, "C");
  check(new Set([a.inboxId, b.inboxId, c.inboxId]).size === 3, "A, B and C have different inbox ids");

  await step("A.canMessage([B's address]) is true", async () => {
    const res = await a.canMessage([B.identifier]);
    const v = res.get(B.identifier.identifier) ?? [...res.values()][0];
    log(`canMessage -> ${JSON.stringify(Object.fromEntries(res))}`);
    check(v === true, `canMessage(B) should be true, got ${v}`);
  });

  const dmA = await step("A opens a DM to B by address (createDmWithIdentifier)", () => a.conversations.createDmWithIdentifier(B.identifier));
  st.dmId = dmA.id; saveState(st);
  log(`DM A<->B id ${dmA.id}`);

  await step(`A sends text 1: "${st.texts[0]}"`, () => dmA.sendText(st.texts[0]));

  const dmB = await step("B syncs (conversations.sync + syncAll), finds the DM and reads text 1", async () => {
    for (let attempt = 1; ; attempt++) {
      await b.conversations.sync();
      await b.conversations.syncAll();
      const dm = b.conversations.getDmByInboxId(a.inboxId);
      if (dm) {
        await dm.sync();
        const texts = await textsOf(dm);
        if (texts.some((m) => m.content === st.texts[0])) {
          check(dm.id === st.dmId, `B's DM id ${dm.id} equals A's DM id ${st.dmId}`);
          const m = texts.find((x) => x.content === st.texts[0]);
          check(m.senderInboxId === a.inboxId, "text 1 sender is A");
          log(`B sees ${fmtTexts(texts)} (attempt ${attempt})`);
          return dm;
        }
        log(`B has the DM but not text 1 yet: ${fmtTexts(texts)} (attempt ${attempt})`);
      } else log(`B does not see the DM yet (attempt ${attempt}, ${b.conversations.listDms().length} DMs)`);
      await sleep(500);
    }
  });

  const streamA = await step("A starts conversations.streamAllMessages()", () => openMessageStream(a, "A"));

  await step(`B replies with text 2: "${st.texts[1]}"`, () => dmB.sendText(st.texts[1]));

  await step("A receives text 2 through its message stream", async () => {
    const m = await streamA.waitFor((x) => isText(x) && x.content === st.texts[1], "text 2");
    check(m.senderInboxId === b.inboxId, "streamed text 2 sender is B");
    check(m.conversationId === st.dmId, "streamed text 2 is in the DM");
    log(`A streamed ${streamA.received.length} message(s); text 2 arrived`);
  });
  await streamA.close();

  await step("A's DM history is [text 1, text 2]", async () => {
    const texts = await textsOf(dmA);
    check(JSON.stringify(texts.map((m) => m.content)) === JSON.stringify(st.texts.slice(0, 2)), `A's history ${fmtTexts(texts)}`);
  });

  // Data only the server holds: phase second reads it after the restart.
  await step(`A sends text 3, which B must fetch from the server after the restart: "${st.texts[2]}"`, () => dmA.sendText(st.texts[2]));
  await step("B has not fetched text 3 (no sync, no stream)", async () => {
    const texts = await textsOf(dmB);
    if (texts.some((m) => m.content === st.texts[2])) log("warning: B already has text 3 locally; phase second proves less about server persistence");
    else log(`B's local history stays ${fmtTexts(texts)}`);
  });
  const dmC = await step("A opens a DM to C (C stays offline until phase second) and sends a text", async () => {
    const dm = await a.conversations.createDmWithIdentifier(C.identifier);
    await dm.sendText(st.cText);
    return dm;
  });
  st.dmCId = dmC.id;
  log(`DM A<->C id ${dmC.id}`);

  stats(a, "A"); stats(b, "B"); stats(c, "C");
  st.firstPhaseCompleted = true; st.firstPhaseAt = new Date().toISOString(); saveState(st);
}

// ---------------------------------------------------------------- phase second
async function phaseSecond() {
  const st = await step(`load ${stateFile}`, () => loadState());
  if (st.url !== opts.url) log(`note: phase first used ${st.url}, this run uses ${opts.url}`);
  for (const who of ["a", "b", "c"]) if (!fs.existsSync(dbFile(who))) throw new TestFailure(`missing client db ${dbFile(who)}`, 2);
  const A = makeSigner(st.a.privateKey); const B = makeSigner(st.b.privateKey); const C = makeSigner(st.c.privateKey);

  const reopen = async (who, W, name) => {
    const c = await step(`reopen client ${name} from its db (Client.build, no signer)`, () => Client.build(W.identifier, clientOptions(who, st[who])));
    check(c.inboxId === st[who].inboxId, `${name}'s inbox id ${c.inboxId} equals the saved ${st[who].inboxId}`);
    check(c.installationId === st[who].installationId, `${name}'s installation id is unchanged (client db reused)`);
    check(c.isRegistered, `${name} is registered`);
    return c;
  };
  const a = await reopen("a", A, "A");
  const b = await reopen("b", B, "B");
  const c = await reopen("c", C, "C");

  const history = async (cl, name) => {
    await cl.conversations.sync();
    await cl.conversations.syncAll();
    const dm = await cl.conversations.getConversationById(st.dmId);
    check(dm, `${name} finds the DM ${st.dmId}`);
    await dm.sync();
    const texts = await textsOf(dm);
    log(`${name}'s DM history: ${fmtTexts(texts)}`);
    check(JSON.stringify(texts.map((m) => m.content)) === JSON.stringify(st.texts), `${name}'s history is ${JSON.stringify(st.texts)}, got ${fmtTexts(texts)}`);
    texts.forEach((m, i) => check(m.senderInboxId === st[st.senders[i]].inboxId, `${name}'s history: text ${i + 1} is from ${st.senders[i].toUpperCase()}`));
    return dm;
  };
  const n = st.texts.length;
  const dmA = await step(`A syncs; the A<->B DM holds the ${n} texts sent so far, in order`, () => history(a, "A"));
  const dmB = await step(`B syncs; the A<->B DM holds the ${n} texts (text 3 fetched from the server), in order`, () => history(b, "B"));

  await step("C syncs for the first time; finds A's DM (welcome from the server) and its text", async () => {
    await c.conversations.sync();
    await c.conversations.syncAll();
    const dm = c.conversations.getDmByInboxId(st.a.inboxId);
    check(dm, `C finds a DM with A (has ${c.conversations.listDms().length} DMs)`);
    check(dm.id === st.dmCId, `C's DM id ${dm.id} equals A's ${st.dmCId}`);
    await dm.sync();
    const texts = await textsOf(dm);
    log(`C's DM history: ${fmtTexts(texts)}`);
    check(texts.some((m) => m.content === st.cText && m.senderInboxId === st.a.inboxId), `C reads A's text ${JSON.stringify(st.cText)}`);
  });

  await step("A.canMessage([B's address]) is still true", async () => {
    const res = await a.canMessage([B.identifier]);
    const v = res.get(B.identifier.identifier) ?? [...res.values()][0];
    check(v === true, `canMessage(B) should be true, got ${v}`);
  });

  const runNo = (st.secondPhaseRuns ?? 0) + 1;
  const textN = `A again, after the restart (run ${st.runId}, second-phase run ${runNo}, text ${n + 1})`;
  const streamB = await step("B starts conversations.streamAllMessages()", () => openMessageStream(b, "B"));
  await step(`A sends text ${n + 1}: "${textN}"`, () => dmA.sendText(textN));
  await step(`B receives text ${n + 1} through its message stream`, async () => {
    const m = await streamB.waitFor((x) => isText(x) && x.content === textN, `text ${n + 1}`);
    check(m.senderInboxId === st.a.inboxId, `streamed text ${n + 1} sender is A`);
    check(m.conversationId === st.dmId, `streamed text ${n + 1} is in the DM`);
  });
  await streamB.close();

  const expected = [...st.texts, textN];
  await step(`A and B sync; both DM histories are the ${n + 1} texts, in order`, async () => {
    for (const [name, dm] of [["A", dmA], ["B", dmB]]) {
      await dm.sync();
      const texts = await textsOf(dm);
      check(JSON.stringify(texts.map((m) => m.content)) === JSON.stringify(expected), `${name}'s history is ${JSON.stringify(expected)}, got ${fmtTexts(texts)}`);
    }
  });
  stats(a, "A"); stats(b, "B"); stats(c, "C");
  st.texts = expected; st.senders = [...st.senders, "a"]; st.secondPhaseRuns = runNo; saveState(st);
}

// ---------------------------------------------------------------- main
try {
  log(`@xmtp/node-sdk interop, phase ${opts.phase}, node ${opts.url}, budget ${opts.timeout}s, node.js ${process.version}`);
  if (opts.anyPort) {
    ApiUrls.local = opts.url; // runtime config only; the SDK's code is untouched
    log(`--any-port: inbox-id lookups also go to ${opts.url}`);
  } else if (opts.url !== ApiUrls.local) {
    log(`warning: node-sdk 5.5.0 looks inbox ids up at ${ApiUrls.local} whatever --url says; that must reach the same node (or pass --any-port)`);
  }
  if (opts.phase === "first") await phaseFirst(); else await phaseSecond();
  clearTimeout(watchdog);
  finish(0, opts.phase === "first"
    ? "registered A, B, C; DM A->B synced by B; reply B->A streamed to A; text 3 (A->B) and A->C left on the server"
    : "A/B history intact after reopen; B fetched text 3 and C its first DM from the server; new A->B text streamed to B");
} catch (e) {
  clearTimeout(watchdog);
  if (e instanceof TestFailure) finish(e.code, e.message);
  else finish(1, e?.stack || String(e));
}
