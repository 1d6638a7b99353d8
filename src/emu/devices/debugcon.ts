/**
 * qemu's ISA debug console ("debugcon", port 402h as SeaBIOS's CONFIG_DEBUG_IO
 * uses it): each byte written is the firmware's log; a read answers E9h, the
 * value that tells SeaBIOS the port is there. Lines go to the machine's --debug log.
 */
import type { IoBus } from '../io.js';

/** SeaBIOS's default debug port (CONFIG_DEBUG_IO_PORT). */
export const DEBUGCON_PORT = 0x402;
/** What qemu's debugcon reads as (QEMU_DEBUGCON_READBACK in SeaBIOS). */
const READBACK = 0xe9;

/** The debug console: calls `line` for every complete line written. */
export class DebugCon {
  private text = '';

  constructor(io: IoBus, private readonly line: (text: string) => void, port = DEBUGCON_PORT) {
    io.register([port], {
      read: () => READBACK,
      write: (_p, v) => {
        if (v === 0x0a) {
          this.line(this.text);
          this.text = '';
        } else if (v !== 0x0d && this.text.length < 4096) this.text += String.fromCharCode(v);
      },
    });
  }
}
