/**
 * Which peers may send `X-Forwarded-*` (docs/security.md, GATEWAY-2; oauth2-proxy's `trusted_proxy_ips`):
 * a list of CIDRs, checked against the socket's peer address, never against a header.
 */
import { BlockList, isIP } from 'node:net';

const lists = new WeakMap<readonly string[], BlockList>();

/** Parses CIDRs (`10.0.0.0/8`, `::1/128`, or a single address); throws `TypeError` naming a bad one. */
export function trustList(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const raw of cidrs) {
    const [address = '', bits] = raw.trim().split('/');
    const family = isIP(address);
    const prefix = bits === undefined ? (family === 6 ? 128 : 32) : Number(bits);
    if (family === 0 || !Number.isInteger(prefix) || prefix < 0 || prefix > (family === 6 ? 128 : 32))
      throw new TypeError(`labgate gateway: ${JSON.stringify(raw)} is not an IP address or CIDR`);
    list.addSubnet(address, prefix, family === 6 ? 'ipv6' : 'ipv4');
  }
  return list;
}

/** Whether the peer address is inside one of the CIDRs (IPv4-mapped IPv6 peers count as IPv4). */
export function isTrustedPeer(address: string | undefined, cidrs: readonly string[]): boolean {
  if (!address) return false;
  let list = lists.get(cidrs);
  if (!list) {
    list = trustList(cidrs);
    lists.set(cidrs, list);
  }
  const mapped = address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
  return list.check(mapped, isIP(mapped) === 6 ? 'ipv6' : 'ipv4');
}
