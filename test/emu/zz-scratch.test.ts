import { it } from 'vitest';
import { open } from '../../src/formats/registry.js';
import { boot } from '../../src/emu/boot.js';
it('freedos', { timeout: 120000 }, async () => {
  const fl = await open('/work/shared/guests/freedos722.img', { readOnly: true });
  const s = boot(null, { floppy: fl, expect: 'A:\\>', timeoutMs: 60000, snapshot: true, debug: (m) => console.log(m) });
  let tty = '';
  s.machine.on('tty', (c: string) => (tty += c));
  const r = await s.result;
  console.log(r.outcome, r.message, r.instructions, r.elapsedMs);
  console.log(r.screen.join('\n'));
  console.log('TTY', JSON.stringify(tty.slice(-500)));
});
