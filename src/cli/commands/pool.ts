import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { VdiskError } from '../../errors.js';
import { parseLvAddress } from '../../storage/address.js';
import { changePool, type ControlOp, type ControlResult } from '../../pool/control.js';
import { Pool } from '../../pool/pool.js';
import { formatPoolHuman, poolReport, renderPoolSvg } from '../../pool/show.js';
import { parseSize } from '../../util/size.js';
import { action, collect, outputMode } from '../common.js';
import { makeProgress, noProgress } from '../progress.js';

interface DirOpt {
  dir?: string;
}

/** `VG/LV` or `DIR/VG/LV`, with `--dir` as the folder when the name has none. */
function lvName(text: string, o: DirOpt): { dir: string; vg: string; lv: string } {
  const a = parseLvAddress(`lvm:${text}`);
  return { ...a, dir: text.split('/').length > 2 ? a.dir : (o.dir ?? '.') };
}

/** The `FMT:SIZE` values of --new. */
function newImages(list: readonly string[]): Array<{ format: string; size: number }> {
  return list.map((text) => {
    const m = /^([a-z]+):(.+)$/i.exec(text);
    if (!m) throw new VdiskError('E_USAGE', `--new takes FMT:SIZE (e.g. vhd:1G), not "${text}"`);
    return { format: m[1]!, size: parseSize(m[2]!, '--new size') };
  });
}

async function withPool<T>(vg: string, dir: string | undefined, readOnly: boolean, fn: (p: Pool) => Promise<T>): Promise<T> {
  const pool = await Pool.open(vg, { dir, readOnly });
  try {
    for (const w of pool.warnings) process.stderr.write(`vdisk: warning: ${w}\n`);
    return await fn(pool);
  } finally {
    await pool.close();
  }
}

/**
 * A change that another vdisk process may be holding the pool for: sent through the
 * pool's control socket when one answers, made here otherwise.
 */
async function change(vg: string, dir: string | undefined, op: ControlOp): Promise<ControlResult & { via: 'holder' | 'local' }> {
  const r = await changePool(dir ?? '.', vg, op, { onWarning: (w) => process.stderr.write(`vdisk: warning: ${w}\n`) });
  if (r.via === 'holder') process.stderr.write(`vdisk: VG ${vg} is held by process ${String((r as { holder?: unknown }).holder ?? '?')}: the change was made there, through its control socket\n`);
  return r;
}

/** `vdisk pool`: LVM2 volume groups over images of any format, with LVM2's verbs. */
export function register(program: Command): void {
  const pool = program.command('pool').description('storage pools: LVM2 volume groups whose members are images of any format (LVs are addressed as lvm:[DIR/]VG/LV)');

  const create = pool
    .command('create')
    .description('create a VG over member images (vgcreate)')
    .argument('<vg>', 'volume group name')
    .argument('<members...>', 'member images')
    .option('--dir <dir>', 'pool folder (members are found here; default: the current one)')
    .option('--new <fmt:size>', 'create members that do not exist yet, e.g. vhd:1G (repeat: one per missing member, in order)', collect, [])
    .option('-s, --extent-size <size>', 'extent size', '4M')
    .option('--force', 'use members that hold a partition table, a filesystem or a PV');
  create.action(
    action(create, async (vg: string, members: string[], o: DirOpt & { new: string[]; extentSize: string; force?: boolean }) => {
      const p = await Pool.create(vg, members, { dir: o.dir, newImages: newImages(o.new), extentSize: parseSize(o.extentSize, 'extent size'), force: o.force });
      const r = poolReport(p);
      await p.close();
      process.stdout.write(`Volume group "${vg}" created: ${r.members.length} member(s), ${r.members.reduce((s, m) => s + m.extents, 0)} extents\n`);
    }),
  );

  const add = pool
    .command('add')
    .description('add a member image to a VG (vgextend)')
    .argument('<vg>', 'volume group')
    .argument('<member>', 'image to add')
    .option('--dir <dir>', 'pool folder')
    .option('--new <fmt:size>', 'create the member when it does not exist, e.g. vdi:2G', collect, [])
    .option('--force', 'use a member that holds a partition table, a filesystem or a PV');
  add.action(
    action(add, async (vg: string, member: string, o: DirOpt & { new: string[]; force?: boolean }) => {
      // The holder resolves nothing against our folder: send the member's absolute path.
      await change(vg, o.dir, { op: 'add', member: resolve(o.dir ?? '.', member), force: o.force, new: newImages(o.new) });
      process.stdout.write(`Volume group "${vg}" extended by ${member}\n`);
    }),
  );

  const remove = pool
    .command('remove')
    .description('move a member\'s extents onto the others in crash-safe chunks (pvmove), then take it out of the VG (vgreduce); re-run to finish an interrupted removal')
    .argument('<vg>', 'volume group')
    .argument('<member>', 'member image to remove')
    .option('--dir <dir>', 'pool folder')
    .option('-p, --progress', 'show progress');
  remove.action(
    action(remove, async (vg: string, member: string, o: DirOpt & { progress?: boolean }) => {
      await withPool(vg, o.dir, false, async (p) => {
        const bar = o.progress ? makeProgress('pool remove') : noProgress;
        try {
          const r = await p.remove(member, { progress: (d, t) => bar.update(d, t) });
          process.stdout.write(`Removed "${member}" from volume group "${vg}" (${r.movedExtents} extents moved)\n`);
        } finally {
          bar.stop();
        }
      });
    }),
  );

  const show = pool
    .command('show')
    .description('members, free space and LV segments of a VG; svg draws which extents each LV uses')
    .argument('<vg>', 'volume group')
    .option('--dir <dir>', 'pool folder')
    .option('--output <mode>', 'human, json or svg', 'human')
    .option('-o, --out <file>', 'write to FILE instead of standard output');
  show.action(
    action(show, async (vg: string, o: DirOpt & { output?: string; out?: string }) => {
      const mode = outputMode(o.output, ['human', 'json', 'svg'] as const, 'human');
      await withPool(vg, o.dir, true, async (p) => {
        const r = poolReport(p);
        const text = mode === 'json' ? `${JSON.stringify(r, null, 2)}\n` : mode === 'svg' ? renderPoolSvg(r) : `${formatPoolHuman(r)}\n`;
        if (o.out) await writeFile(o.out, text);
        else process.stdout.write(text);
      });
    }),
  );

  const check = pool
    .command('check')
    .description('check every member\'s label and metadata (vgck/pvck); -r writes the metadata to all members again (exit 0 clean, 2 problems)')
    .argument('<vg>', 'volume group')
    .option('--dir <dir>', 'pool folder')
    .option('-r, --repair', 'bring every member up to date');
  check.action(
    action(check, async (vg: string, o: DirOpt & { repair?: boolean }) => {
      return withPool(vg, o.dir, !o.repair, async (p) => {
        const r = await p.check(o.repair ?? false);
        for (const x of r.problems) process.stdout.write(`problem: ${x}\n`);
        for (const x of r.repaired) process.stdout.write(`repaired: ${x}\n`);
        if (r.problems.length === 0) process.stdout.write(`VG ${vg}: no problems found (seqno ${p.vg.seqno}, ${p.members.length} members)\n`);
        return r.problems.length > 0 && r.repaired.length === 0 ? 2 : 0;
      });
    }),
  );

  const lv = pool.command('lv').description('logical volumes: create, extend, reduce, remove');
  const lvCreate = lv
    .command('create')
    .description('create an LV (lvcreate)')
    .argument('<vg/lv>', 'VG/LV or DIR/VG/LV')
    .argument('<size>', 'size (rounded up to whole extents)')
    .option('--dir <dir>', 'pool folder')
    .option('-i, --stripes <n>', 'stripe over N members', '1')
    .option('-I, --stripe-size <size>', 'stripe size', '64K');
  lvCreate.action(
    action(lvCreate, async (name: string, size: string, o: DirOpt & { stripes: string; stripeSize: string }) => {
      const a = lvName(name, o);
      const stripes = Number(o.stripes);
      const r = await change(a.vg, a.dir, { op: 'lvCreate', lv: a.lv, size: parseSize(size), stripes, stripeSize: parseSize(o.stripeSize, 'stripe size') });
      process.stdout.write(`Logical volume "${a.lv}" created: ${String(r.size)} bytes\n`);
    }),
  );
  const resizeCmd = (verb: 'extend' | 'reduce'): void => {
    const c = lv
      .command(verb)
      .description(verb === 'extend' ? 'grow an LV (lvextend); +SIZE adds to it' : 'shrink an LV (lvreduce); -SIZE takes from it; refuses to cut a partition table\'s span')
      .argument('<vg/lv>', 'VG/LV or DIR/VG/LV')
      .argument('<size>', verb === 'extend' ? 'new size, or +SIZE' : 'new size, or -SIZE')
      .option('--dir <dir>', 'pool folder');
    c.action(
      action(c, async (name: string, size: string, o: DirOpt) => {
        const a = lvName(name, o);
        if (verb === 'extend') {
          const rel = size.startsWith('+');
          const r = await change(a.vg, a.dir, { op: 'lvExtend', lv: a.lv, size: parseSize(rel ? size.slice(1) : size), relative: rel });
          process.stdout.write(`Size of logical volume ${a.vg}/${a.lv} changed from ${String(r.from)} to ${String(r.to)} bytes\n`);
          return;
        }
        await withPool(a.vg, a.dir, false, async (p) => {
          const cur = p.lvSize(a.lv);
          const rel = size.startsWith('-');
          const n = parseSize(rel ? size.slice(1) : size);
          await p.lvReduce(a.lv, rel ? cur - n : n);
          process.stdout.write(`Size of logical volume ${a.vg}/${a.lv} changed from ${cur} to ${p.lvSize(a.lv)} bytes\n`);
        });
      }),
    );
  };
  resizeCmd('extend');
  resizeCmd('reduce');
  const lvRemove = lv.command('remove').description('remove an LV (lvremove)').argument('<vg/lv>', 'VG/LV or DIR/VG/LV').option('--dir <dir>', 'pool folder');
  lvRemove.action(
    action(lvRemove, async (name: string, o: DirOpt) => {
      const a = lvName(name, o);
      await withPool(a.vg, a.dir, false, async (p) => {
        await p.lvRemove(a.lv);
        process.stdout.write(`Logical volume "${a.lv}" removed\n`);
      });
    }),
  );
}
