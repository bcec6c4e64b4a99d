import { DatasetError, IDENTITY_SCALING, applyLoadOptions, type Dataset, type LoadOptions } from './dataset.js';
import { readDataFile } from './io.js';

/**
 * Numeric CSV: a header row, then one example per line, comma-separated numbers. A column named
 * exactly `label` holds integer class labels (>= 0); every other column is a feature.
 *
 * Hand-rolled because no CSV library is a dependency and numeric data needs none of the hard parts:
 * quoted fields are rejected with an error rather than half-supported. Blank lines are skipped,
 * cells are trimmed, `\r\n` line endings and a UTF-8 BOM are accepted.
 */
export const LABEL_COLUMN = 'label';

const NUMBER = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const MAX_LABEL = 0x7fffffff;

export interface CsvLoadOptions extends LoadOptions {
  /** Dataset.source; defaults to `csv:FILE`. */
  source?: string;
}

export async function loadCsv(file: string, options: CsvLoadOptions = {}): Promise<Dataset> {
  const buf = await readDataFile(file);
  return applyLoadOptions(parseCsv(buf.toString('utf8'), file, options), options);
}

/** Parses CSV text into a dataset (limit/shuffle not applied); `file` is used in messages. */
export function parseCsv(text: string, file: string, options: Pick<CsvLoadOptions, 'source' | 'scaling'> = {}): Dataset {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  // Upper bound on rows, so the output arrays are allocated once instead of grown.
  let maxRows = 1;
  for (let p = text.indexOf('\n'); p !== -1; p = text.indexOf('\n', p + 1)) maxRows++;

  let header: string[] | undefined;
  let labelCol = -1;
  let nFeat = 0;
  let features = new Float32Array(0);
  let labels: Int32Array | undefined;
  let count = 0;
  let maxLabel = -1;
  const { scale, offset } = options.scaling ?? IDENTITY_SCALING;

  let lineNo = 0;
  let start = 0;
  while (start <= text.length) {
    let end = text.indexOf('\n', start);
    if (end === -1) end = text.length;
    let line = text.slice(start, end);
    start = end + 1;
    lineNo++;
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (line.trim() === '') continue;
    if (line.includes('"')) {
      throw new DatasetError(`line ${lineNo}: quoted fields are not supported (numeric CSV only)`, file);
    }
    const cells = line.split(',');

    if (!header) {
      header = cells.map((c) => c.trim());
      if (header.every((h) => NUMBER.test(h))) {
        throw new DatasetError(`line ${lineNo}: a header row is required, but the first row is all numbers`, file);
      }
      const seen = new Set<string>();
      header.forEach((h, c) => {
        if (seen.has(h)) throw new DatasetError(`line ${lineNo}: duplicate column name "${h}"`, file);
        seen.add(h);
        if (h === LABEL_COLUMN) labelCol = c;
      });
      nFeat = header.length - (labelCol >= 0 ? 1 : 0);
      if (nFeat === 0) throw new DatasetError(`line ${lineNo}: no feature columns (only "${LABEL_COLUMN}")`, file);
      features = new Float32Array(maxRows * nFeat);
      if (labelCol >= 0) labels = new Int32Array(maxRows);
      continue;
    }

    if (cells.length !== header.length) {
      throw new DatasetError(`line ${lineNo}: ragged row with ${cells.length} fields, expected ${header.length} (from the header)`, file);
    }
    let dst = count * nFeat;
    for (let c = 0; c < cells.length; c++) {
      const cell = cells[c]!.trim();
      const where = `line ${lineNo}, column ${c + 1} ("${header[c]}")`;
      const value = NUMBER.test(cell) ? Number(cell) : NaN;
      if (!Number.isFinite(value)) {
        throw new DatasetError(`${where}: ${cell === '' ? 'empty cell' : `"${cell}"`} is not a number`, file);
      }
      if (c === labelCol) {
        if (!Number.isInteger(value) || value < 0 || value > MAX_LABEL) {
          throw new DatasetError(`${where}: label out of range: ${cell} is not a non-negative integer`, file);
        }
        labels![count] = value;
        if (value > maxLabel) maxLabel = value;
      } else {
        features[dst++] = value * scale + offset;
      }
    }
    count++;
  }

  if (!header) throw new DatasetError('empty file (no header row)', file);
  if (count === 0) throw new DatasetError('no data rows after the header', file);

  const ds: Dataset = {
    source: options.source ?? `csv:${file}`,
    count,
    shape: [nFeat],
    // slice, not subarray: don't keep the over-allocated buffer alive.
    features: count === maxRows ? features : features.slice(0, count * nFeat),
    scaling: { scale, offset },
  };
  if (labels) {
    ds.labels = count === maxRows ? labels : labels.slice(0, count);
    ds.numClasses = maxLabel + 1;
  }
  return ds;
}
