/**
 * Issue 15 item 5: deploy/compose.yaml cannot be run here (no Docker), so this parses it and checks what
 * `docker compose up` would trip over: every file, env file, secret, volume, network and dependency it
 * references exists (in the repo, or listed in its header as a file the operator creates under ./local/);
 * the cluster profile has PostgreSQL 15, a broker, 3 cloud replicas with their own broker users and client
 * ids, and a TLS proxy whose upstreams are the replicas; the replicas' cloud.json is a valid cluster config.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadCloudConfig } from '../../../cloud/config/load.js';
import { CLUSTER_SESSION_EXPIRY_SECONDS, keysMode, mqttSessionExpirySeconds } from '../../../cloud/config/schema.js';
import { aclText } from '../../../cloud/provision/broker-auth.js';
import { REPO_ROOT } from '../../helpers/cli.js';

const DEPLOY = join(REPO_ROOT, 'deploy');
const COMPOSE_FILE = join(DEPLOY, 'compose.yaml');
const text = readFileSync(COMPOSE_FILE, 'utf8');

interface Service {
  image?: string;
  build?: { context: string; dockerfile_inline?: string; dockerfile?: string };
  command?: string[];
  profiles?: string[];
  environment?: Record<string, string>;
  env_file?: string[];
  volumes?: string[];
  secrets?: string[];
  depends_on?: string[] | Record<string, unknown>;
  networks?: string[] | Record<string, { ipv4_address?: string } | null>;
}
interface Compose {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
  secrets?: Record<string, { file: string }>;
  networks?: Record<string, { ipam?: { config?: { subnet: string }[] } }>;
}

// merge: compose resolves `<<: *anchor`; so does this parse.
const compose = parse(text, { merge: true }) as Compose;
const services = Object.entries(compose.services);

/** Files the header tells the operator to create (never committed: they hold secrets). */
const operatorFiles = new Set([...text.matchAll(/^#.*$/gm)].flatMap((line) => [...line[0].matchAll(/\.\/local\/[\w./-]+/g)].map((x) => x[0])));

/** A host path in the compose file: exists in the repo, or (under ./local/) is one the header lists. */
function expectHostPath(path: string, where: string): void {
  if (path.startsWith('./local/')) {
    const listed = [...operatorFiles].some((f) => path === f || path.startsWith(`${f}/`));
    expect(listed, `${where}: ${path} is under ./local/ but the header does not tell the operator to create it`).toBe(true);
    return;
  }
  expect(existsSync(resolve(DEPLOY, path)), `${where}: ${path} does not exist`).toBe(true);
}

const namesOf = (x: string[] | Record<string, unknown> | undefined): string[] => (Array.isArray(x) ? x : Object.keys(x ?? {}));
const replicas = services.filter(([, s]) => s.profiles?.includes('cluster') && s.command?.[0] === 'cloud');

describe('deploy/compose.yaml', () => {
  it('every service has an image or a build whose context exists, and a profile', () => {
    expect(services.length).toBeGreaterThan(0);
    for (const [name, s] of services) {
      expect(s.image ?? s.build, `${name}: no image or build`).toBeDefined();
      if (s.image) expect(s.image, name).toMatch(/^[\w./-]+:[\w.-]+$/);
      if (s.build) {
        expectHostPath(s.build.context, `${name}.build.context`);
        expect(s.build.dockerfile_inline ?? s.build.dockerfile, `${name}: build without a Dockerfile`).toBeDefined();
        // The inline Dockerfile copies these from the build context.
        for (const p of ['package.json', 'package-lock.json', 'bin']) expect(existsSync(resolve(DEPLOY, s.build.context, p)), `${name}: ${p}`).toBe(true);
      }
      expect(s.profiles?.some((p) => p === 'single' || p === 'cluster'), `${name}: in neither profile`).toBe(true);
    }
  });

  it('every volume, env file, secret, network and dependency referenced exists', () => {
    const named = new Set(Object.keys(compose.volumes ?? {}));
    const used = new Set<string>();
    for (const [name, s] of services) {
      for (const v of s.volumes ?? []) {
        const src = v.split(':')[0]!;
        if (src.startsWith('.')) expectHostPath(src, `${name}.volumes`);
        else {
          expect(named.has(src), `${name}: volume ${src} is not declared`).toBe(true);
          used.add(src);
        }
      }
      for (const f of s.env_file ?? []) expectHostPath(f, `${name}.env_file`);
      for (const sec of s.secrets ?? []) expect(compose.secrets?.[sec], `${name}: secret ${sec} is not declared`).toBeDefined();
      for (const n of namesOf(s.networks)) expect(compose.networks?.[n], `${name}: network ${n} is not declared`).toBeDefined();
      for (const d of namesOf(s.depends_on)) {
        expect(compose.services[d], `${name}: depends on unknown ${d}`).toBeDefined();
        // A dependency outside the service's profiles would not start with it.
        expect(compose.services[d]!.profiles?.some((p) => s.profiles?.includes(p)), `${name}: ${d} is in another profile`).toBe(true);
      }
    }
    expect([...named].filter((v) => !used.has(v)), 'declared but unused volumes').toEqual([]);
    for (const [name, sec] of Object.entries(compose.secrets ?? {})) expectHostPath(sec.file, `secrets.${name}`);
  });

  it('profile cluster: PostgreSQL 15, a Mosquitto broker, 3 cloud replicas and a TLS proxy', () => {
    const cluster = services.filter(([, s]) => s.profiles?.includes('cluster'));
    expect(cluster.some(([, s]) => s.image === 'postgres:15')).toBe(true);
    expect(cluster.some(([, s]) => s.image?.startsWith('eclipse-mosquitto:'))).toBe(true);
    expect(cluster.some(([, s]) => s.image?.startsWith('caddy:'))).toBe(true);
    expect(replicas.map(([n]) => n)).toHaveLength(3);
  });

  it('each replica has its own broker user = client id, its own data volume, and the shared keys and token', () => {
    const env = replicas.map(([, s]) => s.environment ?? {});
    const ids = env.map((e) => e.APPRENTICE_MQTT_CLIENT_ID);
    expect(new Set(ids).size).toBe(3);
    expect(new Set(env.map((e) => e.APPRENTICE_REPLICA_ID)).size).toBe(3);
    // mosquitto.conf sets use_username_as_clientid: the username is the client id, so they must agree.
    expect(readFileSync(join(DEPLOY, 'mosquitto', 'mosquitto.conf'), 'utf8')).toMatch(/^use_username_as_clientid true$/m);
    for (const e of env) expect(e.APPRENTICE_MQTT_USERNAME).toBe(e.APPRENTICE_MQTT_CLIENT_ID);
    const dataVolumes = replicas.map(([, s]) => s.volumes!.find((v) => v.endsWith(':/var/lib/apprentice'))!.split(':')[0]);
    expect(new Set(dataVolumes).size).toBe(3);
    const shared = (s: Service) => ({ secrets: s.secrets, sharedEnv: s.env_file?.filter((f) => !/cloud-\d\.env$/.test(f)) });
    for (const [, s] of replicas) expect(shared(s)).toEqual(shared(replicas[0]![1]));
    expect(replicas[0]![1].secrets).toContain('apprentice-keys');
  });

  it("the cluster ACL has the device rules of broker-auth and a cloud user for each replica", () => {
    const acl = readFileSync(join(DEPLOY, 'cluster', 'mosquitto-acl'), 'utf8');
    const broker = services.find(([, s]) => s.profiles?.includes('cluster') && s.image?.startsWith('eclipse-mosquitto:'))![1];
    expect(broker.volumes).toContain('./cluster/mosquitto-acl:/etc/mosquitto/apprentice/acl:ro');
    const patterns = (t: string) => t.split('\n').filter((l) => l.startsWith('pattern '));
    expect(patterns(acl)).toEqual(patterns(aclText()));
    const users = [...acl.matchAll(/^user (\S+)\ntopic readwrite apprentice\/v1\/#$/gm)].map((m) => m[1]);
    expect(users.sort()).toEqual(replicas.map(([, s]) => s.environment!.APPRENTICE_MQTT_USERNAME).sort());
  });

  it('the proxy terminates TLS and its upstreams are exactly the replicas, at the port they bind', () => {
    const proxy = services.find(([, s]) => s.image?.startsWith('caddy:'))![1];
    const mount = proxy.volumes!.find((v) => v.endsWith(':/etc/caddy/Caddyfile:ro'))!;
    const caddyfile = readFileSync(resolve(DEPLOY, mount.split(':')[0]!), 'utf8');
    const site = caddyfile.split('\n').find((l) => /^\S.*\{$/.test(l))!;
    expect(site, 'site address').not.toMatch(/^http:\/\//);
    const upstreams = /^\s*reverse_proxy ([^{]+)\{/m.exec(caddyfile)![1]!.trim().split(/\s+/);
    const cfg = JSON.parse(readFileSync(join(DEPLOY, 'cluster', 'cloud.json'), 'utf8')) as { api: { bind: string; trustedProxies: string[] } };
    const port = cfg.api.bind.split(':').pop();
    expect(upstreams.sort()).toEqual(replicas.map(([n]) => `${n}:${port}`).sort());
    // The replicas believe X-Forwarded-Proto from the proxy's fixed address only.
    const ip = (proxy.networks as Record<string, { ipv4_address: string }>).apprentice!.ipv4_address;
    expect(cfg.api.trustedProxies).toEqual([ip]);
    const subnet = compose.networks!.apprentice!.ipam!.config![0]!.subnet;
    expect(ip.startsWith(subnet.split('.').slice(0, 3).join('.') + '.')).toBe(true);
  });

  it("each replica's mounted cloud.json, with its environment, is a valid cluster config naming the mounted secret and broker", () => {
    for (const [name, s] of replicas) {
      const configPath = s.command![s.command!.indexOf('--config') + 1]!;
      const mount = s.volumes!.find((v) => v.split(':')[1] === configPath)!;
      expect(mount, `${name}: ${configPath} is not mounted`).toBeDefined();
      // What the operator's env files add (./local/cluster.env, ./local/cloud-N.env).
      const env = { ...s.environment, APPRENTICE_ADMIN_TOKEN: 'operator-admin-token-0123456789', APPRENTICE_MQTT_PASSWORD: 'secret', APPRENTICE_REGISTRY_URL: 'postgres://apprentice:secret@postgres:5432/apprentice' };
      const cfg = loadCloudConfig({ file: resolve(DEPLOY, mount.split(':')[0]!), env });
      expect(cfg.cluster).toEqual({ enabled: true, replicaId: s.environment!.APPRENTICE_REPLICA_ID });
      expect(keysMode(cfg)).toBe('shared');
      expect(cfg.keys.sharedDir).toBe('/run/secrets/apprentice-keys');
      expect(cfg.mqtt.clientId).toBe(s.environment!.APPRENTICE_MQTT_CLIENT_ID);
      expect(cfg.mqtt.sharedSubscriptions).toBe(true);
      // MQTT 5, so the replica's session expires minutes after it dies (README "Running several replicas").
      expect(cfg.mqtt.protocolVersion).toBe(5);
      expect(mqttSessionExpirySeconds(cfg)).toBe(CLUSTER_SESSION_EXPIRY_SECONDS);
      const brokerHost = new URL(cfg.mqtt.url!).hostname;
      expect(compose.services[brokerHost]?.profiles).toContain('cluster');
      expect(s.volumes!.some((v) => v.split(':')[1] === cfg.mqtt.caFile)).toBe(true);
    }
  });

  it('PostgreSQL reads its password from the declared secret', () => {
    const pg = services.find(([, s]) => s.image === 'postgres:15')![1];
    const file = pg.environment!.POSTGRES_PASSWORD_FILE!;
    expect(file.startsWith('/run/secrets/')).toBe(true);
    expect(pg.secrets).toContain(file.slice('/run/secrets/'.length));
  });
});
