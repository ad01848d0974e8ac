// The console's client-side routing over the History API: pages live under /console/
// (kefu serves index.html for any /console/<path> that is not a file), so a link is an
// ordinary <a href>, and a click on one is turned into pushState here.
import { useEffect, useState } from "preact/hooks";

/** Where kefu serves the console (Vite's `base`, without the trailing slash). */
export const BASE = "/console";

/** The page's path below BASE (`/`, `/tests`, `/tables/faq`) and its query. */
export interface Location {
  path: string;
  query: URLSearchParams;
}

function current(): Location {
  let path = location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length) : location.pathname;
  if (path === "") path = "/";
  if (path.length > 1 && path.endsWith("/")) path = path.slice(0, -1);
  return { path, query: new URLSearchParams(location.search) };
}

/** The URL of a console page: `href("/editor", {path: "a.kefu", line: 3})`. */
export function href(path: string, query?: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined && v !== "") q.set(k, String(v));
  const s = q.toString();
  return BASE + (path === "/" ? "/" : path) + (s ? "?" + s : "");
}

/** Goes to `to` (a full URL path under BASE) without reloading. */
export function navigate(to: string, replace = false) {
  if (replace) history.replaceState(null, "", to);
  else history.pushState(null, "", to);
  dispatchEvent(new PopStateEvent("popstate"));
}

/** The current location; re-renders on every navigation. */
export function useLocation(): Location {
  const [loc, setLoc] = useState(current);
  useEffect(() => {
    const on = () => setLoc(current());
    addEventListener("popstate", on);
    return () => removeEventListener("popstate", on);
  }, []);
  return loc;
}

/** Catches plain left clicks on same-origin links under BASE and routes them here. */
export function interceptLinks() {
  document.addEventListener("click", (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const a = (e.target as Element | null)?.closest?.("a");
    if (!a || a.target || a.hasAttribute("download")) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin || !(url.pathname === BASE || url.pathname.startsWith(BASE + "/"))) return;
    e.preventDefault();
    navigate(url.pathname + url.search + url.hash);
  });
}
