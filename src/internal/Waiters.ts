/**
 * The callbacks of `ResponseWriter.whenWritable` that wait for a writer to catch up. Each runs
 * once, on `wake`, in a microtask: they resume handler fibers, which write again and must not
 * run inside the transport's own read, drain or close loops.
 */
export class Waiters {
  private list: Array<() => void> | undefined = undefined

  /** Registers `f` to run on the next `wake`; returns false (`whenWritable`'s "not now"). */
  add(f: () => void): false {
    ;(this.list ??= []).push(f)
    return false
  }

  /** Runs every registered callback once, in a microtask (no-op when none wait). */
  wake(): void {
    const w = this.list
    if (w === undefined) return
    this.list = undefined
    queueMicrotask(() => {
      for (const f of w) f()
    })
  }
}
