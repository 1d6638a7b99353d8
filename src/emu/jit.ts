/**
 * Hot straight-line runs of 16-bit code compiled to JavaScript functions.
 *
 * A block is compiled for one physical address and IP once it has been reached often
 * enough. It covers a run of instructions that cannot fault and touch nothing but
 * registers, lazy flags and memory (ALU, MOV, LEA, INC/DEC), optionally ended by a
 * short branch; anything else ends the block and is left to the interpreter. The
 * compiled function first checks that the code bytes are still the ones it was
 * compiled from (so writes by any path — DMA, the BIOS, string instructions — are
 * caught without a hook on every write), and leaves early when one of its own
 * stores lands inside its code, so self-modifying code runs as written. Blocks are
 * a cache: not part of a saved state. Off unless `VDISK_JIT=1`: with them on, the
 * loop guests of bench/emu.mjs run up to 1.5x faster, but FreeDOS to its prompt
 * took 865 ms against 439 ms without (the lookup on every instruction and the
 * entry checks cost more than cold boot code gains).
 */
import { alu, type Op } from './ops.js';
import { L_DEC, L_INC } from './consts.js';
import type { Cpu } from './cpu.js';

/** A compiled block: returns the instructions it retired, or -1 if its code bytes changed. */
type BlockFn = (c: Cpu, reg: Int32Array, ram: Uint8Array, A: typeof alu, H: Op[]) => number;

/** One cache entry. */
interface Block {
  phys: number;
  ip: number;
  /** Instructions in the block (a run retires at most this many). */
  count: number;
  fn: BlockFn;
}

/** Whether compiled blocks are used (opt-in: VDISK_JIT=1; see the file's comment). */
const ENABLED = process.env.VDISK_JIT === '1';
const SLOTS = 1 << 14;
/** Executions of an address before its block is compiled. */
const HOT = 40;
/** Longest block, in instructions. */
const MAX_INSNS = 64;

/** The block cache of one CPU: a direct-mapped table by physical address. */
export class BlockCache {
  readonly enabled = ENABLED;
  private readonly slots: (Block | null)[] = new Array<Block | null>(SLOTS).fill(null);
  private readonly heat = new Uint8Array(SLOTS);
  /** Addresses (slot-hashed) known not to start a compilable block. */
  private readonly cold = new Int32Array(SLOTS).fill(-1);

  /** The compiled block at (`phys`, `ip`), compiling it when hot; null when there is none. */
  lookup(c: Cpu, phys: number, ip: number): Block | null {
    const s = phys & (SLOTS - 1);
    const b = this.slots[s]!;
    if (b !== null && b.phys === phys && b.ip === ip) return b;
    if (this.cold[s] === phys) return null;
    if (++this.heat[s]! < HOT) return null;
    this.heat[s] = 0;
    const nb = compile(c, phys, ip);
    if (nb === null) {
      this.cold[s] = phys;
      return null;
    }
    this.slots[s] = nb;
    return nb;
  }
  /** Forget the block at `phys` (its code changed). */
  drop(phys: number): void {
    const s = phys & (SLOTS - 1);
    this.slots[s] = null;
    this.heat[s] = 0;
  }
  /** Forget everything (a state was loaded). */
  clear(): void {
    this.slots.fill(null);
    this.heat.fill(0);
    this.cold.fill(-1);
  }
}

const SEG_PREFIX: Record<number, number> = { 0x26: 0, 0x2e: 1, 0x36: 2, 0x3e: 3, 0x64: 4, 0x65: 5 };

/** Compile the block at (`phys`, `ip`); null when its first instruction is not one we compile. */
function compile(c: Cpu, phys: number, ip: number): Block | null {
  const ram = c.ram;
  const base = phys - ip;
  let pos = ip; // IP of the next byte to decode
  const body: string[] = [];
  let count = 0;
  let ended = false;
  // Code bytes must be contiguous in RAM from `phys` (no IP wrap, no A20 wrap, no end of RAM).
  const byteAt = (p: number): number => {
    if (p > 0xffff || ((c.csBase + p) & c.amask) !== base + p || base + p >= c.ramSize) throw STOP;
    return ram[base + p]!;
  };
  const STOP = new Error('stop');
  for (; count < MAX_INSNS && !ended; ) {
    let code: string;
    try {
      const r = decodeOne(byteAt, pos);
      if (r === null) break;
      code = r.code;
      pos = r.next;
      ended = r.branch;
    } catch (e) {
      if (e === STOP) break;
      throw e;
    }
    count++;
    body.push(code.replace(/\$K/g, String(count)).replace(/\$N/g, String(pos)));
  }
  if (count === 0) return null;
  const endPhys = base + pos;
  const checks: string[] = [];
  for (let p = phys; p < endPhys; p++) checks.push(`ram[${p}]!==${ram[p]}`);
  const src =
    `if(${checks.join('||')})return -1;\nlet a=0,b=0,r=0,o=0,sb=0,p=0;\n` +
    body.join('\n').replace(/\$S/g, String(phys)).replace(/\$E/g, String(endPhys)) +
    (ended ? '' : `\nc.eip=${pos};return ${count};`);
  const fn = new Function('c', 'reg', 'ram', 'A', 'H', src) as BlockFn;
  return { phys, ip, count, fn };
}

interface Decoded {
  code: string;
  next: number;
  branch: boolean;
}

/** 16-bit ModRM memory operand: code setting `sb` (segment base) and `o` (offset). */
function ea(byteAt: (p: number) => number, modrm: number, pos: number, segOv: number): { code: string; next: number } {
  const mod = modrm >> 6;
  const rm = modrm & 7;
  let seg = 3;
  let off: string;
  switch (rm) {
    case 0: off = 'reg[3]+reg[6]'; break;
    case 1: off = 'reg[3]+reg[7]'; break;
    case 2: off = 'reg[5]+reg[6]'; seg = 2; break;
    case 3: off = 'reg[5]+reg[7]'; seg = 2; break;
    case 4: off = 'reg[6]'; break;
    case 5: off = 'reg[7]'; break;
    case 6:
      if (mod === 0) {
        off = String(byteAt(pos) | (byteAt(pos + 1) << 8));
        pos += 2;
      } else {
        off = 'reg[5]';
        seg = 2;
      }
      break;
    default: off = 'reg[3]';
  }
  if (mod === 1) {
    off += `+${(byteAt(pos) << 24) >> 24}`;
    pos++;
  } else if (mod === 2) {
    off += `+${(byteAt(pos) | (byteAt(pos + 1) << 8)) << 16 >> 16}`;
    pos += 2;
  }
  return { code: `o=(${off})&65535;sb=c.sbase[${segOv >= 0 ? segOv : seg}];`, next: pos };
}

/** Register read/write code by size (1, 2, 4). */
function rget(sz: number, i: number): string {
  if (sz === 4) return `reg[${i}]`;
  if (sz === 2) return `(reg[${i}]&65535)`;
  return i < 4 ? `(reg[${i}]&255)` : `((reg[${i - 4}]>>8)&255)`;
}
function rset(sz: number, i: number, v: string): string {
  if (sz === 4) return `reg[${i}]=${v};`;
  if (sz === 2) return `reg[${i}]=(reg[${i}]&-65536)|((${v})&65535);`;
  return i < 4 ? `reg[${i}]=(reg[${i}]&-256)|((${v})&255);` : `reg[${i - 4}]=(reg[${i - 4}]&-65281)|(((${v})&255)<<8);`;
}
function mread(sz: number): string {
  return sz === 1 ? 'c.rd8(sb,o)' : sz === 2 ? 'c.rd16(sb,o)' : 'c.rd32(sb,o)';
}
/** A store, then leave the block if it hit the block's own code ($S..$E), resuming after this instruction. */
function mwrite(sz: number, v: string): string {
  const w = sz === 1 ? `c.wr8(sb,o,${v});` : sz === 2 ? `c.wr16(sb,o,${v});` : `c.wr32(sb,o,${v});`;
  return `${w}p=(sb+o)&c.amask;if(o>65532||(p<$E&&p+${sz}>$S)){c.eip=$N;return $K;}`;
}

/** Decode one instruction at IP `pos` into code; null when it is not one we compile. */
function decodeOne(byteAt: (p: number) => number, pos: number): Decoded | null {
  let segOv = -1;
  let os32 = false;
  let op = byteAt(pos++);
  for (;;) {
    if (op === 0x66) os32 = true;
    else if (op in SEG_PREFIX) segOv = SEG_PREFIX[op]!;
    else break;
    op = byteAt(pos++);
  }
  const osz = os32 ? 4 : 2;
  const plain = (code: string): Decoded => ({ code, next: pos, branch: false });
  // ALU rows 00..3D
  if (op < 0x40 && (op & 7) < 6) {
    const aop = op >> 3;
    const write = aop !== 7;
    const form = op & 7;
    if (form === 4) {
      const imm = byteAt(pos++);
      const r = `r=A(c,${aop},${rget(1, 0)},${imm},1);`;
      return plain(r + (write ? rset(1, 0, 'r') : ''));
    }
    if (form === 5) {
      let imm = byteAt(pos) | (byteAt(pos + 1) << 8);
      pos += 2;
      if (os32) {
        imm = (imm | (byteAt(pos) << 16) | (byteAt(pos + 1) << 24)) | 0;
        pos += 2;
      }
      return plain(`r=A(c,${aop},${rget(osz, 0)},${imm},${osz});` + (write ? rset(osz, 0, 'r') : ''));
    }
    const sz = form & 1 ? osz : 1;
    const modrm = byteAt(pos++);
    const rg = (modrm >> 3) & 7;
    const toReg = (form & 2) !== 0;
    if (modrm >= 0xc0) {
      const rm = modrm & 7;
      const [d, s] = toReg ? [rg, rm] : [rm, rg];
      return plain(`r=A(c,${aop},${rget(sz, d)},${rget(sz, s)},${sz});` + (write ? rset(sz, d, 'r') : ''));
    }
    const e = ea(byteAt, modrm, pos, segOv);
    pos = e.next;
    if (toReg) return plain(e.code + `r=A(c,${aop},${rget(sz, rg)},${mread(sz)},${sz});` + (write ? rset(sz, rg, 'r') : ''));
    return plain(e.code + `r=A(c,${aop},${mread(sz)},${rget(sz, rg)},${sz});` + (write ? mwrite(sz, 'r') : ''));
  }
  // Grp1 80/81/83
  if (op === 0x80 || op === 0x81 || op === 0x83) {
    const sz = op === 0x80 ? 1 : osz;
    const modrm = byteAt(pos++);
    const aop = (modrm >> 3) & 7;
    let e = { code: '', next: pos };
    if (modrm < 0xc0) e = ea(byteAt, modrm, pos, segOv);
    pos = e.next;
    let imm: number;
    if (op === 0x81) {
      imm = byteAt(pos) | (byteAt(pos + 1) << 8);
      pos += 2;
      if (sz === 4) {
        imm = (imm | (byteAt(pos) << 16) | (byteAt(pos + 1) << 24)) | 0;
        pos += 2;
      }
    } else {
      imm = byteAt(pos++);
      if (op === 0x83) imm = sz === 4 ? (imm << 24) >> 24 : ((imm << 24) >> 24) & 0xffff;
    }
    if (modrm >= 0xc0) {
      const d = modrm & 7;
      return plain(`r=A(c,${aop},${rget(sz, d)},${imm},${sz});` + (aop !== 7 ? rset(sz, d, 'r') : ''));
    }
    return plain(e.code + `r=A(c,${aop},${mread(sz)},${imm},${sz});` + (aop !== 7 ? mwrite(sz, 'r') : ''));
  }
  // MOV 88..8B
  if (op >= 0x88 && op <= 0x8b) {
    const sz = op & 1 ? osz : 1;
    const modrm = byteAt(pos++);
    const rg = (modrm >> 3) & 7;
    const toReg = (op & 2) !== 0;
    if (modrm >= 0xc0) {
      const rm = modrm & 7;
      return plain(toReg ? rset(sz, rg, rget(sz, rm)) : rset(sz, rm, rget(sz, rg)));
    }
    const e = ea(byteAt, modrm, pos, segOv);
    pos = e.next;
    return plain(e.code + (toReg ? rset(sz, rg, mread(sz)) : mwrite(sz, rget(sz, rg))));
  }
  // LEA
  if (op === 0x8d) {
    const modrm = byteAt(pos++);
    if (modrm >= 0xc0) return null;
    const e = ea(byteAt, modrm, pos, segOv);
    pos = e.next;
    return plain(e.code + rset(osz, (modrm >> 3) & 7, 'o'));
  }
  // MOV reg, imm
  if (op >= 0xb0 && op <= 0xb7) {
    const imm = byteAt(pos++);
    return plain(rset(1, op & 7, String(imm)));
  }
  if (op >= 0xb8 && op <= 0xbf) {
    let imm = byteAt(pos) | (byteAt(pos + 1) << 8);
    pos += 2;
    if (os32) {
      imm = (imm | (byteAt(pos) << 16) | (byteAt(pos + 1) << 24)) | 0;
      pos += 2;
    }
    return plain(rset(osz, op & 7, String(imm)));
  }
  // INC/DEC reg (CF is kept: fold it into flags first, as the interpreter does)
  if (op >= 0x40 && op <= 0x4f) {
    const i = op & 7;
    const isInc = op < 0x48;
    const mask = os32 ? '' : '&65535';
    return plain(
      `a=${rget(osz, i)};c.flags=c.getCF()?c.flags|1:c.flags&-2;r=(a${isInc ? '+' : '-'}1)${mask || '|0'};` +
        `c.lop=${isInc ? L_INC : L_DEC};c.lres=r;c.ldst=a;c.lsrc=1;c.lsz=${osz};` +
        rset(osz, i, 'r'),
    );
  }
  if (op === 0x90 && !os32) return plain('');
  // Short branches end the block.
  if (op >= 0x70 && op <= 0x7f && !os32) {
    const rel = (byteAt(pos++) << 24) >> 24;
    const target = (pos + rel) & 0xffff;
    const cc = op & 15;
    const cond = cc === 4 ? 'c.getZF()' : cc === 5 ? '!c.getZF()' : `c.cond(${cc})`;
    return { code: `c.eip=${cond}?${target}:${pos};return $K;`, next: pos, branch: true };
  }
  if (op === 0xeb && !os32) {
    const rel = (byteAt(pos++) << 24) >> 24;
    return { code: `c.eip=${(pos + rel) & 0xffff};return $K;`, next: pos, branch: true };
  }
  if (op === 0xe2 && !os32) {
    const rel = (byteAt(pos++) << 24) >> 24;
    return {
      code: `r=(reg[1]-1)&65535;reg[1]=(reg[1]&-65536)|r;c.eip=r!==0?${(pos + rel) & 0xffff}:${pos};return $K;`,
      next: pos,
      branch: true,
    };
  }
  return null;
}
