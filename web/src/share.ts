// Getting text out of the page: the clipboard (with a fallback for browsers that
// refuse it) and a file download. The code in a room belongs to the people in it.

export async function copyText(text: string): Promise<boolean> {
  try {
    if (navigator.clipboard?.writeText) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    /* refused (no permission, not focused): try the old way */
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}

const EXTENSIONS: Record<string, string> = {
  javascript: "js",
  js: "js",
  typescript: "ts",
  ts: "ts",
  python: "py",
  py: "py",
};

export function fileName(title: string, language: string): string {
  const base = title.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "") || "code";
  return `${base.slice(0, 60)}.${EXTENSIONS[language.toLowerCase()] ?? "txt"}`;
}

export function download(text: string, name: string): void {
  const url = URL.createObjectURL(new Blob([text], { type: "text/plain;charset=utf-8" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** The code of a room that closed, kept for the lobby (sessionStorage). */
export interface KeptCode {
  title: string;
  language: string;
  text: string;
}

const KEPT_KEY = "coderoom.keptCode";

export function keepCode(code: KeptCode): void {
  try {
    sessionStorage.setItem(KEPT_KEY, JSON.stringify(code));
  } catch {
    /* storage disabled or full: the copy/download buttons were offered before */
  }
}

export function takeKeptCode(): KeptCode | null {
  try {
    const raw = sessionStorage.getItem(KEPT_KEY);
    sessionStorage.removeItem(KEPT_KEY);
    const v = JSON.parse(raw ?? "null") as Partial<KeptCode> | null;
    if (v && typeof v.text === "string" && typeof v.title === "string") {
      return { title: v.title, language: String(v.language ?? "text"), text: v.text };
    }
  } catch {
    /* nothing kept */
  }
  return null;
}
