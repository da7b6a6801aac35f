// Who this tab is: a client id per tab (sessionStorage, so a refresh keeps it and the
// mentor's resume token stays valid), a display name per person (localStorage).
const CLIENT_KEY = "coderoom.clientId";
const NAME_KEY = "coderoom.name";
const tokenKey = (blockId: string) => `coderoom.token.${blockId}`;
const seatKey = (blockId: string) => `coderoom.mentor.${blockId}`;
const solvedKey = (blockId: string) => `coderoom.solved.${blockId}`;


function randomId(bytes = 12): string {
  const a = new Uint8Array(bytes);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

function safeGet(storage: Storage, key: string): string | null {
  try {
    return storage.getItem(key);
  } catch {
    return null;
  }
}

function safeSet(storage: Storage, key: string, value: string | null): void {
  try {
    if (value === null) storage.removeItem(key);
    else storage.setItem(key, value);
  } catch {
    /* storage disabled (private mode): identity then lasts for this page only */
  }
}

export function clientId(): string {
  let id = safeGet(sessionStorage, CLIENT_KEY);
  if (!id || !/^[A-Za-z0-9_-]{8,64}$/.test(id)) {
    id = randomId();
    safeSet(sessionStorage, CLIENT_KEY, id);
  }
  return id;
}

export function resumeToken(blockId: string): string | null {
  return safeGet(sessionStorage, tokenKey(blockId));
}

export function saveResumeToken(blockId: string, token: string | null): void {
  safeSet(sessionStorage, tokenKey(blockId), token);
}

export function storedName(): string | null {
  const name = safeGet(localStorage, NAME_KEY);
  return name && name.trim() ? name.trim().slice(0, 40) : null;
}

export function saveName(name: string): void {
  safeSet(localStorage, NAME_KEY, name.trim().slice(0, 40));
}

export function defaultName(id: string): string {
  return `Guest ${parseInt(id.slice(0, 4), 16) % 1000}`;
}

/** A caret colour from the client id: any hue, dark enough for the white name label
 * (contrast at least 4.5:1, WCAG AA for small text). */
export function colorFor(id: string): string {
  return colorForHue(hueFor(id));
}

export function hueFor(id: string): number {
  let h = 2166136261;
  for (const ch of id) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  return h % 360;
}

export function colorForHue(hue: number): string {
  let light = 0.46;
  while (luminance(hslToRgb(hue, 0.7, light)) > 0.18 && light > 0.1) light -= 0.02;
  return `#${hslToRgb(hue, 0.7, light)
    .map((v) => v.toString(16).padStart(2, "0"))
    .join("")}`;
}

/** The hue (0–359) of a `#rrggbb` or `rgb(r, g, b)` colour; null for anything else. */
export function hueOf(color: string): number | null {
  const hex = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(color);
  const rgb = /^rgba?\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)/i.exec(color);
  const parts = hex
    ? hex.slice(1).map((x) => Number.parseInt(x, 16))
    : rgb
      ? rgb.slice(1).map(Number)
      : null;
  if (!parts) return null;
  const [r, g, b] = parts.map((v) => v / 255);
  const max = Math.max(r, g, b);
  const d = max - Math.min(r, g, b);
  if (d === 0) return 0;
  const h = max === r ? ((g - b) / d) % 6 : max === g ? (b - r) / d + 2 : (r - g) / d + 4;
  return Math.round((h * 60 + 360) % 360);
}

export function hueDistance(a: number, b: number): number {
  const d = Math.abs(a - b) % 360;
  return Math.min(d, 360 - d);
}

/** The hue farthest from all of `taken` (on a 10° grid; `current` if nothing is taken). */
export function freestHue(taken: number[], current: number): number {
  if (taken.length === 0) return current;
  let best = current;
  let bestGap = Math.min(...taken.map((t) => hueDistance(t, current)));
  for (let hue = 0; hue < 360; hue += 10) {
    const gap = Math.min(...taken.map((t) => hueDistance(t, hue)));
    if (gap > bestGap) [best, bestGap] = [hue, gap];
  }
  return best;
}

function hslToRgb(hue: number, sat: number, light: number): number[] {
  const a = sat * Math.min(light, 1 - light);
  return [0, 8, 4].map((n) => {
    const k = (n + hue / 30) % 12;
    return Math.round((light - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))) * 255);
  });
}

function luminance(rgb: number[]): number {
  const [r, g, b] = rgb.map((v) => {
    const c = v / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

/** The mentor's seat of a room, shared by the tabs of one browser (localStorage): a
 * second tab joins with the same client id and resume token, so the same person stays
 * the mentor instead of becoming a student. */
export interface MentorSeat {
  clientId: string;
  token: string;
}

export function mentorSeat(blockId: string): MentorSeat | null {
  try {
    const raw = JSON.parse(safeGet(localStorage, seatKey(blockId)) ?? "null") as Partial<MentorSeat> | null;
    if (raw && typeof raw.clientId === "string" && typeof raw.token === "string") {
      if (/^[A-Za-z0-9_-]{8,64}$/.test(raw.clientId)) return { clientId: raw.clientId, token: raw.token };
    }
  } catch {
    /* not JSON: ignore */
  }
  return null;
}

export function saveMentorSeat(blockId: string, seat: MentorSeat | null): void {
  safeSet(localStorage, seatKey(blockId), seat ? JSON.stringify(seat) : null);
}

/** Which session of a room this person has seen solved (the dialog shows once), and
 * who solved it. */
export interface SolvedMark {
  session: string;
  by: string[];
}

export function solvedMark(blockId: string): SolvedMark | null {
  try {
    const raw = JSON.parse(safeGet(localStorage, solvedKey(blockId)) ?? "null") as Partial<SolvedMark> | null;
    if (raw && typeof raw.session === "string") {
      const by = Array.isArray(raw.by) ? raw.by.filter((x): x is string => typeof x === "string") : [];
      return { session: raw.session, by };
    }
  } catch {
    /* not JSON: ignore */
  }
  return null;
}

export function saveSolvedMark(blockId: string, mark: SolvedMark): void {
  safeSet(localStorage, solvedKey(blockId), JSON.stringify(mark));
}
