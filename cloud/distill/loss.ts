import * as tf from '@tensorflow/tfjs';

export interface DistillLossOptions {
  /** Softening temperature T (Hinton et al. 2015); 1 = plain softmax. */
  temperature: number;
  /** Weight of the soft (teacher) term; 1 - alpha weighs the hard-label term. */
  alpha: number;
}

/**
 * Knowledge-distillation loss, averaged over the batch:
 *
 *   L = α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1−α)·CE(y, softmax(z_s))
 *
 * The T² factor keeps the soft term's gradient magnitude independent of T (Hinton et al. §2).
 * `labelMask` is 1 for labelled rows and 0 for unlabeled ones; unlabeled rows contribute only the
 * first (soft) term. With `teacherLogits` null the loss is plain cross-entropy on the labels (the
 * "student trained alone" baseline).
 */
export function distillationLoss(
  studentLogits: tf.Tensor2D,
  teacherLogits: tf.Tensor2D | null,
  oneHotLabels: tf.Tensor2D | null,
  labelMask: tf.Tensor1D | null,
  { temperature, alpha }: DistillLossOptions,
): tf.Scalar {
  return tf.tidy(() => {
    const n = studentLogits.shape[0];
    let total: tf.Tensor1D = tf.zeros([n]);
    if (teacherLogits && alpha > 0) {
      const pT = tf.softmax(tf.div(teacherLogits, temperature));
      const logPT = tf.logSoftmax(tf.div(teacherLogits, temperature));
      const logPS = tf.logSoftmax(tf.div(studentLogits, temperature));
      const kl = tf.sum(tf.mul(pT, tf.sub(logPT, logPS)), 1) as tf.Tensor1D;
      total = tf.add(total, tf.mul(kl, alpha * temperature * temperature));
    }
    const hardWeight = teacherLogits ? 1 - alpha : 1;
    if (oneHotLabels && hardWeight > 0) {
      const ce = tf.neg(tf.sum(tf.mul(oneHotLabels, tf.logSoftmax(studentLogits)), 1)) as tf.Tensor1D;
      const masked = labelMask ? tf.mul(ce, labelMask) : ce;
      total = tf.add(total, tf.mul(masked, hardWeight));
    }
    return tf.mean(total) as tf.Scalar;
  });
}

/** Plain-JS reference of the same loss for one example, used by tests and for reporting. */
export function distillationLossReference(
  student: number[],
  teacher: number[] | null,
  label: number | null,
  { temperature, alpha }: DistillLossOptions,
): number {
  const logSoftmax = (z: number[], t: number) => {
    const s = z.map((v) => v / t);
    const m = Math.max(...s);
    const lse = m + Math.log(s.reduce((a, v) => a + Math.exp(v - m), 0));
    return s.map((v) => v - lse);
  };
  let loss = 0;
  if (teacher && alpha > 0) {
    const lt = logSoftmax(teacher, temperature);
    const ls = logSoftmax(student, temperature);
    let kl = 0;
    for (let i = 0; i < lt.length; i++) kl += Math.exp(lt[i]!) * (lt[i]! - ls[i]!);
    loss += alpha * temperature * temperature * kl;
  }
  if (label !== null) loss += (teacher ? 1 - alpha : 1) * -logSoftmax(student, 1)[label]!;
  return loss;
}
