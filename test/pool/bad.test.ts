// Pools meet bad input: foreign members, copied files, damaged metadata copies, text
// that does not fit, hostile VG text; and an LV grown while tasks read and write it.
import { copyFile, open as fsOpen } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { VdiskError } from '../../src/errors.js';
import { create } from '../../src/ops/create.js';
import { decodeLabel, decodeMdaHeader, encodeMdaHeader, MDA_OFFSET } from '../../src/pool/layout.js';
import { nextLocn } from '../../src/pool/member.js';
import { checkName, parseVg } from '../../src/pool/metadata.js';
import { Pool } from '../../src/pool/pool.js';
import { expectCode } from '../helpers/errors.js';
import { rng } from '../helpers/fuzz.js';
import { patternBytes, tempDir } from '../helpers/tmp.js';

const MiB = 1 << 20;

async function images(dir: string, names: readonly string[], size = 32 * MiB): Promise<void> {
  for (const n of names) await (await create(join(dir, n), { format: n.endsWith('.vdi') ? 'vdi' : n.endsWith('.vhd') ? 'vhd' : 'raw', size })).close();
}

async function poke(file: string, offset: number, bytes: Buffer): Promise<void> {
  const fh = await fsOpen(file, 'r+');
  await fh.write(bytes, 0, bytes.length, offset);
  await fh.close();
}

const VG_TEXT = `vg0 {
id = "VUanVg-75f6-4jtG-yQGi-A70d-rcUD-EjBJ3y"
seqno = 3
format = "lvm2"
status = ["RESIZEABLE", "READ", "WRITE"]
flags = []
extent_size = 8192
max_lv = 0
max_pv = 0
metadata_copies = 0
physical_volumes {
pv0 {
id = "hswxyQ-XpfW-2uIq-qhrx-jTcO-MZWT-Vjed4e"
device = "/dev/loop0"
status = ["ALLOCATABLE"]
flags = []
dev_size = 131072
pe_start = 2048
pe_count = 15
}
}
logical_volumes {
lin {
id = "TkyNp9-Y3w4-gt1c-16e5-SB94-1PZE-HIvF8i"
status = ["READ", "WRITE", "VISIBLE"]
flags = []
segment_count = 1
segment1 {
start_extent = 0
extent_count = 5
type = "striped"
stripe_count = 1
stripes = [
"pv0", 0
]
}
}
}
}
contents = "Text Format Volume Group"
version = 1
`;

describe('pool bad input', () => {
  it('refuses members holding a partition table or another VG unless --force, and copied members', async () => {
    const dir = await tempDir('vdisk-poolbad-');
    await images(dir, ['a.raw', 'b.raw', 'c.raw']);
    const mbr = Buffer.alloc(512);
    mbr.writeUInt16LE(0xaa55, 510);
    mbr.writeUInt8(0x83, 446 + 4);
    mbr.writeUInt32LE(2048, 446 + 8);
    mbr.writeUInt32LE(4096, 446 + 12);
    await poke(join(dir, 'c.raw'), 0, mbr);
    await expectCode(Pool.create('vg0', ['a.raw', 'c.raw'], { dir }), 'E_EXISTS', /partition table|boot sector/);
    const p = await Pool.create('vg0', ['a.raw', 'c.raw'], { dir, force: true });
    await p.lvCreate('x', 8 * MiB);
    await p.close();
    await expectCode(Pool.create('vg1', ['a.raw'], { dir }), 'E_EXISTS', /member of VG vg0/);
    await expectCode(Pool.create('vg0', ['b.raw'], { dir }), 'E_EXISTS', /already exists/);
    await expectCode(Pool.create('bad/name', ['b.raw'], { dir }), 'E_USAGE');
    // A copied member: two files hold one PV uuid.
    await copyFile(join(dir, 'a.raw'), join(dir, 'copy.raw'));
    await expectCode(Pool.open('vg0', { dir }), 'E_CORRUPT', /a\.raw.*copy\.raw|copy\.raw.*a\.raw/);
  });

  it('uses the good metadata copy and names the bad one; all copies bad is E_CORRUPT naming each', async () => {
    const dir = await tempDir('vdisk-poolmda-');
    await images(dir, ['a.raw', 'b.raw']);
    const p = await Pool.create('vg0', ['a.raw', 'b.raw'], { dir });
    await p.lvCreate('x', 40 * MiB);
    const lv = p.openLv('x');
    const data = patternBytes(lv.size, 4);
    await lv.write(data, 0);
    await p.close();
    // Damage the committed text on a.raw (a byte in its middle).
    const head = Buffer.alloc(512);
    const fh = await fsOpen(join(dir, 'a.raw'), 'r');
    await fh.read(head, 0, 512, MDA_OFFSET);
    await fh.close();
    const h = decodeMdaHeader(head, MDA_OFFSET, 'a');
    await poke(join(dir, 'a.raw'), MDA_OFFSET + h.locns[0]!.offset + 20, Buffer.from('#'));
    const q = await Pool.open('vg0', { dir });
    expect(q.warnings.join('\n')).toMatch(/a\.raw.*checksum mismatch/);
    const back = Buffer.alloc(data.length);
    await q.openLv('x').read(back, 0);
    expect(back.equals(data)).toBe(true);
    // The next change brings a.raw up to date: then it opens without warnings.
    const r = await q.check(true);
    expect(r.problems.join('\n')).toMatch(/a\.raw/);
    await q.close();
    const clean = await Pool.open('vg0', { dir });
    expect(clean.warnings).toEqual([]);
    await clean.close();
    for (const f of ['a.raw', 'b.raw']) {
      const b = Buffer.alloc(512);
      const g = await fsOpen(join(dir, f), 'r');
      await g.read(b, 0, 512, MDA_OFFSET);
      await g.close();
      const hh = decodeMdaHeader(b, MDA_OFFSET, f);
      await poke(join(dir, f), MDA_OFFSET + hh.locns[0]!.offset + 20, Buffer.from('#'));
    }
    await expectCode(Pool.open('vg0', { dir }), 'E_CORRUPT', /a\.raw.*b\.raw/s);
  });

  it('refuses text larger than the area before writing anything', () => {
    const h = { start: MDA_OFFSET, size: 8192, locns: [{ offset: 512, size: 3000, checksum: 0, flags: 0 }] };
    expect(nextLocn(h, Buffer.alloc(4000), 'm').offset).toBe(3584);
    expect(() => nextLocn(h, Buffer.alloc(5000), 'm')).toThrow(/does not fit/);
    // Wrapping: after a text near the end, the next one splits across the ring's end.
    const late = { ...h, locns: [{ offset: 6656, size: 1000, checksum: 0, flags: 0 }] };
    const l = nextLocn(late, Buffer.alloc(3000), 'm');
    expect(l.offset).toBe(7680);
    expect(l.offset + l.size).toBeGreaterThan(8192);
    expect(decodeMdaHeader(encodeMdaHeader(h), MDA_OFFSET, 'm')).toEqual(h);
  });

  it('hostile VG text fails with E_CORRUPT in bounded time', () => {
    expect(parseVg(VG_TEXT, 't').lvs[0]!.segments[0]!.extentCount).toBe(5);
    const bad: Array<[string, RegExp]> = [
      [VG_TEXT.replace('extent_count = 5', 'extent_count = 16'), /past pv0/],
      [VG_TEXT.replace('extent_size = 8192', 'extent_size = 0'), /extent_size/],
      [VG_TEXT.replace('extent_size = 8192', 'extent_size = 8191'), /extent_size/],
      [VG_TEXT.replace('seqno = 3', 'seqno = 99999999999999999999'), /too large/],
      [VG_TEXT.replace('"pv0", 0', '"pv7", 0'), /unknown PV/],
      [VG_TEXT.replace('lin {', 'lin {\nlin2 = 1\n') + '}', /./],
      [`${'a {'.repeat(5000)}${'}'.repeat(5000)}`, /nested deeper/],
      [`vg0 { id = "${'x'.repeat(2 * MiB)}" }`, /longer than/],
      [VG_TEXT.replace('format = "lvm2"', 'format = "lvm2"\nformat = "x"'), /twice/],
      [VG_TEXT.slice(0, 300), /not closed|expected|unterminated/],
    ];
    for (const [text, msg] of bad) {
      const t0 = Date.now();
      let err: unknown;
      try {
        parseVg(text, 't');
      } catch (e) {
        err = e;
      }
      expect(err, msg.source).toBeInstanceOf(VdiskError);
      expect((err as Error).message).toMatch(msg);
      expect(Date.now() - t0).toBeLessThan(2000);
    }
    for (const n of ['', '-x', '..', 'a b', 'snapshot1', 'x_tmeta', 'z'.repeat(128)]) expect(() => checkName(n, 'LV')).toThrow(VdiskError);
  });

  it('fuzz: 6000 mutated labels, mda headers and VG texts give only VdiskErrors', () => {
    const rand = rng(20261207);
    const label = Buffer.alloc(512);
    // A real label sector and mda header from a pool made here, mutated byte-wise.
    const base = Buffer.from(VG_TEXT);
    let ok = 0;
    let refused = 0;
    for (let i = 0; i < 6000; i++) {
      const kind = i % 3;
      try {
        if (kind === 0) {
          const t = Buffer.from(base);
          for (let k = 0; k < 1 + Math.floor(rand() * 6); k++) t[Math.floor(rand() * t.length)] = Math.floor(rand() * 256);
          parseVg(t.toString('latin1'), 'fuzz');
        } else if (kind === 1) {
          const h = encodeMdaHeader({ start: MDA_OFFSET, size: 1 << 20, locns: [{ offset: 512, size: 1000, checksum: 1, flags: 0 }] });
          for (let k = 0; k < 1 + Math.floor(rand() * 4); k++) h[Math.floor(rand() * 120)] = Math.floor(rand() * 256);
          decodeMdaHeader(h, MDA_OFFSET, 'fuzz');
        } else {
          label.fill(0);
          label.write('LABELONE', 0, 'latin1');
          for (let k = 8; k < 512; k++) if (rand() < 0.1) label[k] = Math.floor(rand() * 256);
          decodeLabel(label, Math.floor(rand() * 2), 'fuzz');
        }
        ok++;
      } catch (e) {
        if (!(e instanceof VdiskError)) throw new Error(`case ${i}: ${String(e)}`);
        refused++;
      }
    }
    expect(ok + refused).toBe(6000);
    expect(refused).toBeGreaterThan(1000);
  });

  it('an LV grows online: add a member and extend while tasks read and write it, no error and no torn data', async () => {
    const dir = await tempDir('vdisk-poolonline-');
    await images(dir, ['a.vhd', 'b.vdi'], 24 * MiB);
    const p = await Pool.create('vg0', ['a.vhd'], { dir });
    await p.lvCreate('x', 16 * MiB);
    const lv = p.openLv('x');
    const chunk = 64 << 10;
    let stop = false;
    const errors: unknown[] = [];
    const worker = async (seed: number): Promise<void> => {
      let n = 0;
      while (!stop) {
        const slots = Math.floor(lv.size / chunk);
        const at = ((seed * 7919 + n * 104729) % slots) * chunk;
        const b = Buffer.alloc(chunk, (seed * 31 + n) & 0xff);
        await lv.write(b, at);
        const r = Buffer.alloc(chunk);
        await lv.read(r, at);
        if (r.some((x) => x !== r[0])) throw new Error(`torn chunk at ${at}`);
        n++;
        // Let timers run: cached member I/O can complete without leaving the microtask queue.
        await new Promise((res) => setImmediate(res));
      }
    };
    const tasks = [1, 2, 3].map((s) => worker(s).catch((e: unknown) => errors.push(e)));
    let grown = 0;
    try {
      await p.add('b.vdi');
      await p.lvExtend('x', 36 * MiB);
      grown = lv.size;
      await new Promise((r) => setTimeout(r, 200));
    } finally {
      stop = true;
      await Promise.all(tasks);
    }
    expect(errors).toEqual([]);
    expect(grown).toBe(36 * MiB);
    const tail = patternBytes(4 * MiB, 2);
    await lv.write(tail, 32 * MiB);
    const back = Buffer.alloc(tail.length);
    await lv.read(back, 32 * MiB);
    expect(back.equals(tail)).toBe(true);
    await p.close();
    const q = await Pool.open('vg0', { dir, readOnly: true });
    expect(q.lvSize('x')).toBe(36 * MiB);
    await q.close();
  });

  it('lv reduce refuses to cut an MBR partition\'s span, then shrinks; lv remove frees the extents', async () => {
    const dir = await tempDir('vdisk-poolreduce-');
    await images(dir, ['a.raw'], 64 * MiB);
    const p = await Pool.create('vg0', ['a.raw'], { dir });
    await p.lvCreate('x', 40 * MiB);
    const lv = p.openLv('x');
    const mbr = Buffer.alloc(512);
    mbr.writeUInt16LE(0xaa55, 510);
    mbr.writeUInt8(0x83, 446 + 4);
    mbr.writeUInt32LE(2048, 446 + 8);
    mbr.writeUInt32LE(20480 * 2, 446 + 12); // ends at 21 MiB
    await lv.write(mbr, 0);
    await lv.close();
    await expectCode(p.lvReduce('x', 16 * MiB), 'E_USAGE', /partitions/);
    await p.lvReduce('x', 24 * MiB);
    expect(p.lvSize('x')).toBe(24 * MiB);
    await p.lvRemove('x');
    expect(p.vg.lvs).toEqual([]);
    await p.lvCreate('y', 60 * MiB);
    await p.close();
  });
});
