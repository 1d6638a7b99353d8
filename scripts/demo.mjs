#!/usr/bin/env node
// The main job on bundled data: create an image, write to it, inspect it.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create } from '../dist/index.js';

const bin = new URL('../bin/vdisk.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'vdisk-demo-'));
const sh = (args) => {
  console.log(`$ vdisk ${args.join(' ')}`);
  process.stdout.write(execFileSync(process.execPath, [bin, ...args], { cwd: dir, encoding: 'utf8' }));
};
try {
  sh(['create', '-f', 'raw', 'disk.img', '64M']);
  const img = await create(join(dir, 'hello.img'), { format: 'raw', size: '16M' });
  await img.write(Buffer.from('hello from vdisk\n'.padEnd(512, '.')), 1024 * 1024);
  await img.close();
  console.log('(library) wrote 512 bytes at 1 MiB into hello.img');
  sh(['info', 'disk.img']);
  sh(['info', '--output', 'json', 'hello.img']);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
