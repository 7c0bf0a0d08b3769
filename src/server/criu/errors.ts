// Why a CRIU image or a restore connection was refused, as one log line: the daemon cannot serve a restore
// it cannot read, so the message must name the file, the record and the field without a debugger.

export type CriuImageErrorReason =
  /** The file is shorter than its headers, a record's length, or a protobuf field says. */
  | 'truncated'
  /** The magic numbers at the start are not the ones this kind of image carries. */
  | 'bad-magic'
  /** A protobuf message that does not decode: bad varint, wire type, or a field of the wrong type. */
  | 'malformed'
  /** Well-formed records that describe memory that cannot be served: overlaps, unaligned, past the pages file. */
  | 'invalid-layout'
  /** Pages kept in a parent (pre-dump) image, which this daemon does not follow. */
  | 'parent-pages'
  /** A required image file is missing or unreadable. */
  | 'missing';

export class CriuImageError extends Error {
  override name = 'CriuImageError';
  readonly code = 'ERR_UFFD_CRIU_IMAGE';
  readonly reason: CriuImageErrorReason;

  constructor(reason: CriuImageErrorReason, message: string) {
    super(message);
    this.reason = reason;
  }
}

export type CriuProtocolErrorReason =
  /** The connection ended before the "restore finished" marker. */
  | 'eof'
  /** A descriptor arrived where none belongs, or more than one with a message. */
  | 'unexpected-fd'
  /** A pid message was not followed by its descriptor. */
  | 'missing-fd'
  /** The descriptor received is not an initialized userfaultfd. */
  | 'not-uffd'
  /** A 4-byte word that is neither a pid, a zombie, nor the end marker. */
  | 'garbage'
  /** The same pid announced twice, or a pid the images do not describe. */
  | 'unknown-pid';

export class CriuProtocolError extends Error {
  override name = 'CriuProtocolError';
  readonly code = 'ERR_UFFD_CRIU_PROTOCOL';
  readonly reason: CriuProtocolErrorReason;

  constructor(reason: CriuProtocolErrorReason, message: string) {
    super(message);
    this.reason = reason;
  }
}
