import { Hono } from 'hono';
import { ApiCallError, actorOf, type UiContext } from '../context.js';
import { Csrf, Page, fmtTime } from '../layout.js';
import { liveStream } from '../live.js';
import type { RolloutLiveView } from '../data.js';
import type { Session, UiEnv } from '../session.js';
import type { ShadowDetail } from '../../api/rollouts-shadow.js';
import { isShadowId } from '../../api/rollouts-shadow.js';
import { runOfRollout } from '../../shadow/run-store.js';
import { ShadowCell, ShadowRunPanel } from './shadow.js';

type RolloutDetail = RolloutLiveView;

const DEVICE_STATES = ['installed', 'desired', 'waiting', 'failed', 'timed_out', 'quarantined', 'held_back', 'incompatible', 'superseded'];
const ACTIONS = {
  pause: { label: 'Pause', when: (r: RolloutDetail) => ['pending', 'canary', 'fleet'].includes(r.state) && !r.paused, confirm: 'Pause this rollout? No new wave starts until you resume it.' },
  resume: { label: 'Resume', when: (r: RolloutDetail) => r.paused, confirm: 'Resume this rollout?' },
  abort: { label: 'Abort', when: (r: RolloutDetail) => ['pending', 'canary', 'fleet', 'rolling_back'].includes(r.state), confirm: 'Abort this rollout? Devices keep what they run now.' },
  rollback: { label: 'Roll back', when: (r: RolloutDetail) => ['canary', 'fleet', 'completed', 'aborted', 'superseded'].includes(r.state), confirm: 'Roll back? Every device given this release goes back to the previous one.' },
} as const;
type Action = keyof typeof ACTIONS;
const SHOWN_DEVICES = 200;

/** One bar of device states (installed, pending, failed, ...) with its legend. */
function StateBar({ counts, label }: { counts: Record<string, number>; label: string }) {
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  const parts = DEVICE_STATES.filter((s) => (counts[s] ?? 0) > 0);
  return (
    <div>
      <div class="bar" role="img" aria-label={`${label}: ${parts.map((s) => `${counts[s]} ${s.replace('_', ' ')}`).join(', ') || 'no devices'}`}>
        {parts.map((s) => (
          <span class={`s-${s}`} style={`width:${(100 * counts[s]!) / total}%`} data-state={s} data-count={counts[s]}></span>
        ))}
      </div>
      <div class="legend">
        {parts.map((s) => (
          <span><i class={`s-${s}`}></i>{s.replace('_', ' ')} {counts[s]}</span>
        ))}
      </div>
    </div>
  );
}

/** The part of the rollout page that the SSE stream replaces: state, per-wave bars, buttons, devices. */
export function RolloutLive({ r, session }: { r: RolloutDetail; session: Session }) {
  return (
    <div data-state={r.state} data-paused={String(r.paused)} data-installed={r.counts.installed ?? 0}>
      <p id="rollout-state">
        <strong>{r.state.replace('_', ' ')}</strong>
        {r.paused ? ` — paused: ${r.pauseReason ?? ''}` : ''}
        {r.reason ? <span class="muted"> ({r.reason})</span> : null}
        {r.securityAlert ? <span class="error"> Security alert: {r.securityAlert}</span> : null}
      </p>
      {r.waveProgress.length > 0
        ? r.waveProgress.map((w, i) => (
            <section aria-label={`Wave ${i + 1}`}>
              <h3 style="font-size:1rem;margin:.5rem 0 0">
                Wave {i + 1}{i === 0 ? ' (canaries)' : ''}: {Math.round(w.share * 100)}% of the target{i === r.wave && ['canary', 'fleet'].includes(r.state) ? ' — in progress' : ''}
              </h3>
              <StateBar counts={w.counts} label={`Wave ${i + 1}`} />
            </section>
          ))
        : <StateBar counts={r.counts} label="All devices" />}
      <div class="actions">
        {(Object.keys(ACTIONS) as Action[])
          .filter((a) => ACTIONS[a].when(r))
          .map((a) => (
            <form method="post" action={`/ui/rollouts/${r.id}/${a}`} hx-post={`/ui/rollouts/${r.id}/${a}`} hx-target="#rollout-live" hx-swap="innerHTML" hx-confirm={ACTIONS[a].confirm}>
              <Csrf session={session} />
              <button type="submit" class={a === 'abort' || a === 'rollback' ? 'danger' : ''} data-action={a}>
                {ACTIONS[a].label}
              </button>
            </form>
          ))}
      </div>
      <h2>Devices</h2>
      <table>
        <thead>
          <tr><th style="width:30%">Device</th><th>Wave</th><th>State</th><th>Shadow (candidate − running)</th><th>Reason</th></tr>
        </thead>
        <tbody>
          {r.devices.map((d) => (
            <tr>
              <td class="id"><a href={`/ui/devices/${encodeURIComponent(d.deviceId)}`}>{d.deviceId}</a></td>
              <td>{d.wave + 1}{d.canary ? ' (canary)' : ''}</td>
              <td>{d.state.replace('_', ' ')}</td>
              <td data-shadow-device={d.deviceId}><ShadowCell v={r.shadow[d.deviceId]} /></td>
              <td>{d.reason ?? ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {r.deviceTotal > r.devices.length ? <p class="muted" id="devices-shown">{r.devices.length} of {r.deviceTotal} devices (failed, timed out and quarantined first).</p> : null}
    </div>
  );
}

/** Rollouts: the list, one rollout with live progress (SSE), and its four operator actions, audited. */
export function rolloutRoutes(ctx: UiContext): Hono<UiEnv> {
  // The live view reads counts and one page of devices from the registry, not every device row (10,000 at a time) per tick.
  const get = async (id: string): Promise<RolloutDetail> => {
    const r = await ctx.data.rolloutProgress(id, SHOWN_DEVICES);
    if (!r) throw new ApiCallError(404, 'rollout_not_found', `no rollout ${id}`);
    return r;
  };
  return new Hono<UiEnv>()
    .get('/', async (c) => {
      const { rollouts } = await ctx.api<{ rollouts: { id: string; model: string; kind?: string; release: number; state: string; paused: boolean; createdAt: string }[] }>('/v1/rollouts');
      return c.html(
        <Page title="Rollouts" path="/ui/rollouts" session={c.get('session')}>
          {rollouts.length === 0 ? <p class="muted">No rollouts yet.</p> : null}
          <table>
            <thead>
              <tr><th style="width:35%">Rollout</th><th>Model</th><th>Release</th><th>State</th><th class="hide-sm">Created</th></tr>
            </thead>
            <tbody>
              {rollouts.map((r) => (
                <tr>
                  <td class="id"><a href={`/ui/rollouts/${r.id}`}>{r.id}</a></td>
                  <td>{r.kind === 'agent' ? `agent (${r.model.slice('agent:'.length)})` : r.model}</td>
                  <td>{r.kind === 'agent' ? `agentSeq ${r.release}` : r.release}</td>
                  <td>{r.state}{r.paused ? ' (paused)' : ''}</td>
                  <td class="hide-sm">{fmtTime(r.createdAt)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </Page>,
      );
    })
    .get('/:id', async (c) => {
      const id = c.req.param('id');
      const session = c.get('session');
      // An on-device shadow run (issue 13): its own page, from the API (the switch gate's answer with it).
      if (isShadowId(id)) {
        const run = await ctx.api<ShadowDetail>(`/v1/rollouts/${encodeURIComponent(id)}`);
        return c.html(
          <Page title={`Shadow run of ${run.model} release ${run.release}`} path="/ui/rollouts" session={session}>
            <ShadowRunPanel run={run} />
          </Page>,
        );
      }
      const r = await get(id);
      // The shadow run whose switch started this rollout, if one did.
      const started = await runOfRollout(ctx.registry, id);
      const run = started ? await ctx.api<ShadowDetail>(`/v1/rollouts/${encodeURIComponent(started.id)}`) : undefined;
      return c.html(
        <Page title={r.model.startsWith('agent:') ? `Agent rollout (${r.model.slice('agent:'.length)}) agentSeq ${r.release}` : `Rollout of ${r.model} release ${r.release}`} path="/ui/rollouts" session={session}>
          <p class="id muted">{r.id}</p>
          <div hx-ext="sse" sse-connect={`/ui/rollouts/${r.id}/live`}>
            <div id="rollout-live" sse-swap="progress" hx-swap="innerHTML" aria-live="polite">
              <RolloutLive r={r} session={session} />
            </div>
          </div>
          {run ? <ShadowRunPanel run={run} /> : null}
        </Page>,
      );
    })
    .get('/:id/live', async (c) => {
      const id = c.req.param('id');
      const session = c.get('session');
      await get(id); // 404 before the stream starts
      return liveStream(c, { hub: ctx.live, key: `rollout:${id}:${session.sid}`, render: async () => (<RolloutLive r={await get(id)} session={session} />).toString(), stillValid: () => ctx.sessionLive(session) });
    })
    .post('/:id/:action{pause|resume|abort|rollback}', async (c) => {
      const id = c.req.param('id');
      const action = c.req.param('action') as Action;
      const session = c.get('session');
      const body = action === 'pause' || action === 'abort' ? { reason: `${action === 'pause' ? 'paused' : 'aborted'} by ${session.who} in the console` } : {};
      // The API records the action in the audit log, with this session as the actor.
      await ctx.api(`/v1/rollouts/${encodeURIComponent(id)}/${action}`, { method: 'POST', body, actor: actorOf(session) });
      if (!c.req.header('hx-request')) return c.redirect(`/ui/rollouts/${id}`, 303);
      return c.html(<RolloutLive r={await get(id)} session={session} />);
    });
}
