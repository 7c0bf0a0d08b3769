// A strict JSON (RFC 8259) parser for untrusted payloads. JSON.parse keeps the last of duplicate keys and
// rounds integers above 2^53 without a word, so a payload could say one thing and be read as another. This
// parser refuses duplicate keys and hands numbers over as their source text: the caller decides which
// numbers it accepts and can say exactly why it refuses one.

export class JsonNumber {
  /** The number exactly as written: '4096', '-1', '1.5e3'. */
  readonly text: string;
  /** Character index of the number's first character. */
  readonly position: number;

  constructor(text: string, position: number) {
    this.text = text;
    this.position = position;
  }

  get negative(): boolean {
    return this.text.startsWith('-');
  }

  get hasFraction(): boolean {
    return this.text.includes('.');
  }

  get hasExponent(): boolean {
    return this.text.includes('e') || this.text.includes('E');
  }

  /** The exact value of an integer written in plain notation; undefined for a fraction or an exponent. */
  toBigInt(): bigint | undefined {
    return this.hasFraction || this.hasExponent ? undefined : BigInt(this.text);
  }
}

/** A Map, not a plain object: keys such as `__proto__` stay ordinary keys, and insertion order is kept. */
export type JsonObject = Map<string, JsonValue>;
export type JsonValue = null | boolean | string | JsonNumber | JsonValue[] | JsonObject;

export class JsonSyntaxError extends SyntaxError {
  override name = 'JsonSyntaxError';
  /** Character index in the parsed text (the byte offset too, as long as the text before it is ASCII). */
  readonly position: number;

  constructor(message: string, position: number) {
    super(`${message} at position ${position}`);
    this.position = position;
  }
}

export interface ParseOptions {
  /** Arrays and objects nested deeper than this are refused (the recursion stays far from the stack's end). */
  maxDepth?: number;
  /** More values than this (arrays and objects count, and each element or member) are refused while parsing. */
  maxValues?: number;
}

export const DEFAULT_MAX_DEPTH = 64;

/** Parses one JSON value, with optional whitespace around it and nothing else. */
export function parseJson(text: string, options?: ParseOptions): JsonValue {
  const maxDepth = options?.maxDepth ?? DEFAULT_MAX_DEPTH;
  if (!Number.isSafeInteger(maxDepth) || maxDepth < 1) {
    throw new RangeError(`maxDepth must be a positive integer, got ${String(maxDepth)}`);
  }
  const maxValues = options?.maxValues ?? Infinity;
  if (maxValues !== Infinity && (!Number.isSafeInteger(maxValues) || maxValues < 1)) {
    throw new RangeError(`maxValues must be a positive integer, got ${String(maxValues)}`);
  }
  const parser = new Parser(text, maxDepth, maxValues);
  parser.skipWhitespace();
  const value = parser.value(0);
  parser.skipWhitespace();
  if (parser.pos < text.length) parser.fail('unexpected data after the JSON value');
  return value;
}

/** A short, single-line rendering of a string for error messages (escaped, truncated). */
export function quote(value: string, max = 40): string {
  return JSON.stringify(value.length > max ? `${value.slice(0, max)}…` : value);
}

const HEX = /^[0-9a-fA-F]{4}$/;
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

class Parser {
  pos = 0;
  readonly #text: string;
  readonly #maxDepth: number;
  readonly #maxValues: number;
  #values = 0;

  constructor(text: string, maxDepth: number, maxValues: number) {
    this.#text = text;
    this.#maxDepth = maxDepth;
    this.#maxValues = maxValues;
  }

  fail(message: string, at = this.pos): never {
    throw new JsonSyntaxError(message, at);
  }

  #unexpected(what: string): never {
    if (this.pos >= this.#text.length) this.fail(`unexpected end of input, expected ${what}`);
    this.fail(`unexpected ${describeChar(this.#text.charCodeAt(this.pos))}, expected ${what}`);
  }

  skipWhitespace(): void {
    const text = this.#text;
    for (;;) {
      const c = text.charCodeAt(this.pos);
      if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return;
      this.pos++;
    }
  }

  value(depth: number): JsonValue {
    if (++this.#values > this.#maxValues) this.fail(`more than ${this.#maxValues} values`);
    switch (this.#text[this.pos]) {
      case '{': return this.#object(depth + 1);
      case '[': return this.#array(depth + 1);
      case '"': return this.#string();
      case 't': return this.#literal('true', true);
      case 'f': return this.#literal('false', false);
      case 'n': return this.#literal('null', null);
      default: return this.#number();
    }
  }

  #enter(depth: number): void {
    if (depth > this.#maxDepth) this.fail(`nesting deeper than ${this.#maxDepth} levels`);
    this.pos++;
    this.skipWhitespace();
  }

  #object(depth: number): JsonObject {
    this.#enter(depth);
    const object: JsonObject = new Map();
    if (this.#text[this.pos] === '}') {
      this.pos++;
      return object;
    }
    for (;;) {
      if (this.#text[this.pos] !== '"') this.#unexpected('a string key');
      const keyAt = this.pos;
      const key = this.#string();
      if (object.has(key)) this.fail(`duplicate key ${quote(key)}`, keyAt);
      this.skipWhitespace();
      if (this.#text[this.pos] !== ':') this.#unexpected("':'");
      this.pos++;
      this.skipWhitespace();
      object.set(key, this.value(depth));
      this.skipWhitespace();
      const next = this.#text[this.pos];
      this.pos++;
      if (next === '}') return object;
      if (next !== ',') {
        this.pos--;
        this.#unexpected("',' or '}'");
      }
      this.skipWhitespace();
    }
  }

  #array(depth: number): JsonValue[] {
    this.#enter(depth);
    const array: JsonValue[] = [];
    if (this.#text[this.pos] === ']') {
      this.pos++;
      return array;
    }
    for (;;) {
      array.push(this.value(depth));
      this.skipWhitespace();
      const next = this.#text[this.pos];
      this.pos++;
      if (next === ']') return array;
      if (next !== ',') {
        this.pos--;
        this.#unexpected("',' or ']'");
      }
      this.skipWhitespace();
    }
  }

  #string(): string {
    const text = this.#text;
    const start = this.pos;
    this.pos++;
    let result = '';
    let runStart = this.pos;
    for (;;) {
      if (this.pos >= text.length) this.fail('unterminated string', start);
      const c = text.charCodeAt(this.pos);
      if (c === 0x22) {
        result += text.slice(runStart, this.pos);
        this.pos++;
        return result;
      }
      if (c < 0x20) this.fail(`unescaped control character ${describeChar(c)} in a string`);
      if (c !== 0x5c) {
        this.pos++;
        continue;
      }
      result += text.slice(runStart, this.pos);
      result += this.#escape();
      runStart = this.pos;
    }
  }

  #escape(): string {
    const at = this.pos;
    const kind = this.#text[at + 1];
    this.pos += 2;
    switch (kind) {
      case '"': return '"';
      case '\\': return '\\';
      case '/': return '/';
      case 'b': return '\b';
      case 'f': return '\f';
      case 'n': return '\n';
      case 'r': return '\r';
      case 't': return '\t';
      case 'u': {
        const hex = this.#text.slice(this.pos, this.pos + 4);
        if (!HEX.test(hex)) this.fail('invalid \\u escape, expected 4 hex digits', at);
        this.pos += 4;
        // A lone surrogate is valid JSON grammar (RFC 8259 §8.2 leaves its meaning open); it is kept as is.
        return String.fromCharCode(Number.parseInt(hex, 16));
      }
      case undefined: return this.fail('unterminated string', at);
      default: return this.fail(`invalid escape ${quote(`\\${kind}`)}`, at);
    }
  }

  #literal<T>(word: string, value: T): T {
    if (!this.#text.startsWith(word, this.pos)) this.#unexpected('a JSON value');
    this.pos += word.length;
    return value;
  }

  #number(): JsonNumber {
    const start = this.pos;
    NUMBER.lastIndex = start;
    const match = NUMBER.exec(this.#text);
    if (match === null) this.#unexpected('a JSON value');
    const text = match[0];
    this.pos += text.length;
    // The grammar stops before a digit after a leading zero ('012') or a dot with no digits ('1.'); saying
    // what is wrong with the number beats "unexpected '1', expected ','" later.
    const next = this.#text.charCodeAt(this.pos);
    if ((next >= 0x30 && next <= 0x39) || next === 0x2e || next === 0x65 || next === 0x45) {
      this.fail(`malformed number ${quote(this.#text.slice(start, this.pos + 1))}`, start);
    }
    return new JsonNumber(text, start);
  }
}

function describeChar(code: number): string {
  if (Number.isNaN(code)) return 'end of input';
  if (code >= 0x20 && code < 0x7f) return `'${String.fromCharCode(code)}'`;
  return `U+${code.toString(16).toUpperCase().padStart(4, '0')}`;
}
