import * as http2 from "node:http2"
import { Effect } from "effect"
import * as C from "../../../src/transport/http/HttpRequestClient.ts"
const server = http2.createServer({ settings: { maxConcurrentStreams: 100_000 }, maxSessionMemory: 256 })
const per = new Map<any, number>()
server.on("stream", (s) => { per.set(s.session, (per.get(s.session) ?? 0) + 1); s.on("error", () => {}); s.resume() })
server.listen(0, "127.0.0.1", async () => {
  const port = (server.address() as any).port
  await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const client = yield* C.make({ timeoutMs: 30000, maxMessageSize: 1 << 20 } as any)
    for (let i = 0; i < 250; i++) client.sendCallback!({ address: `http://127.0.0.1:${port}/x`, endpoint: "x" }, { control: { id: `r${i}`, request_type: "single_in", response_type: "many_out", payload_codec: "json", connection_info: { transport: "tcp_server", info: "{}" } }, payload: i, headers: {} } as any, () => {})
    yield* Effect.sleep(2000)
    console.log("sessions", per.size, [...per.values()])
  })))
  process.exit(0)
})
