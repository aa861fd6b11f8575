/** `kiln export --format gguf`: writes a checkpoint as a GGUF file for llama.cpp. */
import { KilnError } from '../errors.js';
import { exportLlamaGguf } from '../io/gguf_llama.js';
import { parseCommand } from './commands.js';

export async function exportCommand(rest: string[]): Promise<number> {
  const parsed = parseCommand('export', rest);
  if (!parsed) return 0;
  const { values } = parsed;
  if (values.format !== 'gguf') throw new KilnError('ERR_ARG', `--format ${values.format}: the formats kiln exports are: gguf`);
  if (!values.checkpoint || !values.out) throw new KilnError('ERR_ARG', 'export needs --checkpoint DIR and --out FILE');
  const started = performance.now();
  const result = await exportLlamaGguf(values.checkpoint, values.out, { dtype: values.dtype as 'f32', tokenizer: values.tokenizer });
  console.log(`${result.path}: ${result.tensors} ${result.dtype} tensors, ${result.tokenizer} vocabulary of ${result.vocabSize}, ${(result.bytes / 2 ** 20).toFixed(1)} MiB in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return 0;
}
