import { httpHttpNdjson } from "../support/stacks.ts"
import { transportContract } from "./transportContract.ts"

transportContract(httpHttpNdjson)
