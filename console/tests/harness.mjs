// What the browser tests share (journey.mjs, inbox.mjs): a copy of the demo shop in a
// temporary directory, `kefu serve` on it with the admin token, Debian's chromium, pages in
// their own contexts, screenshots, and waiting on a condition (never on a duration).
//
// Each test file keeps its run's state in one object `S` (tmp, rules, state, base, token,
// server, log, browser) and passes it here.

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The repository's root. */
export const REPO = path.resolve(HERE, "../..");
/** The kefu binary under test (`tests/support/console_journey.sh` sets KEFU_BIN). */
export const KEFU_BIN = process.env.KEFU_BIN && path.resolve(process.env.KEFU_BIN);
/** Debian's chromium; never a downloaded browser. */
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
/** Where screenshots for the docs go (KEFU_SCREENSHOTS=1), else null. */
export const SCREENSHOTS = process.env.KEFU_SCREENSHOTS === "1" ? path.join(REPO, "docs/console") : null;
/** Where a failed test's screenshots go. */
export const FAILURES = path.join(REPO, "console/test-results");
/** KEFU_JOURNEY_KEEP=1 keeps the temporary directory (rules, state, server log). */
export const KEEP = process.env.KEFU_JOURNEY_KEEP === "1";
export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

/** Runs `KEFU_BIN args` to completion; fails the test with its output when it fails. */
export function kefu(args, env = {}) {
  const r = spawnSync(KEFU_BIN, args, { env: { ...process.env, ...env }, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  assert.equal(r.status, 0, `kefu ${args.join(" ")} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** Polls `check` every `every` ms until it is true; a condition, never a duration, decides. */
export async function until(check, what, { tries = 600, every = 100 } = {}) {
  for (let i = 0; i < tries; i++) {
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, every));
  }
  throw new Error(`gave up waiting: ${what}`);
}

/** Into `S`: a temporary directory with a copy of the demo shop (`S.rules`, its draft base
 * left out) and an empty state directory (`S.state`), and an admin token. */
export function workspace(S, prefix) {
  assert.ok(KEFU_BIN, "KEFU_BIN names the kefu binary (tests/support/console_journey.sh sets it)");
  S.tmp = fs.mkdtempSync(path.join(os.tmpdir(), `kefu-${prefix}-`));
  S.rules = path.join(S.tmp, "rules");
  S.state = path.join(S.tmp, "state");
  fs.cpSync(path.join(REPO, "rules"), S.rules, { recursive: true });
  fs.rmSync(path.join(S.rules, ".kefu-base"), { force: true });
  fs.mkdirSync(S.state);
  S.token = `${prefix}-${process.pid}-${Date.now()}`;
}

/** Starts `kefu serve` on `S.rules` and `S.state` (any port, the conversation log on, no
 * drain) with `extra` arguments; resolves once it is ready, with `S.base` its address. */
export async function startKefu(S, extra = []) {
  S.log = path.join(S.tmp, "serve.log");
  const args = [
    "serve",
    "--rules", S.rules,
    "--state-dir", S.state,
    "--addr", "127.0.0.1:0",
    "--conversation-log", path.join(S.state, "log"),
    "--drain-seconds", "0",
    ...extra,
  ];
  S.server = spawn(KEFU_BIN, args, {
    env: { ...process.env, KEFU_ADMIN_TOKEN: S.token },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logStream = fs.createWriteStream(S.log);
  S.server.stderr.pipe(logStream);
  S.base = await new Promise((resolve, reject) => {
    let out = "";
    S.server.stdout.on("data", (chunk) => {
      logStream.write(chunk);
      out += chunk;
      const m = /listening on (\S+)/.exec(out);
      if (m) resolve(`http://${m[1]}`);
    });
    S.server.on("exit", (code) => reject(new Error(`kefu serve exited (${code}) before listening; log: ${S.log}`)));
  });
  await until(async () => (await fetch(`${S.base}/readyz`)).ok, "the server gets ready (/readyz)");
}

/** Debian's chromium, headless, without the background traffic a closed network refuses. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
}

/** Closes the browser, stops the server, and removes the temporary directory (unless kept). */
export async function stop(S) {
  await S.browser?.close();
  if (S.server && S.server.exitCode === null) {
    S.server.kill("SIGTERM");
    await new Promise((resolve) => S.server.once("exit", resolve));
  }
  if (KEEP && S.tmp) console.log(`kept ${S.tmp} (server log: ${S.log})`);
  else if (S.tmp) fs.rmSync(S.tmp, { recursive: true, force: true });
}

/** A new page in its own context (own cookies) at `viewport`, Chinese and in Shanghai's
 * time; `timeout` for every action; `prepare(page)` adds handlers (dialogs...). */
export async function newPage(S, viewport, { timeout = 30_000, prepare } = {}) {
  const context = await S.browser.newContext({ viewport, locale: "zh-CN", timezoneId: "Asia/Shanghai" });
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  prepare?.(page);
  page.on("pageerror", (e) => console.log(`page error: ${e.message}`));
  return page;
}

/** Runs `body(...pages)` on a new page per viewport; on a failure saves each page's
 * screenshot into console/test-results/ and prints the server log's tail. */
export async function withPages(S, t, viewports, body, options) {
  const pages = [];
  for (const v of viewports) pages.push(await newPage(S, v, options));
  try {
    await body(...pages);
  } catch (e) {
    // Printed here because a wait still pending when the pages close rejects too, and the
    // test runner may then report that rejection in place of this, the real failure.
    console.log(`failed: ${e?.stack ?? e}`);
    fs.mkdirSync(FAILURES, { recursive: true });
    for (const [i, page] of pages.entries()) {
      const suffix = pages.length > 1 ? `-${i}` : "";
      const file = path.join(FAILURES, `${t.name.replace(/[^\w-]+/g, "_")}${suffix}.png`);
      await page.screenshot({ path: file }).catch(() => {});
      console.log(`page ${i} failed at ${page.url()}; screenshot ${file}`);
    }
    if (S.log && fs.existsSync(S.log)) {
      const tail = fs.readFileSync(S.log, "utf8").split("\n").slice(-30).join("\n");
      console.log(`server log tail:\n${tail.replace(/^/gm, "  ")}`);
    }
    throw e;
  } finally {
    for (const page of pages) await page.context().close();
  }
}

/** A screenshot of the viewport into docs/console/NAME.png, when KEFU_SCREENSHOTS=1. */
export async function shot(page, name) {
  if (!SCREENSHOTS) return;
  fs.mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`) });
}
