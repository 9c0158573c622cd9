/**
 * The stub's imitation of serde_json, the parser of the real Realm server.
 *
 * The real server parses frames with serde_json and sends its error messages to clients, so the
 * stub reproduces serde_json's checks, messages and line/column positions (byte columns) for the
 * structs it deserializes. Only call frames and auth frames go through this; the stub's own
 * output uses JSON.stringify.
 *
 * @module
 */

/** serde_json's error: `line` 0 means "no position yet" (a custom error from the struct). */
export class SerdeError extends Error {
  constructor(readonly reason: string, public line = 0, public column = 0) {
    super(reason);
  }

  /** serde_json's `Display`. */
  override toString(): string {
    return this.line === 0
      ? this.reason
      : `${this.reason} at line ${this.line} column ${this.column}`;
  }
}

/** How serde_json read a number: it decides the wording of type errors and usize checks. */
export interface NumberInfo {
  kind: "uint" | "int" | "float";
  raw: string;
}

/** Number kinds of the direct children of parsed arrays and objects (weak: no leaks). */
export const numberKinds = new WeakMap<object, Map<string | number, NumberInfo>>();

function rememberNumber(container: object, key: string | number, info: NumberInfo): void {
  let kinds = numberKinds.get(container);
  if (kinds === undefined) numberKinds.set(container, kinds = new Map());
  kinds.set(key, info);
}

const U64_MAX = 18446744073709551615n;
const I64_MIN = -9223372036854775808n;
/** Typed by what it does: `TextEncoder` is no type in a Node project without the DOM library. */
export const utf8: { encode(text: string): Uint8Array } = new TextEncoder();
const utf8Decoder = new TextDecoder();

type FieldKind = "string" | "option_string" | "value";

interface StructSchema {
  name: string;
  fields: ReadonlyArray<{ name: string; kind: FieldKind }>;
}

const FUNCTION_CALL: StructSchema = {
  name: "FunctionCall",
  fields: [
    { name: "id", kind: "string" },
    { name: "function", kind: "string" },
    { name: "params", kind: "value" },
    { name: "tenant_id", kind: "option_string" },
  ],
};

const AUTH_MESSAGE: StructSchema = {
  name: "AuthMessage",
  fields: [{ name: "type", kind: "string" }, { name: "api_key", kind: "string" }],
};

const isDigit = (b: number | undefined): boolean => b !== undefined && b >= 0x30 && b <= 0x39;

/** A byte-level reader mirroring serde_json's `Deserializer<StrRead>`. */
class JsonReader {
  index = 0;
  #depth = 128;
  /** Set by every number parsed, so containers can remember its kind. */
  lastNumber: NumberInfo | undefined;
  readonly #bytes: Uint8Array;

  constructor(text: string) {
    this.#bytes = utf8.encode(text);
  }

  #position(at: number): [number, number] {
    let line = 1;
    let lineStart = 0;
    for (let i = 0; i < at; i++) {
      if (this.#bytes[i] === 0x0a) {
        line++;
        lineStart = i + 1;
      }
    }
    return [line, at - lineStart];
  }

  #fail(reason: string, at: number): never {
    const [line, column] = this.#position(at);
    throw new SerdeError(reason, line, column);
  }

  /** serde_json's `error`: the position after what was consumed. */
  error(reason: string): never {
    this.#fail(reason, this.index);
  }

  /** serde_json's `peek_error`: the position of the byte looked at. */
  peekError(reason: string): never {
    this.#fail(reason, Math.min(this.index + 1, this.#bytes.length));
  }

  /** serde_json's `fix_position`: a custom error gets the current position. */
  fixPosition(error: unknown): unknown {
    if (error instanceof SerdeError && error.line === 0) {
      [error.line, error.column] = this.#position(this.index);
    }
    return error;
  }

  peek(): number | undefined {
    return this.#bytes[this.index];
  }

  skipWhitespace(): number | undefined {
    for (;;) {
      const b = this.#bytes[this.index];
      if (b === 0x20 || b === 0x0a || b === 0x09 || b === 0x0d) this.index++;
      else return b;
    }
  }

  enter(): void {
    if (--this.#depth === 0) this.peekError("recursion limit exceeded");
  }

  leave(): void {
    this.#depth++;
  }

  /** After the root value: only whitespace may follow. */
  end(): void {
    if (this.skipWhitespace() !== undefined) this.peekError("trailing characters");
  }

  ident(rest: string): void {
    for (let i = 0; i < rest.length; i++) {
      const b = this.#bytes[this.index];
      if (b === undefined) this.error("EOF while parsing a value");
      this.index++;
      if (b !== rest.charCodeAt(i)) this.error("expected ident");
    }
  }

  /** A string body, the opening quote already eaten. */
  parseString(): string {
    const bytes = this.#bytes;
    let out = "";
    let start = this.index;
    for (;;) {
      if (this.index >= bytes.length) this.error("EOF while parsing a string");
      const b = bytes[this.index];
      if (b === 0x22) {
        out += utf8Decoder.decode(bytes.subarray(start, this.index));
        this.index++;
        return out;
      }
      if (b === 0x5c) {
        out += utf8Decoder.decode(bytes.subarray(start, this.index));
        this.index++;
        out += this.#parseEscape();
        start = this.index;
        continue;
      }
      this.index++;
      if (b < 0x20) this.error("control character (\\u0000-\\u001F) found while parsing a string");
    }
  }

  #parseEscape(): string {
    const b = this.#bytes[this.index];
    if (b === undefined) this.error("EOF while parsing a string");
    this.index++;
    switch (b) {
      case 0x22:
        return '"';
      case 0x5c:
        return "\\";
      case 0x2f:
        return "/";
      case 0x62:
        return "\b";
      case 0x66:
        return "\f";
      case 0x6e:
        return "\n";
      case 0x72:
        return "\r";
      case 0x74:
        return "\t";
      case 0x75: {
        const unit = this.#hexEscape();
        if (unit >= 0xdc00 && unit <= 0xdfff) this.error("lone leading surrogate in hex escape");
        if (unit < 0xd800 || unit > 0xdbff) return String.fromCharCode(unit);
        if (this.#bytes[this.index] !== 0x5c || this.#bytes[this.index + 1] !== 0x75) {
          this.error("unexpected end of hex escape");
        }
        this.index += 2;
        const low = this.#hexEscape();
        if (low < 0xdc00 || low > 0xdfff) this.error("lone leading surrogate in hex escape");
        return String.fromCharCode(unit, low);
      }
      default:
        return this.error("invalid escape");
    }
  }

  #hexEscape(): number {
    if (this.index + 4 > this.#bytes.length) {
      this.index = this.#bytes.length;
      this.error("EOF while parsing a string");
    }
    let value = 0;
    for (let i = 0; i < 4; i++) {
      const b = this.#bytes[this.index++];
      const digit = b >= 0x30 && b <= 0x39
        ? b - 0x30
        : b >= 0x61 && b <= 0x66
        ? b - 0x57
        : b >= 0x41 && b <= 0x46
        ? b - 0x37
        : -1;
      if (digit < 0) this.error("invalid escape");
      value = value * 16 + digit;
    }
    return value;
  }

  /** A number; for a negative one the `-` is already eaten. */
  parseNumber(positive: boolean): number {
    const bytes = this.#bytes;
    const start = positive ? this.index : this.index - 1;
    const first = bytes[this.index];
    if (first === undefined) this.error("EOF while parsing a value");
    this.index++;
    if (first === 0x30) {
      if (isDigit(bytes[this.index])) this.peekError("invalid number");
    } else if (first >= 0x31 && first <= 0x39) {
      while (isDigit(bytes[this.index])) this.index++;
    } else {
      this.error("invalid number");
    }
    let float = false;
    if (bytes[this.index] === 0x2e) {
      float = true;
      this.index++;
      if (!isDigit(bytes[this.index])) {
        this.peekError(this.index < bytes.length ? "invalid number" : "EOF while parsing a value");
      }
      while (isDigit(bytes[this.index])) this.index++;
    }
    if (bytes[this.index] === 0x65 || bytes[this.index] === 0x45) {
      float = true;
      this.index++;
      if (bytes[this.index] === 0x2b || bytes[this.index] === 0x2d) this.index++;
      const digit = bytes[this.index];
      if (digit === undefined) this.error("EOF while parsing a value");
      this.index++;
      if (!isDigit(digit)) this.error("invalid number");
      while (isDigit(bytes[this.index])) this.index++;
    }
    const raw = utf8Decoder.decode(bytes.subarray(start, this.index));
    let kind: NumberInfo["kind"] = "float";
    if (!float) {
      const big = BigInt(raw);
      // serde_json reads "-0" as the float -0.0, and integers beyond 64 bits as floats.
      if (positive && big <= U64_MAX) kind = "uint";
      else if (!positive && big < 0n && big >= I64_MIN) kind = "int";
    }
    const value = Number(raw);
    if (!Number.isFinite(value)) this.error("number out of range");
    this.lastNumber = { kind, raw };
    return value;
  }

  /** serde_json's `deserialize_any` into a `serde_json::Value`. */
  parseAny(): unknown {
    const b = this.skipWhitespace();
    switch (b) {
      case undefined:
        return this.peekError("EOF while parsing a value");
      case 0x6e:
        this.index++;
        this.ident("ull");
        return null;
      case 0x74:
        this.index++;
        this.ident("rue");
        return true;
      case 0x66:
        this.index++;
        this.ident("alse");
        return false;
      case 0x2d:
        this.index++;
        return this.parseNumber(false);
      case 0x22:
        this.index++;
        return this.parseString();
      case 0x5b: {
        this.enter();
        this.index++;
        const list: unknown[] = [];
        for (let first = true;; first = false) {
          if (!this.nextElement(first)) break;
          this.lastNumber = undefined;
          const value = this.parseAny();
          if (typeof value === "number" && this.lastNumber) {
            rememberNumber(list, list.length, this.lastNumber);
          }
          list.push(value);
        }
        this.leave();
        this.endSeq();
        return list;
      }
      case 0x7b: {
        this.enter();
        this.index++;
        const object: Record<string, unknown> = {};
        for (let first = true;; first = false) {
          const key = this.nextKey(first);
          if (key === undefined) break;
          this.objectColon();
          this.lastNumber = undefined;
          const value = this.parseAny();
          if (typeof value === "number" && this.lastNumber) {
            rememberNumber(object, key, this.lastNumber);
          }
          // defineProperty keeps a "__proto__" key an ordinary property, as JSON.parse does.
          Object.defineProperty(object, key, {
            value,
            enumerable: true,
            writable: true,
            configurable: true,
          });
        }
        this.leave();
        this.endMap();
        return object;
      }
      default:
        if (isDigit(b)) return this.parseNumber(true);
        return this.peekError("expected value");
    }
  }

  /** serde_json's `SeqAccess::next_element_seed` up to the element: false at `]`. */
  nextElement(first: boolean): boolean {
    let b = this.skipWhitespace();
    if (b === 0x5d) return false;
    if (b === 0x2c && !first) {
      this.index++;
      b = this.skipWhitespace();
    } else if (b === undefined) {
      this.peekError("EOF while parsing a list");
    } else if (!first) {
      this.peekError("expected `,` or `]`");
    }
    if (b === 0x5d) this.peekError("trailing comma");
    if (b === undefined) this.peekError("EOF while parsing a value");
    return true;
  }

  /** serde_json's `MapAccess::next_key_seed`: the key, or undefined at `}`. */
  nextKey(first: boolean): string | undefined {
    let b = this.skipWhitespace();
    if (b === 0x7d) return undefined;
    if (b === 0x2c && !first) {
      this.index++;
      b = this.skipWhitespace();
    } else if (b === undefined) {
      this.peekError("EOF while parsing an object");
    } else if (!first) {
      this.peekError("expected `,` or `}`");
    }
    if (b === 0x22) {
      this.index++;
      return this.parseString();
    }
    if (b === 0x7d) this.peekError("trailing comma");
    if (b === undefined) this.peekError("EOF while parsing a value");
    return this.peekError("key must be a string");
  }

  objectColon(): void {
    const b = this.skipWhitespace();
    if (b === 0x3a) this.index++;
    else if (b === undefined) this.peekError("EOF while parsing an object");
    else this.peekError("expected `:`");
  }

  endSeq(): void {
    const b = this.skipWhitespace();
    if (b === 0x5d) {
      this.index++;
    } else if (b === 0x2c) {
      this.index++;
      this.peekError(this.skipWhitespace() === 0x5d ? "trailing comma" : "trailing characters");
    } else if (b === undefined) {
      this.peekError("EOF while parsing a list");
    } else {
      this.peekError("trailing characters");
    }
  }

  endMap(): void {
    const b = this.skipWhitespace();
    if (b === 0x7d) this.index++;
    else if (b === 0x2c) this.peekError("trailing comma");
    else if (b === undefined) this.peekError("EOF while parsing an object");
    else this.peekError("trailing characters");
  }

  /** serde_json's `peek_invalid_type`: consumes the offending value, then reports it. */
  invalidType(expected: string): never {
    const b = this.peek();
    let unexpected: string;
    if (b === 0x6e) {
      this.index++;
      this.ident("ull");
      unexpected = "null";
    } else if (b === 0x74) {
      this.index++;
      this.ident("rue");
      unexpected = "boolean `true`";
    } else if (b === 0x66) {
      this.index++;
      this.ident("alse");
      unexpected = "boolean `false`";
    } else if (b === 0x2d || isDigit(b)) {
      if (b === 0x2d) this.index++;
      const value = this.parseNumber(b !== 0x2d);
      unexpected = describeNumber(value, this.lastNumber);
    } else if (b === 0x22) {
      this.index++;
      unexpected = `string ${rustDebugString(this.parseString())}`;
    } else if (b === 0x5b) {
      unexpected = "sequence";
    } else if (b === 0x7b) {
      unexpected = "map";
    } else {
      this.peekError("expected value");
    }
    throw this.fixPosition(new SerdeError(`invalid type: ${unexpected}, expected ${expected}`));
  }

  /** A struct field of the given kind (serde's derive for String, Option<String>, Value). */
  parseField(kind: FieldKind): unknown {
    const b = this.skipWhitespace();
    if (kind === "value") return this.parseAny();
    if (kind === "option_string" && b === 0x6e) {
      this.index++;
      this.ident("ull");
      return null;
    }
    if (b === undefined) this.peekError("EOF while parsing a value");
    if (b !== 0x22) this.invalidType("a string");
    this.index++;
    return this.parseString();
  }

  /** serde's derived `Deserialize` for a struct, as serde_json drives it. */
  parseStruct(schema: StructSchema): Record<string, unknown> {
    const b = this.skipWhitespace();
    if (b === undefined) this.peekError("EOF while parsing a value");
    const values: Record<string, unknown> = {};
    const expectedLength = `struct ${schema.name} with ${schema.fields.length} elements`;
    if (b === 0x7b || b === 0x5b) {
      this.enter();
      this.index++;
      let failure: unknown;
      try {
        if (b === 0x7b) this.#visitStructMap(schema, values);
        else {
          // serde structs also deserialize from a JSON array of their fields, in order.
          schema.fields.forEach((field, index) => {
            if (!this.nextElement(index === 0)) {
              throw new SerdeError(`invalid length ${index}, expected ${expectedLength}`);
            }
            this.#setField(values, field.name, field.kind);
          });
        }
      } catch (error) {
        failure = error;
      }
      this.leave();
      // serde_json closes the container even after a failure, then positions the failure.
      try {
        if (b === 0x7b) this.endMap();
        else this.endSeq();
      } catch (error) {
        failure ??= error;
      }
      if (failure !== undefined) throw this.fixPosition(failure);
    } else {
      this.invalidType(`struct ${schema.name}`);
    }
    this.end();
    return values;
  }

  #visitStructMap(schema: StructSchema, values: Record<string, unknown>): void {
    for (let first = true;; first = false) {
      const key = this.nextKey(first);
      if (key === undefined) break;
      const field = schema.fields.find((candidate) => candidate.name === key);
      if (field === undefined) {
        this.objectColon();
        this.parseAny();
        continue;
      }
      if (Object.hasOwn(values, key)) throw new SerdeError(`duplicate field \`${key}\``);
      this.objectColon();
      this.#setField(values, key, field.kind);
    }
    for (const field of schema.fields) {
      if (Object.hasOwn(values, field.name)) continue;
      if (field.kind !== "option_string") throw new SerdeError(`missing field \`${field.name}\``);
      values[field.name] = null;
    }
  }

  #setField(values: Record<string, unknown>, name: string, kind: FieldKind): void {
    this.lastNumber = undefined;
    const value = this.parseField(kind);
    if (typeof value === "number" && this.lastNumber) rememberNumber(values, name, this.lastNumber);
    values[name] = value;
  }
}

/** serde_json prints floats with `ryu`: shortest digits, `1e100`, `100.0`, `1e-7`. */
function ryu(value: number): string {
  if (value === 0) return Object.is(value, -0) ? "-0.0" : "0.0";
  const sign = value < 0 ? "-" : "";
  const [mantissa, exponent] = Math.abs(value).toExponential().split("e");
  const digits = mantissa.replace(".", "");
  const point = Number(exponent) + 1;
  let text: string;
  if (point >= digits.length && point <= 16) {
    text = `${digits}${"0".repeat(point - digits.length)}.0`;
  } else if (point > 0 && point <= 16) text = `${digits.slice(0, point)}.${digits.slice(point)}`;
  else if (point > -5 && point <= 0) text = `0.${"0".repeat(-point)}${digits}`;
  else if (digits.length === 1) text = `${digits}e${point - 1}`;
  else text = `${digits[0]}.${digits.slice(1)}e${point - 1}`;
  return sign + text;
}

function describeNumber(value: number, info: NumberInfo | undefined): string {
  if (info !== undefined && info.kind !== "float") return `integer \`${info.raw}\``;
  if (info === undefined && Number.isInteger(value)) return `integer \`${value}\``;
  return `floating point \`${ryu(value)}\``;
}

/** Rust's `{:?}` of a str, which serde uses to quote an unexpected string. */
function rustDebugString(text: string): string {
  let out = '"';
  for (const char of text) {
    const code = char.codePointAt(0)!;
    if (char === '"') out += '\\"';
    else if (char === "\\") out += "\\\\";
    else if (char === "\n") out += "\\n";
    else if (char === "\r") out += "\\r";
    else if (char === "\t") out += "\\t";
    else if (code === 0) out += "\\0";
    else if (code < 0x20 || (code >= 0x7f && code <= 0x9f)) out += `\\u{${code.toString(16)}}`;
    else out += char;
  }
  return `${out}"`;
}

/** serde_json's `Value::unexpected`, as used by `from_value` errors. */
export function describeValue(value: unknown, info: NumberInfo | undefined): string {
  if (value === null) return "null";
  if (typeof value === "boolean") return `boolean \`${value}\``;
  if (typeof value === "number") return describeNumber(value, info);
  if (typeof value === "string") return `string ${rustDebugString(value)}`;
  return Array.isArray(value) ? "sequence" : "map";
}

/** A call frame as `FunctionCall` deserializes it. */
export interface Call {
  id: string;
  function: string;
  params: unknown;
  tenant_id: string | null;
  /** The parsed record, which remembers the kind of a numeric `params`. */
  record: Record<string, unknown>;
}

export type CallParse = { ok: true; call: Call } | { ok: false; reason: string };

export function parseCall(text: string): CallParse {
  try {
    const record = new JsonReader(text).parseStruct(FUNCTION_CALL);
    return {
      ok: true,
      call: {
        id: record.id as string,
        function: record.function as string,
        params: record.params,
        tenant_id: record.tenant_id as string | null,
        record,
      },
    };
  } catch (error) {
    return { ok: false, reason: String(error) };
  }
}

/** The API key of a valid `{"type":"auth","api_key":...}` frame, else undefined. */
export function parseAuth(text: string): string | undefined {
  try {
    const record = new JsonReader(text).parseStruct(AUTH_MESSAGE);
    return record.type === "auth" ? record.api_key as string : undefined;
  } catch {
    return undefined;
  }
}
