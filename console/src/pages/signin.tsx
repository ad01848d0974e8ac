// The sign-in page: name and password to POST /console/api/login. A wrong name or
// password gets one answer (401 wrong_credentials); too many tries (429) say how long to
// wait, counted down, and the button waits too.
import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, ApiError } from "../api";
import type { Me } from "../app";
import { addStrings, t } from "../i18n";
import { ErrorBox } from "../ui";

addStrings({
  "signin.title": { zh: "登录 kefu 控制台", en: "Sign in to the kefu console" },
  "signin.name": { zh: "用户名", en: "Name" },
  "signin.password": { zh: "密码", en: "Password" },
  "signin.submit": { zh: "登录", en: "Sign in" },
  "signin.busy": { zh: "登录中…", en: "Signing in…" },
  "signin.wrong": { zh: "用户名或密码不对。", en: "Wrong name or password." },
  "signin.too_many": { zh: "尝试次数太多，请 {wait} 后再试。", en: "Too many attempts: try again in {wait}." },
  "signin.too_many_now": { zh: "现在可以再试了。", en: "You can try again now." },
  "signin.seconds": { zh: "{n} 秒", en: "{n} s" },
  "signin.minutes": { zh: "{m} 分 {s} 秒", en: "{m} min {s} s" },
  "signin.hint": { zh: "账号由管理员用 kefu users add 创建。", en: "An admin creates accounts with kefu users add." },
});

function waitText(seconds: number): string {
  if (seconds < 90) return t("signin.seconds", { n: seconds });
  return t("signin.minutes", { m: Math.floor(seconds / 60), s: seconds % 60 });
}

export function SignIn(props: { onSignedIn: (me: Me) => void; langButton: ComponentChildren }) {
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [until, setUntil] = useState(0);
  const [now, setNow] = useState(Date.now());

  useEffect(() => {
    if (until <= Date.now()) return;
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, [until]);

  const left = Math.max(0, Math.ceil((until - now) / 1000));

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const me = await api<Me>("POST", "/console/api/login", { name, password });
      // /me carries `can`; login may not.
      const full = me.can ? me : await api<Me>("GET", "/console/api/me");
      props.onSignedIn({ ...full, csrf: full.csrf ?? me.csrf });
    } catch (err) {
      if (err instanceof ApiError && err.type === "too_many_attempts") {
        const s = Number(err.details.retry_after ?? err.details.retry_after_secs ?? 60);
        setUntil(Date.now() + (Number.isFinite(s) ? s : 60) * 1000);
        setNow(Date.now());
      }
      setError(err);
      setPassword("");
    } finally {
      setBusy(false);
    }
  };

  let message: ComponentChildren = null;
  if (error instanceof ApiError && error.type === "wrong_credentials") message = <div class="error-box" role="alert"><span class="error-text">{t("signin.wrong")}</span></div>;
  else if (error instanceof ApiError && error.type === "too_many_attempts")
    message = (
      <div class="error-box" role="alert">
        <span class="error-text">{left > 0 ? t("signin.too_many", { wait: waitText(left) }) : t("signin.too_many_now")}</span>
      </div>
    );
  else if (error) message = <ErrorBox error={error} />;

  return (
    <div class="signin-page">
      <div class="signin-lang">{props.langButton}</div>
      <form class="signin card" onSubmit={submit}>
        <div class="brand big">kefu</div>
        <h1>{t("signin.title")}</h1>
        <label>
          {t("signin.name")}
          <input name="name" autocomplete="username" required value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <label>
          {t("signin.password")}
          <input name="password" type="password" autocomplete="current-password" required value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
        </label>
        {message}
        <button type="submit" class="primary" disabled={busy || left > 0}>
          {busy ? t("signin.busy") : t("signin.submit")}
        </button>
        <p class="muted small">{t("signin.hint")}</p>
      </form>
    </div>
  );
}
