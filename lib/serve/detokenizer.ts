/**
 * Incremental detokenization and stop strings for one sequence.
 *
 * UTF-8 safety: a byte-level (or byte-fallback BPE) tokenizer can split one character over
 * several tokens, and decoding a partial character gives U+FFFD. Each new token's text is the
 * decode of a short window of recent tokens minus the decode of that window without the new
 * ones; while the window's decode ends in U+FFFD the text waits for the next token (at most 4
 * tokens: a UTF-8 character has at most 4 bytes, so a longer run is a real replacement
 * character and is released). The window keeps a few tokens of left context because
 * tokenizers that strip a leading space decode a token differently at the start of a text.
 *
 * Stop strings: released text never ends inside a possible stop string; the longest tail of the
 * pending text that is a prefix of some stop string is held back until the next token decides.
 * When a stop string appears, the text before it is released and the sequence stops; the stop
 * string itself is never emitted.
 */
export interface Decoder {
  decode(ids: number[]): string;
}

const CONTEXT_TOKENS = 4;
const MAX_PENDING_TOKENS = 4;

export class IncrementalDetokenizer {
  private readonly ids: number[] = [];
  /** tokens before prefixOffset are never decoded again; [prefixOffset, readOffset) is context */
  private prefixOffset = 0;
  private readOffset = 0;
  /** decoded text not yet released (held for stop strings) */
  private pending = '';
  /** all text released so far */
  released = '';
  stopped = false;

  constructor(private readonly tokenizer: Decoder, private readonly stopStrings: readonly string[]) {}

  /** Adds a token; returns the text it releases now (may be ''). After a stop string: stopped = true. */
  push(token: number): string {
    if (this.stopped) return '';
    this.ids.push(token);
    const prefixText = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const fullText = this.tokenizer.decode(this.ids.slice(this.prefixOffset));
    const waiting = this.ids.length - this.readOffset;
    if (fullText.endsWith('\uFFFD') && waiting < MAX_PENDING_TOKENS) return '';
    const delta = fullText.length >= prefixText.length && fullText.startsWith(prefixText) ? fullText.slice(prefixText.length) : fullText.slice(commonPrefix(prefixText, fullText));
    this.readOffset = this.ids.length;
    this.prefixOffset = Math.max(this.prefixOffset, this.readOffset - CONTEXT_TOKENS);
    return this.accept(delta);
  }

  /** The end of the sequence: releases whatever was held (undecodable tail included). */
  flush(): string {
    if (this.stopped) return '';
    let tail = '';
    if (this.readOffset < this.ids.length) {
      const prefixText = this.tokenizer.decode(this.ids.slice(this.prefixOffset, this.readOffset));
      const fullText = this.tokenizer.decode(this.ids.slice(this.prefixOffset));
      tail = fullText.slice(commonPrefix(prefixText, fullText));
      this.readOffset = this.ids.length;
    }
    const out = this.accept(tail, true);
    if (this.stopped) return out;
    const rest = this.pending;
    this.pending = '';
    this.released += rest;
    return out + rest;
  }

  private accept(delta: string, final = false): string {
    this.pending += delta;
    if (!this.stopStrings.length) {
      const out = this.pending;
      this.pending = '';
      this.released += out;
      return out;
    }
    let first = -1;
    for (const s of this.stopStrings) {
      const at = this.pending.indexOf(s);
      if (at >= 0 && (first < 0 || at < first)) first = at;
    }
    if (first >= 0) {
      const out = this.pending.slice(0, first);
      this.pending = '';
      this.released += out;
      this.stopped = true;
      return out;
    }
    if (final) return '';
    // hold back the longest tail that could still grow into a stop string
    let hold = 0;
    for (const s of this.stopStrings) {
      for (let n = Math.min(s.length - 1, this.pending.length); n > hold; n--) {
        if (this.pending.endsWith(s.slice(0, n))) {
          hold = n;
          break;
        }
      }
    }
    const out = this.pending.slice(0, this.pending.length - hold);
    this.pending = this.pending.slice(this.pending.length - hold);
    this.released += out;
    return out;
  }
}

function commonPrefix(a: string, b: string): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}
