/**
 * How a raw server sends one response: `n` items then the end. With no delay, every item and
 * the end leave in one write (what a corked writer does); with a delay, each item is written
 * on its own and followed by `delayMs` of waiting, as the project's token handler does (so the
 * end comes `n * delayMs` after the request, in both).
 */

/** Sends items `0..n-1` (`item(i)`) then `end()` through `write` (`last` on the write with the end), paced by `delayMs`. */
export const paced = (
  n: number,
  delayMs: number,
  item: (i: number) => Buffer,
  end: () => Buffer,
  write: (chunk: Buffer, last: boolean) => void
): void => {
  if (delayMs <= 0) {
    const parts: Array<Buffer> = []
    for (let i = 0; i < n; i++) parts.push(item(i))
    parts.push(end())
    write(parts.length === 1 ? parts[0]! : Buffer.concat(parts), true)
    return
  }
  let i = 0
  const step = () => {
    if (i >= n) return write(end(), true)
    write(item(i++), false)
    setTimeout(step, delayMs)
  }
  step()
}

/** The JSON text of item `i` of `size` bytes of token (the project's token handler's shape). */
export const itemJson = (i: number, token: string): string => `{"index":${i},"token":"${token}"}`

/** Calls `item(i)` for `0..n-1`, then `end()`: at once without a delay, else `delayMs` after each item. */
export const pacedEach = (n: number, delayMs: number, item: (i: number) => void, end: () => void): void => {
  if (delayMs <= 0) {
    for (let i = 0; i < n; i++) item(i)
    return end()
  }
  let i = 0
  const step = () => {
    if (i >= n) return end()
    item(i++)
    setTimeout(step, delayMs)
  }
  step()
}
