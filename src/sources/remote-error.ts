// Failures of network sources: which object (credentials removed), which byte range, what the server
// answered, and whether trying again can help.

/** A URL fit for logs and errors: no user info, no query (presigned URLs carry signatures there). */
export function redactUrl(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}${url.search === '' ? '' : '?…'}`;
}

export class RemoteSourceError extends Error {
  readonly code = 'ERR_UFFD_REMOTE';
  readonly url: string;
  /** The HTTP status the server answered, when it answered. */
  readonly status: number | undefined;
  /** A transient failure (5xx, reset, timeout, short body): the request is worth repeating. */
  readonly retryable: boolean;

  constructor(message: string, details: { url: URL; status?: number; retryable: boolean; cause?: unknown }) {
    super(`${message} (${redactUrl(details.url)})`, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'RemoteSourceError';
    this.url = redactUrl(details.url);
    this.status = details.status;
    this.retryable = details.retryable;
  }
}
