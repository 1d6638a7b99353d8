/**
 * LVM2 as the judge of pools: raw member files attached to loop devices, and LVM2's
 * tools run with a private configuration that sees only those devices
 * (../shared/ORACLES.md), so nothing touches the host's own volume groups.
 */
import { execFile } from 'node:child_process';
import { open as fsOpen } from 'node:fs/promises';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { findTool } from './oracle.js';

const execFileP = promisify(execFile);

/** The LVM2 tools the pool tests use (and losetup). */
export const LVM_TOOLS = ['losetup', 'pvcreate', 'vgcreate', 'lvcreate', 'pvs', 'vgs', 'lvs', 'pvck', 'vgck'];

/** LVM2 on a set of loop devices. */
export interface LvmSession {
  /** /dev/loopN for each file, in order. */
  devices: string[];
  /** Run an LVM2 command; throws with its output on a non-zero exit. */
  lvm(cmd: string, args: readonly string[]): Promise<string>;
  /** Run an LVM2 command; returns code and output. */
  lvmRun(cmd: string, args: readonly string[]): Promise<{ code: number; out: string }>;
  /** `--reportformat json` of pvs/vgs/lvs, parsed to rows. */
  report(cmd: 'pvs' | 'vgs' | 'lvs', fields: string, extra?: readonly string[]): Promise<Array<Record<string, string>>>;
}

async function attach(file: string): Promise<string> {
  // losetup -f can race with another test file taking the same device: retry.
  for (let i = 0; ; i++) {
    try {
      const { stdout } = await execFileP(findTool('losetup')!, ['-f', '--show', file]);
      return stdout.trim();
    } catch (e) {
      if (i >= 5) throw e;
      await new Promise((r) => setTimeout(r, 100 * (i + 1)));
    }
  }
}

/** Attach `files` to loop devices, run `fn` with LVM2 seeing only them, and detach. */
export async function withLvm<T>(files: readonly string[], fn: (s: LvmSession) => Promise<T>): Promise<T> {
  const conf = await mkdtemp(join(tmpdir(), 'vdisk-lvm-'));
  const devices: string[] = [];
  try {
    for (const f of files) devices.push(await attach(f));
    const accept = devices.map((d) => `"a|^${d}$|"`).join(', ');
    await writeFile(
      join(conf, 'lvm.conf'),
      `devices { filter = [ ${accept}, "r|.*|" ] global_filter = [ ${accept}, "r|.*|" ] obtain_device_list_from_udev = 0 use_devicesfile = 0 scan = [ "/dev" ] }\n` +
        'activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }\nbackup { backup = 0 archive = 0 }\nglobal { locking_dir = "' +
        conf +
        '" }\n',
    );
    const env = { ...process.env, LVM_SYSTEM_DIR: conf, LVM_SUPPRESS_FD_WARNINGS: '1', PATH: `${process.env.PATH}:/usr/sbin:/sbin` };
    const lvmRun = async (cmd: string, args: readonly string[]): Promise<{ code: number; out: string }> => {
      try {
        const { stdout, stderr } = await execFileP(findTool(cmd) ?? cmd, args, { env, encoding: 'utf8' });
        return { code: 0, out: stdout + stderr };
      } catch (e) {
        const x = e as { code?: number; stdout?: string; stderr?: string };
        return { code: typeof x.code === 'number' ? x.code : 1, out: (x.stdout ?? '') + (x.stderr ?? '') };
      }
    };
    const lvm = async (cmd: string, args: readonly string[]): Promise<string> => {
      const r = await lvmRun(cmd, args);
      if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}):\n${r.out}`);
      return r.out;
    };
    const report = async (cmd: 'pvs' | 'vgs' | 'lvs', fields: string, extra: readonly string[] = []): Promise<Array<Record<string, string>>> => {
      const { stdout } = await execFileP(findTool(cmd) ?? cmd, ['--reportformat', 'json', '--units', 'b', '--nosuffix', '-o', fields, ...extra], { env, encoding: 'utf8' });
      const j = JSON.parse(stdout) as { report: Array<Record<string, Array<Record<string, string>>>> };
      return Object.values(j.report[0]!)[0]!;
    };
    return await fn({ devices, lvm, lvmRun, report });
  } finally {
    for (const d of devices) await execFileP(findTool('losetup')!, ['-d', d]).catch(() => undefined);
    await rm(conf, { recursive: true, force: true });
  }
}

/** Where LVM2's reports put each byte run of LV `lv`: [lvOffset, file, fileOffset, length]. */
export async function lvmPlacement(s: LvmSession, vg: string, lv: string, files: Map<string, string>): Promise<Array<[number, string, number, number]>> {
  const pvs = await s.report('pvs', 'pv_name,pe_start');
  const peStart = new Map(pvs.map((p) => [p.pv_name!, Number(p.pe_start)]));
  const [vgRow] = await s.report('vgs', 'vg_extent_size', [vg]);
  const E = Number(vgRow!.vg_extent_size);
  const segs = await s.report('lvs', 'lv_name,seg_start_pe,seg_size_pe,stripes,stripe_size,seg_pe_ranges', ['--segments', `${vg}/${lv}`]);
  const out: Array<[number, string, number, number]> = [];
  for (const g of segs) {
    const start = Number(g.seg_start_pe) * E;
    const size = Number(g.seg_size_pe) * E;
    const ranges = g.seg_pe_ranges!.trim().split(/\s+/).map((r) => {
      const m = /^(.+):(\d+)-(\d+)$/.exec(r)!;
      return { dev: m[1]!, pe: Number(m[2]) };
    });
    const k = Number(g.stripes);
    const chunk = k > 1 ? Number(g.stripe_size) : size;
    for (let rel = 0; rel < size; rel += chunk) {
      const c = rel / chunk;
      const r = ranges[c % k]!;
      const row = Math.floor(c / k);
      out.push([start + rel, files.get(r.dev)!, peStart.get(r.dev)! + r.pe * E + row * chunk, chunk]);
    }
  }
  return out;
}

/** `length` bytes of `file` at `offset`. */
export async function readAt(file: string, offset: number, length: number): Promise<Buffer> {
  const fh = await fsOpen(file, 'r');
  try {
    const b = Buffer.alloc(length);
    await fh.read(b, 0, length, offset);
    return b;
  } finally {
    await fh.close();
  }
}
