/**
 * Real file-system faults for the edge disk drills (issue 9): a size-limited tmpfs (disk full) and a
 * loop-mounted ext4 with `errors=remount-ro` that the kernel switches to read-only on demand (its
 * `trigger_fs_error` sysfs knob: the same emergency read-only an SD card with I/O errors gets). A plain
 * `mount -o remount,ro` is refused (EBUSY) while a daemon holds files open for writing, so that is not
 * how a data dir goes read-only under a running daemon.
 *
 * Needs root and the `mount`, `losetup`, `mkfs.ext4` tools; `mountSupport()` says why not otherwise.
 */
import { execFileSync } from 'node:child_process';
import { basename, join } from 'node:path';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Why these drills cannot run here, or undefined when they can (probes a 1 MiB tmpfs mount). */
export function mountSupport(probeDir: string): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (mount)';
  try {
    mkdirSync(probeDir, { recursive: true });
    run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', probeDir]);
    run('umount', [probeDir]);
    rmSync(probeDir, { recursive: true, force: true });
    return undefined;
  } catch (err) {
    return `mount(8) failed: ${(err as Error).message.split('\n')[0]}`;
  }
}

/** Mounts a tmpfs of `bytes` at `dir` (created). */
export function mountTmpfs(dir: string, bytes: number): void {
  mkdirSync(dir, { recursive: true });
  run('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir]);
}

/** Writes `fillerPath` until the file system is full; returns the error code that stopped it (ENOSPC). */
export function fillDisk(fillerPath: string): string {
  const chunk = Buffer.alloc(64 * 1024, 1);
  try {
    for (let i = 0; i < 1_000_000; i++) writeFileSync(fillerPath, chunk, { flag: 'a' });
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'unknown';
  }
  return 'no error';
}

/** Tries to create a small file in `dir`; the error code (ENOSPC, EROFS) or 'ok'. */
export function probeWrite(dir: string): string {
  const p = join(dir, `.probe-${process.pid}-${Date.now()}`);
  try {
    writeFileSync(p, Buffer.alloc(8 * 1024, 2));
    rmSync(p, { force: true });
    return 'ok';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'unknown';
  }
}

/** A loop-mounted ext4 image (`errors=remount-ro`) at `dir`. */
export class Ext4Loop {
  private loopDev: string | undefined;

  constructor(
    readonly image: string,
    readonly dir: string,
    readonly megabytes = 32,
  ) {}

  create(): void {
    writeFileSync(this.image, '');
    run('truncate', ['-s', `${this.megabytes}M`, this.image]);
    run('mkfs.ext4', ['-q', '-F', this.image]);
    this.mount();
  }

  /** Mounts the image (after `fsck`, as a host would after an emergency read-only). */
  mount(): void {
    mkdirSync(this.dir, { recursive: true });
    this.loopDev = run('losetup', ['-f', '--show', this.image]).trim();
    run('mount', ['-o', 'errors=remount-ro', this.loopDev, this.dir]);
  }

  /** The kernel's emergency read-only (ext4 error, errors=remount-ro): every later write fails with EROFS. */
  goReadOnly(): void {
    const dev = basename(this.loopDev!);
    writeFileSync(`/sys/fs/ext4/${dev}/trigger_fs_error`, 'apprentice drill');
  }

  readOnly(): boolean {
    const line = readFileSync('/proc/mounts', 'utf8').split('\n').find((l) => l.split(' ')[1] === this.dir);
    return /(^|,)(ro|emergency_ro)(,|$)/.test(line?.split(' ')[3] ?? '');
  }

  /** Unmounts, repairs (fsck -y) and detaches. Files must be closed (the daemon stopped). */
  unmount({ repair = true } = {}): void {
    if (!this.loopDev) return;
    run('umount', [this.dir]);
    if (repair) {
      try {
        run('fsck.ext4', ['-y', this.loopDev]);
      } catch {
        // exit 1: errors corrected, which is what an emergency read-only leaves to do
      }
    }
    run('losetup', ['-d', this.loopDev]);
    this.loopDev = undefined;
  }

  dispose(): void {
    try {
      this.unmount({ repair: false });
    } catch {
      try {
        run('umount', ['-l', this.dir]);
      } catch {
        // already gone
      }
      if (this.loopDev) run('losetup', ['-d', this.loopDev]);
      this.loopDev = undefined;
    }
    rmSync(this.image, { force: true });
  }
}

/** Unmounts `dir` if mounted (lazily when busy). */
export function unmountQuietly(dir: string): void {
  try {
    run('umount', [dir]);
  } catch {
    try {
      run('umount', ['-l', dir]);
    } catch {
      // not mounted
    }
  }
}
