// Drives the built console (dist/) in Debian's chromium against a mocked kefu: every
// request is intercepted with page.route, /console/* is served from dist/ and the API
// answers contract-shaped JSON (/work/contract22.md, docs/api.md). It walks each page as
// a publisher, a viewer and a signed-out visitor, checks what it must see (throws on a
// miss) and writes screenshots at 1280x800 and 390x844.
//
// Run:   npx vite build && node tests/mock.mjs
// Env:   SHOTS=DIR        where the PNGs go (default /tmp/shots-shell)
//        CHROMIUM=PATH    the browser (default /usr/bin/chromium)
//        ONLY=NAME        run only the scenarios whose name contains NAME
//        DEBUG=1          on a failure, list the API calls the page made
//        KEFU_SCREENSHOTS=1  also write the unanswered-questions page's screenshots into
//                         ../docs/console/ (mine*.png)
import { chromium } from "playwright-core";
import { readFile, mkdir } from "node:fs/promises";
import { extname, join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const DIST = join(dirname(fileURLToPath(import.meta.url)), "..", "dist");
const SHOTS = process.env.SHOTS ?? "/tmp/shots-shell";
const DOCS = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "docs", "console");
const ORIGIN = "http://kefu.test";
const TYPES = { ".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml", ".png": "image/png" };

// ---- contract-shaped answers ----

const CAN = {
  viewer: ["read"],
  editor: ["read", "edit"],
  publisher: ["read", "edit", "publish"],
  admin: ["read", "edit", "publish", "agent", "admin"],
};

function hourly() {
  const out = [];
  for (let h = 0; h < 24; h++) {
    const busy = h >= 8 && h <= 22 ? Math.round(20 + 30 * Math.sin(((h - 8) / 14) * Math.PI)) : h < 2 ? 4 : 0;
    const rule = Math.round(busy * 0.55);
    const faq = Math.round(busy * 0.2);
    const model = Math.round(busy * 0.12);
    const handoff = Math.round(busy * 0.06);
    const other = Math.max(0, busy - rule - faq - model - handoff);
    out.push({
      hour: `2026-12-06T${String(h).padStart(2, "0")}:00:00+08:00`,
      turns: busy, rule, faq, model, handoff, other,
      p50_ms: busy ? 18 + (h % 5) * 3 : null,
      p95_ms: busy ? 120 + ((h * 37) % 90) : null,
    });
  }
  return out;
}

function report() {
  const hours = hourly();
  const turns = hours.reduce((a, h) => a + h.turns, 0);
  return {
    report: {
      from: "2026-12-06T00:03:10+08:00", to: "2026-12-06T13:41:55+08:00",
      sessions: 212, turns,
      sources: [{ name: "rule", count: 300, share: 0.5 }, { name: "faq", count: 120, share: 0.2 }],
      first_contact_resolution: { count: 190, of: 212, rate: 0.896 },
      satisfaction: { scores: 57, sessions: 55, mean: 4.53, share_4_or_5: 0.912, by_score: [1, 1, 3, 12, 40] },
      handoffs: { sessions: { count: 14, of: 212, rate: 0.066 }, by_bot: 11, by_agent: 3, reasons: [], agent_replies: 30 },
      latency_ms: [{ source: "all", turns, mean: 41.2, p50: 21, p90: 130, p99: 260, max: 410 }],
      versions: [
        { version: "e01e74f4569e", from: "2026-12-06T00:03:10+08:00", to: "2026-12-06T13:41:55+08:00", turns: 512, rules: 0.61, faq: 0.2, model: 0.11, handoffs: { count: 31, of: 512, rate: 0.06 }, fallbacks: { count: 4, of: 512, rate: 0.008 }, feedback: 40, feedback_mean: 4.6, errors: { count: 0, of: 512, rate: 0 } },
        { version: "77aa01bc3d2f", from: "2026-12-06T09:00:00+08:00", to: "2026-12-06T13:41:55+08:00", turns: 48, rules: 0.66, faq: 0.19, model: 0.09, handoffs: { count: 2, of: 48, rate: 0.042 }, fallbacks: { count: 0, of: 48, rate: 0 }, feedback: 5, feedback_mean: 4.8, errors: { count: 0, of: 48, rate: 0 } },
      ],
    },
    hourly: hours,
    satisfaction: { scores: 57, sessions: 55, mean: 4.53, share_4_or_5: 0.912, by_score: [1, 1, 3, 12, 40] },
  };
}

const TESTS = {
  passed: 41, failed: 2,
  cases: [
    { file: "tests/aftersale.yaml", name: "VIP 换颜色走换货规则", ok: false, failures: [
      { turn: 1, say: "我想换个颜色", field: "rule", expected: "售后.换货", actual: "售后.退货", message: "turn 2 (我想换个颜色): expected rule 售后.换货, got 售后.退货" },
      { turn: 1, say: "我想换个颜色", field: "reply_contains", expected: "可以为您换货，请提供订单号", actual: "可以为您退货，请提供订单号和原因", message: "" },
    ] },
    { file: "tests/shipping.yaml", name: "问快递公司", ok: false, failures: [
      { turn: 0, say: "你们发什么快递", field: "source", expected: "rule", actual: "faq" },
    ] },
    { file: "tests/greeting.yaml", name: "打招呼", ok: true, failures: [] },
    { file: "tests/promo.yaml", name: "双十一满减", ok: true, failures: [] },
  ],
  kb: { errors: 0, warnings: 1 },
  coverage: { percent: 82.5, covered: 33, total: 40, never: [
    { kind: "rule", name: "售后.保价", file: "aftersale.kefu", line: 48 },
    { kind: "rule", name: "物流.催单", file: "logistics.kefu", line: 12 },
    { kind: "flow", name: "开发票", file: "invoice.kefu", line: 3 },
    { kind: "promotion", name: "新客立减", file: "promotions.kefu", line: 20 },
  ] },
  rendered: "tests/aftersale.yaml: VIP 换颜色走换货规则 FAILED\n  turn 2 (我想换个颜色): expected rule 售后.换货, got 售后.退货\n41 passed, 2 failed; coverage 82.5% (33/40)\n",
};

const DIFF = {
  from: 3, to: "draft",
  files: [
    { path: "aftersale.kefu", change: "changed", diff: "--- 3/aftersale.kefu\n+++ draft/aftersale.kefu\n@@ -10,7 +10,8 @@\n rule 售后.换货 {\n   when intent 售后.换货 and user.vip\n-  reply \"亲，可以换货哦\"\n+  reply \"亲，VIP 可以免费换货，请提供订单号\"\n+  handoff_if order.value > 2000\n }\n \n rule 售后.退货 {\n" },
    { path: "kb/faq.yaml", change: "changed", diff: "--- 3/kb/faq.yaml\n+++ draft/kb/faq.yaml\n@@ -1,3 +1,6 @@\n - id: shipping\n   q: [发什么快递, 用哪家快递]\n   a: 默认顺丰，偏远地区中通。\n+- id: invoice\n+  q: [能开发票吗]\n+  a: 可以，下单后在订单页申请电子发票。\n" },
    { path: "tests/exchange.yaml", change: "added", diff: "--- 3/tests/exchange.yaml\n+++ draft/tests/exchange.yaml\n@@ -0,0 +1,4 @@\n+name: VIP 换颜色\n+turns:\n+  - say: 我想换个颜色\n+    expect: {rule: 售后.换货}\n" },
  ],
};

const REPLAY = {
  draft: "9f3c2a11d0e4", base: ["e01e74f4569e"], sessions: 212, turns: 640, unchanged: 611, changed: 29,
  against_log: 0, model_turns: 12, generated: false, handoffs_added: 3, handoffs_removed: 0, profile_cut: 0, skipped: {},
  groups: [
    { kind: "answer", change: "rule 售后.退货 → rule 售后.换货", count: 17, examples: [
      { session: "s-8f21", turn: 2, time: "2026-12-05T15:02:11+08:00", message: "这件想换个颜色可以吗",
        before: { source: "rule", rule: "售后.退货", reply: "可以退货，请提供订单号和原因。" },
        after: { source: "rule", rule: "售后.换货", reply: "亲，VIP 可以免费换货，请提供订单号" } },
      { session: "s-1c09", turn: 1, time: "2026-12-05T20:44:37+08:00", message: "我想换个尺码",
        before: { source: "rule", rule: "售后.退货", reply: "可以退货，请提供订单号和原因。" },
        after: { source: "rule", rule: "售后.换货", reply: "亲，VIP 可以免费换货，请提供订单号" } },
    ] },
    { kind: "handoff", change: "handoff added: 大额订单换货需人工确认", count: 3, examples: [
      { session: "s-77d0", turn: 3, time: "2026-12-04T11:10:00+08:00", message: "订单 ****1234 换货",
        before: { source: "rule", rule: "售后.换货", reply: "亲，可以换货哦" },
        after: { source: "rule", rule: "售后.换货", handoff: "大额订单换货需人工确认", reply: "已为您转接人工客服" } },
    ] },
    { kind: "reply", change: "reply text changed in rule 售后.换货", count: 9, examples: [] },
  ],
  read: { files: 3, lines: 1300, bad: [] },
};

const VERSIONS = {
  live: 3, canary: { version: 4, percent: 10, since: "2026-12-06T01:00:00Z" }, serial: 9,
  versions: [
    { id: 4, rules: "77aa01bc3d2f", parent: 3, author: "小王", message: "换货话术：VIP 免费换货", time: "2026-12-06T01:00:00Z", forced: false, tests: { passed: 43, failed: 0 }, files: {}, rollback_of: null, notes: [{ time: "2026-12-06T01:00:00Z", kind: "canary started", text: "canary on 10% by 小王" }] },
    { id: 3, rules: "e01e74f4569e", parent: 2, author: "小王", message: "双十一满减话术", time: "2026-12-05T03:27:13Z", forced: false, tests: { passed: 42, failed: 0 }, files: {}, rollback_of: null, notes: [] },
    { id: 2, rules: "5b0c9e8d7a61", parent: 1, author: "李主管", message: "发货时间改为 48 小时内，补充偏远地区说明，这是一条比较长的发布说明用来看换行", time: "2026-12-01T08:00:00Z", forced: true, tests: { passed: 39, failed: 1 }, files: {}, rollback_of: null, notes: [] },
    { id: 1, rules: "0d1e2f3a4b5c", parent: null, author: "admin", message: "初始版本", time: "2026-11-20T02:00:00Z", forced: false, tests: { passed: 30, failed: 0 }, files: {}, rollback_of: null, notes: [] },
  ],
};

const FAQ = {
  file: "kb/faq.yaml", version: "a1b2c3d4e5f60718",
  columns: [
    { key: "id", label_zh: "编号", label_en: "ID", list: false },
    { key: "questions", label_zh: "问法", label_en: "Questions", list: true },
    { key: "answer", label_zh: "答案", label_en: "Answer", list: false },
    { key: "tags", label_zh: "标签", label_en: "Tags", list: true },
  ],
  rows: [
    { id: "shipping", questions: ["发什么快递", "用哪家快递", "快递公司是哪家"], answer: "默认顺丰，偏远地区中通。", tags: ["物流"] },
    { id: "invoice", questions: ["能开发票吗"], answer: "可以，下单后在订单页申请电子发票。", tags: ["发票", "售后"] },
    { id: "return7", questions: ["七天无理由吗", "能退货吗"], answer: "支持七天无理由退货（定制商品除外），请在订单页申请。", tags: [] },
  ],
};

const PRODUCTS = {
  file: "data/products.yaml", version: "0f9e8d7c6b5a4930",
  columns: [
    { key: "sku", label_zh: "货号", label_en: "SKU", list: false },
    { key: "name", label_zh: "名称", label_en: "Name", list: false },
    { key: "price", label_zh: "价格", label_en: "Price", list: false },
    { key: "colors", label_zh: "颜色", label_en: "Colours", list: true },
    { key: "stock", label_zh: "库存", label_en: "Stock", list: false },
  ],
  rows: [
    { sku: "T-100", name: "纯棉圆领T恤", price: 79, colors: ["白", "黑", "藏青"], stock: { "白": 120, "黑": 80, "藏青": 0 } },
    { sku: "J-220", name: "水洗牛仔夹克", price: 299, colors: ["蓝"], stock: { "蓝": 15 } },
  ],
};

// GET /admin/mine: `data::mine::MineReport` with the period and where nearest neighbours
// were looked up (docs/api.md, "Mining").
const MINE = {
  since: "2026-11-09T00:00:00+08:00", until: "2026-12-07T00:00:00+08:00", nearest_from: "draft",
  read: { files: 28, lines: 18250, bad: [] }, first: "2026-11-09T00:01:12+08:00", last: "2026-12-06T13:41:55+08:00",
  turns: 18250, misses: 912, conversations: 604, rules: "e01e74f4569e", unclustered: 301,
  clusters: [
    { rank: 1, size: 64, conversations: 58, this_week: 21, last_week: 9,
      reasons: { fallback: 41, handoff: 17, low_intent: 6 },
      examples: ["能开增值税专用发票吗", "亲 可以开专票吗 公司报销要用", "专用发票能开不", "我们公司要专票，抬头怎么填", "can I get a VAT special invoice"],
      messages: ["能开增值税专用发票吗", "亲 可以开专票吗 公司报销要用", "专用发票能开不", "我们公司要专票，抬头怎么填", "can I get a VAT special invoice", "开专票要提供什么", "专票和普票有什么区别"],
      nearest_intent: { kind: "intent", name: "售后.发票", score: 0.31 }, nearest_faq: { kind: "faq", name: "支付方式", score: 0.12 },
      action: { kind: "new_faq", id: "增值税专用发票" } },
    { rank: 2, size: 51, conversations: 44, this_week: 12, last_week: 14,
      reasons: { fallback: 30, low_intent: 21 },
      examples: ["快递三天了还没动", "物流一直不更新 是不是丢了", "我的包裹卡在中转站了", "怎么还没到啊"],
      messages: ["快递三天了还没动", "物流一直不更新 是不是丢了", "我的包裹卡在中转站了", "怎么还没到啊", "物流信息好几天没变"],
      nearest_intent: { kind: "intent", name: "物流.查询", score: 0.52 }, nearest_faq: null,
      action: { kind: "add_examples", intent: "物流.查询" } },
    { rank: 3, size: 22, conversations: 19, this_week: 11, last_week: 0,
      reasons: { handoff: 9, fallback: 13 },
      examples: ["可以用花呗分期吗", "支持分期付款不", "信用卡分期免息吗"],
      messages: ["可以用花呗分期吗", "支持分期付款不", "信用卡分期免息吗"],
      nearest_intent: null, nearest_faq: { kind: "faq", name: "支付方式", score: 0.38 },
      action: { kind: "new_intent", name: "挖掘.花呗分期" } },
    { rank: 4, size: 9, conversations: 7, this_week: 3, last_week: 3,
      reasons: { bad_rating: 4, fallback: 5 },
      examples: ["礼盒能单独买吗", "包装盒另外卖吗"],
      messages: ["礼盒能单独买吗", "包装盒另外卖吗"],
      nearest_intent: null, nearest_faq: { kind: "faq", name: "礼品包装", score: 0.71 },
      action: { kind: "add_variants", faq: "礼品包装" } },
  ],
};

/** POST /admin/mine/accept's answer for a new FAQ entry (`accept::Drafted`). */
function drafted(body) {
  const a = body.action;
  if (a.kind === "new_faq") {
    const lines = [`+  - id: ${a.id}`, `+    question: ${body.messages[0]}`];
    if (body.messages.length > 1) lines.push("+    variants:", ...body.messages.slice(1).map((m) => `+      - ${m}`));
    lines.push('+    answer: ""');
    return { files: [{ path: "kb/faq.yaml", created: false, diff: `--- draft/kb/faq.yaml\n+++ draft/kb/faq.yaml\n@@ -212,3 +212,${3 + lines.length} @@\n   - id: 男女同款\n     question: 男女同款吗\n     answer: 是的，男女同款，按身高体重选尺码。\n${lines.join("\n")}\n` }] };
  }
  const intent = a.intent ?? a.name;
  return { files: [{ path: "intents.kefu", created: false, diff: `--- draft/intents.kefu\n+++ draft/intents.kefu\n@@ -40,4 +40,6 @@ intent ${intent} {\n     "到哪了",\n     "查一下物流",\n+    # kefu mine 2026-12-06\n${body.messages.map((m) => `+    "${m}",`).join("\n")}\n   }\n }\n` }] };
}

// ---- the mocked server ----

function json(status, body, headers = {}) {
  return { status, contentType: "application/json", headers, body: JSON.stringify(body) };
}
function err(status, type, message, extra = {}) {
  return json(status, { error: { type, message, ...extra } });
}

/** A server for one scenario: `opts.role` (null: signed out), and overrides by "METHOD path". */
function server(opts) {
  const state = { role: opts.role, calls: [] };
  const handlers = {
    "POST /console/api/login": (req) => {
      const b = req.postDataJSON();
      if (opts.login) return opts.login(b);
      if (b.password !== "right") return err(401, "wrong_credentials", "wrong name or password");
      state.role = "publisher";
      return json(200, { user: b.name, role: "publisher", csrf: "tok" });
    },
    "POST /console/api/logout": () => {
      state.role = null;
      return { status: 204, body: "" };
    },
    "GET /console/api/me": () =>
      state.role ? json(200, { user: opts.user ?? "小王", role: state.role, csrf: "tok", can: CAN[state.role] }) : err(401, "unauthenticated", "sign in first"),
    "GET /admin/report": () => json(200, report()),
    "POST /admin/draft/tests": () => json(200, TESTS),
    "GET /admin/diff": (req) => {
      const q = new URL(req.url()).searchParams;
      // A conflict's rebase asks what was published between two versions.
      if (q.get("from")) return json(200, { from: Number(q.get("from")), to: Number(q.get("to")), files: [DIFF.files[1]] });
      return json(200, DIFF);
    },
    "POST /admin/replay": () => (CAN[state.role].includes("edit") ? json(200, REPLAY) : err(403, "forbidden", "needs editor", { needs: "editor" })),
    "GET /admin/versions": () => json(200, VERSIONS),
    "GET /admin/mine": () => json(200, MINE),
    "POST /admin/mine/accept": (req) => (CAN[state.role].includes("edit") ? json(201, drafted(req.postDataJSON())) : err(403, "forbidden", "needs editor", { needs: "editor" })),
    "POST /admin/publish": () => json(201, { version: { ...VERSIONS.versions[0], id: 5 }, warnings: "", failures: [] }),
    "POST /admin/promote": () => json(200, { live: 4 }),
    "POST /admin/rollback": () => json(200, { version: { ...VERSIONS.versions[1], id: 5, rollback_of: 2 } }),
    "GET /admin/draft/table/faq": () => json(200, FAQ),
    "GET /admin/draft/table/products": () => json(200, PRODUCTS),
    "PUT /admin/draft/table/faq": () => json(200, { version: "ffff000011112222" }),
    "PUT /admin/draft/table/products": () => json(200, { version: "ffff000011113333" }),
    "POST /admin/draft/table/faq/import": () => json(200, { rows: FAQ.rows.concat([{ id: "size", questions: ["尺码怎么选"], answer: "参考详情页尺码表。", tags: ["尺码"] }]), count: 4 }),
    // Enough of the draft for the rule editor's page to open inside the shell.
    "GET /admin/draft": () => json(200, { dir: "rules", base: 3, live: 3, files: [
      { path: "aftersale.kefu", kind: "rules", size: 420, version: "00aa11bb22cc33dd" },
      { path: "kb/faq.yaml", kind: "kb", size: 300, version: "a1b2c3d4e5f60718" },
      { path: "tests/aftersale.yaml", kind: "tests", size: 120, version: "1111222233334444" },
    ] }),
    "GET /admin/draft/file": (req) => json(200, { path: new URL(req.url()).searchParams.get("path"), version: "00aa11bb22cc33dd", text: "intent 售后.换货 {\n  \"我想换个颜色\"\n}\n\nrule 售后.换货 {\n  when intent 售后.换货 and user.vip\n  reply \"亲，VIP 可以免费换货，请提供订单号\"\n}\n" }),
    "POST /admin/draft/check": () => json(200, { ok: true, errors: 0, warnings: 0, diagnostics: [], rendered: "", symbols: { intents: [], entities: [], slots: [], flows: [], rules: [], promotions: [], policies: [], styles: [] } }),
    ...opts.overrides,
  };
  const handle = async (route) => {
    const req = route.request();
    const url = new URL(req.url());
    if (url.pathname.startsWith("/console") && !url.pathname.startsWith("/console/api/")) {
      const rel = url.pathname.replace(/^\/console\/?/, "");
      let file = rel && !rel.includes("..") ? join(DIST, rel) : join(DIST, "index.html");
      let body;
      try {
        body = await readFile(file);
      } catch {
        file = join(DIST, "index.html");
        body = await readFile(file);
      }
      return route.fulfill({ status: 200, contentType: TYPES[extname(file)] ?? "application/octet-stream", body });
    }
    const key = `${req.method()} ${url.pathname}`;
    state.calls.push({ key, headers: req.headers(), body: req.postData() });
    const h = handlers[key];
    if (!h) return route.fulfill(err(404, "not_found", `no mock for ${key}`));
    if (!url.pathname.startsWith("/console/api/") && !state.role) return route.fulfill(err(401, "unauthenticated", "sign in first"));
    return route.fulfill(await h(req));
  };
  return { handle, state };
}

// ---- scenarios ----

function expect(cond, what) {
  if (!cond) throw new Error("expected: " + what);
}

async function see(page, text) {
  await page.getByText(text, { exact: false }).first().waitFor({ timeout: 5000 });
}

/** Waits for a table cell (a textarea) holding `text`. */
async function seeCell(page, text) {
  await page.waitForFunction((x) => [...document.querySelectorAll("textarea")].some((t) => t.value.includes(x)), text, { timeout: 5000 });
}

/** The page scrolls sideways: wider than the viewport. */
async function overflows(page) {
  return page.evaluate(() => document.scrollingElement.scrollWidth > window.innerWidth);
}

/** A docs screenshot, docs/console/NAME.png (NAME-phone.png at 390 px), with KEFU_SCREENSHOTS=1. */
async function docShot(page, name, size) {
  if (process.env.KEFU_SCREENSHOTS !== "1") return;
  await mkdir(DOCS, { recursive: true });
  await page.screenshot({ path: join(DOCS, `${name}${size === "phone" ? "-phone" : ""}.png`) });
}

const SIZES = [
  ["desktop", { width: 1280, height: 800 }],
  ["phone", { width: 390, height: 844 }],
];

const scenarios = [
  ["signin", { role: null }, async (page, shot) => {
    await page.goto(ORIGIN + "/console/");
    await see(page, "登录 kefu 控制台");
    await shot("signin");
    await page.fill("input[name=name]", "小王");
    await page.fill("input[name=password]", "wrong");
    await page.click("button[type=submit]");
    await see(page, "用户名或密码不对");
    await shot("signin-wrong");
  }],
  ["signin-limited", { role: null, login: () => err(429, "too_many_attempts", "too many attempts", {}) }, async (page, shot) => {
    await page.route("**/console/api/login", (r) => r.fulfill({ ...err(429, "too_many_attempts", "too many attempts"), headers: { "retry-after": "600" } }));
    await page.goto(ORIGIN + "/console/");
    await page.fill("input[name=name]", "小王");
    await page.fill("input[name=password]", "x");
    await page.click("button[type=submit]");
    await see(page, "尝试次数太多");
    expect(await page.locator("button[type=submit]").isDisabled(), "the button waits");
    await shot("signin-limited");
  }],
  ["signin-ok", { role: null }, async (page) => {
    await page.goto(ORIGIN + "/console/tests");
    await page.fill("input[name=name]", "小王");
    await page.fill("input[name=password]", "right");
    await page.click("button[type=submit]");
    await see(page, "对话测试");
  }],
  ["publisher", { role: "publisher" }, async (page, shot, srv, size) => {
    await page.goto(ORIGIN + "/console/");
    await see(page, "今日概览");
    await see(page, "每小时回答来源");
    await shot("overview");
    if (size === "phone") {
      await page.click(".menu-button");
      await see(page, "知识库表格");
      await shot("nav-open");
      await page.click(".sidenav >> text=测试");
    } else await page.click("nav >> text=测试");
    await see(page, "失败的用例");
    await see(page, "售后.保价");
    expect((await page.locator('a[href="/console/editor?path=aftersale.kefu&line=48"]').count()) === 1, "never-exercised rule links to its line");
    await shot("tests");
    await page.goto(ORIGIN + "/console/publish");
    await see(page, "aftersale.kefu");
    await see(page, "rule 售后.退货 → rule 售后.换货");
    await see(page, "#4");
    await page.locator(".group summary").first().click();
    await shot("publish", true);
    await page.fill("textarea", "换货话术");
    await page.getByRole("button", { name: "灰度发布 10%" }).click();
    await see(page, "10% 的会话使用它");
    await shot("publish-confirm");
    await page.locator(".dialog button.primary").click();
    await see(page, "版本 5 已开始灰度");
    const pub = srv.calls.find((c) => c.key === "POST /admin/publish");
    expect(pub && JSON.parse(pub.body).canary === 10 && JSON.parse(pub.body).draft === true, "publish sent draft + canary");
    expect(pub.headers["x-csrf-token"] === "tok", "publish carries the CSRF token");
    await page.getByRole("button", { name: "回滚到此版本" }).first().click();
    await see(page, "作为一个新版本重新发布");
    await shot("rollback-confirm");
    await page.locator(".dialog button.danger").click();
    await see(page, "已回滚");
    await page.goto(ORIGIN + "/console/tables/faq");
    await seeCell(page, "默认顺丰");
    await shot("tables-faq");
    await page.click("text=商品");
    await seeCell(page, "纯棉圆领T恤");
    await shot("tables-products");
    await page.getByText("English").click();
    await see(page, "Knowledge-base tables");
    await shot("tables-products-en");
    await page.goto(ORIGIN + "/console/");
    await see(page, "Answers by source per hour");
    expect((await page.title()) === "kefu console", "the title follows the language");
    await shot("overview-en");
    await page.goto(ORIGIN + "/console/publish");
    await see(page, "Versions");
    await shot("publish-en", true);
    await page.getByText("中文").click();
    await see(page, "草稿与线上版本的差异");
  }],
  ["publish-errors", {
    role: "publisher",
    overrides: {
      "POST /admin/publish": (req) => {
        const b = req.postDataJSON();
        if (b.force) return err(409, "conflict", "the draft was edited from version 2 but version 3 is live: rebase the draft on 3", { parent: 2, live: 3 });
        return err(422, "tests_failed", "2 conversation tests failed", { passed: 41, failed: 2, failures: ["tests/aftersale.yaml: turn 2 (我想换个颜色): expected rule 售后.换货, got 售后.退货", "tests/shipping.yaml: turn 1 (你们发什么快递): expected source rule, got faq"] });
      },
    },
  }, async (page, shot) => {
    await page.goto(ORIGIN + "/console/publish");
    await see(page, "#4");
    await page.fill("textarea", "换货话术");
    await page.getByRole("button", { name: "发布", exact: true }).click();
    await page.locator(".dialog button.primary").click();
    await see(page, "测试没通过");
    await page.locator(".publish-form .error-box").scrollIntoViewIfNeeded();
    await shot("publish-tests-failed");
    await page.getByText("仍然发布").click();
    await page.locator(".dialog button.primary").click();
    await see(page, "草稿是基于版本 2 编辑的");
    await page.getByRole("button", { name: "查看版本 2 → 3 的改动" }).click();
    await see(page, "能开发票吗");
    await page.locator(".publish-form .error-box").scrollIntoViewIfNeeded();
    await shot("publish-conflict");
  }],
  ["viewer", {
    role: "viewer", user: "访客",
    overrides: { "POST /admin/draft/tests": () => err(403, "forbidden", "this needs the editor role", { needs: "editor" }) },
  }, async (page, shot) => {
    await page.goto(ORIGIN + "/console/publish");
    await see(page, "你的角色不能发布");
    expect((await page.getByRole("button", { name: "回滚到此版本" }).count()) === 0, "a viewer sees no rollback");
    expect((await page.getByRole("button", { name: "灰度发布 10%" }).count()) === 0, "a viewer sees no canary button");
    await shot("publish-viewer", true);
    await page.goto(ORIGIN + "/console/tests");
    await see(page, "没有权限");
    await shot("forbidden");
    await page.goto(ORIGIN + "/console/tables/faq");
    await see(page, "你的角色只能查看表格");
    expect((await page.getByRole("button", { name: "保存" }).count()) === 0, "a viewer sees no save");
  }],
  ["tables-errors", {
    role: "editor",
    overrides: {
      "POST /admin/draft/table/faq/import": () => err(422, "invalid_rows", "the file has errors", { errors: [
        { sheet: "FAQ", row: 3, column: 2, message: "问法不能为空" },
        { sheet: "FAQ", row: 7, column: 3, message: "答案超过 2000 字" },
      ] }),
      "PUT /admin/draft/table/faq": () => err(409, "conflict", "kb/faq.yaml changed since you read it", { current: { text: "...", version: "9999" }, diff: "--- yours/kb/faq.yaml\n+++ current/kb/faq.yaml\n@@ -1,3 +1,3 @@\n-- id: shipping2\n+- id: shipping\n   q: [发什么快递]\n" }),
    },
  }, async (page, shot) => {
    await page.goto(ORIGIN + "/console/tables/faq");
    await seeCell(page, "默认顺丰");
    await page.setInputFiles("input[type=file]", { name: "faq.xlsx", mimeType: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", buffer: Buffer.from("PK fake") });
    await see(page, "问法不能为空");
    await see(page, "FAQ!B3");
    await shot("tables-import-errors");
    await page.locator("table.grid textarea").first().fill("shipping2");
    await page.getByRole("button", { name: "保存" }).click();
    await see(page, "别人在你之后保存了这个表格");
    await shot("tables-conflict");
  }],
  ["tables-import", { role: "editor" }, async (page, shot, srv) => {
    await page.goto(ORIGIN + "/console/tables/faq");
    await seeCell(page, "默认顺丰");
    await page.setInputFiles("input[type=file]", { name: "faq.csv", mimeType: "text/csv", buffer: Buffer.from("id,questions\n") });
    await see(page, "预览");
    await seeCell(page, "参考详情页尺码表");
    await shot("tables-import-preview");
    await page.getByRole("button", { name: "保存" }).click();
    await see(page, "已保存");
    const put = srv.calls.find((c) => c.key === "PUT /admin/draft/table/faq");
    const body = JSON.parse(put.body);
    expect(body.version === FAQ.version && body.rows.length === 4 && Array.isArray(body.rows[0].questions), "PUT carries the rows (lists as arrays) and the version");
  }],
  ["empty", { role: "admin", overrides: { "GET /admin/report": () => err(404, "no_log", "this node keeps no conversation log") } }, async (page, shot) => {
    await page.goto(ORIGIN + "/console/");
    await see(page, "不保存对话日志");
    await shot("overview-no-log");
  }],
  ["quiet", { role: "admin", overrides: { "GET /admin/report": () => json(200, { report: { turns: 0, sessions: 0 }, hourly: [], satisfaction: {} }) } }, async (page, shot) => {
    await page.goto(ORIGIN + "/console/");
    await see(page, "今天还没有对话");
    await shot("overview-empty");
  }],
  ["mine", { role: "editor" }, async (page, shot, srv, size) => {
    await page.goto(ORIGIN + "/console/mine");
    await page.getByRole("heading", { name: "未解决的问题" }).waitFor();
    await see(page, "能开增值税专用发票吗");
    await see(page, "新建 FAQ「增值税专用发票」");
    await see(page, "把这些说法加为意图「物流.查询」的例句");
    await see(page, "本周 21 · 上周 9");
    expect((await page.getByRole("button", { name: "采纳为草稿" }).count()) === 4, "an editor may accept each cluster");
    expect(!(await overflows(page)), "no sideways scrolling");
    await shot("mine");
    await docShot(page, "mine", size);
    // Accept the first cluster: a new FAQ entry, one message left out, the id changed.
    await page.getByRole("button", { name: "采纳为草稿" }).first().click();
    const form = page.getByTestId("mine-accept-form");
    await form.waitFor();
    await form.getByRole("checkbox", { name: "专票和普票有什么区别" }).uncheck();
    await form.getByRole("textbox", { name: "FAQ 编号" }).fill("增值税专票");
    expect(!(await overflows(page)), "the form fits");
    await form.scrollIntoViewIfNeeded();
    await shot("mine-accept");
    await page.getByTestId("mine-write").click();
    await see(page, "已写入草稿，还没有上线");
    await see(page, "answer: \"\"");
    const post = srv.calls.find((c) => c.key === "POST /admin/mine/accept");
    const sent = JSON.parse(post.body);
    expect(sent.action.kind === "new_faq" && sent.action.id === "增值税专票", "the action sent: " + post.body);
    expect(sent.messages.length === 6 && !sent.messages.includes("专票和普票有什么区别"), "the messages chosen: " + post.body);
    expect(post.headers["x-csrf-token"] === "tok", "the accept carries the CSRF token");
    const link = await page.getByTestId("mine-open-editor").first().getAttribute("href");
    expect(link === "/console/editor?path=kb%2Ffaq.yaml&line=215", "the editor link goes to the first added line: " + link);
    expect((await page.getByTestId("mine-to-publish").getAttribute("href")) === "/console/publish", "a link to Publish");
    expect(!(await overflows(page)), "the diff fits (it scrolls inside itself)");
    await page.getByTestId("mine-drafted").scrollIntoViewIfNeeded();
    await shot("mine-accepted");
    await docShot(page, "mine-accepted", size);
    // Switch the second cluster's action from its suggestion to a new intent.
    await page.getByRole("button", { name: "采纳为草稿" }).first().click();
    await page.getByTestId("mine-accept-form").getByRole("radio", { name: /新建意图/ }).check();
    await page.getByTestId("mine-write").click();
    await see(page, "# kefu mine 2026-12-06");
    const second = JSON.parse(srv.calls.filter((c) => c.key === "POST /admin/mine/accept")[1].body);
    expect(second.action.kind === "new_intent" && /^挖掘\./.test(second.action.name), "switched to a new intent: " + JSON.stringify(second));
    await page.getByText("English").click();
    await page.getByRole("heading", { name: "Unanswered questions" }).waitFor();
    await see(page, "Add these messages as examples of the intent “物流.查询”");
    await page.getByText("中文").click();
  }],
  ["mine-viewer", { role: "viewer", user: "访客" }, async (page, shot) => {
    await page.goto(ORIGIN + "/console/mine");
    await see(page, "能开增值税专用发票吗");
    expect((await page.getByRole("button", { name: "采纳为草稿" }).count()) === 0, "a viewer sees no accept button");
    await shot("mine-viewer");
  }],
  ["mine-invalid", { role: "editor", overrides: { "POST /admin/mine/accept": () => err(400, "invalid", "no intent `物流.查询` in the rules; did you mean `物流.查件`?") } }, async (page, shot) => {
    await page.goto(ORIGIN + "/console/mine");
    await page.getByRole("button", { name: "采纳为草稿" }).nth(1).click();
    await page.getByTestId("mine-write").click();
    await see(page, "这个建议写不进草稿");
    await see(page, "did you mean");
    await shot("mine-invalid");
  }],
  ["mine-empty", { role: "editor", overrides: { "GET /admin/mine": () => json(200, { ...MINE, misses: 0, conversations: 0, clusters: [], unclustered: 0 }) } }, async (page, shot) => {
    await page.goto(ORIGIN + "/console/mine");
    await see(page, "没有未解决的问题");
    await shot("mine-empty");
  }],
  ["mine-no-log", { role: "editor", overrides: { "GET /admin/mine": () => err(404, "no_log", "this node keeps no conversation log") } }, async (page, shot) => {
    await page.goto(ORIGIN + "/console/mine");
    await see(page, "不保存对话日志");
    await shot("mine-no-log");
  }],
  ["mine-period", { role: "editor" }, async (page, shot, srv) => {
    await page.goto(ORIGIN + "/console/mine");
    await see(page, "能开增值税专用发票吗");
    expect(srv.calls.some((c) => c.key === "GET /admin/mine"), "the page reads the report");
    const asked = page.waitForRequest((r) => new URL(r.url()).pathname === "/admin/mine" && new URL(r.url()).searchParams.has("since"));
    await page.getByTestId("mine-period").selectOption("7");
    const q = new URL((await asked).url()).searchParams;
    const days = (Date.parse(q.get("until")) - Date.parse(q.get("since"))) / 86_400_000;
    expect(Math.round(days) === 7, "seven days asked: " + q.toString());
    await page.getByTestId("mine-period").selectOption("custom");
    await page.locator("input[type=date]").first().waitFor();
    await shot("mine-period");
  }],
  ["editor-route", { role: "editor" }, async (page, shot) => {
    await page.goto(ORIGIN + "/console/editor?path=aftersale.kefu&line=12");
    // The lazily loaded editor page (or its placeholder) replaces the loading line.
    await page.waitForFunction(() => {
      const c = document.querySelector(".content");
      return c && c.children.length > 0 && !c.querySelector(":scope > .loading");
    }, null, { timeout: 10000 });
    await shot("editor-route");
  }],
];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
await mkdir(SHOTS, { recursive: true });
let failed = 0;
for (const [name, opts, run] of scenarios) {
  if (process.env.ONLY && !name.includes(process.env.ONLY)) continue;
  for (const [size, viewport] of SIZES) {
    const context = await browser.newContext({ viewport, deviceScaleFactor: 1, locale: "zh-CN" });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    const srv = server(opts);
    await context.route("**/*", srv.handle);
    const shot = async (label, full = false) => {
      if (full) await page.evaluate(() => scrollTo(0, 0));
      await page.screenshot({ path: join(SHOTS, `${label}-${size}.png`), fullPage: full });
    };
    try {
      await run(page, shot, srv.state, size);
      expect(errors.length === 0, "no page errors: " + errors.join("; "));
      console.log(`ok   ${name} ${size}`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${name} ${size}: ${e.message.split("\n").slice(0, 3).join(" | ")}`);
      await page.screenshot({ path: join(SHOTS, `FAIL-${name}-${size}.png`) }).catch(() => {});
      if (process.env.DEBUG) console.log("  calls:", srv.state.calls.map((c) => c.key).join(", "), "| page errors:", errors.join("; "));
    }
    await context.close();
  }
}
await browser.close();
console.log(failed ? `${failed} failed` : "all passed", "· screenshots in", SHOTS);
process.exit(failed ? 1 : 0);
