/**
 * Partition tables (MBR and GPT) read through any BlockDevice: inside raw, VHD,
 * VDI, VMDK images, differencing chains and pool volumes alike.
 */
export * from './types.js';
export { readPartitions, partitionSpans } from './read.js';
export { checkPartitions, minimumDiskSize, moveBackupGptToEnd, repairBackupGpt, repairPrimaryGpt, updateProtectiveMbr, type GptRewrite } from './repair.js';
export { gptTypeName, gptTypeNames } from './gpt.js';
export { mbrTypeName, mbrTypeNames } from './mbr.js';
