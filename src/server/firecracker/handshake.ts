// The Firecracker UFFD handshake body: one JSON array sent with a single sendmsg, which a stream socket may
// still hand over in several reads (split anywhere, even inside a UTF-8 sequence), and after which the
// sender may keep the socket open (1.12+) or close it (earlier). HandshakeReader frames it by counting
// brackets outside strings, so it knows the array is whole without waiting for end-of-file; then the
// strict parser, the shape decoder and the layout checks run once on the whole text.
import { HandshakeError } from './errors.js';
import type { GuestRegion } from '../region.js';
import type { HandshakeVersion } from './regions.js';
import { decodeRegions } from './regions.js';
import { JsonSyntaxError, parseJson } from './strict-json.js';
import { DEFAULT_MAX_REGIONS, validateRegions } from './validate-regions.js';
import { describe } from '../../validate.js';

export { HandshakeError, type HandshakeErrorReason } from './errors.js';
export type { GuestRegion } from '../region.js';
export type { HandshakeVersion } from './regions.js';
export { decodeRegions } from './regions.js';
export { PAGE_SIZES, validateRegions } from './validate-regions.js';

export interface Handshake {
  version: HandshakeVersion;
  /** The one page size of all regions, in bytes. */
  pageSize: number;
  regions: GuestRegion[];
}

export interface HandshakeOptions {
  /** Bytes in the memory file the regions are served from; no region may reach past it. */
  memoryFileSize: number;
  /** Bytes up to the closing bracket, leading whitespace included (default 256 KiB). */
  maxBytes?: number;
  /** Default 1024. */
  maxRegions?: number;
  /** Keys no Firecracker release sends: 'refuse' (default) or 'ignore'; see DecodeOptions. */
  unknownKeys?: 'refuse' | 'ignore';
}

/** Each region is about 120 bytes: room for 2000 regions, far below what would hurt to buffer. */
export const DEFAULT_MAX_BYTES = 256 * 1024;
/** The body is two levels deep; the limit only leaves room for ignored unknown keys with nested values. */
const MAX_DEPTH = 16;
/** JSON values one region may take: its object and members, with room for keys a later Firecracker adds. */
const VALUES_PER_REGION = 64;

const OPEN_BRACKET = 0x5b;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACKET = 0x5d;
const CLOSE_BRACE = 0x7d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

function isWhitespace(byte: number): boolean {
  return byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;
}

function describeByte(byte: number): string {
  return byte >= 0x20 && byte < 0x7f ? `'${String.fromCharCode(byte)}'` : `byte 0x${byte.toString(16).padStart(2, '0')}`;
}

export class HandshakeReader {
  readonly #options: HandshakeOptions;
  readonly #maxBytes: number;
  readonly #chunks: Uint8Array[] = [];
  /** Payload bytes taken so far, up to and including the closing bracket. */
  #length = 0;
  #state: 'before' | 'inside' | 'done' = 'before';
  #depth = 0;
  #inString = false;
  #escaped = false;
  #handshake: Handshake | undefined;
  #error: HandshakeError | undefined;

  constructor(options: HandshakeOptions) {
    if (options === null || typeof options !== 'object') throw new TypeError(`options must be an object, got ${describe(options)}`);
    const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 2) {
      throw new RangeError(`maxBytes must be an integer of at least 2, got ${describe(maxBytes)}`);
    }
    if (!Number.isSafeInteger(options.memoryFileSize) || options.memoryFileSize < 0) {
      throw new RangeError(`memoryFileSize must be a non-negative integer, got ${describe(options.memoryFileSize)}`);
    }
    if (options.maxRegions !== undefined && (!Number.isSafeInteger(options.maxRegions) || options.maxRegions < 1)) {
      throw new RangeError(`maxRegions must be a positive integer, got ${describe(options.maxRegions)}`);
    }
    this.#options = options;
    this.#maxBytes = maxBytes;
  }

  /** Payload bytes taken so far (up to the closing bracket once complete). */
  get bytesReceived(): number {
    return this.#length;
  }

  get complete(): boolean {
    return this.#handshake !== undefined;
  }

  /**
   * Feeds the next bytes read from the socket (copied: the caller may reuse its buffer). 'complete' once the
   * array has closed and passed every check; after that, only whitespace may follow. Throws HandshakeError,
   * and the same error again on every later call.
   */
  push(chunk: Uint8Array): 'incomplete' | 'complete' {
    if (!(chunk instanceof Uint8Array)) throw new TypeError(`chunk must be a Uint8Array, got ${describe(chunk)}`);
    if (this.#error !== undefined) throw this.#error;
    try {
      return this.#push(chunk);
    } catch (err) {
      if (err instanceof HandshakeError) this.#error = err;
      throw err;
    }
  }

  /** The stream has ended: throws HandshakeError unless the handshake was complete. */
  end(): void {
    if (this.#error !== undefined) throw this.#error;
    if (this.#handshake !== undefined) return;
    const where = this.#length === 0
      ? 'before any handshake data'
      : `after ${this.#length} bytes, before the JSON array was complete${this.#inString ? ' (inside a string)' : ''}`;
    this.#error = new HandshakeError('truncated', `the connection ended ${where}`);
    throw this.#error;
  }

  /** The validated handshake; throws if push() has not returned 'complete'. */
  handshake(): Handshake {
    if (this.#handshake === undefined) throw new Error('the handshake is not complete');
    return this.#handshake;
  }

  regions(): GuestRegion[] {
    return this.handshake().regions;
  }

  #push(chunk: Uint8Array): 'incomplete' | 'complete' {
    if (this.#state === 'done') {
      this.#checkTrailing(chunk, 0);
      return 'complete';
    }
    const room = this.#maxBytes - this.#length;
    const end = this.#scan(chunk, Math.min(chunk.length, room));
    if (end === undefined) {
      if (chunk.length > room) {
        throw new HandshakeError('too-large',
          `the handshake is larger than ${this.#maxBytes} bytes and its JSON array is still open`);
      }
      this.#take(chunk);
      return 'incomplete';
    }
    this.#take(chunk.subarray(0, end));
    this.#state = 'done';
    // The body's verdict first, trailing data second: the same order whether the trailing bytes came in
    // this read or a later one, so how the stream was split never changes which error a client gets.
    const handshake = this.#finish();
    this.#checkTrailing(chunk, end);
    this.#handshake = handshake;
    return 'complete';
  }

  #take(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.#chunks.push(bytes.slice());
    this.#length += bytes.length;
  }

  /** Index just past the closing bracket within the first `limit` bytes, or undefined while the array is open. */
  #scan(chunk: Uint8Array, limit: number): number | undefined {
    // Bytes of multi-byte UTF-8 sequences are all >= 0x80, so none of them can be taken for a bracket, a
    // quote or a backslash: a split inside a sequence needs no special care here.
    for (let i = 0; i < limit; i++) {
      const byte = chunk[i] ?? 0;
      if (this.#state === 'before') {
        if (isWhitespace(byte)) continue;
        if (byte !== OPEN_BRACKET) {
          const what = byte === OPEN_BRACE ? 'a JSON object' : describeByte(byte);
          throw new HandshakeError('malformed',
            `the handshake starts with ${what} at position ${this.#length + i}, expected a JSON array of regions`,
            this.#length + i);
        }
        this.#state = 'inside';
        this.#depth = 1;
      } else if (this.#inString) {
        if (this.#escaped) this.#escaped = false;
        else if (byte === BACKSLASH) this.#escaped = true;
        else if (byte === QUOTE) this.#inString = false;
      } else if (byte === QUOTE) {
        this.#inString = true;
      } else if (byte === OPEN_BRACKET || byte === OPEN_BRACE) {
        this.#depth++;
      } else if (byte === CLOSE_BRACKET || byte === CLOSE_BRACE) {
        // A mismatched pair ('[}') also closes here; the parser then names it.
        this.#depth--;
        if (this.#depth === 0) return i + 1;
      }
    }
    return undefined;
  }

  #checkTrailing(chunk: Uint8Array, from: number): void {
    for (let i = from; i < chunk.length; i++) {
      const byte = chunk[i] ?? 0;
      if (!isWhitespace(byte)) {
        throw new HandshakeError('trailing-data',
          `trailing data after the handshake's JSON array (${this.#length} bytes): ${describeByte(byte)}`);
      }
    }
  }

  #finish(): Handshake {
    const bytes = new Uint8Array(this.#length);
    let at = 0;
    for (const chunk of this.#chunks) {
      bytes.set(chunk, at);
      at += chunk.length;
    }
    this.#chunks.length = 0;
    return parseHandshakeBytes(bytes, this.#options);
  }
}

/** One complete payload at once: the same checks as HandshakeReader, for callers that already have it all. */
export function parseHandshake(payload: string | Uint8Array, options: HandshakeOptions): Handshake {
  if (typeof payload !== 'string' && !(payload instanceof Uint8Array)) throw new TypeError(`payload must be a string or a Uint8Array, got ${describe(payload)}`);
  const reader = new HandshakeReader(options);
  reader.push(typeof payload === 'string' ? new TextEncoder().encode(payload) : payload);
  reader.end();
  return reader.handshake();
}

function parseHandshakeBytes(bytes: Uint8Array, options: HandshakeOptions): Handshake {
  let text: string;
  try {
    // fatal: a lenient decoder would turn bad bytes into U+FFFD and accept a payload nobody sent.
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new HandshakeError('malformed', 'the handshake is not valid UTF-8');
  }
  let body;
  try {
    // Counted while parsing: a payload of a million tiny elements is refused at the first value past what
    // maxRegions regions can hold, not after building all of them.
    body = parseJson(text, { maxDepth: MAX_DEPTH, maxValues: VALUES_PER_REGION * (options.maxRegions ?? DEFAULT_MAX_REGIONS) + 1 });
  } catch (err) {
    if (err instanceof JsonSyntaxError) {
      throw new HandshakeError('malformed', `the handshake is not valid JSON: ${err.message}`, err.position);
    }
    throw err;
  }
  const { memoryFileSize, maxRegions, unknownKeys } = options;
  const { version, regions } = decodeRegions(body, {
    ...(unknownKeys === undefined ? {} : { unknownKeys }),
    ...(maxRegions === undefined ? {} : { maxRegions }),
  });
  validateRegions(regions, { memoryFileSize, ...(maxRegions === undefined ? {} : { maxRegions }) });
  return { version, pageSize: regions[0]?.pageSize ?? 0, regions };
}
