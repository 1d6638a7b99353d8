/**
 * An NBD export as an image's location: the image is the export's contents, opened
 * through the client. An image inside an export cannot reach files beside it (a
 * server exports devices, not folders), so its references (a VHD parent, a VMDK
 * extent) are refused with E_PATH; a server such as `vdisk serve` or `qemu-nbd`
 * serves a differencing chain already flattened.
 */
import { VdiskError } from '../../errors.js';
import type { ImageLocation } from '../location.js';
import type { Storage } from '../storage.js';
import { NbdStorage } from './client.js';
import { parseNbdUri } from './uri.js';

export class NbdLocation implements ImageLocation {
  readonly name: string;

  constructor(uri: string) {
    parseNbdUri(uri);
    this.name = uri;
  }

  resolve(ref: string, what = 'reference'): string {
    throw new VdiskError('E_PATH', `${this.name}: the image refers to ${what} "${ref}", which cannot be reached inside an NBD export (serve the image with its chain, or open it with no backing file)`);
  }

  relativeName(name: string): string {
    return name;
  }

  open(name: string, opts: { readOnly?: boolean } = {}): Promise<Storage> {
    if (name !== this.name) return Promise.reject(new VdiskError('E_PATH', `${this.name}: "${name}" is not this export`));
    return NbdStorage.open(name, { readOnly: opts.readOnly ?? false });
  }

  create(name: string): Promise<Storage> {
    return Promise.reject(new VdiskError('E_UNSUPPORTED', `${name}: cannot create a file inside an NBD export (write into an existing export with a raw target instead)`));
  }

  async exists(name: string): Promise<boolean> {
    return name === this.name;
  }

  remove(name: string): Promise<void> {
    return Promise.reject(new VdiskError('E_UNSUPPORTED', `${name}: cannot remove an NBD export`));
  }

  rename(from: string): Promise<void> {
    return Promise.reject(new VdiskError('E_UNSUPPORTED', `${from}: cannot rename inside an NBD export`));
  }

  async siblings(): Promise<string[]> {
    return [];
  }

  at(name: string): ImageLocation {
    return new NbdLocation(this.resolve(name));
  }
}
