// Admin REST calls. The token is kept for this browser session only (sessionStorage):
// never in a URL, never in localStorage, never logged; it travels only in the
// Authorization header of same-origin requests.
const TOKEN_KEY = "coderoom.adminToken";

export function adminToken(): string | null {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return memoryToken;
  }
}

let memoryToken: string | null = null;

export function saveAdminToken(token: string | null): void {
  memoryToken = token;
  try {
    if (token === null) sessionStorage.removeItem(TOKEN_KEY);
    else sessionStorage.setItem(TOKEN_KEY, token);
  } catch {
    /* storage disabled: the token lasts for this page only */
  }
}

export interface FieldError {
  field: string;
  message: string;
}

export class AdminError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly fields: FieldError[] = [],
  ) {
    super(message);
  }
}

export async function adminFetch(
  path: string,
  init: { method?: string; body?: unknown; token?: string } = {},
): Promise<unknown> {
  const token = init.token ?? adminToken();
  const headers: Record<string, string> = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (init.body !== undefined) headers["Content-Type"] = "application/json";
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), 15000);
  try {
    const res = await fetch(path, {
      method: init.method ?? "GET",
      headers,
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
      cache: "no-store",
      credentials: "omit",
      signal: ctrl.signal,
    });
    if (res.status === 204) return null;
    let data: unknown = null;
    try {
      data = await res.json();
    } catch {
      /* not JSON */
    }
    if (!res.ok) {
      const error = (data as { error?: { code?: string; message?: string; details?: unknown } })?.error;
      const fields = Array.isArray(error?.details)
        ? (error.details as { field?: unknown; message?: unknown }[])
            .filter((d) => typeof d.field === "string" && typeof d.message === "string")
            .map((d) => ({ field: String(d.field), message: String(d.message) }))
        : [];
      throw new AdminError(res.status, error?.code ?? "http_error", error?.message ?? `${res.status} ${res.statusText}`, fields);
    }
    return data;
  } finally {
    clearTimeout(timer);
  }
}

/** Whether a token is accepted: an admin route on a block id that cannot exist answers
 * 404 to a good token and 401/403 to a bad one, and changes nothing. */
export async function checkToken(token: string): Promise<boolean> {
  try {
    await adminFetch(`/api/code-blocks/${"0".repeat(24)}/sessions`, { token });
    return true;
  } catch (err) {
    if (err instanceof AdminError && err.status === 404) return true;
    if (err instanceof AdminError && (err.status === 401 || err.status === 403)) return false;
    throw err;
  }
}
