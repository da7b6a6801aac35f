// Who this tab is: a client id per tab (sessionStorage, so a refresh keeps it and the
// mentor's resume token stays valid), a display name per person (localStorage).
const CLIENT_KEY = "coderoom.clientId";
const NAME_KEY = "coderoom.name";
const tokenKey = (blockId: string) => `coderoom.token.${blockId}`;

const PALETTE = [
  "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4",
  "#0f9d9a", "#f032e6", "#808000", "#9a6324", "#1e88e5",
];

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

export function colorFor(id: string): string {
  let h = 0;
  for (const ch of id) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}
