import { httpTcpPooled } from "../support/stacks.ts"
import { transportContract } from "./transportContract.ts"

transportContract(httpTcpPooled)
