import { memory } from "../support/stacks.ts"
import { transportContract } from "./transportContract.ts"

transportContract(memory)
