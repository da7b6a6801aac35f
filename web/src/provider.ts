// A small y-websocket client for the room socket. Unlike y-websocket's provider it
// builds a fresh URL per attempt (gateway rotation, resume token), understands the
// type-100 control events and the close-code registry, and replaces its Y.Doc when the
// room's session changes so stale text never leaks into a new session.
import * as decoding from "lib0/decoding";
import * as encoding from "lib0/encoding";
import * as awarenessProtocol from "y-protocols/awareness";
import * as syncProtocol from "y-protocols/sync";
import * as Y from "yjs";

import { backoffDelay } from "./backoff";
import { clientBucket, type TokenBucket } from "./bucket";
import {
  CLOSE,
  type ControlEvent,
  encodeControl,
  MESSAGE_AUTH,
  MESSAGE_AWARENESS,
  MESSAGE_CONTROL,
  MESSAGE_QUERY_AWARENESS,
  MESSAGE_SYNC,
  readAuth,
  readControl,
  shouldReconnect,
} from "./protocol";

const ANNOUNCE_MAX_PEERS = 40;

export type Status = "connecting" | "connected" | "reconnecting" | "offline" | "closed";

/** Close codes that refuse one update (too big), not the client: drop what was not
 * shared and come back, rather than re-send it on every reconnect. */
export const REFUSED_CODES: readonly number[] = [1009, CLOSE.DOC_TOO_LARGE];

export interface ProviderOptions {
  bases: string[];
  startIndex: number;
  blockId: string;
  clientId: string;
  watcher: boolean;
  token: () => string | null;
  /** How long to wait for `welcome` before syncing anyway (a stock server sends none). */
  welcomeTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** Silence after which the gateway is probed (query-awareness), and given up on. */
  probeAfterMs?: number;
  deadAfterMs?: number;
  /** The gateways' heartbeat interval (/api/config): sets the two silences above. */
  heartbeatMs?: number | null;
  /** The gateways' per-connection rate limit (/api/config): frames are paced below it. */
  rate?: { perSecond: number; burst: number };
}

export interface ProviderEvents {
  status(status: Status, info: { base: string; attempt: number; delayMs?: number }): void;
  control(ev: ControlEvent): void;
  /** The Y.Doc was replaced (new session): rebind the editor to `provider.doc`. */
  docReset(): void;
  denied(reason: string): void;
  /** Closed with a do-not-reconnect code (4400–4499). */
  terminal(code: number, reason: string): void;
  /** The gateway refused an update (too large): what was not shared is dropped. */
  refused(code: number): void;
}

export class RoomProvider {
  doc: Y.Doc;
  awareness: awarenessProtocol.Awareness;
  session: string | null = null;
  base: string;

  private ws: WebSocket | null = null;
  private index: number;
  private attempt = 0;
  private welcomed = false;
  private pending: Uint8Array[] = [];
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private welcomeTimer: ReturnType<typeof setTimeout> | undefined;
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  private livenessTimer: ReturnType<typeof setInterval> | undefined;
  private lastHeard = 0;
  private lastProbe = 0;
  private announceTimer: ReturnType<typeof setTimeout> | undefined;
  private destroyed = false;
  private unsent = 0;
  private lastLocal = false;
  private bucket: TokenBucket | null = null;
  private held: Uint8Array | null = null; // doc updates waiting for a token, merged
  private heldAwareness = false;
  private flushTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly opts: ProviderOptions,
    private readonly events: ProviderEvents,
  ) {
    if (opts.bases.length === 0) throw new Error("no gateway base URL");
    this.index = ((opts.startIndex % opts.bases.length) + opts.bases.length) % opts.bases.length;
    this.base = opts.bases[this.index];
    this.doc = new Y.Doc();
    this.awareness = new awarenessProtocol.Awareness(this.doc);
    this.attachDoc();
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    window.addEventListener("pagehide", this.onPageHide);
  }

  /** Bytes of edits made while disconnected (they go out as one message on reconnect). */
  get unsentBytes(): number {
    return this.unsent;
  }

  /** Whether the last change to the document was made here (not received). */
  get lastChangeWasLocal(): boolean {
    return this.lastLocal;
  }

  get connected(): boolean {
    return this.ws?.readyState === WebSocket.OPEN && this.welcomed;
  }

  connect(): void {
    if (this.destroyed || this.ws) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.base = this.opts.bases[this.index];
    const url = this.url();
    this.events.status(this.attempt === 0 ? "connecting" : "reconnecting", {
      base: this.base,
      attempt: this.attempt,
    });
    let ws: WebSocket;
    try {
      ws = new WebSocket(url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.welcomed = false;
    this.pending = [];
    this.connectTimer = setTimeout(() => {
      if (ws.readyState === WebSocket.CONNECTING) ws.close();
    }, this.opts.connectTimeoutMs ?? 8000);
    ws.onopen = () => {
      clearTimeout(this.connectTimer);
      const rate = this.opts.rate;
      this.bucket = rate ? clientBucket(rate.perSecond, rate.burst, Date.now()) : null;
      this.lastHeard = Date.now();
      this.watchLiveness(ws);
      this.welcomeTimer = setTimeout(() => this.startSync(), this.opts.welcomeTimeoutMs ?? 5000);
    };
    ws.onmessage = (event: MessageEvent) => {
      if (this.ws !== ws || !(event.data instanceof ArrayBuffer)) return;
      this.lastHeard = Date.now();
      this.receive(new Uint8Array(event.data));
    };
    ws.onclose = (event: CloseEvent) => {
      if (this.ws !== ws) return;
      this.onClosed(event.code, event.reason);
    };
  }

  destroy(): void {
    this.destroyed = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.welcomeTimer);
    clearTimeout(this.connectTimer);
    clearTimeout(this.announceTimer);
    clearTimeout(this.flushTimer);
    clearInterval(this.livenessTimer);
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    window.removeEventListener("pagehide", this.onPageHide);
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000);
    this.detachDoc();
    this.awareness.destroy();
  }

  private url(): string {
    // heartbeat=1: the gateway sends us a heartbeat event every few seconds (liveness).
    const q = new URLSearchParams({ client: this.opts.clientId, heartbeat: "1" });
    if (this.opts.watcher) q.set("role", "watcher");
    const token = this.opts.token();
    if (token) q.set("token", token);
    const base = this.base.replace(/\/+$/, "");
    return `${base}/${encodeURIComponent(this.opts.blockId)}?${q.toString()}`;
  }

  private receive(data: Uint8Array): void {
    const dec = decoding.createDecoder(data);
    let type: number;
    try {
      type = decoding.readVarUint(dec);
    } catch {
      return;
    }
    if (type === MESSAGE_CONTROL) {
      const ev = readControl(dec);
      if (!ev) return;
      if (ev.type === "welcome") this.onWelcome(ev.session);
      this.events.control(ev);
      return;
    }
    // Sync and awareness wait for `welcome`: a new session must reset the doc first.
    if (!this.welcomed) {
      this.pending.push(data);
      return;
    }
    try {
      this.handle(type, dec);
    } catch (err) {
      console.warn("coderoom: bad frame from the gateway", err);
    }
  }

  private handle(type: number, dec: decoding.Decoder): void {
    switch (type) {
      case MESSAGE_SYNC: {
        const enc = encoding.createEncoder();
        encoding.writeVarUint(enc, MESSAGE_SYNC);
        syncProtocol.readSyncMessage(dec, enc, this.doc, this);
        if (encoding.length(enc) > 1) this.send(encoding.toUint8Array(enc));
        break;
      }
      case MESSAGE_AWARENESS:
        awarenessProtocol.applyAwarenessUpdate(
          this.awareness,
          decoding.readVarUint8Array(dec),
          this,
        );
        break;
      case MESSAGE_QUERY_AWARENESS:
        // Only our own state: the gateway refuses awareness of other clients.
        if (this.awareness.getLocalState() !== null) this.sendAwareness([this.doc.clientID]);
        break;
      case MESSAGE_AUTH: {
        const reason = readAuth(dec);
        if (reason !== null) this.events.denied(reason);
        break;
      }
      default:
        break;
    }
  }

  private onWelcome(session: string): void {
    if (this.session !== null && session && session !== this.session) this.resetDoc();
    if (session) this.session = session;
    this.attempt = 0;
    this.startSync();
  }

  private startSync(): void {
    clearTimeout(this.welcomeTimer);
    if (this.welcomed || !this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    this.welcomed = true;
    this.unsent = 0; // our step 2 answers the gateway's step 1 with all of it
    this.events.status("connected", { base: this.base, attempt: 0 });
    const step1 = encoding.createEncoder();
    encoding.writeVarUint(step1, MESSAGE_SYNC);
    syncProtocol.writeSyncStep1(step1, this.doc);
    this.send(encoding.toUint8Array(step1));
    this.bumpAwareness();
    const queued = this.pending;
    this.pending = [];
    for (const data of queued) this.receive(data);
  }

  // A gateway that hangs (stopped, partitioned) or a network that silently drops
  // everything never closes the socket. A gateway sends a heartbeat every
  // `heartbeatMs`; after a silence longer than that, ask it for the awareness states
  // (it always answers, our own state is there); if it still says nothing, drop the
  // socket and try again (the next gateway). Without a known heartbeat (an older
  // gateway), the silences are long, as awareness renewals are every 15 s.
  private watchLiveness(ws: WebSocket): void {
    clearInterval(this.livenessTimer);
    const hb = this.opts.heartbeatMs;
    const probeAfter = this.opts.probeAfterMs ?? (hb ? hb + 1500 : 15_000);
    const deadAfter = this.opts.deadAfterMs ?? (hb ? 2 * hb + 1500 : 35_000);
    this.livenessTimer = setInterval(() => {
      if (this.ws !== ws) return;
      const now = Date.now();
      const silent = now - this.lastHeard;
      if (silent >= deadAfter) {
        ws.onclose = null;
        ws.onmessage = null;
        ws.close();
        this.onClosed(4000, "gateway silent");
      } else if (silent >= probeAfter && this.welcomed && now - this.lastProbe >= probeAfter) {
        this.lastProbe = now;
        const enc = encoding.createEncoder();
        encoding.writeVarUint(enc, MESSAGE_QUERY_AWARENESS);
        this.send(encoding.toUint8Array(enc));
      }
    }, Math.min(1000, probeAfter / 3));
  }

  private onClosed(code: number, reason: string): void {
    clearInterval(this.livenessTimer);
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    // Held updates are in the doc: they go out with the step 2 of the next socket.
    if (this.held) this.unsent += this.held.length;
    this.held = null;
    this.heldAwareness = false;
    clearTimeout(this.welcomeTimer);
    clearTimeout(this.connectTimer);
    this.ws = null;
    this.welcomed = false;
    this.pending = [];
    this.dropRemoteAwareness();
    if (this.destroyed) return;
    if (REFUSED_CODES.includes(code)) {
      // Our last update was refused; on reconnect our step 2 would carry it again.
      // Start from the room's copy instead: what was not shared is dropped, once.
      this.events.refused(code);
      this.resetDoc();
      this.scheduleReconnect();
      return;
    }
    if (!shouldReconnect(code)) {
      this.events.status("closed", { base: this.base, attempt: this.attempt });
      this.events.terminal(code, reason);
      return;
    }
    // Leave a gateway that dropped us: the next attempt goes to the next base.
    this.index = (this.index + 1) % this.opts.bases.length;
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    this.ws = null;
    const delayMs = backoffDelay(this.attempt);
    this.attempt += 1;
    this.events.status(navigator.onLine === false ? "offline" : "reconnecting", {
      base: this.opts.bases[this.index],
      attempt: this.attempt,
      delayMs,
    });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delayMs);
  }

  private readonly onOnline = (): void => {
    if (!this.ws && !this.destroyed && this.retryTimer !== undefined) {
      this.attempt = 0;
      this.connect();
    }
  };

  // The browser knows at once that the network is gone, while the socket usually just
  // stalls: say so now, drop the socket, and come back on "online" (or by backoff).
  private readonly onOffline = (): void => {
    const ws = this.ws;
    if (this.destroyed) return;
    if (!ws) {
      if (this.retryTimer !== undefined) this.events.status("offline", { base: this.base, attempt: this.attempt });
      return;
    }
    ws.onclose = null;
    ws.onmessage = null;
    ws.onopen = null;
    try {
      ws.close();
    } catch {
      /* already closing */
    }
    this.onClosed(1006, "offline");
  };

  private readonly onPageHide = (): void => {
    // Tell the others our caret is gone before the socket drops.
    if (this.ws?.readyState === WebSocket.OPEN) {
      awarenessProtocol.removeAwarenessStates(this.awareness, [this.doc.clientID], "local");
    }
  };

  /** Send a control message (type 100) to the gateway; false when not connected. */
  sendControl(ev: object): boolean {
    if (this.ws?.readyState !== WebSocket.OPEN || !this.welcomed) return false;
    this.send(encodeControl(ev));
    return true;
  }

  /** Send a frame that cannot wait (the sync handshake, a probe, our leaving). */
  private send(data: Uint8Array): void {
    if (this.ws?.readyState !== WebSocket.OPEN) return;
    this.bucket?.spend(Date.now());
    this.ws.send(data as Uint8Array<ArrayBuffer>);
  }

  /** Take a token for a frame that can wait (an edit, a caret move). */
  private takeToken(): boolean {
    return this.bucket === null || this.bucket.take(Date.now());
  }

  private write(data: Uint8Array): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(data as Uint8Array<ArrayBuffer>);
  }

  private awarenessFrame(clients: number[]): Uint8Array {
    const enc = encoding.createEncoder();
    encoding.writeVarUint(enc, MESSAGE_AWARENESS);
    encoding.writeVarUint8Array(enc, awarenessProtocol.encodeAwarenessUpdate(this.awareness, clients));
    return encoding.toUint8Array(enc);
  }

  private sendAwareness(clients: number[]): void {
    this.send(this.awarenessFrame(clients));
  }

  private updateFrame(update: Uint8Array): Uint8Array {
    const enc = encoding.createEncoder();
    encoding.writeVarUint(enc, MESSAGE_SYNC);
    syncProtocol.writeUpdate(enc, update);
    return encoding.toUint8Array(enc);
  }

  // Past the rate the gateway allows, edits wait (merged into one update) and only the
  // latest caret is sent, instead of the socket being closed with 4429.
  private scheduleFlush(): void {
    if (this.flushTimer !== undefined || !this.bucket) return;
    this.flushTimer = setTimeout(this.flush, Math.max(10, this.bucket.waitMs(Date.now())));
  }

  private readonly flush = (): void => {
    this.flushTimer = undefined;
    if (!this.connected) return;
    if (this.held && this.takeToken()) {
      this.write(this.updateFrame(this.held));
      this.held = null;
    }
    if (this.heldAwareness && !this.held && this.takeToken()) {
      this.heldAwareness = false;
      if (this.awareness.getLocalState() !== null) this.write(this.awarenessFrame([this.doc.clientID]));
    }
    if (this.held || this.heldAwareness) this.scheduleFlush();
  };

  /** Publish our state again with a higher clock: gateways (like y-protocols) drop a
   * state whose clock they have seen, so a plain re-send would be taken for an echo. */
  private bumpAwareness(): void {
    const state = this.awareness.getLocalState();
    if (state !== null) this.awareness.setLocalState(state); // -> onAwarenessUpdate sends it
  }

  private dropRemoteAwareness(): void {
    const others = [...this.awareness.getStates().keys()].filter((c) => c !== this.doc.clientID);
    if (others.length) awarenessProtocol.removeAwarenessStates(this.awareness, others, this);
  }

  // --- the document ----------------------------------------------------------------

  private readonly onDocUpdate = (update: Uint8Array, origin: unknown): void => {
    this.lastLocal = origin !== this;
    // Edits made while offline stay in the doc and reach the server through sync step 2.
    if (origin === this) return;
    if (!this.connected) {
      this.unsent += update.length;
      return;
    }
    if (this.held === null && this.takeToken()) {
      this.write(this.updateFrame(update));
    } else {
      this.held = this.held ? Y.mergeUpdates([this.held, update]) : update;
      this.scheduleFlush();
    }
  };

  private readonly onAwarenessUpdate = (
    change: { added: number[]; updated: number[]; removed: number[] },
    origin: unknown,
  ): void => {
    if (!this.connected) return;
    if (origin !== this) {
      const self = this.doc.clientID;
      const clients = [...change.added, ...change.updated, ...change.removed];
      const onlyOurs = clients.length === 1 && clients[0] === self && !change.removed.includes(self);
      if (!onlyOurs) {
        this.sendAwareness(clients);
      } else if (!this.heldAwareness && !this.held && this.takeToken()) {
        this.write(this.awarenessFrame(clients));
      } else {
        this.heldAwareness = true;
        this.scheduleFlush();
      }
    } else if (change.added.length && this.awareness.getStates().size <= ANNOUNCE_MAX_PEERS) {
      this.announceSoon();
    }
  };

  // Someone new appeared: tell them who we are now rather than at our next renewal
  // (up to 15 s later), since a gateway may not have our state when they join.
  private announceSoon(): void {
    if (this.announceTimer !== undefined) return;
    this.announceTimer = setTimeout(
      () => {
        this.announceTimer = undefined;
        if (this.connected) this.bumpAwareness();
      },
      150 + Math.random() * 350,
    );
  }

  private attachDoc(): void {
    this.doc.on("update", this.onDocUpdate);
    this.awareness.on("update", this.onAwarenessUpdate);
  }

  private detachDoc(): void {
    this.doc.off("update", this.onDocUpdate);
    this.awareness.off("update", this.onAwarenessUpdate);
  }

  private resetDoc(): void {
    const local = this.awareness.getLocalState();
    this.detachDoc();
    this.awareness.destroy();
    this.doc.destroy();
    this.doc = new Y.Doc();
    this.awareness = new awarenessProtocol.Awareness(this.doc);
    this.unsent = 0;
    if (local?.user) this.awareness.setLocalStateField("user", local.user);
    this.attachDoc();
    this.events.docReset();
  }
}
