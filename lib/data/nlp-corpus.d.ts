// nlp-corpus ships no types: the part of its API kiln uses.
declare module 'nlp-corpus' {
  const corpus: { all(): string[]; some(max?: number): string[] };
  export default corpus;
}
