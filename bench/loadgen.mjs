#!/usr/bin/env node
// The peers' load generator (loadgen/run.js), unchanged, plus two options:
//
//   --peers DIR         where the copied peers live (default: bench/.peers next to this file)
//   --rooms-file FILE   one room id per line; loadgen room r uses line (offset + r)
//   --room-offset K     (default 0) so that concurrent load generators use disjoint rooms
//
// run.js names its rooms "<prefix>-r<n>"; coderoom only accepts ids of existing code
// blocks (Mongo ObjectIds; unknown ids are closed with 4404), so the bench seeds blocks
// and maps room n to the n-th seeded id here. The mapping is done by wrapping the
// adapter's connect(): run.js imports the same adapter module (same URL, same instance),
// so every client it builds sees the real block id as its room, including in
// --params placeholders ({room}). Without --rooms-file this is exactly run.js.
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

function takeOption(name) {
  const argv = process.argv;
  for (let i = 2; i < argv.length; i++) {
    if (argv[i] === name) {
      const value = argv[i + 1];
      argv.splice(i, 2);
      return value;
    }
    if (argv[i].startsWith(`${name}=`)) {
      const value = argv[i].slice(name.length + 1);
      argv.splice(i, 1);
      return value;
    }
  }
  return undefined;
}

const here = dirname(fileURLToPath(import.meta.url));
const peers = resolve(takeOption('--peers') ?? join(here, '.peers'));
const roomsFile = takeOption('--rooms-file');
const offset = Number(takeOption('--room-offset') ?? 0);
const loadgen = join(peers, 'loadgen');

if (roomsFile) {
  const ids = readFileSync(roomsFile, 'utf8').split('\n').map((s) => s.trim()).filter(Boolean);
  const i = process.argv.indexOf('--adapter');
  const adapterName = i >= 0 ? process.argv[i + 1] : (process.argv.find((a) => a.startsWith('--adapter=')) ?? '').slice(10);
  const adapter = await import(pathToFileURL(join(loadgen, 'adapters', `${adapterName}.js`)).href);
  const connect = adapter.Client.prototype.connect;
  adapter.Client.prototype.connect = function mappedConnect() {
    if (!this.mappedRoom) {
      const m = /-r(\d+)$/.exec(this.room);
      const n = m ? Number(m[1]) + offset : NaN;
      if (!(n >= 0 && n < ids.length)) throw new Error(`no block id for room ${this.room} (offset ${offset}, ${ids.length} ids in ${roomsFile})`);
      if (n === offset && this.index === 0) console.error(`[bench] room ${this.room} -> block ${ids[n]} (rooms file ${roomsFile}, offset ${offset})`);
      this.room = ids[n];
      this.mappedRoom = true;
    }
    return connect.call(this);
  };
}

await import(pathToFileURL(join(loadgen, 'run.js')).href);
