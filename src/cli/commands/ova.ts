import type { Command } from 'commander';
import { VdiskError } from '../../errors.js';
import type { ControllerKind } from '../../formats/ovf/descriptor.js';
import type { PackageProgress } from '../../ops/ova.js';

/** The OVF/OVA code (XML parser, tar and zip readers), loaded only when an ova command runs. */
const ovf = async () => ({
  ...(await import('../../formats/ovf/descriptor.js')),
  ...(await import('../../formats/ovf/package.js')),
  ...(await import('../../ops/ova.js')),
});
import { action, collect, outputMode } from '../common.js';

function wholeNumber(flag: string, v: string | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (!/^\d+$/.test(v)) throw new VdiskError('E_USAGE', `${flag} must be a whole number, not "${v}"`);
  return Number(v);
}

/** qemu-img style `(12.34/100%)` progress on stderr. */
function progressPrinter(enabled: boolean | undefined): PackageProgress | undefined {
  if (!enabled) return undefined;
  let last = -1;
  return (done, total) => {
    const pct = total > 0 ? Math.floor((done / total) * 10000) / 100 : 100;
    if (pct === last) return;
    last = pct;
    process.stderr.write(`\r    (${pct.toFixed(2)}/100%)`);
    if (done >= total) process.stderr.write('\n');
  };
}

/** `vdisk ova create|info|verify|extract`: OVF appliances. */
export function register(program: Command): void {
  const ova = program.command('ova').description('OVF/OVA appliances: package disks, describe, verify and extract (also from zip)');

  const c = ova
    .command('create')
    .description('package disks as an OVA: streamOptimized VMDKs, an OVF descriptor and a manifest in a ustar')
    .argument('<out>', 'OVA file to write')
    .argument('<disks...>', 'disk images (any format vdisk opens)')
    .requiredOption('--name <name>', 'virtual machine name')
    .option('--cpus <n>', 'virtual CPUs', '1')
    .option('--memory <MiB>', 'memory in MiB', '1024')
    .option('--os <id>', 'CIM OsType id (1 Other, 36 Linux, 101 Linux 64-bit, ...)', '1')
    .option('--network <name>', 'a network with one E1000 adapter (repeatable; default "VM Network")', collect, [])
    .option('--controller <kind>', 'disk controller: ide, scsi or sata', 'scsi')
    .option('--ovf-version <v>', 'OVF 1 or 2', '1')
    .option('--sha1', 'SHA1 manifest (for old importers) instead of SHA256')
    .option('--force', 'replace an existing OVA')
    .option('-p, --progress', 'show progress');
  c.action(
    action(
      c,
      async (
        out: string,
        disks: string[],
        o: { name: string; cpus: string; memory: string; os: string; network: string[]; controller: string; ovfVersion: string; sha1?: boolean; force?: boolean; progress?: boolean },
      ) => {
        const { CONTROLLERS, createOva } = await ovf();
        if (!(o.controller in CONTROLLERS)) throw new VdiskError('E_USAGE', `--controller must be ide, scsi or sata, not "${o.controller}"`);
        const v = o.ovfVersion.replace(/\.0$/, '');
        if (v !== '1' && v !== '2') throw new VdiskError('E_USAGE', `--ovf-version must be 1 or 2, not "${o.ovfVersion}"`);
        await createOva(out, disks, {
          name: o.name,
          cpus: wholeNumber('--cpus', o.cpus, 1),
          memoryMiB: wholeNumber('--memory', o.memory, 1024),
          osId: wholeNumber('--os', o.os, 1),
          networks: o.network,
          controller: o.controller as ControllerKind,
          ovfVersion: v === '2' ? '2.0' : '1.0',
          algorithm: o.sha1 ? 'SHA1' : 'SHA256',
          force: o.force,
          onProgress: progressPrinter(o.progress),
        });
      },
    ),
  );

  const i = ova
    .command('info')
    .description('describe an appliance: name, CPUs, memory, disks, networks, manifest')
    .argument('<file>', '.ova, .ovf or .zip')
    .option('--output <mode>', 'human or json', 'human');
  i.action(
    action(i, async (file: string, o: { output?: string }) => {
      const mode = outputMode(o.output, ['human', 'json'] as const, 'human');
      const { openPackage, describePackage } = await ovf();
      const { formatPackageInfoHuman } = await import('../human.js');
      const pkg = await openPackage(file);
      try {
        const info = describePackage(pkg);
        process.stdout.write(mode === 'json' ? `${JSON.stringify(info, null, 4)}\n` : `${formatPackageInfoHuman(info)}\n`);
      } finally {
        await pkg.close();
      }
    }),
  );

  const v = ova
    .command('verify')
    .description('check every manifest digest (exit 1 on a mismatch or a missing manifest)')
    .argument('<file>', '.ova, .ovf or .zip')
    .option('--output <mode>', 'human or json', 'human')
    .option('-p, --progress', 'show progress');
  v.action(
    action(v, async (file: string, o: { output?: string; progress?: boolean }) => {
      const mode = outputMode(o.output, ['human', 'json'] as const, 'human');
      const { openPackage, verifyPackage } = await ovf();
      const pkg = await openPackage(file);
      try {
        const res = await verifyPackage(pkg, progressPrinter(o.progress));
        if (mode === 'json') {
          process.stdout.write(`${JSON.stringify(res, null, 4)}\n`);
        } else {
          for (const l of res.lines) process.stdout.write(`${l.status === 'ok' ? 'OK      ' : l.status === 'missing' ? 'MISSING ' : 'MISMATCH'} ${l.algorithm}(${l.name})\n`);
          for (const p of res.problems) process.stderr.write(`vdisk: ${p}\n`);
          process.stdout.write(res.ok ? 'manifest verified\n' : 'manifest check FAILED\n');
        }
        return res.ok ? 0 : 1;
      } finally {
        await pkg.close();
      }
    }),
  );

  const x = ova
    .command('extract')
    .description('write the package files (or, with -O, the disks converted) into DIR; verifies the manifest first')
    .argument('<file>', '.ova, .ovf or .zip')
    .argument('<dir>', 'folder to write into (created if missing)')
    .option('-O, --output-format <fmt>', 'convert the disks to vhd, vdi, vmdk or raw')
    .option('--no-verify', 'extract even if the manifest does not match')
    .option('--force', 'replace existing files in DIR')
    .option('-q, --quiet', 'print nothing on success')
    .option('-p, --progress', 'show progress');
  x.action(
    action(x, async (file: string, dir: string, o: { outputFormat?: string; verify: boolean; force?: boolean; quiet?: boolean; progress?: boolean }) => {
      const { extractPackage } = await ovf();
      const written = await extractPackage(file, dir, { format: o.outputFormat, noVerify: !o.verify, force: o.force, onProgress: progressPrinter(o.progress) });
      if (!o.quiet) for (const w of written) process.stdout.write(`${w}\n`);
    }),
  );
}
