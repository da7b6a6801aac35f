// Interop test: stock Yjs clients (y-websocket 3.x WebsocketProvider over the `ws`
// package) against two coderoom gateway processes sharing one Redis.
//
// Configuration comes from the environment (set by tests/interop/test_yjs_interop.py):
//   INTEROP_GATEWAY_A, INTEROP_GATEWAY_B  room-socket base URLs, ws://HOST:PORT/ws/rooms
//   INTEROP_BLOCK_ID                      a block whose room is idle (the first joiner is mentor)
//   INTEROP_TEMPLATE                      the block's template code
//   INTEROP_GRACE_SECONDS                 the gateways' MENTOR_GRACE_SECONDS
//   INTEROP_SEED                          optional PRNG seed (printed in the summary)
//   CODEROOM_TIME_FACTOR                  multiplies every deadline (default 1)
//
// The providers are used exactly as an application would use them. What they receive is
// observed without changing their behaviour: the WebSocket polyfill handed to them is the
// `ws` class with one extra 'message'/'close' listener (a recorder), and console.warn /
// console.error are captured (y-websocket reports permission-denied and unknown message
// types there). One raw `ws` client checks the bytes of the auth reply and the removal of
// an abruptly disconnected client's awareness.
//
// The scenario (block idle at the start; A and B are two gateways on one Redis):
//  1. mentor joins on A first; 2. student-a (A), student-b (B), watcher (B, role=watcher)
//  join; all sync to the template, roles come from `welcome`; 3. the students make
//  INTEROP_INSERTS (50) inserts each at random positions, interleaved, every 4th round in
//  the same tick; all converge to one text holding every insert; 4. a late joiner syncs to
//  it; 5./6. the mentor's and the watcher's edits get [2, 0, reason] and reach nobody;
//  7. raw client: exact bytes of that reply; 8. awareness 'Zoë 🎉' from student-a reaches
//  everyone on both gateways and nobody is disconnected for the echoes stock providers
//  send; 9. a raw client's awareness vanishes when its TCP connection is dropped; 10. it
//  vanishes when student-a's provider is destroyed; 11. the mentor leaves: after
//  MENTOR_GRACE_SECONDS everyone gets room-closed and 4410, and no provider reconnects;
//  12. the next joiner is mentor of a new session with the template; finally, the type-100
//  control frames caused no exception and no error other than y-websocket's own
//  'Unable to compute message' log line (one per frame).
//
// Prints one JSON summary line on stdout; exits 0 only if every check passed.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import * as awarenessProtocol from 'y-protocols/awareness'
import { readFileSync } from 'node:fs'

const env = process.env
const GW_A = required('INTEROP_GATEWAY_A')
const GW_B = required('INTEROP_GATEWAY_B')
const BLOCK_ID = required('INTEROP_BLOCK_ID')
const TEMPLATE = required('INTEROP_TEMPLATE')
const GRACE = Number(env.INTEROP_GRACE_SECONDS || '1.5')
const FACTOR = Number(env.CODEROOM_TIME_FACTOR || '1') || 1
const SEED = Number(env.INTEROP_SEED || Math.floor(Math.random() * 2 ** 31))
const INSERTS_PER_STUDENT = Number(env.INTEROP_INSERTS || '50')
const AWARENESS_NAME = 'Zoë 🎉'
const WORKAROUND_ECHO = env.INTEROP_WORKAROUND_AWARENESS_ECHO === '1'
const TOKEN_RE = /⟪[ab]\d{3}⟫/gu

function required (name) {
  const value = env[name]
  if (value === undefined || value === '') {
    process.stderr.write(`interop: ${name} is not set\n`)
    process.exit(2)
  }
  return value
}

// --- bookkeeping -----------------------------------------------------------------------
const started = Date.now()
const checks = []
const notes = []
const stats = {}
const uncaught = []
const consoleWarn = []
const consoleError = []

process.on('uncaughtException', (err) => { uncaught.push(String(err && err.stack || err)) })
process.on('unhandledRejection', (err) => { uncaught.push('unhandled rejection: ' + String(err && err.stack || err)) })

const realWarn = console.warn.bind(console)
const realError = console.error.bind(console)
console.warn = (...args) => {
  consoleWarn.push({ t: Date.now(), text: args.map(String).join(' ') })
  realWarn('[console.warn]', ...args)
}
console.error = (...args) => {
  consoleError.push({ t: Date.now(), text: args.map(String).join(' ') })
  realError('[console.error]', ...args)
}
const log = (...args) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(2)}s] ${args.join(' ')}\n`)

class CheckFailed extends Error {}

function check (name, ok, detail = {}) {
  checks.push({ name, ok: Boolean(ok), detail })
  log(ok ? 'PASS' : 'FAIL', name, ok ? '' : JSON.stringify(detail))
  if (!ok) throw new CheckFailed(`${name}: ${JSON.stringify(detail)}`)
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const scaled = (seconds) => seconds * 1000 * FACTOR

/** Poll `predicate` every 10 ms until truthy; false after `seconds` (scaled). */
async function until (predicate, seconds) {
  const deadline = Date.now() + scaled(seconds)
  for (;;) {
    let value = false
    try { value = predicate() } catch { value = false }
    if (value) return value
    if (Date.now() > deadline) return false
    await sleep(10)
  }
}

// mulberry32: a small seeded PRNG, so a failing interleaving can be replayed.
function prng (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
const rand = prng(SEED)

// --- frames ----------------------------------------------------------------------------
function bytesOf (data) {
  if (data instanceof ArrayBuffer) return new Uint8Array(data)
  if (Array.isArray(data)) return new Uint8Array(Buffer.concat(data))
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
}

/** Decode what matters to the test: control events (100) and auth (2) frames. */
function decodeFrame (u8) {
  const decoder = decoding.createDecoder(u8)
  const type = decoding.readVarUint(decoder)
  if (type === 100) {
    return { type, event: JSON.parse(decoding.readVarString(decoder)) }
  }
  if (type === 2) {
    const sub = decoding.readVarUint(decoder)
    const reason = decoding.readVarString(decoder)
    return { type, sub, reason, exact: decoding.hasContent(decoder) === false }
  }
  return { type }
}

function newRecorder (name) {
  return {
    name,
    sockets: 0, // WebSocket objects the provider created (1 + reconnects)
    frames: 0,
    control: [], // decoded control events, in order
    auth: [], // decoded auth frames
    closes: [], // {code, reason, t} as seen by the socket
    statuses: [], // provider 'status' events
    connectionCloses: [], // provider 'connection-close' events
    terminal: [], // provider 'closed' events (terminal close, y-websocket >= 3)
    frameErrors: [],
    role () {
      const welcome = this.control.find((e) => e.type === 'welcome')
      return welcome ? welcome.role : undefined
    }
  }
}

/** The `ws` class plus a passive recorder; the provider sees an ordinary WebSocket. */
function recordingWebSocket (rec) {
  return class RecordingWebSocket extends WebSocket {
    constructor (url, protocols) {
      super(url, protocols)
      rec.sockets += 1
      this.on('message', (data) => {
        rec.frames += 1
        try {
          const frame = decodeFrame(bytesOf(data))
          if (frame.type === 100 && !rec.gone) rec.control.push(frame.event)
          if (frame.type === 2) rec.auth.push(frame)
        } catch (err) {
          rec.frameErrors.push(String(err))
        }
      })
      this.on('close', (code, reason) => {
        rec.closes.push({ code, reason: reason.toString(), t: Date.now(), controlBefore: rec.control.length })
      })
    }
  }
}

// --- stock clients ---------------------------------------------------------------------
const clients = []

function join (name, serverUrl, { role } = {}) {
  const doc = new Y.Doc()
  const rec = newRecorder(name)
  const params = { client: name }
  if (role) params.role = role
  const provider = new WebsocketProvider(serverUrl, BLOCK_ID, doc, {
    WebSocketPolyfill: recordingWebSocket(rec),
    disableBc: true,
    params
  })
  if (WORKAROUND_ECHO) forwardOwnAwarenessOnly(provider)
  provider.on('status', (event) => rec.statuses.push({ status: event.status, t: Date.now() }))
  provider.on('connection-close', (event) => {
    rec.connectionCloses.push({ code: event ? event.code : null, t: Date.now() })
  })
  provider.on('closed', (event) => rec.terminal.push({ code: event.code, reason: event.reason, t: Date.now() }))
  const client = { name, serverUrl, doc, text: doc.getText('code'), provider, rec, destroyed: false }
  clients.push(client)
  return client
}

/**
 * Diagnostic only (INTEROP_WORKAROUND_AWARENESS_ECHO=1; never set by the pytest test):
 * a stock provider forwards every awareness change it applies, remote ones included
 * (`_awarenessUpdateHandler` ignores the origin). This makes it forward only its own
 * client's entries, to see how the rest of the scenario fares when a gateway refuses
 * such echoes.
 */
function forwardOwnAwarenessOnly (provider) {
  const own = provider.doc.clientID
  const original = provider._awarenessUpdateHandler
  provider.awareness.off('update', original)
  provider._awarenessUpdateHandler = ({ added, updated, removed }, origin) => {
    const mine = (ids) => ids.filter((id) => id === own)
    const changes = { added: mine(added), updated: mine(updated), removed: mine(removed) }
    if (changes.added.length + changes.updated.length + changes.removed.length > 0) original(changes, origin)
  }
  provider.awareness.on('update', provider._awarenessUpdateHandler)
}

function destroy (client) {
  if (client.destroyed) return
  client.destroyed = true
  // Frames that still arrive on the closing socket never reach the destroyed provider
  // (so it logs nothing for them): they are not counted as delivered to it.
  client.rec.gone = true
  client.provider.destroy()
  client.provider.awareness.destroy()
}

const connections = (list) => Object.fromEntries(list.map((c) => [c.name, {
  gw: gatewayOf(c), connected: c.provider.wsconnected, sockets: c.rec.sockets,
  closes: c.rec.closes.map(({ code, reason }) => ({ code, reason }))
}]))
const textOf = (c) => c.text.toString()
const gatewayOf = (c) => (c.serverUrl === GW_A ? 'A' : 'B')

function insertToken (client, letter, i) {
  const token = `⟪${letter}${String(i).padStart(3, '0')}⟫`
  const str = textOf(client)
  let pos = Math.floor(rand() * (str.length + 1))
  // never inside an earlier token (so every token stays contiguous), nor inside a
  // surrogate pair
  for (const m of str.matchAll(TOKEN_RE)) {
    if (pos > m.index && pos < m.index + m[0].length) { pos = m.index + m[0].length; break }
  }
  const code = str.charCodeAt(pos - 1)
  if (code >= 0xd800 && code <= 0xdbff) pos += 1
  client.text.insert(pos, token)
  return token
}

// --- the scenario ----------------------------------------------------------------------
async function scenario () {
  log(`block ${BLOCK_ID}; A=${GW_A} B=${GW_B}; grace ${GRACE}s; seed ${SEED}`)
  if (WORKAROUND_ECHO) notes.push('DIAGNOSTIC RUN: providers patched to forward only their own awareness (not a stock client)')

  // 1. The mentor joins first, on gateway A.
  const mentor = join('mentor', GW_A)
  const mentorSynced = await until(() => mentor.provider.synced && textOf(mentor) === TEMPLATE && mentor.rec.role(), 15)
  check('mentor (first to join, gateway A) syncs to the template', mentorSynced && mentor.rec.role() === 'mentor', {
    synced: mentor.provider.synced, role: mentor.rec.role(), textMatches: textOf(mentor) === TEMPLATE
  })

  // 2. Two students (one per gateway) and a watcher (gateway B).
  const studentA = join('student-a', GW_A)
  const studentB = join('student-b', GW_B)
  const watcher = join('watcher', GW_B, { role: 'watcher' })
  const four = [mentor, studentA, studentB, watcher]
  const allSynced = await until(() => four.every((c) => c.provider.synced && textOf(c) === TEMPLATE && c.rec.role()), 15)
  check('all four stock clients on both gateways sync to the template', allSynced, {
    clients: four.map((c) => ({ name: c.name, gw: gatewayOf(c), synced: c.provider.synced, role: c.rec.role(), textMatches: textOf(c) === TEMPLATE }))
  })
  check('roles decided by the server: mentor, student, student, watcher',
    four.map((c) => c.rec.role()).join() === 'mentor,student,student,watcher',
    { roles: Object.fromEntries(four.map((c) => [c.name, c.rec.role()])) })

  // 3. Concurrent edits: interleaved random inserts, a quarter of them in the same tick.
  const tokens = []
  let simultaneous = 0
  const editStart = Date.now()
  for (let i = 0; i < INSERTS_PER_STUDENT; i++) {
    if (i % 4 === 0) {
      // both in the same tick: neither can have seen the other's insert
      tokens.push(insertToken(studentA, 'a', i), insertToken(studentB, 'b', i))
      simultaneous += 1
    } else {
      const [ta, tb] = await Promise.all([
        sleep(rand() * 12).then(() => insertToken(studentA, 'a', i)),
        sleep(rand() * 12).then(() => insertToken(studentB, 'b', i))
      ])
      tokens.push(ta, tb)
    }
  }
  const editMs = Date.now() - editStart
  const complete = (c) => {
    const text = textOf(c)
    const found = text.match(TOKEN_RE) || []
    return found.length === tokens.length && new Set(found).size === tokens.length
  }
  const converged = await until(() => four.every(complete) && new Set(four.map(textOf)).size === 1, 20)
  const finalText = textOf(studentA)
  stats.edits = {
    inserts: tokens.length, simultaneousRounds: simultaneous, editMs, convergeMs: Date.now() - editStart - editMs, textLength: finalText.length
  }
  check(`${tokens.length} concurrent inserts (${simultaneous} same-tick rounds) converge on all clients, every insert kept`, converged, {
    lengths: Object.fromEntries(four.map((c) => [c.name, textOf(c).length])),
    tokensFound: Object.fromEntries(four.map((c) => [c.name, (textOf(c).match(TOKEN_RE) || []).length])),
    distinctTexts: new Set(four.map(textOf)).size
  })
  check('converged text is the template plus exactly the inserted tokens',
    finalText.replace(TOKEN_RE, '') === TEMPLATE && tokens.every((t) => finalText.includes(t)), {})

  // 4. A late joiner (gateway A) gets the converged document from the room state.
  const studentC = join('student-c', GW_A)
  const lateOk = await until(() => studentC.provider.synced && textOf(studentC) === finalText, 15)
  check('a late joiner syncs to the converged text', lateOk && studentC.rec.role() === 'student', {
    synced: studentC.provider.synced, role: studentC.rec.role(), length: textOf(studentC).length
  })

  // 5. The mentor's edit is refused.
  await refusedEdit(mentor, 'MENTOR-EDIT ', studentA, [studentA, studentB, watcher, studentC], 'mentors are read-only')

  // 6. The watcher's edit is refused.
  await refusedEdit(watcher, 'WATCHER-EDIT ', studentB, [mentor, studentA, studentB, studentC], 'watchers are read-only')

  // 7. Raw client: the exact bytes of the auth reply.
  const raw = await rawWatcherAuth()

  // 8. Awareness with non-ASCII content crosses gateways, and nobody is disconnected
  //    for forwarding it (a stock provider re-broadcasts every awareness change it
  //    applies, other clients' included).
  const everyone = [mentor, studentA, studentB, watcher, studentC]
  studentA.provider.awareness.setLocalStateField('user', { name: AWARENESS_NAME, color: '#f00' })
  const aId = studentA.doc.clientID
  const seesZoe = (c) => {
    const state = c.provider.awareness.getStates().get(aId)
    return Boolean(state && state.user && state.user.name === AWARENESS_NAME && state.user.color === '#f00')
  }
  const others = [mentor, studentB, watcher, studentC]
  // (stop waiting early if the gateway closes anyone meanwhile)
  await until(() => others.every(seesZoe) || everyone.some((c) => c.rec.closes.length > 0), 10)
  const awarenessOk = others.every(seesZoe)
  check(`awareness {user: {name: '${AWARENESS_NAME}'}} from student-a reaches the others on both gateways`, awarenessOk, {
    seen: Object.fromEntries(others.map((c) => [c.name, c.provider.awareness.getStates().get(aId) || null])),
    connections: connections(everyone)
  })
  await sleep(scaled(0.5)) // time for the echoes to travel and be judged
  check('stock clients stay connected after awareness traffic (their echoes of others\' states are accepted)',
    everyone.every((c) => c.provider.wsconnected && c.rec.closes.length === 0), { connections: connections(everyone) })

  // 9. A raw client's awareness is removed for everyone when it drops abruptly.
  await ghostAwareness(raw, everyone)

  // 10. Destroying student-a's provider removes its awareness everywhere.
  destroy(studentA)
  const remaining = [mentor, studentB, watcher, studentC]
  const gone = await until(() => remaining.every((c) => !c.provider.awareness.getStates().has(aId)), 10)
  check("student-a's awareness disappears on both gateways when its provider is destroyed", gone, {
    stillSeenBy: remaining.filter((c) => c.provider.awareness.getStates().has(aId)).map((c) => c.name)
  })

  // 11. The mentor leaves; after the grace the room closes with 4410 and stock clients
  //     stay closed.
  const stayers = [studentB, watcher, studentC]
  const socketsBefore = Object.fromEntries(stayers.map((c) => [c.name, c.rec.sockets]))
  const left = Date.now()
  destroy(mentor)
  const closedOk = await until(() => stayers.every((c) => c.rec.terminal.length > 0), GRACE + 15)
  const closeMs = Date.now() - left
  const detail = Object.fromEntries(stayers.map((c) => [c.name, {
    gw: gatewayOf(c),
    socketClose: c.rec.closes.map((x) => x.code),
    connectionClose: c.rec.connectionCloses.map((x) => x.code),
    terminal: c.rec.terminal,
    roomClosedEvent: c.rec.control.find((e) => e.type === 'room-closed') || null,
    afterMs: c.rec.terminal.length ? c.rec.terminal[0].t - left : null
  }]))
  stats.roomClose = { graceSeconds: GRACE, closedAfterMs: closeMs, clients: detail }
  check('after the mentor leaves, every client (both gateways) is closed with 4410 and gets a terminal "closed" event',
    closedOk && stayers.every((c) => c.rec.terminal[0].code === 4410 && c.rec.connectionCloses.some((x) => x.code === 4410)),
    detail)
  const earliest = Math.min(...stayers.map((c) => c.rec.terminal[0].t - left))
  check(`the room closes only after MENTOR_GRACE_SECONDS (${GRACE}s)`, earliest >= GRACE * 1000 * 0.95, { earliestMs: earliest })
  check('the room-closed control event (type 100) precedes the 4410 close',
    stayers.every((c) => {
      const at = c.rec.control.findIndex((e) => e.type === 'room-closed' && e.reason)
      const close = c.rec.closes.find((x) => x.code === 4410)
      return at >= 0 && close && at < close.controlBefore
    }), detail)
  // Watch for reconnects well past y-websocket's backoff (200 ms first, 2.5 s max).
  const lastClose = Math.max(...stayers.map((c) => c.rec.terminal[0].t))
  const watchMs = Math.max(3000, scaled(3))
  await sleep(Math.max(0, lastClose + watchMs - Date.now()))
  const noReconnect = stayers.map((c) => ({
    name: c.name,
    wsconnected: c.provider.wsconnected,
    wsconnecting: c.provider.wsconnecting,
    ws: c.provider.ws === null ? null : 'present',
    shouldConnect: c.provider.shouldConnect,
    socketsCreated: c.rec.sockets - socketsBefore[c.name],
    statusesAfterClose: c.rec.statuses.filter((s) => s.t >= c.rec.terminal[0].t).map((s) => s.status)
  }))
  stats.noReconnect = { watchedMs: watchMs, clients: noReconnect }
  check(`stock clients closed with 4410 do not reconnect (watched ${watchMs} ms)`,
    noReconnect.every((c) => !c.wsconnected && !c.wsconnecting && c.ws === null && !c.shouldConnect &&
      c.socketsCreated === 0 && !c.statusesAfterClose.includes('connecting') && !c.statusesAfterClose.includes('connected')),
    { clients: noReconnect })

  // 12. The next joiner opens a new session: mentor again, code back to the template.
  const next = join('next-mentor', GW_B)
  const nextOk = await until(() => next.provider.synced && next.rec.role(), 15)
  check('after the close, the next joiner is mentor of a new session and the code is the template again',
    nextOk && next.rec.role() === 'mentor' && textOf(next) === TEMPLATE,
    { role: next.rec.role(), textMatches: textOf(next) === TEMPLATE, length: textOf(next).length })
  destroy(next)
  for (const c of clients) destroy(c)
  await sleep(100)
}

/** `author` (read-only) edits; it gets permission-denied and nobody else sees the edit. */
async function refusedEdit (author, marker, barrierAuthor, observers, expectedReason) {
  const authBefore = author.rec.auth.length
  const warnBefore = consoleWarn.length
  author.text.insert(0, marker)
  const denied = await until(() => author.rec.auth.length > authBefore &&
    consoleWarn.slice(warnBefore).some((w) => w.text.includes('Permission denied')), 10)
  const frame = author.rec.auth[authBefore] || null
  const warning = consoleWarn.slice(warnBefore).find((w) => w.text.includes('Permission denied')) || null
  check(`${author.name}'s edit is answered with auth permission-denied [2, 0, "${expectedReason}"], surfaced by the stock client`,
    denied && frame.sub === 0 && frame.reason === expectedReason && frame.exact,
    { frame, consoleWarn: warning && warning.text })
  // Barrier: a student edit sent after the refusal; once everyone has it, a forwarded
  // refused edit would have arrived too.
  const sentinel = `⟦after-${author.name}⟧`
  barrierAuthor.text.insert(textOf(barrierAuthor).length, sentinel)
  const watchers = observers.filter((c) => c !== author)
  const barrier = await until(() => [...watchers, author].every((c) => textOf(c).includes(sentinel)), 10)
  const leaked = watchers.filter((c) => textOf(c).includes(marker.trim())).map((c) => c.name)
  check(`${author.name}'s edit reaches nobody (checked after a later student edit reached everyone)`,
    barrier && leaked.length === 0 && textOf(author).includes(marker.trim()),
    { barrier, leaked, authorKeepsLocalEdit: textOf(author).includes(marker.trim()) })
  check(`${author.name}'s connection stays open after the refusal`, author.provider.wsconnected && author.rec.sockets === 1, {
    wsconnected: author.provider.wsconnected, sockets: author.rec.sockets
  })
}

/** A raw `ws` watcher on gateway B: welcome and the exact permission-denied bytes. */
async function rawWatcherAuth () {
  const url = `${GW_B}/${BLOCK_ID}?client=raw-watcher&role=watcher`
  const ws = new WebSocket(url)
  ws.binaryType = 'nodebuffer'
  const frames = []
  let closed = null
  ws.on('message', (data) => frames.push(bytesOf(data)))
  ws.on('close', (code) => { closed = code })
  ws.on('error', (err) => log('raw client error', String(err)))
  const opened = await until(() => ws.readyState === WebSocket.OPEN, 10)
  const welcomed = await until(() => frames.some((f) => f[0] === 100), 10)
  const welcome = frames.map(decodeFrame).find((f) => f.type === 100 && f.event.type === 'welcome')
  check('raw ws watcher receives welcome {role: "watcher"}', opened && welcomed && welcome && welcome.event.role === 'watcher',
    { welcome: welcome && welcome.event })

  const doc = new Y.Doc()
  doc.getText('code').insert(0, 'RAW-WATCHER-EDIT ')
  const enc = encoding.createEncoder()
  encoding.writeVarUint(enc, 0) // sync
  encoding.writeVarUint(enc, 2) // update
  encoding.writeVarUint8Array(enc, Y.encodeStateAsUpdate(doc))
  const before = frames.length
  ws.send(encoding.toUint8Array(enc))
  const got = await until(() => frames.slice(before).some((f) => f[0] === 2), 10)
  const reply = frames.slice(before).find((f) => f[0] === 2)
  const expected = encoding.createEncoder()
  encoding.writeVarUint(expected, 2)
  encoding.writeVarUint(expected, 0)
  encoding.writeVarString(expected, 'watchers are read-only')
  const expectedBytes = Buffer.from(encoding.toUint8Array(expected))
  check('raw ws: a watcher\'s Yjs update is answered with exactly [2, 0, varString("watchers are read-only")]',
    got && Buffer.from(reply).equals(expectedBytes),
    { reply: reply && Buffer.from(reply).toString('hex'), expected: expectedBytes.toString('hex') })

  return { ws, frames, closed: () => closed }
}

/**
 * Ghost awareness: announced by the raw client, then its TCP connection is dropped
 * without a close frame; the gateway must remove the state for everyone.
 */
async function ghostAwareness ({ ws, closed }, observers) {
  const ghostDoc = new Y.Doc()
  const ghost = new awarenessProtocol.Awareness(ghostDoc)
  ghost.setLocalStateField('user', { name: 'Ghost ☃', color: '#0f0' })
  const aw = encoding.createEncoder()
  encoding.writeVarUint(aw, 1)
  encoding.writeVarUint8Array(aw, awarenessProtocol.encodeAwarenessUpdate(ghost, [ghostDoc.clientID]))
  ws.send(encoding.toUint8Array(aw))
  ghost.destroy()
  const gid = ghostDoc.clientID
  const appeared = await until(() => observers.every((c) => {
    const s = c.provider.awareness.getStates().get(gid)
    return s && s.user && s.user.name === 'Ghost ☃'
  }), 10)
  check('raw client awareness reaches stock clients on both gateways', appeared, {
    seenBy: observers.filter((c) => c.provider.awareness.getStates().has(gid)).map((c) => c.name)
  })
  ws.terminate() // abrupt: no close frame, no awareness null from the client
  const removed = await until(() => observers.every((c) => !c.provider.awareness.getStates().has(gid)), 10)
  check('an abruptly dropped client\'s awareness is removed by the gateway for everyone (both gateways)', removed, {
    stillSeenBy: observers.filter((c) => c.provider.awareness.getStates().has(gid)).map((c) => c.name), closed: closed()
  })
}

function packageVersions () {
  const out = {}
  for (const name of ['yjs', 'y-websocket', 'y-protocols', 'ws']) {
    try {
      const url = new URL(`./node_modules/${name}/package.json`, import.meta.url)
      out[name] = JSON.parse(readFileSync(url, 'utf8')).version
    } catch {
      out[name] = null
    }
  }
  return out
}

// --- run --------------------------------------------------------------------------------
function controlEventSummary () {
  const stock = clients.map((c) => c.rec)
  const controlFrames = stock.reduce((n, r) => n + r.control.length, 0)
  const types = {}
  for (const r of stock) for (const e of r.control) types[e.type] = (types[e.type] || 0) + 1
  const unknownType = consoleError.filter((e) => e.text === 'Unable to compute message').length
  const otherErrors = consoleError.filter((e) => e.text !== 'Unable to compute message').map((e) => e.text)
  return { controlFrames, types, consoleUnableToCompute: unknownType, otherConsoleErrors: otherErrors, frameDecodeErrors: stock.flatMap((r) => r.frameErrors) }
}

const hardTimeout = setTimeout(() => {
  finish(new Error(`interop scenario did not finish within ${scaled(120) / 1000}s`))
}, scaled(120))

let finished = false
function finish (error) {
  if (finished) return
  finished = true
  clearTimeout(hardTimeout)
  const control = controlEventSummary()
  stats.controlEvents = control
  stats.clients = clients.map((c) => ({
    name: c.name, gw: gatewayOf(c), role: c.rec.role(), sockets: c.rec.sockets, frames: c.rec.frames,
    closes: c.rec.closes.map(({ code, reason }) => ({ code, reason })), terminal: c.rec.terminal.map((x) => x.code)
  }))
  if (!error) {
    try {
      // y-websocket has no handler for type 100: it logs 'Unable to compute message'
      // (console.error) and goes on; nothing throws, no reply is sent, the link stays up.
      check('control events (type 100) are ignored by stock clients: no exception, no other error, connection kept',
        control.controlFrames > 0 && uncaught.length === 0 && control.otherConsoleErrors.length === 0 &&
        control.frameDecodeErrors.length === 0 && control.consoleUnableToCompute === control.controlFrames,
        { ...control, uncaught })
    } catch (err) {
      error = err
    }
  }
  if (error && !(error instanceof CheckFailed)) {
    checks.push({ name: 'scenario error', ok: false, detail: { error: String(error && error.stack || error) } })
  }
  const ok = !error && checks.length > 0 && checks.every((c) => c.ok) && uncaught.length === 0
  for (const c of clients) {
    try { destroy(c) } catch {}
  }
  const summary = {
    ok,
    seed: SEED,
    durationMs: Date.now() - started,
    versions: { node: process.version, ...packageVersions() },
    checks,
    failed: checks.filter((c) => !c.ok).map((c) => c.name),
    stats,
    uncaught,
    notes
  }
  process.stdout.write(JSON.stringify(summary) + '\n', () => process.exit(ok ? 0 : 1))
}

scenario().then(() => finish(null), (err) => finish(err))
