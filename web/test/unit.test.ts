import assert from "node:assert/strict";
import { test } from "node:test";
import * as decoding from "lib0/decoding";
import * as encoding from "lib0/encoding";

import { backoffDelay } from "../src/backoff";
import { liveText } from "../src/lobby";
import {
  encodeControl,
  MESSAGE_CONTROL,
  NOTICES,
  parseControl,
  readAuth,
  readControl,
  shouldReconnect,
  terminalAction,
} from "../src/protocol";

test("close-code rule: only 4400-4499 stay away", () => {
  const table: [number, boolean][] = [
    [1000, true], [1006, true], [1011, true], [1012, true], [1013, true], [4000, true],
    [4399, true], [4400, false], [4403, false], [4404, false], [4409, false],
    [4410, false], [4413, false], [4429, false], [4499, false], [4500, true], [4503, true],
  ];
  for (const [code, reconnect] of table) assert.equal(shouldReconnect(code), reconnect, String(code));
});

test("terminal close codes map to pages and notices", () => {
  assert.deepEqual(terminalAction(4404), { kind: "not-found" });
  assert.deepEqual(terminalAction(4409), { kind: "lobby", notice: "room-full" });
  assert.deepEqual(terminalAction(4410), { kind: "lobby", notice: "mentor-left" });
  assert.equal(NOTICES["mentor-left"], "The mentor left, so the room was closed.");
  for (const code of [4400, 4403, 4413, 4429, 4450]) assert.equal(terminalAction(code).kind, "error");
});

test("control events: valid ones parse", () => {
  assert.deepEqual(
    parseControl(
      '{"type":"welcome","role":"mentor","clientId":"c1","resumeToken":"t","session":"s1","blockId":"b","graceSeconds":5}',
    ),
    { type: "welcome", role: "mentor", clientId: "c1", resumeToken: "t", session: "s1", blockId: "b", graceSeconds: 5 },
  );
  assert.deepEqual(parseControl('{"type":"presence","mentor":true,"students":3,"watchers":0,"v":7}'), {
    type: "presence", mentor: true, students: 3, watchers: 0,
  });
  assert.deepEqual(parseControl('{"type":"solved"}'), { type: "solved" });
  assert.deepEqual(parseControl('{"type":"room-closed","reason":"mentor-left"}'), {
    type: "room-closed", reason: "mentor-left",
  });
  const student = parseControl('{"type":"welcome","role":"student","resumeToken":null,"session":"s"}');
  assert.equal(student?.type === "welcome" && student.resumeToken, null);
});

test("control events: malformed ones are ignored", () => {
  for (const raw of [
    "", "not json", "null", "42", '"welcome"', "[]", "{}", '{"type":"nope"}',
    '{"type":"welcome"}', '{"type":"welcome","role":"admin"}', '{"type":7}',
  ]) {
    assert.equal(parseControl(raw), null, raw);
  }
  const p = parseControl('{"type":"presence","mentor":1,"students":-4,"watchers":"x"}');
  assert.deepEqual(p, { type: "presence", mentor: true, students: 0, watchers: 0 });
});

test("control frames carry UTF-8 byte lengths (as the gateway writes them)", () => {
  const frame = encodeControl({ type: "room-closed", reason: "mentor-left 😃 é" });
  const dec = decoding.createDecoder(frame);
  assert.equal(decoding.readVarUint(dec), MESSAGE_CONTROL);
  assert.deepEqual(readControl(dec), { type: "room-closed", reason: "mentor-left 😃 é" });
  // The gateway's framing: varUint(100) varUint(len(utf8)) utf8.
  const json = new TextEncoder().encode('{"type":"solved","note":"ü"}');
  const gw = new Uint8Array([100, json.length, ...json]);
  const d2 = decoding.createDecoder(gw);
  decoding.readVarUint(d2);
  assert.deepEqual(readControl(d2), { type: "solved" });
  // Truncated frame: ignored, not thrown.
  const cut = decoding.createDecoder(gw.slice(0, 5));
  decoding.readVarUint(cut);
  assert.equal(readControl(cut), null);
});

test("auth: permission denied carries a reason", () => {
  const enc = encoding.createEncoder();
  encoding.writeVarUint(enc, 0);
  encoding.writeVarString(enc, "watchers are read-only");
  assert.equal(readAuth(decoding.createDecoder(encoding.toUint8Array(enc))), "watchers are read-only");
  assert.equal(readAuth(decoding.createDecoder(new Uint8Array([1]))), null);
});

test("backoff grows, is capped and jittered", () => {
  const lo = (n: number) => backoffDelay(n, () => 0);
  const hi = (n: number) => backoffDelay(n, () => 1);
  assert.deepEqual([0, 1, 2, 3].map(lo), [150, 300, 600, 1200]);
  assert.deepEqual([0, 1, 2, 3].map(hi), [300, 600, 1200, 2400]);
  assert.equal(hi(30), 10_000);
  assert.equal(lo(30), 5_000);
  for (let i = 0; i < 100; i++) {
    const d = backoffDelay(4);
    assert.ok(d >= 2400 && d <= 4800, String(d));
  }
});

test("lobby live text", () => {
  assert.equal(liveText(undefined), "No one here yet");
  assert.equal(liveText({ mentor: false, students: 0, watchers: 0 }), "No one here yet");
  assert.equal(liveText({ mentor: true, students: 0, watchers: 0 }), "Mentor in · 0 students");
  assert.equal(liveText({ mentor: true, students: 1, watchers: 2 }), "Mentor in · 1 student · 2 watchers");
  assert.equal(liveText({ mentor: false, students: 2, watchers: 0 }), "No mentor · 2 students");
});

test("caret colours are #rrggbb and differ between people", async () => {
  const { colorFor } = await import("../src/identity");
  const seen = new Set<string>();
  for (let i = 0; i < 50; i++) {
    const c = colorFor(`client-${i}-abcdef`);
    assert.match(c, /^#[0-9a-f]{6}$/);
    seen.add(c);
  }
  assert.ok(seen.size >= 40, String(seen.size));
  assert.equal(colorFor("same"), colorFor("same"));
});

test("caret colours keep the white name label readable (>= 4.5:1)", async () => {
  const { colorFor } = await import("../src/identity");
  const lum = (hex: string) => {
    const [r, g, b] = [1, 3, 5].map((i) => {
      const c = Number.parseInt(hex.slice(i, i + 2), 16) / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  for (let i = 0; i < 500; i++) {
    const c = colorFor(`id-${i}`);
    assert.ok(1.05 / (lum(c) + 0.05) >= 4.5, c);
  }
});

test("hues: parsing, distance, and the freest hue", async () => {
  const { hueOf, hueDistance, freestHue, colorForHue } = await import("../src/identity");
  assert.equal(hueOf("#ff0000"), 0);
  assert.equal(hueOf("#00ff00"), 120);
  assert.equal(hueOf("rgb(0, 0, 255)"), 240);
  assert.equal(hueOf("hsl(3, 4%, 5%)"), null);
  for (const hue of [0, 45, 130, 200, 300]) {
    const back = hueOf(colorForHue(hue));
    assert.ok(back !== null && hueDistance(back, hue) <= 3, `${hue} -> ${back}`);
  }
  assert.equal(hueDistance(350, 10), 20);
  assert.equal(freestHue([], 42), 42);
  assert.equal(freestHue([0], 5), 180);
  const h = freestHue([0, 120, 240], 10);
  assert.ok([60, 180, 300].includes(h), String(h));
});

test("limits: an edit too large to share is refused with the limit, others pass", async () => {
  const { DEFAULT_LIMITS, formatBytes, parseLimits, refusal, utf8Length, UPDATE_OVERHEAD } = await import("../src/limits");
  const limits = parseLimits({ maxFrameBytes: 262144, maxDocBytes: 1048576, maxUpdatesPerSecond: 50, updateBurst: 200 });
  assert.deepEqual(limits, DEFAULT_LIMITS);
  assert.deepEqual(parseLimits({ maxFrameBytes: -1, maxDocBytes: "x" }), DEFAULT_LIMITS);
  assert.deepEqual(parseLimits(null), DEFAULT_LIMITS);
  assert.equal(refusal(0, 0, 0, limits), null);
  assert.equal(refusal(10, 100, 0, limits), null);
  assert.equal(refusal(262144 - UPDATE_OVERHEAD, 0, 0, limits), null);
  assert.match(refusal(400_000, 0, 0, limits) ?? "", /\(391 KB\) is larger than the room can share at once \(255 KB\)/);
  assert.match(refusal(200_000, 0, 100_000, limits) ?? "", /offline with 98 KB/);
  assert.match(refusal(1000, 1_048_000, 0, limits) ?? "", /limit of 1 MB/);
  assert.equal(utf8Length("aé€😀"), 1 + 2 + 3 + 4);
  assert.equal(formatBytes(512), "512 bytes");
  assert.equal(formatBytes(1536 * 1024), "1.5 MB");
});

test("lobby: natural order and search by every word, filter by language", async () => {
  const { filterBlocks, sortBlocks } = await import("../src/lobby");
  const b = (id: string, title: string, language = "javascript", description = "") => ({ id, title, language, description });
  const blocks = [b("1", "Room 10"), b("2", "Room 2"), b("3", "room 1"), b("4", "Binary search", "python", "Sorted lists")];
  assert.deepEqual(sortBlocks(blocks).map((x) => x.title), ["Binary search", "room 1", "Room 2", "Room 10"]);
  assert.deepEqual(filterBlocks(blocks, "  sorted  BINARY ", "").map((x) => x.id), ["4"]);
  assert.deepEqual(filterBlocks(blocks, "", "Python").map((x) => x.id), ["4"]);
  assert.deepEqual(filterBlocks(blocks, "room", "python"), []);
  assert.equal(filterBlocks(blocks, "", "").length, 4);
});

test("share: file names from titles", async () => {
  const { fileName } = await import("../src/share");
  assert.equal(fileName("Sum two numbers!", "JavaScript"), "sum-two-numbers.js");
  assert.equal(fileName("???", "python"), "code.py");
  assert.equal(fileName("Notes", "ruby"), "notes.txt");
});

test("token bucket: a burst, then the rate; waiting says how long", async () => {
  const { TokenBucket, clientBucket } = await import("../src/bucket");
  const b = new TokenBucket(10, 3, 0);
  assert.ok(b.take(0) && b.take(0) && b.take(0));
  assert.equal(b.take(0), false);
  assert.equal(b.waitMs(0), 100);
  assert.equal(b.take(50), false);
  assert.equal(b.take(100), true);
  b.spend(100);
  assert.equal(b.waitMs(100), 200);
  assert.equal(b.take(10_000), true); // refilled, capped at the burst
  assert.ok(b.take(10_000) && b.take(10_000));
  assert.equal(b.take(10_000), false);
  const c = clientBucket(50, 200, 0);
  let n = 0;
  while (c.take(0)) n += 1;
  assert.equal(n, 100);
  assert.equal(c.waitMs(0), 25);
});
