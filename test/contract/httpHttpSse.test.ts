import { httpHttpSse } from "../support/stacks.ts"
import { transportContract } from "./transportContract.ts"

transportContract(httpHttpSse)
