// The API client: every call the console makes goes through `api`, which sends the CSRF
// token on writes, turns kefu's JSON errors into `ApiError`s, and tells the shell when the
// session has ended (401) so it can show the sign-in page.

/** kefu's error body: `{"error": {"type", "message", ...details}}`. */
export class ApiError extends Error {
  constructor(
    public status: number,
    public type: string,
    message: string,
    public details: Record<string, unknown>,
  ) {
    super(message);
  }
}

let csrf = "";
let onUnauthenticated: () => void = () => {};

/** Remembers the CSRF token from sign-in or `/console/api/me`. */
export function setCsrf(token: string) {
  csrf = token;
}

/** What to do when a call answers 401 (the session ended). */
export function whenUnauthenticated(f: () => void) {
  onUnauthenticated = f;
}

/** Calls `path` with `method`; `body` is sent as JSON unless it is a Blob/ArrayBuffer. */
export async function api<T = any>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
  const h: Record<string, string> = { ...headers };
  let payload: BodyInit | undefined;
  if (body instanceof Blob || body instanceof ArrayBuffer) payload = body as BodyInit;
  else if (body !== undefined) {
    payload = JSON.stringify(body);
    h["content-type"] = "application/json";
  }
  if (method !== "GET" && method !== "HEAD" && csrf) h["x-csrf-token"] = csrf;
  const res = await fetch(path, { method, headers: h, body: payload, credentials: "same-origin" });
  if (res.status === 204) return undefined as T;
  const type = res.headers.get("content-type") ?? "";
  const data = type.includes("json") ? await res.json() : await res.text();
  if (!res.ok) {
    const e = { ...((data && typeof data === "object" && (data as any).error) || {}) };
    // A 429 says when to try again in a header; keep it with the error's details.
    const retry = res.headers.get("retry-after");
    if (retry && e.retry_after === undefined) e.retry_after = Number(retry);
    if (res.status === 401 && !path.endsWith("/login")) onUnauthenticated();
    throw new ApiError(res.status, e.type ?? "http_" + res.status, e.message ?? String(data), e);
  }
  return data as T;
}
