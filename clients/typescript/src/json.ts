/**
 * JSON that round-trips exactly: integers beyond Number.MAX_SAFE_INTEGER are read as BigInt
 * and written back as the same digits; NaN and Infinity are refused instead of becoming null.
 */

/** A JSON value as this client reads and writes it. */
export type JsonValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | JsonValue[]
  | { [key: string]: JsonValue };

const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;

/** Parse JSON text, keeping big integers exact (as BigInt). */
export function parseJson(text: string): JsonValue {
  let index = 0;

  const fail = (what: string): never => {
    throw new SyntaxError(`invalid JSON at ${index}: ${what}`);
  };

  const skipSpace = (): void => {
    while (index < text.length) {
      const code = text.charCodeAt(index);
      if (code === 0x20 || code === 0x09 || code === 0x0a || code === 0x0d) index += 1;
      else return;
    }
  };

  const literal = (word: string, value: JsonValue): JsonValue => {
    if (text.startsWith(word, index)) {
      index += word.length;
      return value;
    }
    return fail(`unexpected ${JSON.stringify(text.slice(index, index + 8))}`);
  };

  const string = (): string => {
    const start = index;
    index += 1;
    while (index < text.length) {
      const code = text.charCodeAt(index);
      if (code === 0x5c) index += 2;
      else if (code === 0x22) {
        index += 1;
        // The platform decodes the escapes; only the number handling needs doing by hand.
        return JSON.parse(text.slice(start, index)) as string;
      } else index += 1;
    }
    return fail("unterminated string");
  };

  const number = (): number | bigint => {
    NUMBER.lastIndex = index;
    const match = NUMBER.exec(text);
    if (match === null) return fail(`unexpected ${JSON.stringify(text.slice(index, index + 8))}`);
    index = NUMBER.lastIndex;
    const digits = match[0];
    if (match[1] === undefined && match[2] === undefined) {
      const value = Number(digits);
      return Number.isSafeInteger(value) ? value : BigInt(digits);
    }
    return Number(digits);
  };

  const value = (depth: number): JsonValue => {
    if (depth > 1000) fail("nested too deeply");
    skipSpace();
    const char = text[index];
    if (char === "{") {
      index += 1;
      const object: { [key: string]: JsonValue } = {};
      skipSpace();
      if (text[index] === "}") {
        index += 1;
        return object;
      }
      for (;;) {
        skipSpace();
        if (text[index] !== '"') fail("expected a string key");
        const key = string();
        skipSpace();
        if (text[index] !== ":") fail("expected ':'");
        index += 1;
        // defineProperty: a "__proto__" key is data, never the object's prototype.
        Object.defineProperty(object, key, {
          value: value(depth + 1),
          enumerable: true,
          writable: true,
          configurable: true,
        });
        skipSpace();
        if (text[index] === ",") index += 1;
        else if (text[index] === "}") {
          index += 1;
          return object;
        } else fail("expected ',' or '}'");
      }
    }
    if (char === "[") {
      index += 1;
      const array: JsonValue[] = [];
      skipSpace();
      if (text[index] === "]") {
        index += 1;
        return array;
      }
      for (;;) {
        array.push(value(depth + 1));
        skipSpace();
        if (text[index] === ",") index += 1;
        else if (text[index] === "]") {
          index += 1;
          return array;
        } else fail("expected ',' or ']'");
      }
    }
    if (char === '"') return string();
    if (char === "t") return literal("true", true);
    if (char === "f") return literal("false", false);
    if (char === "n") return literal("null", null);
    return number();
  };

  const result = value(0);
  skipSpace();
  if (index !== text.length) fail("trailing characters");
  return result;
}

/** Write JSON: BigInt as its digits; NaN, Infinity, functions and symbols are refused. */
export function stringifyJson(value: unknown): string {
  const parts: string[] = [];
  const write = (item: unknown, path: string): void => {
    if (item === null) parts.push("null");
    else if (typeof item === "bigint") parts.push(item.toString());
    else if (typeof item === "number") {
      if (!Number.isFinite(item)) throw new TypeError(`${path}: ${item} is not JSON`);
      parts.push(JSON.stringify(item));
    } else if (typeof item === "string" || typeof item === "boolean") {
      parts.push(JSON.stringify(item));
    } else if (item instanceof Date) {
      parts.push(JSON.stringify(item.toISOString()));
    } else if (Array.isArray(item)) {
      parts.push("[");
      item.forEach((element, i) => {
        if (i > 0) parts.push(",");
        write(element === undefined ? null : element, `${path}[${i}]`);
      });
      parts.push("]");
    } else if (typeof item === "object") {
      parts.push("{");
      let first = true;
      for (const [key, element] of Object.entries(item)) {
        if (element === undefined) continue;
        if (!first) parts.push(",");
        first = false;
        parts.push(JSON.stringify(key), ":");
        write(element, `${path}.${key}`);
      }
      parts.push("}");
    } else {
      throw new TypeError(`${path}: a ${typeof item} is not JSON`);
    }
  };
  write(value, "$");
  return parts.join("");
}
