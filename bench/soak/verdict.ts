// What makes a soak or scale mode pass: nothing lost, duplicated or misrouted; no call that
// nobody cancelled failed (with a worker cap: only typed Overloaded refusals, and every other
// call complete); every call accounted for; FDs of both processes back within `fdBound` of their
// start. Pure: it reads a `ModeResult`.
import type { ModeOptions, ModeResult } from "./run.ts"
import { FD_SLACK } from "./run.ts"
import { SOAK_MODES } from "./modes.ts"

/** The refusal type a worker at its cap answers with. */
export const OVERLOADED = "TransportConnectionError(Overloaded)"

/** How many FDs above its start a process may hold at the end: FD_SLACK, plus the connections the mode keeps by design. */
export const fdBound = (result: Pick<ModeResult, "id">): number =>
  FD_SLACK + (SOAK_MODES.find((m) => m.id === result.id)?.keptConnections ?? 0)

/** Why `result` fails, one line each; empty when it passes (or did not run). */
export const verdict = (result: ModeResult, options: Pick<ModeOptions, "requests" | "workerCap">): Array<string> => {
  if (result.status !== "ok") return result.status === "failed" ? [`failed: ${result.reason}`] : []
  const s = result.summary!
  const problems: Array<string> = []
  if (s.lostItems > 0) problems.push(`${s.lostItems} items lost (${s.callsWithLostItems} calls)`)
  if (s.duplicatedItems > 0) problems.push(`${s.duplicatedItems} items duplicated`)
  if (s.misroutedItems > 0) problems.push(`${s.misroutedItems} items misrouted`)
  const failures = Object.entries(s.failures)
  const allowed = options.workerCap === undefined ? [] : [OVERLOADED]
  const bad = failures.filter(([type]) => !allowed.includes(type))
  if (bad.length > 0) problems.push(`failures among uncancelled calls: ${bad.map(([t, v]) => `${t} x${v.count}`).join(", ")}`)
  if (s.finished !== options.requests) problems.push(`${s.finished} of ${options.requests} calls finished`)
  const cancelled = s.cancelled.beforeFirstItem + s.cancelled.afterItems + s.cancelled.completedFirst +
    Object.values(s.cancelledErrors).reduce((a, b) => a + b.count, 0)
  const failed = failures.reduce((a, [, v]) => a + v.count, 0)
  if (s.completed + cancelled + failed !== s.finished) problems.push(`unaccounted calls: ${s.finished - s.completed - cancelled - failed}`)
  const bound = fdBound(result)
  for (const [who, p] of [["worker", result.worker!], ["router", result.router!]] as const) {
    if (p.end.fds > p.start.fds + bound) problems.push(`${who} FDs ${p.start.fds} -> ${p.end.fds} (bound: start + ${bound})`)
  }
  return problems
}
