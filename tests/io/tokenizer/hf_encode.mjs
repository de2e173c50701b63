// Reference ids from Hugging Face's tokenizers for JavaScript (npm @huggingface/tokenizers),
// used by tst_tokenizer for parity checks.
//
//   node hf_encode.mjs TOKENIZER_JSON STRINGS_JSON [--modules NODE_MODULES_DIR] [--config CONFIG_JSON]
//
// STRINGS_JSON is a JSON array of strings. Prints one JSON object on stdout:
//   { "encode": [[ids with special tokens]...], "plain": [[ids without]...],
//     "decode": [decode(plain)...], "decodeSkip": [decode(encode, skip_special_tokens)...] }
// Decoding runs with clean_up_tokenization_spaces=false. Exit status 2 when the package is missing.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const here = dirname(fileURLToPath(import.meta.url));
const modules = resolve(opt("--modules") ?? process.env.QB_NODE_MODULES ?? join(here, "../../../.npm-test/node_modules"));
const configPath = opt("--config");
if (args.length !== 2) {
  console.error("usage: node hf_encode.mjs TOKENIZER_JSON STRINGS_JSON [--modules DIR] [--config FILE]");
  process.exit(64);
}

let Tokenizer;
try {
  ({ Tokenizer } = createRequire(join(modules, "noop.js"))("@huggingface/tokenizers"));
} catch (e) {
  console.error(`@huggingface/tokenizers not found under ${modules}: run the test set-up ` +
    `(npm install --prefix .npm-test @huggingface/tokenizers). ${e.message}`);
  process.exit(2);
}

const tokJson = JSON.parse(readFileSync(args[0], "utf8"));
const config = configPath ? JSON.parse(readFileSync(configPath, "utf8")) : {};
const tok = new Tokenizer(tokJson, config);
const strings = JSON.parse(readFileSync(args[1], "utf8"));
const dec = (ids, skip) =>
  ids.length === 0 ? "" : tok.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false });

const out = { encode: [], plain: [], decode: [], decodeSkip: [] };
for (const s of strings) {
  const withSpecial = tok.encode(s, { add_special_tokens: true }).ids;
  const plain = tok.encode(s, { add_special_tokens: false }).ids;
  out.encode.push(withSpecial);
  out.plain.push(plain);
  out.decode.push(dec(plain, false));
  out.decodeSkip.push(dec(withSpecial, true));
}
process.stdout.write(JSON.stringify(out));
