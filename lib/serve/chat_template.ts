/**
 * Chat prompts: OpenAI-style messages rendered to one prompt string with the checkpoint's
 * `chat_template` (Jinja, as Hugging Face tokenizer configs carry it) through @huggingface/jinja,
 * or with DEFAULT_CHAT_TEMPLATE when the checkpoint has none.
 */
import { Template } from '@huggingface/jinja';
import { KilnError } from '../errors.js';

/**
 * The template used when the checkpoint has no chat_template: one line per turn,
 * "<role>: <content>", then "assistant:" for the reply (plain text, so it means something to a
 * model pretrained on plain text and costs no special tokens).
 */
export const DEFAULT_CHAT_TEMPLATE =
  "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}" +
  "{% if add_generation_prompt %}assistant:{% endif %}";

export interface ChatMessage {
  role: string;
  /** text; OpenAI's array of content parts is flattened to its text parts before rendering */
  content: string;
  name?: string;
}

export class ChatTemplate {
  private readonly template: Template;
  readonly source: string;
  readonly isDefault: boolean;

  constructor(source: string | undefined, private readonly specialTokens: { bos: string; eos: string } = { bos: '', eos: '' }) {
    if (source !== undefined && typeof source !== 'string') throw new KilnError('ERR_ARG', `a chat template must be a string, got ${typeof source}`);
    if (!specialTokens || typeof specialTokens !== 'object' || typeof specialTokens.bos !== 'string' || typeof specialTokens.eos !== 'string') {
      throw new KilnError('ERR_ARG', 'specialTokens must be { bos: string, eos: string }');
    }
    this.isDefault = source === undefined || source.trim() === '';
    this.source = this.isDefault ? DEFAULT_CHAT_TEMPLATE : source!;
    try {
      this.template = new Template(this.source);
    } catch (error) {
      throw new KilnError('ERR_CHECKPOINT', `the checkpoint's chat_template does not parse: ${(error as Error).message}`, { cause: error });
    }
  }

  /** The prompt for these messages, ending where the assistant's reply begins. */
  render(messages: ChatMessage[]): string {
    try {
      return this.template.render({
        messages,
        add_generation_prompt: true,
        bos_token: this.specialTokens.bos,
        eos_token: this.specialTokens.eos,
      });
    } catch (error) {
      // templates raise on conversations they do not accept (e.g. roles out of order)
      throw new KilnError('ERR_ARG', `the chat template rejected these messages: ${(error as Error).message}`, { cause: error });
    }
  }
}
