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

// Pyodide's files that the browser loads, copied as they are from the npm package into
// static/pyodide/ (docs/web.md: why they are committed). pyodide.mjs itself is bundled
// into the sandbox worker.
const PYODIDE_FILES = ["pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json"];
const PYODIDE = join(WEB, "node_modules", "pyodide");

// pyodide.mjs names a CDN as the default place of its packages; coderoom never loads a
// package (and passes its own packageBaseUrl), so not even the name is shipped.
const noCdn = {
  name: "no-cdn",
  setup(build) {
    build.onLoad({ filter: /pyodide[\\/]pyodide\.mjs$/ }, (args) => {
      const text = readFileSync(args.path, "utf8");
      const out = text.replace(/https:\/\/cdn\.jsdelivr\.net\/pyodide\/v\$\{\w+\}\/full\//g, "/static/pyodide/");
      if (/https?:\/\//.test(out.replace(/https?:\/\/(github\.com|pyodide\.org)[^\s"'`]*/g, ""))) {
        throw new Error("pyodide.mjs names an unexpected URL");
      }
      return { contents: out, loader: "js" };
    });
  },
};

async function main() {
  mkdirSync(OUT, { recursive: true });
  for (const f of ["app.js", "app.css", "app.js.map", "index.html", "favicon.svg", "build-info.json", "runner.js", "runner.html"]) {
    rmSync(join(OUT, f), { force: true });
  }
  rmSync(join(OUT, "chunks"), { recursive: true, force: true });
  rmSync(join(OUT, "pyodide"), { recursive: true, force: true });
  const common = { bundle: true, minify: true, legalComments: "none", logLevel: "warning" };
  const pyodideVersion = JSON.parse(readFileSync(join(PYODIDE, "package.json"), "utf8")).version;

  // The sandbox: its worker (with Pyodide's loader) is built first and embedded as text
  // in runner.js, which starts it from a blob: the sandbox frame has an opaque origin.
  const worker = await esbuild.build({
    ...common,
    entryPoints: [join(WEB, "src", "run", "worker.ts")],
    write: false,
    format: "iife",
    platform: "browser",
    target: ["es2022", "chrome100", "firefox100", "safari15"],
    external: ["node:*", "ws"],
    plugins: [noCdn],
  });
  await esbuild.build({
    ...common,
    entryPoints: [join(WEB, "src", "run", "sandbox.ts")],
    outfile: join(OUT, "runner.js"),
    format: "iife",
    target: ["es2020", "chrome100", "firefox100", "safari15"],
    define: { WORKER_SOURCE: JSON.stringify(worker.outputFiles[0].text) },
  });
  mkdirSync(join(OUT, "pyodide"), { recursive: true });
  for (const f of PYODIDE_FILES) writeFileSync(join(OUT, "pyodide", f), readFileSync(join(PYODIDE, f)));

  await esbuild.build({
    ...common,
    define: { PYODIDE_VERSION: JSON.stringify(pyodideVersion) },
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
  const pyodide = PYODIDE_FILES.map((f) => `pyodide/${f}`);
  for (const f of ["app.js", "app.css", "favicon.svg", "runner.js", ...chunks, ...pyodide]) {
    assets[f] = sha256(readFileSync(join(OUT, f)));
  }
  const version = sha256(Object.values(assets).join("")).slice(0, 12);
  for (const page of ["index.html", "runner.html"]) {
    const html = readFileSync(join(WEB, "src", page), "utf8").replaceAll("{{version}}", version);
    writeFileSync(join(OUT, page), html);
    assets[page] = sha256(html);
  }

  const { hash, files } = sourceHash();
  const info = {
    sourceHash: hash,
    sourceFiles: files.length,
    version,
    assets,
    esbuild: esbuild.version,
    pyodide: pyodideVersion,
  };
  writeFileSync(join(OUT, "build-info.json"), `${JSON.stringify(info, null, 2)}\n`);
  console.log(`built ${relative(process.cwd(), OUT)} version=${version} source=${hash.slice(0, 12)}`);
}

await main();
