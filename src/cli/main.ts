/** The vdisk command line: a thin commander layer over the library. */
import { readFileSync } from 'node:fs';
import { Command } from 'commander';

/** A command module: adds its command(s) to the program. */
interface CommandModule {
  register(program: Command): void;
}

/**
 * Every command module, in help order, with the command names it adds. Modules are
 * imported on demand: a run of one command loads only that command's code, which
 * keeps start-up short (it is part of every convert's wall time).
 */
const COMMANDS: ReadonlyArray<readonly [names: readonly string[], load: () => Promise<CommandModule>]> = [
  [['info'], () => import('./commands/info.js')],
  [['create'], () => import('./commands/create.js')],
  [['convert'], () => import('./commands/convert.js')],
  [['map'], () => import('./commands/map.js')],
  [['compare'], () => import('./commands/compare.js')],
  [['check'], () => import('./commands/check.js')],
  [['resize', 'compact', 'commit', 'rebase'], () => import('./commands/maintain.js')],
  [['ova'], () => import('./commands/ova.js')],
  [['pool'], () => import('./commands/pool.js')],
  [['serve'], () => import('./commands/serve.js')],
  [['boot'], () => import('./commands/boot.js')],
];

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/**
 * Build the commander program. With `argv`, a run naming one command registers just
 * that command's module; otherwise (help, version, unknown names) all are registered.
 */
export async function buildProgram(argv?: readonly string[]): Promise<Command> {
  const program = new Command('vdisk');
  program
    .description('virtual disk images: convert, inspect, package, pool, serve and boot VHD, VDI, VMDK and raw')
    .version(packageVersion(), '-V, --version')
    .option('--debug', 'print stack traces with errors')
    .showHelpAfterError()
    .configureOutput({ outputError: (str, write) => write(`vdisk: ${str.replace(/^error: /, '')}`) });
  const named = argv?.slice(2).find((a) => !a.startsWith('-'));
  const only = COMMANDS.find(([names]) => named !== undefined && names.includes(named));
  for (const [, load] of only ? [only] : COMMANDS) (await load()).register(program);
  return program;
}

/** Run the CLI with `argv` (as process.argv). */
export async function main(argv: readonly string[]): Promise<void> {
  await (await buildProgram(argv)).parseAsync(argv as string[]);
}
