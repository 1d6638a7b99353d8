/**
 * Long-running processes for NBD tests (`vdisk serve`, nbdkit, qemu-nbd, an interactive
 * qemu-io): started, waited for, and killed after each test of the file that imports this.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { afterEach } from 'vitest';
import { VDISK_BIN } from './tmp.js';

/** Processes started by this test file; whatever still runs after a test is killed. */
export const children: ChildProcess[] = [];

afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

/** Start a long-running process; resolves once `ready` matches its stdout or stderr. */
export async function start(cmd: string, args: string[], cwd: string, ready: RegExp): Promise<{ child: ChildProcess; out: () => string }> {
  const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${cmd} did not get ready: ${out}`)), 15_000);
    const seen = (d: Buffer): void => {
      out += d.toString();
      if (ready.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', seen);
    child.stderr!.on('data', seen);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} exited ${code}: ${out}`));
    });
  });
  return { child, out: () => out };
}

/** A free TCP port on 127.0.0.1 (for servers that cannot be told to pick one). */
export async function freePort(): Promise<number> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** `vdisk serve ARGS -p 0`; resolves with the URIs it prints, export name to URI. */
export async function serve(cwd: string, args: string[]): Promise<{ child: ChildProcess; uris: Record<string, string>; out: () => string }> {
  const { child, out } = await start(process.execPath, [VDISK_BIN, 'serve', '-p', '0', ...args], cwd, /serving[^\n]*\n(?![\s\S]*pending)/);
  await new Promise((r) => setTimeout(r, 50));
  const uris: Record<string, string> = {};
  for (const m of out().matchAll(/^serving (\S+)/gm)) uris[decodeURIComponent(new URL(m[1]!).pathname.slice(1))] = m[1]!;
  return { child, uris, out };
}

/** SIGTERM `child` and wait for its exit code. */
export async function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  child.kill('SIGTERM');
  const [code] = (await once(child, 'exit')) as [number | null];
  return code;
}
