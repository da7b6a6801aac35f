// The replay's timeline: every step applied once, on load, to a Yjs document that keeps
// what is deleted; then the text at any moment is one pass over the characters the room
// ever had, each with the step that inserted it and the one that deleted it (docs/web.md,
// "How the replay seeks").
import * as Y from "yjs";

export type Kind = "o" | "u" | "r" | "x" | "j" | "l" | "s" | "c" | "h";
export interface Step {
  t: number;
  kind: Kind;
  authors: number[];
  update: Uint8Array | null;
  text: string | null;
}
export interface Author {
  id: string;
  role: string;
  name: string;
}
export interface Run {
  from: number;
  to: number;
  author: number; // -1: the template or nobody we know
}

function fromBase64(data: string): Uint8Array {
  const raw = atob(data);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

export function parseSteps(rows: unknown): Step[] {
  if (!Array.isArray(rows)) return [];
  const out: Step[] = [];
  for (const row of rows) {
    if (!Array.isArray(row) || row.length < 4) continue;
    const [t, kind, authors, data] = row as [unknown, unknown, unknown, unknown];
    if (typeof t !== "number" || typeof kind !== "string") continue;
    const isUpdate = "ourx".includes(kind);
    out.push({
      t,
      kind: kind as Kind,
      authors: Array.isArray(authors) ? authors.filter((a): a is number => typeof a === "number") : [],
      update: isUpdate && typeof data === "string" ? fromBase64(data) : null,
      text: !isUpdate && typeof data === "string" ? data : null,
    });
  }
  out.sort((a, b) => a.t - b.t); // stable: equal times keep their order
  return out;
}

/** The smallest single replacement that turns `from` into `to`: the text between their
 * common prefix and common suffix. */
export function textChange(from: string, to: string): { from: number; to: number; insert: string } {
  const max = Math.min(from.length, to.length);
  let start = 0;
  while (start < max && from.charCodeAt(start) === to.charCodeAt(start)) start++;
  let end = 0;
  while (end < max - start && from.charCodeAt(from.length - 1 - end) === to.charCodeAt(to.length - 1 - end)) end++;
  return { from: start, to: from.length - end, insert: to.slice(start, to.length - end) };
}

const NEVER = 0x7fffffff;

/** The step at which character `clock` of one client happened: `starts` (ascending) are
 * the first clocks of ranges, `steps` their steps, `lens` their lengths (none: each range
 * runs up to the next one). NEVER when no range holds it. */
function stepOf(starts: number[], lens: number[] | null, steps: number[], clock: number): number {
  let lo = 0;
  let hi = starts.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (starts[mid] <= clock) lo = mid + 1;
    else hi = mid;
  }
  const k = lo - 1;
  if (k < 0 || (lens !== null && clock >= starts[k] + lens[k])) return NEVER;
  return steps[k];
}

interface Ranges {
  starts: number[];
  lens: number[];
  steps: number[];
}

function ranges(map: Map<number, Ranges>, client: number): Ranges {
  let r = map.get(client);
  if (!r) {
    r = { starts: [], lens: [], steps: [] };
    map.set(client, r);
  }
  return r;
}

export class Timeline {
  readonly duration: number;
  // Every character the room ever had, in document order (deleted ones too), with the
  // step that inserted it, the step that deleted it (NEVER) and its author (-1: unknown).
  private readonly chars: string;
  private readonly born: Int32Array;
  private readonly died: Int32Array;
  private readonly author: Int32Array;
  private applied = 0;
  private shown = "";
  private shownRuns: Run[] = [];

  constructor(
    readonly steps: Step[],
    readonly clients: Map<number, number>,
  ) {
    this.duration = steps.length ? steps[steps.length - 1].t : 0;
    // One pass over the session, in a document that keeps what is deleted: each step's
    // transaction says which clocks it brought (state vectors before and after) and
    // which characters it deleted (its delete set).
    const doc = new Y.Doc({ gc: false });
    const inserted = new Map<number, Ranges>();
    const deleted = new Map<number, Ranges>();
    let step = 0;
    doc.on("afterTransaction", (tr: Y.Transaction) => {
      for (const [client, after] of tr.afterState) {
        const before = tr.beforeState.get(client) ?? 0;
        if (after <= before) continue;
        const r = ranges(inserted, client);
        r.starts.push(before);
        r.steps.push(step);
      }
      for (const [client, items] of tr.deleteSet.clients) {
        const r = ranges(deleted, client);
        for (const item of items) {
          r.starts.push(item.clock);
          r.lens.push(item.len);
          r.steps.push(step);
        }
      }
    });
    for (; step < steps.length; step++) {
      const update = steps[step].update;
      if (update) Y.applyUpdate(doc, update);
    }
    for (const r of deleted.values()) {
      const order = r.starts.map((_, i) => i).sort((a, b) => r.starts[a] - r.starts[b]);
      r.starts = order.map((i) => r.starts[i]);
      r.lens = order.map((i) => r.lens[i]);
      r.steps = order.map((i) => r.steps[i]);
    }

    // Flatten the text's items (a Yjs item's order never changes once it exists).
    const parts: string[] = [];
    let n = 0;
    for (let item = textStart(doc); item !== null; item = item.right) {
      if (item.content instanceof Y.ContentString) {
        parts.push(item.content.str);
        n += item.length;
      }
    }
    this.chars = parts.join("");
    this.born = new Int32Array(n);
    this.died = new Int32Array(n);
    this.author = new Int32Array(n);
    let i = 0;
    for (let item = textStart(doc); item !== null; item = item.right) {
      if (!(item.content instanceof Y.ContentString)) continue;
      const { client, clock } = item.id;
      const ins = inserted.get(client);
      const del = deleted.get(client);
      const who = clients.get(client) ?? -1;
      for (let c = clock; c < clock + item.length; c++, i++) {
        this.born[i] = ins ? stepOf(ins.starts, null, ins.steps, c) : 0;
        this.died[i] = del ? stepOf(del.starts, del.lens, del.steps, c) : NEVER;
        this.author[i] = who;
      }
    }
    doc.destroy();
  }

  /** How many steps have happened at time t (ms since the start). */
  indexAt(t: number): number {
    let lo = 0;
    let hi = this.steps.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.steps[mid].t <= t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Bring the text to `count` steps applied: the characters inserted by an earlier step
   * and not deleted by one, in one pass (the same cost wherever it goes). */
  seekIndex(count: number): void {
    const target = Math.max(0, Math.min(count, this.steps.length));
    if (target === this.applied) return;
    const { chars, born, died, author } = this;
    const parts: string[] = [];
    const runs: Run[] = [];
    let pos = 0;
    let i = 0;
    while (i < chars.length) {
      if (born[i] >= target || died[i] < target) {
        i++;
        continue;
      }
      const who = author[i];
      let j = i + 1;
      while (j < chars.length && born[j] < target && died[j] >= target && author[j] === who) j++;
      parts.push(chars.slice(i, j));
      const last = runs[runs.length - 1];
      if (last && last.author === who) last.to = pos + j - i;
      else runs.push({ from: pos, to: pos + j - i, author: who });
      pos += j - i;
      i = j;
    }
    this.shown = parts.join("");
    this.shownRuns = runs;
    this.applied = target;
  }

  seek(t: number): void {
    this.seekIndex(this.indexAt(t));
  }

  get position(): number {
    return this.applied;
  }

  text(): string {
    return this.shown;
  }

  /** The text in runs of one author each (the Yjs client id of every character). */
  runs(): Run[] {
    return this.shownRuns;
  }
}

function textStart(doc: Y.Doc): Y.Item | null {
  return (doc.getText("code") as unknown as { _start: Y.Item | null })._start;
}
