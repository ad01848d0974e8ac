// The shell: asks the server who is signed in (/console/api/me), shows the sign-in page
// or the top bar, the navigation and the page for the current path. Pages get the user's
// `can` list to hide what the role cannot do (the server refuses it anyway). The rule
// editor (CodeMirror, the largest part) and the agent inbox are loaded only when their
// page is opened; the inbox is the `agent` role's home.
import type { ComponentType } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, setCsrf, whenUnauthenticated } from "./api";
import { addStrings, currentLang, setLang, t } from "./i18n";
import { BASE, href, interceptLinks, navigate, useLocation } from "./router";
import { ErrorBox, Loading, roleName } from "./ui";
import { SignIn } from "./pages/signin";
import { Overview } from "./pages/overview";
import { TestsPage } from "./pages/tests";
import { PublishPage } from "./pages/publish";
import { TablesPage } from "./pages/tables";
import { MinePage } from "./pages/mine";
import "./style.css";

addStrings({
  "nav.overview": { zh: "概览", en: "Overview" },
  "nav.inbox": { zh: "坐席工作台", en: "Inbox" },
  "nav.editor": { zh: "规则编辑", en: "Editor" },
  "nav.tables": { zh: "知识库表格", en: "Tables" },
  "nav.mine": { zh: "未解决的问题", en: "Unanswered" },
  "nav.tests": { zh: "测试", en: "Tests" },
  "nav.publish": { zh: "发布", en: "Publish" },
  "nav.menu": { zh: "菜单", en: "Menu" },
  "shell.signout": { zh: "退出", en: "Sign out" },
  "shell.lang": { zh: "English", en: "中文" },
  "shell.lang_title": { zh: "Switch to English", en: "切换到中文" },
  "shell.not_found": { zh: "没有这个页面。", en: "There is no such page." },
  "shell.editor_failed": { zh: "编辑器加载失败：{message}", en: "The editor failed to load: {message}" },
  "shell.inbox_failed": { zh: "工作台加载失败：{message}", en: "The inbox failed to load: {message}" },
});

/** Who is signed in, as /console/api/me and /console/api/login answer. */
export interface Me {
  user: string;
  role: string;
  csrf: string;
  can: string[];
}

/** The navigation; an entry with `can` shows only to roles with that permission. */
const NAV: { path: string; key: string; match: (p: string) => boolean; can?: string }[] = [
  { path: "/inbox", key: "nav.inbox", match: (p) => p === "/inbox", can: "agent" },
  { path: "/", key: "nav.overview", match: (p) => p === "/" },
  { path: "/editor", key: "nav.editor", match: (p) => p === "/editor" },
  { path: "/tables/faq", key: "nav.tables", match: (p) => p.startsWith("/tables") },
  { path: "/mine", key: "nav.mine", match: (p) => p === "/mine" },
  { path: "/tests", key: "nav.tests", match: (p) => p === "/tests" },
  { path: "/publish", key: "nav.publish", match: (p) => p === "/publish" },
];

type EditorProps = { path?: string; line?: number };
let editorModule: Promise<{ EditorPage: ComponentType<EditorProps> }> | null = null;

/** The rule editor, fetched on first use (its chunk carries CodeMirror). */
function LazyEditor(props: EditorProps) {
  const [Page, setPage] = useState<ComponentType<EditorProps> | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    editorModule ??= import("./editor/page");
    editorModule.then((m) => setPage(() => m.EditorPage)).catch((e) => {
      editorModule = null;
      setError(e);
    });
  }, []);
  if (error) return <ErrorBox error={t("shell.editor_failed", { message: String((error as any)?.message ?? error) })} />;
  return Page ? <Page {...props} /> : <Loading />;
}

type InboxProps = { user: string; can: string[] };
let inboxModule: Promise<{ InboxPage: ComponentType<InboxProps> }> | null = null;

/** The agent inbox, fetched on first use (its own chunk and stylesheet). */
function LazyInbox(props: InboxProps) {
  const [Page, setPage] = useState<ComponentType<InboxProps> | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    inboxModule ??= import("./inbox/page");
    inboxModule.then((m) => setPage(() => m.InboxPage)).catch((e) => {
      inboxModule = null;
      setError(e);
    });
  }, []);
  if (error) return <ErrorBox error={t("shell.inbox_failed", { message: String((error as any)?.message ?? error) })} />;
  return Page ? <Page {...props} /> : <Loading />;
}

function Route(props: { me: Me }) {
  const loc = useLocation();
  const can = props.me.can;
  const p = loc.path;
  if (p === "/") return <Overview can={can} />;
  if (p === "/editor") {
    const line = Number(loc.query.get("line"));
    return <LazyEditor path={loc.query.get("path") ?? undefined} line={Number.isFinite(line) && line > 0 ? line : undefined} />;
  }
  if (p === "/inbox") return <LazyInbox user={props.me.user} can={can} />;
  if (p === "/mine") return <MinePage can={can} />;
  if (p === "/tests") return <TestsPage />;
  if (p === "/publish") return <PublishPage can={can} />;
  if (p === "/tables") return <TablesPage table="faq" can={can} />;
  const m = /^\/tables\/(faq|products)$/.exec(p);
  if (m) return <TablesPage table={m[1] as "faq" | "products"} can={can} key={m[1]} />;
  return <p class="muted">{t("shell.not_found")}</p>;
}

/** An agent's home is the inbox: opening the console's root takes them there. */
function goHome(me: Me) {
  const path = location.pathname.replace(/\/+$/, "");
  if (me.role === "agent" && (path === BASE || path === "")) navigate(href("/inbox"), true);
}

export function App() {
  const [me, setMe] = useState<Me | null | undefined>(undefined);
  const [, setLangState] = useState(currentLang());
  const [navOpen, setNavOpen] = useState(false);
  const loc = useLocation();

  useEffect(() => {
    interceptLinks();
    whenUnauthenticated(() => setMe(null));
    document.documentElement.lang = currentLang() === "zh" ? "zh-CN" : "en";
    api<Me>("GET", "/console/api/me")
      .then((m) => {
        setCsrf(m.csrf);
        setMe(m);
        goHome(m);
      })
      .catch(() => setMe(null));
  }, []);
  useEffect(() => setNavOpen(false), [loc.path, loc.query.toString()]);
  useEffect(() => {
    document.title = t("title");
  });

  const switchLang = () => {
    const next = currentLang() === "zh" ? "en" : "zh";
    setLang(next);
    setLangState(next);
  };
  const langButton = (
    <button type="button" class="link-button lang" title={t("shell.lang_title")} onClick={switchLang}>
      {t("shell.lang")}
    </button>
  );

  if (me === undefined) return <Loading />;
  if (me === null)
    return (
      <SignIn
        langButton={langButton}
        onSignedIn={(m) => {
          setCsrf(m.csrf);
          setMe(m);
          goHome(m);
        }}
      />
    );

  const signOut = async () => {
    try {
      await api("POST", "/console/api/logout");
    } finally {
      setCsrf("");
      setMe(null);
    }
  };

  return (
    <div class={"shell" + (navOpen ? " nav-open" : "")}>
      <header class="topbar">
        <button type="button" class="menu-button" aria-label={t("nav.menu")} aria-expanded={navOpen} onClick={() => setNavOpen(!navOpen)}>
          <span />
          <span />
          <span />
        </button>
        <a class="brand" href={BASE + "/"}>kefu</a>
        <span class="spacer" />
        <span class="who">
          <span class="who-name">{me.user}</span>
          <span class="badge">{roleName(me.role)}</span>
        </span>
        {langButton}
        <button type="button" class="link-button" onClick={signOut}>{t("shell.signout")}</button>
      </header>
      <nav class="sidenav" aria-label={t("nav.menu")}>
        {NAV.filter((n) => !n.can || me.can.includes(n.can)).map((n) => (
          <a href={href(n.path)} class={n.match(loc.path) ? "active" : ""} aria-current={n.match(loc.path) ? "page" : undefined}>
            {t(n.key)}
          </a>
        ))}
      </nav>
      <main class="content">
        <Route me={me} />
      </main>
    </div>
  );
}
