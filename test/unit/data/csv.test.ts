import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DatasetError, loadCsv, loadDataset, parseCsv } from '../../../shared/data/index.js';
import { tempDir } from './helpers.js';

describe('CSV', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeAll(() => {
    tmp = tempDir();
  });
  afterAll(() => tmp.cleanup());

  it('loads a labelled CSV (label column anywhere, CRLF, blank lines, BOM)', async () => {
    const f = tmp.write('lab.csv', '\ufeffx1, label ,x2\r\n1.5,2,-3\r\n\r\n.25,0,1e2\r\n4,1,+5\r\n');
    const ds = await loadDataset(`csv:${f}`);
    expect(ds.source).toBe(`csv:${f}`);
    expect(ds.count).toBe(3);
    expect(ds.shape).toEqual([2]);
    expect([...ds.features]).toEqual([1.5, -3, 0.25, 100, 4, 5]);
    expect([...ds.labels!]).toEqual([2, 0, 1]);
    expect(ds.numClasses).toBe(3);
    expect(ds.scaling).toEqual({ scale: 1, offset: 0 });
  });

  it('loads an unlabelled CSV', async () => {
    const ds = await loadCsv(tmp.write('unl.csv', 'a,b,c\n1,2,3\n4,5,6'));
    expect(ds.labels).toBeUndefined();
    expect(ds.numClasses).toBeUndefined();
    expect(ds.shape).toEqual([3]);
    expect([...ds.features]).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('applies limit, shuffleSeed and scaling', async () => {
    const rows = Array.from({ length: 20 }, (_, i) => `${i},${i % 2}`).join('\n');
    const f = tmp.write('many.csv', `v,label\n${rows}\n`);
    expect([...(await loadCsv(f, { limit: 3 })).features]).toEqual([0, 1, 2]);
    const a = await loadCsv(f, { shuffleSeed: 4, limit: 10 });
    const b = await loadCsv(f, { shuffleSeed: 4, limit: 10 });
    expect([...a.features]).toEqual([...b.features]);
    for (let i = 0; i < a.count; i++) expect(a.labels![i]).toBe(a.features[i]! % 2);
    const scaled = await loadCsv(f, { limit: 2, scaling: { scale: 0.5, offset: 1 } });
    expect([...scaled.features]).toEqual([1, 1.5]);
  });

  describe('malformed files', () => {
    const err = (text: string): DatasetError => {
      try {
        parseCsv(text, 'd.csv');
      } catch (e) {
        expect(e).toBeInstanceOf(DatasetError);
        return e as DatasetError;
      }
      throw new Error('expected parseCsv to throw');
    };

    it('non-numeric cell names line and column', () => {
      expect(err('a,b\n1,2\n3,abc\n').message).toBe('d.csv: line 3, column 2 ("b"): "abc" is not a number');
      expect(err('a,b\n1,\n').message).toBe('d.csv: line 2, column 2 ("b"): empty cell is not a number');
      expect(err('a,b\n1,0x10\n').message).toMatch(/"0x10" is not a number/);
      expect(err('a,b\n1,NaN\n').message).toMatch(/"NaN" is not a number/);
    });

    it('ragged row', () => {
      expect(err('a,b\n1,2\n3,4,5\n').message).toBe('d.csv: line 3: ragged row with 3 fields, expected 2 (from the header)');
      expect(err('a,b\n1\n').message).toMatch(/line 2: ragged row with 1 fields/);
    });

    it('label out of range (negative or non-integer)', () => {
      expect(err('x,label\n1,-1\n').message).toBe('d.csv: line 2, column 2 ("label"): label out of range: -1 is not a non-negative integer');
      expect(err('x,label\n1,1.5\n').message).toMatch(/label out of range: 1\.5/);
    });

    it('quoted fields are rejected', () => {
      expect(err('a,b\n"1",2\n').message).toMatch(/line 2: quoted fields are not supported/);
    });

    it('missing header, header only, label-only, duplicate columns', () => {
      expect(err('1,2\n3,4\n').message).toMatch(/a header row is required/);
      expect(err('a,b\n').message).toBe('d.csv: no data rows after the header');
      expect(err('label\n1\n').message).toMatch(/no feature columns/);
      expect(err('a,a\n1,2\n').message).toMatch(/duplicate column name "a"/);
      expect(err('\n\n').message).toMatch(/empty file/);
    });

    it('empty and missing files', async () => {
      const empty = tmp.write('empty.csv', '');
      await expect(loadCsv(empty)).rejects.toThrow(`${empty}: empty file`);
      const missing = tmp.path('missing.csv');
      await expect(loadDataset(`csv:${missing}`)).rejects.toThrow(`${missing}: file not found`);
    });
  });
});
