// Strings in Chinese (first) and English. `t(key)` looks a key up in the chosen language;
// the choice is kept in localStorage. Every string the pages show comes from here.
export type Lang = "zh" | "en";

const strings: Record<string, { zh: string; en: string }> = {
  title: { zh: "kefu 控制台", en: "kefu console" },
};

let lang: Lang = (localStorage.getItem("kefu.lang") as Lang) === "en" ? "en" : "zh";

/** The chosen language. */
export function currentLang(): Lang {
  return lang;
}

/** Chooses the language and remembers it. */
export function setLang(next: Lang) {
  lang = next;
  localStorage.setItem("kefu.lang", next);
  document.documentElement.lang = next === "zh" ? "zh-CN" : "en";
}

/** Adds strings (each module registers its own). */
export function addStrings(more: Record<string, { zh: string; en: string }>) {
  Object.assign(strings, more);
}

/** The string for `key` in the chosen language, `{name}` holes filled from `vars`. */
export function t(key: string, vars?: Record<string, string | number>): string {
  const entry = strings[key];
  let s = entry ? entry[lang] : key;
  if (vars) for (const [k, v] of Object.entries(vars)) s = s.replaceAll(`{${k}}`, String(v));
  return s;
}
