import { afterAll } from "vitest"
import { startNatsServer } from "../support/servers.ts"
import { natsTcp } from "../support/stacks.ts"
import { transportContract } from "./transportContract.ts"

const nats = await startNatsServer()
afterAll(() => nats.stop())

transportContract(natsTcp(nats.url))
