/**
 * NBD as a library (`vdisk/nbd`): a server over any BlockDevice, and the client that
 * opens `nbd://`, `nbd+unix://` and `nbds://` exports as Storage.
 *
 * @module vdisk/nbd
 */
export { NbdServer, type NbdExport, type NbdServerOptions } from './server.js';
export { NbdClient, NbdStorage, type NbdConnectOptions } from '../storage/nbd/client.js';
export { NbdLocation } from '../storage/nbd/location.js';
export { isNbdUri, parseNbdUri, type NbdAddress } from '../storage/nbd/uri.js';
export { parsePskFile, readPskFile, type PskKeys } from '../storage/nbd/tls.js';
