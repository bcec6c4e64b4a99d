import { exampleReasonForCloud, type CloudFeature, type Example } from '../../shared/protocol/index.js';
import { buildExample } from '../outbox/example.js';
import type { Selector } from '../selection/index.js';
import type { ShadowDisagreement } from './runner.js';

/**
 * Where the shadow runner's disagreements go (issue 13 item 4): a hard example with the running model's
 * output, through the selector's de-duplication and caps (so shadow mode never adds to what a device
 * may send), as `shadow_disagreement`, or `low_margin` for a cloud that does not accept it yet.
 *
 * @example
 * new ShadowRunner({ onDisagreement: disagreementsToOutbox({ selector, enqueue: (e) => writer.enqueue(e), accepts: (f) => link.accepts(f) }) });
 */
export function disagreementsToOutbox({ selector, enqueue, accepts }: { selector: Pick<Selector, 'admit'>; enqueue: (e: Example) => void; accepts: (f: CloudFeature) => boolean }): (d: ShadowDisagreement) => void {
  return function shadowDisagreement(d) {
    if (!selector.admit(d.input, 'shadow_disagreement')) return;
    const reason = exampleReasonForCloud('shadow_disagreement', accepts);
    enqueue(buildExample({ input: d.input, probs: d.probs, reason, model: d.manifest.model, release: d.manifest.release }));
  };
}
