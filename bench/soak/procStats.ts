// What the soak tool reads about a process from /proc (Linux only): open FDs, how many of them
// are sockets, established TCP connections, resident memory now and at its peak. Reading never
// throws: a process that is gone, or a system without /proc, gives -1 for what it could not read.
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs"

/** One reading of a process. */
export interface ProcSample {
  /** Open file descriptors (/proc/<pid>/fd). */
  readonly fds: number
  /** How many of them are sockets. */
  readonly sockets: number
  /** Resident set size, in MB (VmRSS). */
  readonly rssMb: number
  /** Peak resident set size, in MB (VmHWM; since start or since `resetPeak`). */
  readonly peakRssMb: number
}

const kbOf = (status: string, field: string): number => {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)
  return m === null ? -1 : Number(m[1])
}

const mb = (kb: number) => (kb < 0 ? -1 : Math.round(kb / 102.4) / 10)

/** Reads `pid` now. */
export const sample = (pid: number): ProcSample => {
  let fds = -1
  let sockets = -1
  try {
    const entries = readdirSync(`/proc/${pid}/fd`)
    fds = entries.length
    sockets = 0
    for (const e of entries) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${e}`).startsWith("socket:")) sockets++
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    // gone, or no /proc
  }
  let status = ""
  try {
    status = readFileSync(`/proc/${pid}/status`, "utf8")
  } catch {
    // gone
  }
  return { fds, sockets, rssMb: mb(kbOf(status, "VmRSS")), peakRssMb: mb(kbOf(status, "VmHWM")) }
}

/** Resets the peak RSS of `pid` (VmHWM) to its current RSS; false when the kernel refused. */
export const resetPeak = (pid: number): boolean => {
  try {
    // "5" resets the peak resident set size (proc(5), clear_refs).
    writeFileSync(`/proc/${pid}/clear_refs`, "5")
    return true
  } catch {
    return false
  }
}

/** CPU seconds (user + system) that `pid` has used so far (-1 if unreadable). */
export const cpuSeconds = (pid: number): number => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    // Fields after the command name (which may hold spaces): state is the 3rd, utime the 14th.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return (Number(rest[11]) + Number(rest[12])) / 100
  } catch {
    return -1
  }
}

/** The TCP connections in state ESTABLISHED among the sockets of `pid` (-1 if unreadable). */
export const establishedTcp = (pid: number): number => {
  const inodes = new Set<string>()
  try {
    for (const e of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const link = readlinkSync(`/proc/${pid}/fd/${e}`)
        if (link.startsWith("socket:[")) inodes.add(link.slice(8, -1))
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    return -1
  }
  let count = 0
  for (const table of ["tcp", "tcp6"]) {
    let text: string
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, "utf8")
    } catch {
      continue
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/)
      // cols[3] is the state (01 = ESTABLISHED), cols[9] the inode
      if (cols.length > 9 && cols[3] === "01" && inodes.has(cols[9]!)) count++
    }
  }
  return count
}

/** The 1-minute load average and the CPU count, for the report. */
export const machineLoad = (): { readonly loadavg1: number; readonly cpus: number; readonly model: string } => {
  let loadavg1 = -1
  let cpus = -1
  let model = "unknown"
  try {
    loadavg1 = Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0])
  } catch {
    // no /proc
  }
  try {
    const info = readFileSync("/proc/cpuinfo", "utf8")
    cpus = (info.match(/^processor\s*:/gm) ?? []).length
    model = /^model name\s*:\s*(.+)$/m.exec(info)?.[1]?.trim() ?? model
  } catch {
    // no /proc
  }
  return { loadavg1, cpus, model }
}
