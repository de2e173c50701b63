// Prefill throughput of llama.cpp (node-llama-cpp's prebuilt CPU binaries) on a GGUF: evaluates
// --windows windows of --ctx tokens (each window a fresh sequence, as llama-perplexity does) and
// prints {"tokens_per_second":..,"tokens":..,"seconds":..,"threads":..}. Only the last position's
// logits are requested, so llama.cpp does strictly less work than llama-perplexity (which needs
// logits at every position): the figure is an upper bound on llama-perplexity's throughput.
//
//   node llama_bench.mjs --model FILE.gguf [--ctx 256] [--windows 8] [--threads 2]
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";

function arg(name, fallback) {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

async function loadBindings() {
    const modules = process.env.QB_NODE_MODULES;
    if (!modules) return import("node-llama-cpp");
    const require = createRequire(path.join(modules, "noop.js"));
    return import(pathToFileURL(require.resolve("node-llama-cpp")).href);
}

const modelPath = arg("model");
const ctx = Number(arg("ctx", "256"));
const windows = Number(arg("windows", "8"));
const threads = Number(arg("threads", "2"));
const { getLlama, LlamaLogLevel } = await loadBindings();
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
const context = await model.createContext({ contextSize: ctx, batchSize: ctx, sequences: 1, threads });
const sequence = context.getSequence();
const vocab = 2000; // any ids below the demo vocabulary size: cost does not depend on them
const ids = [];
let s = 12345n;
for (let i = 0; i < ctx * (windows + 1); ++i) {
    s = (s * 6364136223846793005n + 1442695040888963407n) & ((1n << 64n) - 1n);
    ids.push(Number((s >> 33n) % BigInt(vocab)));
}
// One warm-up window, then the timed ones.
await sequence.evaluateWithoutGeneratingNewTokens(ids.slice(0, ctx));
const t0 = process.hrtime.bigint();
for (let w = 1; w <= windows; ++w) {
    await sequence.clearHistory();
    await sequence.evaluateWithoutGeneratingNewTokens(ids.slice(w * ctx, (w + 1) * ctx));
}
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
process.stdout.write(JSON.stringify({ tokens_per_second: (windows * ctx) / seconds, tokens: windows * ctx, seconds, threads, ctx }) + "\n");
await context.dispose();
await model.dispose();
await llama.dispose();
