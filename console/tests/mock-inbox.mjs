// The agent inbox against a mocked kefu: a small HTTP server (node:http) serves the built
// console (dist/) and answers the inbox's routes with the contract's JSON shapes
// (/work/contract23.md Part S, docs/api.md "Agent inbox"), including the live stream
// /admin/inbox/stream (SSE). Debian's chromium, driven by playwright-core, walks the inbox
// as an agent at 1280x800 and 390x844: the waiting list with its live-ticking times, a
// customer message pushed while the list is open, a takeover, canned replies, the
// suggestion, a reply (with the CSRF token), a note, a takeover refused because another
// agent holds the conversation (then forced), release (resume the flow) and resolve; a
// customer's photo as a thumbnail (GET /admin/images/{id}, the description as alt text)
// opened full size; and the overview's agents panel. It throws on a miss and writes
// screenshots.
//
// Run:   npx vite build && node tests/mock-inbox.mjs
// Env:   SHOTS=DIR        where the PNGs go (default /tmp/shots-inbox)
//        CHROMIUM=PATH    the browser (default /usr/bin/chromium)
//        SERVE=1          only serve the mock on http://127.0.0.1:PORT (PORT, default 5180),
//                         for working on the page by hand, or for checking tests/inbox.mjs
//                         itself (KEFU_INBOX_URL=http://127.0.0.1:PORT node --test
//                         tests/inbox.mjs): then sign-in is asked for (any password), and
//                         /v1/chat (streamed, with a slow "model" for 老板 that a takeover
//                         silences) and the customer's /v1/sessions/{id}/events answer too.
import { createServer } from "node:http";
import { readFile, mkdir } from "node:fs/promises";
import { extname, join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const DIST = join(dirname(fileURLToPath(import.meta.url)), "..", "dist");
/** The photo the mock's image store serves (a parcel with a torn side, 640×480). */
const PHOTO = join(dirname(fileURLToPath(import.meta.url)), "parcel.jpg");
const PHOTO_ID = "img_5d1c0e8a9b7f4e2d8c6a4b2e0f1d3c5a";
const PHOTO_DESC = "纸箱侧面有一道裂口，箱角被压扁";
const SHOTS = process.env.SHOTS ?? "/tmp/shots-inbox";
const TYPES = { ".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml", ".png": "image/png" };
const ME = "小王";
const CSRF = "tok";

// ---- the conversations ----

function trace(intent, conf, ...steps) {
  return [{ stage: "nlu", detail: `intent ${intent} (${conf.toFixed(2)}), emotion neutral` }, ...steps.map(([stage, detail]) => ({ stage, detail }))];
}

/** The mock's state: conversations by id, each a summary, messages, turns, notes, profile, context. */
function world() {
  const now = Date.now();
  const convs = new Map();
  const add = (id, s, messages, extra = {}) => {
    const seqd = messages.map((m, i) => ({ seq: i + 1, at: now - (messages.length - i) * 20_000, ...m }));
    const last = seqd[seqd.length - 1];
    const lastImages = last.images?.length ?? 0;
    convs.set(id, {
      summary: {
        id, kind: null, reason: null, group: null, agent: null, since: null, assigned_at: null, waiting_ms: null,
        emotion: "neutral", angry: false, vip: false, segment: "regular", turns: seqd.filter((m) => m.role === "user").length,
        queued: 0, unread: 0, last_text: last.text, last_role: last.role, last_at: last.at, ...(lastImages ? { last_images: lastImages } : {}), ...s,
      },
      messages: seqd,
      turns: extra.turns ?? [],
      notes: extra.notes ?? [],
      profile: extra.profile ?? { segment: s.segment ?? "regular", orders: 3 },
      context: extra.context ?? {},
      takeover: extra.takeover ?? null,
      resolved: extra.resolved ?? null,
      flow: extra.flow ?? null,
    });
  };
  add("u-1024", { state: "waiting", kind: "anger", reason: "客户情绪激动", group: "售后", since: now - 252_000, emotion: "angry", angry: true, queued: 1, unread: 1 }, [
    { role: "user", text: "我的快递三天了还没到 到底怎么回事" },
    { role: "bot", text: "亲，查到您的订单 ****0001 已于 11月3日 发出，正在运输中，预计 1-2 天送达～" },
    { role: "user", text: "等了半天了 气死了 到底有没有人管" },
    { role: "bot", text: "亲，正在为您转接人工客服，请稍候～（人工服务时间 9:00-23:00）" },
    { role: "user", text: "快点" },
  ], {
    turns: [
      { seq: 2, message: "我的快递三天了还没到 到底怎么回事", reply: "亲，查到您的订单 ****0001 已于 11月3日 发出…", source: "flow", flow: "查物流", step: "answer", intent: "物流.查物流", confidence: 0.94, emotion: "neutral",
        trace: trace("物流.查物流", 0.94, ["flow", "查物流 (rules/logistics.kefu:41) starts"], ["flow", "step answer: order 202611010001 shipped"]) },
      { seq: 4, message: "等了半天了 气死了 到底有没有人管", reply: "亲，正在为您转接人工客服…", source: "handoff", intent: "其他.投诉", confidence: 0.41, emotion: "angry",
        trace: [{ stage: "nlu", detail: "intent 其他.投诉 (0.41), emotion angry" }, { stage: "fallback", detail: "arm 2 (rules/shop.kefu:84): emotion == \"angry\" → handoff 客户情绪激动 as anger" }, { stage: "queue", detail: "售后: position 1, wait about 2 min" }] },
    ],
    profile: { segment: "regular", orders: 3, vip: false, city: "乌鲁木齐" },
    context: { order: { id: "202611010001", status: "shipped", signed_days: 0 } },
    takeover: { agent: null, queued: ["快点"], paused_flow: null },
  });
  add("vip-8848", { state: "waiting", kind: "asked", reason: "顾客要求转人工", group: "VIP", since: now - 65_000, vip: true, segment: "vip" }, [
    { role: "user", text: "我要换货 换个颜色" },
    { role: "bot", text: "好的亲，请问您的订单号是多少？" },
    { role: "user", text: "转人工" },
    { role: "bot", text: "亲，正在为您转接人工客服，请稍候～（人工服务时间 9:00-23:00）\n您前面还有 0 位顾客，预计等待 1 分钟。" },
  ], {
    turns: [
      { seq: 2, source: "flow", flow: "换货申请", step: "ask order_id", intent: "售后.换货", confidence: 0.97, trace: trace("售后.换货", 0.97, ["flow", "换货申请 (rules/aftersale.kefu:120) starts"]) },
      { seq: 4, source: "handoff", rule: "转人工", intent: "其他.转人工", confidence: 0.99, trace: trace("其他.转人工", 0.99, ["rule", "转人工 (rules/aftersale.kefu:317) answers: handoff as asked"], ["queue", "VIP: for user.vip == true (priority 10)"]) },
    ],
    profile: { segment: "vip", vip: true, orders: 12 },
    context: { product: { sku: "T-100", name: "纯棉圆领T恤" } },
    takeover: { agent: null, queued: [], paused_flow: { name: "换货申请" } },
  });
  add("u-2077", { state: "waiting", kind: "repeated_failure", reason: "未能获取订单号（换货）", group: "售后", since: now - 38_000 }, [
    { role: "user", text: "换尺码" },
    { role: "bot", text: "好的亲，请问您的订单号是多少？" },
    { role: "user", text: "不记得了" },
    { role: "bot", text: "亲，正在为您转接人工客服，请稍候～" },
  ]);
  add("u-3300", { state: "agent", agent: ME, kind: "rule", reason: "商品破损需人工核实", group: "售后", since: now - 600_000, assigned_at: now - 540_000 }, [
    { role: "user", text: "快递到了 盒子压坏了 里面的杯子也碎了" },
    { role: "bot", text: "亲，非常抱歉给您带来不好的体验，正在为您转接人工客服～" },
    { role: "agent", text: "您好，我是小王，麻烦拍一张外包装的照片给我看看" },
    { role: "user", text: "好的 稍等" },
    { role: "user", text: "", images: [{ id: PHOTO_ID, kind: "jpeg", width: 640, height: 480, bytes: 11820, description: PHOTO_DESC }] },
  ], { notes: [{ agent: ME, text: "顾客说签收时没注意，已要照片", at: now - 300_000 }], takeover: { agent: ME, queued: [], paused_flow: null } });
  add("u-5120", { state: "agent", agent: "小李", kind: "low_confidence", reason: "没把握的问题", group: "售前", since: now - 900_000, assigned_at: now - 880_000 }, [
    { role: "user", text: "你们家衣服适合孕妇穿吗" },
    { role: "agent", text: "亲，这款是宽松版型，孕期前中期都可以穿的" },
  ], { takeover: { agent: "小李", queued: [], paused_flow: null } });
  add("u-6001", { state: "bot" }, [
    { role: "user", text: "这件T恤洗了会缩水吗" },
    { role: "bot", text: "我们的T恤经过预缩处理，正常洗涤不会明显缩水，建议冷水手洗。" },
  ], { turns: [{ seq: 2, source: "rule", rule: "缩水", intent: "商品.缩水", confidence: 1, trace: trace("商品.缩水", 1, ["rule", "缩水 (rules/presale.kefu:97) answers"]) }] });
  add("u-6002", { state: "bot", emotion: "neutral" }, [
    { role: "user", text: "多久发货" },
    { role: "bot", text: "亲，现货商品每天 16:00 前付款当天发出，之后的次日发出～" },
  ]);
  add("u-7001", { state: "resolved", agent: ME }, [
    { role: "user", text: "退款什么时候到账" },
    { role: "agent", text: "亲，已为您加急处理，1-3 个工作日原路退回" },
  ], { resolved: { outcome: "已退款", agent: ME, at: now - 3_600_000 } });
  return convs;
}

const CANNED = [
  { title: "安抚-等待", text: "亲，非常抱歉让您久等了，我马上为您查看，请稍等一下～", tags: ["安抚"], group: null },
  { title: "物流-催件", text: "亲，已经帮您联系快递加急派送，预计 24 小时内送达，请保持电话畅通～", tags: ["物流"], group: "售后" },
  { title: "退货-地址", text: "亲，退货请寄回：浙江省杭州市余杭区仓前街道 示例旗舰店售后部（收），寄出后把单号发给我～", tags: ["退货"], group: "售后" },
  { title: "换货-颜色", text: "亲，可以为您换颜色，请把订单号和想换的颜色发给我，我帮您登记～", tags: ["换货"], group: null },
];

/** The report's agents section as `kefu report --json` gives it (times in seconds). */
function agentsReport() {
  const f = (a, b) => ({ count: 10, p50: a, p90: b });
  const row = (name, conversations, frt, handling, waiting, satisfaction, scores) => ({
    name, conversations, first_response: frt, handling, waiting, satisfaction, scores,
  });
  return {
    by_agent: [
      row("小王", 18, f(24, 71), f(260, 690), f(41, 150), 4.7, 9),
      row("小李", 11, f(38, 120), f(300, 900), f(52, 210), 4.4, 5),
    ],
    by_group: [
      row("售后", 20, f(30, 90), f(280, 800), f(48, 190), 4.5, 10),
      row("VIP", 4, f(12, 30), f(200, 400), f(9, 25), 4.9, 3),
      row("售前", 5, f(41, 95), f(150, 330), f(60, 160), null, 0),
    ],
  };
}

function report() {
  const hourly = [];
  for (let h = 0; h < 24; h++) {
    const busy = h >= 8 && h <= 22 ? Math.round(20 + 30 * Math.sin(((h - 8) / 14) * Math.PI)) : 0;
    hourly.push({ hour: `2026-12-06T${String(h).padStart(2, "0")}:00:00+08:00`, turns: busy, rule: Math.round(busy * 0.6), faq: Math.round(busy * 0.2), model: Math.round(busy * 0.1), handoff: Math.round(busy * 0.06), other: 0, p50_ms: busy ? 20 : null, p95_ms: busy ? 140 : null });
  }
  const turns = hourly.reduce((a, h) => a + h.turns, 0);
  return {
    report: { sessions: 212, turns, sources: [], handoffs: { sessions: { count: 14, of: 212, rate: 0.066 } }, latency_ms: [{ source: "all", p50: 21, p95: 130 }] },
    since: "2026-12-06T00:00:00+08:00", until: "2026-12-06T13:41:55+08:00",
    hourly, satisfaction: { scores: 57, mean: 4.53, share_4_or_5: 0.912 },
    agents: agentsReport(),
  };
}

// ---- the mocked server ----

/** Starts the mock; returns {url, calls, convs, customer, close}. `signin`: /me answers 401
 * until POST /console/api/login. */
export async function startMock(port = 0, { signin = false, role = "agent" } = {}) {
  const convs = world();
  const streams = new Set();
  /** The customers' /events streams by session id. */
  const customers = new Map();
  /** Turns being "generated" by session id: a takeover sets `silenced`. */
  const running = new Map();
  const sessions = new Set();
  const calls = [];
  const online = new Map([["小李", 1]]);
  const list = (q) => {
    let rows = [...convs.values()].map((c) => summary(c));
    if (q.get("state")) rows = rows.filter((r) => r.state === q.get("state"));
    const counts = { waiting: 0, agent: 0, bot: 0, resolved: 0 };
    for (const c of convs.values()) counts[c.summary.state]++;
    const groups = ["售前", "售后", "VIP"].map((name) => ({ name, label: name, open: true, waiting: [...convs.values()].filter((c) => c.summary.state === "waiting" && c.summary.group === name).length, agents: 2 }));
    const agents = [ME, "小李"].map((name) => ({ name, online: (online.get(name) ?? 0) > 0, holding: [...convs.values()].filter((c) => c.summary.state === "agent" && c.summary.agent === name).length }));
    const limit = Number(q.get("limit") ?? 1000);
    return { conversations: rows.slice(0, limit), counts, groups, agents, me: ME };
  };
  const summary = (c) => {
    const s = c.summary;
    return { ...s, waiting_ms: s.state === "waiting" && s.since ? Date.now() - s.since : null };
  };
  const send = (res, event, data) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  const push = (event, data) => {
    for (const res of streams) send(res, event, data);
  };
  const changed = (c) => {
    const last = c.messages[c.messages.length - 1];
    if (last) Object.assign(c.summary, { last_text: last.text, last_role: last.role, last_at: last.at });
    push("conversation", summary(c));
  };
  const say = (c, role, text) => {
    const m = { seq: (c.messages.at(-1)?.seq ?? 0) + 1, role, text, at: Date.now() };
    c.messages.push(m);
    push("message", { session: c.summary.id, ...m });
    if (role === "agent") for (const res of customers.get(c.summary.id) ?? []) res.write(`event: message\nid: ${m.seq}\ndata: ${JSON.stringify(m)}\n\n`);
    changed(c);
    return m;
  };
  const fresh = (id) => {
    let c = convs.get(id);
    if (!c) convs.set(id, (c = { summary: { id, state: "bot", turns: 0, emotion: "neutral", angry: false, vip: false }, messages: [], turns: [], notes: [], profile: {}, context: {}, takeover: null, resolved: null }));
    return c;
  };
  const HANDOFF = "亲，正在为您转接人工客服，请稍候～（人工服务时间 9:00-23:00）";
  const MODEL = "亲，小美是店里的客服，店铺的经营信息不方便透露哦～有商品、订单或者售后的问题随时问我，小美一直都在！";

  /** POST /v1/chat, streamed as kefu does: deltas, retract when a takeover drops the answer, done. */
  const chat = async (req, res, b) => {
    const id = String(b.session_id ?? "");
    const text = String(b.message ?? "");
    const c = fresh(id);
    const s = c.summary;
    const ev = (event, data) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
    if (s.state === "resolved") s.state = "bot";
    say(c, "user", text);
    const base = { session_id: id, session_token: "tok-" + id, rules_version: "mock", trace: [] };
    if (s.state !== "bot") {
      s.unread = (s.unread ?? 0) + 1;
      changed(c);
      ev("done", { ...base, reply: "", source: "human", handoff: { reason: s.reason, kind: s.kind, group: s.group } });
      return res.end();
    }
    const handoff = /气死|转人工/.test(text) ? (/气死/.test(text) ? { reason: "客户情绪激动", kind: "anger", group: "售后" } : { reason: "顾客要求转人工", kind: "asked", group: "售前" }) : null;
    if (handoff) {
      const m = say(c, "bot", HANDOFF);
      Object.assign(s, { state: "waiting", ...handoff, since: Date.now(), angry: handoff.kind === "anger", emotion: handoff.kind === "anger" ? "angry" : "neutral" });
      c.takeover = { agent: null, queued: [], paused_flow: null };
      c.turns.push({ seq: m.seq, source: "handoff", message: text, reply: HANDOFF, trace: [] });
      changed(c);
      ev("delta", { text: HANDOFF });
      ev("done", { ...base, reply: HANDOFF, source: "handoff", handoff: { ...handoff, off_hours: false, place: { position: 1, wait_minutes: 0 } } });
      return res.end();
    }
    if (text.includes("老板")) {
      const run = { silenced: false };
      running.set(id, run);
      let sent = 0;
      for (let i = 0; i < MODEL.length && !run.silenced; i += 2) {
        await new Promise((r) => setTimeout(r, 250));
        if (run.silenced) break;
        ev("delta", { text: MODEL.slice(i, i + 2) });
        sent++;
      }
      running.delete(id);
      if (run.silenced) {
        if (sent) ev("retract", {});
        ev("done", { ...base, reply: "", source: "human", dropped: true, handoff: { reason: null, kind: "agent", group: null } });
        return res.end();
      }
      const m = say(c, "bot", MODEL);
      c.turns.push({ seq: m.seq, source: "llm", message: text, reply: MODEL, trace: [] });
      ev("done", { ...base, reply: MODEL, source: "llm" });
      return res.end();
    }
    const reply = text.includes("发货") ? "亲，现货商品每天 16:00 前付款当天发出～" : "亲，小美在的～请问有什么可以帮您？";
    const m = say(c, "bot", reply);
    const turn = { seq: m.seq, message: text, reply, source: "rule", rule: "问候", intent: "其他.问候", confidence: 0.9, trace: trace("其他.问候", 0.9, ["rule", "问候 (rules/presale.kefu:3) answers"]) };
    c.turns.push(turn);
    push("turn", { session: id, turn });
    ev("delta", { text: reply });
    ev("done", { ...base, reply, source: "rule" });
    res.end();
  };

  /** A customer message, as kefu would handle it: queued for a person, or answered by the bot. */
  const customer = (id, text) => {
    let c = convs.get(id);
    if (!c) {
      convs.set(id, (c = { summary: { id, state: "bot", turns: 0, emotion: "neutral", angry: false, vip: false }, messages: [], turns: [], notes: [], profile: {}, context: {}, takeover: null, resolved: null }));
    }
    say(c, "user", text);
    if (c.summary.state === "resolved") c.summary.state = "bot";
    if (c.summary.state === "bot") {
      const m = say(c, "bot", "亲，小美收到啦～");
      const turn = { seq: m.seq, message: text, reply: m.text, source: "rule", rule: "问候", intent: "其他.问候", confidence: 0.9, trace: trace("其他.问候", 0.9, ["rule", "问候 (rules/presale.kefu:3) answers"]) };
      c.turns.push(turn);
      push("turn", { session: id, turn });
    } else {
      c.summary.unread = (c.summary.unread ?? 0) + 1;
      changed(c);
    }
  };

  const body = (req) =>
    new Promise((resolve) => {
      let b = "";
      req.on("data", (d) => (b += d));
      req.on("end", () => {
        try {
          resolve(b ? JSON.parse(b) : {});
        } catch {
          resolve(null);
        }
      });
    });
  const json = (res, status, data) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(data));
  };
  const err = (res, status, type, message, extra = {}) => json(res, status, { error: { type, message, ...extra } });

  const server = createServer(async (req, res) => {
    const url = new URL(req.url, "http://mock");
    const p = url.pathname;
    if (p.startsWith("/console") && !p.startsWith("/console/api/")) {
      const rel = p.replace(/^\/console\/?/, "");
      let file = rel && !rel.includes("..") ? join(DIST, rel) : join(DIST, "index.html");
      let data;
      try {
        data = await readFile(file);
      } catch {
        file = join(DIST, "index.html");
        data = await readFile(file);
      }
      res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
      return res.end(data);
    }
    const call = { key: `${req.method} ${p}`, csrf: req.headers["x-csrf-token"], body: null };
    calls.push(call);
    if (p === "/livez") {
      res.writeHead(200, { "content-type": "text/plain" });
      return res.end("ok");
    }
    if (p === "/v1/chat" && req.method === "POST") return chat(req, res, (await body(req)) ?? {});
    let ce = /^\/v1\/sessions\/([^/]+)\/events$/.exec(p);
    if (ce) {
      const id = decodeURIComponent(ce[1]);
      const c = convs.get(id);
      if (!c || url.searchParams.get("token") !== "tok-" + id) return err(res, 404, "not_found", "no such session");
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
      const after = Number(req.headers["last-event-id"] ?? url.searchParams.get("after") ?? 0);
      for (const m of c.messages) if (m.seq > after && m.role === "agent") res.write(`event: message\nid: ${m.seq}\ndata: ${JSON.stringify(m)}\n\n`);
      if (!customers.has(id)) customers.set(id, new Set());
      customers.get(id).add(res);
      req.on("close", () => customers.get(id)?.delete(res));
      return;
    }
    if (p === "/console/api/login" && req.method === "POST") {
      const b = (await body(req)) ?? {};
      if (b.name !== ME) return err(res, 401, "wrong_credentials", "wrong name or password");
      const sid = String(Math.random()).slice(2);
      sessions.add(sid);
      res.writeHead(200, { "content-type": "application/json", "set-cookie": `mock_session=${sid}; Path=/; HttpOnly; SameSite=Strict` });
      return res.end(JSON.stringify({ user: ME, role: "agent", csrf: CSRF }));
    }
    const cookie = /mock_session=(\d+)/.exec(req.headers.cookie ?? "");
    if (signin && !(cookie && sessions.has(cookie[1]))) return err(res, 401, "unauthenticated", "sign in first");
    if (req.method !== "GET" && !p.startsWith("/mock/") && req.headers["x-csrf-token"] !== CSRF) return err(res, 403, "csrf", "missing X-CSRF-Token");
    if (p === "/console/api/me") return json(res, 200, { user: ME, role, csrf: CSRF, can: role === "agent" ? ["read", "agent"] : ["read"] });
    if (role !== "agent" && (p.startsWith("/admin/inbox") || p.startsWith("/v1/sessions/"))) return err(res, 403, "forbidden", "this needs the agent role", { needs: "agent" });
    if (p === "/admin/report") return json(res, 200, report());
    if (p.startsWith("/admin/images/")) {
      // The image store: the stored kind's type, never sniffed, private.
      if (p !== `/admin/images/${PHOTO_ID}`) return err(res, 404, "not_found", "no such image");
      res.writeHead(200, { "content-type": "image/jpeg", "x-content-type-options": "nosniff", "cache-control": "private, max-age=3600" });
      return res.end(await readFile(PHOTO));
    }
    if (p === "/admin/inbox") return json(res, 200, list(url.searchParams));
    if (p === "/admin/inbox/stream") {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
      streams.add(res);
      online.set(ME, (online.get(ME) ?? 0) + 1);
      send(res, "snapshot", list(new URLSearchParams()));
      const beat = setInterval(() => res.write(": heartbeat\n\n"), 15_000);
      req.on("close", () => {
        clearInterval(beat);
        streams.delete(res);
        online.set(ME, (online.get(ME) ?? 1) - 1);
      });
      return;
    }
    if (p === "/admin/canned") {
      const q = url.searchParams.get("q") ?? "";
      return json(res, 200, { canned: CANNED.filter((c) => !q || c.title.includes(q) || c.text.includes(q) || (c.tags ?? []).some((t) => t.includes(q))) });
    }
    if (req.method === "POST" && p.startsWith("/mock/customer/")) {
      const b = await body(req);
      customer(decodeURIComponent(p.slice("/mock/customer/".length)), b.text);
      return json(res, 200, { ok: true });
    }
    let m = /^\/admin\/inbox\/([^/]+)(\/suggest)?$/.exec(p);
    if (m) {
      const c = convs.get(decodeURIComponent(m[1]));
      if (!c) return err(res, 404, "not_found", "no such conversation");
      if (m[2]) {
        const lastUser = [...c.messages].reverse().find((x) => x.role === "user");
        return json(res, 200, { message: lastUser?.text ?? "", reply: "亲，查到您的包裹已到达乌鲁木齐转运中心，预计明天送达，请您耐心等待～", source: "flow", flow: "查物流", intent: "物流.查物流", confidence: 0.91, model: false, trace: [] });
      }
      return json(res, 200, { summary: summary(c), messages: c.messages, turns: c.turns, notes: c.notes, profile: c.profile, context: c.context, flow: c.flow, slots: {}, takeover: c.takeover, resolved: c.resolved, feedback: null });
    }
    m = /^\/v1\/sessions\/([^/]+)\/(takeover|reply|release|note|resolve)$/.exec(p);
    if (m && req.method === "POST") {
      const id = decodeURIComponent(m[1]);
      const c = convs.get(id);
      const b = await body(req);
      call.body = b;
      if (!c) return err(res, 404, "not_found", `no session \`${id}\``);
      const s = c.summary;
      if (b === null) return err(res, 400, "invalid_json", "bad JSON");
      switch (m[2]) {
        case "takeover":
          if (s.state === "agent" && s.agent && s.agent !== ME && !b.force) return err(res, 409, "held_by_other", `${s.agent} holds it`, { agent: s.agent });
          if (running.has(id)) running.get(id).silenced = true;
          if (s.state === "bot" || s.state === "resolved") Object.assign(s, { kind: "agent", reason: null, since: Date.now() });
          Object.assign(s, { state: "agent", agent: ME, assigned_at: Date.now(), unread: 0 });
          c.takeover = { ...(c.takeover ?? {}), agent: ME };
          c.resolved = null;
          changed(c);
          break;
        case "reply":
          if (typeof b.text !== "string" || !b.text.trim()) return err(res, 400, "invalid_request", "`text` is required");
          if (s.state === "bot" || s.state === "resolved") return err(res, 409, "not_taken_over", "no human has it");
          if (s.state === "agent" && s.agent !== ME) return err(res, 409, "held_by_other", `${s.agent} holds it`, { agent: s.agent });
          Object.assign(s, { state: "agent", agent: ME, assigned_at: s.assigned_at ?? Date.now(), unread: 0 });
          say(c, "agent", b.text);
          break;
        case "release":
          if (!["resume", "cancel", undefined].includes(b.flow)) return err(res, 400, "invalid_request", "flow: resume or cancel");
          c.flow = b.flow === "resume" && c.takeover?.paused_flow ? { name: c.takeover.paused_flow.name, awaiting: "order_id" } : null;
          Object.assign(s, { state: "bot", agent: null, assigned_at: null, since: null, kind: null, reason: null, group: null });
          c.takeover = null;
          changed(c);
          break;
        case "note": {
          if (typeof b.text !== "string" || !b.text.trim()) return err(res, 400, "invalid_request", "`text` is required");
          const note = { agent: ME, text: b.text, at: Date.now() };
          c.notes.push(note);
          push("note", { session: id, note });
          break;
        }
        case "resolve":
          if (typeof b.outcome !== "string" || !b.outcome.trim() || [...b.outcome.trim()].length > 64) return err(res, 400, "invalid_request", "outcome: 1 to 64 characters");
          c.resolved = { outcome: b.outcome.trim(), agent: ME, at: Date.now() };
          c.takeover = null;
          Object.assign(s, { state: "resolved", assigned_at: null });
          changed(c);
          break;
      }
      return json(res, 200, { id });
    }
    return err(res, 404, "not_found", `no mock for ${req.method} ${p}`);
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    calls,
    convs,
    customer,
    close: () => {
      for (const res of streams) res.end();
      return new Promise((r) => server.close(r));
    },
  };
}

// ---- scenarios ----

function expect(cond, what) {
  if (!cond) throw new Error("expected: " + what);
}

async function see(page, text, timeout = 5000) {
  await page.getByText(text, { exact: false }).first().waitFor({ timeout });
}

const SIZES = [
  ["desktop", { width: 1280, height: 800 }],
  ["phone", { width: 390, height: 844 }],
];

async function run() {
  const { chromium } = await import("playwright-core");
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  await mkdir(SHOTS, { recursive: true });
  let failed = 0;
  for (const [size, viewport] of SIZES) {
    const mock = await startMock();
    const context = await browser.newContext({ viewport, deviceScaleFactor: 1, locale: "zh-CN", timezoneId: "Asia/Shanghai" });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    const shot = (label) => page.screenshot({ path: join(SHOTS, `${label}-${size}.png`) });
    const phone = size === "phone";
    try {
      // The agent's home is the inbox: the console's root takes them there.
      await page.goto(mock.url + "/console/");
      await page.waitForURL(/\/console\/inbox$/);
      await page.getByRole("heading", { name: "坐席工作台" }).waitFor();
      await page.locator("[data-testid=inbox-status].ib-live").waitFor();
      const rows = page.getByTestId("inbox-row");
      await rows.first().waitFor();
      const ids = await rows.evaluateAll((els) => els.map((e) => e.dataset.id));
      expect(JSON.stringify(ids) === JSON.stringify(["u-1024", "vip-8848", "u-2077"]), `waiting, longest first: ${ids}`);
      expect((await page.getByTestId("inbox-tab-waiting").textContent()).includes("3"), "the waiting count");
      // The waiting time ticks.
      const w0 = await rows.first().getByTestId("inbox-waiting").textContent();
      await page.waitForFunction((w) => document.querySelector("[data-testid=inbox-waiting]")?.textContent !== w, w0, { timeout: 3000 });
      // A new conversation handed over while the list is open appears at once.
      mock.customer("u-9001", "你好");
      const c = mock.convs.get("u-9001");
      Object.assign(c.summary, { state: "waiting", kind: "low_confidence", reason: "没把握的问题", group: "售前", since: Date.now() });
      mock.customer("u-9001", "我想问一下这个能不能开专票");
      await page.locator("[data-testid=inbox-row][data-id=u-9001]").waitFor({ timeout: 2000 });
      expect((await page.getByTestId("inbox-tab-waiting").textContent()).includes("4"), "the count follows");
      // Filters.
      await page.getByRole("button", { name: "愤怒" }).click();
      expect((await rows.count()) === 1, "angry only");
      await page.getByRole("button", { name: "愤怒" }).click();
      await page.getByRole("button", { name: "VIP" }).click();
      expect((await rows.count()) === 1 && (await rows.first().getAttribute("data-id")) === "vip-8848", "VIP only");
      await page.getByRole("button", { name: "VIP" }).click();
      await shot("inbox-list");

      // Open the angry customer: transcript, traces, profile.
      await page.locator("[data-testid=inbox-row][data-id=u-1024]").click();
      await page.getByTestId("inbox-conversation").waitFor();
      await see(page, "等了半天了 气死了");
      if (phone) expect(!(await page.getByTestId("inbox-list").isVisible()), "a phone shows the conversation alone");
      const trace = page.getByTestId("inbox-trace").nth(1);
      await trace.locator("summary").click();
      await see(page, "emotion == \"angry\"");
      await shot("inbox-conversation");

      // Take it over, use a canned reply, send it.
      await page.getByTestId("inbox-takeover").click();
      await page.locator("[data-testid=inbox-conversation][data-state=agent]").waitFor();
      await page.getByTestId("inbox-canned").click();
      await page.getByRole("searchbox", { name: "搜索快捷回复" }).fill("安抚");
      await page.getByText("安抚-等待").click();
      expect((await page.getByTestId("inbox-reply").inputValue()).startsWith("亲，非常抱歉让您久等了"), "the canned text fills the box");
      await page.getByTestId("inbox-reply").press("Enter");
      await page.locator("[data-testid=msg-agent]", { hasText: "非常抱歉让您久等了" }).waitFor();
      const reply = mock.calls.find((x) => x.key === "POST /v1/sessions/u-1024/reply");
      expect(reply && reply.csrf === CSRF && reply.body.text.startsWith("亲，非常抱歉"), "the reply carries the CSRF token and the text");
      // The customer answers: shown to the agent live.
      mock.customer("u-1024", "我明天要出门 今天能到吗");
      await page.locator("[data-testid=msg-user]", { hasText: "今天能到吗" }).waitFor({ timeout: 2000 });
      // The suggestion fills the box, editable.
      await page.getByTestId("inbox-suggest").click();
      await page.waitForFunction(() => document.querySelector("[data-testid=inbox-reply]")?.value.includes("乌鲁木齐转运中心"));
      await see(page, "建议来自 flow 查物流");
      await shot("inbox-reply");
      // A note.
      if (phone) await page.getByRole("button", { name: "资料与备注" }).click();
      await page.getByTestId("inbox-note").fill("顾客明天出门，已催快递");
      await page.getByTestId("inbox-note-add").click();
      await page.getByTestId("inbox-notes").getByText("顾客明天出门").waitFor();
      await page.getByTestId("inbox-side").getByText("202611010001").first().waitFor();
      await shot("inbox-notes");
      if (phone) await page.getByRole("button", { name: "对话" }).click();
      // Resolve.
      await page.getByTestId("inbox-resolve").click();
      await page.getByRole("button", { name: "已补发" }).click();
      await page.getByRole("dialog").getByRole("button", { name: "解决" }).click();
      await page.locator("[data-testid=inbox-conversation][data-state=resolved]").waitFor();
      expect(mock.calls.some((x) => x.key === "POST /v1/sessions/u-1024/resolve" && x.body.outcome === "已补发"), "resolve sent the outcome");

      // A customer's photo: a thumbnail from the image store, described, opened full size.
      if (phone) await page.getByTestId("inbox-back").click();
      await page.getByTestId("inbox-tab-agent").click();
      const photoRow = page.locator("[data-testid=inbox-row][data-id=u-3300]");
      expect((await photoRow.textContent()).includes("[图片×1]"), "the list marks the photo");
      await photoRow.click();
      const thumb = page.getByTestId("inbox-photo");
      await thumb.waitFor();
      await page.waitForFunction(() => document.querySelector("[data-testid=inbox-photo]")?.naturalWidth === 640);
      expect((await thumb.getAttribute("alt")) === PHOTO_DESC, "the description is the alt text");
      expect((await thumb.getAttribute("src")) === `/admin/images/${PHOTO_ID}`, "loaded from the image store");
      await see(page, PHOTO_DESC);
      expect(!(await page.evaluate(() => document.scrollingElement.scrollWidth > innerWidth)), "the photo fits");
      await shot("inbox-photo");
      await page.getByRole("button", { name: `查看大图：${PHOTO_DESC}` }).click();
      const viewer = page.getByTestId("inbox-photo-viewer");
      await viewer.waitFor();
      const big = await viewer.locator("img").boundingBox();
      expect(big.width > 300 && big.width <= viewport.width, `the full photo fits the screen: ${big.width}`);
      await shot("inbox-photo-open");
      await page.keyboard.press("Escape");
      await viewer.waitFor({ state: "detached" });

      // Another agent's conversation: refused, then forced.
      if (phone) await page.getByTestId("inbox-back").click();
      await page.getByTestId("inbox-tab-agent").click();
      await page.locator("[data-testid=inbox-row][data-id=u-5120]").click();
      await see(page, "小李 正在接待这个会话");
      await page.getByTestId("inbox-takeover").click();
      await see(page, "强制接管？");
      await shot("inbox-force");
      await page.getByRole("dialog").getByRole("button", { name: "强制接管" }).click();
      await page.locator("[data-testid=inbox-conversation][data-state=agent]").waitFor();
      expect(mock.calls.some((x) => x.key === "POST /v1/sessions/u-5120/takeover" && x.body.force === true), "force sent");

      // Release with the paused flow resumed.
      if (phone) await page.getByTestId("inbox-back").click();
      await page.getByTestId("inbox-tab-waiting").click();
      await page.locator("[data-testid=inbox-row][data-id=vip-8848]").click();
      await page.getByTestId("inbox-takeover").click();
      await page.locator("[data-testid=inbox-conversation][data-state=agent]").waitFor();
      await page.getByTestId("inbox-release").click();
      await see(page, "继续流程「换货申请」");
      await shot("inbox-release");
      await page.getByRole("dialog").getByRole("button", { name: "释放" }).click();
      await page.locator("[data-testid=inbox-conversation][data-state=bot]").waitFor();
      expect(mock.calls.some((x) => x.key === "POST /v1/sessions/vip-8848/release" && x.body.flow === "resume"), "release resumed the flow");
      expect(!(await page.evaluate(() => document.scrollingElement.scrollWidth > innerWidth)), "no sideways scrolling");

      // English.
      if (phone) await page.getByTestId("inbox-back").click();
      await page.getByText("English").click();
      await page.getByRole("heading", { name: "Inbox" }).waitFor();
      await shot("inbox-en");
      await page.getByText("中文").click();

      // The overview's agents panel.
      await page.goto(mock.url + "/console/");
      await page.waitForURL(/\/console\/inbox$/);
      if (phone) {
        await page.click(".menu-button");
        await page.locator(".sidenav").getByText("概览").click();
      } else await page.locator("nav").getByText("概览").click();
      await page.getByTestId("overview-agents").waitFor();
      await see(page, "按客服");
      await page.getByTestId("overview-agents").scrollIntoViewIfNeeded();
      await shot("overview-agents");
      expect(!(await page.evaluate(() => document.scrollingElement.scrollWidth > innerWidth)), "the overview fits");
      expect(errors.length === 0, "no page errors: " + errors.join("; "));
      console.log(`ok   inbox ${size}`);
    } catch (e) {
      failed++;
      console.log(`FAIL inbox ${size}: ${e.message.split("\n").slice(0, 4).join(" | ")}`);
      await page.screenshot({ path: join(SHOTS, `FAIL-inbox-${size}.png`) }).catch(() => {});
    }
    await context.close();
    await mock.close();
  }
  // A role without `agent` that opens the inbox's address: no link to it, and the page
  // says the server refused.
  {
    const mock = await startMock(0, { role: "viewer" });
    const context = await browser.newContext({ viewport: SIZES[0][1], locale: "zh-CN" });
    const page = await context.newPage();
    try {
      await page.goto(mock.url + "/console/");
      await see(page, "今日概览");
      expect((await page.locator("nav").getByText("坐席工作台").count()) === 0, "a viewer has no inbox link");
      await page.goto(mock.url + "/console/inbox");
      await see(page, "没有权限");
      await page.screenshot({ path: join(SHOTS, "inbox-forbidden-desktop.png") });
      console.log("ok   inbox viewer");
    } catch (e) {
      failed++;
      console.log(`FAIL inbox viewer: ${e.message.split("\n").slice(0, 4).join(" | ")}`);
    }
    await context.close();
    await mock.close();
  }
  await browser.close();
  console.log(failed ? `${failed} failed` : "all passed", "· screenshots in", SHOTS);
  process.exit(failed ? 1 : 0);
}

if (process.env.SERVE === "1") {
  const mock = await startMock(Number(process.env.PORT ?? 5180), { signin: true });
  console.log(`mock inbox on ${mock.url}/console/inbox (POST /mock/customer/ID {"text"} sends a customer message)`);
} else await run();
