/**
 * A damaged qcow2 header is refused with structured data: the field as qcow2.txt
 * names it, its offset in the file and the value read (tests match on those, not on
 * the message text).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Qcow2Field } from '../../../src/formats/qcow2/layout.js';
import { openLocation } from '../../../src/formats/registry.js';
import { MemoryLocation } from '../../../src/storage/location.js';
import { MemoryStorage } from '../../../src/storage/memory.js';

const BASE = readFileSync(new URL('../../../fixtures/qcow2/qemu72-v2-512-base.qcow2', import.meta.url));

/** The error opening BASE with `edit` applied (as qcow2, so a bad magic is judged by the driver). */
async function openError(edit: (b: Buffer) => void): Promise<unknown> {
  const b = Buffer.from(BASE);
  edit(b);
  const loc = new MemoryLocation('h.qcow2', new Map([['h.qcow2', new MemoryStorage(b, { name: 'h.qcow2' })]]));
  return openLocation(loc, { readOnly: true, format: 'qcow2' }).then(
    (img) => img.close().then(() => undefined),
    (e: unknown) => e,
  );
}

describe('qcow2 header refusals carry the field, its offset and the value', () => {
  const cases: Array<[string, (b: Buffer) => void, { code: string; field: string; offset: number; value: number | string }]> = [
    ['no magic', (b) => b.writeUInt32BE(0x12345678, Qcow2Field.magic), { code: 'E_FORMAT', field: 'magic', offset: 0, value: 0x12345678 }],
    ['version 4', (b) => b.writeUInt32BE(4, Qcow2Field.version), { code: 'E_UNSUPPORTED', field: 'version', offset: 4, value: 4 }],
    ['size past 2^53', (b) => b.writeBigUInt64BE(0xffffffffffffffffn, Qcow2Field.size), { code: 'E_CORRUPT', field: 'size', offset: 24, value: '18446744073709551615' }],
    ['cluster_bits 30', (b) => b.writeUInt32BE(30, Qcow2Field.clusterBits), { code: 'E_CORRUPT', field: 'cluster_bits', offset: 20, value: 30 }],
    ['encrypted', (b) => b.writeUInt32BE(1, Qcow2Field.cryptMethod), { code: 'E_UNSUPPORTED', field: 'crypt_method', offset: 32, value: 1 }],
    ['l1_size 0 for a non-empty disk', (b) => b.writeUInt32BE(0, Qcow2Field.l1Size), { code: 'E_CORRUPT', field: 'l1_size', offset: 36, value: 0 }],
    ['refcount_table_clusters 0', (b) => b.writeUInt32BE(0, Qcow2Field.refcountTableClusters), { code: 'E_CORRUPT', field: 'refcount_table_clusters', offset: 56, value: 0 }],
    ['l1_table_offset unaligned', (b) => b.writeBigUInt64BE(BigInt(b.readBigUInt64BE(Qcow2Field.l1TableOffset)) + 8n, Qcow2Field.l1TableOffset), { code: 'E_CORRUPT', field: 'l1_table_offset', offset: 40, value: Number(BASE.readBigUInt64BE(Qcow2Field.l1TableOffset)) + 8 }],
  ];
  for (const [label, edit, want] of cases) {
    it(`${label}: ${want.code} at ${want.field}`, async () => {
      expect(await openError(edit)).toMatchObject({ file: 'h.qcow2', ...want });
    });
  }
});
