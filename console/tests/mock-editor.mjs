// Drives the rule editor page and its test chat in Chromium against a mocked API, without a
// kefu server: builds tests/editor-harness/ (the editor alone, lazy-loaded as the shell
// loads it) with Vite, serves it and answers the draft routes of contract22.md with
// contract-shaped JSON through page.route (the draft is the repository's rules/ directory;
// the check reports an unknown intent typed at aftersale.kefu:30 with help "did you mean
// `售后.换货`?"; the chat answers 我想换个颜色 with flow 换货申请 at aftersale.kefu:122).
// It checks what it can (diagnostic ranges land on the right characters, emoji included;
// a save conflict shows the diff; go to definition; save as test) and writes screenshots
// at 1280x800 and 390x844. Exits 1 on the first failed check.
//
// Run from console/:  node tests/mock-editor.mjs
// Env: SHOTS (screenshot directory, default /tmp/shots-editor), CHROMIUM (default
// /usr/bin/chromium), OUT (build directory, default /tmp/kefu-editor-mock), IN_SHELL=1
// (build the whole console and open /console/editor inside the shell, /console/api/me
// answered as a signed-in editor, instead of the editor-only harness).
import { build } from "vite";
import { chromium } from "playwright-core";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, statSync, existsSync } from "node:fs";
import { join, dirname, extname, relative } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";

const here = dirname(fileURLToPath(import.meta.url));
const consoleDir = join(here, "..");
const rulesDir = join(consoleDir, "..", "rules");
const SHOTS = process.env.SHOTS ?? "/tmp/shots-editor";
const OUT = process.env.OUT ?? "/tmp/kefu-editor-mock";
const ORIGIN = "http://kefu.test";
const IN_SHELL = process.env.IN_SHELL === "1";
mkdirSync(SHOTS, { recursive: true });

await build({
  root: consoleDir,
  configFile: join(consoleDir, "vite.config.ts"),
  logLevel: "warn",
  build: { outDir: OUT, emptyOutDir: true, ...(IN_SHELL ? {} : { rollupOptions: { input: join(here, "editor-harness", "index.html") } }) },
});

// ---- the draft: rules/ as the server would list it ----
const version = (text) => createHash("sha256").update(text).digest("hex").slice(0, 16);
const kindOf = (p) =>
  p.endsWith(".kefu") ? "rules" : p.startsWith("kb/") ? "kb" : p.startsWith("data/") ? "data" : p.startsWith("safety/") ? "words" : p.startsWith("tests/") ? "tests" : "other";
const files = new Map();
(function walk(dir) {
  for (const name of readdirSync(dir)) {
    const full = join(dir, name);
    if (statSync(full).isDirectory()) walk(full);
    else if (/\.(kefu|ya?ml|txt|csv|md)$/.test(name)) files.set(relative(rulesDir, full), readFileSync(full, "utf8"));
  }
})(rulesDir);
const draftJson = () => ({
  dir: "/srv/kefu/rules",
  base: "v20261205-1a2b3c4d",
  live: "v20261205-1a2b3c4d",
  files: [...files].map(([path, text]) => ({ path, kind: kindOf(path), size: Buffer.byteLength(text), version: version(text) })),
});

/** Columns counted in Unicode scalar values, as kefu counts them. */
const charCol = (line, index) => Array.from(line.slice(0, index)).length + 1;

const symbols = {
  intents: [
    { name: "售后.换货", file: "intents.kefu", line: 40, col: 8 },
    { name: "售后.退货", file: "intents.kefu", line: 20, col: 8 },
    { name: "售后.退货.七天无理由", file: "intents.kefu", line: 26, col: 8 },
  ],
  entities: [{ name: "order_id", file: "entities.kefu", line: 3, col: 8 }],
  slots: [{ name: "order_id", flow: "换货申请", file: "aftersale.kefu", line: 145, col: 11 }],
  flows: [
    { name: "换货申请", file: "aftersale.kefu", line: 122, col: 6 },
    { name: "退货申请", file: "aftersale.kefu", line: 61, col: 6 },
  ],
  rules: [{ name: "七天无理由", file: "aftersale.kefu", line: 29, col: 6 }],
  promotions: [{ name: "双11满减", file: "promotions.kefu", line: 10, col: 11 }],
  policies: [{ name: "退货政策", file: "aftersale.kefu", line: 11, col: 8 }],
  styles: [{ name: "vip", file: "shop.kefu", line: 30, col: 7 }],
};

/** The check: an unknown intent wherever `售后.换活` is typed, plus a warning elsewhere. */
function checkAnswer(overlay) {
  const diagnostics = [];
  if (overlay?.text) {
    overlay.text.split("\n").forEach((line, i) => {
      const at = line.indexOf("售后.换活");
      if (at >= 0)
        diagnostics.push({
          severity: "error",
          code: "unknown_intent",
          message: "unknown intent `售后.换活`",
          file: overlay.path,
          line: i + 1,
          col: charCol(line, at),
          end_line: i + 1,
          end_col: charCol(line, at) + 5,
          help: "did you mean `售后.换货`?",
          notes: ["intents are declared with `intent NAME { ... }` (intents.kefu)"],
        });
    });
  }
  diagnostics.push({
    severity: "warning",
    code: "few_examples",
    message: "intent `商品.面料` has 2 examples; give it at least 3",
    file: "intents.kefu",
    line: 12,
    col: 8,
    end_line: 12,
    end_col: 13,
    help: null,
    notes: [],
  });
  const errors = diagnostics.filter((d) => d.severity === "error").length;
  return {
    ok: errors === 0,
    errors,
    warnings: diagnostics.length - errors,
    diagnostics,
    rendered: diagnostics.map((d) => `${d.file}:${d.line}:${d.col}: ${d.severity}: ${d.message}`).join("\n"),
    symbols,
  };
}

function chatAnswer(body) {
  const session_id = body.session_id ?? "draft-1";
  const base = {
    session_id,
    rules_version: "draft-9f8e7d",
    rules_role: "live",
    session_token: "t",
    handoff: null,
    language: "zh",
    latency_ms: 3.2,
  };
  if (body.message.includes("换个颜色")) {
    return {
      session_id,
      turn: {
        ...base,
        reply: "好的亲，麻烦发一下要换货的订单号（12位数字）～",
        source: "flow",
        flow: "换货申请",
        step: "ask order_id@145",
        intent: "售后.换货",
        confidence: 0.91,
        emotion: "neutral",
        entities: [{ name: "color", value: "颜色", text: "颜色", start: 9, end: 15 }],
        trace: [
          { stage: "safety", detail: "input clean" },
          { stage: "nlu", detail: "intent 售后.换货 (0.91), emotion neutral; runners-up 售后.退货 (0.05), 商品.颜色 (0.02)" },
          { stage: "flow", detail: "换货申请 (rules/aftersale.kefu:122) starts on 售后.换货" },
          { stage: "flow", detail: "set want = \"颜色\" (rules/aftersale.kefu:127:3)" },
          { stage: "flow", detail: "ask order_id (rules/aftersale.kefu:145) waits" },
        ],
      },
      slots: { want: "颜色", picked_color: null },
      understanding: {
        intent: "售后.换货",
        confidence: 0.91,
        runners_up: [
          { intent: "售后.退货", confidence: 0.05 },
          { intent: "商品.颜色", confidence: 0.02 },
        ],
        entities: [{ name: "color", value: "颜色", text: "颜色" }],
        emotion: "neutral",
      },
      kb: [
        { kind: "faq", id: "换货运费", score: 0.412 },
        { kind: "product", id: "T01", score: 0.233 },
      ],
      prompt: null,
      safety: [],
      source_location: { file: "aftersale.kefu", line: 122, col: 1 },
    };
  }
  return {
    session_id,
    turn: {
      ...base,
      reply: "亲，这个问题小美帮您查一下：本店下单后 48 小时内发货，默认中通快递～",
      source: "llm",
      intent: null,
      confidence: 0.31,
      emotion: "neutral",
      entities: [],
      trace: [
        { stage: "nlu", detail: "no confident intent (物流.发货时间 0.31)" },
        { stage: "fallback", detail: "otherwise llm (rules/shop.kefu:41)" },
        { stage: "llm", detail: "answered, judged 0.82" },
      ],
    },
    slots: {},
    understanding: { intent: null, confidence: 0.31, runners_up: [{ intent: "物流.发货时间", confidence: 0.31 }], entities: [], emotion: "neutral" },
    kb: [{ kind: "faq", id: "发货时间", score: 0.655 }],
    prompt: [
      { part: "persona", text: "你是示例旗舰店的客服小美，亲切、专业，只回答与本店相关的问题。" },
      { part: "kb", text: "发货时间：下单后48小时内发货。" },
      { part: "history", text: "顾客：我想换个颜色\n客服：好的亲，麻烦发一下要换货的订单号" },
    ],
    safety: ["pii phone masked"],
    source_location: { file: "shop.kefu", line: 41, col: 3 },
  };
}

// ---- the mocked server ----
const seen = { checks: 0, chats: [], saves: [], puts: 0 };
let conflictNext = false;
let me = { user: "小王", role: "editor", csrf: "c", can: ["read", "edit"] };
const json = (route, status, body) => route.fulfill({ status, contentType: "application/json", body: JSON.stringify(body) });
const types = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml" };

async function handle(route) {
  const req = route.request();
  const url = new URL(req.url());
  const p = url.pathname;
  const body = req.postData() ? JSON.parse(req.postData()) : undefined;
  if (p === "/admin/draft") return json(route, 200, draftJson());
  if (p === "/admin/draft/file") {
    const path = url.searchParams.get("path");
    if (req.method() === "GET") {
      if (!files.has(path)) return json(route, 404, { error: { type: "no_such_file", message: `no file ${path}` } });
      return json(route, 200, { path, text: files.get(path), version: version(files.get(path)) });
    }
    if (req.method() === "PUT") {
      seen.puts++;
      const now = files.get(path);
      if (conflictNext) {
        conflictNext = false;
        const theirs = now.replace("# 售后：退货、换货", "# 售后（同事改过）：退货、换货");
        files.set(path, theirs);
        return json(route, 409, {
          error: {
            type: "conflict",
            message: `${path} changed since you opened it`,
            current: { text: theirs, version: version(theirs) },
            diff: `--- ${path} (yours)\n+++ ${path} (current)\n@@ -1,3 +1,3 @@\n # =====\n-# 售后：退货、换货、退款进度、发票、质量问题，以及投诉和转人工\n+# 售后（同事改过）：退货、换货、退款进度、发票、质量问题，以及投诉和转人工\n #\n`,
          },
        });
      }
      if (now !== undefined && body.version !== version(now))
        return json(route, 409, { error: { type: "conflict", message: "changed", current: { text: now, version: version(now) }, diff: "" } });
      files.set(path, body.text);
      return json(route, 200, { path, version: version(body.text) });
    }
  }
  if (p === "/admin/draft/check") {
    seen.checks++;
    return json(route, 200, checkAnswer(body.overlay));
  }
  if (p === "/admin/draft/chat") {
    seen.chats.push(body);
    return json(route, 200, chatAnswer(body));
  }
  if (p === "/admin/draft/tests/save") {
    seen.saves.push(body);
    const path = "tests/editor_saved_case.yaml";
    const yaml = `name: ${body.name}\nuser: ${JSON.stringify(body.user)}\nturns:\n${body.turns.map((t) => `  - say: ${t.say}\n    expect: ${JSON.stringify(t.expect)}`).join("\n")}\n`;
    files.set(path, yaml);
    return json(route, 201, { path, version: version(yaml) });
  }
  if (p === "/console/api/me") return json(route, 200, me);
  if (p.startsWith("/console/")) {
    const file = join(OUT, p.slice("/console/".length));
    if (existsSync(file) && statSync(file).isFile())
      return route.fulfill({ status: 200, contentType: types[extname(file)] ?? "application/octet-stream", body: readFileSync(file) });
    // the shell's client routing: any other page under /console/ is index.html
    if (IN_SHELL && !extname(p)) return route.fulfill({ status: 200, contentType: "text/html", body: readFileSync(join(OUT, "index.html")) });
  }
  return route.fulfill({ status: 404, body: "not found" });
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const harness = IN_SHELL ? `${ORIGIN}/console/editor` : `${ORIGIN}/console/tests/editor-harness/index.html`;
const errors = [];

async function open(viewport, query) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && !m.text().includes("409 (Conflict)") && errors.push(m.text()));
  await page.route("**/*", handle);
  // the EditorView behind .cm-content (CodeMirror's own EditorView.findFromDOM, reached
  // through the DOM because the page does not export it)
  await page.addInitScript(() => {
    window.cmv = () => {
      const el = document.querySelector(".cm-content");
      return el.cmTile?.root?.view ?? el.cmView?.rootView?.view ?? el.cmView?.view;
    };
  });
  // the shell keeps the language in localStorage (the harness reads ?lang=)
  await page.addInitScript((lang) => localStorage.setItem("kefu.lang", lang), query.includes("lang=en") ? "en" : "zh");
  await page.goto(`${harness}?${query}`);
  await page.waitForSelector(".cm-content");
  return { context, page };
}

/** Replaces line `n` (1-based) of the editor's document with `text`, by typing. */
async function setLine(page, n, text) {
  await page.evaluate(
    ([n, text]) => {
      const view = cmv();
      const line = view.state.doc.line(n);
      view.dispatch({ changes: { from: line.from, to: line.to, insert: text }, selection: { anchor: line.from + text.length } });
      view.focus();
    },
    [n, text],
  );
}
const shot = (page, name, full = false) => page.screenshot({ path: join(SHOTS, name), fullPage: full });

try {
  // ---- desktop ----
  const { page } = await open({ width: 1280, height: 800 }, "path=aftersale.kefu&line=30");
  await page.waitForSelector(".ked-path:has-text('aftersale.kefu')");
  await setLine(page, 30, "  on 售后.换活");
  await page.waitForSelector(".cm-lintRange-error");
  assert.equal(await page.textContent(".cm-lintRange-error"), "售后.换活", "the diagnostic's range covers the unknown intent");
  await page.waitForSelector(".ked-problems :text('did you mean `售后.换货`?')");
  assert.ok(await page.isVisible(".ked-dirty"), "unsaved marker shown");
  await page.hover(".cm-lintRange-error");
  await page.waitForSelector(".cm-tooltip-lint .ked-diag-help");
  await shot(page, "desktop-1-diagnostic.png");

  // emoji before the name: 1 char for kefu, 2 UTF-16 units for CodeMirror
  await setLine(page, 30, "  on 😀😀售后.换活");
  await page.waitForFunction(() => document.querySelector(".cm-lintRange-error")?.textContent === "售后.换活");

  // completion of declared names, with their kind
  await setLine(page, 30, "  on 售后.换");
  await page.keyboard.press("Control+Space");
  await page.waitForSelector(".cm-tooltip-autocomplete :text('售后.换货')");
  await shot(page, "desktop-2-completion.png");
  await page.keyboard.press("Enter");
  assert.equal(await page.evaluate(() => cmv().state.doc.line(30).text), "  on 售后.换货");

  // go to definition (F12) of the flow name on line 122 stays in the file; of an intent opens intents.kefu
  await page.evaluate(() => {
    const view = cmv();
    const line = view.state.doc.line(30);
    view.dispatch({ selection: { anchor: line.from + 6 } });
  });
  // unsaved changes: going elsewhere asks first (accept the dialog)
  page.once("dialog", (d) => d.accept());
  await page.keyboard.press("F12");
  await page.waitForSelector(".ked-path:has-text('intents.kefu')");
  await page.waitForSelector(".ked-problems :text('intents.kefu:12:8')");
  await shot(page, "desktop-3-goto-intents.png");

  // the problems list opens the file of a diagnostic elsewhere
  await page.click(".ked-file:has-text('aftersale.kefu')");
  await page.waitForSelector(".ked-path:has-text('aftersale.kefu')");

  // save with a conflict: the diff shows, reload theirs keeps mine to copy
  await setLine(page, 30, "  on 售后.退货.* # 改");
  conflictNext = true;
  await page.keyboard.press("Control+s");
  await page.waitForSelector(".ked-conflict .ked-diff .add");
  await shot(page, "desktop-4-conflict.png");
  await page.click(".ked-conflict button:has-text('载入服务器版本')");
  await page.waitForSelector(".ked-kept textarea");
  assert.ok((await page.inputValue(".ked-kept textarea")).includes("# 改"), "my text is kept after reloading theirs");
  assert.ok(!(await page.isVisible(".ked-dirty")), "reloaded text is clean");
  await page.click(".ked-kept button:has-text('关闭')");
  // a plain save
  await setLine(page, 30, "  on 售后.退货.*  ");
  await page.keyboard.press("Control+s");
  await page.waitForSelector(".ked-flash");
  assert.equal(files.get("aftersale.kefu").split("\n")[29], "  on 售后.退货.*  ");

  // Ctrl-click on a slot name jumps to its ask
  const at = await page.evaluate(() => {
    const view = cmv();
    const line = view.state.doc.line(154);
    const pos = line.from + line.text.indexOf("order_id") + 2;
    // view.constructor is EditorView (the page does not export it)
    view.dispatch({ effects: view.constructor.scrollIntoView(pos, { y: "center" }) });
    return pos;
  });
  await page.waitForTimeout(100); // let the scroll settle before reading coordinates
  const xy = await page.evaluate((pos) => cmv().coordsAtPos(pos), at);
  await page.keyboard.down("Control");
  await page.mouse.click(xy.left + 1, (xy.top + xy.bottom) / 2);
  await page.keyboard.up("Control");
  await page.waitForFunction(() => {
    const view = cmv();
    return view.state.doc.lineAt(view.state.selection.main.head).number === 145;
  });

  // the test chat: a VIP with an order, answered by flow 换货申请
  await page.selectOption(".kc-form select", "vip");
  await page.fill(".kc-form input[placeholder='202611100005']", "202611100005");
  await page.fill(".kc-input input", "我想换个颜色");
  await page.keyboard.press("Enter");
  await page.waitForSelector(".kc-bot");
  const sent = seen.chats.at(-1);
  assert.deepEqual(sent.user, { segment: "vip", orders: 2 });
  assert.deepEqual(sent.context, { order: { id: "202611100005" } });
  await page.fill(".kc-input input", "什么时候发货");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelectorAll(".kc-bot").length === 2);
  assert.equal(seen.chats.at(-1).session_id, "draft-1");
  // open the first answer's trace again and jump to the flow step
  await page.click(".kc-trace >> nth=0 >> summary");
  await page.click(".kc-trace >> nth=0 >> a.kc-loc:has-text('aftersale.kefu:122')");
  await page.waitForFunction(() => {
    const view = cmv();
    return view.state.doc.lineAt(view.state.selection.main.head).number === 122;
  });
  await page.click(".kc-trace >> nth=0 >> .kc-lines a:has-text('rules/aftersale.kefu:145')");
  await page.waitForFunction(() => {
    const view = cmv();
    return view.state.doc.lineAt(view.state.selection.main.head).number === 145;
  });
  await page.click(".kc-trace >> nth=1 >> .kc-part summary:has-text('persona')");
  await shot(page, "desktop-5-chat-trace.png");

  // save as test
  await page.click(".kc-head button:has-text('保存为测试')");
  await page.fill(".kc-dialog input >> nth=0", "换颜色走换货流程");
  await shot(page, "desktop-6-save-test.png");
  await page.click(".kc-dialog button[type=submit]");
  await page.waitForSelector(".kc-ok:has-text('tests/editor_saved_case.yaml')");
  await page.waitForSelector(".ked-path:has-text('tests/editor_saved_case.yaml')");
  const saved = seen.saves[0];
  assert.equal(saved.name, "换颜色走换货流程");
  assert.deepEqual(saved.turns[0].expect, { source: "flow", flow: "换货申请", step: "ask order_id", reply_contains: ["好的亲，麻烦发一下要换货的订单号"] });
  await page.click(".kc-dialog button:has-text('关闭')");
  await shot(page, "desktop-7-saved-test-open.png");
  // reset: the conversation starts over (the next message says so)
  await page.click(".kc-head button:has-text('重新开始')");
  assert.equal(await page.locator(".kc-bubble").count(), 0);
  await page.fill(".kc-input input", "我想换个颜色");
  await page.keyboard.press("Enter");
  await page.waitForSelector(".kc-bot");
  assert.equal(seen.chats.at(-1).reset, true);

  // a viewer reads: no save, the buffer does not change
  me = { user: "小李", role: "viewer", csrf: "c", can: ["read"] };
  const viewer = await open({ width: 1280, height: 800 }, "path=aftersale.kefu&line=30");
  await viewer.page.waitForSelector(".ked-bar :text('只读')");
  assert.equal(await viewer.page.locator(".ked-bar .ked-primary").count(), 0, "no save button for a viewer");
  assert.equal(await viewer.page.locator(".kc-head :text('保存为测试')").count(), 0, "no save-as-test for a viewer");
  await viewer.page.keyboard.type("x");
  assert.ok(!(await viewer.page.isVisible(".ked-dirty")), "a viewer's typing changes nothing");
  me = { user: "小王", role: "editor", csrf: "c", can: ["read", "edit"] };
  await viewer.context.close();

  // the highlighting of other constructs (entities: regexes, lexicons; the shop block;
  // promotions: date-times, rhai audiences), for the eye
  for (const f of ["entities.kefu", "shop.kefu", "promotions.kefu"]) {
    await page.click(`.ked-file:has-text('${f}')`);
    await page.waitForSelector(`.ked-path:has-text('${f}')`);
    await shot(page, `desktop-9-${f.replace(".kefu", "")}.png`);
  }

  // English
  const en = await open({ width: 1280, height: 800 }, "path=aftersale.kefu&line=122&lang=en");
  await en.page.waitForSelector(".ked-path:has-text('aftersale.kefu')");
  await en.page.waitForSelector(".ked-counts:has-text('warnings')");
  await shot(en.page, "desktop-8-english.png");

  // ---- phone ----
  const phone = await open({ width: 390, height: 844 }, "path=aftersale.kefu&line=122");
  await phone.page.waitForSelector(".ked-path:has-text('aftersale.kefu')");
  await phone.page.waitForSelector(".ked-counts:has-text('警告')");
  assert.ok(!(await phone.page.isVisible(".ked-tree.open")), "the tree is a closed drawer");
  await shot(phone.page, "phone-1-editor.png");
  await phone.page.click(".ked-drawer-btn");
  await phone.page.waitForTimeout(300); // the drawer's slide-in, for the picture only
  await shot(phone.page, "phone-2-drawer.png");
  await phone.page.click(".ked-tree .ked-file:has-text('promotions.kefu')");
  await phone.page.waitForSelector(".ked-path:has-text('promotions.kefu')");
  await phone.page.fill(".kc-input input", "我想换个颜色");
  await phone.page.keyboard.press("Enter");
  await phone.page.waitForSelector(".kc-bot");
  await phone.page.locator(".kc-trace").scrollIntoViewIfNeeded();
  await shot(phone.page, "phone-3-chat.png");
  await shot(phone.page, "phone-4-full.png", true);

  assert.deepEqual(errors, [], "no errors in the page's console");
  console.log(`ok: ${seen.checks} checks, ${seen.chats.length} chats, ${seen.puts} saves; screenshots in ${SHOTS}`);
} catch (e) {
  console.error(e);
  console.error("page errors:", errors);
  process.exitCode = 1;
} finally {
  await browser.close();
}
