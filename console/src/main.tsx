// The console's entry: mounts the app. Pages live in src/pages/, the rule editor in
// src/editor/, the API client in src/api.ts, the strings in src/i18n.ts.
import { render } from "preact";
import { App } from "./app";

render(<App />, document.getElementById("app")!);
