import { existsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Command } from 'commander';
import { addApiOptions, resolveAdminToken } from '../../shared/cli/api-client.js';
import { UsageError } from '../../shared/cli/errors.js';
import { DEVICE_ID_RE } from '../../shared/protocol/topics.js';
import { writeFileAtomicSync } from '../keys/atomic.js';
import { openRegistry } from '../registry/open.js';
import { redactUrl } from '../registry/pg.js';
import { DEFAULT_CLOUD_USER, writeBrokerAuth } from './broker-auth.js';
import { provisionDevice } from './client.js';

/** The registry database inside a cloud data dir. */
export const REGISTRY_FILE = 'registry.db';

export function registryPathIn(dataDir: string): string {
  return join(dataDir, REGISTRY_FILE);
}

const collect = (v: string, acc: string[]) => [...acc, v];

/** `apprentice provision`: registers a device with the cloud and writes its edge.json (mode 0600). */
export function provisionCommand(): Command {
  return addApiOptions(new Command('provision'))
    .description('Provision a device with the cloud and write its config bundle (MQTT credentials, trusted keys); the password is shown only once')
    .requiredOption('--device <id>', 'device id (also its MQTT username): [A-Za-z0-9][A-Za-z0-9_.-]{0,63}')
    .option('--group <name>', 'rollout group (repeatable)', collect, [] as string[])
    .requiredOption('--out <file>', "where to write the bundle (edge.json, mode 0600); '-' prints it")
    .option('--force', 'overwrite --out if it exists', false)
    .addHelpText('after', '\nExample:\n  apprentice provision --cloud http://127.0.0.1:8787 --token-file .apprentice/cloud/admin-token --device pi-kitchen --group kitchen --out edge.json')
    .action(async (o: { cloud: string; token?: string; tokenFile?: string; device: string; group: string[]; out: string; force: boolean }) => {
      const token = resolveAdminToken(o);
      if (!DEVICE_ID_RE.test(o.device)) throw new UsageError(`--device: invalid device id "${o.device}" (allowed: ${DEVICE_ID_RE.source})`);
      const out = o.out === '-' ? undefined : resolve(o.out);
      // Checked before the request: the bundle holds the only copy of the password.
      if (out !== undefined) {
        if (!existsSync(dirname(out)) || !statSync(dirname(out)).isDirectory()) throw new UsageError(`--out: directory ${dirname(out)} does not exist`);
        if (existsSync(out) && !o.force) throw new UsageError(`--out: ${out} exists (pass --force to overwrite)`);
      }
      const bundle = await provisionDevice({ cloud: o.cloud, token, deviceId: o.device, groups: o.group });
      const text = JSON.stringify(bundle, null, 2) + '\n';
      if (out === undefined) {
        process.stdout.write(text);
        return;
      }
      try {
        writeFileAtomicSync(out, text, 0o600);
      } catch (err) {
        throw new Error(`device ${o.device} was provisioned but ${out} could not be written (${(err as Error).message}); revoke it (DELETE /v1/devices/${o.device}) and provision again`);
      }
      process.stderr.write(`provisioned ${bundle.deviceId}: wrote ${out} (mode 0600; it holds the device's only copy of its MQTT password)\n`);
    });
}

/** `apprentice broker-auth`: Mosquitto passwd + acl for the provisioned devices. */
export function brokerAuthCommand(): Command {
  return new Command('broker-auth')
    .description('Write the Mosquitto password file and ACL for every provisioned, non-revoked device (then: systemctl reload mosquitto)')
    .option('--data-dir <dir>', `cloud data directory (uses DIR/${REGISTRY_FILE})`)
    .option('--db <file>', 'registry database file (instead of --data-dir)')
    .option('--registry-url <url>', 'the PostgreSQL registry, postgres://… (instead of --data-dir / --db)')
    .requiredOption('--out-dir <dir>', 'where to write passwd and acl (e.g. /etc/mosquitto/apprentice)')
    .option('--cloud-user <name>', "the cloud's MQTT username", DEFAULT_CLOUD_USER)
    .option('--cloud-password-file <file>', "the cloud's MQTT password; created with a random one (mode 0600) if missing")
    .option('--json', 'print the result as JSON', false)
    .addHelpText('after', '\nExample:\n  apprentice broker-auth --data-dir /var/lib/apprentice --out-dir /etc/mosquitto/apprentice --cloud-password-file /etc/apprentice/mqtt-password')
    .action(async (o: { dataDir?: string; db?: string; registryUrl?: string; outDir: string; cloudUser: string; cloudPasswordFile?: string; json: boolean }) => {
      if ([o.dataDir, o.db, o.registryUrl].filter((x) => x !== undefined).length !== 1) throw new UsageError('give exactly one of --data-dir, --db or --registry-url');
      let registry;
      if (o.registryUrl !== undefined) {
        if (!/^postgres(ql)?:\/\//.test(o.registryUrl)) throw new UsageError(`--registry-url: must start with postgres:// or postgresql:// (got ${redactUrl(o.registryUrl)})`);
        registry = await openRegistry({ url: o.registryUrl });
      } else {
        const dbPath = o.db ?? registryPathIn(o.dataDir!);
        // Never create an empty registry by accident: a typo would yield a passwd with no devices.
        if (!existsSync(dbPath)) throw new UsageError(`${dbPath}: registry database not found`);
        registry = await openRegistry({ path: dbPath });
      }
      try {
        const r = await writeBrokerAuth({ registry, outDir: o.outDir, cloudUser: o.cloudUser, cloudPasswordFile: o.cloudPasswordFile });
        if (o.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
        else {
          process.stdout.write(`wrote ${r.passwdPath} (${r.devices} device(s) + ${o.cloudUser}) and ${r.aclPath}\n`);
          if (r.cloud === 'generated') process.stdout.write(`generated a password for ${o.cloudUser} in ${o.cloudPasswordFile} (use it in cloud.json)\n`);
          process.stdout.write('apply with: systemctl reload mosquitto\n');
        }
      } finally {
        await registry.close();
      }
    });
}
