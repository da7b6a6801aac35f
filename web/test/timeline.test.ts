// The replay's timeline (src/timeline.ts): the text and the authors' runs at every step
// are exactly those of a document that applied the steps before it, one by one.
import assert from "node:assert/strict";
import { test } from "node:test";
import * as Y from "yjs";

import { type Run, type Step, textChange, Timeline } from "../src/timeline";

/** A small deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function step(t: number, kind: Step["kind"], update: Uint8Array | null): Step {
  return { t, kind, authors: [], update, text: null };
}

/** A room: a template, three students typing and deleting at once (their updates reach
 * each other late, so edits are concurrent), a re-seed snapshot in the middle, updates
 * recorded out of causal order now and then, and events without updates. */
function session(seed: number, ops: number): { steps: Step[]; clients: Map<number, number> } {
  const random = rng(seed);
  const template = new Y.Doc();
  template.getText("code").insert(0, "// exercise\nlet x = 1;\n");
  const steps: Step[] = [step(0, "o", Y.encodeStateAsUpdate(template))];
  const docs = [0, 1, 2].map(() => new Y.Doc());
  const clients = new Map(docs.map((d, i) => [d.clientID, i] as [number, number]));
  const inbox: Uint8Array[][] = docs.map(() => []);
  for (const d of docs) Y.applyUpdate(d, steps[0].update as Uint8Array);
  const words = ["a", "bc", "😀", "\n", "def ", "é"];
  let t = 0;
  for (let k = 0; k < ops; k++) {
    const who = Math.floor(random() * docs.length);
    const doc = docs[who];
    // Some of what the others sent arrives first.
    while (inbox[who].length && random() < 0.6) Y.applyUpdate(doc, inbox[who].shift() as Uint8Array);
    const text = doc.getText("code");
    let update: Uint8Array | null = null;
    const grab = (u: Uint8Array): void => {
      update = u;
    };
    doc.on("update", grab);
    if (random() < 0.3 && text.length > 2) {
      const at = Math.floor(random() * (text.length - 1));
      // Never half a surrogate pair: delete whole code points.
      const chars = [...text.toString()];
      let from = 0;
      const start = Math.min(at, chars.length - 1);
      for (let c = 0; c < start; c++) from += chars[c].length;
      let len = 0;
      for (let c = start; c < Math.min(chars.length, start + 1 + Math.floor(random() * 3)); c++) len += chars[c].length;
      text.delete(from, len);
    } else {
      const chars = [...text.toString()];
      const cut = Math.floor(random() * (chars.length + 1));
      text.insert(chars.slice(0, cut).join("").length, words[Math.floor(random() * words.length)]);
    }
    doc.off("update", grab);
    t += 1 + Math.floor(random() * 50);
    if (update === null) continue;
    for (let o = 0; o < docs.length; o++) if (o !== who) inbox[o].push(update);
    steps.push(step(t, "u", update));
    if (random() < 0.05) steps.push(step(t, "j", null));
    if (k === Math.floor(ops / 2)) steps.push(step(t, "r", Y.encodeStateAsUpdate(docs[0])));
    // Recorded out of causal order: this one before the one it builds on.
    if (random() < 0.05 && steps.length > 3) {
      const a = steps[steps.length - 2];
      steps[steps.length - 2] = steps[steps.length - 1];
      steps[steps.length - 1] = a;
    }
  }
  return { steps, clients };
}

function referenceRuns(doc: Y.Doc, clients: Map<number, number>): Run[] {
  const out: Run[] = [];
  let pos = 0;
  let item = (doc.getText("code") as unknown as { _start: Y.Item | null })._start;
  for (; item !== null; item = item.right) {
    if (item.deleted || !(item.content instanceof Y.ContentString)) continue;
    const author = clients.get(item.id.client) ?? -1;
    const last = out[out.length - 1];
    if (last && last.author === author && last.to === pos) last.to = pos + item.length;
    else out.push({ from: pos, to: pos + item.length, author });
    pos += item.length;
  }
  return out;
}

test("timeline: the text and the authors at every step, as applying the steps one by one", () => {
  for (const seed of [1, 2, 3, 4]) {
    const { steps, clients } = session(seed, 400);
    const timeline = new Timeline(steps, clients);
    const reference = new Y.Doc();
    // Forwards, step by step, against a document that applies them.
    for (let k = 0; k <= steps.length; k++) {
      if (k > 0 && steps[k - 1].update) Y.applyUpdate(reference, steps[k - 1].update as Uint8Array);
      timeline.seekIndex(k);
      assert.equal(timeline.position, k);
      assert.equal(timeline.text(), reference.getText("code").toString(), `seed ${seed}, step ${k}`);
      assert.deepEqual(timeline.runs(), referenceRuns(reference, clients), `seed ${seed}, step ${k}`);
    }
    assert.ok(timeline.text().length > 100, "the session typed something");
    // Back and forth at random: the same texts.
    const random = rng(seed + 100);
    for (let n = 0; n < 40; n++) {
      const k = Math.floor(random() * (steps.length + 1));
      const doc = new Y.Doc();
      for (const s of steps.slice(0, k)) if (s.update) Y.applyUpdate(doc, s.update);
      timeline.seekIndex(k);
      assert.equal(timeline.text(), doc.getText("code").toString(), `seed ${seed}, jump to ${k}`);
    }
  }
});

test("timeline: time to step index, and the start is empty", () => {
  const { steps, clients } = session(9, 50);
  const timeline = new Timeline(steps, clients);
  assert.equal(timeline.duration, steps[steps.length - 1].t);
  assert.equal(timeline.indexAt(-1), 0);
  assert.equal(timeline.indexAt(0), 1); // the template is step 0, at t = 0
  assert.equal(timeline.indexAt(timeline.duration), steps.length);
  timeline.seek(-1);
  assert.equal(timeline.text(), "");
  timeline.seek(0);
  assert.equal(timeline.text(), "// exercise\nlet x = 1;\n");
});

test("text change: only what differs between two texts", () => {
  const cases: [string, string][] = [
    ["", ""], ["", "abc"], ["abc", ""], ["abc", "abc"], ["abcdef", "abXYef"], ["aaa", "aaaa"],
    ["aaaa", "aa"], ["x😀y", "x😁y"], ["hello world", "hello, world"],
  ];
  for (const [from, to] of cases) {
    const c = textChange(from, to);
    assert.equal(from.slice(0, c.from) + c.insert + from.slice(c.to), to, `${from} -> ${to}`);
    assert.ok(c.from <= c.to && c.to <= from.length);
  }
  assert.deepEqual(textChange("abcdef", "abXYef"), { from: 2, to: 4, insert: "XY" });
  assert.deepEqual(textChange("aaa", "aaaa"), { from: 3, to: 3, insert: "a" });
});
