import { httpTcp } from "../support/stacks.ts"
import { transportContract } from "./transportContract.ts"

transportContract(httpTcp)
