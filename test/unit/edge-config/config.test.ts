import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, EDGE_DEFAULTS, EDGE_ENV, edgeConfigSchema, loadEdgeConfig, mqttClientOptions, parseBind, parseEdgeConfig } from '../../../edge/config/index.js';
import { DEFAULT_OUTBOX_CONFIG } from '../../../edge/outbox/index.js';
import { DEFAULT_SELECTION_CONFIG } from '../../../edge/selection/index.js';
import { lastWill } from '../../../edge/status/index.js';
import { generateSigningKey, toTrustedKey } from '../../../shared/manifest/index.js';
import { REPO_ROOT, runCli } from '../../helpers/cli.js';

const key = generateSigningKey();
const other = generateSigningKey();
const trusted = toTrustedKey(key);

/** Exactly what the cloud hands a device at provisioning. */
const bundle = () => ({
  version: 1,
  deviceId: 'pi-kitchen-01',
  mqtt: { url: 'mqtts://broker.example.com:8883', username: 'pi-kitchen-01', password: 's3cret' },
  trustedKeys: [trusted],
});

function issues(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return [...err.issues];
    throw err;
  }
  throw new Error('expected a ConfigError');
}

async function asyncIssues(p: Promise<unknown>): Promise<string[]> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ConfigError) return [...err.issues];
    throw err;
  }
  throw new Error('expected a ConfigError');
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'apprentice-edge-config-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function file(name: string, content: unknown): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, typeof content === 'string' ? content : JSON.stringify(content));
  return p;
}

describe('edge config: good configs', () => {
  it('takes the provisioning bundle as a complete config, everything else defaulted from EDGE_DEFAULTS', () => {
    const c = parseEdgeConfig(bundle());
    expect(c.deviceId).toBe('pi-kitchen-01');
    expect(c.mqtt).toEqual({ ...bundle().mqtt, ...EDGE_DEFAULTS.mqtt });
    expect(c.dataDir).toBe('/var/lib/apprentice');
    expect(c.api).toEqual(EDGE_DEFAULTS.api);
    expect(c.api.bind).toBe('127.0.0.1:8080');
    expect(c.runtime).toEqual(EDGE_DEFAULTS.runtime);
    expect(c.runtime.intraOpThreads).toBe(1);
    expect(c.updates).toEqual(EDGE_DEFAULTS.updates);
    expect(c.selection).toEqual(DEFAULT_SELECTION_CONFIG);
    expect(c.outbox).toEqual(DEFAULT_OUTBOX_CONFIG);
    expect(c.telemetrySeconds).toBe(30);
    expect(c.mqtt.protocolVersion).toBe(4);
    expect(c.mqtt.rejectUnauthorized).toBe(true);
  });

  it('accepts every section spelled out, several trusted keys (rotation) and MQTT 5', () => {
    const c = parseEdgeConfig({
      ...bundle(),
      trustedKeys: [trusted, toTrustedKey(other)],
      dataDir: '/srv/apprentice',
      mqtt: { url: 'mqtt://10.0.0.2:1883', protocolVersion: 5, keepaliveSeconds: 10, reconnectMs: 1000, rejectUnauthorized: false, passwordFile: '/run/secrets/mqtt' },
      api: { bind: '[::1]:9090', maxBodyBytes: 65536, maxBatch: 16, microBatch: { enabled: true, maxBatch: 8, maxWaitMs: 2 } },
      selection: { lowConfidence: { threshold: 0.4 }, caps: { perMinute: null } },
      outbox: { maxRows: 500 },
      runtime: { intraOpThreads: 2, latencyBudgetMs: 25, healthWindowSeconds: 120 },
      telemetrySeconds: 5,
    });
    expect(c.trustedKeys).toHaveLength(2);
    expect(c.mqtt.protocolVersion).toBe(5);
    expect(c.api.microBatch).toEqual({ enabled: true, maxBatch: 8, maxWaitMs: 2 });
    expect(c.selection.caps).toEqual({ perMinute: null, perHour: 600 });
    expect(c.outbox.maxRows).toBe(500);
    expect(c.runtime.latencyBudgetMs).toBe(25);
  });

  it('splits bind addresses, IPv6 in brackets', () => {
    expect(parseBind('127.0.0.1:8080')).toEqual({ hostname: '127.0.0.1', port: 8080 });
    expect(parseBind('[::1]:0')).toEqual({ hostname: '::1', port: 0 });
    expect(parseBind('localhost:80')).toEqual({ hostname: 'localhost', port: 80 });
  });
});

describe('edge config: bad configs, one `path: message` line per issue', () => {
  it('names every missing required field', () => {
    expect(issues(() => parseEdgeConfig({ version: 1 }))).toEqual(['deviceId: required', 'mqtt: required', 'trustedKeys: required']);
  });

  it('refuses another version', () => {
    expect(issues(() => parseEdgeConfig({ ...bundle(), version: 2 }))).toEqual(['version: unsupported config version (this daemon reads version 1)']);
  });

  it.each([
    [{ deviceId: 'has/slash' }, 'deviceId: invalid device id'],
    [{ mqtt: { url: 'http://broker:80' } }, 'mqtt.url: expected an mqtt://, mqtts://, ws:// or wss:// URL'],
    [{ mqtt: { url: 'mqtt://b', protocolVersion: 3 } }, 'mqtt.protocolVersion: expected 4 (MQTT 3.1.1) or 5'],
    [{ mqtt: { url: 'mqtt://b', password: 'x', passwordFile: '/p' } }, 'mqtt.passwordFile: set password or passwordFile, not both'],
    [{ mqtt: { url: 'mqtt://b', certFile: '/c' } }, 'mqtt.keyFile: certFile and keyFile go together (TLS client certificate)'],
    [{ trustedKeys: [] }, 'trustedKeys: at least one trusted key is required (from the provisioning bundle)'],
    [{ trustedKeys: [{ keyId: toTrustedKey(other).keyId, publicKeyPem: trusted.publicKeyPem }] }, `trustedKeys.0.keyId: does not match publicKeyPem (whose key id is ${trusted.keyId})`],
    [{ trustedKeys: [{ keyId: trusted.keyId, publicKeyPem: 'not a pem' }] }, 'trustedKeys.0.publicKeyPem: public key: cannot parse PEM'],
    [{ trustedKeys: [trusted, trusted] }, `trustedKeys.1.keyId: duplicate key id ${trusted.keyId}`],
    [{ api: { bind: '8080' } }, 'api.bind: expected host:port (IPv6 as [addr]:port)'],
    [{ api: { bind: '0.0.0.0:70000' } }, 'api.bind: port must be 0..65535'],
    [{ api: { host: '127.0.0.1', port: 8080 } }, 'api: Unrecognized keys: "host", "port"'],
    [{ api: { bind: '0.0.0.0:8080' } }, 'api.bind: 0.0.0.0:8080 is not a loopback address: set api.token or api.tokenFile, or api.allowUnauthenticated: true'],
    [{ api: { bind: '[::]:8080' } }, 'api.bind: [::]:8080 is not a loopback address'],
    [{ api: { token: 'short' } }, 'api.token: must be at least 16 characters'],
    [{ api: { token: 'tok-0123456789abcdef', tokenFile: '/t' } }, 'api.tokenFile: set token or tokenFile, not both'],
    [{ selection: { lowConfidence: { threshold: 2 } } }, 'selection.lowConfidence.threshold: Too big: expected number to be <=1'],
    [{ outbox: { maxRows: 0 } }, 'outbox.maxRows: Too small: expected number to be >=1'],
    [{ runtime: { intraOpThreads: 0 } }, 'runtime.intraOpThreads: Too small: expected number to be >=1'],
    [{ telemetrySeconds: 'often' }, 'telemetrySeconds: Invalid input: expected number, received string'],
    [{ colour: 'blue' }, '(root): Unrecognized key: "colour"'],
  ])('%j', (patch, line) => {
    const raw = { ...bundle(), ...patch };
    const got = issues(() => parseEdgeConfig(raw));
    expect(got.some((l) => l.startsWith(line))).toBe(true);
  });

  it('a non-loopback bind is accepted with a token, a token file, or an explicit allowUnauthenticated', () => {
    for (const api of [{ token: 'tok-0123456789abcdef' }, { tokenFile: '/etc/apprentice/api-token' }, { allowUnauthenticated: true }]) {
      expect(parseEdgeConfig({ ...bundle(), api: { bind: '0.0.0.0:8080', ...api } }).api.bind).toBe('0.0.0.0:8080');
    }
    for (const bind of ['127.0.0.1:8080', '127.3.2.1:1', 'localhost:8080', '[::1]:8080']) expect(parseEdgeConfig({ ...bundle(), api: { bind } }).api.bind).toBe(bind);
  });

  it('reports all problems at once', () => {
    const got = issues(() => parseEdgeConfig({ ...bundle(), deviceId: '', api: { bind: 'x' }, telemetrySeconds: 0 }));
    expect(got.map((l) => l.split(':')[0])).toEqual(['deviceId', 'api.bind', 'telemetrySeconds']);
  });

  it('refuses the installer template until its CHANGE-ME placeholders are replaced', () => {
    const script = readFileSync(join(REPO_ROOT, 'deploy/install-edge.sh'), 'utf8');
    const m = /template_config\(\) \{[\s\S]*?cat <<'EOF'\n([\s\S]*?)\nEOF\n/.exec(script);
    const template = JSON.parse(m![1]!) as Record<string, unknown>;
    const got = issues(() => parseEdgeConfig(template));
    const paths = got.map((l) => l.split(':')[0]);
    expect(new Set(paths)).toEqual(new Set(['deviceId', 'mqtt.url', 'mqtt.username', 'mqtt.password', 'trustedKeys.0.keyId', 'trustedKeys.0.publicKeyPem']));
    // Filled in (what provisioning does), the template's shape is exactly the schema's.
    const filled = { ...template, deviceId: 'pi-1', mqtt: { ...(template.mqtt as object), url: 'mqtts://broker:8883', username: 'pi-1', password: 'pw' }, trustedKeys: [trusted] };
    expect(edgeConfigSchema.safeParse(filled).success).toBe(true);
  });
});

describe('edge config: file, environment and flags', () => {
  it('env overrides the file; strings verbatim, other fields as JSON', async () => {
    const path = await file('env.json', bundle());
    const c = await loadEdgeConfig({
      file: path,
      env: {
        APPRENTICE_DEVICE_ID: 'pi-from-env',
        APPRENTICE_MQTT_URL: 'mqtt://127.0.0.1:1883',
        APPRENTICE_MQTT_USERNAME: 'u',
        APPRENTICE_MQTT_PASSWORD: '123456', // a string field: not turned into a number
        APPRENTICE_DATA_DIR: '/tmp/apprentice-data',
        APPRENTICE_API_BIND: '0.0.0.0:9000',
        APPRENTICE_API_TOKEN: 'tok-0123456789abcdef', // a non-loopback bind needs one
        APPRENTICE_TRUSTED_KEYS: JSON.stringify([toTrustedKey(other)]),
        APPRENTICE_MQTT_KEEPALIVE_SECONDS: '15',
        APPRENTICE_MQTT_REJECT_UNAUTHORIZED: 'false',
        APPRENTICE_SELECTION_CAPS_PER_HOUR: 'null',
        APPRENTICE_SELECTION_HIGH_ENTROPY_UNIT: 'nats',
        APPRENTICE_RUNTIME_LATENCY_BUDGET_MS: '12.5',
        APPRENTICE_OUTBOX_MAX_ROWS: '',
        APPRENTICE_TELEMETRY_SECONDS: '10',
      },
    });
    expect(c.deviceId).toBe('pi-from-env');
    expect(c.mqtt).toMatchObject({ url: 'mqtt://127.0.0.1:1883', username: 'u', password: '123456', keepaliveSeconds: 15, rejectUnauthorized: false });
    expect(c.dataDir).toBe('/tmp/apprentice-data');
    expect(c.api.bind).toBe('0.0.0.0:9000');
    expect(c.trustedKeys).toEqual([toTrustedKey(other)]);
    expect(c.selection.caps.perHour).toBeNull();
    expect(c.selection.highEntropy.unit).toBe('nats');
    expect(c.runtime.latencyBudgetMs).toBe(12.5);
    expect(c.outbox.maxRows).toBe(DEFAULT_OUTBOX_CONFIG.maxRows); // empty = unset
    expect(c.telemetrySeconds).toBe(10);
  });

  it('runs from the environment alone (no file)', async () => {
    const c = await loadEdgeConfig({
      env: { APPRENTICE_DEVICE_ID: 'pi-9', APPRENTICE_MQTT_URL: 'mqtt://b:1883', APPRENTICE_TRUSTED_KEYS: JSON.stringify([trusted]) },
    });
    expect(c).toMatchObject({ version: 1, deviceId: 'pi-9', dataDir: '/var/lib/apprentice' });
  });

  it('flags override the environment', async () => {
    const path = await file('flags.json', bundle());
    const c = await loadEdgeConfig({ file: path, env: { APPRENTICE_DATA_DIR: '/env', APPRENTICE_API_BIND: '127.0.0.1:1' }, overrides: { dataDir: '/flag', 'api.bind': '127.0.0.1:2', unused: undefined } });
    expect(c.dataDir).toBe('/flag');
    expect(c.api.bind).toBe('127.0.0.1:2');
  });

  it('names the variable a bad value came from', async () => {
    const path = await file('badenv.json', bundle());
    const got = await asyncIssues(loadEdgeConfig({ file: path, env: { APPRENTICE_MQTT_KEEPALIVE_SECONDS: 'soon', APPRENTICE_TRUSTED_KEYS: '[{"keyId":"nothex","publicKeyPem":"x"}]' } }));
    expect(got).toContain('mqtt.keepaliveSeconds (from APPRENTICE_MQTT_KEEPALIVE_SECONDS): Invalid input: expected number, received string');
    expect(got.some((l) => l.startsWith('trustedKeys.0.keyId (from APPRENTICE_TRUSTED_KEYS): expected a 16-hex-digit key id'))).toBe(true);
  });

  it('reports an unreadable or malformed file on one line', async () => {
    expect(await asyncIssues(loadEdgeConfig({ file: join(dir, 'missing.json'), env: {} }))).toEqual([`${join(dir, 'missing.json')}: cannot read the config file (ENOENT)`]);
    const broken = await file('broken.json', '{"version": 1,');
    expect((await asyncIssues(loadEdgeConfig({ file: broken, env: {} })))[0]).toMatch(/broken\.json: not valid JSON/);
    const list = await file('list.json', '[1]');
    expect(await asyncIssues(loadEdgeConfig({ file: list, env: {} }))).toEqual([`${list}: the config must be a JSON object`]);
  });

  it('derives one variable per field from the schema, all distinct', () => {
    const names = EDGE_ENV.map((e) => e.name);
    expect(new Set(names).size).toBe(names.length);
    for (const n of ['APPRENTICE_DEVICE_ID', 'APPRENTICE_MQTT_URL', 'APPRENTICE_MQTT_USERNAME', 'APPRENTICE_MQTT_PASSWORD', 'APPRENTICE_DATA_DIR', 'APPRENTICE_API_BIND', 'APPRENTICE_TRUSTED_KEYS']) {
      expect(names).toContain(n);
    }
    expect(EDGE_ENV.find((e) => e.name === 'APPRENTICE_TRUSTED_KEYS')?.kind).toBe('json');
    expect(EDGE_ENV.find((e) => e.name === 'APPRENTICE_MQTT_PASSWORD')?.kind).toBe('string');
    expect(names).not.toContain('APPRENTICE_VERSION');
  });
});

describe('MQTT client options', () => {
  const will = lastWill('pi-kitchen-01', null, new Date());

  it('reconnects forever with a clean session, the offline last will and no automatic resubscribe', async () => {
    const o = await mqttClientOptions(parseEdgeConfig(bundle()), will);
    expect(o).toMatchObject({ clientId: 'pi-kitchen-01', clean: true, protocolVersion: 4, reconnectPeriod: 5000, keepalive: 30, resubscribe: false, manualConnect: true, username: 'pi-kitchen-01', password: 's3cret', rejectUnauthorized: true });
    expect(o.will).toMatchObject({ topic: 'apprentice/v1/devices/pi-kitchen-01/status', qos: 1, retain: true });
    expect(JSON.parse(String(o.will!.payload))).toMatchObject({ state: 'offline', deviceId: 'pi-kitchen-01' });
  });

  it('reads the password file (first line) and TLS files; an unreadable one is a config error', async () => {
    const pw = await file('mqtt-password', 'from-file\n');
    const ca = await file('ca.crt', 'CA');
    const o = await mqttClientOptions(parseEdgeConfig({ ...bundle(), mqtt: { url: 'mqtts://b', passwordFile: pw, caFile: ca } }), will);
    expect(o.password).toBe('from-file');
    expect(String(o.ca)).toBe('CA');
    const got = await asyncIssues(mqttClientOptions(parseEdgeConfig({ ...bundle(), mqtt: { url: 'mqtts://b', caFile: join(dir, 'nope.crt') } }), will));
    expect(got).toEqual([`mqtt.caFile: cannot read ${join(dir, 'nope.crt')} (ENOENT)`]);
  });
});

describe('apprentice edge (CLI)', () => {
  it('prints one `path: message` line per issue and exits 2 on an invalid config', async () => {
    const path = await file('cli-bad.json', { version: 1, deviceId: 'x/y', mqtt: { url: 'ftp://b' }, trustedKeys: [] });
    const r = await runCli(['edge', '--config', path], { env: { APPRENTICE_DEVICE_ID: '' } });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toEqual([
      'deviceId: invalid device id',
      'mqtt.url: expected an mqtt://, mqtts://, ws:// or wss:// URL',
      'trustedKeys: at least one trusted key is required (from the provisioning bundle)',
    ]);
  });

  it('refuses to start on a non-loopback address without a token: exit 2, one line', async () => {
    const path = await file('cli-open.json', { ...bundle(), api: { bind: '0.0.0.0:0' } });
    const r = await runCli(['edge', '--config', path]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toEqual(['api.bind: 0.0.0.0:0 is not a loopback address: set api.token or api.tokenFile, or api.allowUnauthenticated: true to serve it without authentication']);
  });

  it('--help lists the options and the environment variables', async () => {
    const r = await runCli(['edge', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/--config <file>/);
    expect(r.stdout).toMatch(/--data-dir <dir>/);
    expect(r.stdout).toMatch(/--bind <host:port>/);
    expect(r.stdout).toMatch(/APPRENTICE_TRUSTED_KEYS\s+trustedKeys \(JSON\)/);
  });
});
