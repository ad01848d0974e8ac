// Vite builds the console into dist/, which build.rs embeds into the kefu binary.
// `base` is the path kefu serves it under; `npm run dev` proxies the API to a local
// `kefu serve` (KEFU_URL, default http://127.0.0.1:8080) so the page can be worked on live.
import { defineConfig } from "vite";
import preact from "@preact/preset-vite";

const target = process.env.KEFU_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  base: "/console/",
  plugins: [preact()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // No source maps in the binary; hashed names let kefu mark assets immutable.
    sourcemap: false,
    chunkSizeWarningLimit: 800,
  },
  server: {
    proxy: {
      "/admin": target,
      "/console/api": target,
      "/v1": target,
      "/metrics": target,
    },
  },
});
