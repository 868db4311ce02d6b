/**
 * Parses the endpoint path that `serve` and `client` take ("namespace.component.endpoint") into
 * a typed failure. It does not define the syntax: Instance.ts does.
 */
import { Effect } from "effect"
import { decodeEndpointPath } from "../Instance.ts"
import type { EndpointPath } from "../Instance.ts"
import { InvalidEndpointPath } from "../TransportError.ts"

/** The parsed path, or a typed `InvalidEndpointPath` naming the problem. */
export const parseEndpointPath = (path: string): Effect.Effect<EndpointPath, InvalidEndpointPath> => {
  const parsed = decodeEndpointPath(path)
  return typeof parsed === "string"
    ? Effect.fail(new InvalidEndpointPath({ path: String(path), detail: parsed }))
    : Effect.succeed(parsed)
}
