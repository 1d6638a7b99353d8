/**
 * Paging (Intel SDM vol. 3 §4.3, 32-bit paging): two-level 4 KiB tables, 4 MiB pages
 * with CR4.PSE, global pages with CR4.PGE, CR0.WP, accessed and dirty bits, and a TLB.
 *
 * The CPU calls {@link Mmu.translate} only on its slow memory path: with paging off
 * its accessors index RAM directly, exactly as before paging existed.
 */

/** Page-table entry bits (§4.3, tables 4-4 to 4-6). */
export const PTE_P = 0x001;
export const PTE_W = 0x002;
export const PTE_U = 0x004;
export const PTE_A = 0x020;
export const PTE_D = 0x040;
export const PTE_PS = 0x080;
export const PTE_G = 0x100;

/** Control-register bits paging looks at. */
export const CR0_WP = 0x00010000;
export const CR0_PG = 0x80000000 | 0;
export const CR4_PSE = 0x10;
export const CR4_PGE = 0x80;

/** #PF error-code bits (§4.7). */
export const PF_P = 1;
export const PF_W = 2;
export const PF_U = 4;

// A TLB entry: the physical frame in the high 20 bits, what the cached walk allows in the
// low bits. Write permission is cached only once the dirty bit is set, so the first write
// walks again and sets it. 0 is an empty slot.
const T_READ_S = 1;
const T_WRITE_S = 2;
const T_READ_U = 4;
const T_WRITE_U = 8;
const T_GLOBAL = 16;
/** Bound of the list of filled slots. */
const FILLED_MAX = 1 << 16;

/** What a translation needs from the processor: physical memory and the control registers. */
export interface PagingHost {
  readonly ram: Uint8Array;
  readonly ramSize: number;
  amask: number;
  cr0: number;
  cr3: number;
  cr4: number;
  /** Raise #PF: set CR2 and throw the fault. */
  pageFault(linear: number, code: number): never;
}

/** The page walker and its TLB. */
export class Mmu {
  /** One slot per linear page (allocated when paging is first turned on). */
  private tlb: Int32Array | null = null;
  /** Linear pages with a slot filled since the last full flush, so a flush clears only those. */
  private filled: number[] = [];

  constructor(private readonly host: PagingHost) {}

  /** Linear to physical for an access by `user` code (CPL 3) that reads or `write`s; walks on a TLB miss. */
  translate(lin: number, write: boolean, user: boolean): number {
    const tlb = this.tlb ?? (this.tlb = new Int32Array(1 << 20));
    const e = tlb[lin >>> 12]!;
    const need = user ? (write ? T_WRITE_U : T_READ_U) : write ? T_WRITE_S : T_READ_S;
    if (e & need) return ((e & ~0xfff) | (lin & 0xfff)) & this.host.amask;
    return this.walk(tlb, lin, write, user);
  }

  /** Drop every cached translation, or all but the global ones (a CR3 write with CR4.PGE). */
  flush(keepGlobal: boolean): void {
    const tlb = this.tlb;
    if (!tlb) return;
    if (!keepGlobal) {
      for (const p of this.filled) tlb[p] = 0;
      this.filled = [];
      return;
    }
    const kept: number[] = [];
    for (const p of this.filled) {
      if (tlb[p]! & T_GLOBAL) kept.push(p);
      else tlb[p] = 0;
    }
    this.filled = kept;
  }

  /** INVLPG: drop the translation of one linear page, global or not. */
  invalidate(lin: number): void {
    if (this.tlb) this.tlb[lin >>> 12] = 0;
  }

  private read32(pa: number): number {
    const ram = this.host.ram;
    if (pa < 0 || pa + 3 >= this.host.ramSize) return -1;
    return ram[pa]! | (ram[pa + 1]! << 8) | (ram[pa + 2]! << 16) | (ram[pa + 3]! << 24);
  }
  private write32(pa: number, v: number): void {
    const ram = this.host.ram;
    if (pa < 0 || pa + 3 >= this.host.ramSize) return;
    ram[pa] = v;
    ram[pa + 1] = v >> 8;
    ram[pa + 2] = v >> 16;
    ram[pa + 3] = v >> 24;
  }

  /**
   * The two-level walk of §4.3, in the order qemu's TCG does it (the oracle we test
   * against): the PDE's accessed bit is set before the PTE is read, the PTE's accessed
   * and dirty bits only once the access is allowed.
   */
  private walk(tlb: Int32Array, lin: number, write: boolean, user: boolean): number {
    const h = this.host;
    const code = (write ? PF_W : 0) | (user ? PF_U : 0);
    const pdeAddr = ((h.cr3 & ~0xfff) + ((lin >>> 22) << 2)) & h.amask;
    let pde = this.read32(pdeAddr);
    if (!(pde & PTE_P)) h.pageFault(lin, code);
    let entry: number;
    let entryAddr: number;
    let frame: number;
    let rights: number;
    if (pde & PTE_PS && h.cr4 & CR4_PSE) {
      entry = pde;
      entryAddr = pdeAddr;
      frame = (pde & 0xffc00000) | (lin & 0x003ff000);
      rights = pde;
    } else {
      if (!(pde & PTE_A)) {
        pde |= PTE_A;
        this.write32(pdeAddr, pde);
      }
      entryAddr = ((pde & ~0xfff) + (((lin >>> 12) & 0x3ff) << 2)) & h.amask;
      entry = this.read32(entryAddr);
      if (!(entry & PTE_P)) h.pageFault(lin, code);
      frame = entry & ~0xfff;
      rights = pde & entry;
    }
    const userOk = (rights & PTE_U) !== 0;
    const writableUser = userOk && (rights & PTE_W) !== 0;
    const writableSup = (rights & PTE_W) !== 0 || !(h.cr0 & CR0_WP);
    if ((user && !userOk) || (write && (user ? !writableUser : !writableSup))) h.pageFault(lin, code | PF_P);
    const set = write ? PTE_A | PTE_D : PTE_A;
    if (set & ~entry) {
      entry |= set;
      this.write32(entryAddr, entry);
    }
    const dirty = (entry & PTE_D) !== 0;
    let t = (frame & ~0xfff) | T_READ_S;
    if (writableSup && dirty) t |= T_WRITE_S;
    if (userOk) t |= T_READ_U;
    if (writableUser && dirty) t |= T_WRITE_U;
    if (entry & PTE_G && h.cr4 & CR4_PGE) t |= T_GLOBAL;
    const page = lin >>> 12;
    if (tlb[page] === 0) {
      // INVLPG leaves its page in the list; past this many, start afresh (a TLB may drop any entry).
      if (this.filled.length >= FILLED_MAX) {
        tlb.fill(0);
        this.filled = [];
      }
      this.filled.push(page);
    }
    tlb[page] = t;
    return ((frame & ~0xfff) | (lin & 0xfff)) & h.amask;
  }
}
