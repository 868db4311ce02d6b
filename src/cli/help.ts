/**
 * What `--help` says beyond effect/cli's own rendering: each flag's default and the variable
 * behind it (`describe`), extra sections per command (`HelpSections`: the built-in handler's
 * request fields, the environment variables a command reads and the CLI's defaults for them),
 * and the built-in `--log-level` tied to `DYN_LOG`. The formatter wraps effect/cli's default one.
 *
 * It does not parse anything, nor read the environment (the defaults it shows are constants).
 */
import { Context, Option } from "effect"
import { CliOutput } from "effect/cli"
import type { HelpDoc } from "effect/cli"
import { variables } from "../TransportConfig.ts"

/** A flag's help text with its default (or "required") and the environment variable behind it. */
export const describe = (
  text: string,
  facts: { readonly default?: string | undefined; readonly env?: string | undefined; readonly required?: boolean | undefined }
): string => {
  const parts = [facts.required === true ? "required" : `default: ${facts.default ?? "none"}`]
  if (facts.env !== undefined) parts.push(`env: ${facts.env}`)
  return `${text} (${parts.join("; ")})`
}

/** One extra help section: a title and its lines (rendered indented under it). */
export interface HelpSection {
  readonly title: string
  readonly lines: ReadonlyArray<string>
}

/** Command annotation: the extra sections its `--help` ends with. */
export class HelpSections extends Context.Service<HelpSections, ReadonlyArray<HelpSection>>()(
  "transport-registry/cli/HelpSections"
) {}

/** Rows as aligned columns, indented by two spaces. */
export const columns = (rows: ReadonlyArray<ReadonlyArray<string>>): ReadonlyArray<string> => {
  const widths = rows.reduce<Array<number>>(
    (w, row) => row.map((cell, i) => Math.max(w[i] ?? 0, cell.length)),
    []
  )
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]! + 3))).join("").trimEnd())
}

/**
 * An ENVIRONMENT section: the named variables with the default this command applies (from
 * `overrides`, else the library's) and what each does.
 */
export const environmentSection = (
  names: ReadonlyArray<string>,
  overrides: Readonly<Record<string, string>>,
  footer: ReadonlyArray<string> = []
): HelpSection => ({
  title: "ENVIRONMENT",
  lines: [
    ...columns([["variable", "default", "meaning"], ...names.flatMap((name) => {
        const variable = variables.find((v) => v.name === name)
        if (variable === undefined) return []
        const value = overrides[name]
        const def = value === undefined || value === variable.default
          ? variable.default
          : `${value} (library: ${variable.default})`
        return [[name, def, variable.description]]
      })]),
    ...footer
  ]
})

const logLevelFlag = (flag: HelpDoc.FlagDoc): HelpDoc.FlagDoc =>
  flag.name === "log-level"
    ? {
      ...flag,
      description: Option.some(
        describe("Sets the global log level; DYN_LOG's per-module levels still apply", { default: "the level DYN_LOG names, info", env: "DYN_LOG" })
      )
    }
    : flag

/** effect/cli's default formatter, with the `--log-level` text and each command's `HelpSections`. */
export const formatter = (base: CliOutput.Formatter = CliOutput.defaultFormatter()): CliOutput.Formatter => ({
  ...base,
  formatHelpDoc: (doc) => {
    const text = base.formatHelpDoc({ ...doc, globalFlags: doc.globalFlags?.map(logLevelFlag) })
    const sections = Option.getOrElse(Context.getOption(doc.annotations, HelpSections), () => [])
    return [text, ...sections.map((s) => [s.title, ...s.lines.map((l) => `  ${l}`)].join("\n"))].join("\n\n")
  }
})
