/**
 * Process health for `/health` and `/ready`: how many endpoints this process serves and has
 * registered in discovery. A process is ready when it serves at least one endpoint, or when it
 * was marked ready explicitly (a router with nothing to serve).
 */

let served = 0
let forced = false

/** An endpoint is being served and is registered in discovery. */
export const endpointUp = (): void => {
  served++
}

/** An endpoint stopped being served (it left discovery). */
export const endpointDown = (): void => {
  served = Math.max(0, served - 1)
}

/** Marks the process ready (or not) whatever it serves, e.g. for routers. */
export const setReady = (ready: boolean): void => {
  forced = ready
}

/** The number of endpoints served and registered now. */
export const servedEndpoints = (): number => served

/** True when `/ready` should answer 200. */
export const isReady = (): boolean => forced || served > 0
