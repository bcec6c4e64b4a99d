import { Hono } from 'hono';
import type { UiContext } from '../context.js';
import { Page, fmtTime } from '../layout.js';
import type { UiEnv } from '../session.js';

interface RolloutLite {
  id: string;
  model: string;
  release: number;
  state: string;
  paused: boolean;
  wave: number;
  waves: number[];
  createdAt: string;
}
interface RoundLite {
  id: string;
  model: string;
  state: string;
  releaseSeq?: number | null;
  release?: number | null;
  finishedAt: string | null;
  createdAt: string;
}

const ACTIVE = new Set(['pending', 'canary', 'fleet', 'rolling_back']);

/** The fleet at a glance (Mender's dashboard): tiles that open the filtered list, releases per model, rollouts, rounds. */
export function overviewRoutes(ctx: UiContext): Hono<UiEnv> {
  return new Hono<UiEnv>().get('/', async (c) => {
    const [sum, { rollouts }, { models }] = await Promise.all([
      ctx.data.fleetSummary(),
      ctx.api<{ rollouts: RolloutLite[] }>('/v1/rollouts'),
      ctx.api<{ models: { name: string }[] }>('/v1/models'),
    ]);
    const rounds = (await Promise.all(models.map((m) => ctx.api<{ rounds: RoundLite[] }>(`/v1/models/${encodeURIComponent(m.name)}/rounds?limit=3`).then((r) => r.rounds.map((x) => ({ ...x, model: m.name }))))))
      .flat()
      .sort((a, b) => b.createdAt.localeCompare(a.createdAt))
      .slice(0, 8);
    const active = rollouts.filter((r) => ACTIVE.has(r.state));
    const byModel = new Map<string, { release: number; devices: number }[]>();
    for (const r of sum.releases) byModel.set(r.model, [...(byModel.get(r.model) ?? []), r]);
    const tiles: [string, number, string, string?][] = [
      ['Devices', sum.total, '/ui/devices', 'tile-total'],
      ['Online', sum.online, '/ui/devices?state=online', 'tile-online'],
      ['Offline', sum.offline, '/ui/devices?state=offline', 'tile-offline'],
      ['Need attention', sum.attention, '/ui/devices?state=attention', 'tile-attention'],
    ];
    return c.html(
      <Page title="Fleet overview" path="/ui/" session={c.get('session')}>
        <section aria-label="Fleet counts" class="tiles">
          {tiles.map(([label, n, href, id]) => (
            <a class={`tile${label === 'Need attention' && n > 0 ? ' attention' : ''}`} href={href} id={id} data-count={n}>
              <strong>{n}</strong>
              {label}
            </a>
          ))}
        </section>
        <p class="muted">
          As of {fmtTime(sum.at)}: {sum.neverSeen} never seen, {sum.revoked} revoked. Attention: {Object.entries(sum.attentionBy).filter(([, n]) => n > 0).map(([k, n]) => `${k.replaceAll('_', ' ')} ${n}`).join(', ') || 'none'}.
        </p>
        <h2>Running releases per model</h2>
        {byModel.size === 0 ? <p class="muted">No device runs a release yet.</p> : null}
        {[...byModel].map(([model, rels]) => {
          const total = rels.reduce((a, r) => a + r.devices, 0);
          return (
            <figure style="margin:0 0 1rem">
              <figcaption>
                <strong>{model}</strong> <span class="muted">({total} devices)</span>
              </figcaption>
              <div class="bar" role="img" aria-label={`${model}: ${rels.map((r) => `release ${r.release} on ${r.devices}`).join(', ')}`}>
                {rels.map((r, i) => (
                  <span style={`width:${(100 * r.devices) / total}%;background:hsl(${(210 + i * 67) % 360} 60% 45%)`} title={`release ${r.release}: ${r.devices}`}></span>
                ))}
              </div>
              <div class="legend">
                {rels.map((r, i) => (
                  <a href={`/ui/devices?release=${r.release}`}>
                    <i style={`background:hsl(${(210 + i * 67) % 360} 60% 45%)`}></i>release {r.release}: {r.devices}
                  </a>
                ))}
              </div>
            </figure>
          );
        })}
        <h2>Agent versions</h2>
        {sum.agents.length === 0 ? (
          <p class="muted">No device has reported its agent version yet.</p>
        ) : (
          <figure style="margin:0 0 1rem" id="agent-versions">
            <div class="bar" role="img" aria-label={`agent versions: ${sum.agents.map((a) => `${a.agent} (${a.platform ?? 'unknown platform'}) on ${a.devices}`).join(', ')}`}>
              {sum.agents.map((a, i) => (
                <span style={`width:${(100 * a.devices) / sum.agents.reduce((x, y) => x + y.devices, 0)}%;background:hsl(${(30 + i * 67) % 360} 60% 45%)`} title={`${a.agent} ${a.platform ?? ''}: ${a.devices}`}></span>
              ))}
            </div>
            <div class="legend">
              {sum.agents.map((a, i) => (
                <span>
                  <i style={`background:hsl(${(30 + i * 67) % 360} 60% 45%)`}></i>
                  {a.agent} {a.platform ? `(${a.platform})` : ''}: {a.devices}
                </span>
              ))}
            </div>
          </figure>
        )}
        <h2>Active rollouts</h2>
        {active.length === 0 ? (
          <p class="muted">None.</p>
        ) : (
          <table>
            <thead>
              <tr><th>Rollout</th><th>Model</th><th>Release</th><th>State</th></tr>
            </thead>
            <tbody>
              {active.map((r) => (
                <tr>
                  <td class="id"><a href={`/ui/rollouts/${r.id}`}>{r.id}</a></td>
                  <td>{r.model}</td>
                  <td>{r.release}</td>
                  <td>{r.state}{r.paused ? ' (paused)' : ''}, wave {r.wave + 1}/{r.waves.length}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        <h2>Last rounds</h2>
        {rounds.length === 0 ? (
          <p class="muted">None yet.</p>
        ) : (
          <table>
            <thead>
              <tr><th>Model</th><th>State</th><th>Release</th><th class="hide-sm">Finished</th></tr>
            </thead>
            <tbody>
              {rounds.map((r) => (
                <tr>
                  <td><a href={`/ui/rounds/${encodeURIComponent(r.id)}`}>{r.model}</a></td>
                  <td>{r.state}</td>
                  <td>{(r.releaseSeq ?? r.release) != null ? <a href={`/ui/releases/${r.releaseSeq ?? r.release}`}>{r.releaseSeq ?? r.release}</a> : '—'}</td>
                  <td class="hide-sm">{fmtTime(r.finishedAt)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Page>,
    );
  });
}
