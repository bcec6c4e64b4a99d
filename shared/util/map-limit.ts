/**
 * Runs `fn` over `items` with at most `limit` calls pending (at least one). Rejects with the first
 * error; calls already started still run to completion in the background of that rejection's workers.
 *
 * @example
 * await mapLimit(chunks, 16, (c, i) => mqtt.publish(topics.artifactChunk(sha, i), c, { qos: 1 }));
 */
export async function mapLimit<T>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
}
