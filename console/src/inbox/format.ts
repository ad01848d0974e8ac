// Formatting the inbox shares: waiting times, handoff kinds, times of day.
import { currentLang, t } from "../i18n";

/** A duration as an agent reads it: 42秒, 3分12秒, 1小时3分. */
export function duration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const zh = currentLang() === "zh";
  if (s < 60) return zh ? `${s}秒` : `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return zh ? `${m}分${String(s % 60).padStart(2, "0")}秒` : `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  return zh ? `${h}小时${m % 60}分` : `${h}h ${m % 60}m`;
}

/** The kind of a handoff, in words (unknown kinds as they are). */
export function kindName(kind: string | null | undefined): string {
  if (!kind) return "";
  const k = "ib.kind." + kind;
  const s = t(k);
  return s === k ? kind : s;
}

/** A time of day (HH:MM), with the date when it is not today. */
export function clock(ms: number): string {
  const d = new Date(ms);
  const today = new Date();
  const hm = d.toLocaleTimeString(document.documentElement.lang || undefined, { hour: "2-digit", minute: "2-digit", hour12: false });
  if (d.toDateString() === today.toDateString()) return hm;
  return d.toLocaleDateString(document.documentElement.lang || undefined, { month: "2-digit", day: "2-digit" }) + " " + hm;
}
