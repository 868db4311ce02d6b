/**
 * The Latin-1 text of the chunk a decoder is reading, made at most once per chunk and only when
 * asked: one string from which a chunk's item bodies are sliced, where a string per body would
 * cost a native call each. In Latin-1 one byte is one char, so a byte's offset in the chunk is
 * its char's index in the text, whatever the bytes are (frame headers included).
 *
 * What it does not do: check that any of it is ASCII (a caller slices only bodies it has
 * checked), or keep a chunk after `release`.
 */
import { latin1Text } from "./AsciiText.ts"
import { EMPTY } from "./Bytes.ts"

/** One reader's current chunk and its text, made on first use; see the module comment. */
export class ChunkText {
  private chunk: Uint8Array = EMPTY
  private cached: string | undefined = undefined

  /** The chunk being read from now on (its text is made when first asked). */
  reading(chunk: Uint8Array): void {
    this.chunk = chunk
    this.cached = undefined
  }

  /** Done with the chunk: neither it nor its text is kept. */
  release(): void {
    this.chunk = EMPTY
    this.cached = undefined
  }

  /** The chunk's text, Latin-1: the char at index i is the byte at offset i. */
  text(): string {
    return (this.cached ??= latin1Text(this.chunk, 0, this.chunk.length))
  }
}
