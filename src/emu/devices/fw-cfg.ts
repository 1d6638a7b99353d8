/**
 * qemu's firmware configuration device (fw_cfg, docs/specs/fw_cfg.rst in qemu) on its
 * PC ports: selector 510h (16-bit write), data 511h (byte reads). vdisk gives the
 * firmware only what makes it behave as qemu's default `pc` machine does: the
 * signature, the interface ID (no DMA), one CPU, and "no boot menu" (qemu's default,
 * without which SeaBIOS prints "Press ESC for boot menu." and waits 2.5 s). Every
 * other item reads as zeros, as qemu answers an unknown key, so the file directory
 * is empty and SeaBIOS takes memory sizes and boot order from the CMOS.
 */
import type { IoBus } from '../io.js';
import type { StateReader, StateWriter, Stateful } from '../state/codec.js';

/** Ports of the I/O interface on x86. */
export const FW_CFG_SELECTOR = 0x510;
export const FW_CFG_DATA = 0x511;
/** Selector keys (fw_cfg.rst, "Selector (Control) Register"; qemu's include/standard-headers/linux/qemu_fw_cfg.h). */
const FW_CFG_SIGNATURE = 0x00;
const FW_CFG_ID = 0x01;
const FW_CFG_NB_CPUS = 0x05;
const FW_CFG_BOOT_MENU = 0x0e;
const FW_CFG_MAX_CPUS = 0x0f;

/** The device with a fixed set of items. */
export class FwCfg implements Stateful {
  private readonly items = new Map<number, Uint8Array>([
    [FW_CFG_SIGNATURE, Uint8Array.from([0x51, 0x45, 0x4d, 0x55])], // "QEMU"
    [FW_CFG_ID, Uint8Array.from([1, 0, 0, 0])], // traditional interface only
    [FW_CFG_NB_CPUS, Uint8Array.from([1, 0])],
    [FW_CFG_MAX_CPUS, Uint8Array.from([1, 0])],
    [FW_CFG_BOOT_MENU, Uint8Array.from([0, 0])],
  ]);
  private selector = 0;
  private offset = 0;

  constructor(io: IoBus) {
    const select = (v: number): void => {
      this.selector = v & 0xffff;
      this.offset = 0;
    };
    io.register([FW_CFG_SELECTOR], { write: (_p, v) => select(v), write16: (_p, v) => select(v), read16: () => 0 });
    io.register([FW_CFG_DATA], { read: () => this.read(), write: () => {} });
  }

  private read(): number {
    const item = this.items.get(this.selector);
    const v = item && this.offset < item.length ? item[this.offset]! : 0;
    this.offset++;
    return v;
  }

  saveState(w: StateWriter): void {
    w.u16(this.selector).u32(this.offset);
  }
  loadState(r: StateReader): void {
    this.selector = r.u16('fw_cfg selector');
    this.offset = r.u32('fw_cfg offset');
  }
}
