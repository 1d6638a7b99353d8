import { basename, extname, resolve } from 'node:path';
import type { Command } from 'commander';
import type { DiskImage } from '../../device/block-device.js';
import { VdiskError } from '../../errors.js';
import { open } from '../../formats/registry.js';
import { NbdServer, type NbdExport } from '../../nbd/server.js';
import { isLvAddress, parseLvAddress } from '../../storage/address.js';
import { holdPool, type HeldPool } from '../../pool/control.js';
import { readPskFile } from '../../storage/nbd/tls.js';
import { action, collect } from '../common.js';

interface ServeOptions {
  port: string;
  bind: string;
  unix?: string;
  readOnly?: boolean;
  tls: string;
  tlsPsk?: string;
  format?: string;
  allowPath: string[];
}

/** `IMAGE=NAME` or `IMAGE` (named after its file, without the extension). */
export function exportSpec(arg: string): { image: string; name: string } {
  const eq = arg.lastIndexOf('=');
  // A name holds no '/' or ':', so `a=b/c.vhd` is a path, not IMAGE=NAME.
  if (eq > 0 && !/[/:]/.test(arg.slice(eq + 1))) return { image: arg.slice(0, eq), name: arg.slice(eq + 1) };
  const file = basename(arg.replace(/^.*:/, ''));
  return { image: arg, name: file.slice(0, file.length - extname(file).length) || file };
}

/** `vdisk serve`: images as NBD exports. */
export function register(program: Command): void {
  const cmd = program
    .command('serve')
    .description('serve images as NBD exports (qemu, nbdinfo/nbdcopy and the kernel connect to them); the first export is also the default one')
    .argument('<image...>', 'IMAGE or IMAGE=NAME (the export name; by default the file name without its extension)')
    .option('-p, --port <n>', 'TCP port', '10809')
    .option('-b, --bind <addr>', 'address to listen on (0.0.0.0 or :: to accept other machines)', '127.0.0.1')
    .option('--unix <path>', 'listen on a Unix socket instead of TCP')
    .option('-r, --read-only', 'serve every export read-only (the images open read-only, unlocked)')
    .option('-f, --format <fmt>', 'image format of every image (detected by magic when absent)')
    .option('--tls <mode>', 'off, on (offer TLS) or require', 'off')
    .option('--tls-psk <file>', 'pre-shared keys, one username:hexkey per line (as nbdkit and qemu read them)')
    .option('--allow-path <dir>', 'let references inside the images lead into DIR (repeatable)', collect, []);
  cmd.action(
    action(cmd, async (images: string[], o: ServeOptions) => {
      const port = Number(o.port);
      if (!o.unix && (!Number.isInteger(port) || port < 0 || port > 65535)) throw new VdiskError('E_USAGE', `--port must be 0..65535, not "${o.port}"`);
      if (!['off', 'on', 'require'].includes(o.tls)) throw new VdiskError('E_USAGE', `--tls must be off, on or require, not "${o.tls}"`);
      if (o.tls !== 'off' && !o.tlsPsk) throw new VdiskError('E_USAGE', `--tls ${o.tls} needs --tls-psk FILE`);
      if (o.tls === 'off' && o.tlsPsk) throw new VdiskError('E_USAGE', '--tls-psk needs --tls on or --tls require');
      const tls = o.tls === 'off' ? undefined : { mode: o.tls as 'on' | 'require', keys: await readPskFile(o.tlsPsk!) };

      const opened: DiskImage[] = [];
      // One pool per folder and VG, however many of its LVs are served: a second open
      // would trip over the first one's member locks. A writable pool answers its
      // control socket, so `vdisk pool add` / `pool lv extend` reach it from elsewhere.
      const pools = new Map<string, HeldPool>();
      const closeAll = async (): Promise<void> => {
        for (const d of opened.splice(0)) await d.close().catch(() => undefined);
        for (const p of [...pools.values()]) await p.close().catch(() => undefined);
        pools.clear();
      };
      const exports: NbdExport[] = [];
      try {
        for (const arg of images) {
          const { image, name } = exportSpec(arg);
          let device: DiskImage;
          if (isLvAddress(image)) {
            const a = parseLvAddress(image);
            const key = `${resolve(a.dir)}\0${a.vg}`;
            let held = pools.get(key);
            if (!held) {
              held = await holdPool(a.vg, a.dir, { readOnly: Boolean(o.readOnly) });
              pools.set(key, held);
              for (const w of held.pool.warnings) process.stderr.write(`vdisk: warning: ${w}\n`);
              if (held.control) process.stderr.write(`vdisk: VG ${a.vg}: control socket ${held.control.path}\n`);
            }
            device = held.pool.openLv(a.lv);
          } else {
            device = await open(image, { format: o.format, readOnly: Boolean(o.readOnly), allowPaths: o.allowPath });
          }
          opened.push(device);
          exports.push({ name, device, description: `${device.format} image ${image}` });
        }
        const server = new NbdServer(exports, {
          ...(tls ? { tls } : {}),
          onConnectionEnd: (peer, reason) => {
            if (reason) process.stderr.write(`vdisk: ${peer}: ${reason}\n`);
          },
        });
        const at = await server.listen(o.unix ? { unix: o.unix } : { port, host: o.bind });
        const scheme = tls ? 'nbds' : 'nbd';
        for (const e of exports) {
          const uri = at.unix
            ? `${scheme}+unix:///${encodeURIComponent(e.name)}?socket=${at.unix}`
            : `${scheme}://${at.host!.includes(':') ? `[${at.host}]` : at.host}:${at.port}/${encodeURIComponent(e.name)}`;
          process.stdout.write(`serving ${uri} (${e.device.size} bytes${e.readOnly || e.device.readOnly ? ', read-only' : ''})\n`);
        }
        await new Promise<void>((resolve) => {
          const stop = (signal: string): void => {
            process.off('SIGINT', onInt);
            process.off('SIGTERM', onTerm);
            process.stderr.write(`vdisk: ${signal}: finishing requests in flight, then closing\n`);
            resolve();
          };
          const onInt = (): void => stop('SIGINT');
          const onTerm = (): void => stop('SIGTERM');
          process.on('SIGINT', onInt);
          process.on('SIGTERM', onTerm);
        });
        await server.close();
      } finally {
        await closeAll();
      }
    }),
  );
}
