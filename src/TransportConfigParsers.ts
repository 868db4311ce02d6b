/**
 * The parsers of `DYN_*` values: text in, a typed value or undefined out, with the words that
 * say what each accepts (they go into `TransportConfigError` and docs/configuration.md).
 *
 * Also the shape of a variable (`v`: name, default, parser, description, Dynamo's alias) and of
 * one variable's problem, shared by `TransportConfig.ts` and `TransportConfigTls.ts`.
 *
 * Pure functions only; `TransportConfig.ts` reads the environment and applies them.
 */
/** Parses one variable's text; `expected` says what it accepts. */
export type Parser<A> = { readonly expected: string; readonly parse: (text: string) => A | undefined }

/** An integer from `min` to `max`. */
export const intIn = (min: number, max: number, expected: string): Parser<number> => ({
  expected,
  parse: (t) => {
    if (!/^-?\d+$/.test(t.trim())) return undefined
    const n = Number(t.trim())
    return Number.isSafeInteger(n) && n >= min && n <= max ? n : undefined
  }
})
/** A TCP port; 0 picks a free one. */
export const port = intIn(0, 65535, "a port number from 0 to 65535 (0 picks a free port)")
/** An integer of at least 1. */
export const positiveInt = intIn(1, Number.MAX_SAFE_INTEGER, "a positive integer")
/** An integer of at least 0. */
export const nonNegativeInt = intIn(0, Number.MAX_SAFE_INTEGER, "an integer >= 0")
/** Node timers hold at most 2^31-1 ms; a larger delay would silently fire after 1 ms. */
export const MAX_TIMER_MS = 2_147_483_647
/** A number of seconds (fractions allowed), as milliseconds that fit a Node timer. */
export const seconds: Parser<number> = {
  expected: "a number of seconds from 0.001 to 2147483 (decimals allowed)",
  parse: (t) => {
    if (!/^\d+(\.\d+)?$/.test(t.trim())) return undefined
    const ms = Math.round(Number(t.trim()) * 1000)
    return ms >= 1 && ms <= MAX_TIMER_MS ? ms : undefined
  }
}
/** A number of milliseconds up to one hour. */
export const millis = intIn(0, 3_600_000, "a number of milliseconds from 0 to 3600000")
/** true/false (also 1/0, yes/no, on/off). */
export const bool: Parser<boolean> = {
  expected: "true or false (also 1/0, yes/no, on/off)",
  parse: (t) => {
    const v = t.trim().toLowerCase()
    if (["true", "1", "yes", "on"].includes(v)) return true
    if (["false", "0", "no", "off"].includes(v)) return false
    return undefined
  }
}
/** One of the given literals. */
export const oneOf = <const L extends string>(...values: ReadonlyArray<L>): Parser<L> => ({
  expected: `one of ${values.join(", ")}`,
  parse: (t) => (values as ReadonlyArray<string>).includes(t.trim()) ? (t.trim() as L) : undefined
})
/** Any non-empty text, trimmed. */
export const text: Parser<string> = {
  expected: "a non-empty string",
  parse: (t) => (t.trim() === "" ? undefined : t.trim())
}
/** A bind or advertise host. */
export const host: Parser<string> = {
  expected: "a host name or IP address without spaces",
  parse: (t) => (/^[A-Za-z0-9.:\-_[\]]+$/.test(t.trim()) ? t.trim() : undefined)
}
/** A URL path starting with "/", without a trailing "/". */
export const urlPath: Parser<string> = {
  expected: "a path starting with / (no trailing /)",
  parse: (t) => {
    const v = t.trim()
    return /^\/[A-Za-z0-9._~\-/]*$/.test(v) && (v === "/" || !v.endsWith("/")) ? v : undefined
  }
}
/** A comma-separated list of http(s) URLs. */
export const urlList: Parser<ReadonlyArray<string>> = {
  expected: "a comma-separated list of http(s):// URLs",
  parse: (t) => {
    const parts = t.split(",").map((s) => s.trim()).filter((s) => s !== "")
    if (parts.length === 0) return undefined
    for (const p of parts) {
      try {
        const u = new URL(p)
        if (u.protocol !== "http:" && u.protocol !== "https:") return undefined
      } catch {
        return undefined
      }
    }
    return parts
  }
}
/** An http(s) URL. */
export const httpUrl: Parser<string> = {
  expected: "an http(s):// URL",
  parse: (t) => {
    try {
      const u = new URL(t.trim())
      return u.protocol === "http:" || u.protocol === "https:" ? t.trim() : undefined
    } catch {
      return undefined
    }
  }
}
/** A nats:// URL (or a list). */
export const natsUrl: Parser<string> = {
  expected: "a nats:// URL (or a comma-separated list of them)",
  parse: (t) => {
    const parts = t.split(",").map((s) => s.trim())
    return parts.every((p) => /^(nats|tls):\/\/[^\s]+$/.test(p)) ? t.trim() : undefined
  }
}
/** The log levels `DYN_LOG` accepts. */
export const levels = ["trace", "debug", "info", "warn", "error", "fatal", "off"]
/** A `DYN_LOG` spec: a level, then optional `module=level` pairs. */
export const logSpec: Parser<string> = {
  expected: `a level (${levels.join(", ")}), optionally followed by module=level pairs: info,transport.tcp.pool=debug`,
  parse: (t) => {
    const parts = t.split(",").map((s) => s.trim().toLowerCase())
    const ok = parts.every((part, i) => {
      const eq = part.indexOf("=")
      if (eq < 0) return i === 0 && levels.includes(part)
      return /^[a-z0-9_.-]+$/.test(part.slice(0, eq)) && levels.includes(part.slice(eq + 1))
    })
    return ok ? parts.join(",") : undefined
  }
}
/** A size in bytes from 1 KiB to 4 GiB - 1. */
export const byteSize = intIn(1024, 2 ** 32 - 1, "a size in bytes from 1024 to 4294967295")

/** One variable's problem: its name, the text it had, and what it accepts. */
export interface ConfigProblem {
  readonly variable: string
  readonly got: string
  readonly expected: string
}

/** Documentation of one variable: its name, default, what it accepts and what it means. */
export interface VariableDoc {
  readonly name: string
  readonly default: string
  readonly accepts: string
  readonly description: string
  /**
   * Another name read for the same setting (Dynamo's), when it has one. Either may be set; both
   * set to different values is a `TransportConfigError`.
   */
  readonly alias?: string | undefined
}

/** A variable: its documentation and its parser. */
export interface Variable<A> extends VariableDoc {
  readonly parser: Parser<A>
}

/** Declares a variable; with `alias`, Dynamo's name for it is read too (and documented). */
export const v = <A>(name: string, def: string, parser: Parser<A>, description: string, alias?: string): Variable<A> => ({
  name,
  default: def,
  accepts: parser.expected,
  description: alias === undefined ? description : `${description} (alias: \`${alias}\`, Dynamo's name)`,
  ...(alias === undefined ? {} : { alias }),
  parser
})

/** `seconds`, or 0 for off (inactivity timeouts, issue 15 item 2). */
export const secondsOrOff: Parser<number> = {
  expected: `0 (off) or ${seconds.expected}`,
  parse: (raw) => (/^0+(\.0+)?$/.test(raw.trim()) ? 0 : seconds.parse(raw))
}
