/**
 * qcow2 read interop with qemu-img / qemu-io: every image qemu makes (compat 0.10 and
 * 1.1, cluster sizes 512 .. 2M, lazy refcounts, refcount widths, zero clusters,
 * compressed clusters, backing chains) reads byte-identical to `qemu-img convert -O
 * raw`, and our extents agree with `qemu-img map` on data vs zero.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect } from 'vitest';
import { listExtents } from '../../../src/device/base.js';
import { isVdiskError } from '../../../src/errors.js';
import { open } from '../../../src/formats/registry.js';
import { itWith, runOk } from '../../helpers/oracle.js';
import { readImageFile } from '../../helpers/read.js';
import { tempDir } from '../../helpers/tmp.js';

const QEMU = ['qemu-img', 'qemu-io'];
const MiB = 1024 * 1024;

let dir: string;
beforeAll(async () => {
  dir = await tempDir('vdisk-qcow2-');
});

/** Make `name` with qemu-img create and apply qemu-io commands. */
async function qemuImage(name: string, createArgs: string[], size: string, io: string[] = []): Promise<string> {
  const f = join(dir, name);
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...createArgs, f, size]);
  for (const c of io) await runOk('qemu-io', ['-f', 'qcow2', '-c', c, f]);
  return f;
}

/** What qemu reads from an image: `qemu-img convert -O raw`. */
async function qemuRaw(f: string): Promise<Buffer> {
  const out = `${f}.qemu.raw`;
  await runOk('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', f, out]);
  return readFile(out);
}

type Run = [number, number, string];

/** qemu-img map as coalesced [start, length, data|zero] runs. */
async function qemuMap(f: string): Promise<Run[]> {
  const map = JSON.parse(await runOk('qemu-img', ['map', '--output', 'json', '-f', 'qcow2', f])) as Array<{ start: number; length: number; data: boolean; zero: boolean }>;
  return coalesce(map.map((m) => [m.start, m.length, m.data ? 'data' : 'zero']));
}

function coalesce(runs: Run[]): Run[] {
  const out: Run[] = [];
  for (const r of runs) {
    const last = out[out.length - 1];
    if (last && last[2] === r[2] && last[0] + last[1] === r[0]) last[1] += r[1];
    else out.push([...r]);
  }
  return out;
}

async function ourMap(f: string): Promise<Run[]> {
  const img = await open(f, { readOnly: true });
  try {
    return coalesce((await listExtents(img)).map((e) => [e.offset, e.length, e.kind === 'data' ? 'data' : 'zero']));
  } finally {
    await img.close();
  }
}

async function expectSameAsQemu(f: string): Promise<void> {
  const ours = await readImageFile(f);
  const theirs = await qemuRaw(f);
  expect(ours.length).toBe(theirs.length);
  expect(ours.equals(theirs)).toBe(true);
  expect(await ourMap(f)).toEqual(await qemuMap(f));
}

const WRITES = ["write -P 0x5a 0 64k", "write -P 0xa5 1M 300k", "write -P 0x33 3M 512", "write -P 0x44 5000k 4k", "write -P 0x77 15M 1M"];

describe('qcow2 images made by qemu read as qemu reads them', () => {
  const variants: Array<[string, string[]]> = [
    ['v2-64k', ['-o', 'compat=0.10']],
    ['v3-64k', ['-o', 'compat=1.1']],
    ['v2-512', ['-o', 'compat=0.10,cluster_size=512']],
    ['v3-512', ['-o', 'compat=1.1,cluster_size=512']],
    ['v3-4k-lazy', ['-o', 'compat=1.1,cluster_size=4096,lazy_refcounts=on']],
    ['v3-2M', ['-o', 'compat=1.1,cluster_size=2M']],
    ['v3-refcount1', ['-o', 'refcount_bits=1']],
    ['v3-refcount8-1k', ['-o', 'refcount_bits=8,cluster_size=1024']],
    ['v3-refcount64', ['-o', 'refcount_bits=64']],
  ];
  for (const [name, args] of variants) {
    itWith(QEMU, `${name}: data written by qemu-io`, async () => {
      const f = await qemuImage(`${name}.qcow2`, args, '16M', WRITES);
      await expectSameAsQemu(f);
      const img = await open(f, { readOnly: true });
      const info = await img.info();
      await img.close();
      expect(info.formatSpecific?.compat).toBe(args[1]!.includes('0.10') ? '0.10' : '1.1');
    });
  }

  itWith(QEMU, 'zero clusters (write -z) over data and over nothing, v3', async () => {
    const f = await qemuImage('zero.qcow2', ['-o', 'compat=1.1'], '8M', ['write -P 0x11 0 2M', 'write -z 64k 128k', 'write -z 4M 1M', 'write -z 1M 1k']);
    await expectSameAsQemu(f);
    const ext = await ourMap(f);
    expect(ext).toContainEqual([64 * 1024, 128 * 1024, 'zero']);
  });

  itWith(QEMU, 'zero writes on a v2 image', async () => {
    const f = await qemuImage('zero2.qcow2', ['-o', 'compat=0.10'], '8M', ['write -P 0x11 0 2M', 'write -z 64k 128k']);
    await expectSameAsQemu(f);
  });

  itWith(QEMU, 'compressed clusters: qemu-img convert -c and qemu-io write -c', async () => {
    const raw = join(dir, 'text.raw');
    const text = Buffer.alloc(6 * MiB);
    for (let i = 0; i < text.length; i += 16) text.write(`line ${i.toString(16).padStart(10, '0')}`, i, 'latin1');
    text.fill(0, 2 * MiB, 3 * MiB);
    await writeFile(raw, text);
    for (const cs of ['512', '64k', '2M']) {
      const f = join(dir, `compressed-${cs}.qcow2`);
      await runOk('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', `cluster_size=${cs}`, raw, f]);
      await expectSameAsQemu(f);
      expect((await readImageFile(f)).equals(text)).toBe(true);
    }
    const g = await qemuImage('write-c.qcow2', [], '4M', ['write -c -P 0x61 0 64k', 'write -c -P 0x62 128k 64k', 'write -P 0x63 192k 4k']);
    await expectSameAsQemu(g);
  });

  itWith(QEMU, 'a backing chain: qcow2 over qcow2 over raw, partial cluster writes, depth in extents', async () => {
    const base = join(dir, 'chain-base.raw');
    await writeFile(base, Buffer.alloc(8 * MiB, 0x42));
    const mid = await qemuImage('chain-mid.qcow2', ['-b', 'chain-base.raw', '-F', 'raw'], '8M', ['write -P 0x01 64k 64k', 'write -P 0x02 1M 1k']);
    const top = await qemuImage('chain-top.qcow2', ['-b', 'chain-mid.qcow2', '-F', 'qcow2'], '8M', ['write -P 0x03 1M 512', 'write -z 2M 64k', 'write -P 0x04 7M 3k']);
    expect((await readImageFile(mid)).equals(await qemuRaw(mid))).toBe(true);
    expect((await readImageFile(top)).equals(await qemuRaw(top))).toBe(true);
    const img = await open(top, { readOnly: true });
    try {
      const ext = await listExtents(img);
      expect(ext.find((e) => e.offset === 64 * 1024)).toMatchObject({ kind: 'data', depth: 1 });
      expect(ext.find((e) => e.offset === 1 * MiB)).toMatchObject({ kind: 'data', depth: 0 });
      expect(ext.find((e) => e.offset === 0)).toMatchObject({ kind: 'data', depth: 2 });
      const info = await img.info();
      expect(info.backingFilename).toBe('chain-mid.qcow2');
      expect(info.formatSpecific?.['backing-format']).toBe('qcow2');
    } finally {
      await img.close();
    }
  });

  itWith(QEMU, 'extended L2 entries (subclusters), alone and over a backing file', async () => {
    const sub = (cs: string): string[] => ['write -P 0x31 0 2k', 'write -P 0x32 33k 1k', 'write -z 40k 2k', 'write -P 0x33 1M 64k', 'write -z 1M 4k', `write -c -P 0x34 2M ${cs}`, 'write -P 0x35 3M 100k'];
    for (const cs of ['16k', '64k', '2M']) {
      const f = await qemuImage(`ext-${cs}.qcow2`, ['-o', `extended_l2=on,cluster_size=${cs}`], '8M', sub(cs));
      await expectSameAsQemu(f);
    }
    await writeFile(join(dir, 'ext-base.raw'), Buffer.alloc(8 * MiB, 0x99));
    const top = await qemuImage('ext-top.qcow2', ['-o', 'extended_l2=on', '-b', 'ext-base.raw', '-F', 'raw'], '8M', sub('64k'));
    expect((await readImageFile(top)).equals(await qemuRaw(top))).toBe(true);
    const img = await open(top, { readOnly: true });
    try {
      expect((await img.info()).formatSpecific?.['extended-l2']).toBe(true);
      const ext = await listExtents(img, 0, 64 * 1024);
      expect(ext[0]).toMatchObject({ offset: 0, length: 2048, kind: 'data', depth: 0 });
      expect(ext[1]).toMatchObject({ offset: 2048, kind: 'data', depth: 1 });
    } finally {
      await img.close();
    }
    await expect(open(top)).rejects.toThrow(/extended L2 entries/);
  });

  itWith(QEMU, 'a backing file smaller than the image reads zeros past its end', async () => {
    const base = await qemuImage('small-base.qcow2', [], '1M', ['write -P 0x09 0 1M']);
    const top = await qemuImage('small-top.qcow2', ['-b', 'small-base.qcow2', '-F', 'qcow2'], '4M', ['write -P 0x0a 3M 4k']);
    expect(base).toBeTruthy();
    expect((await readImageFile(top)).equals(await qemuRaw(top))).toBe(true);
  });

  itWith(QEMU, 'backing_fmt is honoured: a raw base holding a qcow2 header is read as raw', async () => {
    const inner = await qemuImage('inner.qcow2', [], '1M', ['write -P 0x55 0 64k']);
    // A "raw" disk whose bytes happen to be a qcow2 image (a guest could write that).
    await writeFile(join(dir, 'trap.raw'), Buffer.concat([await readFile(inner), Buffer.alloc(4 * MiB)]).subarray(0, 4 * MiB));
    const top = await qemuImage('trap-top.qcow2', ['-b', 'trap.raw', '-F', 'raw'], '4M');
    const ours = await readImageFile(top);
    expect(ours.equals(await qemuRaw(top))).toBe(true);
    expect(ours.readUInt32BE(0)).toBe(0x514649fb);
  });

  itWith(QEMU, 'a backing name leading out of the folder or a pseudo-protocol is refused', async () => {
    for (const [name, ref] of [['out', '../../etc/passwd'], ['abs', '/etc/passwd'], ['json', 'json:{"file.filename":"/etc/passwd"}'], ['nbd', 'nbd:localhost:10809']] as const) {
      const f = join(dir, `esc-${name}.qcow2`);
      await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', ref, '-F', 'raw', f, '1M']);
      const err = await open(f, { readOnly: true }).then(
        async (img) => {
          await img.close();
          return undefined;
        },
        (e: unknown) => e,
      );
      expect(isVdiskError(err, 'E_PATH'), `${name}: ${String(err)}`).toBe(true);
    }
  });

  itWith(QEMU, 'info: snapshots, dirty and lazy refcount facts', async () => {
    const f = await qemuImage('snap.qcow2', ['-o', 'lazy_refcounts=on'], '4M', ['write -P 0x10 0 64k']);
    await runOk('qemu-img', ['snapshot', '-c', 'one', f]);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x20 0 4k', f]);
    await runOk('qemu-img', ['snapshot', '-c', 'two', f]);
    const img = await open(f, { readOnly: true });
    try {
      const info = await img.info();
      expect(info.clusterSize).toBe(65536);
      expect(info.formatSpecific).toMatchObject({ snapshots: 2, 'lazy-refcounts': true, 'dirty-bit': false, 'refcount-bits': 16, compat: '1.1' });
      const qemu = JSON.parse(await runOk('qemu-img', ['info', '--output', 'json', f])) as { snapshots: Array<Record<string, unknown>> };
      const keys = ['id', 'name', 'date-sec', 'date-nsec', 'vm-clock-sec', 'vm-clock-nsec', 'vm-state-size'];
      const pick = (o: Record<string, unknown>): Record<string, unknown> => Object.fromEntries(keys.map((k) => [k, o[k]]));
      const ours = info.formatSpecific?.['snapshot-list'] as Array<Record<string, unknown>>;
      expect(ours.map(pick)).toEqual(qemu.snapshots.map(pick));
      expect(ours.map((x) => x['disk-size'])).toEqual([4 * MiB, 4 * MiB]);
    } finally {
      await img.close();
    }
    await expectSameAsQemu(f);
  });

  itWith(QEMU, 'encryption and unknown incompatible features are refused with E_UNSUPPORTED naming them', async () => {
    const f = await qemuImage('plain.qcow2', [], '1M');
    const bytes = await readFile(f);
    const enc = Buffer.from(bytes);
    enc.writeUInt32BE(2, 32);
    await writeFile(join(dir, 'enc.qcow2'), enc);
    await expect(open(join(dir, 'enc.qcow2'), { readOnly: true })).rejects.toThrow(/encryption \(crypt_method 2, LUKS\)/);
    const unk = Buffer.from(bytes);
    unk.writeUInt32BE(1 << 9, 76);
    await writeFile(join(dir, 'unk.qcow2'), unk);
    const err = await open(join(dir, 'unk.qcow2'), { readOnly: true }).catch((e: unknown) => e);
    expect(isVdiskError(err, 'E_UNSUPPORTED')).toBe(true);
    expect(String(err)).toMatch(/incompatible features .*bit 9/);
  });
});

describe('image@snapshot reads an internal snapshot', () => {
  itWith(QEMU, 'by name and by id, as qemu-img convert -l shows it; writes refused', async () => {
    const img = join(dir, 'snap.qcow2');
    await runOk('qemu-img', ['create', '-f', 'qcow2', img, '4M']);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x22 2M 64k', img]);
    await runOk('qemu-img', ['snapshot', '-c', 'first', img]);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 512k 1M', '-c', 'write -z 2M 64k', img]);
    const want = join(dir, 'snap-first.raw');
    await runOk('qemu-img', ['convert', '-l', 'snapshot.name=first', '-f', 'qcow2', '-O', 'raw', img, want]);
    const expected = await readFile(want);
    expect((await readImageFile(`${img}@first`)).equals(expected)).toBe(true);
    expect((await readImageFile(`${img}@1`)).equals(expected)).toBe(true);
    // The active image is untouched by the snapshot's addressing.
    const active = join(dir, 'snap-active.raw');
    await runOk('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', img, active]);
    expect((await readImageFile(img)).equals(await readFile(active))).toBe(true);
    expect(expected.equals(await readFile(active))).toBe(false);
    const codeOf = async (p: Promise<unknown>): Promise<string> =>
      p.then(
        () => 'opened',
        (err: unknown) => (isVdiskError(err) ? err.code : String(err)),
      );
    expect(await codeOf(open(`${img}@first`))).toBe('E_READONLY');
    expect(await codeOf(open(`${img}@nosuch`, { readOnly: true }))).toBe('E_NOENT');
  });
});
