#!/usr/bin/env node
// The main job on bundled data: make a small bootable disk, convert it between the
// formats, look at it (info, map, check, compare), package it as an OVA, serve it
// over NBD and read it back through its nbd:// URI, boot it in the bundled emulator,
// and pool a VHD, a VDI and a VMDK into an LVM2 volume group whose LV grows while in
// use. Everything happens in a temporary folder.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create } from '../dist/index.js';
import { Pool } from '../dist/pool/index.js';

const bin = new URL('../bin/vdisk.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'vdisk-demo-'));
const sh = (args) => {
  console.log(`\n$ vdisk ${args.join(' ')}`);
  process.stdout.write(execFileSync(process.execPath, [bin, ...args], { cwd: dir, encoding: 'utf8' }));
};

/** A boot sector (8086 machine code, written out here byte by byte) that prints a line through INT 10h and spins. */
function bootSector(text) {
  const code = [
    0x31, 0xc0, //       xor ax, ax
    0x8e, 0xd8, //       mov ds, ax
    0x31, 0xdb, //       xor bx, bx        ; page 0
    0xbe, 0x00, 0x00, // mov si, msg       ; patched below
    0xb4, 0x0e, //       mov ah, 0Eh       ; teletype output
    0xac, //       .next: lodsb
    0x08, 0xc0, //       or al, al
    0x74, 0x04, //       jz .done
    0xcd, 0x10, //       int 10h
    0xeb, 0xf7, //       jmp .next
    0xeb, 0xfe, // .done: jmp .done
  ];
  const sector = Buffer.alloc(512);
  Buffer.from(code).copy(sector);
  sector.writeUInt16LE(0x7c00 + code.length, 7);
  Buffer.from(`${text}\r\n\0`, 'latin1').copy(sector, code.length);
  sector.writeUInt16LE(0xaa55, 510);
  return sector;
}

/** `vdisk serve ARGS` in the background while `fn(uri)` runs; stopped with SIGTERM after. */
async function withServer(args, fn) {
  console.log(`\n$ vdisk serve ${args.join(' ')} &`);
  const server = spawn(process.execPath, [bin, 'serve', ...args], { cwd: dir, stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const uri = await new Promise((resolve, reject) => {
      let out = '';
      server.stdout.on('data', (b) => {
        out += b;
        const m = /serving (nbd:\/\/\S+)/.exec(out);
        if (m) {
          process.stdout.write(out);
          resolve(m[1]);
        }
      });
      server.on('exit', (code) => reject(new Error(`vdisk serve exited with ${code}`)));
    });
    await fn(uri);
  } finally {
    server.kill('SIGTERM');
    await new Promise((resolve) => (server.exitCode !== null ? resolve() : server.once('exit', resolve)));
  }
}

/** The VHD served read-only and read back through its nbd:// URI. */
async function serveAndRead() {
  await withServer(['-r', '--port', '0', 'hello.vhd'], async (uri) => {
    sh(['info', uri]);
    sh(['map', uri]);
    sh(['compare', 'hello.img', uri]);
    sh(['convert', '-O', 'vdi', uri, 'from-nbd.vdi']);
    sh(['compare', 'hello.vdi', 'from-nbd.vdi']);
  });
}

/**
 * A pool over a VHD, a VDI and a VMDK: an LV written, then (library) a member added
 * and the LV extended while writers keep using it; the picture of it written as SVG.
 */
async function pool() {
  sh(['pool', 'create', 'vg0', 'm1.vhd', 'm2.vdi', 'm3.vmdk', '--new', 'vhd:24M', '--new', 'vdi:24M', '--new', 'vmdk:24M']);
  sh(['pool', 'lv', 'create', 'vg0/data', '40M']);
  sh(['convert', '-O', 'lvm', 'hello.img', 'lvm:vg0/boot']);
  const vg = await Pool.open('vg0', { dir });
  const lv = vg.openLv('data');
  const sizeBefore = lv.size;
  // Writers keep filling 64 KiB blocks while a member joins and the LV grows under them.
  let stop = false;
  let writes = 0;
  const writer = (async () => {
    for (let i = 0; !stop; i++) {
      const off = (i * 65536) % lv.size;
      await lv.write(Buffer.alloc(65536, i & 0xff), off);
      writes++;
      await new Promise((r) => setImmediate(r));
    }
  })();
  await vg.add('m4.vhd', { newImages: [{ format: 'vhd', size: 32 << 20 }] });
  await vg.lvExtend('data', 64 << 20);
  await lv.write(Buffer.alloc(4096, 0xee), lv.size - 4096);
  stop = true;
  await writer;
  const tail = Buffer.alloc(4096);
  await lv.read(tail, lv.size - 4096);
  await vg.close();
  console.log(`\n(library) added m4.vhd and extended vg0/data from ${sizeBefore >> 20} MiB to ${lv.size >> 20} MiB while it was open; ${writes} writes meanwhile, none failed; the new end reads back ${tail.every((b) => b === 0xee) ? 'as written' : 'WRONG'}`);
  sh(['pool', 'show', 'vg0']);
  sh(['pool', 'show', 'vg0', '--output', 'svg', '-o', 'pool.svg']);
  console.log(`  pool.svg ${statSync(join(dir, 'pool.svg')).size} bytes`);
  sh(['pool', 'check', 'vg0']);
  sh(['info', 'lvm:vg0/data']);
  sh(['compare', 'hello.img', 'lvm:vg0/boot']);
  sh(['boot', '--snapshot', 'lvm:vg0/boot', '--expect', 'Hello from a disk vdisk made', '--timeout', '20']);
  // The LV served over NBD; the server holds the pool, and an extend from another
  // process reaches it through the pool's control socket.
  await withServer(['--port', '0', 'lvm:vg0/data=data'], async (uri) => {
    sh(['info', uri]);
    sh(['pool', 'lv', 'extend', 'vg0/data', '+8M']);
    sh(['info', uri]);
    // Read back through the client: every byte the server sends equals the LV's.
    sh(['compare', 'lvm:vg0/data', uri]);
  });
}

try {
  sh(['create', '-f', 'raw', 'disk.img', '64M']);
  const img = await create(join(dir, 'hello.img'), { format: 'raw', size: '16M' });
  await img.write(bootSector('Hello from a disk vdisk made'), 0);
  await img.write(Buffer.alloc(3 * 1024 * 1024, 0x5a), 4 * 1024 * 1024);
  await img.close();
  console.log('\n(library) wrote a boot sector and 3 MiB of data into hello.img');
  sh(['info', 'hello.img']);
  sh(['convert', '-O', 'vhd', 'hello.img', 'hello.vhd']);
  sh(['convert', '-O', 'vdi', 'hello.vhd', 'hello.vdi']);
  sh(['convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', 'hello.vdi', 'hello.vmdk']);
  for (const f of ['hello.img', 'hello.vhd', 'hello.vdi', 'hello.vmdk']) console.log(`  ${f.padEnd(11)} ${statSync(join(dir, f)).size} bytes on disk`);
  sh(['compare', 'hello.img', 'hello.vmdk']);
  sh(['map', 'hello.vdi']);
  sh(['map', '--output', 'json', 'hello.vhd']);
  sh(['check', 'hello.vdi']);
  sh(['create', '-f', 'vhd', '-b', 'hello.vhd', 'child.vhd']);
  sh(['info', '--backing-chain', 'child.vhd']);
  sh(['ova', 'create', 'hello.ova', '--name', 'hello', '--memory', '64', 'hello.vhd']);
  sh(['ova', 'info', 'hello.ova']);
  sh(['info', 'hello.ova:hello-disk1.vmdk']);
  await serveAndRead();
  sh(['boot', '--snapshot', 'hello.ova:hello-disk1.vmdk', '--expect', 'Hello from a disk vdisk made', '--timeout', '20']);
  await pool();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
