/**
 * The gRPC anchor: @grpc/grpc-js server streaming, what many would reach for instead of this
 * project. One unary request, the items as a server stream, the end as the stream's status. Its
 * messages are JSON (no protobuf, so that every row pays the same codec); one channel (one HTTP/2
 * connection) carries every call, grpc-js's default. @grpc/grpc-js is a development dependency
 * of this package: it is imported only when this row runs, and a missing one makes the row
 * unavailable with the command that installs it.
 */
import type * as Grpc from "@grpc/grpc-js"
import { loadPromise } from "../load.ts"
import { itemJson, pacedEach } from "./paced.ts"
import { portOf } from "./side.ts"
import type { Driver, ServerInfo, Served, SideOptions } from "./side.ts"

const PATH = "/bench.Bench/Generate"

interface Request {
  readonly n: number
  readonly size: number
}

const load = async (): Promise<typeof Grpc> => {
  try {
    return await import("@grpc/grpc-js")
  } catch (e) {
    throw new Error(`@grpc/grpc-js is not installed (npm install --save-dev @grpc/grpc-js): ${(e as Error).message}`)
  }
}

const toJson = (value: unknown): Buffer => Buffer.from(typeof value === "string" ? value : JSON.stringify(value))
const fromJson = (bytes: Buffer): unknown => JSON.parse(bytes.toString("utf8"))

/** Serves the Generate method on a free loopback port. */
export const serve = async (options: SideOptions): Promise<Served> => {
  const grpc = await load()
  const server = new grpc.Server()
  server.addService(
    {
      generate: {
        path: PATH,
        requestStream: false,
        responseStream: true,
        requestSerialize: toJson,
        requestDeserialize: fromJson,
        responseSerialize: toJson,
        responseDeserialize: fromJson
      }
    },
    {
      generate: (call: Grpc.ServerWritableStream<Request, string>) => {
        const token = "x".repeat(call.request.size)
        pacedEach(call.request.n, options.delayMs, (i) => call.write(itemJson(i, token)), () => call.end())
      }
    }
  )
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, port) => (error === null ? resolve(port) : reject(error)))
  )
  return { info: { port }, close: async () => void server.forceShutdown() }
}

/** Connects a client (one channel) to the server of `server`. */
export const connect = async (options: SideOptions, server: ServerInfo): Promise<Driver> => {
  const grpc = await load()
  const client = new grpc.Client(`127.0.0.1:${portOf(server)}`, grpc.credentials.createInsecure())
  await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 10_000, (e) => (e === undefined || e === null ? resolve() : reject(e))))
  const request: Request = { n: options.items, size: options.itemSize }
  const once = (onFirst: () => void) =>
    new Promise<void>((resolve, reject) => {
      let items = 0
      const call = client.makeServerStreamRequest<Request, unknown>(PATH, toJson, fromJson, request)
      call.on("data", () => {
        if (items++ === 0) onFirst()
      })
      call.on("error", reject)
      call.on("end", () => (items === options.items ? resolve() : reject(new Error(`${items} items, expected ${options.items}`))))
    })
  return {
    run: (streams, concurrency, record) => loadPromise(streams, concurrency, once, record),
    close: async () => client.close()
  }
}
