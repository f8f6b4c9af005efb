/**
 * Avatars. GitLab serves an uploaded avatar or, with Gravatar on, a Gravatar URL; the emulator must
 * stay offline, so a user without a fixture avatar gets an "uploaded" one that the emulator serves
 * itself: a small PNG in a colour of its own, under GitLab's upload path.
 */
import { createHash } from 'node:crypto';
import { deflateSync } from 'node:zlib';
import type { Env } from './env.js';
import type { User } from './fixtures.js';
import type { Router } from './http.js';

/** The user's avatar URL: the fixture's, else the emulator's own upload path. */
export function avatarUrl(env: Env, user: User): string {
  return user.avatarUrl ?? env.url(`/uploads/-/system/user/avatar/${user.id}/avatar.png`);
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(data: Buffer): number {
  let c = 0xffffffff;
  for (const byte of data) c = CRC_TABLE[(c ^ byte) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

/** A square PNG of one colour with a lighter diagonal band, from the user's id. */
export function avatarPng(seed: string, size = 64): Buffer {
  const digest = createHash('sha256').update(seed).digest();
  const [r, g, b] = [digest[0]! % 160, digest[1]! % 160, digest[2]! % 160];
  const rows: Buffer[] = [];
  for (let y = 0; y < size; y++) {
    const row = Buffer.alloc(1 + size * 3);
    for (let x = 0; x < size; x++) {
      const band = Math.abs(x - y) < size / 6 ? 80 : 0;
      row.set([r + band, g + band, b + band], 1 + x * 3);
    }
    rows.push(row);
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(size, 0);
  header.writeUInt32BE(size, 4);
  header.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', deflateSync(Buffer.concat(rows))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** Serves the emulator's avatars. */
export function registerAvatarRoutes(router: Router, env: Env): void {
  router.on('GET', '/uploads/-/system/user/avatar/:id/avatar.png', (ctx) => {
    const user = env.state.userById(Number(ctx.params['id']));
    if (!user) return { status: 404, headers: { 'content-type': 'text/plain' }, body: 'Not Found' };
    return {
      status: 200,
      headers: { 'content-type': 'image/png', 'cache-control': 'max-age=86400, public' },
      body: avatarPng(String(user.id)),
    };
  });
}
