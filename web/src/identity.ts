// Who this tab is: a client id per tab (sessionStorage, so a refresh keeps it and the
// mentor's resume token stays valid), a display name per person (localStorage).
const CLIENT_KEY = "coderoom.clientId";
const NAME_KEY = "coderoom.name";
const tokenKey = (blockId: string) => `coderoom.token.${blockId}`;


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

/** A caret colour from the client id: any hue, dark enough for white label text. */
export function colorFor(id: string): string {
  let h = 2166136261;
  for (const ch of id) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  const hue = h % 360;
  // Yellows and greens look light at the same lightness: darken them for the label.
  return hslToHex(hue, 0.7, hue >= 45 && hue <= 200 ? 0.33 : 0.45);
}

function hslToHex(hue: number, sat: number, light: number): string {
  const a = sat * Math.min(light, 1 - light);
  const channel = (n: number) => {
    const k = (n + hue / 30) % 12;
    const v = light - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    return Math.round(v * 255)
      .toString(16)
      .padStart(2, "0");
  };
  return `#${channel(0)}${channel(8)}${channel(4)}`;
}
