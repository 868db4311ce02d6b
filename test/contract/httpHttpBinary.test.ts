import { httpHttpBinary } from "../support/stacks.ts"
import { transportContract } from "./transportContract.ts"

transportContract(httpHttpBinary)
