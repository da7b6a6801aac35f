// The gateway's per-connection rate limit, mirrored on the client: every frame a
// client sends costs a token, `rate` tokens come back per second up to `burst`, and a
// frame without a token closes the socket with 4429 (services/gateway/room.py). The
// client keeps below it with some margin, holding (and merging) what it cannot send yet.
export class TokenBucket {
  private tokens: number;

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    private stamp: number,
  ) {
    this.tokens = burst;
  }

  private refill(now: number): void {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.stamp) / 1000) * this.rate);
    this.stamp = now;
  }

  /** Take a token if there is one. */
  take(now: number): boolean {
    this.refill(now);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Spend a token even without one (frames that cannot wait: the sync handshake). */
  spend(now: number): void {
    this.refill(now);
    this.tokens -= 1;
  }

  /** Milliseconds until a token is there. */
  waitMs(now: number): number {
    this.refill(now);
    return this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) / this.rate) * 1000);
  }
}

/** The client's share of the gateway's limits: 80 % of the rate, half the burst (the
 * network may bunch frames up, and the gateway's clock is not ours). */
export function clientBucket(maxPerSecond: number, burst: number, now: number): TokenBucket {
  return new TokenBucket(Math.max(1, maxPerSecond * 0.8), Math.max(1, Math.floor(burst / 2)), now);
}
