/**
 * BIOS Data Area (segment 40h) field addresses, as physical addresses (IBM PC/AT
 * Technical Reference, "BIOS Data Area"; Ralf Brown's Memory List, MEM 0040h).
 */
export const BDA = 0x400;
export const BDA_COM_PORTS = 0x400;
export const BDA_EBDA_SEG = 0x40e;
export const BDA_EQUIPMENT = 0x410;
export const BDA_MEMORY_KB = 0x413;
export const BDA_KBD_FLAGS = 0x417;
export const BDA_KBD_FLAGS2 = 0x418;
export const BDA_KBD_HEAD = 0x41a;
export const BDA_KBD_TAIL = 0x41c;
export const BDA_KBD_BUFFER = 0x41e;
export const BDA_FLOPPY_RECAL = 0x43e;
export const BDA_FLOPPY_MOTOR = 0x43f;
export const BDA_FLOPPY_MOTOR_TIMEOUT = 0x440;
export const BDA_FLOPPY_STATUS = 0x441;
export const BDA_VIDEO_MODE = 0x449;
export const BDA_VIDEO_COLS = 0x44a;
export const BDA_VIDEO_PAGE_SIZE = 0x44c;
export const BDA_VIDEO_PAGE_START = 0x44e;
export const BDA_CURSOR_POS = 0x450;
export const BDA_CURSOR_SHAPE = 0x460;
export const BDA_ACTIVE_PAGE = 0x462;
export const BDA_CRTC_BASE = 0x463;
export const BDA_VIDEO_MODE_CTL = 0x465;
export const BDA_TIMER_TICKS = 0x46c;
export const BDA_TIMER_OVERFLOW = 0x470;
export const BDA_BREAK_FLAG = 0x471;
export const BDA_RESET_FLAG = 0x472;
export const BDA_DISK_STATUS = 0x474;
export const BDA_DISK_COUNT = 0x475;
export const BDA_KBD_BUF_START = 0x480;
export const BDA_KBD_BUF_END = 0x482;
export const BDA_VIDEO_ROWS = 0x484;
export const BDA_CHAR_HEIGHT = 0x485;
export const BDA_VIDEO_CTL = 0x487;
export const BDA_VIDEO_SWITCHES = 0x488;
export const BDA_VIDEO_FLAGS = 0x489;
export const BDA_KBD_FLAGS3 = 0x496;
export const BDA_KBD_LEDS = 0x497;
/** Timer ticks per day: 1573040 = 0x1800B0 (IRQ 0 at 18.2065 Hz). */
export const TICKS_PER_DAY = 0x1800b0;
