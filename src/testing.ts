/**
 * Test doubles (`vdisk/testing`): images held in memory, and storage that fails,
 * tears or loses writes on a plan, for testing code built on vdisk (or a driver)
 * against crashes and I/O errors without touching a disk.
 *
 * @module vdisk/testing
 */
export { MemoryStorage } from './storage/memory.js';
export { MemoryLocation } from './storage/location.js';
export { FaultPlan, FaultStorage } from './storage/fault.js';
