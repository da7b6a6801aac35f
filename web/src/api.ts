// REST calls to the api service (same origin).
import { type Limits, parseLimits } from "./limits";

export interface CodeBlock {
  id: string;
  title: string;
  language: string;
  description: string;
  /** Wall-clock limit of a run of this block's code (seconds; absent: 5). */
  runTimeoutSeconds?: number | null;
}

export interface RoomStatus {
  mentor: boolean;
  students: number;
  watchers: number;
}

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function getJson(path: string, timeoutMs = 8000): Promise<unknown> {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeoutMs);
  try {
    const res = await fetch(path, {
      headers: { Accept: "application/json" },
      cache: "no-store",
      signal: ctrl.signal,
    });
    if (!res.ok) {
      let message = `${res.status} ${res.statusText}`;
      try {
        const body = (await res.json()) as { error?: { message?: string } };
        if (body?.error?.message) message = body.error.message;
      } catch {
        /* not JSON */
      }
      throw new HttpError(res.status, message);
    }
    return await res.json();
  } finally {
    clearTimeout(timer);
  }
}

function str(v: unknown): string {
  return typeof v === "string" ? v : typeof v === "number" ? String(v) : "";
}

function count(v: unknown): number {
  const n = typeof v === "number" ? v : Number(v);
  return Number.isFinite(n) && n > 0 ? Math.floor(n) : 0;
}

function asList(data: unknown, key: string): unknown[] {
  if (Array.isArray(data)) return data;
  if (data && typeof data === "object") {
    const inner = (data as Record<string, unknown>)[key] ?? (data as Record<string, unknown>).items;
    if (Array.isArray(inner)) return inner;
  }
  return [];
}

function toBlock(raw: unknown): CodeBlock | null {
  if (!raw || typeof raw !== "object") return null;
  const r = raw as Record<string, unknown>;
  const id = str(r.id ?? r._id);
  if (!id) return null;
  return {
    id,
    title: str(r.title) || `Block ${id}`,
    language: str(r.language) || "text",
    description: str(r.description),
    runTimeoutSeconds: typeof r.runTimeoutSeconds === "number" ? r.runTimeoutSeconds : null,
  };
}

export async function listBlocks(): Promise<CodeBlock[]> {
  const data = await getJson("/api/code-blocks");
  return asList(data, "codeBlocks")
    .map(toBlock)
    .filter((b): b is CodeBlock => b !== null);
}

export async function getBlock(id: string): Promise<CodeBlock> {
  const block = toBlock(await getJson(`/api/code-blocks/${encodeURIComponent(id)}`));
  if (!block) throw new HttpError(502, "malformed code block");
  return block;
}

/** Live status per block id (rooms with nobody in them may be absent). */
export async function listRooms(): Promise<Map<string, RoomStatus>> {
  const data = await getJson("/api/rooms", 5000);
  const out = new Map<string, RoomStatus>();
  if (data && typeof data === "object" && !Array.isArray(data) && !("rooms" in data)) {
    // {blockId: {mentor, students, watchers}}
    for (const [id, v] of Object.entries(data as Record<string, unknown>)) {
      if (v && typeof v === "object") out.set(id, toStatus(v as Record<string, unknown>));
    }
    return out;
  }
  for (const raw of asList(data, "rooms")) {
    if (!raw || typeof raw !== "object") continue;
    const r = raw as Record<string, unknown>;
    const id = str(r.blockId ?? r.block_id ?? r.id);
    if (id) out.set(id, toStatus(r));
  }
  return out;
}

function toStatus(r: Record<string, unknown>): RoomStatus {
  const mentor = r.mentor ?? r.mentorPresent ?? r.hasMentor;
  return {
    mentor: typeof mentor === "object" ? mentor !== null : Boolean(mentor),
    students: count(r.students ?? r.studentCount),
    watchers: count(r.watchers ?? r.watcherCount),
  };
}

export interface ClientConfig {
  /** Room-socket base URLs (same origin when the api lists none). */
  bases: string[];
  limits: Limits;
  /** How often a gateway sends each socket a heartbeat (null: unknown). */
  heartbeatSeconds: number | null;
}

export async function clientConfig(): Promise<ClientConfig> {
  const data = (await getJson("/api/config")) as {
    gatewayUrls?: unknown;
    limits?: unknown;
    heartbeatSeconds?: unknown;
  };
  const urls = Array.isArray(data?.gatewayUrls)
    ? data.gatewayUrls.filter((u): u is string => typeof u === "string" && /^wss?:\/\//.test(u))
    : [];
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const hb = data?.heartbeatSeconds;
  return {
    bases: urls.length ? urls : [`${scheme}//${location.host}/ws/rooms`],
    limits: parseLimits(data?.limits),
    heartbeatSeconds: typeof hb === "number" && Number.isFinite(hb) && hb > 0 ? hb : null,
  };
}
