/**
 * libvmdk reads the data of our images (not just their headers): vmdkmount (FUSE)
 * exposes each layer as a file, compared byte for byte with what was written.
 */
import { existsSync } from 'node:fs';
import { mkdir, open as fsOpen, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect } from 'vitest';
import { create } from '../../../src/ops/create.js';
import { open } from '../../../src/formats/registry.js';
import { FileStorage } from '../../../src/storage/file.js';
import { writeStreamOptimized } from '../../../src/formats/vmdk/stream.js';
import { itWith, run, runOk } from '../../helpers/oracle.js';
import { patternBytes, tempDir } from '../../helpers/tmp.js';

const MiB = 1024 * 1024;
const SIZE = 24 * MiB;
const dir = await tempDir('vdisk-vmdk-libvmdk-');

/** The data: pieces scattered over the disk, unaligned, with zero gaps. */
function reference(): Buffer {
  const ref = Buffer.alloc(SIZE);
  patternBytes(300_000, 1).copy(ref, 5000);
  patternBytes(65536, 2).copy(ref, 9 * MiB);
  Buffer.alloc(2 * MiB, 0x5a).copy(ref, 17 * MiB + 512);
  patternBytes(4096, 3).copy(ref, SIZE - 4096);
  return ref;
}

async function writeRef(dev: { write(b: Buffer, o: number): Promise<void> }, ref: Buffer): Promise<void> {
  for (let off = 0; off < SIZE; off += MiB) {
    const piece = ref.subarray(off, off + MiB);
    if (piece.some((b) => b !== 0)) await dev.write(piece, off);
  }
}

/** Mount `img` with vmdkmount and return the bytes of its last layer (the image as a whole). */
async function readThroughLibvmdk(img: string): Promise<Buffer> {
  const mnt = `${img}.mnt`;
  await mkdir(mnt, { recursive: true });
  await runOk('vmdkmount', [img, mnt], { timeoutMs: 30_000 });
  try {
    const layers = (await readdir(mnt)).filter((n) => /^vmdk\d+$/.test(n)).sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)));
    expect(layers.length).toBeGreaterThan(0);
    return await readFile(join(mnt, layers[layers.length - 1]!));
  } finally {
    await run('umount', [mnt]);
  }
}

/** vmdkmount needs FUSE; without /dev/fuse (some containers) these tests are skipped, saying so. */
const describeFuse = existsSync('/dev/fuse') ? describe : describe.skip;

describeFuse('libvmdk (vmdkmount) reads our data [needs /dev/fuse]', () => {
  for (const subformat of ['monolithicSparse', 'twoGbMaxExtentSparse', 'streamOptimized']) {
    itWith(['vmdkmount', 'umount'], `${subformat}`, async () => {
      const img = join(dir, `${subformat}.vmdk`);
      const ref = reference();
      const dev = await create(img, { format: 'vmdk', size: SIZE, options: { subformat } });
      await writeRef(dev, ref);
      await dev.close();
      const got = await readThroughLibvmdk(img);
      expect(got.length).toBe(SIZE);
      expect(got.equals(ref)).toBe(true);
    });
  }

  itWith(['vmdkmount', 'umount'], 'writeStreamOptimized output', async () => {
    const ref = reference();
    const raw = join(dir, 'src.raw');
    const fh = await fsOpen(raw, 'w');
    await fh.write(ref, 0, SIZE, 0);
    await fh.close();
    const src = await open(raw, { format: 'raw', readOnly: true });
    const out = join(dir, 'ws.vmdk');
    const st = await FileStorage.open(out, { create: 'new' });
    await writeStreamOptimized(src, st);
    await st.close();
    await src.close();
    expect((await readThroughLibvmdk(out)).equals(ref)).toBe(true);
  });

  itWith(['vmdkmount', 'umount'], 'a delta link over its parent', async () => {
    const parent = join(dir, 'dp.vmdk');
    const child = join(dir, 'dc.vmdk');
    const base = reference();
    const p = await create(parent, { format: 'vmdk', size: SIZE });
    await writeRef(p, base);
    await p.close();
    const c = await create(child, { format: 'vmdk', backing: parent });
    const over = patternBytes(70_000, 9);
    await c.write(over, 5000 + 1000);
    await c.close();
    over.copy(base, 6000);
    expect((await readThroughLibvmdk(child)).equals(base)).toBe(true);
  });
});
