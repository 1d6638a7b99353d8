/** The vdisk command line: a thin commander layer over the library. */
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { register as registerCreate } from './commands/create.js';
import { register as registerInfo } from './commands/info.js';
import { register as registerMaintain } from './commands/maintain.js';
import { register as registerOva } from './commands/ova.js';
import { register as registerConvert } from './commands/convert.js';
import { register as registerMap } from './commands/map.js';
import { register as registerCompare } from './commands/compare.js';
import { register as registerCheck } from './commands/check.js';
import { register as registerBoot } from './commands/boot.js';

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** Build the commander program with every command registered. */
export function buildProgram(): Command {
  const program = new Command('vdisk');
  program
    .description('virtual disk images: convert, inspect, package, pool, serve and boot VHD, VDI, VMDK and raw')
    .version(packageVersion(), '-V, --version')
    .option('--debug', 'print stack traces with errors')
    .showHelpAfterError()
    .configureOutput({ outputError: (str, write) => write(`vdisk: ${str.replace(/^error: /, '')}`) });
  for (const register of [registerInfo, registerCreate, registerConvert, registerMap, registerCompare, registerCheck, registerMaintain, registerOva, registerBoot]) register(program);
  return program;
}

/** Run the CLI with `argv` (as process.argv). */
export async function main(argv: readonly string[]): Promise<void> {
  await buildProgram().parseAsync(argv as string[]);
}
