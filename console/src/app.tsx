// The shell: sign-in, the navigation and the page for the current path.
// (Skeleton: the "shell" helper fills it in.)
import { t } from "./i18n";

export function App() {
  return <main>{t("title")}</main>;
}
