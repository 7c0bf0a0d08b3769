// Host names for network sources, resolved without the libuv threadpool. Node's default `lookup`
// (dns.lookup, getaddrinfo) runs on the pool, and a resolver waiting on the pool can deadlock against pool
// threads asleep in faults on lazy memory. c-ares queries (dns.resolve*) run on the event loop instead; they
// do not read /etc/hosts, so `localhost` (RFC 6761: always loopback) is answered here.
import { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { LookupAddress, LookupOneOptions, LookupAllOptions } from 'node:dns';

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

const TTL_MS = 60_000;

export class HostResolver {
  readonly #resolver = new Resolver();
  readonly #cache = new Map<string, { addresses: LookupAddress[]; until: number }>();

  /** The addresses of `host`: IPv4 first, then IPv6. Throws ENOTFOUND-style errors from c-ares. */
  async resolve(host: string): Promise<LookupAddress[]> {
    const family = isIP(host);
    if (family !== 0) return [{ address: host, family }];
    const name = host.toLowerCase().replace(/\.$/, '');
    if (name === 'localhost' || name.endsWith('.localhost')) return [{ address: '127.0.0.1', family: 4 }];
    const cached = this.#cache.get(name);
    if (cached !== undefined && cached.until > Date.now()) return cached.addresses;
    const [v4, v6] = await Promise.allSettled([this.#resolver.resolve4(name), this.#resolver.resolve6(name)]);
    const addresses: LookupAddress[] = [
      ...(v4.status === 'fulfilled' ? v4.value.map((address) => ({ address, family: 4 })) : []),
      ...(v6.status === 'fulfilled' ? v6.value.map((address) => ({ address, family: 6 })) : []),
    ];
    if (addresses.length === 0) throw v4.status === 'rejected' ? (v4.reason as Error) : new Error(`${name} has no A or AAAA records`);
    this.#cache.set(name, { addresses, until: Date.now() + TTL_MS });
    return addresses;
  }

  /** A `lookup` for net/tls/http options that never calls dns.lookup. */
  readonly lookup = (hostname: string, options: LookupOneOptions | LookupAllOptions, callback: LookupCallback): void => {
    this.resolve(hostname).then((all) => {
      const wanted = options.family === 4 || options.family === 6 ? all.filter((a) => a.family === options.family) : all;
      const list = wanted.length > 0 ? wanted : all;
      if (options.all === true) callback(null, list);
      else callback(null, list[0]?.address ?? '', list[0]?.family ?? 4);
    }, (err: unknown) => { callback(err as NodeJS.ErrnoException, ''); });
  };
}
