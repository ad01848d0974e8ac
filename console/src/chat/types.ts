// The test chat's JSON (contract22.md, POST /admin/draft/chat and /admin/draft/tests/save)
// and the request it builds from the customer the editor picked.

export interface TraceStep {
  stage: string;
  detail: string;
}

export interface EntityMatch {
  name: string;
  value: string;
  text?: string;
}

/** The TurnResponse of /v1/chat, with the full trace (only the fields the panel reads). */
export interface Turn {
  session_id: string;
  reply: string;
  source: string;
  rule?: string;
  flow?: string;
  step?: string;
  promotion?: string;
  faq?: string;
  intent: string | null;
  confidence: number;
  emotion: string;
  language?: string;
  entities: EntityMatch[];
  handoff: { reason?: string } | null;
  trace: TraceStep[];
  latency_ms?: number;
}

export interface ChatAnswer {
  session_id: string;
  turn: Turn;
  slots: Record<string, unknown>;
  understanding: {
    intent: string | null;
    confidence: number;
    runners_up: { intent: string; confidence: number }[];
    entities: EntityMatch[];
    emotion: string;
  };
  kb: { kind: "faq" | "product" | "doc"; id: string; score: number }[];
  prompt: { part: string; text: string }[] | null;
  safety: unknown[];
  source_location: { file: string; line: number; col?: number } | null;
}

export type Segment = "new" | "regular" | "vip" | "churn_risk";

/** Who the customer is, as the panel's form holds it. */
export interface Customer {
  segment: Segment;
  orders: number;
  order: string;
  product: string;
  /** `datetime-local` value, empty for now. */
  asOf: string;
}

/** The request's `user` map: the fields the shop's scripts read (`user.segment`, ...). */
export function userMap(c: Customer): Record<string, unknown> {
  if (c.segment === "churn_risk") return { segment: "regular", orders: c.orders, churn_risk: 0.85 };
  return { segment: c.segment, orders: c.orders };
}

/** The request's `context` maps (`order`, `product`), only those given. */
export function contextMap(c: Customer): Record<string, unknown> | undefined {
  const ctx: Record<string, unknown> = {};
  if (c.order.trim()) ctx.order = { id: c.order.trim() };
  if (c.product.trim()) ctx.product = { id: c.product.trim() };
  return Object.keys(ctx).length ? ctx : undefined;
}

/** RFC 3339 of a `datetime-local` value, with this browser's offset; undefined for now. */
export function asOfRfc3339(local: string): string | undefined {
  if (!local) return undefined;
  const d = new Date(local);
  if (Number.isNaN(d.getTime())) return undefined;
  const off = -d.getTimezoneOffset();
  const sign = off >= 0 ? "+" : "-";
  const hh = String(Math.floor(Math.abs(off) / 60)).padStart(2, "0");
  const mm = String(Math.abs(off) % 60).padStart(2, "0");
  const base = local.length === 16 ? local + ":00" : local;
  return `${base}${sign}${hh}:${mm}`;
}
