// The gatehouse console in a real browser: headless Debian Chromium driven
// by playwright-core, against a real `gatehouse serve` on a SQLite file,
// with a local HTTP sink as the destination.
//
// It builds nothing: set GATEHOUSE_BIN to the binary (.ci/run builds it),
// or it looks in $CARGO_TARGET_DIR/debug and target/debug. Screenshots go
// to $GATEHOUSE_SCREENSHOTS (default target/browser-screenshots).
//
// Run: cd tests/browser && npm ci && npm test

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { once } from "node:events";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../..");
const STRIPE_SECRET = "whsec_browser_suite_secret";
const PASSWORDS = {
  root: "admin-password-for-tests",
  olga: "operator-password-for-tests",
  vic: "viewer-password-for-tests",
};
const HOSTILE = `<script>alert("xss")</script>"><img src=x onerror=alert(1)>{{7*7}}`;

function findBinary() {
  const candidates = [
    process.env.GATEHOUSE_BIN,
    process.env.CARGO_TARGET_DIR && path.join(process.env.CARGO_TARGET_DIR, "debug/gatehouse"),
    "/root/.cache/gatehouse-target/debug/gatehouse",
    path.join(repo, "target/debug/gatehouse"),
  ].filter(Boolean);
  const found = candidates.find((candidate) => fs.existsSync(candidate));
  if (!found) {
    throw new Error(`no gatehouse binary; build it and set GATEHOUSE_BIN (looked in ${candidates.join(", ")})`);
  }
  return found;
}

const binary = findBinary();
const screenshots = path.resolve(repo, process.env.GATEHOUSE_SCREENSHOTS || "target/browser-screenshots");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";

/// A destination that answers 500 until told otherwise, and records.
function startSink() {
  const sink = { status: 500, received: [] };
  const server = http.createServer((request, response) => {
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", () => {
      sink.received.push({ headers: request.headers, body: Buffer.concat(chunks).toString("utf8") });
      response.writeHead(sink.status, { "content-type": "text/plain" });
      response.end(sink.status === 200 ? "ok" : "sink says no");
    });
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      sink.url = `http://127.0.0.1:${server.address().port}/hooks`;
      sink.close = () => new Promise((done) => server.close(done));
      resolve(sink);
    });
  });
}

function config(dir, sinkUrl) {
  return `
[server]
listen = "127.0.0.1:0"

[storage]
url = "sqlite://${path.join(dir, "gatehouse.db")}"

[[sources]]
name = "stripe"
provider = "stripe"
secrets = ["${STRIPE_SECRET}"]

[[destinations]]
name = "sink"
type = "http"
url = "${sinkUrl}"

# Payments: one attempt, so a failure lands in the exception queue at once.
[[routes]]
name = "payments"
source = "stripe"
destination = "sink"
events = ["payment_intent.*"]
retry = { max_attempts = 1 }

# Refunds wait for a person.
[[routes]]
name = "refunds"
source = "stripe"
destination = "sink"
events = ["charge.refunded"]
approval = true
`;
}

function cli(configPath, args, input) {
  const result = spawnSync(binary, [...args, "--config", configPath], {
    input,
    encoding: "utf8",
    env: { ...process.env, GATEHOUSE_LOG: "warn" },
  });
  if (result.status !== 0) {
    throw new Error(`gatehouse ${args.join(" ")} failed: ${result.stderr}`);
  }
  return result.stdout;
}

async function startServer(configPath) {
  const child = spawn(binary, ["serve", "--config", configPath], {
    env: { ...process.env, GATEHOUSE_LOG: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = readline.createInterface({ input: child.stdout });
  const base = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("gatehouse did not start listening within 30 s")), 30_000);
    child.once("exit", (code) => reject(new Error(`gatehouse exited before listening (${code})`)));
    lines.on("line", (line) => {
      const match = line.match(/^gatehouse listening on (http:\/\/\S+)/);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
  });
  return { child, base };
}

/// Sends a Stripe event signed as Stripe does: HMAC-SHA256 over `{t}.{body}`.
async function sendStripe(base, event, extraHeaders = {}) {
  const body = JSON.stringify(event);
  const t = Math.floor(Date.now() / 1000);
  const v1 = createHmac("sha256", STRIPE_SECRET).update(`${t}.${body}`).digest("hex");
  const response = await fetch(`${base}/in/stripe`, {
    method: "POST",
    headers: { "content-type": "application/json", "stripe-signature": `t=${t},v1=${v1}`, ...extraHeaders },
    body,
  });
  assert.equal(response.status, 200, `ingest answered ${response.status}: ${await response.text()}`);
}

function stripeEvent(id, type, object = {}) {
  return { id, object: "event", type, created: 1764230400, data: { object: { id: "obj_1", ...object } } };
}

async function until(what, check, limit = 20_000) {
  const deadline = Date.now() + limit;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

// --- Shared fixture ----------------------------------------------------------

let dir;
let sink;
let server;
let browser;
const dialogs = [];
let shot = 0;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "gatehouse-browser-"));
  fs.mkdirSync(screenshots, { recursive: true });
  for (const old of fs.readdirSync(screenshots)) {
    if (old.endsWith(".png")) fs.unlinkSync(path.join(screenshots, old));
  }
  sink = await startSink();
  const configPath = path.join(dir, "gatehouse.toml");
  fs.writeFileSync(configPath, config(dir, sink.url));
  cli(configPath, ["users", "add", "root", "--role", "admin", "--password-stdin"], `${PASSWORDS.root}\n`);
  cli(configPath, ["users", "add", "olga", "--role", "operator", "--password-stdin"], `${PASSWORDS.olga}\n`);
  cli(configPath, ["users", "add", "vic", "--role", "viewer", "--password-stdin"], `${PASSWORDS.vic}\n`);
  server = await startServer(configPath);
  browser = await chromium.launch({
    executablePath: chromiumPath,
    // Root in a container has no user namespace for the sandbox.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
});

after(async () => {
  await browser?.close();
  if (server) {
    server.child.kill("SIGTERM");
    await Promise.race([once(server.child, "exit"), new Promise((resolve) => setTimeout(resolve, 5000))]);
    server.child.kill("SIGKILL");
  }
  await sink?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/// A fresh browser context (its own cookies) with every alert counted.
async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await context.newPage();
  page.on("dialog", async (dialog) => {
    if (dialog.type() === "confirm") {
      // The console asks before pausing or revoking; say yes.
      await dialog.accept();
    } else {
      dialogs.push(`${dialog.type()}: ${dialog.message()}`);
      await dialog.dismiss();
    }
  });
  page.on("pageerror", (error) => dialogs.push(`page error: ${error.message}`));
  return page;
}

async function screenshot(page, name) {
  shot += 1;
  const file = path.join(screenshots, `${String(shot).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

async function login(page, username) {
  await page.goto(`${server.base}/console/login`);
  await page.fill('input[name="username"]', username);
  await page.fill('input[name="password"]', PASSWORDS[username]);
  await Promise.all([page.waitForURL(/\/console$/), page.click('button[type="submit"]')]);
  assert.equal(await page.textContent("#whoami"), username);
}

/// The CSRF token of the page's session (every page has the logout form).
async function csrfOf(page) {
  return page.getAttribute('form[action="/console/logout"] input[name="csrf"]', "value");
}

/// Opens an event's page by searching for its provider id.
async function openByProviderId(page, providerId) {
  await page.goto(`${server.base}/console/events`);
  await page.fill('input[name="provider_id"]', providerId);
  await Promise.all([page.waitForURL(/provider_id=/), page.click('#search button[type="submit"]')]);
  const links = page.locator("#results tbody a");
  assert.equal(await links.count(), 1, `one result for ${providerId}`);
  await Promise.all([page.waitForURL(/\/console\/events\/evt_/), links.first().click()]);
  assert.equal(await page.textContent("#provider-id"), providerId);
}

async function deliveryStates(page) {
  return page.locator("#deliveries [data-state]").evaluateAll((nodes) => nodes.map((n) => n.dataset.state));
}

// --- The tests ---------------------------------------------------------------

test("an operator finds an event, retries its dead delivery, and decides held refunds", async () => {
  await sendStripe(server.base, stripeEvent("evt_browser_payment", "payment_intent.succeeded", { amount: 4200 }));
  await sendStripe(server.base, stripeEvent("evt_browser_refund_ok", "charge.refunded", { amount: 100 }));
  await sendStripe(server.base, stripeEvent("evt_browser_refund_no", "charge.refunded", { amount: 999999 }));
  // The sink answers 500: the payment delivery dies after its one attempt.
  await until("the payment delivery was attempted", () => sink.received.length >= 1);

  const page = await newPage();
  await page.goto(`${server.base}/console/events`);
  assert.match(page.url(), /\/console\/login\?next=/, "pages need a login");
  await screenshot(page, "login");
  await login(page, "olga");

  await openByProviderId(page, "evt_browser_payment");
  await until("the delivery is dead", async () => {
    await page.reload();
    return (await deliveryStates(page)).includes("dead");
  });
  await screenshot(page, "event-dead");

  sink.status = 200;
  await Promise.all([page.waitForLoadState("load"), page.click("button.retry")]);
  assert.match(await page.textContent(".notice"), /is due again/);
  await until("the retried delivery succeeded", async () => {
    await page.reload();
    return (await deliveryStates(page)).includes("succeeded");
  });
  const timeline = await page.locator(".timeline li").count();
  assert.equal(timeline, 2, "two attempts on the timeline: the failure and the success");
  await screenshot(page, "event-succeeded");

  // Approvals: the rule that held each one beside its payload.
  await page.goto(`${server.base}/console/approvals`);
  assert.equal(await page.locator(".held").count(), 2);
  assert.match(await page.locator(".held .rule").first().textContent(), /approval/);
  await screenshot(page, "approvals");
  const approveCard = page.locator(".held", { hasText: "evt_browser_refund_ok" });
  const rejectCard = page.locator(".held", { hasText: "evt_browser_refund_no" });
  // The cards name the event by gatehouse id; find them through the body.
  assert.equal(await approveCard.count(), 1);
  assert.equal(await rejectCard.count(), 1);
  await Promise.all([page.waitForLoadState("load"), approveCard.locator("button.approve").click()]);
  assert.match(await page.textContent(".notice"), /Approved/);
  await rejectCard.locator('input[name="reason"]').fill("refund too large, <b>ask finance</b>");
  await Promise.all([page.waitForLoadState("load"), rejectCard.locator('button[value="reject"]').click()]);
  assert.match(await page.textContent(".notice"), /Rejected/);
  assert.equal(await page.locator(".held").count(), 0, "the queue is empty");
  await until("the approved refund was delivered", () =>
    sink.received.some((r) => r.body.includes("evt_browser_refund_ok")),
  );
  assert.ok(!sink.received.some((r) => r.body.includes("evt_browser_refund_no")), "the rejected one never goes out");

  // Both decisions and the retry are in the audit log, by this user.
  await page.goto(`${server.base}/console/audit`);
  const audit = await page.textContent("#audit");
  assert.match(audit, /delivery\.retry/);
  assert.match(audit, /delivery\.approve/);
  assert.match(audit, /delivery\.reject/);
  assert.match(audit, /refund too large, <b>ask finance<\/b>/, "the reason is shown as text");
  assert.match(audit, /user:olga/);
  await page.fill('input[name="action"]', "delivery.reject");
  await Promise.all([page.waitForURL(/action=delivery.reject/), page.click('form.filters button[type="submit"]')]);
  assert.equal(await page.locator("#audit tbody tr").count(), 1);
  await screenshot(page, "audit");

  // An operator may not pause routes: no switch is shown.
  await page.goto(`${server.base}/console/catalog`);
  assert.equal(await page.locator("button.pause").count(), 0);
  await page.context().close();
});

test("an admin pauses a route and manages users and tokens", async () => {
  const page = await newPage();
  await login(page, "root");
  await screenshot(page, "overview");

  await page.goto(`${server.base}/console/catalog`);
  const row = page.locator("#route-payments");
  await Promise.all([page.waitForLoadState("load"), row.locator("button.pause").click()]);
  assert.match(await page.textContent(".notice"), /paused/);
  assert.equal(await page.locator("#route-payments .badge.paused").count(), 1);
  await screenshot(page, "catalog-paused");

  await page.goto(`${server.base}/console/people`);
  await page.fill('#add-token input[name="name"]', "ci deploys");
  await page.selectOption('#add-token select[name="role"]', "operator");
  await Promise.all([page.waitForLoadState("load"), page.click('#add-token button[type="submit"]')]);
  const secret = (await page.textContent("#token-secret")).trim();
  assert.match(secret, /^ghk_[A-Za-z0-9_-]{43}$/);
  await screenshot(page, "people-token-created");
  await page.goto(`${server.base}/console/people`);
  assert.ok(!(await page.content()).includes(secret), "the secret is shown once only");

  await page.goto(`${server.base}/console/audit`);
  const audit = await page.textContent("#audit");
  assert.match(audit, /route\.pause/);
  assert.match(audit, /token\.create/);
  await page.context().close();
});

test("hostile payloads and headers render inert", async () => {
  const hostile = stripeEvent("evt_browser_hostile", "payment_intent.created", { note: HOSTILE });
  hostile.type = `payment_intent.${HOSTILE}`;
  await sendStripe(server.base, hostile, { "x-evil": HOSTILE, "user-agent": HOSTILE });
  const page = await newPage();
  await login(page, "root");
  await openByProviderId(page, "evt_browser_hostile");
  // Let any injected handler fire (an <img onerror> would, at once).
  await page.waitForTimeout(500);
  await screenshot(page, "event-hostile");
  const response = await page.context().request.get(page.url());
  const html = await response.text();
  assert.ok(!html.includes("<script>alert"), "no live script tag");
  assert.ok(!html.includes("<img src=x"), "no live img tag");
  // Askama writes numeric entities (&#60;); either form is inert.
  assert.match(html, /(&lt;|&#60;)script(&gt;|&#62;)alert\(/, "the payload is shown escaped");
  assert.match(html, /(&lt;|&#60;)img src=x onerror=alert\(1\)(&gt;|&#62;)/, "the header is shown escaped");
  assert.ok(html.includes("{{7*7}}") && !html.includes(">49<"), "template syntax is not evaluated");
  assert.equal(await page.locator("img").count(), 0, "no image element was created");
  // The copy-as-curl text never carries the signature.
  const curl = await page.textContent("#curl");
  assert.match(curl, /# stripe-signature: <removed/);
  assert.doesNotMatch(curl, /v1=[0-9a-f]{64}/);
  // The same event in the search list and the live tail.
  await page.goto(`${server.base}/console/events?q=onerror`);
  assert.ok((await page.locator("#results tbody tr").count()) >= 1);
  await screenshot(page, "events-search");
  await page.goto(`${server.base}/console/tail`);
  await page.waitForSelector("#tail-status:has-text('Live')");
  await sendStripe(server.base, { ...hostile, id: "evt_browser_hostile_live" });
  await page.waitForSelector("#tail tbody td:has-text('evt_browser_hostile_live')", { timeout: 15_000 });
  await page.waitForTimeout(300);
  await screenshot(page, "tail");
  assert.equal(await page.locator("#tail img").count(), 0);
  assert.deepEqual(dialogs, [], "no alert fired on any page");
  await page.context().close();
});

test("every page renders for a viewer, without buttons that need a higher role", async () => {
  const page = await newPage();
  await login(page, "vic");
  for (const [name, url] of [
    ["viewer-overview", "/console"],
    ["viewer-events", "/console/events"],
    ["viewer-exceptions", "/console/exceptions"],
    ["viewer-approvals", "/console/approvals"],
    ["viewer-catalog", "/console/catalog"],
    ["viewer-audit", "/console/audit"],
    ["viewer-people", "/console/people"],
  ]) {
    const response = await page.goto(`${server.base}${url}`);
    assert.equal(response.status(), 200, url);
    await screenshot(page, name);
  }
  await openByProviderId(page, "evt_browser_payment");
  assert.equal(await page.locator("#replay-form").count(), 0, "no replay for a viewer");
  assert.equal(await page.locator("button.retry").count(), 0);
  await page.context().close();
});

test("security: CSRF, roles, login throttling", async () => {
  // Find a dead delivery to aim at: send a payment while the sink fails
  // and the route is resumed.
  const admin = await newPage();
  await login(admin, "root");
  await admin.goto(`${server.base}/console/catalog`);
  await Promise.all([admin.waitForLoadState("load"), admin.locator("#route-payments form").last().locator("button").click()]);
  sink.status = 500;
  await sendStripe(server.base, stripeEvent("evt_browser_doomed", "payment_intent.failed"));
  await openByProviderId(admin, "evt_browser_doomed");
  await until("the delivery is dead", async () => {
    await admin.reload();
    return (await deliveryStates(admin)).includes("dead");
  });
  const retryAction = await admin.getAttribute("#deliveries form[action$='/retry']", "action");
  assert.ok(retryAction, "a retry form for the dead delivery");
  const adminCsrf = await csrfOf(admin);

  // No CSRF token, or a wrong one: refused, nothing retried.
  const noToken = await admin.context().request.post(`${server.base}${retryAction}`, { form: {} });
  assert.equal(noToken.status(), 403);
  const wrongToken = await admin.context().request.post(`${server.base}${retryAction}`, {
    form: { csrf: adminCsrf.slice(0, -2) + "xx" },
  });
  assert.equal(wrongToken.status(), 403);

  // A viewer's session with its own valid token: refused by role.
  const viewer = await newPage();
  await login(viewer, "vic");
  const viewerCsrf = await csrfOf(viewer);
  const asViewer = await viewer.context().request.post(`${server.base}${retryAction}`, {
    form: { csrf: viewerCsrf },
    maxRedirects: 0,
  });
  assert.equal(asViewer.status(), 403);
  await admin.reload();
  assert.ok((await deliveryStates(admin)).includes("dead"), "still dead after the refused attempts");

  // Another session's token does not work with this session's cookie.
  const crossed = await viewer.context().request.post(`${server.base}${retryAction}`, {
    form: { csrf: adminCsrf },
    maxRedirects: 0,
  });
  assert.equal(crossed.status(), 403);

  // Session cookie attributes.
  const cookies = await admin.context().cookies();
  const session = cookies.find((c) => c.name === "gatehouse_session");
  assert.ok(session?.httpOnly, "HttpOnly");
  assert.equal(session.sameSite, "Strict");
  assert.equal(session.path, "/");

  // Wrong passwords: refused, then throttled even for the right one.
  const context = await browser.newContext();
  const attempt = (password) =>
    context.request.post(`${server.base}/console/login`, {
      form: { username: "olga", password },
      maxRedirects: 0,
    });
  for (let i = 0; i < 5; i += 1) {
    assert.equal((await attempt("wrong-password-guess")).status(), 401);
  }
  const throttled = await attempt(PASSWORDS.olga);
  assert.equal(throttled.status(), 429);
  assert.ok(Number(throttled.headers()["retry-after"]) >= 1);
  await context.close();

  // Logging out ends the session for real.
  const before = await admin.context().cookies();
  await Promise.all([admin.waitForURL(/\/console\/login/), admin.click('form[action="/console/logout"] button')]);
  const stale = await browser.newContext();
  await stale.addCookies(before.filter((c) => c.name === "gatehouse_session"));
  const afterLogout = await stale.request.get(`${server.base}/console/events`, { maxRedirects: 0 });
  assert.equal(afterLogout.status(), 303);
  await stale.close();
  await viewer.context().close();
  await admin.context().close();
});

test("the exception queue: discard one with a note, retry the rest of the group", async () => {
  sink.status = 500;
  await sendStripe(server.base, stripeEvent("evt_browser_doomed_2", "payment_intent.failed"));
  const page = await newPage();
  // Not olga: her logins from this address are throttled by now.
  await login(page, "root");
  await until("two dead deliveries in the queue", async () => {
    await page.goto(`${server.base}/console/exceptions`);
    const text = await page.textContent("#groups");
    return /HTTP 500/.test(text) && Number(await page.locator("#groups tbody td.num").first().textContent()) >= 2;
  });
  await screenshot(page, "exceptions");
  await Promise.all([page.waitForURL(/route=payments/), page.locator("#groups tbody a").first().click()]);
  const before = await page.locator('#selected input[name="id"]').count();
  assert.ok(before >= 2);
  await screenshot(page, "exceptions-group");
  await page.locator('#selected input[name="id"]').first().check();
  await page.fill('#selected input[name="note"]', "duplicate of a manual fix");
  await Promise.all([page.waitForLoadState("load"), page.click('#selected button[value="discard"]')]);
  assert.match(await page.textContent(".notice"), /Discarded 1 of 1 selected/);
  assert.equal(await page.locator('#selected input[name="id"]').count(), before - 1);

  sink.status = 200;
  const delivered = sink.received.length;
  await Promise.all([page.waitForLoadState("load"), page.locator('form[action="/console/exceptions/retry"] button').first().click()]);
  assert.match(await page.textContent(".notice"), new RegExp(`Retried ${before - 1} dead deliver`));
  await until("the retried deliveries arrived", () => sink.received.length >= delivered + before - 1);
  await until("the queue is empty", async () => {
    await page.goto(`${server.base}/console/exceptions`);
    return (await page.locator("#groups .empty").count()) === 1;
  });
  await page.goto(`${server.base}/console/audit`);
  const audit = await page.textContent("#audit");
  assert.match(audit, /delivery\.discard/);
  assert.match(audit, /duplicate of a manual fix/);
  assert.match(audit, /delivery\.retry_bulk/);
  // The root path leads to the console.
  const root = await page.goto(`${server.base}/`);
  assert.match(page.url(), /\/console$/);
  assert.equal(root.status(), 200);
  await page.context().close();
  assert.deepEqual(dialogs, [], "no alert fired on any page");
});
