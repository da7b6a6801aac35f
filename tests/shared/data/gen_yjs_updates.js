// Regenerates yjs_updates.json: real Yjs (v1) updates, state vectors and awareness
// updates that tests/shared/test_yvalidate.py checks without needing Node.
//   mkdir -p /tmp/yjs-check && cd /tmp/yjs-check && npm install yjs y-protocols
//   NODE_PATH=/tmp/yjs-check/node_modules node tests/shared/data/gen_yjs_updates.js
const fs = require('fs')
const path = require('path')
const Y = require('yjs')
const awarenessProtocol = require('y-protocols/awareness')

const hex = (u8) => Buffer.from(u8).toString('hex')
const updates = []
const stateVectors = []
// `rejected`: a reason the validator must refuse it (Yjs and yrs read it differently).
const capture = (doc, name, fn, rejected) => {
  const got = []
  const listener = (u) => got.push(u)
  doc.on('update', listener)
  doc.transact(fn)
  doc.off('update', listener)
  if (got.length !== 1) throw new Error(`${name}: ${got.length} updates`)
  updates.push(rejected ? { name, hex: hex(got[0]), rejected } : { name, hex: hex(got[0]), nonempty: true })
  return got[0]
}

const doc = new Y.Doc()
doc.clientID = 123456789
const text = doc.getText('code')
const u1 = capture(doc, 'text insert', () => text.insert(0, 'def main():\n'))
capture(doc, 'text keystroke', () => text.insert(4, 'x'))
const u3 = capture(doc, 'text non-ascii', () => text.insert(2, 'Zoë 🎉 ∑'))
capture(doc, 'text delete', () => text.delete(1, 3))
capture(doc, 'text formatted insert', () => text.insert(0, 'bold', { bold: true, color: '#f00' }))
capture(doc, 'text format range', () => text.format(1, 2, { italic: true, size: 1.5 }))
capture(doc, 'text embed', () => text.insertEmbed(3, { image: 'x.png', w: [1, 2] }))
const map = doc.getMap('meta')
capture(doc, 'map any values', () => {
  map.set('int', 42)
  map.set('neg', -7)
  map.set('big', 2 ** 40)
  map.set('float', 1.5)
  map.set('double', Math.PI)
  map.set('bigint', 2n ** 60n)
  map.set('null', null)
  map.set('bools', [true, false])
  map.set('nested', { a: [1, { b: 'c', ü: 'ñ' }], e: {} })
})
capture(doc, 'map binary', () => map.set('bin', new Uint8Array([0, 1, 255])))
capture(doc, 'map nested types', () => {
  const inner = new Y.Map()
  map.set('inner', inner)
  inner.set('k', 'v')
  const arr = new Y.Array()
  inner.set('arr', arr)
  arr.insert(0, [1, 'two', { three: 3 }])
})
capture(doc, 'map overwrite', () => map.set('int', 43))
capture(doc, 'map delete', () => map.delete('null'))
capture(doc, 'array insert', () => doc.getArray('list').insert(0, ['x', 1, [2, 3], { y: null }]))
capture(doc, 'xml', () => {
  const frag = doc.getXmlFragment('xml')
  const el = new Y.XmlElement('div')
  frag.insert(0, [el])
  el.setAttribute('class', 'big')
  const t = new Y.XmlText()
  el.insert(0, [t])
  t.insert(0, 'inner text', { b: true })
})
const hookDoc = new Y.Doc()
capture(hookDoc, 'xml hook', () => hookDoc.getXmlFragment('x').insert(0, [new Y.XmlHook('hooky')]), 'yrs reads no name')
capture(doc, 'subdoc', () => map.set('sub', new Y.Doc({ guid: 'sub-guid', meta: { n: 1 } })))
capture(doc, 'delete nested type', () => map.delete('inner'))

const other = new Y.Doc()
other.clientID = 2 ** 32 - 1
Y.applyUpdate(other, Y.encodeStateAsUpdate(doc))
other.getText('code').insert(5, 'concurrent ')
other.getText('code').delete(0, 2)
Y.applyUpdate(doc, Y.encodeStateAsUpdate(other, Y.encodeStateVector(doc)))

updates.push({ name: 'full state', hex: hex(Y.encodeStateAsUpdate(doc)), nonempty: true })
updates.push({ name: 'merged with a gap (Skip)', hex: hex(Y.mergeUpdates([u1, u3])), nonempty: true })
updates.push({ name: 'diff against own state', hex: hex(Y.encodeStateAsUpdate(doc, Y.encodeStateVector(doc))), nonempty: true })
updates.push({ name: 'empty doc', hex: hex(Y.encodeStateAsUpdate(new Y.Doc())), nonempty: false })
stateVectors.push({ name: 'two clients', hex: hex(Y.encodeStateVector(doc)) })
stateVectors.push({ name: 'empty', hex: hex(Y.encodeStateVector(new Y.Doc())) })

const awareness = new awarenessProtocol.Awareness(doc)
awareness.setLocalState({ user: { name: 'Zoë 🎉', color: '#abc' }, cursor: { anchor: 3 } })
const peer = new awarenessProtocol.Awareness(other)
peer.setLocalState({ user: { name: 'Bob' } })
awarenessProtocol.applyAwarenessUpdate(awareness, awarenessProtocol.encodeAwarenessUpdate(peer, [other.clientID]), 'peer')
const awarenessUpdates = []
const both = [doc.clientID, other.clientID]
const entries = (clients) => clients.map((c) => {
  const meta = awareness.meta.get(c)
  const state = awareness.getStates().get(c)
  return [c, meta.clock, JSON.stringify(state === undefined ? null : state)]
})
awarenessUpdates.push({ name: 'two users', hex: hex(awarenessProtocol.encodeAwarenessUpdate(awareness, both)), entries: entries(both) })
awarenessProtocol.removeAwarenessStates(awareness, [other.clientID], 'test')
awarenessUpdates.push({ name: 'removed user', hex: hex(awarenessProtocol.encodeAwarenessUpdate(awareness, [other.clientID])), entries: entries([other.clientID]) })

const out = { yjs: require('yjs/package.json').version, text: text.toString(), updates, stateVectors, awarenessUpdates }
fs.writeFileSync(path.join(__dirname, 'yjs_updates.json'), JSON.stringify(out, null, 1) + '\n')
awareness.destroy()
peer.destroy()
