import { tcpTcpPooled } from "../support/stacks.ts"
import { transportContract } from "./transportContract.ts"

transportContract(tcpTcpPooled)
