/**
 * The Effect RPC anchor: what an Effect user would reach for instead of this project. A
 * streaming RPC of `effect/rpc` (`Rpc.make(..., { stream: true })`) served over its socket
 * protocol (`RpcServer.layerProtocolSocketServer` on @effect/platform-node's `NodeSocketServer`)
 * and called through `RpcClient.layerProtocolSocket` on `NodeSocket.layerNet`, with the ndjson
 * serialization (JSON, as every row). One socket carries every call.
 */
import { NodeSocket, NodeSocketServer } from "@effect/platform-node"
import { Context, Effect, Exit, Layer, Schema, Scope, Stream } from "effect"
import { Rpc, RpcClient, RpcGroup, RpcSerialization, RpcServer } from "effect/rpc"
import { SocketServer } from "effect/socket"
import { loadEffect } from "../loadEffect.ts"
import { portOf } from "./side.ts"
import type { Driver, ServerInfo, Served, SideOptions } from "./side.ts"

const Item = Schema.Struct({ index: Schema.Number, token: Schema.String })

/** The one RPC: `n` items of `size` bytes of token, as a stream. */
const Rpcs = RpcGroup.make(
  Rpc.make("Generate", { payload: { n: Schema.Number, size: Schema.Number }, success: Item, stream: true })
)

const itemsOf = (n: number, size: number, delayMs: number) => {
  const token = "x".repeat(size)
  const items = Stream.fromIterable(Array.from({ length: n }, (_, index) => ({ index, token })))
  if (delayMs <= 0) return items
  // with a delay: each item, then the delay, as the token handler does (the end comes n * delayMs after the request)
  return items.pipe(
    Stream.mapEffect((item) => (item.index === 0 ? Effect.succeed(item) : Effect.as(Effect.sleep(delayMs), item))),
    Stream.concat(Stream.drain(Stream.fromEffect(Effect.sleep(delayMs))))
  )
}

/** Serves the RPC group on a free loopback port. */
export const serve = async (options: SideOptions): Promise<Served> => {
  const handlers = Rpcs.toLayer({ Generate: ({ n, size }) => itemsOf(n, size, options.delayMs) })
  const socketServer = NodeSocketServer.layer({ port: 0, host: "127.0.0.1" })
  const layer = RpcServer.layer(Rpcs).pipe(
    Layer.provide(handlers),
    Layer.provide(RpcServer.layerProtocolSocketServer),
    Layer.provide(RpcSerialization.layerNdjson),
    Layer.provideMerge(socketServer)
  )
  const scope = await Effect.runPromise(Scope.make())
  const services = await Effect.runPromise(Layer.buildWithScope(layer, scope))
  const address = Context.get(services, SocketServer.SocketServer).address
  if (address._tag === "UnixPathAddress") throw new Error("the RPC server bound a unix path")
  return { info: { port: address.port }, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

/** Connects an RPC client (one socket) to the server of `server`. */
export const connect = async (options: SideOptions, server: ServerInfo): Promise<Driver> => {
  const protocol = RpcClient.layerProtocolSocket().pipe(
    Layer.provide(NodeSocket.layerNet({ host: "127.0.0.1", port: portOf(server) })),
    Layer.provide(RpcSerialization.layerNdjson)
  )
  const scope = await Effect.runPromise(Scope.make())
  // built into `scope` (Effect.provide would close the socket once `make` returned)
  const services = await Effect.runPromise(Layer.buildWithScope(protocol, scope))
  const client = await Effect.runPromise(RpcClient.make(Rpcs).pipe(Effect.provideContext(services), Scope.provide(scope)))
  const payload = { n: options.items, size: options.itemSize }
  const once = (onFirst: () => void) =>
    Effect.suspend(() => {
      let items = 0
      return Stream.runForEach(client.Generate(payload), () =>
        Effect.sync(() => {
          if (items++ === 0) onFirst()
        })).pipe(
          Effect.flatMap(() => (items === options.items ? Effect.void : Effect.fail(new Error(`${items} items, expected ${options.items}`))))
        )
    })
  return {
    run: (streams, concurrency, record) => Effect.runPromise(loadEffect(streams, concurrency, once, record)),
    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}
