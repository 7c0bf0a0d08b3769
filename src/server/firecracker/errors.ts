// Why a client's handshake was refused, as one log line. The server drops that client and keeps serving
// the others, so the message must be enough to fix the sender without a debugger.

export type HandshakeErrorReason =
  /** Not JSON, not UTF-8, duplicate keys, or not an array at the top level. */
  | 'malformed'
  /** Non-whitespace bytes after the array. */
  | 'trailing-data'
  /** More bytes than maxBytes before the array closed. */
  | 'too-large'
  /** The stream ended before the array closed. */
  | 'truncated'
  /** An element that is not a region of any Firecracker version: wrong type, keys or numbers. */
  | 'invalid-region'
  /** Regions that are well-formed one by one but cannot be served: page sizes, alignment, overlaps, file bounds, count. */
  | 'invalid-layout';

export class HandshakeError extends Error {
  override name = 'HandshakeError';
  readonly code = 'ERR_UFFD_HANDSHAKE';
  readonly reason: HandshakeErrorReason;
  /** Character index in the payload, for syntax errors and trailing data. */
  readonly position?: number;

  constructor(reason: HandshakeErrorReason, message: string, position?: number) {
    super(message);
    this.reason = reason;
    if (position !== undefined) this.position = position;
  }
}
