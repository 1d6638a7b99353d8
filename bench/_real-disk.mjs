// A real filesystem image for benchmarks: 4 GiB raw ext4 made by `mkfs.ext4 -d` from a
// copy of /usr/share and /usr/bin (about 1 GB of real files here), as a user's disk
// looks, instead of random blocks. Built once and cached outside the repo
// (BENCH_CACHE, default /work/.cache/vdisk-bench if /work exists, else the temp
// folder); delete the cache folder to rebuild. Named with a leading _ so
// bench/run.mjs does not run it as a benchmark of its own.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The folder cached benchmark disks live in. */
export function cacheDir() {
  const dir = process.env.BENCH_CACHE ?? (existsSync('/work') ? '/work/.cache/vdisk-bench' : join(tmpdir(), 'vdisk-bench-cache'));
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Path of the cached 4 GiB ext4 raw image, building it first if missing. */
export function realDisk() {
  const img = join(cacheDir(), 'ext4-usr-4g.raw');
  if (existsSync(img)) return img;
  const work = mkdtempSync(join(cacheDir(), 'build-'));
  try {
    const tree = join(work, 'tree');
    mkdirSync(join(tree, 'usr'), { recursive: true });
    console.error(`building ${img}: copying /usr/share and /usr/bin, then mkfs.ext4 -d (once; cached)`);
    execFileSync('cp', ['-a', '/usr/share', '/usr/bin', join(tree, 'usr')], { stdio: 'inherit' });
    const tmp = join(work, 'disk.raw');
    execFileSync('truncate', ['-s', '4G', tmp]);
    execFileSync('mkfs.ext4', ['-q', '-F', '-d', tree, tmp], { stdio: 'inherit' });
    renameSync(tmp, img);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const st = statSync(img);
  console.error(`${img}: ${(st.size / 2 ** 30).toFixed(0)} GiB, ${(st.blocks * 512 / 2 ** 20).toFixed(0)} MiB allocated`);
  return img;
}
