// The web widget in a real browser (issue #24): Debian's chromium driven by playwright-core,
// a shop's page (tests/widget-host.html, hostile CSS and all) served from its own origin by
// a tiny node server, embedding kefu's /widget.js with `data-site`, against a real
// `kefu serve --channels` on a copy of the demo shop (rules/):
//
//   1. the bubble opens the panel; "有什么优惠" is answered (streamed over fetch from the
//      other origin: CORS); the page's styles do not reach into the widget; an agent's
//      message after a takeover arrives on the widget's live channel (EventSource);
//   2. on a product page (data-product and data-product-* attributes) a question about
//      "this one" is answered with the product's name and material: a rule reads `product`;
//   3. a reload draws the conversation again (history), and closing the panel after two
//      turns asks for a rating: five stars and a comment reach kefu (the session's feedback);
//   4. on a 390-px phone the panel fills the screen and nothing scrolls sideways;
//   5. widget.js is at most 40 KB gzipped and cacheable, and a page of an origin that no
//      site lists is refused (the browser's fetch fails; kefu answers 403 without CORS);
//   6. a product page left open (data-dwell="2") sends `product_dwell` to POST /v1/events;
//      a proactive item of the test's own answers it, and the message arrives in the closed
//      widget (the unread dot), first in the panel when it opens.
//   7. the camera button: a photo over 10 MB refused in the page (nothing sent), a text
//      file named .jpg refused by kefu (the error in the photo's bubble), a real photo
//      uploaded (POST /v1/images, then the chat with its id), its thumbnail shown and
//      answered by the shop's `on image` rule; a new conversation's first photo too.
//
// Run: `tests/support/console_journey.sh target/debug/kefu` (after journey.mjs and
// inbox.mjs), or `cd console && KEFU_BIN=../target/debug/kefu node --test tests/widget.mjs`.
// Env: KEFU_BIN, CHROMIUM, KEFU_SCREENSHOTS=1 (docs/channels/widget-*.png),
// KEFU_JOURNEY_KEEP=1 (as the other browser tests).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";
import { DESKTOP, PHONE, REPO, launchBrowser, startKefu, stop, until, withPages, workspace } from "./harness.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const HOST_HTML = fs.readFileSync(path.join(HERE, "widget-host.html"), "utf8");
const SITE = "demo-shop";
const SHOTS = process.env.KEFU_SCREENSHOTS === "1" ? path.join(REPO, "docs/channels") : null;
// The product page's product, as in rules/kb/products.yaml: the rule 材质_当前商品
// (rules/presale.kefu) answers with its name and material.
const PRODUCT = { id: "T01", name: "重磅纯棉圆领短袖T恤", material: "100%新疆长绒棉，精梳32支，克重260g" };

// A real 640×480 JPEG of a parcel with a torn side.
const PARCEL = fs.readFileSync(path.join(HERE, "parcel.jpg"));

const S = {}; // tmp, rules, state, base, token, server, browser, log; host, other

/** A tiny server for one origin: `handler(url) -> [type, body]`. Resolves with its address. */
function origin(handler) {
  return new Promise((resolve) => {
    const server = http.createServer((req, res) => {
      const [type, body] = handler(new URL(req.url, "http://x"));
      res.writeHead(200, { "content-type": type, "cache-control": "no-store" });
      res.end(body);
    });
    server.listen(0, "127.0.0.1", () => resolve({ server, url: `http://127.0.0.1:${server.address().port}` }));
  });
}

/** The shop's page: the widget tag with the site, and the product on `?product`. */
function hostPage(url) {
  const attrs = [`data-site="${SITE}"`, `data-lang="zh"`, `data-title="示例旗舰店客服"`];
  if (url.searchParams.has("product")) {
    attrs.push(`data-product="${PRODUCT.id}"`, `data-product-name="${PRODUCT.name}"`, `data-product-material="${PRODUCT.material}"`);
  }
  // No dwell event unless the test asks (a slow product-page test would get its message).
  attrs.push(`data-dwell="${Number(url.searchParams.get("dwell") || 0)}"`);
  return ["text/html; charset=utf-8", HOST_HTML.replaceAll("%KEFU%", S.base).replaceAll("%ATTRS%", attrs.join(" "))];
}

/** A proactive item answering the product page's dwell; its quiet hours are one minute six
 * hours from now in the shop's zone (UTC+8), so that it may send at any hour the test runs. */
function dwellItem() {
  const hhmm = (ms) => new Date(ms + 8 * 3600e3).toISOString().slice(11, 16);
  const from = Date.now() + 6 * 3600e3;
  return `
proactive 浏览停留测试 {
  on event product_dwell
  when \`event.product_id == "${PRODUCT.id}"\`
  say "这款{event.product_name}看了有一会儿了，尺码和面料有问题随时问我～"
  quiet ${hhmm(from)} to ${hhmm(from + 60e3)}
  priority 100
}
`;
}

before(async () => {
  S.browser = await launchBrowser();
  workspace(S, "widget");
  fs.writeFileSync(path.join(S.rules, "zz_widget_proactive.kefu"), dwellItem());
  S.host = await origin(hostPage);
  S.other = await origin(() => ["text/html; charset=utf-8", "<!doctype html><title>另一个网站</title><p>nobody's shop</p>"]);
  const channels = path.join(S.tmp, "channels.yaml");
  fs.writeFileSync(channels, `widget:\n  sites:\n    - key: ${SITE}\n      name: 示例旗舰店\n      origins: ["${S.host.url}"]\n`);
  await startKefu(S, ["--channels", channels]);
});

after(async () => {
  S.host?.server.close();
  S.other?.server.close();
  await stop(S);
});

async function shot(page, name) {
  if (!SHOTS) return;
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`) });
}

/** The widget's parts, through its (open) shadow root: playwright's CSS pierces it. */
const W = {
  bubble: (page) => page.locator("[data-kefu-widget] .bubble"),
  panel: (page) => page.locator("[data-kefu-widget] .panel"),
  input: (page) => page.locator("[data-kefu-widget] form textarea"),
  messages: (page, role) => page.locator(`[data-kefu-widget] .msg.${role} .text`),
};

/** Types `text` into the widget and waits for kefu's next answer; returns its text. */
async function ask(page, text) {
  const before = await W.messages(page, "kefu").count();
  await W.input(page).fill(text);
  await W.input(page).press("Enter");
  await until(async () => (await W.messages(page, "kefu").count()) > before, `an answer to ${text}`);
  const answer = W.messages(page, "kefu").nth(before);
  // Done: the typing mark goes when `done` has come.
  await until(async () => !(await page.locator("[data-kefu-widget] .msg.typing").count()), "the answer is done");
  return (await answer.textContent()).trim();
}

test("the widget answers on a shop's page, and the page's CSS stays out of it", async (t) => {
  await withPages(S, t, [DESKTOP], async (page) => {
    // Every response the page gets, to see the answer came as a stream.
    const chats = [];
    page.on("response", (r) => {
      if (r.url() === `${S.base}/v1/chat` && r.request().method() === "POST") chats.push(r);
    });
    await page.goto(`${S.host.url}/`);
    await W.bubble(page).click();
    await W.panel(page).waitFor({ state: "visible" });
    const answer = await ask(page, "有什么优惠");
    assert.match(answer, /减|折|优惠|活动|券/, answer);
    assert.equal(chats.length, 1);
    assert.match(chats[0].headers()["content-type"], /text\/event-stream/);
    assert.equal(chats[0].headers()["access-control-allow-origin"], S.host.url);

    // The page's hostile CSS is on (its own elements) and not in the widget.
    const styles = await page.evaluate(() => {
      const host = document.querySelector("[data-kefu-widget]");
      const text = host.shadowRoot.querySelector(".msg.kefu .text");
      const bubble = host.shadowRoot.querySelector(".bubble");
      const cs = (e) => getComputedStyle(e);
      return {
        page: { fontSize: cs(document.querySelector("p.lede")).fontSize, color: cs(document.body).color },
        text: { fontSize: cs(text).fontSize, color: cs(text).color, font: cs(text).fontFamily, background: cs(text).backgroundColor, lineHeight: cs(text).lineHeight, letterSpacing: cs(text).letterSpacing },
        bubble: { width: cs(bubble).width, border: cs(bubble).borderTopStyle, padding: cs(bubble).paddingTop },
      };
    });
    assert.equal(styles.page.color, "rgb(255, 0, 0)", "the hostile CSS is on the page");
    assert.equal(styles.text.fontSize, "14px");
    assert.equal(styles.text.color, "rgb(29, 35, 48)");
    assert.doesNotMatch(styles.text.font, /Comic Sans|fantasy/);
    assert.match(styles.text.font, /Noto Sans CJK SC/);
    assert.equal(styles.text.background, "rgb(255, 255, 255)");
    assert.equal(styles.text.letterSpacing, "normal");
    assert.equal(styles.bubble.width, "56px");
    assert.equal(styles.bubble.border, "none");
    assert.equal(styles.bubble.padding, "0px");
    // An agent takes the conversation over and writes: the widget's live channel (an
    // EventSource from the shop's origin, the site in its query) shows it, once.
    const { id } = await page.evaluate((site) => JSON.parse(localStorage.getItem(`kefu-widget:${site}`)), SITE);
    const agent = async (act, body) => {
      const r = await fetch(`${S.base}/v1/sessions/${id}/${act}`, {
        method: "POST",
        headers: { authorization: `Bearer ${S.token}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      assert.equal(r.status, 200, `${act}: ${await r.text()}`);
    };
    await agent("takeover", { agent: "小王" });
    await agent("reply", { agent: "小王", text: "您好，我是小王，双12的优惠今天就能用哦" });
    await until(async () => (await W.messages(page, "agent").count()) === 1, "the agent's message on the page");
    assert.equal(await W.messages(page, "agent").first().textContent(), "您好，我是小王，双12的优惠今天就能用哦");
    await until(async () => (await page.locator("[data-kefu-widget] .status").textContent()).includes("人工客服"), "the status says an agent serves");
    await shot(page, "widget-desktop");
  });
});

test("a product page's question is answered with the product, and the conversation survives a reload and is rated", async (t) => {
  await withPages(S, t, [DESKTOP], async (page) => {
    await page.goto(`${S.host.url}/?product=1`);
    await W.bubble(page).click();
    const answer = await ask(page, "这件是什么面料");
    assert.ok(answer.includes(PRODUCT.name) && answer.includes("新疆长绒棉"), answer);
    const second = await ask(page, "多久发货");
    assert.ok(second.length > 0);

    // A reload: the same conversation, drawn again from kefu.
    const stored = await page.evaluate((site) => JSON.parse(localStorage.getItem(`kefu-widget:${site}`)), SITE);
    assert.match(stored.id, /^w_[A-Za-z0-9_-]{22}$/);
    assert.ok(stored.token, "the session token is kept");
    await page.reload();
    await until(async () => (await W.messages(page, "customer").count()) === 2, "the conversation is drawn again");
    await W.bubble(page).click();
    assert.deepEqual(await W.messages(page, "customer").allTextContents(), ["这件是什么面料", "多久发货"]);
    const kefuTexts = await W.messages(page, "kefu").allTextContents();
    assert.ok(kefuTexts.includes(answer), `${JSON.stringify(kefuTexts)} has the product answer`);

    // Closing after two turns asks for a rating first.
    await page.locator("[data-kefu-widget] header .close").click();
    const rate = page.locator("[data-kefu-widget] .rate");
    await rate.waitFor({ state: "visible" });
    await page.locator('[data-kefu-widget] .stars button[aria-label="4 星"]').click();
    await rate.locator("textarea").fill("回答很快");
    await shot(page, "widget-rating");
    await rate.locator("button.primary").click();
    await until(async () => (await rate.textContent()).includes("感谢"), "the rating is thanked for");
    const session = await (await fetch(`${S.base}/v1/sessions/${stored.id}`, { headers: { authorization: `Bearer ${S.token}` } })).json();
    assert.equal(session.feedback.length, 1);
    assert.equal(session.feedback[0].score, 4);
    assert.equal(session.feedback[0].comment, "回答很快");
    // Closing again closes.
    await page.locator("[data-kefu-widget] header .close").click();
    await W.panel(page).waitFor({ state: "hidden" });
    // The turns came through the widget: the conversation log (written every 200 ms)
    // says `web`.
    const logged = () =>
      fs
        .readdirSync(path.join(S.state, "log"))
        .flatMap((f) => fs.readFileSync(path.join(S.state, "log", f), "utf8").split("\n"))
        .filter((l) => l.includes(stored.id) && l.includes('"kind":"turn"'))
        .map((l) => JSON.parse(l));
    await until(() => logged().length === 2, "two turns in the conversation log");
    for (const record of logged()) assert.equal(record.channel, "web", JSON.stringify(record));
  });
});

test("on a 390-px phone the panel fills the screen without sideways scrolling", async (t) => {
  await withPages(S, t, [PHONE], async (page) => {
    await page.goto(`${S.host.url}/?product=1`);
    await W.bubble(page).click();
    await ask(page, "有什么优惠");
    const box = await W.panel(page).boundingBox();
    assert.deepEqual([box.x, box.y, box.width, box.height], [0, 0, PHONE.width, PHONE.height]);
    const wide = await page.evaluate(() => {
      const log = document.querySelector("[data-kefu-widget]").shadowRoot.querySelector(".log");
      return { page: document.scrollingElement.scrollWidth, log: log.scrollWidth, logClient: log.clientWidth };
    });
    assert.ok(wide.log <= wide.logClient, `the log does not scroll sideways: ${JSON.stringify(wide)}`);
    await shot(page, "widget-phone");
  });
});

test("widget.js is small and cacheable, and other origins are refused", async (t) => {
  const res = await fetch(`${S.base}/widget.js`, { headers: { "accept-encoding": "gzip" } });
  assert.equal(res.status, 200);
  const raw = Buffer.from(await res.arrayBuffer());
  // Node's fetch decodes gzip itself; the size that counts is the gzipped one.
  const gz = zlib.gzipSync(raw, { level: 9 }).length;
  assert.ok(gz <= 40 * 1024, `${gz} bytes gzipped`);
  assert.equal(res.headers.get("cache-control"), "public, max-age=300");
  assert.equal(res.headers.get("cross-origin-resource-policy"), "cross-origin");
  assert.ok(res.headers.get("etag"));
  assert.match(res.headers.get("content-type"), /javascript/);
  const body = raw.toString("utf8");
  // No other host than the page's kefu: no third-party request in the script.
  assert.doesNotMatch(body, /https?:\/\/(?!www\.w3\.org\/2000\/svg)/);

  await withPages(S, t, [DESKTOP], async (page) => {
    await page.goto(`${S.other.url}/`);
    const outcome = await page.evaluate(async ({ base, site }) => {
      try {
        const r = await fetch(`${base}/v1/chat`, {
          method: "POST",
          headers: { "content-type": "application/json", "x-kefu-site": site },
          body: JSON.stringify({ session_id: "w_AAAAAAAAAAAAAAAAAAAAAA", message: "在吗" }),
        });
        return `status ${r.status}`;
      } catch (e) {
        return `refused: ${e.message}`;
      }
    }, { base: S.base, site: SITE });
    assert.match(outcome, /^refused/, outcome);
  });
  const direct = await fetch(`${S.base}/v1/chat`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-kefu-site": SITE, origin: S.other.url },
    body: JSON.stringify({ session_id: "w_AAAAAAAAAAAAAAAAAAAAAA", message: "在吗" }),
  });
  assert.equal(direct.status, 403);
  assert.equal((await direct.json()).error.type, "origin_not_allowed");
  assert.equal(direct.headers.get("access-control-allow-origin"), null);
});

test("a product page's dwell brings a proactive message into the closed widget", async (t) => {
  await withPages(S, t, [DESKTOP], async (page) => {
    const events = [];
    page.on("response", (r) => {
      if (r.url() === `${S.base}/v1/events` && r.request().method() === "POST") events.push(r);
    });
    await page.goto(`${S.host.url}/?product=1&dwell=2`);
    const dot = page.locator("[data-kefu-widget] .bubble .dot");
    await until(async () => await dot.isVisible(), "the unread dot after the dwell's proactive message");
    assert.equal(events.length, 1, "one product_dwell per page");
    assert.equal(events[0].status(), 202);
    const sent = JSON.parse(events[0].request().postData());
    assert.equal(sent.type, "product_dwell");
    assert.equal(sent.data.product_id, PRODUCT.id);
    assert.equal(sent.data.product_name, PRODUCT.name);
    assert.ok(sent.data.seconds >= 2);
    await shot(page, "widget-proactive");
    await W.bubble(page).click();
    await W.panel(page).waitFor({ state: "visible" });
    assert.ok(await dot.isHidden(), "read once the panel is open");
    const first = (await W.messages(page, "kefu").first().textContent()).trim();
    assert.match(first, new RegExp(`${PRODUCT.name}看了有一会儿了`), first);
    // The shop's code reports page events through window.kefu.event; an order event is not one.
    const [cart, order] = await page.evaluate(async () => [
      await window.kefu.event("cart_changed", { items: 2 }),
      await window.kefu.event("order_shipped", { order_id: "A1" }),
    ]);
    assert.deepEqual([cart, order], [true, false]);
    // The conversation goes on after it.
    const answer = await ask(page, "有什么优惠");
    assert.match(answer, /减|折|优惠|活动|券/, answer);
  });
});

test("a photo from the camera button is checked, uploaded, shown in the bubble and answered", async (t) => {
  // On a desktop and on a phone, each its own browser context (a new conversation).
  for (const [viewport, phone] of [[DESKTOP, false], [PHONE, true]]) await withPages(S, t, [viewport], (page) => photoJourney(page, phone));
  // A new conversation's first photo: uploaded without a token (its message starts the
  // conversation), then answered.
  await withPages(S, t, [DESKTOP], async (page) => {
    const sent = [];
    page.on("request", (r) => r.method() === "POST" && r.url().startsWith(`${S.base}/v1/`) && sent.push(r));
    await page.goto(`${S.host.url}/`);
    await W.bubble(page).click();
    await page.locator("[data-kefu-widget] form input[type=file]").setInputFiles({ name: "parcel.jpg", mimeType: "image/jpeg", buffer: PARCEL });
    await until(async () => (await W.messages(page, "kefu").count()) > 1, "an answer to the first photo");
    await until(async () => !(await page.locator("[data-kefu-widget] .msg.typing").count()), "the answer is done");
    assert.equal(sent.length, 2, sent.map((r) => r.url()).join(", "));
    assert.ok(sent[0].url().startsWith(`${S.base}/v1/images?`), sent[0].url());
    assert.equal(sent[0].headers()["x-kefu-session-token"], undefined, "no token yet");
    const { id } = await (await sent[0].response()).json();
    assert.deepEqual(JSON.parse(sent[1].postData()).images, [{ id }]);
    const answer = (await W.messages(page, "kefu").nth(1).textContent()).trim();
    assert.match(answer, /图片/, answer);
  });
});

async function photoJourney(page, phone) {
  {
    const sent = [];
    page.on("request", (r) => {
      if (r.method() === "POST" && (r.url().startsWith(`${S.base}/v1/images`) || r.url() === `${S.base}/v1/chat`)) sent.push(r);
    });
    const file = page.locator("[data-kefu-widget] form input[type=file]");
    const photoBubbles = page.locator("[data-kefu-widget] .msg.customer .photo");
    const lastError = page.locator("[data-kefu-widget] .msg.customer .err").last();
    await page.goto(`${S.host.url}/`);
    await W.bubble(page).click();
    await W.panel(page).waitFor({ state: "visible" });
    assert.equal(await page.locator('[data-kefu-widget] form button.photo[aria-label="发送图片"]').count(), 1);
    assert.equal(await file.getAttribute("accept"), "image/*");

    // A conversation with a token (one question asked): photos are uploaded.
    await ask(page, "有什么优惠");

    // Over 10 MB: refused here, nothing sent, said in the photo's bubble.
    const count = sent.length;
    await file.setInputFiles({ name: "huge.jpg", mimeType: "image/jpeg", buffer: Buffer.alloc(11 * 1024 * 1024, 0xff) });
    await until(async () => (await lastError.isVisible()) && (await lastError.textContent()).includes("10 MB"), "the size refused in the page");
    assert.equal(sent.length, count, "nothing sent");

    // A text file that calls itself a JPEG: kefu reads the bytes and refuses it; its
    // words are in the photo's bubble, and the conversation goes on.
    await file.setInputFiles({ name: "fake.jpg", mimeType: "image/jpeg", buffer: Buffer.from("this is not a photo, only text") });
    await until(async () => sent.length > count, "the upload");
    const refused = await sent.at(-1).response();
    assert.ok(refused.url().startsWith(`${S.base}/v1/images`), refused.url());
    assert.ok(refused.status() === 415 || refused.status() === 422, `refused: ${refused.status()}`);
    await until(async () => /JPEG|打不开/.test((await lastError.textContent()) ?? ""), "kefu's refusal in the bubble");
    assert.equal(sent.length, count + 1, "no chat for a refused photo");

    // A real photo: uploaded (201 {id}), then the chat names it; the thumbnail is the
    // photo as chosen, and the shop's `on image` rule answers.
    const kefuBefore = await W.messages(page, "kefu").count();
    await file.setInputFiles({ name: "parcel.jpg", mimeType: "image/jpeg", buffer: PARCEL });
    await until(async () => (await W.messages(page, "kefu").count()) > kefuBefore, "an answer to the photo");
    await until(async () => !(await page.locator("[data-kefu-widget] .msg.typing").count()), "the answer is done");
    const upload = sent.find((r, i) => i > count && r.url().startsWith(`${S.base}/v1/images`));
    const uploaded = await (await upload.response()).json();
    assert.equal((await upload.response()).status(), 201);
    assert.match(uploaded.id, /^img_[0-9a-f]{32}$/);
    assert.equal(uploaded.kind, "jpeg");
    const chat = JSON.parse(sent.at(-1).postData());
    assert.deepEqual(chat.images, [{ id: uploaded.id }]);
    const shown = await photoBubbles.last().locator("img").evaluate((img) => ({ w: img.naturalWidth, alt: img.alt }));
    assert.deepEqual(shown, { w: 640, alt: "我发送的图片" });
    const answer = (await W.messages(page, "kefu").nth(kefuBefore).textContent()).trim();
    assert.match(answer, /图片/, answer);
    // kefu keeps it with the conversation: the agent's view has the photo.
    const { id } = await page.evaluate((site) => JSON.parse(localStorage.getItem(`kefu-widget:${site}`)), SITE);
    const detail = await (await fetch(`${S.base}/admin/inbox/${id}`, { headers: { authorization: `Bearer ${S.token}` } })).json();
    const photos = detail.messages.filter((m) => m.role === "user").flatMap((m) => m.images ?? []);
    assert.deepEqual(photos.map((p) => p.id).at(-1), uploaded.id);
    const wide = await page.evaluate(() => {
      const log = document.querySelector("[data-kefu-widget]").shadowRoot.querySelector(".log");
      return { log: log.scrollWidth, client: log.clientWidth };
    });
    assert.ok(wide.log <= wide.client, `no sideways scrolling: ${JSON.stringify(wide)}`);
    if (!phone) await shot(page, "widget-photo");
  }
}
