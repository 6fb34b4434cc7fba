// Copies the onnxruntime-web files the browser runtime needs from node_modules into
// runtime/ort/ (committed), so pages never load anything from a CDN.
// Run after `npm ci`: `npm run vendor`.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const source = join(here, "node_modules", "onnxruntime-web");
const target = join(here, "runtime", "ort");
const files = [
  "dist/ort.wasm.min.mjs",
  "dist/ort-wasm-simd-threaded.mjs",
  "dist/ort-wasm-simd-threaded.wasm",
];
mkdirSync(target, { recursive: true });
for (const file of files) {
  copyFileSync(join(source, file), join(target, file.split("/").pop()));
}
const pkg = JSON.parse(readFileSync(join(source, "package.json"), "utf8"));
writeFileSync(
  join(target, "NOTICE.txt"),
  `onnxruntime-web ${pkg.version} (npm), ${pkg.license} license, (c) Microsoft Corporation.\n` +
    "https://github.com/microsoft/onnxruntime\n" +
    `Files: ${files.map((f) => f.split("/").pop()).join(", ")}\n`,
);
const version = pkg.version;
console.log(`onnxruntime-web ${version}: ${files.length} files copied to runtime/ort/`);
