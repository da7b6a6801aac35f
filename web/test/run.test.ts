import assert from "node:assert/strict";
import { test } from "node:test";

import { parseControl } from "../src/protocol";
import { KEEP_BYTES, OutputBuffer, utf8Length, utf8Prefix } from "../src/run/output";
import {
  jsErrorLine,
  latestPerPerson,
  mergeRuns,
  parseSharedRun,
  pythonError,
  runLanguage,
  runResultMessage,
  RUNS_KEPT,
  type SharedRun,
  SHARED_OUTPUT_BYTES,
  timeoutSeconds,
} from "../src/run/result";

const run = (over: Partial<SharedRun> = {}): SharedRun => ({
  id: "r1", clientId: "c1", name: "Ada", role: "student", language: "python", state: "ok",
  durationMs: 5, output: "hi\n", truncated: false, error: null, line: null, at: 1000, ...over,
});

test("output keeps 64 KB, counts the rest, never splits a character", () => {
  const buf = new OutputBuffer();
  buf.push("stdout", "a".repeat(KEEP_BYTES - 1));
  assert.deepEqual(buf.push("stderr", "éz"), null); // é is 2 bytes: does not fit in 1
  assert.equal(buf.droppedBytes, 3);
  assert.deepEqual(buf.push("stdout", "bc"), { stream: "stdout", text: "b" });
  assert.equal(buf.keptBytes, KEEP_BYTES);
  assert.ok(buf.full);
  assert.equal(buf.push("stdout", "more"), null);
  assert.equal(buf.droppedBytes, 3 + 1 + 4);
  buf.drop(10);
  assert.equal(buf.droppedBytes, 18);
  assert.equal(buf.chunks.length, 1); // consecutive stdout merged
});

test("stdout and stderr stay apart, in order", () => {
  const buf = new OutputBuffer(100);
  buf.push("stdout", "1");
  buf.push("stderr", "2");
  buf.push("stderr", "3");
  buf.push("stdout", "4");
  assert.deepEqual(buf.chunks, [
    { stream: "stdout", text: "1" }, { stream: "stderr", text: "23" }, { stream: "stdout", text: "4" },
  ]);
  assert.equal(buf.text(), "1234");
});

test("utf8 helpers", () => {
  assert.equal(utf8Length("aé😃"), 1 + 2 + 4);
  assert.equal(utf8Prefix("aé😃", 3), "aé");
  assert.equal(utf8Prefix("aé😃", 6), "aé");
  assert.equal(utf8Prefix("aé😃", 7), "aé😃");
  assert.equal(utf8Prefix("abc", 0), "");
});

test("the shared message: first 4 KB, truncation, error and line", () => {
  const big = "x".repeat(5000);
  const msg = runResultMessage({
    language: "javascript", state: "error", durationMs: 12.6,
    chunks: [{ stream: "stdout", text: big }], droppedBytes: 0,
    error: { message: "E".repeat(600), line: 3 },
  });
  assert.equal(msg.type, "run-result");
  assert.equal(msg.output.length, SHARED_OUTPUT_BYTES);
  assert.equal(msg.truncated, true);
  assert.equal(msg.durationMs, 13);
  assert.equal(msg.error?.length, 512);
  assert.equal(msg.line, 3);
  const small = runResultMessage({
    language: "python", state: "ok", durationMs: 1, chunks: [{ stream: "stdout", text: "ok\n" }],
    droppedBytes: 0, error: null,
  });
  assert.deepEqual(small, {
    type: "run-result", language: "python", state: "ok", durationMs: 1, output: "ok\n",
    truncated: false, error: null, line: null,
  });
  // Keys are exactly what the gateway accepts (services/gateway/runs.py).
  assert.deepEqual(Object.keys(small).sort(), ["durationMs", "error", "language", "line", "output", "state", "truncated", "type"]);
});

test("run and runs events are checked", () => {
  assert.deepEqual(parseControl(JSON.stringify({ type: "run", run: run() })), { type: "run", run: run() });
  for (const bad of [
    { ...run(), role: "admin" }, { ...run(), state: "solved" }, { ...run(), language: "ruby" },
    { ...run(), durationMs: -1 }, { ...run(), output: 5 }, { ...run(), output: "x".repeat(5000) },
    { ...run(), id: 1 }, { ...run(), line: "3" }, null, "x",
  ]) {
    assert.equal(parseSharedRun(bad), null, JSON.stringify(bad));
    assert.equal(parseControl(JSON.stringify({ type: "run", run: bad })), null);
  }
  const runs = parseControl(JSON.stringify({ type: "runs", runs: [run(), { bad: 1 }, run({ id: "r2" })] }));
  assert.deepEqual(runs, { type: "runs", runs: [run(), run({ id: "r2" })] });
  assert.equal(parseControl('{"type":"runs","runs":7}'), null);
});

test("dashboard: each person's latest run, newest first; merging dedups by id", () => {
  const runs = [
    run({ id: "a", clientId: "c1", at: 1 }), run({ id: "b", clientId: "c2", at: 2 }),
    run({ id: "c", clientId: "c1", at: 3, state: "error" }),
  ];
  assert.deepEqual(latestPerPerson(runs).map((r) => r.id), ["c", "b"]);
  const merged = mergeRuns(runs, [run({ id: "b", clientId: "c2", at: 2 }), run({ id: "d", at: 0 })]);
  assert.deepEqual(merged.map((r) => r.id), ["d", "a", "b", "c"]);
  const many = Array.from({ length: RUNS_KEPT + 5 }, (_, i) => run({ id: `r${i}`, at: i }));
  assert.equal(mergeRuns([], many).length, RUNS_KEPT);
  assert.equal(mergeRuns([], many)[0].id, "r5");
});

test("languages and time limits", () => {
  assert.equal(runLanguage("JavaScript"), "javascript");
  assert.equal(runLanguage("python"), "python");
  assert.equal(runLanguage("typescript"), null);
  assert.equal(runLanguage("go"), null);
  assert.equal(timeoutSeconds(undefined), 5);
  assert.equal(timeoutSeconds(null), 5);
  assert.equal(timeoutSeconds(2.5), 2.5);
  assert.equal(timeoutSeconds(0), 5);
  assert.equal(timeoutSeconds(Number.NaN), 5);
  assert.equal(timeoutSeconds(600), 60);
});

test("error lines: JavaScript stacks and Python tracebacks", () => {
  assert.equal(jsErrorLine("TypeError: x\n    at user-code.js:7:3\n    at f (user-code.js:2:1)", "user-code.js"), 7);
  assert.equal(jsErrorLine("TypeError: x\n    at other.js:7:3", "user-code.js"), null);
  const tb = [
    "Traceback (most recent call last):",
    '  File "/lib/python313.zip/_pyodide/_base.py", line 597, in eval_code_async',
    "    await CodeRunner(",
    '  File "<exec>", line 4, in <module>',
    '  File "<exec>", line 2, in f',
    "ZeroDivisionError: division by zero",
  ].join("\n");
  const parsed = pythonError(tb);
  assert.equal(parsed.line, 2);
  assert.equal(parsed.message, "ZeroDivisionError: division by zero");
  assert.ok(!parsed.text.includes("_base.py") && !parsed.text.includes("CodeRunner"));
  assert.ok(parsed.text.includes('File "<exec>", line 4'));
  const syntax = pythonError('  File "<exec>", line 3\n    x = \n        ^\nSyntaxError: invalid syntax');
  assert.equal(syntax.line, 3);
  assert.ok(syntax.text.includes("    x = "));
});
