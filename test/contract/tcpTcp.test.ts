import { tcpTcp } from "../support/stacks.ts"
import { transportContract } from "./transportContract.ts"

transportContract(tcpTcp)
