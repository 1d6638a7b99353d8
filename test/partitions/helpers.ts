/** Shared helpers for the partition tests: images made by sfdisk/sgdisk, and what they print. */
import { readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RawImage } from '../../src/formats/raw/index.js';
import { MemoryStorage } from '../../src/storage/memory.js';
import { run, runOk } from '../helpers/oracle.js';

/** One partition as `sfdisk --json` prints it. */
export interface SfdiskPartition {
  node: string;
  start: number;
  size: number;
  type: string;
  uuid?: string;
  name?: string;
  attrs?: string;
  bootable?: boolean;
}

/** `sfdisk --json`'s partitiontable object. */
export interface SfdiskTable {
  label: 'gpt' | 'dos';
  id: string;
  firstlba?: number;
  lastlba?: number;
  partitions: SfdiskPartition[];
}

/** A fresh sparse raw file of `sizeMiB` MiB. */
export async function blankImage(dir: string, name: string, sizeMiB: number): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, '');
  await truncate(path, sizeMiB * 1024 * 1024);
  return path;
}

/** Write an sfdisk script into a fresh sparse raw file of `sizeMiB` MiB. */
export async function sfdiskImage(dir: string, name: string, sizeMiB: number, script: string): Promise<string> {
  const path = await blankImage(dir, name, sizeMiB);
  const r = await run('sh', ['-c', 'printf "%s" "$1" | sfdisk -q --no-reread --no-tell-kernel "$0"', path, script]);
  if (r.code !== 0) throw new Error(`sfdisk failed: ${r.stderr}`);
  return path;
}

/** `sfdisk --json` of a file. */
export async function sfdiskJson(path: string): Promise<SfdiskTable> {
  return (JSON.parse(await runOk('sfdisk', ['--json', path])) as { partitiontable: SfdiskTable }).partitiontable;
}

/** Partition number from an sfdisk node name (`/tmp/x/disk.img5` → 5). */
export function nodeIndex(node: string): number {
  return Number(/(\d+)$/.exec(node)![1]);
}

/** `sfdisk -l -o Device,Type`: partition number → type name as util-linux names it. */
export async function sfdiskTypeNames(path: string): Promise<Map<number, string>> {
  const out = await runOk('sfdisk', ['-l', '-o', 'Device,Type', path]);
  const lines = out.split('\n');
  const head = lines.findIndex((l) => /^Device\s+Type/.test(l));
  const map = new Map<number, string>();
  for (const l of lines.slice(head + 1)) {
    const m = /^(\S+?)(\d+)\s+(.*\S)\s*$/.exec(l);
    if (m) map.set(Number(m[2]), m[3]!);
  }
  return map;
}

/** One row of `sgdisk -p`. */
export interface SgdiskRow {
  index: number;
  start: number;
  end: number;
  code: string;
  name: string;
}

/** `sgdisk -p` rows, plus its disk GUID and usable range. */
export async function sgdiskPrint(path: string): Promise<{ guid: string; first: number; last: number; rows: SgdiskRow[] }> {
  const out = await runOk('sgdisk', ['-p', path]);
  const guid = /Disk identifier \(GUID\): (\S+)/.exec(out)![1]!;
  const usable = /First usable sector is (\d+), last usable sector is (\d+)/.exec(out)!;
  const rows: SgdiskRow[] = [];
  for (const l of out.split('\n')) {
    const m = /^\s+(\d+)\s+(\d+)\s+(\d+)\s+\S+ \S+\s+([0-9A-F]{4})\s\s(.*)$/.exec(l);
    if (m) rows.push({ index: Number(m[1]), start: Number(m[2]), end: Number(m[3]), code: m[4]!, name: m[5]! });
  }
  return { guid, first: Number(usable[1]), last: Number(usable[2]), rows };
}

/**
 * `sgdisk -v`: clean when it exits 0, says "No problems found" and warns of no damaged
 * header or table (it regenerates a bad backup in memory and then says "No problems
 * found", so its CRC report on stderr must be read too).
 */
export async function sgdiskVerify(path: string): Promise<{ clean: boolean; output: string }> {
  const r = await run('sgdisk', ['-v', path]);
  const output = r.stdout + r.stderr;
  const damaged = /ERROR|corrupt GPT|CRCs don't match|Problem:|invalid/i.test(output);
  return { clean: r.code === 0 && /No problems found/.test(output) && !damaged, output };
}

/** A writable raw device over a copy of `data`, in memory. */
export function memoryDisk(data: Uint8Array, name = 'memory.img'): RawImage {
  return new RawImage(new MemoryStorage(data, { name }), false);
}

/** The bytes of a file. */
export function bytesOf(path: string): Promise<Buffer> {
  return readFile(path);
}

/** What `sgdisk -i N` prints about one partition. */
export interface SgdiskInfo {
  typeGuid: string;
  guid: string;
  first: number;
  last: number;
  attributes: string;
  name: string;
}

/** `sgdisk -i N` of one partition (full name, unlike `-p`, which shortens long names). */
export async function sgdiskInfo(path: string, index: number): Promise<SgdiskInfo> {
  const out = await runOk('sgdisk', ['-i', String(index), path]);
  const field = (re: RegExp): string => re.exec(out)![1]!;
  return {
    typeGuid: field(/Partition GUID code: (\S+)/),
    guid: field(/Partition unique GUID: (\S+)/),
    first: Number(field(/First sector: (\d+)/)),
    last: Number(field(/Last sector: (\d+)/)),
    attributes: field(/Attribute flags: ([0-9A-Fa-f]+)/).toLowerCase(),
    name: field(/Partition name: '(.*)'\n/),
  };
}
