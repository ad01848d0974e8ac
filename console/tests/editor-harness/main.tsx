// Mounts the rule editor alone, lazy-loaded as the shell does (so the build shows the
// editor chunk's size), for tests/mock-editor.mjs. `?path=&line=` as on /console/editor,
// `?lang=en` for English.
import { render } from "preact";
import { setLang } from "../../src/i18n";

const q = new URLSearchParams(location.search);
if (q.get("lang") === "en") setLang("en");
else setLang("zh");
const line = q.get("line");
void import("../../src/editor/page").then(({ EditorPage }) => {
  render(<EditorPage path={q.get("path") ?? undefined} line={line ? Number(line) : undefined} />, document.getElementById("app")!);
});
