// Builds the browser bundle into services/api/static/ (committed, so `make run` needs no Node).
// build-info.json records a sha256 over the sources; tests/web/test_bundle_fresh.py
// recomputes it and fails when the committed bundle is older than its sources.
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const WEB = dirname(fileURLToPath(import.meta.url));
const OUT = join(WEB, "..", "services", "api", "static");
const sha256 = (data) => createHash("sha256").update(data).digest("hex");

function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)],
  );
}

/** Keep in step with source_hash() in tests/web/test_bundle_fresh.py. */
export function sourceHash() {
  const files = [
    ...walk(join(WEB, "src")),
    join(WEB, "package.json"),
    join(WEB, "package-lock.json"),
    join(WEB, "build.mjs"),
  ]
    .map((f) => relative(WEB, f).split(sep).join("/"))
    .sort();
  const h = createHash("sha256");
  for (const f of files) h.update(`${f}\n${sha256(readFileSync(join(WEB, f)))}\n`);
  return { hash: h.digest("hex"), files };
}

async function main() {
  mkdirSync(OUT, { recursive: true });
  for (const f of ["app.js", "app.css", "app.js.map", "index.html", "favicon.svg", "build-info.json"]) {
    rmSync(join(OUT, f), { force: true });
  }
  rmSync(join(OUT, "chunks"), { recursive: true, force: true });
  const common = { bundle: true, minify: true, legalComments: "none", logLevel: "warning" };
  await esbuild.build({
    ...common,
    entryPoints: { app: join(WEB, "src", "main.ts") },
    outdir: OUT,
    splitting: true,
    chunkNames: "chunks/[name]-[hash]",
    format: "esm",
    target: ["es2020", "chrome100", "firefox100", "safari15"],
    sourcemap: process.env.SOURCEMAP === "1" ? "linked" : false,
  });
  await esbuild.build({
    ...common,
    entryPoints: [join(WEB, "src", "styles.css")],
    outfile: join(OUT, "app.css"),
    target: ["chrome100", "firefox100", "safari15"],
  });
  writeFileSync(join(OUT, "favicon.svg"), readFileSync(join(WEB, "src", "favicon.svg")));

  const assets = {};
  const chunks = readdirSync(join(OUT, "chunks")).sort().map((f) => `chunks/${f}`);
  for (const f of ["app.js", "app.css", "favicon.svg", ...chunks]) assets[f] = sha256(readFileSync(join(OUT, f)));
  const version = sha256(Object.values(assets).join("")).slice(0, 12);
  const html = readFileSync(join(WEB, "src", "index.html"), "utf8").replaceAll("{{version}}", version);
  writeFileSync(join(OUT, "index.html"), html);
  assets["index.html"] = sha256(html);

  const { hash, files } = sourceHash();
  const info = { sourceHash: hash, sourceFiles: files.length, version, assets, esbuild: esbuild.version };
  writeFileSync(join(OUT, "build-info.json"), `${JSON.stringify(info, null, 2)}\n`);
  console.log(`built ${relative(process.cwd(), OUT)} version=${version} source=${hash.slice(0, 12)}`);
}

await main();
