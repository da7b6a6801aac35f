/**
 * Exponential backoff with "equal jitter": half the window is fixed, half random,
 * so a fleet of clients that lost the same gateway does not come back in lockstep.
 */
export function backoffDelay(
  attempt: number,
  random: () => number = Math.random,
  baseMs = 300,
  maxMs = 10_000,
): number {
  const window = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt));
  return Math.round(window / 2 + random() * (window / 2));
}
