// The widget's page events (POST /v1/events): what the customer does on the shop's pages,
// which kefu's `proactive` items may answer with a message that arrives on the widget's
// live stream.
//
//   - product_dwell: on a product page (the tag's data-product), once per page, after the
//     customer has had it visible for data-dwell seconds (default 60; 0 turns it off).
//     Data: {product_id, seconds} and each data-product-NAME attribute as product_NAME.
//   - window.kefu.event(type, data): the shop's cart and checkout code reports
//     cart_changed, checkout_abandoned or page_view (page events only: order events come
//     from the shop's back office). Calls made before widget.js loaded are taken from
//     `window.kefu.q` (a list of [type, data]).

/** The event types a page may send (the server refuses others from the widget). */
export const PAGE_EVENTS = ["product_dwell", "cart_changed", "checkout_abandoned", "page_view"];

/** How the events reach kefu: the widget's own request with its site and token. */
export type Post = (type: string, data: Record<string, unknown>) => Promise<boolean>;

/** The default dwell before `product_dwell`, in seconds. */
const DWELL_SECONDS = 60;

/**
 * Calls `fire` once after the page has been visible for `seconds` in all (time with the
 * tab hidden does not count).
 */
export function whenVisibleFor(seconds: number, fire: () => void): void {
  let left = seconds * 1000;
  let since = 0;
  let timer: ReturnType<typeof setTimeout> | null = null;
  const pause = () => {
    if (timer === null) return;
    clearTimeout(timer);
    timer = null;
    left -= Date.now() - since;
  };
  const resume = () => {
    if (timer !== null || left === -1) return;
    since = Date.now();
    timer = setTimeout(
      () => {
        timer = null;
        left = -1; // fired: once per page
        document.removeEventListener("visibilitychange", changed);
        fire();
      },
      Math.max(0, left),
    );
  };
  const changed = () => (document.visibilityState === "visible" ? resume() : pause());
  document.addEventListener("visibilitychange", changed);
  changed();
}

/** Starts the product page's dwell timer, when the tag names a product. */
export function watchDwell(data: DOMStringMap, post: Post): void {
  if (!data.product) return;
  const given = data.dwell === undefined ? DWELL_SECONDS : Number(data.dwell);
  if (!Number.isFinite(given) || given <= 0) return;
  const seconds = Math.min(given, 3600);
  const fields: Record<string, unknown> = { product_id: data.product, seconds };
  for (const [key, value] of Object.entries(data)) {
    const m = /^product([A-Z][A-Za-z0-9]*)$/.exec(key);
    // data-product-name → productName → product_name
    if (m && value !== undefined) fields["product" + m[1].replace(/[A-Z]/g, (c) => "_" + c.toLowerCase())] = value;
  }
  whenVisibleFor(seconds, () => void post("product_dwell", fields));
}

interface KefuGlobal {
  event?: (type: string, data?: Record<string, unknown>) => Promise<boolean>;
  q?: unknown[];
}

/** `window.kefu.event(type, data)` for the shop's code, and the calls queued before. */
export function exposeEvents(post: Post): void {
  const w = window as unknown as { kefu?: KefuGlobal };
  const queued = Array.isArray(w.kefu?.q) ? w.kefu.q : [];
  const event = (type: string, data?: Record<string, unknown>): Promise<boolean> => {
    if (!PAGE_EVENTS.includes(type)) {
      console.warn(`kefu widget: ${String(type)} is not a page event (${PAGE_EVENTS.join(", ")})`);
      return Promise.resolve(false);
    }
    const fields = data && typeof data === "object" && !Array.isArray(data) ? data : {};
    return post(type, fields);
  };
  w.kefu = { ...(w.kefu || {}), event, q: [] };
  for (const call of queued) {
    const [type, data] = Array.from(call as ArrayLike<unknown>);
    void event(String(type), data as Record<string, unknown>);
  }
}
