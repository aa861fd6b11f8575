/** OpenAI's response bodies: completions and chat completions, their usage and logprobs. */
import type { Completion, TokenLogprob, Usage } from '../types.js';

export type CompletionKind = 'text_completion' | 'chat.completion';

export function usage(u: Usage) {
  return { prompt_tokens: u.promptTokens, completion_tokens: u.completionTokens, total_tokens: u.totalTokens, prompt_tokens_details: { cached_tokens: u.cachedTokens } };
}

export function completionResponse(id: string, createdAt: number, model: string, c: Completion) {
  return {
    id, object: 'text_completion', created: createdAt, model,
    choices: [{ index: 0, text: c.text, finish_reason: c.finishReason, logprobs: c.logprobs ? completionLogprobs(c.logprobs, 0) : null }],
    usage: usage(c.usage),
  };
}

export function chatResponse(id: string, createdAt: number, model: string, c: Completion) {
  return {
    id, object: 'chat.completion', created: createdAt, model,
    choices: [{ index: 0, message: { role: 'assistant', content: c.text }, finish_reason: c.finishReason, logprobs: c.logprobs ? chatLogprobs(c.logprobs) : null }],
    usage: usage(c.usage),
  };
}

/** The completions API's logprobs; `start` is the text offset of the first token (streams continue from the text sent so far). */
export function completionLogprobs(items: TokenLogprob[], start: number) {
  const textOffset: number[] = [];
  let offset = start;
  for (const t of items) {
    textOffset.push(offset);
    offset += t.text.length;
  }
  return {
    tokens: items.map((t) => t.text),
    token_logprobs: items.map((t) => t.logprob),
    top_logprobs: items.map((t) => Object.fromEntries(t.top.map((c) => [c.text, c.logprob]))),
    text_offset: textOffset,
  };
}

/** The chat API's logprobs: each token with its UTF-8 bytes and its alternatives. */
export function chatLogprobs(items: TokenLogprob[]) {
  const bytes = (text: string) => Array.from(Buffer.from(text, 'utf8'));
  return {
    content: items.map((t) => ({
      token: t.text,
      logprob: t.logprob,
      bytes: bytes(t.text),
      top_logprobs: t.top.map((c) => ({ token: c.text, logprob: c.logprob, bytes: bytes(c.text) })),
    })),
  };
}
