/**
 * TLS with pre-shared keys for NBD (proto.md "TLS support": STARTTLS during
 * negotiation, then the rest of it and all of transmission inside TLS). Keys are read
 * from the PSK file format that nbdkit, qemu and libnbd share: one `username:hexkey`
 * per line. GnuTLS (which those tools use) and OpenSSL (Node's) meet on the TLS 1.2
 * PSK suites, so those are what we offer.
 */
import { readFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { TLSSocket, connect, type TLSSocketOptions } from 'node:tls';
import { VdiskError, fromSystemError } from '../../errors.js';

/** Identities to keys, as read from a PSK file. */
export type PskKeys = ReadonlyMap<string, Buffer>;

/** The PSK suites offered, ephemeral key exchange first. */
export const PSK_CIPHERS = [
  'ECDHE-PSK-CHACHA20-POLY1305',
  'DHE-PSK-AES256-GCM-SHA384',
  'DHE-PSK-AES128-GCM-SHA256',
  'ECDHE-PSK-AES256-CBC-SHA384',
  'ECDHE-PSK-AES128-CBC-SHA256',
  'PSK-AES256-GCM-SHA384',
  'PSK-AES128-GCM-SHA256',
].join(':');

/** A PSK file is small; anything bigger is not one. */
const MAX_PSK_FILE = 1024 * 1024;

/** Parse a PSK file's text (`username:hexkey` lines; blank lines and `#` comments skipped). */
export function parsePskFile(text: string, where: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    const user = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (colon <= 0 || hex.length === 0 || hex.length % 2 !== 0 || !/^[0-9a-fA-F]+$/.test(hex)) {
      throw new VdiskError('E_FORMAT', `${where}:${i + 1}: not a "username:hexkey" line`);
    }
    if (hex.length > 1024) throw new VdiskError('E_FORMAT', `${where}:${i + 1}: key longer than 512 bytes`);
    keys.set(user, Buffer.from(hex, 'hex'));
  }
  if (keys.size === 0) throw new VdiskError('E_FORMAT', `${where}: no keys in the PSK file`);
  return keys;
}

/** Read a PSK file. */
export async function readPskFile(path: string): Promise<Map<string, Buffer>> {
  const text = await readFile(path, 'utf8').catch((err: unknown) => {
    throw fromSystemError(err, path);
  });
  if (text.length > MAX_PSK_FILE) throw new VdiskError('E_FORMAT', `${path}: too large for a PSK file`);
  return parsePskFile(text, path);
}

function handshake(tls: TLSSocket, where: string, timeoutMs: number, event: 'secure' | 'secureConnect'): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      tls.destroy();
      reject(new VdiskError('E_IO', `${where}: TLS handshake did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    tls.once(event, () => {
      clearTimeout(timer);
      resolve(tls);
    });
    tls.once('error', (err: Error) => {
      clearTimeout(timer);
      tls.destroy();
      reject(new VdiskError('E_IO', `${where}: TLS handshake failed: ${err.message}`, { cause: err }));
    });
  });
}

/** The server's side of STARTTLS: take over `socket` and wait for the handshake. */
export function acceptTls(socket: Socket, keys: PskKeys, where: string, timeoutMs = 10_000): Promise<TLSSocket> {
  socket.pause();
  // Node's TLSSocket honours pskCallback as tls.createServer does; its typings list it for the server only.
  const options = {
    isServer: true,
    ciphers: PSK_CIPHERS,
    maxVersion: 'TLSv1.2',
    pskCallback: (_socket: TLSSocket, identity: string) => keys.get(identity) ?? null,
  } as TLSSocketOptions;
  const tls = new TLSSocket(socket, options);
  return handshake(tls, where, timeoutMs, 'secure');
}

/** The client's side of STARTTLS. */
export function startTls(socket: Socket, identity: string, key: Buffer, where: string, timeoutMs = 10_000): Promise<TLSSocket> {
  socket.pause();
  const tls = connect({
    socket,
    ciphers: PSK_CIPHERS,
    maxVersion: 'TLSv1.2',
    pskCallback: () => ({ psk: key, identity }),
    checkServerIdentity: () => undefined,
  });
  return handshake(tls, where, timeoutMs, 'secureConnect');
}
