// Vite builds the web widget (widget/main.ts) into dist/widget.js: one self-contained
// IIFE file that shops load from kefu (`GET /widget.js`, embedded by build.rs with the
// console). Run after the console's build (which empties dist/); `npm run build` does both
// and then checks the widget's size (widget/size.mjs).
import { defineConfig } from "vite";

export default defineConfig({
  publicDir: false,
  build: {
    outDir: "dist",
    emptyOutDir: false,
    sourcemap: false,
    // ES2022: class fields as they are, so no helper lands outside the IIFE (in the page's globals).
    target: "es2022",
    lib: {
      entry: "widget/main.ts",
      formats: ["iife"],
      name: "kefuWidget",
      fileName: () => "widget.js",
    },
  },
});
