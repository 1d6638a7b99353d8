/**
 * Structured errors: a VdiskError carries its code and data (file, field, offset,
 * value) and gives them as toJSON(); `--output json` makes the CLI print an error as
 * one JSON line on stderr. Matched on fields, not message text.
 */
import { open as fsOpen, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { VdiskError, fromSystemError } from '../../src/errors.js';
import { VdiField } from '../../src/formats/vdi/layout.js';
import { open } from '../../src/formats/registry.js';
import { vdisk } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';

/** The error a failed `--output json` run printed. */
function jsonError(stderr: string): Record<string, unknown> {
  const lines = stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  return (JSON.parse(lines[0]!) as { error: Record<string, unknown> }).error;
}

describe('VdiskError data', () => {
  it('toJSON gives the code, the message and only the data the error carries', () => {
    const e = new VdiskError('E_CORRUPT', 'x.vdi: cbBlock 3 is bad', { file: 'x.vdi', field: 'cbBlock', offset: 0x178, value: 3 });
    expect(JSON.parse(JSON.stringify(e))).toEqual({ name: 'VdiskError', code: 'E_CORRUPT', message: 'x.vdi: cbBlock 3 is bad', file: 'x.vdi', field: 'cbBlock', offset: 0x178, value: 3 });
    expect(new VdiskError('E_USAGE', 'bad').toJSON()).toEqual({ name: 'VdiskError', code: 'E_USAGE', message: 'bad' });
    const sys = fromSystemError(Object.assign(new Error('gone'), { code: 'ENOENT' }), 'a/b.img');
    expect(sys).toMatchObject({ code: 'E_NOENT', file: 'a/b.img' });
  });
});

describe('vdisk --output json errors', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await tempDir('errors-');
  });

  it('a missing file: E_NOENT naming the file, as one JSON line; the human form is unchanged', async () => {
    const r = await vdisk(['info', '--output', 'json', 'missing.img'], dir);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(jsonError(r.stderr)).toMatchObject({ name: 'VdiskError', code: 'E_NOENT', file: 'missing.img' });
    const h = await vdisk(['info', 'missing.img'], dir);
    expect(h.stderr).toMatch(/^vdisk: missing\.img: /);
  });

  it('a damaged VDI header field: E_CORRUPT with the field, its offset in the file and the value read', async () => {
    const f = join(dir, 'bad.vdi');
    expect((await vdisk(['create', '-f', 'vdi', f, '4M'], dir)).code).toBe(0);
    const fh = await fsOpen(f, 'r+');
    const b = Buffer.alloc(4);
    b.writeUInt32LE(3);
    await fh.write(b, 0, 4, VdiField.cbBlock);
    await fh.close();
    for (const cmd of [['info'], ['check'], ['map']]) {
      const r = await vdisk([...cmd, '--output', 'json', f], dir);
      expect(r.code, cmd[0]).not.toBe(0);
      expect(jsonError(r.stderr), cmd[0]).toMatchObject({ code: 'E_CORRUPT', file: f, field: 'cbBlock', offset: VdiField.cbBlock, value: 3 });
    }
    await expect(open(f)).rejects.toMatchObject({ code: 'E_CORRUPT', field: 'cbBlock', value: 3 });
  });

  it('a VMDK extent leading out of the folder: E_PATH with the reference and what it is', async () => {
    const desc = ['# Disk DescriptorFile', 'version=1', 'CID=fffffffe', 'parentCID=ffffffff', 'createType="monolithicFlat"', '', 'RW 2048 FLAT "../outside.bin" 0', ''].join('\n');
    await writeFile(join(dir, 'd.vmdk'), desc);
    const r = await vdisk(['info', '--output', 'json', 'd.vmdk'], dir);
    expect(r.code).toBe(1);
    expect(jsonError(r.stderr)).toMatchObject({ code: 'E_PATH', file: 'd.vmdk', field: 'extent file', value: '../outside.bin' });
  });
});
