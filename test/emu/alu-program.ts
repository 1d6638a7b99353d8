/**
 * Generates a nasm boot program that runs blocks of ALU, shift, multiply/divide,
 * bit, BCD, string and i486-i686 (CMOVcc, XADD, CMPXCHG, BSWAP) instructions on pseudo-random operands and prints, after
 * each block, the registers, the defined arithmetic flags and a checksum of the
 * string buffer on COM1. Flags an instruction leaves undefined are tracked and
 * masked out (or redefined before an instruction reads them), so the output is
 * fully determined by the architecture and any two correct CPUs print the same.
 */

const CF = 0x001, PF = 0x004, AF = 0x010, ZF = 0x040, SF = 0x080, OF = 0x800;
const ALL = CF | PF | AF | ZF | SF | OF;

class Rng {
  constructor(private s: number) {}
  next(): number {
    this.s ^= this.s << 13;
    this.s >>>= 0;
    this.s ^= this.s >>> 17;
    this.s ^= this.s << 5;
    this.s >>>= 0;
    return this.s;
  }
  int(n: number): number {
    return this.next() % n;
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
  hex32(): string {
    // Bias towards edge values now and then.
    const r = this.int(8);
    const v = r === 0 ? 0 : r === 1 ? 0xffffffff : r === 2 ? 0x80000000 : r === 3 ? 0x7fffffff : r === 4 ? this.int(256) : this.next();
    return `0x${(v >>> 0).toString(16)}`;
  }
}

const R32 = ['eax', 'ebx', 'ecx', 'edx', 'esi', 'edi', 'ebp'];
const R16 = ['ax', 'bx', 'cx', 'dx', 'si', 'di', 'bp'];
const R8 = ['al', 'bl', 'cl', 'dl', 'ah', 'bh', 'ch', 'dh'];

interface Insn {
  text: string[];
  /** Flags the instruction reads. */
  uses: number;
  /** Flags it sets to defined values. */
  defines: number;
  /** Flags it leaves undefined. */
  undef: number;
}

function gen(r: Rng, bits: 16 | 32): Insn {
  const size = r.pick([8, 16, 32]);
  const regs = size === 8 ? R8 : size === 16 ? R16 : R32;
  const a = r.pick(regs);
  const b = r.pick(regs);
  const imm = size === 8 ? r.int(256) : size === 16 ? r.int(65536) : r.next();
  const k = r.int(17);
  switch (k) {
    case 0:
    case 1: {
      const op = r.pick(['add', 'adc', 'sub', 'sbb', 'cmp', 'and', 'or', 'xor', 'test']);
      const logic = ['and', 'or', 'xor', 'test'].includes(op);
      const src = r.int(2) ? b : String(imm);
      return { text: [`${op} ${a}, ${src}`], uses: op === 'adc' || op === 'sbb' ? CF : 0, defines: logic ? ALL & ~AF : ALL, undef: logic ? AF : 0 };
    }
    case 2: {
      const op = r.pick(['inc', 'dec', 'neg', 'not']);
      return { text: [`${op} ${a}`], uses: 0, defines: op === 'not' ? 0 : op === 'neg' ? ALL : ALL & ~CF, undef: 0 };
    }
    case 3:
    case 4: {
      const op = r.pick(['shl', 'shr', 'sar', 'rol', 'ror', 'rcl', 'rcr']);
      const rot = op.startsWith('r');
      // RCL/RCR rotate through CF modulo width+1: keep the count below it so flags always change.
      const n = op === 'rcl' || op === 'rcr' ? 1 + r.int(size === 32 ? 31 : size) : rot ? 1 + r.int(31) : 1 + r.int(size - 1);
      const viaCl = r.int(2) === 0 && a !== 'cl' && a !== 'ch' && a !== 'cx' && a !== 'ecx';
      const text = viaCl ? [`mov cl, ${n}`, `${op} ${a}, cl`] : [`${op} ${a}, ${n}`];
      const ofDef = n === 1 ? OF : 0;
      if (rot) return { text, uses: op === 'rcl' || op === 'rcr' ? CF : 0, defines: CF | ofDef, undef: ofDef ? 0 : OF };
      return { text, uses: 0, defines: CF | SF | ZF | PF | ofDef, undef: AF | (ofDef ? 0 : OF) };
    }
    case 5: {
      const op = r.pick(['mul', 'imul']);
      const acc = size === 8 ? 'al' : size === 16 ? 'ax' : 'eax';
      if (op === 'imul' && size !== 8 && r.int(2)) {
        const d = r.pick(regs);
        const form = r.int(2) ? `imul ${d}, ${b}` : `imul ${d}, ${b}, ${size === 16 ? r.int(65536) - 32768 : (r.next() | 0)}`;
        return { text: [form], uses: 0, defines: CF | OF, undef: SF | ZF | AF | PF };
      }
      const src = r.pick(regs.filter((x) => x !== acc));
      return { text: [`${op} ${src}`], uses: 0, defines: CF | OF, undef: SF | ZF | AF | PF };
    }
    case 6: {
      const op = r.pick(['div', 'idiv']);
      if (size === 8) {
        const d = r.pick(['bl', 'cl', 'dl', 'bh', 'ch', 'dh']);
        const prep = op === 'div' ? ['xor ah, ah'] : ['cbw'];
        return { text: [`and ${d}, 0x7f`, `or ${d}, 1`, ...prep, `${op} ${d}`], uses: 0, defines: 0, undef: ALL };
      }
      const d = size === 16 ? r.pick(['bx', 'cx', 'si', 'di', 'bp']) : r.pick(['ebx', 'ecx', 'esi', 'edi', 'ebp']);
      const hi = size === 16 ? 'dx' : 'edx';
      const prep = op === 'div' ? [`xor ${hi}, ${hi}`] : [size === 16 ? 'cwd' : 'cdq'];
      return { text: [`and ${d}, 0x7fff`, `or ${d}, 1`, ...prep, `${op} ${d}`], uses: 0, defines: 0, undef: ALL };
    }
    case 7: {
      const op = r.pick(['daa', 'das', 'aaa', 'aas', 'aam', 'aad']);
      if (op === 'daa' || op === 'das') return { text: [op], uses: CF | AF, defines: CF | AF | SF | ZF | PF, undef: OF };
      if (op === 'aaa' || op === 'aas') return { text: [op], uses: AF, defines: CF | AF, undef: OF | SF | ZF | PF };
      return { text: [`${op} ${2 + r.int(20)}`], uses: 0, defines: SF | ZF | PF, undef: OF | AF | CF };
    }
    case 8: {
      const op = r.pick(['bt', 'bts', 'btr', 'btc']);
      const s = size === 8 ? 16 : size;
      const rr = s === 16 ? R16 : R32;
      const x = r.pick(rr);
      const src = r.int(2) ? String(r.int(256)) : r.pick(rr.filter((y) => y !== x));
      return { text: [`${op} ${x}, ${src}`], uses: 0, defines: CF, undef: OF | SF | AF | PF };
    }
    case 9: {
      const s = size === 8 ? 32 : size;
      const rr = s === 16 ? R16 : R32;
      const x = r.pick(rr);
      const y = r.pick(rr);
      return { text: [`or ${y}, ${1 << r.int(s === 16 ? 16 : 31)}`, `${r.pick(['bsf', 'bsr'])} ${x}, ${y}`], uses: 0, defines: ZF, undef: CF | OF | SF | AF | PF };
    }
    case 10: {
      const s = size === 8 ? 32 : size;
      const rr = s === 16 ? R16 : R32;
      const x = r.pick(rr);
      const y = r.pick(rr);
      const n = 1 + r.int(s - 1);
      return { text: [`${r.pick(['shld', 'shrd'])} ${x}, ${y}, ${n}`], uses: 0, defines: CF | SF | ZF | PF | (n === 1 ? OF : 0), undef: AF | (n === 1 ? 0 : OF) };
    }
    case 11: {
      const x = r.pick(R32);
      const form = r.pick([`movzx ${x}, ${r.pick(R8)}`, `movsx ${x}, ${r.pick(R8)}`, `movzx ${x}, ${r.pick(R16)}`, `movsx ${x}, ${r.pick(R16)}`, 'cbw', 'cwde', 'cwd', 'cdq', `xchg ${a}, ${b}`, `lea ${r.pick(R32)}, [${r.pick(R32)} + ${r.pick(['eax', 'ebx', 'ecx', 'esi'])}*${r.pick([1, 2, 4, 8])} + ${r.int(1000) - 500}]`, `lea ${r.pick(R16)}, [bx + si + ${r.int(1000)}]`]);
      return { text: [form], uses: 0, defines: 0, undef: 0 };
    }
    case 12: {
      const cc = r.pick(['o', 'no', 'b', 'ae', 'e', 'ne', 'be', 'a', 's', 'ns', 'p', 'np', 'l', 'ge', 'le', 'g']);
      return { text: [`set${cc} ${r.pick(R8)}`], uses: ALL, defines: 0, undef: 0 };
    }
    case 13:
      return { text: [r.pick(['stc', 'clc', 'cmc'])], uses: CF, defines: CF, undef: 0 };
    case 14: {
      // i486-i686: CMOVcc (no 8-bit form), XADD, CMPXCHG (with the accumulator of the operand size), BSWAP (32-bit only).
      const s = size === 8 ? 32 : size;
      const rr = s === 16 ? R16 : R32;
      const cc = r.pick(['o', 'no', 'b', 'ae', 'e', 'ne', 'be', 'a', 's', 'ns', 'p', 'np', 'l', 'ge', 'le', 'g']);
      return { text: [`cmov${cc} ${r.pick(rr)}, ${r.pick(rr)}`], uses: ALL, defines: 0, undef: 0 };
    }
    case 15: {
      const op = r.pick(['xadd', 'cmpxchg', 'bswap']);
      if (op === 'bswap') return { text: [`bswap ${r.pick(R32)}`], uses: 0, defines: 0, undef: 0 };
      return { text: [`${op} ${a}, ${b}`], uses: 0, defines: ALL, undef: 0 };
    }
    default: {
      // A string operation on the buffer at 2000h..27FFh.
      const down = r.int(3) === 0;
      const width = r.pick(['b', 'w', 'd']);
      const op = r.pick(['movs', 'stos', 'lods', 'cmps', 'scas']);
      const rep = op === 'cmps' || op === 'scas' ? r.pick(['repe', 'repne', '']) : op === 'lods' ? r.pick(['', 'rep']) : r.pick(['rep', '']);
      const count = r.int(24);
      // In 32-bit code the string instructions address with ESI/EDI and count in ECX.
      const [si, di, cx] = bits === 32 ? ['esi', 'edi', 'ecx'] : ['si', 'di', 'cx'];
      const text = [
        `mov ${si}, ${0x2200 + r.int(0x200)}`,
        `mov ${di}, ${0x2200 + r.int(0x200)}`,
        `mov ${cx}, ${count}`,
        down ? 'std' : 'cld',
        `${rep} ${op}${width}`.trim(),
        'cld',
      ];
      const cmp = op === 'cmps' || op === 'scas';
      // With CX = 0 and a rep prefix nothing runs and the flags stay as they were.
      return { text, uses: 0, defines: cmp && (count > 0 || rep === '') ? ALL : 0, undef: 0 };
    }
  }
}

/** The blocks of the digest program: random instructions, then a call of `dump`. */
function blocksOf(r: Rng, out: string[], blocks: number, perBlock: number, bits: 16 | 32): void {
  for (let blk = 0; blk < blocks; blk++) {
    for (const reg of R32) out.push(`mov ${reg}, ${r.hex32()}`);
    const f0 = (r.next() & ALL) | 0x0002;
    out.push(`push dword 0x${f0.toString(16)}`, 'popfd');
    let taint = 0;
    for (let i = 0; i < perBlock; i++) {
      const ins = gen(r, bits);
      if (ins.uses & taint) {
        out.push('add ebp, 0');
        taint = 0;
      }
      out.push(...ins.text);
      taint = (taint & ~ins.defines) | ins.undef;
    }
    out.push(`mov word [flagmask], 0x${(ALL & ~taint).toString(16)}`, `mov word [blockno], ${blk}`, 'call dump');
  }
}

/**
 * The same digest program run as 32-bit protected-mode code (flat segments, CS.D=1,
 * so 66h/67h select 16-bit operands and addresses), with paging on when `paging`
 * (the first 4 MiB identity-mapped through 4 KiB pages, tables at 80000h).
 */
export function aluProgram32(seed: number, blocks: number, perBlock: number, paging: boolean): string {
  const r = new Rng(seed);
  const out: string[] = [];
  out.push(
    'bits 16', 'org 0x7c00',
    'start:', 'cli', 'xor ax, ax', 'mov ds, ax', 'mov es, ax', 'mov ss, ax', 'mov sp, 0x7c00',
    'mov si, dap', 'mov ah, 0x42', 'int 0x13', 'jc near start',
    'mov di, 0x2000', 'mov cx, 0x400', 'mov eax, 12345',
    'fill: imul eax, eax, 1103515245', 'add eax, 12345', 'mov [di], ax', 'add di, 2', 'loop fill',
    'lgdt [gdtr]', 'mov eax, cr0', 'or eax, 1', 'mov cr0, eax', 'jmp dword 0x08:pm',
    'dap: db 0x10, 0', 'dw SECTORS', 'dw 0x7e00, 0', 'dd 1, 0',
    'align 8', 'gdt: dq 0, 0x00cf9a000000ffff, 0x00cf92000000ffff', 'gdtr: dw 23', 'dd gdt',
    'times 510 - ($ - $$) db 0', 'dw 0xaa55',
    'main:', 'bits 32',
    'pm: mov ax, 0x10', 'mov ds, ax', 'mov es, ax', 'mov ss, ax', 'mov fs, ax', 'mov gs, ax', 'mov esp, 0x7c00',
  );
  if (paging) {
    out.push(
      'mov edi, 0x80000', 'mov eax, 0x3', 'pt: stosd', 'add eax, 0x1000', 'cmp edi, 0x81000', 'jb pt',
      'mov dword [0x81000], 0x80003', 'mov eax, 0x81000', 'mov cr3, eax', 'mov eax, cr0', 'or eax, 0x80000000', 'mov cr0, eax',
    );
  }
  blocksOf(r, out, blocks, perBlock, 32);
  out.push(
    'finish: mov al, 0', 'out 0xf4, al', 'cli', 'halt: hlt', 'jmp halt',
    'dump:', 'pushfd', 'pushad', 'mov ebp, esp',
    'mov ax, [blockno]', 'call hex16s', 'mov al, ":"', 'call serial_out',
    ...[28, 24, 20, 16, 8, 4, 0].flatMap((o) => ['mov al, " "', 'call serial_out', `mov eax, [ebp + ${o}]`, 'call hex32']),
    'mov al, " "', 'call serial_out', 'mov eax, [ebp + 32]', 'and ax, [flagmask]', 'and eax, 0xffff', 'call hex32',
    'mov esi, 0x2000', 'mov ecx, 0x200', 'xor edx, edx',
    'sum: rol edx, 5', 'xor edx, [esi]', 'add esi, 4', 'loop sum',
    'mov al, " "', 'call serial_out', 'mov eax, edx', 'call hex32',
    'mov al, 13', 'call serial_out', 'mov al, 10', 'call serial_out',
    'popad', 'popfd', 'ret',
    'serial_out: push edx', 'push eax', 'mov dx, 0x3fd', 'sw: in al, dx', 'test al, 0x20', 'jz sw', 'pop eax', 'mov dx, 0x3f8', 'out dx, al', 'pop edx', 'ret',
    'hex32: push eax', 'shr eax, 16', 'call hex16s', 'pop eax', 'call hex16s', 'ret',
    'hex16s: push ecx', 'mov ecx, 4',
    'h1: rol ax, 4', 'push eax', 'and al, 15', 'add al, "0"', 'cmp al, "9"', 'jbe h2', 'add al, 7', 'h2: call serial_out', 'pop eax', 'loop h1',
    'pop ecx', 'ret',
    'flagmask: dw 0', 'blockno: dw 0',
    'SECTORS equ ($ - main + 511) / 512',
  );
  return out.join('\n') + '\n';
}

/** The nasm source of the digest program (`blocks` blocks of `perBlock` instructions). */
export function aluProgram(seed: number, blocks: number, perBlock: number): string {
  const r = new Rng(seed);
  const out: string[] = [];
  out.push(
    'bits 16', 'org 0x7c00',
    'start:', 'cli', 'xor ax, ax', 'mov ds, ax', 'mov es, ax', 'mov ss, ax', 'mov sp, 0x7c00',
    'mov si, dap', 'mov ah, 0x42', 'int 0x13', 'jc near finish',
    // Fill the string buffer from a linear congruential generator.
    'mov di, 0x2000', 'mov cx, 0x400', 'mov eax, 12345',
    'fill: imul eax, eax, 1103515245', 'add eax, 12345', 'mov [di], ax', 'add di, 2', 'loop fill',
    'jmp main',
    'dap: db 0x10, 0', 'dw SECTORS', 'dw 0x7e00, 0', 'dd 1, 0',
    '%include "print.inc"',
    'times 510 - ($ - $$) db 0', 'dw 0xaa55',
    'main:',
  );
  blocksOf(r, out, blocks, perBlock, 16);
  out.push('jmp finish');
  out.push(
    'dump:', 'pushfd', 'pushad', 'mov bp, sp',
    'mov ax, [blockno]', 'call print_hex16', 'mov al, ":"', 'call serial_out',
    ...[28, 24, 20, 16, 8, 4, 0].flatMap((o) => ['mov al, " "', 'call serial_out', `mov eax, [bp + ${o}]`, 'call hex32']),
    'mov al, " "', 'call serial_out', 'mov eax, [bp + 32]', 'and ax, [flagmask]', 'and eax, 0xffff', 'call hex32',
    // Checksum of the string buffer.
    'mov si, 0x2000', 'mov cx, 0x200', 'xor edx, edx',
    'sum: rol edx, 5', 'xor edx, [si]', 'add si, 4', 'loop sum',
    'mov al, " "', 'call serial_out', 'mov eax, edx', 'call hex32',
    'mov al, 13', 'call serial_out', 'mov al, 10', 'call serial_out',
    'popad', 'popfd', 'ret',
    'hex32: push eax', 'shr eax, 16', 'call hex16s', 'pop eax', 'call hex16s', 'ret',
    // Four hex digits of AX to COM1 only (print_hex16 also writes the screen).
    'hex16s: push cx', 'mov cx, 4',
    'h1: rol ax, 4', 'push ax', 'and al, 15', 'add al, "0"', 'cmp al, "9"', 'jbe h2', 'add al, 7', 'h2: call serial_out', 'pop ax', 'loop h1',
    'pop cx', 'ret',
    'flagmask: dw 0', 'blockno: dw 0',
    'SECTORS equ ($ - main + 511) / 512',
  );
  return out.join('\n') + '\n';
}
