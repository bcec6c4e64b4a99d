import { join } from 'node:path';
import { Command } from 'commander';
import { createLogger } from '../shared/log/index.js';
import { CLOUD_ENV, loadCloudConfig } from './config/load.js';

export function cloudCommand(): Command {
  return new Command('cloud')
    .description('Run the cloud service: API, registry, embedded MQTT broker (default), distillation rounds, rollouts and ingest')
    .option('--config <file>', 'cloud.json (optional: every field has a default)')
    .option('--data-dir <dir>', 'registry, keys and artifacts (default .apprentice/cloud)')
    .option('--bind <host:port>', 'API address (default 127.0.0.1:8787)')
    .option('--mqtt-url <url>', 'use this MQTT broker (Mosquitto, EMQX) instead of the embedded aedes broker')
    .option('--mqtt-bind <host:port>', 'address of the embedded broker (default 127.0.0.1:1883)')
    .addHelpText(
      'after',
      `\nEnvironment overrides (env beats the file, flags beat env):\n${Object.entries(CLOUD_ENV)
        .map(([k, p]) => `  ${k.padEnd(38)} ${p.join('.')}`)
        .join('\n')}\n\nExample:\n  apprentice cloud --data-dir /var/lib/apprentice-cloud --mqtt-url mqtt://127.0.0.1:1883`,
    )
    .action(async (o) => {
      const cfg = loadCloudConfig({ file: o.config, overrides: { dataDir: o.dataDir, 'api.bind': o.bind, 'mqtt.url': o.mqttUrl, 'mqtt.embedded.bind': o.mqttBind } });
      const log = createLogger({ name: 'cloud' });
      // Loaded on use: the service pulls in tfjs, onnxruntime and SQLite.
      const { startCloud } = await import('./server.js');
      const { createSdNotify } = await import('../shared/systemd/sd-notify.js');
      const sd = createSdNotify({ log });
      const svc = await startCloud(cfg, { log });
      process.stdout.write(
        `apprentice cloud running\n  API     ${svc.apiUrl}  (admin token: ${cfg.api.adminToken ? 'from config' : join(svc.dataDir, 'admin-token')})\n  MQTT    ${svc.brokerUrl}\n  data    ${svc.dataDir}\n  docs    ${svc.apiUrl}/openapi.json\n`,
      );
      await sd.ready('serving');
      sd.startWatchdog();
      await new Promise<void>((resolve) => {
        const onSignal = (sig: string) => {
          log.info({ signal: sig }, 'cloud/stopping');
          resolve();
        };
        process.once('SIGTERM', () => onSignal('SIGTERM'));
        process.once('SIGINT', () => onSignal('SIGINT'));
      });
      sd.stopWatchdog();
      await sd.stopping();
      await svc.stop();
    });
}
