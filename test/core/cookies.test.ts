import { describe, expect, it } from 'vitest';
import { parseCookieHeader, readCookie } from '../../src/core/cookies.js';

/** What readCookie must answer: parseCookieHeader's value, or null when the name came twice. */
function expected(header: string, name: string): string | null | undefined {
  const { cookies, duplicated } = parseCookieHeader(header);
  return duplicated.has(name) ? null : cookies.get(name);
}

/** A small deterministic generator (mulberry32), so a failure names a header that can be replayed. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('readCookie', () => {
  it('reads a header exactly as parseCookieHeader does, one name at a time', () => {
    // Pieces that make the cases that matter: the name itself and names that contain or extend it,
    // separators, and whitespace trim() removes (ASCII and not).
    const pieces = ['labgate', 'labgate', 'lab', 'gate', 'labgatex', 'xlabgate', '=', '=', ';', ';', ' '];
    pieces.push('\t', '\u00a0', '\ufeff', '\u2028', 'v', 'a.b', '==', '');
    const next = random(20261125);
    for (let i = 0; i < 20_000; i++) {
      let header = '';
      const length = 1 + Math.floor(next() * 12);
      for (let j = 0; j < length; j++) header += pieces[Math.floor(next() * pieces.length)];
      for (const name of ['labgate', 'lab', 'gate'])
        expect(readCookie(header, name), JSON.stringify({ header, name })).toStrictEqual(
          expected(header, name),
        );
    }
  });

  it('trims around a name every character String.prototype.trim trims, and no other', () => {
    for (let code = 0; code < 0x10000; code++) {
      const c = String.fromCharCode(code);
      if (c === ';' || c === '=') continue;
      const header = `${c}labgate${c}=value; other=1`;
      expect(readCookie(header, 'labgate'), `U+${code.toString(16)}`).toStrictEqual(
        expected(header, 'labgate'),
      );
    }
  });

  it('answers null for a name sent twice and undefined for one not sent', () => {
    expect(readCookie('labgate=a; labgate=b', 'labgate')).toBeNull();
    expect(readCookie(' labgate = a ;x=1', 'labgate')).toBe('a');
    expect(readCookie('labgatex=a; xlabgate=b', 'labgate')).toBeUndefined();
  });
});
