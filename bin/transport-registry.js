#!/usr/bin/env node
// Thin launcher: Node >= 22.18 / 24 strips TypeScript types natively.
import "../src/cli/main.ts"
