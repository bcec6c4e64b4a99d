import { describe, expect, it } from 'vitest';
import { fastSingleInput } from '../../../edge/api/fast-input.js';
import { seededRandom } from '../../fixtures/onnx-models.js';

const rand = seededRandom(99);
const enc = (s: string) => new TextEncoder().encode(s);

/** What the general path makes of the same body: JSON.parse, then float32. */
function reference(body: string): Float32Array {
  return Float32Array.from((JSON.parse(body) as { input: number[] }).input);
}

function randomNumber(): number {
  const r = rand();
  switch (Math.floor(rand() * 9)) {
    case 0: return Math.round(r * 1e4) / 1e4;
    case 1: return r; // 16-17 significant digits: the Number() fallback
    case 2: return -r * 1e-7; // exponent notation
    case 3: return r * 1e12;
    case 4: return Math.fround(r);
    case 5: return Math.floor(r * 256);
    case 6: return -Math.floor(r * 1e6) / 1e3;
    case 7: return 0;
    default: return r * 1e30;
  }
}

describe('fastSingleInput', () => {
  it('produces exactly the float32 values of JSON.parse, with or without whitespace', () => {
    for (let t = 0; t < 300; t++) {
      const xs = Array.from({ length: 50 }, randomNumber);
      const compact = JSON.stringify({ input: xs });
      const spaced = `\n{ "input" :\t[ ${xs.map(String).join(' ,\r\n ')} ] }  `;
      for (const body of [compact, spaced]) {
        const got = fastSingleInput(enc(body), 50);
        expect(got).toBeDefined();
        expect(Array.from(got!)).toEqual(Array.from(reference(body)));
      }
    }
    // Hand-written forms JSON.stringify never emits.
    const odd = '{"input":[1E2,1e+2,-0,0.5e-1,12345678901234567890,1e-400,-0.0]}';
    expect(Array.from(fastSingleInput(enc(odd), 7)!)).toEqual(Array.from(reference(odd)));
  });

  it('declines everything else, for the general path to judge', () => {
    const declined = [
      '{"input":[1,2]}', // wrong count for size 3
      '{"input":[1,2,3,4]}',
      '{"input":[1,2,3],"top_k":1}',
      '{"top_k":1,"input":[1,2,3]}',
      '{"inputs":[[1,2,3]]}',
      '{"input":[1,2,"3"]}',
      '{"input":[1,2,null]}',
      '{"input":[01,2,3]}',
      '{"input":[1.,2,3]}',
      '{"input":[.5,2,3]}',
      '{"input":[+1,2,3]}',
      '{"input":[1,2,3e]}',
      '{"input":[1,2,NaN]}',
      '{"input":[1,2,Infinity]}',
      '{"input":[1,2,1e39]}', // beyond float32
      '{"input":[1,2,1e400]}',
      '{"input":[1,2,3],}',
      '{"input":[1,2,3,]}',
      '{"input":[1,,3]}',
      '{"input":[1,2,3]',
      '{"input":[1,2,3]}x',
      '{"input":[1,2,3]}{}',
      '\ufeff{"input":[1,2,3]}',
      '{"in\\u0070ut":[1,2,3]}',
      '["input",1,2,3]',
      '',
      '{',
      '{"input":[',
      '{"input":[1,2,3',
    ];
    for (const body of declined) expect({ body, got: fastSingleInput(enc(body), 3) }).toEqual({ body, got: undefined });
  });

  it('survives random bytes and truncations', () => {
    const base = JSON.stringify({ input: Array.from({ length: 10 }, randomNumber) });
    for (let t = 0; t < 2000; t++) {
      const bytes = enc(base);
      if (t % 2) bytes[Math.floor(rand() * bytes.length)] = Math.floor(rand() * 256);
      const cut = bytes.subarray(0, t % 3 === 0 ? Math.floor(rand() * bytes.length) : bytes.length);
      const got = fastSingleInput(cut, 10);
      if (got) expect(Array.from(got)).toEqual(Array.from(reference(new TextDecoder().decode(cut))));
    }
  });
});
