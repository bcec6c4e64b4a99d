import type { z } from 'zod';
import type { ShadowDetail } from '../../api/rollouts-shadow.js';
import type { shadowRowSchema } from '../../api/rounds.js';
import type { DeviceShadowView } from '../../rollouts/agreement.js';
import { fmtTime } from '../layout.js';

/**
 * Shadow evaluation in the console (issue 13 item 6): a round's figures per release line, cohort and
 * device; a rollout device's evidence; an on-device shadow run's figures and switch decision.
 */

type ShadowRow = z.infer<typeof shadowRowSchema>;

/** Devices listed on a round page: the worst upper bounds first (the ones a rollout would hold back). */
export const SHADOW_DEVICES_SHOWN = 200;

const pct = (v: number | null | undefined): string => (v === null || v === undefined ? '—' : `${(v * 100).toFixed(1)}%`);
const pts = (v: number | null | undefined): string => (v === null || v === undefined ? '—' : `${v >= 0 ? '+' : '−'}${Math.abs(v * 100).toFixed(1)}`);
const interval = (lo: number | null | undefined, hi: number | null | undefined): string => (lo === null || lo === undefined || hi === null || hi === undefined ? '' : ` [${pts(lo)}, ${pts(hi)}]`);

/** "−8.0 pts [−14.6, −1.4]": the change vs the running release with its paired 95% interval. */
export function deltaText(f: { delta?: number | null; deltaLow?: number | null; deltaHigh?: number | null }): string {
  return f.delta === null || f.delta === undefined ? '—' : `${pts(f.delta)} pts${interval(f.deltaLow, f.deltaHigh)}`;
}

/** A round's shadow evaluation: cohorts (pooled), then devices, worst upper bound first. */
export function ShadowTable({ rows, id = 'shadow' }: { rows: ShadowRow[]; id?: string }) {
  if (rows.length === 0) return <p class="muted" id={id}>No shadow evaluation: no audit samples and no device running a release of this model.</p>;
  const cohorts = rows.filter((r) => r.scope === 'cohort');
  const devices = rows.filter((r) => r.scope === 'device').sort((a, b) => (a.deltaHigh ?? Infinity) - (b.deltaHigh ?? Infinity) || (a.deviceId! < b.deviceId! ? -1 : 1));
  const shown = devices.slice(0, SHADOW_DEVICES_SHOWN);
  return (
    <div id={id}>
      <p class="muted">Candidate vs the release each device runs, on its newest audit samples, with the teacher as the label. Change: candidate − running accuracy, paired 95% interval.</p>
      <table>
        <thead>
          <tr><th style="width:28%">Device / cohort</th><th class="hide-sm">Samples</th><th>Candidate</th><th>Running</th><th class="hide-sm">Agreement</th><th style="width:22%">Change</th><th class="hide-sm">Judged by</th></tr>
        </thead>
        <tbody>
          {[...cohorts, ...shown].map((r) => (
            <tr data-shadow={r.scope === 'cohort' ? `cohort:${r.cohort ?? 'base'}` : `device:${r.deviceId}`}>
              <td class="id">{r.scope === 'cohort' ? <strong>cohort {r.cohort ?? 'base'}</strong> : <a href={`/ui/devices/${encodeURIComponent(r.deviceId!)}`}>{r.deviceId}</a>}</td>
              <td class="hide-sm">{r.samples}</td>
              <td>{pct(r.candidateAccuracy)}</td>
              <td>{r.runningSeq !== null ? `#${r.runningSeq} ` : ''}{pct(r.runningAccuracy)}</td>
              <td class="hide-sm">{pct(r.agreement)}</td>
              <td>{deltaText(r)}</td>
              <td class="hide-sm">{r.scope === 'cohort' ? '' : r.judgedBy === 'none' ? 'no evidence' : (r.judgedBy ?? '')}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {devices.length > shown.length ? <p class="muted">{shown.length} of {devices.length} devices (lowest upper bound first).</p> : null}
    </div>
  );
}

/** A rollout device's shadow cell: its figures and where they come from, or "no evidence". */
export function ShadowCell({ v }: { v: DeviceShadowView | undefined }) {
  if (!v || v.evidence === 'none') return <span class="muted" title={v?.reason ?? 'no shadow evaluation'} data-evidence="none">no evidence</span>;
  return (
    <span title={v.reason} data-evidence={v.evidence} class={v.hold ? 'error' : ''}>
      {deltaText(v)} on {v.samples} {v.evidence === 'cohort' ? '(cohort)' : ''}
    </span>
  );
}

/** A round's shadow evaluation, one table per release line (the base line's candidate, then each cohort's). */
export function ShadowLines({ rows }: { rows: ShadowRow[] }) {
  const lines = new Map<string | null, ShadowRow[]>();
  for (const r of rows) lines.set(r.line, [...(lines.get(r.line) ?? []), r]);
  if (lines.size <= 1) return <ShadowTable rows={rows} />;
  const order = [...lines.keys()].sort((a, b) => (a === null ? -1 : b === null ? 1 : a < b ? -1 : a > b ? 1 : 0));
  return (
    <div id="shadow-lines">
      {order.map((line) => (
        <section data-shadow-line={line ?? 'base'}>
          <h3 style="font-size:1rem;margin:.75rem 0 0">{line === null ? 'Base line' : `Cohort ${line}`}: its candidate on {line === null ? 'every device' : 'its members'}</h3>
          <ShadowTable rows={lines.get(line)!} id={`shadow-${line ?? 'base'}`} />
        </section>
      ))}
    </div>
  );
}

const ms = (v: number | null): string => (v === null ? '—' : `${v.toFixed(v < 10 ? 2 : 1)} ms`);
const VERDICT: Record<string, string> = { pass: 'passes', fail: 'held back', no_evidence: 'no evidence' };

/**
 * An on-device shadow run (issue 13 item 4): the window, the switch decision and its reason, and per
 * device what it reported (samples shadowed, agreement, latency of the candidate) and the gate's verdict
 * with its figures (the teacher-labelled disagreements) or why a device is held back.
 */
export function ShadowRunPanel({ run }: { run: ShadowDetail }) {
  const decided = run.state !== 'shadowing';
  return (
    <section id="shadow-run" data-shadow-run={run.id} data-state={run.state}>
      <h2>On-device shadow run</h2>
      <dl class="kv">
        <dt>Run</dt><dd class="id"><a href={`/ui/rollouts/${encodeURIComponent(run.id)}`}>{run.id}</a></dd>
        <dt>Candidate</dt><dd>release {run.release} (shadow manifest #{run.shadowRelease}){run.switchedRelease !== null ? `, switched as #${run.switchedRelease}` : ''}</dd>
        <dt>Window until</dt><dd>{fmtTime(run.until)}</dd>
        <dt>State</dt><dd data-shadow-state={run.state}><strong>{run.state}</strong>{run.reason ? ` — ${run.reason}` : ''}</dd>
        <dt>Switch gate</dt>
        <dd data-shadow-gate={run.gate.switch ? 'switch' : 'no-switch'}>
          {decided ? 'now: ' : run.autoSwitch ? 'at the window end: ' : 'operator switch only; the gate says: '}
          {run.gate.switch ? 'switch' : 'no switch'} — {run.gate.reason}
        </dd>
        <dt>Thresholds</dt><dd>agreement ≥ {pct(run.minAgreement)} on devices with ≥ {run.minRequests} shadowed requests</dd>
        {run.rolloutId ? (<><dt>Rollout</dt><dd class="id"><a href={`/ui/rollouts/${encodeURIComponent(run.rolloutId)}`}>{run.rolloutId}</a></dd></>) : null}
      </dl>
      <table>
        <thead>
          <tr><th style="width:22%">Device</th><th>State</th><th>Samples</th><th>Agreement</th><th class="hide-sm">Latency p50 / p95</th><th>Switch</th><th style="width:34%">Why</th></tr>
        </thead>
        <tbody>
          {run.devices.map((d) => (
            <tr data-shadow-run-device={d.deviceId} data-verdict={d.verdict ?? ''}>
              <td class="id"><a href={`/ui/devices/${encodeURIComponent(d.deviceId)}`}>{d.deviceId}</a></td>
              <td>{d.state}</td>
              <td>{d.requests}{d.skipped ? ` (${d.skipped} skipped)` : ''}</td>
              <td>{pct(d.agreement)}</td>
              <td class="hide-sm">{ms(d.latencyMs.p50)} / {ms(d.latencyMs.p95)}</td>
              <td class={d.verdict === 'fail' ? 'error' : ''}>{d.verdict ? VERDICT[d.verdict] ?? d.verdict : '—'}</td>
              <td>{[d.reason, d.detail].filter(Boolean).join('; ')}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
