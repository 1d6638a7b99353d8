// The NBD server against clients that break the protocol: each gets an error or is
// hung up on, and the others keep being served. Also a lying server against our client.
import { writeFile } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DiskImage } from '../../src/device/block-device.js';
import { open } from '../../src/formats/registry.js';
import { NbdServer } from '../../src/nbd/server.js';
import { NbdStorage } from '../../src/storage/nbd/client.js';
import { SocketReader } from '../../src/storage/nbd/reader.js';
import { tempDir } from '../helpers/tmp.js';
// @ts-expect-error: a plain .mjs script without types
import { runNbdFuzz } from '../../scripts/fuzz-nbd.mjs';

const SIZE = 1 << 20;
const IHAVEOPT = 0x49484156454f5054n;
let dir: string;
let disk: DiskImage;
let server: NbdServer;
let port: number;
const ends: Array<string | undefined> = [];

beforeAll(async () => {
  dir = await tempDir('vdisk-nbd-robust-');
  const content = Buffer.alloc(SIZE);
  for (let i = 0; i < SIZE; i += 512) content.writeUInt32BE(i, i);
  await writeFile(join(dir, 'disk.raw'), content);
  disk = await open(join(dir, 'disk.raw'));
  server = new NbdServer([{ name: 'disk', device: disk }], { maxPayload: 64 * 1024, maxOptions: 32, onConnectionEnd: (_p, why) => ends.push(why) });
  port = (await server.listen({ port: 0 })).port!;
});

afterAll(async () => {
  await server?.close();
  await disk?.close();
});

/** A raw protocol client: we write bytes, and read exact replies. */
async function raw(): Promise<{ s: Socket; r: SocketReader; option: (type: number, data?: Buffer, length?: number) => Promise<{ type: number; data: Buffer; before: number }> }> {
  const s = connect({ host: '127.0.0.1', port });
  await new Promise((res) => s.once('connect', res));
  const r = new SocketReader(s, 'test');
  await r.read(18);
  s.write(Buffer.from([0, 0, 0, 3]));
  const option = async (type: number, data: Buffer = Buffer.alloc(0), length = data.length): Promise<{ type: number; data: Buffer; before: number }> => {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(IHAVEOPT);
    h.writeUInt32BE(type, 8);
    h.writeUInt32BE(length, 12);
    s.write(Buffer.concat([h, data]));
    // Replies up to the final one (ACK or an error); the count of those before it.
    for (let before = 0; ; before++) {
      const rh = await r.read(20);
      const rtype = rh.readUInt32BE(12);
      const data = await r.read(rh.readUInt32BE(16));
      if (rtype === 1 || rtype >= 0x80000000) return { type: rtype, data, before };
    }
  };
  return { s, r, option };
}

/** A connection in transmission (simple replies) on "disk". */
async function transmitting(): Promise<{ s: Socket; r: SocketReader; req: (type: number, offset: bigint, length: number, payload?: Buffer, flags?: number) => void }> {
  const c = await raw();
  const name = Buffer.from('disk');
  const h = Buffer.alloc(16);
  h.writeBigUInt64BE(IHAVEOPT);
  h.writeUInt32BE(1, 8);
  h.writeUInt32BE(name.length, 12);
  c.s.write(Buffer.concat([h, name]));
  await c.r.read(10);
  let cookie = 1n;
  const req = (type: number, offset: bigint, length: number, payload?: Buffer, flags = 0): void => {
    const b = Buffer.alloc(28);
    b.writeUInt32BE(0x25609513);
    b.writeUInt16BE(flags, 4);
    b.writeUInt16BE(type, 6);
    b.writeBigUInt64BE(cookie++, 8);
    b.writeBigUInt64BE(offset, 16);
    b.writeUInt32BE(length, 24);
    c.s.write(payload ? Buffer.concat([b, payload]) : b);
  };
  return { s: c.s, r: c.r, req };
}

async function simpleReply(r: SocketReader): Promise<{ error: number; cookie: bigint }> {
  const b = await r.read(16);
  expect(b.readUInt32BE(0)).toBe(0x67446698);
  return { error: b.readUInt32BE(4), cookie: b.readBigUInt64BE(8) };
}

async function closed(s: Socket): Promise<void> {
  if (s.destroyed || s.readableEnded) return;
  await new Promise<void>((res) => {
    s.once('close', () => res());
    s.resume();
  });
}

/** A well-behaved client still reads the right bytes. */
async function stillServes(): Promise<void> {
  const st = await NbdStorage.open(`nbd://127.0.0.1:${port}/disk`);
  const b = Buffer.alloc(1024);
  await st.read(b, 4096);
  await st.close();
  expect([b.readUInt32BE(0), b.readUInt32BE(512)]).toEqual([4096, 4608]);
}

describe('NBD server robustness', () => {
  it('unknown options get NBD_REP_ERR_UNSUP and negotiation goes on; huge option data is refused and hung up on', async () => {
    const c = await raw();
    expect((await c.option(99)).type).toBe(0x80000001);
    expect(await c.option(3)).toMatchObject({ type: 1, before: 1 }); // LIST still works: one SERVER reply, then ACK
    const big = await c.option(3, Buffer.alloc(0), 0x7fffffff);
    expect(big.type).toBe(0x80000009); // ERR_TOO_BIG
    await closed(c.s);
    await stillServes();
  });

  it('bad option magic and unknown client flags end the connection; haggling loops are cut off', async () => {
    const a = await raw();
    a.s.write(Buffer.alloc(16, 0xee));
    await closed(a.s);
    const b = connect({ host: '127.0.0.1', port });
    b.write(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    await closed(b);
    const c = await raw();
    let answered = 0;
    try {
      for (let i = 0; i < 100; i++) {
        await c.option(3);
        answered++;
      }
    } catch {
      // the server hung up
    }
    expect(answered).toBeLessThanOrEqual(32);
    expect(ends.some((w) => w?.includes('more than 32 options'))).toBe(true);
    await stillServes();
  });

  it('requests past the end, too long, unknown or with unknown flags get EINVAL/EOVERFLOW; many in flight are all answered', async () => {
    const t = await transmitting();
    t.req(0, BigInt(SIZE - 512), 1024); // read past the end
    t.req(0, 0xffffffffffffff00n, 512); // offset near 2^64
    t.req(0, 0n, 128 * 1024); // longer than the payload cap
    t.req(77, 0n, 512); // unknown command
    t.req(0, 0n, 512, undefined, 0x8000); // unknown flag
    t.req(1, BigInt(SIZE), 512, Buffer.alloc(512)); // write past the end
    const errors = new Map<bigint, number>();
    for (let i = 0; i < 6; i++) {
      const rep = await simpleReply(t.r);
      errors.set(rep.cookie, rep.error);
    }
    expect([...errors.entries()].sort((a, b) => Number(a[0] - b[0])).map(([, e]) => e)).toEqual([22, 22, 75, 22, 22, 28]);
    // 200 reads in flight at once, every one answered with its own data.
    for (let i = 0; i < 200; i++) t.req(0, BigInt(i * 512), 512);
    const seen = new Set<bigint>();
    for (let i = 0; i < 200; i++) {
      const rep = await simpleReply(t.r);
      expect(rep.error).toBe(0);
      const data = await t.r.read(512);
      expect(data.readUInt32BE(0)).toBe(Number(rep.cookie - 7n) * 512);
      seen.add(rep.cookie);
    }
    expect(seen.size).toBe(200);
    // A write larger than the payload cap cannot be skipped: an error, then the hang-up.
    t.req(1, 0n, 0x7fffffff);
    expect((await simpleReply(t.r)).error).toBe(22);
    await closed(t.s);
    await stillServes();
  });

  it('a request cut off mid-way, and a slow trickle, leave the server serving', async () => {
    const t = await transmitting();
    t.s.write(Buffer.from([0x25, 0x60, 0x95, 0x13, 0, 0, 0]));
    t.s.end();
    await closed(t.s);
    const slow = await transmitting();
    const b = Buffer.alloc(28);
    b.writeUInt32BE(0x25609513);
    b.writeBigUInt64BE(5n, 8);
    b.writeBigUInt64BE(512n, 16);
    b.writeUInt32BE(512, 24);
    for (const byte of b) {
      slow.s.write(Buffer.from([byte]));
      await new Promise((r) => setTimeout(r, 2));
    }
    const rep = await simpleReply(slow.r);
    expect(rep).toEqual({ error: 0, cookie: 5n });
    expect((await slow.r.read(512)).readUInt32BE(0)).toBe(512);
    slow.s.destroy();
    await stillServes();
  });

  it('survives 300 fuzzed client sequences with the export intact', async () => {
    const r = (await runNbdFuzz({ cases: 300, seed: 20261206, memoryMiB: 1024 })) as { cases: number; endings: Array<[string, number]> };
    expect(r.cases).toBe(300);
    // The sequences reach past negotiation into requests, not only bad magic.
    expect(r.endings.map(([w]) => w)).toContain('clean end');
  }, 120_000);
});

describe('NBD client against a lying server', () => {
  async function liar(script: (s: Socket, r: SocketReader) => Promise<void>): Promise<{ uri: string; close: () => void }> {
    const srv = createServer((s) => {
      const r = new SocketReader(s, 'liar');
      script(s, r).catch(() => s.destroy());
    });
    await new Promise<void>((res) => srv.listen(0, '127.0.0.1', () => res()));
    return { uri: `nbd://127.0.0.1:${(srv.address() as { port: number }).port}/x`, close: () => srv.close() };
  }
  const hello = (s: Socket): void => {
    const h = Buffer.alloc(18);
    h.writeBigUInt64BE(0x4e42444d41474943n);
    h.writeBigUInt64BE(IHAVEOPT, 8);
    h.writeUInt16BE(3, 16);
    s.write(h);
  };
  /** Answer every option with ERR_UNSUP except EXPORT_NAME, which gets `size`. */
  const negotiate = async (s: Socket, r: SocketReader, size: bigint): Promise<void> => {
    await r.read(4);
    for (;;) {
      const h = await r.read(16);
      const type = h.readUInt32BE(8);
      await r.read(h.readUInt32BE(12));
      if (type === 1) {
        const b = Buffer.alloc(10);
        b.writeBigUInt64BE(size);
        b.writeUInt16BE(1, 8);
        s.write(b);
        return;
      }
      const rep = Buffer.alloc(20);
      rep.writeBigUInt64BE(0x3e889045565a9n);
      rep.writeUInt32BE(type, 8);
      rep.writeUInt32BE(0x80000001, 12);
      s.write(rep);
    }
  };

  it('a reply to a cookie no request has closes the client with E_CORRUPT', async () => {
    const l = await liar(async (s, r) => {
      hello(s);
      await negotiate(s, r, 1048576n);
      const req = await r.read(28);
      const bad = Buffer.alloc(16);
      bad.writeUInt32BE(0x67446698);
      bad.writeBigUInt64BE(req.readBigUInt64BE(8) + 1000n, 8);
      s.write(bad);
    });
    const st = await NbdStorage.open(l.uri);
    await expect(st.read(Buffer.alloc(512), 0)).rejects.toMatchObject({ code: 'E_CORRUPT' });
    await st.close();
    l.close();
  });

  it('a size past 2^53 is refused with E_CORRUPT; a server that vanishes mid-read gives E_IO naming the URI', async () => {
    const huge = await liar(async (s, r) => {
      hello(s);
      await negotiate(s, r, 0xfffffffffffffe00n);
    });
    await expect(NbdStorage.open(huge.uri)).rejects.toMatchObject({ code: 'E_CORRUPT' });
    huge.close();
    const gone = await liar(async (s, r) => {
      hello(s);
      await negotiate(s, r, 1048576n);
      await r.read(28);
      s.destroy();
    });
    const st = await NbdStorage.open(gone.uri);
    await expect(st.read(Buffer.alloc(512), 0)).rejects.toMatchObject({ code: expect.stringMatching(/E_IO|E_CLOSED/), message: expect.stringContaining(gone.uri) });
    await st.close();
    gone.close();
  });
});
