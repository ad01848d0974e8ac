// Fails the build when dist/widget.js is larger than the budget once gzipped: shops put it
// on every page, often on phones.
import fs from "node:fs";
import zlib from "node:zlib";

const BUDGET = 40 * 1024;
const file = new URL("../dist/widget.js", import.meta.url);
const gz = zlib.gzipSync(fs.readFileSync(file), { level: 9 }).length;
if (gz > BUDGET) {
  console.error(`widget.js is ${gz} bytes gzipped, over the budget of ${BUDGET}`);
  process.exit(1);
}
console.log(`widget.js: ${gz} bytes gzipped (budget ${BUDGET})`);
