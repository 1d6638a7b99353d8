#!/usr/bin/env node
// One timed run for bench/pool.mjs: node pool-worker.mjs lv|direct linear|striped DIR DISK.
// Builds fresh members and the pool (not timed), then times a sequential write of the
// payload and a read of it back, through the LV or straight into the members at the
// places the LV maps it. Prints {"write": s, "writeLoop": s, "read": s}: write
// includes the closing flush (the disk's fdatasync), writeLoop stops before it.
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readSync } from 'node:fs';
import { create } from '../dist/index.js';
import { Pool } from '../dist/pool/index.js';

const [mode, layout, dir, disk] = process.argv.slice(2);
const MiB = 1 << 20;
const SIZE = 1024 * MiB;
const CHUNK = MiB;
// Reads come from the page cache and take about 0.15 s a pass: twenty passes, so the
// figure is not start-up noise. The time printed is per pass.
const READ_PASSES = 20;
mkdirSync(dir, { recursive: true });
// 400 MiB each: 99 extents, 297 in all, room for 256 striped as 86 per member.
for (const [name, format] of [['a.vhd', 'vhd'], ['b.vdi', 'vdi'], ['c.vmdk', 'vmdk']]) await (await create(`${dir}/${name}`, { format, size: 400 * MiB })).close();
const payload = Buffer.alloc(SIZE);
const fd = openSync(disk, 'r');
for (let off = 0; off < SIZE; ) off += readSync(fd, payload, off, SIZE - off, off);
closeSync(fd);

const pool = await Pool.create('vg0', ['a.vhd', 'b.vdi', 'c.vmdk'], { dir });
await pool.lvCreate('lv', SIZE, layout === 'striped' ? { stripes: 3, stripeSize: 64 << 10 } : {});
const lv = pool.openLv('lv');
const clock = () => Number(process.hrtime.bigint()) / 1e9;
// Start the timed writes with no dirty pages of the set-up (or an earlier run) left to write back.
execFileSync('sync');
let write;
let writeLoop;
let read;
if (mode === 'lv') {
  // Written from a copy made as the direct side makes its own (a fresh buffer the
  // payload is copied into): writes from such memory measured up to 4x slower here
  // than from the buffer readSync filled, so both sides use the same kind.
  const source = Buffer.alloc(SIZE);
  payload.copy(source);
  let t = clock();
  for (let off = 0; off < SIZE; off += CHUNK) await lv.write(source.subarray(off, off + CHUNK), off);
  writeLoop = clock() - t;
  await lv.flush();
  write = clock() - t;
  const back = Buffer.alloc(CHUNK);
  t = clock();
  for (let i = 0; i < READ_PASSES; i++) for (let off = 0; off < SIZE; off += CHUNK) await lv.read(back, off);
  read = (clock() - t) / READ_PASSES;
  await pool.close();
} else {
  // Where the LV puts each byte, grouped by member in the member's own order.
  const byMember = new Map();
  for (const p of lv.pieces(0, SIZE)) {
    const list = byMember.get(p.member.path) ?? [];
    const last = list.at(-1);
    if (last && last.devOffset + last.length === p.devOffset) last.pieces.push(p), (last.length += p.length);
    else list.push({ devOffset: p.devOffset, length: p.length, pieces: [p] });
    byMember.set(p.member.path, list);
  }
  // The members as the pool opened them (the same image objects the LV writes through).
  const devs = new Map(pool.members.map((m) => [m.path, m.dev]));
  // The bytes each member holds, gathered once in member order into one buffer
  // (zero-filled first, so its pages are in memory before the clock starts), so the
  // timed part is member I/O only.
  const gathered = Buffer.alloc(SIZE);
  const runs = [];
  let at = 0;
  for (const [path, list] of byMember) {
    for (const r of list) {
      const start = at;
      for (const p of r.pieces) at += payload.copy(gathered, at, p.lvOffset, p.lvOffset + p.length);
      for (let o = 0; o < r.length; o += CHUNK) runs.push({ dev: devs.get(path), offset: r.devOffset + o, data: gathered.subarray(start + o, start + Math.min(o + CHUNK, r.length)) });
    }
  }
  let t = clock();
  for (const r of runs) await r.dev.write(r.data, r.offset);
  writeLoop = clock() - t;
  for (const d of devs.values()) await d.flush();
  write = clock() - t;
  const back = Buffer.alloc(CHUNK);
  t = clock();
  for (let i = 0; i < READ_PASSES; i++) for (const r of runs) await r.dev.read(back.subarray(0, r.data.length), r.offset);
  read = (clock() - t) / READ_PASSES;
  await pool.close();
}
console.log(JSON.stringify({ write, writeLoop, read }));
