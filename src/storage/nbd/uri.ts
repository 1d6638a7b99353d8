import { VdiskError } from '../../errors.js';

/** Where an NBD export is: a TCP host and port, or a Unix socket, and the export's name. */
export interface NbdAddress {
  host?: string;
  port?: number;
  socket?: string;
  export: string;
  tls: boolean;
  /** nbds://: the PSK identity (the URI's user part). */
  user?: string;
  /** nbds://: `?tls-psk-file=FILE`, as libnbd names it. */
  tlsPskFile?: string;
  /** The URI as given, for messages. */
  uri: string;
}

const SCHEMES = ['nbd:', 'nbds:', 'nbd+unix:', 'nbds+unix:', 'nbd+tcp:', 'nbds+tcp:'];

/** True when `address` is an NBD URI (any scheme of the NBD URI spec). */
export function isNbdUri(address: string): boolean {
  return /^nbds?(\+(unix|tcp))?:\/\//i.test(address);
}

/**
 * Parse an NBD URI as NetworkBlockDevice's `doc/uri.md` writes them:
 * `nbd://host[:port]/export`, `nbd+unix:///export?socket=PATH`, `nbds://…` for TLS.
 * The export is the path without its leading slash (URL-decoded); 10809 is the port.
 */
export function parseNbdUri(address: string): NbdAddress {
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    throw new VdiskError('E_USAGE', `${address}: not a valid NBD URI (nbd://host[:port]/export or nbd+unix:///export?socket=PATH)`);
  }
  const scheme = url.protocol.toLowerCase();
  if (!SCHEMES.includes(scheme)) throw new VdiskError('E_USAGE', `${address}: unknown scheme "${url.protocol}" (nbd, nbds, nbd+unix, nbds+unix)`);
  const tls = scheme.startsWith('nbds');
  const exportName = decodeURIComponent(url.pathname.replace(/^\//, ''));
  const secrets = {
    ...(url.username ? { user: decodeURIComponent(url.username) } : {}),
    ...(url.searchParams.get('tls-psk-file') ? { tlsPskFile: url.searchParams.get('tls-psk-file')! } : {}),
  };
  if (scheme.includes('+unix')) {
    const socket = url.searchParams.get('socket');
    if (!socket) throw new VdiskError('E_USAGE', `${address}: a Unix-socket URI needs ?socket=PATH`);
    if (url.host !== '') throw new VdiskError('E_USAGE', `${address}: a Unix-socket URI has no host (nbd+unix:///export?socket=PATH)`);
    return { socket, export: exportName, tls, uri: address, ...secrets };
  }
  if (!url.hostname) throw new VdiskError('E_USAGE', `${address}: no host`);
  const port = url.port === '' ? 10809 : Number(url.port);
  return { host: url.hostname.replace(/^\[|\]$/g, ''), port, export: exportName, tls, uri: address, ...secrets };
}
