import { readFileSync } from 'node:fs';
import type { Logger } from '../../shared/log/index.js';
import type { StoreRegistry } from '../registry/open.js';
import { writeBrokerAuth, type BrokerAuthResult } from './broker-auth.js';

export interface MosquittoReloadOptions {
  /** Where Mosquitto's `password_file` and `acl_file` live (the `apprentice broker-auth --out-dir`). */
  authDir: string;
  /** Mosquitto's PID file (e.g. from its systemd unit); the broker gets SIGHUP. */
  pidFile: string;
  cloudUser?: string;
  /** As `broker-auth --cloud-password-file`; without it the cloud user's line is kept from the passwd file. */
  cloudPasswordFile?: string;
}

/**
 * Revocation with Mosquitto (issue 10): rewrites the password file and ACL from the registry (the
 * revoked device is gone from it) and sends the broker SIGHUP. Mosquitto 2 re-reads both on SIGHUP and
 * disconnects clients whose credentials no longer pass, so the revoked device's live session ends and
 * it cannot log in again. Rejects when the PID file is unreadable or the signal fails (the caller logs it).
 */
export async function reloadMosquittoAuth(registry: StoreRegistry, opts: MosquittoReloadOptions, log?: Logger): Promise<BrokerAuthResult & { pid: number }> {
  const written = await writeBrokerAuth({ registry, outDir: opts.authDir, ...(opts.cloudUser ? { cloudUser: opts.cloudUser } : {}), ...(opts.cloudPasswordFile ? { cloudPasswordFile: opts.cloudPasswordFile } : {}) });
  const text = readFileSync(opts.pidFile, 'utf8').trim();
  const pid = Number(text);
  if (!/^\d+$/.test(text) || pid <= 1) throw new Error(`${opts.pidFile}: not a PID ("${text.slice(0, 40)}")`);
  process.kill(pid, 'SIGHUP');
  log?.info({ pid, devices: written.devices, authDir: opts.authDir }, 'mosquitto password file rewritten and broker reloaded (SIGHUP)');
  return { ...written, pid };
}
