// The replay's timeline: steps applied to a Yjs document, with checkpoints so that any
// moment is reached from the nearest one in a bounded number of steps (docs/replay.md).
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

export const CHECKPOINT_EVERY = 200; // steps at most between checkpoints
export const CHECKPOINT_BYTES = 16384; // update bytes at most between checkpoints

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

export class Timeline {
  readonly duration: number;
  private readonly checkpoints: Uint8Array[] = [];
  private readonly checkpointAt: number[] = []; // steps applied before each checkpoint
  private doc: Y.Doc = new Y.Doc();
  private applied = 0; // steps applied to `doc`

  constructor(
    readonly steps: Step[],
    readonly clients: Map<number, number>,
  ) {
    this.duration = steps.length ? steps[steps.length - 1].t : 0;
    // One pass over the whole session: a checkpoint before at most CHECKPOINT_EVERY steps
    // or CHECKPOINT_BYTES of updates, whichever comes first (merged steps are big).
    const doc = new Y.Doc();
    let since = Infinity;
    let bytes = 0;
    for (let i = 0; i < steps.length; i++) {
      if (since >= CHECKPOINT_EVERY || bytes >= CHECKPOINT_BYTES) {
        this.checkpoints.push(Y.encodeStateAsUpdate(doc));
        this.checkpointAt.push(i);
        since = 0;
        bytes = 0;
      }
      const update = steps[i].update;
      if (update) {
        Y.applyUpdate(doc, update);
        bytes += update.length;
      }
      since++;
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

  /** Bring the document to `count` steps applied (from a checkpoint when going back or
   * past one). */
  seekIndex(count: number): void {
    const target = Math.max(0, Math.min(count, this.steps.length));
    // The last checkpoint at or before the target.
    let lo = 0;
    let hi = this.checkpointAt.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.checkpointAt[mid] <= target) lo = mid + 1;
      else hi = mid;
    }
    const k = lo - 1;
    if (k >= 0 && (target < this.applied || this.checkpointAt[k] > this.applied)) {
      this.doc.destroy();
      this.doc = new Y.Doc();
      Y.applyUpdate(this.doc, this.checkpoints[k]);
      this.applied = this.checkpointAt[k];
    }
    for (; this.applied < target; this.applied++) {
      const update = this.steps[this.applied].update;
      if (update) Y.applyUpdate(this.doc, update);
    }
  }

  seek(t: number): void {
    this.seekIndex(this.indexAt(t));
  }

  get position(): number {
    return this.applied;
  }

  text(): string {
    return this.doc.getText("code").toString();
  }

  /** The text in runs of one author each (the Yjs client id of every character). */
  runs(): Run[] {
    const out: Run[] = [];
    let pos = 0;
    // Y.Text's items in document order; deleted ones are skipped.
    let item = (this.doc.getText("code") as unknown as { _start: YItem | null })._start;
    while (item !== null) {
      if (!item.deleted && item.countable) {
        const len = item.length;
        const author = this.clients.get(item.id.client) ?? -1;
        const last = out[out.length - 1];
        if (last && last.author === author && last.to === pos) last.to = pos + len;
        else out.push({ from: pos, to: pos + len, author });
        pos += len;
      }
      item = item.right;
    }
    return out;
  }
}

interface YItem {
  deleted: boolean;
  countable: boolean;
  length: number;
  id: { client: number };
  right: YItem | null;
}
