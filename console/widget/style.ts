// The widget's own styles, inside its shadow root: nothing of the host page's CSS reaches
// in (the host element is `all: initial`, set inline and important, and selectors do not
// cross a shadow root), and nothing here reaches out. System fonts only, with the CJK
// faces phones and desktops ship (Noto CJK on Linux and Android): no font is downloaded.

export const CSS = `
/* No :host rule: the host's own inline \`all: initial !important\` (main.ts) must not be
   overridden, and an important :host rule would win over it. The bubble and the panel are
   fixed, each its own stacking context above the page's (most pages stay far below 2^31). */
* { box-sizing: border-box; margin: 0; padding: 0; font: inherit; color: inherit; }
[hidden] { display: none !important; }
.root {
  --accent: #2457c5;
  --ink: #1d2330;
  --muted: #6b7385;
  --line: #e3e6ec;
  font-family: system-ui, -apple-system, "Segoe UI", "PingFang SC", "Hiragino Sans GB", "Microsoft YaHei",
    "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", Roboto, Arial, sans-serif;
  font-size: 14px; line-height: 1.5; color: var(--ink); font-weight: 400; letter-spacing: normal;
  text-align: left; direction: ltr; -webkit-font-smoothing: antialiased;
}
button { cursor: pointer; background: none; border: 0; }
button:focus-visible, textarea:focus-visible { outline: 2px solid var(--accent); outline-offset: 2px; }
.bubble {
  position: fixed; right: 20px; bottom: 20px; width: 56px; height: 56px; border-radius: 50%;
  background: var(--accent); color: #fff; display: flex; align-items: center; justify-content: center;
  box-shadow: 0 6px 20px rgba(20, 30, 60, .28); z-index: 2147483000;
}
.bubble svg { width: 28px; height: 28px; fill: currentColor; }
.bubble .dot {
  position: absolute; top: 6px; right: 6px; width: 12px; height: 12px; border-radius: 50%;
  background: #e5484d; border: 2px solid #fff;
}
.panel {
  position: fixed; right: 20px; bottom: 88px; width: 370px; height: min(600px, calc(100vh - 108px));
  background: #f6f7f9; border-radius: 14px; overflow: hidden; display: flex; flex-direction: column;
  box-shadow: 0 12px 40px rgba(20, 30, 60, .25); z-index: 2147483001;
}
header {
  display: flex; align-items: center; gap: 8px; padding: 12px 14px; background: var(--accent); color: #fff;
}
header .title { font-weight: 600; font-size: 15px; flex: 1; min-width: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
header .close { color: #fff; width: 32px; height: 32px; border-radius: 8px; font-size: 22px; line-height: 32px; text-align: center; }
header .close:hover { background: rgba(255, 255, 255, .16); }
.status { font-size: 12px; color: var(--muted); background: #fff7e6; border-bottom: 1px solid #f3e2bd; padding: 6px 14px; }
.log { flex: 1; overflow-y: auto; overflow-x: hidden; padding: 14px; display: flex; flex-direction: column; gap: 10px; }
.msg { max-width: 82%; display: flex; flex-direction: column; gap: 2px; }
.msg .who { font-size: 11px; color: var(--muted); }
.msg .text {
  padding: 8px 11px; border-radius: 12px; white-space: pre-wrap; overflow-wrap: anywhere; word-break: normal;
  background: #fff; border: 1px solid var(--line);
}
.msg.customer { align-self: flex-end; align-items: flex-end; }
.msg.customer .text { background: var(--accent); color: #fff; border-color: transparent; border-bottom-right-radius: 4px; }
.msg.kefu .text { border-bottom-left-radius: 4px; }
.msg.agent .text { background: #e6f6ec; border-color: #bfe5cd; border-bottom-left-radius: 4px; }
.msg.failed .text, .msg.failed .photo { opacity: .6; }
.msg .photo { max-width: 100%; border-radius: 12px; border-bottom-right-radius: 4px; overflow: hidden; background: #fff; border: 1px solid var(--line); line-height: 0; }
.msg .photo img { display: block; max-width: 220px; max-height: 220px; width: auto; height: auto; }
.msg .err { font-size: 12px; color: #9b1c1f; background: #fdecec; border-radius: 8px; padding: 4px 8px; max-width: 100%; overflow-wrap: anywhere; }
.msg .err button { color: #9b1c1f; font-weight: 600; text-decoration: underline; margin-left: 6px; }
.msg.typing .text::after { content: "▍"; animation: blink 1s steps(1) infinite; color: var(--muted); }
@keyframes blink { 50% { opacity: 0; } }
.choices { display: flex; flex-wrap: wrap; gap: 6px; padding: 0 14px 10px; }
.choices button {
  border: 1px solid var(--accent); color: var(--accent); background: #fff; border-radius: 16px; padding: 4px 12px; font-size: 13px;
}
.choices button:hover { background: var(--accent); color: #fff; }
.notice {
  margin: 0 14px 10px; padding: 8px 10px; border-radius: 8px; background: #fdecec; color: #9b1c1f; font-size: 13px;
  display: flex; gap: 8px; align-items: center;
}
.notice span { flex: 1; }
.notice button { color: #9b1c1f; font-weight: 600; text-decoration: underline; }
.rate { margin: 0 14px 10px; padding: 12px; border-radius: 10px; background: #fff; border: 1px solid var(--line); display: flex; flex-direction: column; gap: 8px; }
.rate .ask { font-weight: 600; }
.stars { display: flex; gap: 4px; }
.stars button { font-size: 26px; line-height: 1; color: #c9ced8; padding: 2px; }
.stars button.on { color: #f5a623; }
.rate textarea { width: 100%; min-height: 52px; resize: vertical; border: 1px solid var(--line); border-radius: 8px; padding: 6px 8px; background: #fff; }
.rate .acts { display: flex; gap: 8px; justify-content: flex-end; }
.rate .acts button { padding: 5px 12px; border-radius: 8px; font-size: 13px; }
.rate .acts .primary { background: var(--accent); color: #fff; }
.rate .acts .primary:disabled { opacity: .45; cursor: default; }
.rate .acts .plain { color: var(--muted); }
.rate .done { color: #1f7a44; }
form { display: flex; gap: 8px; padding: 10px 12px; background: #fff; border-top: 1px solid var(--line); align-items: flex-end; }
form textarea {
  flex: 1; min-width: 0; resize: none; height: 40px; max-height: 120px; border: 1px solid var(--line); border-radius: 10px;
  padding: 9px 10px; background: #fff; font-size: 14px; line-height: 20px;
}
form button { height: 40px; padding: 0 16px; border-radius: 10px; background: var(--accent); color: #fff; font-weight: 600; flex: none; }
form button:disabled { opacity: .5; cursor: default; }
form button.photo { width: 40px; padding: 0; background: #fff; color: var(--muted); border: 1px solid var(--line); display: flex; align-items: center; justify-content: center; }
form button.photo:hover { color: var(--accent); border-color: var(--accent); }
form button.photo svg { width: 22px; height: 22px; fill: currentColor; }
@media (max-width: 480px) {
  .panel { inset: 0; right: 0; bottom: 0; width: 100%; height: 100%; max-width: 100vw; border-radius: 0; }
  .msg { max-width: 88%; }
  form textarea { font-size: 16px; } /* no zoom on focus in iOS Safari */
}
`;
