import { fileURLToPath } from 'node:url';

/**
 * The workplace's shared folder beside the repository (`../shared`: guest images,
 * CPU test suites). Its files are test data we may not copy into the repo; tests
 * that need them skip, naming the path, when a checkout has no such folder.
 * VDISK_SHARED_DIR overrides the location.
 */
export const SHARED_DIR = process.env.VDISK_SHARED_DIR ?? fileURLToPath(new URL('../../../shared/', import.meta.url));
